"""SensorEncoder: shapes, parameter count of the paper tower, missing-patch masking, errors."""

from __future__ import annotations

import pytest
import torch

from sensorlm.typed_config import ConfigError, from_dict
from sensorlm.models.sensor_encoder import SensorEncoder, SensorEncoderConfig

TINY = SensorEncoderConfig(input_len=144, num_channels=34, patch=(12, 2), width=32, depth=2, num_heads=4)

# ViT-B/10/2 on (1440, 34): the number the architecture formula below must reproduce.
PAPER_SENSOR_PARAMS = 94_039_296


def _paper_param_formula(T: int = 1440, C: int = 34, pt: int = 10, pc: int = 2, D: int = 768, depth: int = 12) -> int:
    n_tokens = (T // pt) * (C // pc)
    hidden = 4 * D
    patch_conv = D * pt * pc + D
    pos_emb = n_tokens * D
    layer_norm = 2 * D
    block = (
        layer_norm  # norm1
        + (D * 3 * D + 3 * D)  # qkv
        + (D * D + D)  # attention output projection
        + layer_norm  # norm2
        + (D * hidden + hidden) + (hidden * D + D)  # MLP
    )
    map_head = (
        D  # probe
        + (D * D + D)  # q
        + (D * 2 * D + 2 * D)  # kv
        + (D * D + D)  # proj
        + layer_norm
        + (D * hidden + hidden) + (hidden * D + D)
    )
    return patch_conv + pos_emb + depth * block + layer_norm + map_head


@pytest.fixture
def tiny() -> SensorEncoder:
    torch.manual_seed(0)
    return SensorEncoder(TINY).eval()


def test_shapes_dtype_and_unit_norm(tiny):
    x = torch.randn(3, 144, 34)
    feats = tiny.forward_features(x)
    assert feats.shape == (3, 12 * 17, 32)
    z = tiny(x)
    assert z.shape == (3, 32) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(tiny.forward_head(feats), z)
    assert tiny(x, normalize=False).norm(dim=-1).sub(1).abs().max() > 1e-3


def test_paper_token_count_and_parameter_count():
    cfg = SensorEncoderConfig()
    assert cfg.grid == (144, 17) and cfg.num_tokens == 2448
    assert _paper_param_formula() == PAPER_SENSOR_PARAMS
    with torch.device("meta"):
        model = SensorEncoder(cfg)
    assert sum(p.numel() for p in model.parameters()) == PAPER_SENSOR_PARAMS
    assert model.pos_embed.shape == (1, 2448, 768)


def test_paper_forward_shapes_on_meta():
    with torch.device("meta"):
        model = SensorEncoder(SensorEncoderConfig())
        feats = model.forward_features(torch.zeros(2, 1440, 34))
        z = model.forward_head(feats)
    assert feats.shape == (2, 2448, 768)
    assert z.shape == (2, 768)


@pytest.mark.slow
def test_paper_forward_batch_one_on_cpu():
    torch.manual_seed(0)
    model = SensorEncoder(SensorEncoderConfig()).eval()
    with torch.no_grad():
        z = model(torch.randn(1, 1440, 34))
    assert z.shape == (1, 768)
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(1))


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"input_len": 1441}, r"\(T=1441, C=34\).*patch \(10, 2\)"),
        ({"num_channels": 35}, r"\(T=1440, C=35\).*patch \(10, 2\)"),
        ({"patch": (7, 2)}, r"patch \(7, 2\)"),
    ],
)
def test_patch_must_divide_input(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        SensorEncoderConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"width": 100, "num_heads": 12}, "width 100 is not divisible by num_heads 12"),
        ({"pooling": "max"}, "pooling: 'max'"),
        ({"patch": (10,)}, "patch: expected two positive integers"),
        ({"depth": 0}, "depth: expected a positive integer, got 0"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_config_fields_are_named(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        SensorEncoderConfig(**kwargs)


def test_config_from_dict_turns_patch_list_into_tuple():
    cfg = from_dict(SensorEncoderConfig, {"input_len": 144, "patch": [12, 2]})
    assert cfg.patch == (12, 2) and cfg.num_tokens == 12 * 17


def test_wrong_input_shape_names_expected_and_given(tiny):
    with pytest.raises(ValueError, match=r"expected shape \(B, 144, 34\), got \(2, 144, 33\)"):
        tiny(torch.randn(2, 144, 33))
    with pytest.raises(ValueError, match=r"expected shape \(B, 144, 34\), got \(144, 34\)"):
        tiny(torch.randn(144, 34))


def test_wrong_missing_shape(tiny):
    with pytest.raises(ValueError, match=r"missing mask: expected shape \(2, 144\), got \(2, 143\)"):
        tiny(torch.randn(2, 144, 34), torch.zeros(2, 143, dtype=torch.bool))


def test_token_mask_marks_fully_missing_time_patches(tiny):
    missing = torch.zeros(2, 144, dtype=torch.bool)
    missing[0, :24] = True  # time patches 0 and 1 entirely missing
    missing[0, 30] = True  # one minute of patch 2: the patch stays
    missing[1, :] = True  # nothing observed: keep every token
    attend = tiny.token_mask(missing, 2).view(2, 12, 17)
    assert not attend[0, :2].any()
    assert attend[0, 2:].all()
    assert attend[1].all()


@pytest.mark.parametrize("pooling", ["map", "mean"])
def test_fully_missing_patches_do_not_change_the_embedding(pooling):
    torch.manual_seed(0)
    model = SensorEncoder(SensorEncoderConfig(**{**TINY.__dict__, "pooling": pooling})).eval()
    x = torch.randn(2, 144, 34)
    missing = torch.zeros(2, 144, dtype=torch.bool)
    missing[:, 36:72] = True  # time patches 3..5
    z = model(x, missing)
    x2 = x.clone()
    x2[:, 36:72] = 100 * torch.randn(2, 36, 34)
    torch.testing.assert_close(model(x2, missing), z, rtol=0, atol=1e-6)
    # Without the mask (or in an observed patch) the same change does matter.
    assert (model(x2) - model(x)).abs().max() > 1e-3
    x3 = x.clone()
    x3[:, 72:84] += 5.0
    assert (model(x3, missing) - z).abs().max() > 1e-3


def test_all_missing_sample_gives_a_finite_embedding(tiny):
    z = tiny(torch.randn(1, 144, 34), torch.ones(1, 144, dtype=torch.bool))
    assert torch.isfinite(z).all()
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(1))


def test_mean_pooling_averages_attended_tokens_only():
    torch.manual_seed(0)
    model = SensorEncoder(SensorEncoderConfig(**{**TINY.__dict__, "pooling": "mean"})).eval()
    assert model.head is None
    x = torch.randn(1, 144, 34)
    missing = torch.zeros(1, 144, dtype=torch.bool)
    missing[0, :12] = True  # first time patch = tokens 0..16
    feats = model.forward_features(x, missing)
    expected = torch.nn.functional.normalize(feats[0, 17:].mean(dim=0), dim=-1)
    torch.testing.assert_close(model.forward_head(feats, missing)[0], expected)


def test_grad_checkpointing_gives_same_output_and_grads():
    torch.manual_seed(0)
    model = SensorEncoder(TINY)
    x = torch.randn(2, 144, 34)
    model(x).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    assert model.grad_checkpointing
    model(x).pow(2).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=lambda m, n=n: f"{n}: {m}")


def test_bf16_autocast_forward_on_cpu(tiny):
    x = torch.randn(2, 144, 34)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = tiny(x)
    assert z.shape == (2, 32) and torch.isfinite(z).all()
    torch.testing.assert_close(z.float(), tiny(x), atol=0.05, rtol=0)


@pytest.mark.parametrize("patch,shape", [((6, 34), (144, 34)), ((10, 2), (1440, 34)), ((6, 7), (120, 7))])
def test_patch_embedding_matmul_equals_the_conv_and_holds_in_bf16(patch, shape):
    """The patch embedding is a matmul over cut-out patches with the Conv2d's weights: equal to
    the conv in fp32, and finite and close in bf16 on CPU (torch 2.13's bf16 CPU conv was not)."""
    from sensorlm.models.sensor_encoder import SensorEncoder, SensorEncoderConfig

    cfg = SensorEncoderConfig(input_len=shape[0], num_channels=shape[1], patch=patch, width=32, depth=1, num_heads=4)
    torch.manual_seed(0)
    enc = SensorEncoder(cfg)
    for seed in range(5):
        x = torch.randn(4, *shape, generator=torch.Generator().manual_seed(seed)) * 5
        conv = enc.patch_embed(x.unsqueeze(1)).flatten(2).transpose(1, 2)
        torch.testing.assert_close(enc.embed_patches(x), conv, rtol=1e-5, atol=1e-5)
        got = enc.to(torch.bfloat16).embed_patches(x.bfloat16()).float()
        enc.float()
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, conv, rtol=0.05, atol=0.1)
