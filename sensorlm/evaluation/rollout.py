"""Attention rollout (Abnar & Zuidema, 2020) for the ViT sensor encoder.

The blocks use `F.scaled_dot_product_attention`, which never exposes its weights, so forward
pre-hooks take each block's input and recompute ``softmax(q k^T / sqrt(d))`` from the block's own
``norm1`` and ``attn.qkv`` (same weights, same key mask). Heads are averaged, the residual is
accounted for by ``0.5 A + 0.5 I`` (rows renormalised), and the layers are multiplied:
``R = Â_L ... Â_1``. The MAP head's probe attention over the final sequence, ``p``, says how much
each output token feeds the embedding, so the relevance of input patch j is ``(p R)_j``; it is
non-negative and sums to 1 per sample.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

__all__ = ["block_attention", "probe_attention", "rollout", "attention_rollout"]


def _key_mask(scores: torch.Tensor, key_padding_mask: torch.Tensor | None) -> torch.Tensor:
    if key_padding_mask is None:
        return scores
    # (B, N) True = may be attended -> broadcast over heads and queries, like the blocks do.
    return scores.masked_fill(~key_padding_mask.to(torch.bool)[:, None, None, :], float("-inf"))


def block_attention(block: nn.Module, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention weights a `TransformerBlock` applies to its input `x`.

    Args:
        block: a block with ``norm1`` and ``attn.qkv`` / ``attn.num_heads`` (pre-norm attention).
        x: (B, N, D) the block's input.
        key_padding_mask: optional (B, N) bool, True = may be attended.

    Returns:
        (B, heads, N, N) row-stochastic weights.
    """
    B, N, D = x.shape
    h = block.attn.num_heads
    q, k, _ = block.attn.qkv(block.norm1(x)).view(B, N, 3, h, D // h).permute(2, 0, 3, 1, 4)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(D // h)
    return _key_mask(scores, key_padding_mask).softmax(dim=-1)


def probe_attention(head: nn.Module, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention of a `MAPHead`'s learned probe over the sequence it pools.

    Args:
        head: a MAPHead (``probe``, ``q``, ``kv``, ``num_heads``).
        x: (B, N, D) the sequence given to the head.
        key_padding_mask: optional (B, N) bool, True = may be attended.

    Returns:
        (B, heads, N) weights summing to 1 over N.
    """
    B, N, D = x.shape
    h = head.num_heads
    q = head.q(head.probe).view(1, h, 1, D // h)  # (1, H, 1, hd), the same probe for every sample
    k = head.kv(x)[..., :D].view(B, N, h, D // h).transpose(1, 2)  # (B, H, N, hd)
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(D // h)
    return _key_mask(scores, key_padding_mask).softmax(dim=-1)[:, :, 0]


def rollout(attentions: Sequence[torch.Tensor], residual: bool = True) -> torch.Tensor:
    """Multiply per-layer attention maps through the layers.

    Args:
        attentions: per layer (first to last), (B, N, N) head-fused row-stochastic weights.
        residual: add the identity for the skip connection (``0.5 A + 0.5 I``).

    Returns:
        (B, N, N) rollout; row i = how much each input token flows into output token i.
    """
    if not attentions:
        raise ValueError("rollout needs at least one attention map")
    result = None
    for i, a in enumerate(attentions):
        if a.ndim != 3 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"attention map {i} must be (B, N, N), got shape {tuple(a.shape)}")
        if result is not None and a.shape != result.shape:
            raise ValueError(
                f"attention map {i} has shape {tuple(a.shape)} but earlier layers have {tuple(result.shape)}: "
                "rollout needs the same tokens in every layer (not a hierarchical encoder)"
            )
        a = _step(a, residual)
        result = a if result is None else a @ result
    return result


def _step(a: torch.Tensor, residual: bool) -> torch.Tensor:
    a = a.double()
    if residual:
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    return a / a.sum(dim=-1, keepdim=True)


def _hook_inputs(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
    x = args[0] if args else kwargs["x"]
    kpm = args[1] if len(args) > 1 else kwargs.get("key_padding_mask")
    return x, kpm


@torch.no_grad()
def attention_rollout(
    encoder: nn.Module,
    x: torch.Tensor,
    missing: torch.Tensor | None = None,
    grid: tuple[int, int] | None = None,
    head_fusion: str = "mean",
    residual: bool = True,
) -> torch.Tensor:
    """Relevance of each input patch for the pooled sensor embedding.

    Args:
        encoder: the ViT sensor encoder (``model.sensor_encoder``; a model with a
            ``sensor_encoder`` attribute is accepted too): ``.blocks`` of TransformerBlocks and
            ``.head`` a MAPHead, or None for mean pooling (then every attendable token counts
            equally at the end).
        x: (B, T, C) sensor input, as given to the encoder.
        missing: optional (B, T) bool missing-minute mask, passed to the encoder.
        grid: (grid_t, grid_c) token grid; default ``encoder.config.grid``.
        head_fusion: "mean" (Abnar & Zuidema), "max" or "min" over heads.
        residual: account for the skip connections (``0.5 A + 0.5 I``).

    Returns:
        (B, grid_t, grid_c) float32 relevance, non-negative, summing to 1 per sample.
    """
    encoder = getattr(encoder, "sensor_encoder", encoder)
    blocks = getattr(encoder, "blocks", None)
    if not isinstance(blocks, nn.ModuleList) or len(blocks) == 0:
        raise ValueError(
            f"{type(encoder).__name__} has no non-empty .blocks ModuleList: "
            "attention rollout needs the ViT sensor encoder"
        )
    fuse = {"mean": lambda a: a.mean(1), "max": lambda a: a.amax(1), "min": lambda a: a.amin(1)}
    if head_fusion not in fuse:
        raise ValueError(f"head_fusion must be one of {sorted(fuse)}, got {head_fusion!r}")
    if x.ndim != 3:
        raise ValueError(f"x must be (B, T, C), got shape {tuple(x.shape)}")
    if grid is None:
        cfg = getattr(encoder, "config", None)
        if cfg is None or not hasattr(cfg, "grid"):
            raise ValueError(f"grid not given and {type(encoder).__name__} has no config.grid")
        grid = tuple(cfg.grid)
    gt, gc = (int(g) for g in grid)

    state: dict = {"rollout": None, "probe": None, "mask": None, "layer": 0}

    def on_block(module, args, kwargs):
        xb, kpm = _hook_inputs(args, kwargs)
        a = _step(fuse[head_fusion](block_attention(module, xb, kpm)), residual)
        prev = state["rollout"]
        if prev is not None and prev.shape != a.shape:
            raise ValueError(
                f"block {state['layer']} sees attention of shape {tuple(a.shape)}, earlier blocks {tuple(prev.shape)}: "
                "rollout needs the same tokens in every block"
            )
        # Multiplying as we go keeps one (B, N, N) matrix instead of one per layer.
        state["rollout"] = a if prev is None else a @ prev
        state["mask"] = kpm
        state["layer"] += 1

    def on_head(module, args, kwargs):
        xh, kpm = _hook_inputs(args, kwargs)
        state["probe"] = fuse[head_fusion](probe_attention(module, xh, kpm)[:, :, None, :])[:, 0]

    head = getattr(encoder, "head", None)
    handles = [blk.register_forward_pre_hook(on_block, with_kwargs=True) for blk in blocks]
    if head is not None:
        handles.append(head.register_forward_pre_hook(on_head, with_kwargs=True))
    was_training = encoder.training
    encoder.eval()  # no dropout: the weights should describe the deterministic model
    try:
        encoder(x) if missing is None else encoder(x, missing)
    finally:
        for hd in handles:
            hd.remove()
        encoder.train(was_training)

    R = state["rollout"]
    if R is None:
        raise ValueError(f"no block of {type(encoder).__name__} ran during the forward pass")
    B, N, _ = R.shape
    if N != gt * gc:
        raise ValueError(f"encoder has {N} tokens but grid {(gt, gc)} has {gt * gc}")
    if head is not None:
        if state["probe"] is None:
            raise ValueError(f"{type(encoder).__name__}.head did not run during the forward pass")
        p = state["probe"].double()
    else:
        # Mean pooling: every attendable token of the final sequence weighs the same.
        m = torch.ones(B, N, device=R.device) if state["mask"] is None else state["mask"].to(torch.bool)
        p = m.double() / m.sum(dim=-1, keepdim=True)
    relevance = (p[:, None, :] @ R)[:, 0]
    relevance = relevance / relevance.sum(dim=-1, keepdim=True)
    return relevance.float().view(B, gt, gc)
