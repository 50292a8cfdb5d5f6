"""Contrastive losses: SigLIP and CLIP's symmetric InfoNCE, local and exact distributed.

Pure PyTorch. The losses are computed in float32 with autocast switched off: the sigmoid of
``t * <zs, zt> + b`` with t up to ~100 and b ~ -10 loses the positives' signal in bf16.
"""

from __future__ import annotations

import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F


def _check_pair(zs: torch.Tensor, zt: torch.Tensor, t_prime: torch.Tensor, bias: torch.Tensor) -> None:
    if zs.ndim != 2 or zt.ndim != 2 or zs.shape != zt.shape:
        raise ValueError(
            f"embeddings: expected two (B, D) tensors of the same shape, got sensor {tuple(zs.shape)} "
            f"and text {tuple(zt.shape)}"
        )
    if zs.shape[0] == 0:
        raise ValueError("embeddings: empty batch")
    if t_prime.numel() != 1 or bias.numel() != 1:
        raise ValueError(
            f"t_prime and bias must hold one value each, got shapes {tuple(t_prime.shape)} and {tuple(bias.shape)}"
        )


def _temperature(t_prime: torch.Tensor, max_temperature: float | None) -> torch.Tensor:
    t = t_prime.float().exp().reshape(())
    # Clamp the value, not the parameter: an in-place clamp would break autograd and DeepSpeed's
    # partitioned copies of the parameter.
    return t if max_temperature is None else torch.clamp(t, max=max_temperature)


def siglip_loss(
    zs: torch.Tensor,
    zt: torch.Tensor,
    t_prime: torch.Tensor,
    bias: torch.Tensor,
    max_temperature: float | None = None,
) -> torch.Tensor:
    """Sigmoid contrastive loss of SigLIP (Zhai et al., 2023).

    ``S = exp(t_prime) * zs @ zt.T + bias``, labels +1 on the diagonal and -1 elsewhere, and
    ``L = -sum_ij log sigmoid(y_ij * S_ij) / B``: the sum over all B*B pairs divided by the batch
    size, as in the paper's pseudo-code. The seed's ``-mean_ij`` equals this divided by B, a
    constant factor that changes the effective learning rate but not the optimum.

    Args:
        zs: (B, D) sensor embeddings (L2-normalised).
        zt: (B, D) text embeddings (L2-normalised); row i is the positive of zs row i.
        t_prime: shape-(1,) log-temperature.
        bias: shape-(1,) logit bias.
        max_temperature: optional upper bound applied to exp(t_prime) (functionally).

    Returns:
        0-dim float32 loss.
    """
    _check_pair(zs, zt, t_prime, bias)
    n = zs.shape[0]
    with torch.autocast(device_type=zs.device.type, enabled=False):
        logits = _temperature(t_prime, max_temperature) * (zs.float() @ zt.float().T) + bias.float().reshape(())
        labels = 2.0 * torch.eye(n, device=logits.device, dtype=logits.dtype) - 1.0
        return -F.logsigmoid(labels * logits).sum() / n


def siglip_loss_distributed(
    zs: torch.Tensor,
    zt: torch.Tensor,
    t_prime: torch.Tensor,
    bias: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    max_temperature: float | None = None,
) -> torch.Tensor:
    """Exact SigLIP loss over the global batch of all ranks.

    Each rank all-gathers both embeddings (with autograd) and computes the loss of the full
    (N x N) global matrix, N = world_size * B, so every rank returns the same value: the
    single-process loss of the whole batch.

    Gradient scaling: the backward of `torch.distributed.nn.functional.all_gather` SUMS the
    gradients that all W ranks send to each local slice. Every rank differentiates the same
    global loss L, so a rank's local embeddings receive W * dL/dz, and its parameter gradients
    are W times its share of the global gradient. DDP / DeepSpeed then AVERAGE over ranks:
    (1/W) * sum_r W * dL/dz_r * dz_r/dtheta = dL/dtheta, the single-process gradient. t_prime and
    bias are used directly (not gathered): each rank holds dL/dt, whose average is dL/dt. So
    no extra factor is needed under gradient averaging; under gradient SUMMING divide by W.

    Requires the same local batch size on every rank (all_gather needs equal shapes), i.e. a
    loader that drops the last incomplete batch.

    Args:
        zs: (B, D) local sensor embeddings.
        zt: (B, D) local text embeddings.
        t_prime: shape-(1,) log-temperature.
        bias: shape-(1,) logit bias.
        group: process group (default: the world).
        max_temperature: optional upper bound on exp(t_prime).

    Returns:
        0-dim float32 loss; with no initialised process group or world size 1, `siglip_loss`.
    """
    _check_pair(zs, zt, t_prime, bias)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return siglip_loss(zs, zt, t_prime, bias, max_temperature)
    zs_all, zt_all = _gather_rows(zs, group), _gather_rows(zt, group)
    return siglip_loss(zs_all, zt_all, t_prime, bias, max_temperature)


def _gather_rows(x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
    """Every rank's (B, D) rows stacked in rank order, differentiable: the backward sums the
    gradients every rank sends to this rank's slice."""
    from torch.distributed.nn.functional import all_gather

    with warnings.catch_warnings():
        # torch 2.13 marks this autograd all_gather deprecated; it is the form whose backward
        # (gradients summed across ranks) tests/test_losses.py checks to be exact, so keep it.
        warnings.simplefilter("ignore", FutureWarning)
        return torch.cat(all_gather(x.contiguous(), group=group), dim=0)


def clip_loss_distributed(
    za: torch.Tensor, zb: torch.Tensor, logit_scale: torch.Tensor, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Exact symmetric InfoNCE over the global batch of all ranks (every rank's pairs are every
    rank's negatives), for L2-normalised (B, D) embeddings and the scale s (shape (1,)).

    The same exchange and gradient convention as `siglip_loss_distributed`: every rank returns the
    single-process loss of the whole batch, and gradients averaged over ranks (DeepSpeed, DDP) are
    the single-process gradients.
    """
    if za.ndim != 2 or za.shape != zb.shape or za.shape[0] == 0:
        raise ValueError(f"embeddings: expected two non-empty (B, D) tensors of one shape, got {tuple(za.shape)} "
                         f"and {tuple(zb.shape)}")
    if dist.is_available() and dist.is_initialized() and dist.get_world_size(group) > 1:
        za, zb = _gather_rows(za, group), _gather_rows(zb, group)
    with torch.autocast(device_type=za.device.type, enabled=False):
        logits = logit_scale.float().reshape(()) * (za.float() @ zb.float().T)
        return clip_loss(logits, logits.T)


def clip_loss(logits_a_b: torch.Tensor, logits_b_a: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE of CLIP: the mean of the cross-entropies in both directions.

    Args:
        logits_a_b: (B, B) scaled similarities, row i = a_i against every b; target i.
        logits_b_a: (B, B) the other direction (usually ``logits_a_b.T``).

    Returns:
        0-dim loss ``(CE(logits_a_b, arange) + CE(logits_b_a, arange)) / 2``.
    """
    for name, lg in (("logits_a_b", logits_a_b), ("logits_b_a", logits_b_a)):
        if lg.ndim != 2 or lg.shape[0] != lg.shape[1] or lg.shape[0] == 0:
            raise ValueError(f"{name}: expected a non-empty square (B, B) matrix, got {tuple(lg.shape)}")
    if logits_a_b.shape != logits_b_a.shape:
        raise ValueError(f"logits shapes differ: {tuple(logits_a_b.shape)} vs {tuple(logits_b_a.shape)}")
    target = torch.arange(logits_a_b.shape[0], device=logits_a_b.device)
    return 0.5 * (F.cross_entropy(logits_a_b.float(), target) + F.cross_entropy(logits_b_a.float(), target))
