"""SensorLM: the two-tower model, its presets, and its input checks."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from sensorlm.typed_config import ConfigError, to_dict
from sensorlm.losses import siglip_loss
from sensorlm.models import create_model, list_models, model_config
from sensorlm.models.sensor_encoder import SensorEncoder
from sensorlm.models.sensorlm import SENSORLM_TINY, SensorLM, SensorLMConfig


def _batch(cfg: SensorLMConfig, B: int = 3):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, cfg.sensor.input_len, cfg.sensor.num_channels, generator=g)
    L = cfg.text.context_len
    ids = torch.randint(1, cfg.text.vocab_size, (B, L), generator=g)
    mask = torch.ones(B, L, dtype=torch.long)
    mask[1:, L // 2 :] = 0
    missing = torch.zeros(B, cfg.sensor.input_len, dtype=torch.bool)
    missing[0, : cfg.sensor.input_len // 4] = True
    return x, ids.masked_fill(mask == 0, cfg.text.pad_id), mask, missing


@pytest.fixture
def tiny() -> SensorLM:
    torch.manual_seed(0)
    return create_model("sensorlm_tiny").eval()


def test_forward_outputs_and_logit_formula(tiny):
    x, ids, mask, missing = _batch(tiny.config)
    out = tiny(x, ids, mask, missing)
    assert set(out) == {"sensor_emb", "text_emb", "logits", "t_prime", "bias"}
    assert torch.equal(out["t_prime"], tiny.t_prime.detach()) and torch.equal(out["bias"], tiny.bias.detach())
    assert out["sensor_emb"].shape == (3, 64) and out["text_emb"].shape == (3, 64)
    assert out["logits"].shape == (3, 3) and out["logits"].dtype == torch.float32
    for key in ("sensor_emb", "text_emb"):
        torch.testing.assert_close(out[key].norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(out["sensor_emb"], tiny.encode_sensor(x, missing))
    torch.testing.assert_close(out["text_emb"], tiny.encode_text(ids, mask))
    expected = 10.0 * out["sensor_emb"] @ out["text_emb"].T - 10.0
    torch.testing.assert_close(out["logits"], expected)


def test_scalar_parameters_are_shape_one(tiny):
    assert tiny.t_prime.shape == (1,) and tiny.bias.shape == (1,)
    assert tiny.t_prime.item() == pytest.approx(math.log(10))
    assert tiny.bias.item() == -10.0
    assert tiny.t_prime.requires_grad and tiny.bias.requires_grad
    frozen = create_model("sensorlm_tiny", learn_temperature=False)
    assert not frozen.t_prime.requires_grad and frozen.bias.requires_grad
    assert isinstance(tiny.sensor_encoder, SensorEncoder) and tiny.sensor_proj is None
    assert tiny.config is not None and tiny.config.sensor_tower == "vit"


def test_non_finite_values_are_counted(tiny):
    x, ids, mask, _ = _batch(tiny.config)
    x[0, 0, 0] = float("nan")
    x[1, 5, 3] = float("inf")
    x[2, 7, 1] = float("-inf")
    with pytest.raises(ValueError, match="3 non-finite values in sensor input"):
        tiny.encode_sensor(x)
    with pytest.raises(ValueError, match="3 non-finite values in sensor input"):
        tiny(x, ids, mask)
    # The training path skips the host sync; the shape check still runs.
    assert tiny.encode_sensor(x, check_finite=False).shape == (3, 64)
    with pytest.raises(ValueError, match=r"expected shape \(B, 144, 34\), got \(3, 144, 30\)"):
        tiny.encode_sensor(x[:, :, :30], check_finite=False)


def test_mismatched_batch_sizes(tiny):
    x, ids, mask, _ = _batch(tiny.config)
    with pytest.raises(ValueError, match="batch sizes differ: sensor 2 vs input_ids 3"):
        tiny(x[:2], ids, mask)


def test_sensor_projection_when_widths_differ():
    text = dataclasses.replace(SENSORLM_TINY.text, embed_dim=48)
    model = SensorLM(dataclasses.replace(SENSORLM_TINY, text=text)).eval()
    assert model.sensor_proj is not None and model.sensor_proj.in_features == 64
    x, ids, mask, missing = _batch(model.config)
    out = model(x, ids, mask, missing)
    assert out["sensor_emb"].shape == (3, 48) and out["text_emb"].shape == (3, 48)
    torch.testing.assert_close(out["sensor_emb"].norm(dim=-1), torch.ones(3))


def test_paper_preset_sizes_and_shapes_on_meta():
    cfg = model_config("sensorlm_vitb_10_2")
    assert (cfg.sensor.input_len, cfg.sensor.num_channels, cfg.sensor.patch) == (1440, 34, (10, 2))
    assert (cfg.sensor.width, cfg.sensor.depth, cfg.sensor.num_heads, cfg.sensor.pooling) == (768, 12, 12, "map")
    assert (cfg.text.vocab_size, cfg.text.context_len, cfg.text.depth, cfg.text.embed_dim) == (32000, 64, 12, 768)
    with torch.device("meta"):
        model = create_model("sensorlm_vitb_10_2")
        out = model(
            torch.zeros(2, 1440, 34),
            torch.zeros(2, 64, dtype=torch.long),
            torch.ones(2, 64, dtype=torch.long),
            validate=False,
        )
    assert model.sensor_proj is None
    assert out["sensor_emb"].shape == (2, 768) and out["logits"].shape == (2, 2)


def test_tiny_preset_sizes():
    cfg = model_config("sensorlm_tiny")
    assert (cfg.sensor.input_len, cfg.sensor.num_channels, cfg.sensor.patch) == (144, 34, (6, 34))
    assert (cfg.sensor.width, cfg.sensor.depth, cfg.sensor.num_heads) == (64, 2, 4)
    assert (cfg.text.vocab_size, cfg.text.context_len, cfg.text.depth) == (1024, 48, 2)
    assert model_config("sensorlm_tiny_meanpool").sensor.pooling == "mean"


SMALL_PRESETS = [n for n in list_models()
                 if n.startswith("sensorlm_") and n != "sensorlm_vitb_10_2" and "coca" not in n]  # CoCa: test_coca.py


def test_expected_presets_registered():
    assert {"sensorlm_tiny", "sensorlm_tiny_meanpool", "sensorlm_hvt_tiny"} <= set(SMALL_PRESETS)


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_every_small_preset_trains_one_step(name):
    if model_config(name).sensor_tower == "hvt":
        if not hasattr(pytest.importorskip("sensorlm.models.hvt"), "HVTSensorEncoder"):
            pytest.skip("sensorlm.models.hvt has no HVTSensorEncoder yet")
    torch.manual_seed(0)
    model = create_model(name)
    x, ids, mask, missing = _batch(model.config, B=4)
    out = model(x, ids, mask, missing, validate=False)
    loss = siglip_loss(out["sensor_emb"], out["text_emb"], model.t_prime, model.bias)
    assert torch.isfinite(loss)
    loss.backward()
    for n, p in model.named_parameters():
        if n == "text_encoder.token_embed.weight":
            continue  # only the rows of ids in the batch get a gradient
        assert p.grad is not None, n
        assert torch.isfinite(p.grad).all(), n
    assert model.t_prime.grad.abs().item() > 0 and model.bias.grad.abs().item() > 0
    # The stored config rebuilds the same architecture (what the model package relies on).
    rebuilt = create_model(name, **to_dict(model.config))
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }


def test_hvt_tower_config():
    hvt = pytest.importorskip("sensorlm.models.hvt")
    model = create_model("sensorlm_hvt_tiny")
    assert isinstance(model.sensor_encoder, hvt.HVTSensorEncoder)
    assert model.sensor_proj is None  # HVT embed_dim 64 == text embed_dim
    # hvt=None derives the tower from the sensor config.
    derived = dataclasses.replace(SENSORLM_TINY, sensor_tower="hvt").resolved()
    assert isinstance(derived.hvt, hvt.HVTSensorConfig)
    assert (derived.hvt.input_len, derived.hvt.num_channels, derived.hvt.patch_size) == (144, 34, (6, 34))
    assert derived.hvt.embed_dim == 64
    with pytest.raises(ConfigError, match=r"hvt: input shape .* \(1440, 34\) differs from sensor's \(144, 34\)"):
        dataclasses.replace(SENSORLM_TINY, sensor_tower="hvt", hvt=hvt.HVTSensorConfig())
    # A mapping (as read back from model_config.json) becomes an HVTSensorConfig.
    cfg = dataclasses.replace(SENSORLM_TINY, sensor_tower="hvt", hvt=to_dict(model.config.hvt))
    assert cfg.hvt == model.config.hvt


def test_bad_tower_name():
    with pytest.raises(ConfigError, match="sensor_tower: 'cnn'"):
        dataclasses.replace(SENSORLM_TINY, sensor_tower="cnn")
    with pytest.raises(ConfigError, match="unknown config key"):
        create_model("sensorlm_tiny", temperature=3.0)


def test_grad_checkpointing_same_loss(tiny):
    x, ids, mask, missing = _batch(tiny.config)
    tiny.train()
    base = tiny(x, ids, mask, missing)["logits"]
    tiny.set_grad_checkpointing(True)
    assert tiny.sensor_encoder.grad_checkpointing and tiny.text_encoder.grad_checkpointing
    torch.testing.assert_close(tiny(x, ids, mask, missing)["logits"], base)


def test_bf16_autocast_forward_on_cpu(tiny):
    x, ids, mask, missing = _batch(tiny.config)
    ref = tiny(x, ids, mask, missing)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = tiny(x, ids, mask, missing)
        loss = siglip_loss(out["sensor_emb"], out["text_emb"], tiny.t_prime, tiny.bias)
    assert all(torch.isfinite(v).all() for v in out.values())
    assert loss.dtype == torch.float32
    torch.testing.assert_close(out["sensor_emb"].float(), ref["sensor_emb"], atol=0.05, rtol=0)


def test_an_initial_temperature_outside_its_bounds_starts_at_the_bound():
    import math

    import pytest

    from sensorlm.models import create_model

    with pytest.warns(UserWarning, match=r"exp\(t_prime_init\) 10 is outside \[temperature_min=None, temperature_max=5.0\]"):
        model = create_model("sensorlm_tiny", temperature_max=5.0)
    assert float(model.t_prime.detach()) == pytest.approx(math.log(5.0))
    with pytest.warns(UserWarning, match="starts at temperature_min 20"):
        model = create_model("sensorlm_tiny", temperature_min=20.0, temperature_max=50.0)
    assert float(model.t_prime.detach().exp()) == pytest.approx(20.0)
