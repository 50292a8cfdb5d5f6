"""Tests for sensorlm/models/hvt.py: patch embedding, merging, stages, image and sensor encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sensorlm.typed_config import ConfigError, from_dict, to_dict
from sensorlm.models import create_model, model_config
from sensorlm.models.hvt import (
    HVTConfig,
    HVTEncoder,
    HVTSensorConfig,
    HVTSensorEncoder,
    HVTStage,
    PatchEmbed,
    PatchMerging,
)


def _identity_norm(dim: int) -> nn.Module:
    return nn.Identity()


# ---------------------------------------------------------------- PatchEmbed


@pytest.mark.parametrize(
    "img, patch, grid", [((32, 32), 4, (8, 8)), ((1440, 34), (10, 2), (144, 17)), (24, (6, 4), (4, 6))]
)
def test_patch_embed_grid_and_shape(img, patch, grid):
    pe = PatchEmbed(img, patch, in_chans=2, embed_dim=8, norm_layer=nn.LayerNorm)
    assert pe.grid_size == grid and pe.num_patches == grid[0] * grid[1]
    h, w = pe.img_size
    out = pe(torch.randn(2, 2, h, w))
    assert out.shape == (2, grid[0] * grid[1], 8)
    assert isinstance(pe.norm, nn.LayerNorm)


def test_patch_embed_is_row_major_patch_projection():
    torch.manual_seed(0)
    pe = PatchEmbed((4, 6), (2, 3), in_chans=1, embed_dim=5)
    x = torch.randn(1, 1, 4, 6)
    out = pe(x)
    # Token (row 1, col 0) = index 1 * 2 + 0: the patch x[..., 2:4, 0:3].
    patch = x[0, 0, 2:4, 0:3].reshape(-1)
    expected = pe.proj.weight.reshape(5, -1) @ patch + pe.proj.bias
    torch.testing.assert_close(out[0, 2], expected)


def test_patch_embed_errors():
    with pytest.raises(ValueError, match="not divisible"):
        PatchEmbed((30, 32), 4)
    with pytest.raises(ValueError, match="patch_size"):
        PatchEmbed((32, 32), (4, 4, 4))
    pe = PatchEmbed((32, 32), 4, in_chans=3, embed_dim=8)
    with pytest.raises(ValueError, match=r"expected input \(B, 3, 32, 32\), got \(2, 3, 32, 28\)"):
        pe(torch.randn(2, 3, 32, 28))


# ---------------------------------------------------------------- PatchMerging


@pytest.mark.parametrize(
    "res, out_res", [((4, 6), (2, 3)), ((5, 7), (3, 4)), ((144, 17), (72, 9)), ((1, 1), (1, 1)), ((3, 2), (2, 1))]
)
def test_patch_merging_halves_grid_doubles_width(res, out_res):
    pm = PatchMerging(res, 8)
    assert pm.output_resolution == out_res and pm.out_dim == 16
    assert pm.reduction.in_features == 32 and pm.reduction.out_features == 16 and pm.reduction.bias is None
    assert isinstance(pm.norm, nn.LayerNorm) and pm.norm.normalized_shape == (32,)
    out = pm(torch.randn(2, res[0] * res[1], 8))
    assert out.shape == (2, out_res[0] * out_res[1], 16)


@pytest.mark.parametrize("res", [(4, 6), (3, 5)])
def test_patch_merging_concatenates_2x2_neighbours(res):
    torch.manual_seed(0)
    h, w = res
    C = 3
    pm = PatchMerging(res, C, norm_layer=_identity_norm)
    x = torch.randn(1, h * w, C)
    out = pm(x)
    grid = torch.zeros(1, h + h % 2, w + w % 2, C)  # zero padding of odd sides
    grid[:, :h, :w] = x.view(1, h, w, C)
    oh, ow = pm.output_resolution
    for i in range(oh):
        for j in range(ow):
            # Order of the concatenation: (even row, even col), (odd, even), (even, odd), (odd, odd).
            quad = [(2 * i, 2 * j), (2 * i + 1, 2 * j), (2 * i, 2 * j + 1), (2 * i + 1, 2 * j + 1)]
            cat = torch.cat([grid[0, r, c] for r, c in quad])
            torch.testing.assert_close(out[0, i * ow + j], pm.reduction.weight @ cat)


def test_patch_merging_shape_error():
    pm = PatchMerging((4, 4), 8)
    with pytest.raises(ValueError, match=r"expected input \(B, 16, 8\) for grid 4x4, got \(2, 15, 8\)"):
        pm(torch.randn(2, 15, 8))


# ---------------------------------------------------------------- HVTStage


def test_stage_with_and_without_downsample():
    s = HVTStage(16, (6, 5), depth=2, num_heads=2, downsample=PatchMerging)
    assert len(s.blocks) == 2 and s.output_resolution == (3, 3) and s.out_dim == 32
    assert s(torch.randn(2, 30, 16)).shape == (2, 9, 32)
    last = HVTStage(16, (6, 5), depth=1, num_heads=4)
    assert last.downsample_layer is None and last.output_resolution == (6, 5) and last.out_dim == 16
    assert last(torch.randn(2, 30, 16)).shape == (2, 30, 16)


# ---------------------------------------------------------------- HVTEncoder


def test_hvt_tiny_preset_dual_stream():
    torch.manual_seed(0)
    m = create_model("hvt_tiny")
    assert m.spectral_stream is not None and m.num_streams == 2
    assert [st.dim for st in m.rgb_stream.stages] == [32, 64, 128]
    rgb, spec = torch.randn(2, 3, 32, 32), torch.randn(2, 4, 32, 32)
    x_rgb, x_spec, g_rgb, g_spec = m.forward_features_encoded(rgb, spec)
    assert x_rgb.shape == (2, 4, 128) and x_spec.shape == (2, 4, 128)
    assert g_rgb == (8, 8) and g_spec == (8, 8)
    out = m(rgb, spec)
    assert out.shape == (2, 64)
    # The spectral stream really feeds the fused embedding.
    assert not torch.allclose(out, m(rgb, spec + 1.0))
    # Features without the spectral image: spectral outputs are None.
    x_rgb2, x_spec2, g2, gs2 = m.forward_features_encoded(rgb)
    assert x_spec2 is None and gs2 is None
    torch.testing.assert_close(x_rgb2, x_rgb)


def test_hvt_single_stream():
    m = create_model("hvt_tiny", spectral_in_chans=0, out_dim=10)
    assert m.spectral_stream is None and m.head.in_features == 128
    assert m(torch.randn(3, 3, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match="no spectral stream"):
        m.forward_features_encoded(torch.randn(1, 3, 32, 32), torch.randn(1, 4, 32, 32))


def test_hvt_encoder_input_errors():
    m = create_model("hvt_tiny")
    with pytest.raises(ValueError, match="needs the spectral image"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match=r"expected input \(B, 4, 32, 32\), got \(1, 3, 32, 32\)"):
        m(torch.randn(1, 3, 32, 32), torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="batch"):
        m(torch.randn(2, 3, 32, 32), torch.randn(1, 4, 32, 32))


def test_hvt_odd_grid_encoder():
    cfg = HVTConfig(img_size=(20, 12), patch_size=(4, 4), embed_dim=8, depths=(1, 1, 1), num_heads=(1, 1, 2), out_dim=5)
    m = HVTEncoder(cfg)  # grid (5, 3) -> (3, 2) -> (2, 1)
    assert m.rgb_stream.output_resolution == (2, 1)
    x, _, grid, _ = m.forward_features_encoded(torch.randn(2, 3, 20, 12))
    assert grid == (5, 3) and x.shape == (2, 2, 32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"depths": (1, 1), "num_heads": (1, 2, 4)}, "same length"),
        ({"num_heads": (3, 2, 4)}, "num_heads"),
        ({"img_size": (30, 32)}, "not divisible"),
        ({"depths": (1, 0, 1)}, "depths"),
        ({"spectral_in_chans": -1}, "spectral_in_chans"),
        ({"drop_rate": 1.0}, "drop_rate"),
    ],
)
def test_hvt_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        model_config("hvt_tiny", **kwargs)


def test_hvt_forward_backward():
    m = create_model("hvt_tiny")
    m(torch.randn(2, 3, 32, 32), torch.randn(2, 4, 32, 32)).square().sum().backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None]
    assert missing == []


# ---------------------------------------------------------------- HVTSensorEncoder


def test_sensor_tiny_shapes_and_unit_norm():
    torch.manual_seed(0)
    m = create_model("hvt_sensor_tiny")
    assert isinstance(m, HVTSensorEncoder)
    assert m.embed_dim == 64 and m.grid_size == (12, 17) and m.output_resolution == (6, 9)
    out = m(torch.randn(2, 144, 34))
    assert out.shape == (2, 64)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(2))


def test_sensor_paper_shape_default_config():
    cfg = HVTSensorConfig()  # (1440, 34), patch (10, 2), 4 stages
    m = HVTSensorEncoder(cfg)
    assert m.grid_size == (144, 17)
    assert [st.input_resolution for st in m.stages] == [(144, 17), (72, 9), (36, 5), (18, 3)]
    with torch.no_grad():
        out = m(torch.randn(1, 1440, 34))
    assert out.shape == (1, 768)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(1))


def test_sensor_map_pooling_and_backward():
    m = create_model("hvt_sensor_tiny", pool="map", embed_dim=24)
    out = m(torch.randn(3, 144, 34))
    assert out.shape == (3, 24)
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
    (out[:, 0] - out[:, 1]).sum().backward()
    assert [n for n, p in m.named_parameters() if p.grad is None] == []


def test_sensor_missing_zeroes_inputs():
    torch.manual_seed(0)
    m = create_model("hvt_sensor_tiny").eval()
    x = torch.randn(2, 144, 34)
    missing = torch.zeros(2, 144, dtype=torch.bool)
    missing[0, 10:50] = True
    missing[1, 100:] = True
    x_zeroed = x.clone()
    x_zeroed[missing] = 0.0
    torch.testing.assert_close(m(x, missing), m(x_zeroed))
    assert not torch.allclose(m(x, missing), m(x))
    # An all-False mask changes nothing.
    torch.testing.assert_close(m(x, torch.zeros(2, 144, dtype=torch.bool)), m(x))


def test_sensor_shape_errors():
    m = create_model("hvt_sensor_tiny")
    with pytest.raises(ValueError, match=r"expected sensor input \(B, 144, 34\), got \(2, 144, 33\)"):
        m(torch.randn(2, 144, 33))
    with pytest.raises(ValueError, match=r"expected sensor input \(B, 144, 34\), got \(144, 34\)"):
        m(torch.randn(144, 34))
    with pytest.raises(ValueError, match=r"missing mask \(B, T\) = \(2, 144\), got \(2, 140\)"):
        m(torch.randn(2, 144, 34), torch.zeros(2, 140, dtype=torch.bool))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"patch_size": (7, 2)}, "input_len 144 is not divisible"),
        ({"patch_size": (12, 4)}, "num_channels 34 is not divisible"),
        ({"pool": "max"}, "pool"),
        ({"num_heads": (3, 4)}, "num_heads"),
        ({"embed_dim": 0}, "embed_dim"),
    ],
)
def test_sensor_config_errors(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        model_config("hvt_sensor_tiny", **kwargs)


def test_sensor_config_round_trip():
    cfg = model_config("hvt_sensor_tiny")
    again = from_dict(HVTSensorConfig, to_dict(cfg))
    assert again == cfg and again.patch_size == (12, 2) and again.depths == (1, 1)


def test_sensor_grad_checkpointing_gives_same_gradients():
    torch.manual_seed(0)
    m = create_model("hvt_sensor_tiny", drop_rate=0.0)
    x = torch.randn(2, 144, 34)

    def grads():
        m.zero_grad()
        m(x).square().sum().backward()
        return {n: p.grad.clone() for n, p in m.named_parameters()}

    plain = grads()
    m.set_grad_checkpointing(True)
    assert all(st.grad_checkpointing for st in m.stages)
    ckpt = grads()
    for name in plain:
        torch.testing.assert_close(ckpt[name], plain[name], msg=name)


def test_hvt_encoder_grad_checkpointing_flag():
    m = create_model("hvt_tiny")
    m.set_grad_checkpointing(True)
    stages = list(m.rgb_stream.stages) + list(m.spectral_stream.stages)
    assert all(st.grad_checkpointing for st in stages)
    out = m(torch.randn(1, 3, 32, 32), torch.randn(1, 4, 32, 32))
    out.sum().backward()
    assert m.rgb_stream.patch_embed.proj.weight.grad is not None
