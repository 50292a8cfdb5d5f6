"""Tests of sensorlm/models/sst.py: every part's shapes, the fixed encodings, the exact
invariances to missing pixels and padded days, land masking, config errors, presets."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn

from sensorlm.typed_config import ConfigError, from_dict, to_dict
from sensorlm.models import create_model, list_models, model_config
from sensorlm.models.sst import (
    MonthlyConvDecoder,
    SpatialPositionalEncoding2D,
    SpatialTransformer,
    SpatioTemporalModel,
    SSTConfig,
    TemporalAttentionAggregator,
    TemporalPositionalEncoding,
    VideoEncoder,
    month_of_year_from_last,
    sinusoidal_table,
)

TINY = dict(height=16, width=16, months=2, days_per_month=32, patch=(4, 4, 4), embed_dim=16, hidden=8,
            depth=1, num_heads=4, dropout=0.0, overlap=2)


def _batch(cfg: SSTConfig, B: int = 2, seed: int = 0, month_lengths=(31, 28)):
    """Random inputs: ~40% missing pixels, months padded after their real length, some land."""
    g = torch.Generator().manual_seed(seed)
    T = cfg.months * cfg.days_per_month
    x = torch.randn(B, 1, T, cfg.height, cfg.width, generator=g)
    mask = torch.rand(B, 1, T, cfg.height, cfg.width, generator=g) < 0.4
    padded = torch.zeros(B, T, dtype=torch.bool)
    for m in range(cfg.months):
        n = month_lengths[m % len(month_lengths)]
        padded[:, m * cfg.days_per_month + n:(m + 1) * cfg.days_per_month] = True
    land = torch.rand(B, cfg.height, cfg.width, generator=g) < 0.2
    return x, mask, padded, land


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------ 1. VideoEncoder


def test_video_encoder_shapes_and_dtype():
    enc = VideoEncoder(embed_dim=24, patch=(4, 2, 4), in_chans=1)
    x = torch.randn(3, 1, 16, 8, 12)
    mask = torch.rand(3, 1, 16, 8, 12) < 0.5
    z = enc(x, mask)
    assert z.shape == (3, (16 // 4) * (8 // 2) * (12 // 4), 24)
    assert z.dtype == torch.float32
    assert enc.proj.in_channels == 2 and enc.proj.kernel_size == (4, 2, 4) and enc.proj.stride == (4, 2, 4)
    # LayerNorm over the embedding: zero mean, unit variance per token (identity affine at init).
    torch.testing.assert_close(z.mean(-1), torch.zeros(z.shape[:2]), atol=1e-5, rtol=0)


def test_video_encoder_token_order_is_t_h_w():
    """Token n = t'*(H'*W') + h'*W' + w': changing one patch changes exactly that token."""
    enc = VideoEncoder(embed_dim=8, patch=(2, 2, 2)).eval()
    x = torch.zeros(1, 1, 4, 4, 6)
    mask = torch.zeros_like(x, dtype=torch.bool)
    base = enc(x, mask)
    x2 = x.clone()
    x2[0, 0, 2:4, 2:4, 4:6] = 1.0  # patch (t'=1, h'=1, w'=2)
    changed = (enc(x2, mask) - base).abs().sum(-1)[0] > 0
    expected = torch.zeros(2 * 2 * 3, dtype=torch.bool)
    expected[1 * 6 + 1 * 3 + 2] = True
    assert torch.equal(changed, expected)


def test_video_encoder_sees_validity_channel():
    enc = VideoEncoder(embed_dim=8, patch=(2, 2, 2)).eval()
    x = torch.zeros(1, 1, 2, 2, 2)
    a = enc(x, torch.zeros_like(x, dtype=torch.bool))
    b = enc(x, torch.ones_like(x, dtype=torch.bool))
    assert not torch.allclose(a, b), "observed zeros and missing pixels must embed differently"


def test_video_encoder_bad_shapes():
    enc = VideoEncoder(embed_dim=8, patch=(4, 4, 4))
    x = torch.randn(1, 1, 8, 8, 8)
    with pytest.raises(ValueError, match=r"mask: expected the shape of x"):
        enc(x, torch.zeros(1, 1, 8, 8, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"H=6 is not divisible by the patch size 4"):
        enc(torch.randn(1, 1, 8, 6, 8), torch.zeros(1, 1, 8, 6, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 1, T, H, W\)"):
        enc(torch.randn(1, 2, 8, 8, 8), torch.zeros(1, 2, 8, 8, 8, dtype=torch.bool))


# ------------------------------------------------------------------ 2. TemporalPositionalEncoding


def test_temporal_pe_is_fixed_sinusoid():
    pe = TemporalPositionalEncoding(embed_dim=8, max_len=40)
    assert _n(pe) == 0 and list(pe.parameters()) == []
    assert "pe" in dict(pe.named_buffers())
    out = pe(10)
    assert out.shape == (10, 8) and out.dtype == torch.float32
    # Row 0: sin(0)=0 on even dims, cos(0)=1 on odd dims.
    assert torch.equal(out[0, 0::2], torch.zeros(4)) and torch.equal(out[0, 1::2], torch.ones(4))
    # Row t, pair i: sin / cos of t / 10000^(2i/D).
    for t, i in [(3, 0), (7, 1), (9, 3)]:
        angle = t / 10000 ** (2 * i / 8)
        assert out[t, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert out[t, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    assert torch.equal(pe(40)[:10], out), "a longer request starts with the same rows"
    assert torch.equal(pe.lookup(torch.tensor([[3, 7]])), out[[3, 7]][None])
    with pytest.raises(ValueError, match="temporal length 41 is outside 1..max_len=40"):
        pe(41)


def test_sinusoidal_table_odd_width():
    t = sinusoidal_table(5, 7)
    assert t.shape == (5, 7)
    for i in range(4):  # frequencies use the requested width 7
        assert t[2, 2 * i].item() == pytest.approx(math.sin(2 / 10000 ** (2 * i / 7)), abs=1e-6)
    assert torch.equal(t[0, 0::2], torch.zeros(4)) and torch.equal(t[0, 1::2], torch.ones(3))


# ------------------------------------------------------------------ 3. TemporalAttentionAggregator


def _agg_inputs(B=2, M=3, T=8, S=5, E=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, M * T * S, E, generator=g)
    pad = torch.zeros(B, M * T, dtype=torch.bool)
    pad[:, T - 1] = True  # last token of month 0
    pad[:, 2 * T - 2:2 * T] = True  # last two tokens of month 1
    pad[1, 3 * T - 3:3 * T] = True  # sample 1: last three tokens of month 2
    moy = torch.tensor([[10, 11, 0], [2, 3, 4]])
    return x, pad, moy


def test_aggregator_shapes_and_weights():
    B, M, T, S, E = 2, 3, 8, 5, 16
    agg = TemporalAttentionAggregator(E, months=M, tokens_per_month=T, num_heads=4).eval()
    x, pad, moy = _agg_inputs(B, M, T, S, E)
    out, w = agg(x, pad, moy, return_weights=True)
    assert out.shape == (B, S, E) and out.dtype == torch.float32
    assert w["day"].shape == (B, S, M, T) and w["month"].shape == (B, S, M)
    torch.testing.assert_close(w["day"].sum(-1), torch.ones(B, S, M))
    torch.testing.assert_close(w["month"].sum(-1), torch.ones(B, S))
    pad_b = pad.view(B, 1, M, T).expand(B, S, M, T)
    assert torch.all(w["day"][pad_b] == 0), "padded tokens must get exactly zero weight"
    assert torch.all(w["day"][~pad_b] > 0)
    assert isinstance(agg.month_attn, nn.MultiheadAttention) and agg.month_attn.batch_first
    for mlp in (agg.day_score, agg.month_score):
        kinds = [type(m) for m in mlp]
        assert kinds == [nn.LayerNorm, nn.Linear, nn.GELU, nn.Linear]
        assert mlp[1].in_features == mlp[1].out_features == E and mlp[3].out_features == 1
    # Positional encodings are buffers only.
    assert {n for n, _ in agg.named_buffers()} == {"day_pe.pe", "month_pe.pe"}


def test_aggregator_padded_tokens_do_not_matter():
    B, M, T, S, E = 2, 3, 8, 5, 16
    agg = TemporalAttentionAggregator(E, months=M, tokens_per_month=T).eval()
    x, pad, moy = _agg_inputs(B, M, T, S, E)
    x2 = x.clone().view(B, M * T, S, E)
    x2[pad] = 1e3 * torch.randn_like(x2[pad])
    torch.testing.assert_close(agg(x2.view(B, -1, E), pad, moy), agg(x, pad, moy), rtol=0, atol=0)


def test_aggregator_positions_and_empty_month():
    B, M, T, S, E = 1, 2, 4, 3, 8
    agg = TemporalAttentionAggregator(E, months=M, tokens_per_month=T).eval()
    pos = agg.positional(B, torch.tensor([[4, 5]]), torch.device("cpu"))
    assert pos.shape == (B, M, T, E)
    # first half = day-in-month (token index), second half = month of year
    assert torch.equal(pos[0, 1, 2, : E // 2], sinusoidal_table(T, E // 2)[2])
    assert torch.equal(pos[0, 1, 2, E // 2:], sinusoidal_table(12, E // 2)[5])
    x = torch.randn(B, M * T * S, E)
    a = agg(x, None, torch.tensor([[4, 5]]))
    b = agg(x, None, torch.tensor([[0, 1]]))
    assert not torch.allclose(a, b), "month of year must reach the output"
    # A whole padded month: finite output, zero month weight.
    pad = torch.zeros(B, M * T, dtype=torch.bool)
    pad[:, :T] = True
    out, w = agg(x, pad, None, return_weights=True)
    assert torch.isfinite(out).all()
    assert torch.all(w["month"][..., 0] == 0) and torch.allclose(w["month"][..., 1], torch.ones(B, S))


def test_aggregator_bad_shapes():
    agg = TemporalAttentionAggregator(8, months=2, tokens_per_month=4)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 2\*4\*S, 8\)"):
        agg(torch.randn(1, 9, 8))
    with pytest.raises(ValueError, match=r"token_padded: expected shape \(1, 8\).*got \(1, 7\)"):
        agg(torch.randn(1, 16, 8), torch.zeros(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"month_of_year: expected shape \(1, 2\).*got \(1, 3\)"):
        agg(torch.randn(1, 16, 8), None, torch.zeros(1, 3, dtype=torch.long))


# ------------------------------------------------------------------ 4. SpatialPositionalEncoding2D


def test_spatial_pe_is_fixed_2d_sinusoid():
    pe = SpatialPositionalEncoding2D(embed_dim=12, height=3, width=5)
    assert list(pe.parameters()) == [] and "pe" in dict(pe.named_buffers())
    out = pe()
    assert out.shape == (15, 12) and out.dtype == torch.float32
    h, w = 2, 3
    row = out[h * 5 + w]
    for i in range(3):  # 6 dims per axis = 3 sin/cos pairs
        a_h = h / 10000 ** (2 * i / 6)
        a_w = w / 10000 ** (2 * i / 6)
        assert row[2 * i].item() == pytest.approx(math.sin(a_h), abs=1e-6)
        assert row[2 * i + 1].item() == pytest.approx(math.cos(a_h), abs=1e-6)
        assert row[6 + 2 * i].item() == pytest.approx(math.sin(a_w), abs=1e-6)
        assert row[6 + 2 * i + 1].item() == pytest.approx(math.cos(a_w), abs=1e-6)
    assert len({tuple(r.tolist()) for r in out}) == 15, "every grid position is unique"
    with pytest.raises(ValueError, match="embed_dim must be even"):
        SpatialPositionalEncoding2D(embed_dim=7, height=2, width=2)


# ------------------------------------------------------------------ 5. SpatialTransformer


def test_spatial_transformer_shapes():
    st = SpatialTransformer(embed_dim=16, depth=3, num_heads=4)
    assert len(st.encoder.layers) == 3
    layer = st.encoder.layers[0]
    assert isinstance(layer, nn.TransformerEncoderLayer) and layer.norm_first
    assert layer.self_attn.batch_first and layer.self_attn.num_heads == 4
    x = torch.randn(2, 10, 16)
    y = st(x)
    assert y.shape == x.shape and y.dtype == torch.float32
    # Global mixing: changing one token changes the others.
    x2 = x.clone()
    x2[:, 0] = torch.randn(2, 16)  # (a constant shift would vanish in the LayerNorms)
    st.eval()
    assert not torch.allclose(st(x2)[:, 5], st(x)[:, 5])


# ------------------------------------------------------------------ 6. MonthlyConvDecoder


@pytest.mark.parametrize("overlap", [0, 1, 3])
def test_decoder_shapes(overlap):
    dec = MonthlyConvDecoder(embed_dim=16, hidden=8, grid=(3, 4), patch=(4, 2), overlap=overlap)
    assert dec.deconv.kernel_size == (4 + 2 * overlap, 2 + 2 * overlap) and dec.deconv.stride == (4, 2)
    y = dec(torch.randn(2, 12, 16))
    assert y.shape == (2, 1, 12, 8) and y.dtype == torch.float32
    assert dec.scale.shape == (1,) and dec.bias.shape == (1,)


def test_decoder_overlap_reaches_neighbours():
    """With overlap > 0, a patch token influences pixels of the neighbouring patches."""
    torch.manual_seed(0)
    dec = MonthlyConvDecoder(embed_dim=8, hidden=8, grid=(3, 3), patch=(4, 4), overlap=2).eval()
    refine_free = nn.Sequential(dec.proj, dec.deconv)
    x = torch.zeros(1, 8, 3, 3)
    x2 = x.clone()
    x2[0, :, 1, 1] = 1.0  # centre patch covers pixels 4..7
    diff = (refine_free(x2) - refine_free(x)).abs().sum(1)[0]
    assert diff[4:8, 4:8].gt(0).all()
    assert diff[2:4, 4:8].gt(0).any() and diff[8:10, 4:8].gt(0).any()  # spills 2 px each side
    assert diff[:2].eq(0).all() and diff[10:].eq(0).all()


def test_decoder_land_is_exactly_zero_and_errors():
    dec = MonthlyConvDecoder(embed_dim=8, hidden=8, grid=(2, 2), patch=(4, 4), overlap=1)
    with torch.no_grad():
        dec.bias.fill_(5.0)
    land = torch.zeros(2, 8, 8, dtype=torch.bool)
    land[0, :3, :] = True
    land[1, :, 5:] = True
    y = dec(torch.randn(2, 4, 8), land)
    assert torch.all(y[:, 0][land] == 0) and torch.all(y[:, 0][~land] != 0)
    with pytest.raises(ValueError, match=r"land_mask: expected shape \(2, 8, 8\).*got \(2, 8, 7\)"):
        dec(torch.randn(2, 4, 8), land[:, :, :7])
    with pytest.raises(ValueError, match=r"tokens: expected shape \(B, 4, 8\).*got \(2, 5, 8\)"):
        dec(torch.randn(2, 5, 8))


# ------------------------------------------------------------------ full model


def test_model_forward_shape_and_land():
    cfg = SSTConfig(**TINY)
    model = SpatioTemporalModel(cfg).eval()
    x, mask, padded, land = _batch(cfg)
    y = model(x, mask, padded, land, torch.tensor([[0, 1], [5, 6]]))
    assert y.shape == (2, 1, cfg.height, cfg.width) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    assert torch.all(y[:, 0][land] == 0)
    assert torch.all(model(x, mask, padded)[:, 0][land] != 0), "land is zeroed only when land_mask is given"
    y_noland = model(x, mask, padded, None, torch.tensor([[0, 1], [5, 6]]))
    torch.testing.assert_close(y_noland[:, 0][~land], y[:, 0][~land], rtol=0, atol=0)


def test_missing_pixel_values_do_not_matter():
    cfg = SSTConfig(**TINY)
    model = SpatioTemporalModel(cfg).eval()
    x, mask, padded, land = _batch(cfg, seed=1)
    clean = torch.where(mask, torch.zeros(()), x)
    garbage = torch.where(mask, 1e4 * torch.randn_like(x), x)
    garbage[mask & (torch.rand_like(x) < 0.05)] = float("nan")
    with torch.no_grad():
        a = model(clean, mask, padded, land)
        b = model(garbage, mask, padded, land)
        c = model(garbage, mask.to(torch.uint8), padded, land.to(torch.uint8))
    assert torch.equal(a, b) and torch.equal(a, c)


def test_padded_day_values_and_masks_do_not_matter():
    cfg = SSTConfig(**TINY)
    model = SpatioTemporalModel(cfg).eval()
    x, mask, padded, land = _batch(cfg, seed=2, month_lengths=(28, 27))  # full and partial padded tokens
    pad5 = padded[:, None, :, None, None].expand_as(x)
    x2 = torch.where(pad5, 1e4 * torch.randn_like(x), x)
    x2[pad5 & (torch.rand_like(x) < 0.1)] = float("inf")
    mask2 = torch.where(pad5, torch.rand_like(x) < 0.5, mask)  # random mask contents on padded days
    mask3 = torch.where(pad5, torch.zeros_like(mask), mask)  # padded days marked "observed"
    with torch.no_grad():
        a = model(x, mask, padded, land)
        b = model(x2, mask2, padded, land)
        c = model(x2, mask3, padded, land)
    assert torch.equal(a, b) and torch.equal(a, c)
    # ... and padded tokens get zero weight inside the model.
    with torch.no_grad():
        tokens = model.encoder(x, mask | pad5)
        tpad = padded.view(2, cfg.months * cfg.tokens_per_month, cfg.patch[0]).all(-1)
        _, w = model.aggregator(tokens, tpad, None, return_weights=True)
    assert tpad.any()
    S = cfg.grid[0] * cfg.grid[1]
    assert torch.all(w["day"][tpad.view(2, 1, cfg.months, -1).expand(2, S, -1, -1)] == 0)


def test_observed_values_do_matter():
    cfg = SSTConfig(**TINY)
    model = SpatioTemporalModel(cfg).eval()
    x, mask, padded, land = _batch(cfg, seed=3)
    with torch.no_grad():
        a = model(x, mask, padded)
        b = model(x + 0.5 * (~mask), mask, padded)
    assert not torch.allclose(a, b)


def test_model_input_errors():
    cfg = SSTConfig(**TINY)
    model = SpatioTemporalModel(cfg)
    x, mask, padded, land = _batch(cfg, B=1)
    with pytest.raises(ValueError, match=r"x: expected shape \(B, 1, 64, 16, 16\).*got \(1, 1, 60, 16, 16\)"):
        model(x[:, :, :60], mask[:, :, :60], padded[:, :60])
    with pytest.raises(ValueError, match=r"daily_mask: expected shape \(1, 1, 64, 16, 16\).*got \(1, 1, 64, 16, 15\)"):
        model(x, mask[..., :15], padded)
    with pytest.raises(ValueError, match=r"padded_days: expected shape \(1, 64\).*got \(64,\)"):
        model(x, mask, padded[0])
    with pytest.raises(ValueError, match=r"land_mask: expected shape \(1, 16, 16\).*got \(16, 16\)"):
        model(x, mask, padded, land[0])
    with pytest.raises(ValueError, match=r"month_of_year: expected shape \(1, 2\).*got \(1, 3\)"):
        model(x, mask, padded, land, torch.zeros(1, 3, dtype=torch.long))
    with pytest.raises(ValueError, match=r"month_of_year: values must be 0..11.*\[0, 12\]"):
        model(x, mask, padded, land, torch.tensor([[0, 12]]))
    with pytest.raises(ValueError, match=r"month_of_year: expected an integer tensor"):
        model(x, mask, padded, land, torch.tensor([[0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"x: expected a floating-point tensor"):
        model(x.long(), mask, padded)
    with pytest.raises(TypeError, match="expected an SSTConfig"):
        SpatioTemporalModel(dict(TINY))


def test_month_of_year_from_last():
    got = month_of_year_from_last(torch.tensor([1, 3, 12]), 3)
    assert torch.equal(got, torch.tensor([[10, 11, 0], [0, 1, 2], [9, 10, 11]]))
    with pytest.raises(ValueError, match=r"last_month: values must be calendar months 1..12"):
        month_of_year_from_last(torch.tensor([0]), 2)
    with pytest.raises(ValueError, match=r"last_month: expected shape \(B,\)"):
        month_of_year_from_last(torch.tensor([[1]]), 2)


# ------------------------------------------------------------------ config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(height=30), r"height 30 is not divisible by the patch height patch\[1\]=4"),
        (dict(width=18), r"width 18 is not divisible by the patch width patch\[2\]=4"),
        (dict(days_per_month=30), r"days_per_month 30 is not divisible by the temporal patch patch\[0\]=4"),
        (dict(patch=(4, 4)), r"patch must be three integers \(Pt, Ph, Pw\), got \(4, 4\)"),
        (dict(patch=(4, 0, 4)), r"patch\[1\] must be a positive integer, got 0"),
        (dict(embed_dim=18, num_heads=4), r"embed_dim 18 is not divisible by num_heads 4"),
        (dict(embed_dim=15, num_heads=5), r"embed_dim must be even, got 15"),
        (dict(months=0), r"months must be a positive integer, got 0"),
        (dict(depth=-1), r"depth must be a positive integer, got -1"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
        (dict(overlap=-1), r"overlap must be a non-negative integer, got -1"),
        (dict(mlp_ratio=0.0), r"mlp_ratio must be a positive number, got 0.0"),
        (dict(hidden=True), r"hidden must be a positive integer, got True"),
    ],
)
def test_config_errors(overrides, message):
    with pytest.raises(ConfigError, match=message):
        SSTConfig(**{**TINY, **overrides})


def test_config_roundtrip_and_registry_overrides():
    cfg = model_config("sst_tiny")
    assert from_dict(SSTConfig, to_dict(cfg)) == cfg
    assert cfg.patch == (4, 4, 4) and cfg.grid == (8, 8) and cfg.tokens_per_month == 8
    assert {"sst_tiny", "sst_base"} <= set(list_models())
    assert model_config("sst_tiny", embed_dim=64).embed_dim == 64
    with pytest.raises(ConfigError, match="height 30 is not divisible"):
        create_model("sst_tiny", height=30)
    with pytest.raises(ConfigError, match="unknown config key embed"):
        create_model("sst_tiny", embed=64)


# ------------------------------------------------------------------ presets, training, bf16


def test_sst_tiny_forward_backward():
    torch.manual_seed(0)
    model = create_model("sst_tiny")
    cfg = model.config
    assert (cfg.height, cfg.width, cfg.months, cfg.patch, cfg.embed_dim, cfg.hidden, cfg.depth) == (
        32, 32, 2, (4, 4, 4), 32, 32, 1)
    model.train()
    x, mask, padded, land = _batch(cfg)
    target = torch.randn(2, 1, cfg.height, cfg.width)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(3):
        y = model(x, mask, padded, land, torch.tensor([[3, 4], [11, 0]]))
        loss = ((y - target) ** 2)[:, 0][~land].mean()
        opt.zero_grad()
        loss.backward()
        losses.append(loss.item())
        opt.step()
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0]
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.dim() >= 1, f"{name} is 0-dim (DeepSpeed cannot shard it)"
    assert model.decoder.scale.grad.abs().sum() > 0 and model.encoder.proj.weight.grad.abs().sum() > 0


def expected_parameter_count(cfg: SSTConfig) -> dict[str, int]:
    """Parameter count of each part, from the layer formulas (independent of the modules)."""
    E, Hd = cfg.embed_dim, cfg.hidden
    pt, ph, pw = cfg.patch
    F = int(E * cfg.mlp_ratio)
    ln = 2 * E
    score_mlp = ln + (E * E + E) + (E + 1)
    encoder = (2 * pt * ph * pw * E + E) + ln  # Conv3d(2 -> E) + LayerNorm
    aggregator = score_mlp + ln + (3 * E * E + 3 * E) + (E * E + E) + score_mlp  # + MHA in/out proj
    layer = (3 * E * E + 3 * E) + (E * E + E) + (E * F + F) + (F * E + E) + 2 * ln
    spatial = cfg.depth * layer + ln
    k = (ph + 2 * cfg.overlap) * (pw + 2 * cfg.overlap)
    S = 4 if cfg.input_skip else 0  # observed-summary channels
    decoder = (
        (E * Hd + Hd)  # 1x1 conv
        + (Hd * Hd * k + Hd)  # transposed conv
        + ((Hd + S) * Hd * 9) + 2 * Hd + (Hd * Hd) + 2 * Hd  # refinement (bias-free convs + BN)
        + (Hd + S + 1)  # head
        + 2  # scale, bias
    )
    return dict(encoder=encoder, aggregator=aggregator, spatial_pe=0, spatial=spatial, decoder=decoder)


@pytest.mark.parametrize("name", ["sst_tiny", "sst_base"])
def test_preset_parameter_count(name):
    model = create_model(name)
    parts = expected_parameter_count(model.config)
    for part, n in parts.items():
        assert _n(getattr(model, part)) == n, part
    total = _n(model)
    assert total == sum(parts.values())
    print(f"{name}: {total:,} parameters {parts}")


def test_sst_base_builds():
    model = create_model("sst_base")
    cfg = model.config
    assert (cfg.height, cfg.width, cfg.months, cfg.patch, cfg.embed_dim, cfg.hidden, cfg.depth, cfg.num_heads) == (
        128, 128, 3, (4, 8, 8), 128, 128, 4, 4)
    assert len(model.spatial.encoder.layers) == 4
    assert model.spatial_pe().shape == (16 * 16, 128)
    assert _n(model) == 3_504_393  # 3,499,781 without the observed-summary skip


def test_sst_base_forward():  # ~1 s on one CPU thread
    model = create_model("sst_base").eval()
    x, mask, padded, land = _batch(model.config, B=1, month_lengths=(31, 30, 31))
    with torch.no_grad():
        y = model(x, mask, padded, land)
    assert y.shape == (1, 1, 128, 128) and torch.isfinite(y).all()


def test_bf16_autocast_cpu():
    cfg = SSTConfig(**TINY)
    torch.manual_seed(0)
    model = SpatioTemporalModel(cfg).eval()
    x, mask, padded, land = _batch(cfg)
    with torch.no_grad():
        ref = model(x, mask, padded, land)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model(x, mask, padded, land)
    assert y.shape == ref.shape and torch.isfinite(y).all()
    assert y.dtype in (torch.bfloat16, torch.float32)
    assert torch.all(y[:, 0][land] == 0)
    # bf16 has ~3 significant digits; the outputs must agree to that order.
    assert (y.float() - ref).abs().max() < 0.1 * ref.abs().max() + 0.05
    # and training under autocast produces finite gradients
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(x, mask, padded, land).float().pow(2).mean()
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


def test_observed_summary_and_skip_off():
    from sensorlm.models.sst import observed_summary

    # 2 months of 2 day slots, 1 x 2 pixels: pixel 0 seen on days 0, 2, 3; pixel 1 on day 0 only.
    x = torch.tensor([1.0, 5.0, 2.0, 4.0, 7.0, 9.0, 99.0, 99.0]).view(1, 1, 4, 1, 2)  # day-major
    missing = torch.tensor([[0, 0], [1, 1], [0, 1], [0, 1]], dtype=torch.bool).view(1, 1, 4, 1, 2)
    s = observed_summary(x, missing, days_per_month=2)[0, :, 0]
    torch.testing.assert_close(s[0], torch.tensor([(7.0 + 99.0) / 2, 0.0]))  # last-month mean
    torch.testing.assert_close(s[1], torch.tensor([1.0, 0.0]))  # last-month fraction
    torch.testing.assert_close(s[2], torch.tensor([(1.0 + 7.0 + 99.0) / 3, 5.0]))  # window mean
    torch.testing.assert_close(s[3], torch.tensor([0.75, 0.25]))
    off = SSTConfig(**{**TINY, "input_skip": False})
    model = SpatioTemporalModel(off)
    assert _n(model.decoder) == expected_parameter_count(off)["decoder"]
    with pytest.raises(ConfigError, match="input_skip must be true or false, got 1"):
        SSTConfig(**{**TINY, "input_skip": 1})
