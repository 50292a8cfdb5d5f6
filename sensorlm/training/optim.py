"""AdamW parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

# Scalars of the contrastive head: decaying them toward 0 would fight the loss.
NO_DECAY_NAMES = ("t_prime", "bias", "logit_scale", "pos_embed", "probe", "scale")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW groups: matrices decay; norms, biases, embeddings' positions and the
    SigLIP temperature/bias do not."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        leaf = name.rsplit(".", 1)[-1]
        if p.ndim < 2 or leaf in NO_DECAY_NAMES or "norm" in name:
            no_decay.append(p)
        else:
            decay.append(p)
    # DeepSpeed flattens each group into one buffer in this order: tensors whose size is not a
    # multiple of 8 (the (1,) SigLIP scalars) go last, or they shift every later tensor off
    # 16-byte alignment and cuBLAS falls back to slow kernels (bench/RESULTS.md: +26% ZeRO-2).
    def aligned(params):
        return sorted(params, key=lambda p: p.numel() % 8 != 0)

    return [
        {"params": aligned(decay), "weight_decay": weight_decay},
        {"params": aligned(no_decay), "weight_decay": 0.0},
    ]


def warmup_cosine(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """LR multiplier: linear warmup to 1, then cosine to `min_ratio` at `total`."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def build_optimizer(model: nn.Module, lr: float, weight_decay: float, betas, eps: float, fused: bool):
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps, fused=fused)


def build_scheduler(optimizer, total_steps: int, warmup: int, min_ratio: float):
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: warmup_cosine(s, total_steps, warmup, min_ratio)
    )
