"""Tests for sensorlm/evaluation/rollout.py: recomputed attention matches the blocks, and the
rollout behaves as Abnar & Zuidema's on hand-made and real (tiny) encoders."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from sensorlm.evaluation.rollout import attention_rollout, block_attention, probe_attention, rollout
from sensorlm.models.blocks import MAPHead, TransformerBlock
from sensorlm.models.sensor_encoder import SensorEncoder, SensorEncoderConfig


def tiny_encoder(pooling: str = "map", seed: int = 0) -> SensorEncoder:
    torch.manual_seed(seed)
    cfg = SensorEncoderConfig(input_len=24, num_channels=6, patch=(4, 2), width=32, depth=2, num_heads=4, pooling=pooling)
    return SensorEncoder(cfg)


# --------------------------------------------------------------------------- recomputation


def test_block_attention_reproduces_block_output():
    torch.manual_seed(0)
    blk = TransformerBlock(16, num_heads=4).eval()
    x = torch.randn(2, 7, 16)
    kpm = torch.ones(2, 7, dtype=torch.bool)
    kpm[1, 5:] = False
    a = block_attention(blk, x, kpm)
    assert a.shape == (2, 4, 7, 7)
    torch.testing.assert_close(a.sum(-1), torch.ones(2, 4, 7))
    assert torch.all(a[1, :, :, 5:] == 0)
    # weights @ v through the output projection must equal the block's own attention branch.
    _, _, v = blk.attn.qkv(blk.norm1(x)).view(2, 7, 3, 4, 4).permute(2, 0, 3, 1, 4)
    y = blk.attn.proj((a @ v).transpose(1, 2).reshape(2, 7, 16))
    torch.testing.assert_close(y, blk.attn(blk.norm1(x), kpm), atol=1e-5, rtol=1e-5)


def test_probe_attention_reproduces_map_head():
    torch.manual_seed(1)
    head = MAPHead(16, num_heads=2).eval()
    x = torch.randn(3, 5, 16)
    kpm = torch.ones(3, 5, dtype=torch.bool)
    kpm[0, 0] = False
    p = probe_attention(head, x, kpm)
    assert p.shape == (3, 2, 5)
    torch.testing.assert_close(p.sum(-1), torch.ones(3, 2))
    v = head.kv(x)[..., 16:].view(3, 5, 2, 8).transpose(1, 2)
    y = head.proj((p[:, :, None, :] @ v).transpose(1, 2).reshape(3, 1, 16))
    y = (y + head.mlp(head.norm(y)))[:, 0]
    torch.testing.assert_close(y, head(x, kpm), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- rollout algebra


def test_rollout_of_identity_is_identity_and_rows_sum_to_one():
    eye = torch.eye(6).expand(2, 6, 6)
    torch.testing.assert_close(rollout([eye, eye, eye]), torch.eye(6, dtype=torch.float64).expand(2, 6, 6))
    a = torch.rand(2, 6, 6).softmax(-1)
    r = rollout([a, a.flip(-1)])
    torch.testing.assert_close(r.sum(-1), torch.ones(2, 6, dtype=torch.float64))
    # One layer with residual: exactly 0.5 A + 0.5 I.
    torch.testing.assert_close(rollout([a]), 0.5 * a.double() + 0.5 * torch.eye(6, dtype=torch.float64))
    # Uniform attention without residual stays uniform.
    u = torch.full((1, 4, 4), 0.25)
    torch.testing.assert_close(rollout([u, u], residual=False), u.double())


def test_rollout_bad_shapes():
    with pytest.raises(ValueError, match="at least one"):
        rollout([])
    with pytest.raises(ValueError, match=r"attention map 1 has shape \(1, 3, 3\) but earlier layers have \(1, 4, 4\)"):
        rollout([torch.eye(4)[None], torch.eye(3)[None]])
    with pytest.raises(ValueError, match=r"attention map 0 must be \(B, N, N\), got shape \(4, 4\)"):
        rollout([torch.eye(4)])


# --------------------------------------------------------------------------- hand-made encoder


class HandMadeEncoder(nn.Module):
    """N = D = 8 tokens, each a scaled one-hot vector (the input is ignored), single-head blocks
    with q = k = 5 * LN(x) so every token attends only to itself, and zeroed branch outputs so
    every block sees the same tokens. The MAP probe's query is fixed, so its attention is known."""

    class Config:
        grid = (2, 4)

    def __init__(self, depth: int = 3):
        super().__init__()
        d = 8
        self.config = self.Config()
        self.blocks = nn.ModuleList(TransformerBlock(d, num_heads=1) for _ in range(depth))
        with torch.no_grad():
            for blk in self.blocks:
                w = torch.zeros(3 * d, d)
                w[:d] = 5 * torch.eye(d)
                w[d : 2 * d] = 5 * torch.eye(d)
                blk.attn.qkv.weight.copy_(w)
                blk.attn.qkv.bias.zero_()
                blk.attn.proj.weight.zero_()
                blk.attn.proj.bias.zero_()
                blk.mlp.fc2.weight.zero_()
                blk.mlp.fc2.bias.zero_()
        self.head = MAPHead(d, num_heads=1)
        self.tokens = nn.Parameter(3 * torch.eye(d)[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.tokens.expand(x.shape[0], -1, -1)
        for blk in self.blocks:
            t = blk(t)
        return self.head(t)


def test_hand_made_encoder_identity_attention():
    enc = HandMadeEncoder()
    x = torch.zeros(2, 8, 4)
    tokens = enc.tokens.expand(2, -1, -1)
    maps = [block_attention(b, tokens).mean(1) for b in enc.blocks]
    for a in maps:
        torch.testing.assert_close(a, torch.eye(8).expand(2, 8, 8), atol=1e-6, rtol=0)
    torch.testing.assert_close(rollout(maps), torch.eye(8, dtype=torch.float64).expand(2, 8, 8), atol=1e-6, rtol=0)
    # With an identity rollout the relevance is the probe's attention itself.
    rel = attention_rollout(enc, x)
    assert rel.shape == (2, 2, 4)
    expected = probe_attention(enc.head, tokens).mean(1).view(2, 2, 4)
    torch.testing.assert_close(rel, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rel.sum((1, 2)), torch.ones(2))


def test_hand_made_encoder_uniform_probe_gives_uniform_relevance():
    enc = HandMadeEncoder()
    with torch.no_grad():
        enc.head.q.weight.zero_()
        enc.head.q.bias.zero_()  # q = 0: the probe attends uniformly
    rel = attention_rollout(enc, torch.zeros(1, 8, 4))
    torch.testing.assert_close(rel, torch.full((1, 2, 4), 1 / 8))


# --------------------------------------------------------------------------- real encoder


def test_sensor_encoder_rollout_shape_sum_and_cleanup():
    enc = tiny_encoder().train()
    x = torch.randn(3, 24, 6)
    rel = attention_rollout(enc, x)
    assert rel.shape == (3, 6, 3) and rel.dtype == torch.float32
    assert torch.all(rel >= 0)
    torch.testing.assert_close(rel.sum((1, 2)), torch.ones(3))
    assert enc.training  # mode restored
    assert all(len(b._forward_pre_hooks) == 0 for b in enc.blocks) and len(enc.head._forward_pre_hooks) == 0
    # A SensorLM-like wrapper with a .sensor_encoder attribute is accepted too.
    wrapper = nn.Module()
    wrapper.sensor_encoder = enc
    torch.testing.assert_close(attention_rollout(wrapper, x), rel)


def test_sensor_encoder_rollout_missing_patches_get_zero():
    enc = tiny_encoder()
    x = torch.randn(2, 24, 6)
    missing = torch.zeros(2, 24, dtype=torch.bool)
    missing[0, :4] = True  # the whole first time patch of sample 0
    rel = attention_rollout(enc, x, missing)
    assert torch.all(rel[0, 0] == 0)
    assert torch.all(rel[1, 0] > 0)
    torch.testing.assert_close(rel.sum((1, 2)), torch.ones(2))


@pytest.mark.parametrize("fusion", ["mean", "max", "min"])
def test_sensor_encoder_rollout_mean_pooling_and_fusions(fusion):
    enc = tiny_encoder(pooling="mean")
    rel = attention_rollout(enc, torch.randn(2, 24, 6), head_fusion=fusion)
    assert rel.shape == (2, 6, 3)
    torch.testing.assert_close(rel.sum((1, 2)), torch.ones(2))


def test_attention_rollout_bad_inputs():
    enc = tiny_encoder()
    with pytest.raises(ValueError, match=r"encoder has 18 tokens but grid \(4, 3\) has 12"):
        attention_rollout(enc, torch.randn(1, 24, 6), grid=(4, 3))
    with pytest.raises(ValueError, match=r"x must be \(B, T, C\), got shape \(24, 6\)"):
        attention_rollout(enc, torch.randn(24, 6))
    with pytest.raises(ValueError, match=r"sensor input: expected shape \(B, 24, 6\), got \(1, 20, 6\)"):
        attention_rollout(enc, torch.randn(1, 20, 6))
    with pytest.raises(ValueError, match="head_fusion must be one of"):
        attention_rollout(enc, torch.randn(1, 24, 6), head_fusion="median")
    with pytest.raises(ValueError, match="Linear has no non-empty .blocks"):
        attention_rollout(nn.Linear(3, 3), torch.randn(1, 24, 6))
    assert all(len(b._forward_pre_hooks) == 0 for b in enc.blocks)  # removed even after errors
