"""TextEncoder: shapes, padding invariance, input validation."""

from __future__ import annotations

import pytest
import torch

from sensorlm.typed_config import ConfigError
from sensorlm.models.text_encoder import TextEncoder, TextEncoderConfig

TINY = TextEncoderConfig(vocab_size=100, max_len=32, context_len=16, width=32, depth=2, num_heads=4, embed_dim=24)


@pytest.fixture
def tiny() -> TextEncoder:
    torch.manual_seed(0)
    return TextEncoder(TINY).eval()


def _batch(B: int = 3, L: int = 16, lengths=(16, 9, 3)):
    torch.manual_seed(1)
    ids = torch.randint(1, 100, (B, L))
    mask = torch.zeros(B, L, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
    return ids.masked_fill(mask == 0, TINY.pad_id), mask


def test_shapes_dtype_and_unit_norm(tiny):
    ids, mask = _batch()
    z = tiny(ids, mask)
    assert z.shape == (3, 24) and z.dtype == torch.float32
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(3))


def test_paper_defaults():
    cfg = TextEncoderConfig()
    assert (cfg.vocab_size, cfg.max_len, cfg.context_len, cfg.width, cfg.depth, cfg.embed_dim) == (
        32000, 1024, 64, 768, 12, 768
    )
    with torch.device("meta"):
        model = TextEncoder(cfg)
    assert model.token_embed.weight.shape == (32000, 768)
    assert model.pos_embed.shape == (1, 1024, 768)


def test_tokens_under_mask_zero_do_not_change_the_embedding(tiny):
    ids, mask = _batch()
    z = tiny(ids, mask)
    other = ids.clone()
    other[mask == 0] = torch.randint(1, 100, (int((mask == 0).sum()),))
    torch.testing.assert_close(tiny(other, mask), z, rtol=0, atol=1e-6)
    # Extra padding columns change nothing either.
    wide_ids = torch.cat([ids, torch.randint(1, 100, (3, 7))], dim=1)
    wide_mask = torch.cat([mask, torch.zeros(3, 7, dtype=torch.long)], dim=1)
    torch.testing.assert_close(tiny(wide_ids, wide_mask), z, rtol=0, atol=1e-5)
    # A real token does change it.
    changed = ids.clone()
    changed[:, 0] = ids[:, 0] % 99 + 1  # ids are in [1, 99]: always a different id
    assert ((tiny(changed, mask) - z).abs().amax(dim=-1) > 1e-4).all()


def test_pad_row_of_token_table_is_zero(tiny):
    assert tiny.token_embed.weight[TINY.pad_id].abs().sum() == 0


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda ids, m: (ids.masked_fill(ids == ids[0, 0], 100), m), r"token id 100 out of range \[0, 100\)"),
        (lambda ids, m: (ids.masked_fill(ids == ids[0, 0], -1), m), r"token id -1 out of range"),
        (lambda ids, m: (ids.float(), m), "expected an integer tensor"),
        (lambda ids, m: (ids[0], m[0]), r"input_ids: expected shape \(B, L\), got \(16,\)"),
        (lambda ids, m: (ids, m[:, :15]), r"attention_mask: shape \(3, 15\) does not match input_ids \(3, 16\)"),
        (lambda ids, m: (ids, m * torch.tensor([[1], [0], [1]])), r"attention_mask: rows \[1\] have no tokens"),
        (
            lambda ids, m: (torch.ones(3, 33, dtype=torch.long), torch.ones(3, 33, dtype=torch.long)),
            "length 33 exceeds max_len 32",
        ),
    ],
)
def test_bad_inputs_are_named(tiny, make, needle):
    ids, mask = _batch()
    bad_ids, bad_mask = make(ids, mask)
    with pytest.raises(ValueError, match=needle):
        tiny(bad_ids, bad_mask)


def test_validate_false_skips_host_checks_and_stays_finite(tiny):
    ids, mask = _batch()
    mask[1] = 0
    z = tiny(ids, mask, validate=False)
    assert torch.isfinite(z).all()
    # Shape errors are still caught: they cost nothing.
    with pytest.raises(ValueError, match="does not match"):
        tiny(ids, mask[:, :4], validate=False)


@pytest.mark.parametrize(
    "kwargs, needle",
    [
        ({"context_len": 2048}, "context_len: 2048 exceeds max_len 1024"),
        ({"pad_id": 32000}, r"pad_id: expected an id in \[0, 32000\), got 32000"),
        ({"width": 100}, "width 100 is not divisible by num_heads 12"),
        ({"vocab_size": 0}, "vocab_size: expected a positive integer, got 0"),
    ],
)
def test_bad_config_fields_are_named(kwargs, needle):
    with pytest.raises(ConfigError, match=needle):
        TextEncoderConfig(**kwargs)


def test_grad_checkpointing_gives_same_grads():
    torch.manual_seed(0)
    model = TextEncoder(TINY)
    ids, mask = _batch()
    model(ids, mask).pow(3).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()
    model.set_grad_checkpointing(True)
    model(ids, mask).pow(3).sum().backward()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.grad, grads[n], msg=lambda m, n=n: f"{n}: {m}")


def test_bf16_autocast_forward_on_cpu(tiny):
    ids, mask = _batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z = tiny(ids, mask)
    assert z.shape == (3, 24) and torch.isfinite(z).all()
    torch.testing.assert_close(z.float(), tiny(ids, mask), atol=0.05, rtol=0)
