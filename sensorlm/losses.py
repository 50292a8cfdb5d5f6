"""Contrastive losses: SigLIP (local, and exact distributed by all-gather or ring) and CLIP's symmetric InfoNCE
(local and exact distributed).

Pure PyTorch. The losses are computed in float32 with autocast switched off: the sigmoid of
``t * <zs, zt> + b`` with t up to ~100 and b ~ -10 loses the positives' signal in bf16.
"""

from __future__ import annotations

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


# torch 2.13 renamed the tensor-in/tensor-out collectives (the old names warn); older torch,
# e.g. the GPU images' 2.11, only has the old names.
_all_gather_single = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
_reduce_scatter_single = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor


def _world(group: dist.ProcessGroup | None) -> int:
    """World size of `group`, or 1 without an initialised process group."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class _AllGatherRows(torch.autograd.Function):
    """All-gather along dim 0 whose backward SUMS every rank's gradient of this rank's rows.

    The sum is what `torch.distributed.nn.functional.all_gather` did (deprecated in torch 2.13):
    reduce-scatter on NCCL/XCCL; on other backends (gloo has no reduce-scatter) an
    all-reduce of the full gradient, then this rank's rows.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, group: dist.ProcessGroup | None) -> torch.Tensor:
        ctx.group = group
        x = x.contiguous()
        out = x.new_empty((dist.get_world_size(group) * x.shape[0], *x.shape[1:]))
        _all_gather_single(out, x, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        group = ctx.group
        world = dist.get_world_size(group)
        rows = grad.shape[0] // world
        if dist.get_backend(group) in ("nccl", "xccl"):
            out = grad.new_empty((rows, *grad.shape[1:]))
            _reduce_scatter_single(out, grad.contiguous(), group=group)
            return out, None
        total = grad.contiguous().clone()
        dist.all_reduce(total, group=group)
        return total[dist.get_rank(group) * rows : (dist.get_rank(group) + 1) * rows].clone(), None


def siglip_loss_gather(
    zs: torch.Tensor,
    zt: torch.Tensor,
    t_prime: torch.Tensor,
    bias: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    max_temperature: float | None = None,
) -> torch.Tensor:
    """Exact SigLIP loss over the global batch of all ranks, by all-gathering the embeddings.

    Each rank all-gathers both embeddings (with autograd, one collective) and computes the loss of
    the full (N x N) global matrix, N = world_size * B, so every rank returns the same value: the
    single-process loss of the whole batch. Memory per rank grows as N^2; `siglip_loss_ring`
    computes the same loss and gradients with (B x B) logit blocks.

    Gradient scaling: the all-gather's backward SUMS the gradients that all W ranks send to each
    local slice. Every rank differentiates the same global loss L, so a rank's local embeddings
    receive W * dL/dz, and its parameter gradients are W times its share of the global gradient.
    DDP / DeepSpeed then AVERAGE over ranks: (1/W) * sum_r W * dL/dz_r * dz_r/dtheta = dL/dtheta,
    the single-process gradient. t_prime and bias are used directly (not gathered): each rank holds
    dL/dt, whose average is dL/dt. So no extra factor is needed under gradient averaging; under
    gradient SUMMING divide by W.

    Requires the same local batch size on every rank (the all-gather needs equal shapes), i.e. a
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
    if _world(group) == 1:
        return siglip_loss(zs, zt, t_prime, bias, max_temperature)
    d = zs.shape[1]
    both = _AllGatherRows.apply(torch.cat([zs, zt], dim=1), group)
    return siglip_loss(both[:, :d], both[:, d:], t_prime, bias, max_temperature)


def _shift(tensor: torch.Tensor, to: int, source: int, group: dist.ProcessGroup | None) -> tuple[torch.Tensor, list]:
    """Start sending `tensor` to group rank `to` and receiving a tensor of its shape from `source`.

    Returns the receive buffer and the requests to wait on before reading it (or reusing `tensor`).
    """
    if group is not None:  # P2POp takes global ranks (its group_peer needs torch >= 2.6)
        to, source = dist.get_global_rank(group, to), dist.get_global_rank(group, source)
    received = torch.empty_like(tensor)
    ops = [dist.P2POp(dist.isend, tensor, to, group=group), dist.P2POp(dist.irecv, received, source, group=group)]
    return received, dist.batch_isend_irecv(ops)


def _wait(requests: list) -> None:
    for r in requests:
        r.wait()


def _block_logits(zs: torch.Tensor, zt: torch.Tensor, t: torch.Tensor, b: torch.Tensor, positives: bool):
    """Similarities ``zs @ zt.T`` and ``z = -y * (t * sim + b)``, so the block's loss is softplus(z)."""
    sim = zs @ zt.T
    z = sim * t + b
    if positives:
        z.diagonal().neg_()
    return sim, z


class _SiglipRing(torch.autograd.Function):
    """This rank's share L_r of the global SigLIP loss: its sensor rows against every rank's text.

    Forward: the text embeddings travel W-1 hops to the right (send right, receive from the left),
    the next hop overlapping the current block's logits; each (B x B) block is reduced to its loss
    sum and freed. Backward recomputes the blocks: the text embeddings travel to the LEFT this time,
    and with each block a gradient accumulator that every rank adds its share to; after W hops the
    accumulator of rank c's text is back home at rank c. Nothing larger than one (B x B) block (two
    in backward) and two text blocks is held, whatever W; the price is one matmul recomputed per block.
    (open_clip's exchange, one autograd node per hop, keeps every block's logits for backward:
    W * B^2 per rank.)
    """

    @staticmethod
    def forward(ctx, zs, zt, t, b, group):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        ctx.group = group
        ctx.save_for_backward(zs, zt, t, b)
        total = zs.new_zeros(())
        block = zt
        for step in range(world):
            if step < world - 1:
                incoming, requests = _shift(block, (rank + 1) % world, (rank - 1) % world, group)
            _, z = _block_logits(zs, block, t, b, positives=step == 0)
            total += F.softplus(z).sum()
            del z
            if step < world - 1:
                _wait(requests)
                block = incoming
        return total / (world * zs.shape[0])

    @staticmethod
    def backward(ctx, grad_out):
        zs, zt, t, b = ctx.saved_tensors
        # loss.backward() may run inside the caller's autocast region: keep the blocks in fp32.
        with torch.autocast(device_type=zs.device.type, enabled=False):
            return _SiglipRing._backward(ctx.group, zs, zt, t, b, grad_out)

    @staticmethod
    def _backward(group, zs, zt, t, b, grad_out):
        world, rank = dist.get_world_size(group), dist.get_rank(group)
        left, right = (rank - 1) % world, (rank + 1) % world
        scale = grad_out / (world * zs.shape[0])
        grad_zs = torch.zeros_like(zs)
        grad_t = zs.new_zeros(())
        grad_b = zs.new_zeros(())
        block, acc = zt, torch.zeros_like(zt)
        for step in range(world):
            if step < world - 1:
                incoming, requests = _shift(block, left, right, group)
            positives = step == 0
            sim, z = _block_logits(zs, block, t, b, positives)
            # d softplus(z)/dS = -y * sigmoid(z): sigmoid in place, then flip the positives back.
            d_logits = torch.sigmoid_(z)
            if positives:
                d_logits.diagonal().neg_()
            d_logits *= scale
            grad_b += d_logits.sum()
            grad_t += torch.dot(d_logits.view(-1), sim.view(-1))
            del sim
            d_logits *= t  # dL/d(sim): the embeddings' gradients below
            grad_zs.addmm_(d_logits, block)
            acc.addmm_(d_logits.T, zs)
            del d_logits, z
            if step < world - 1:
                _wait(requests)  # before the accumulator's hop: one message in flight per peer
                block = incoming
            received, requests = _shift(acc, left, right, group)
            _wait(requests)
            acc = received
        return grad_zs, acc, grad_t, grad_b, None


def siglip_loss_ring(
    zs: torch.Tensor,
    zt: torch.Tensor,
    t_prime: torch.Tensor,
    bias: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    max_temperature: float | None = None,
) -> torch.Tensor:
    """Exact SigLIP loss over the global batch of all ranks, with the text passed around a ring.

    The chunked form of big_vision and open_clip: rank r computes L_r, the loss of its B sensor
    rows against the B text rows of every rank in turn (the text blocks travel to the right
    neighbour with P2P sends), with the same normalisation as `siglip_loss` (sum over pairs /
    global N, N = world_size * B), so sum_r L_r = L, the single-process loss of the whole batch.
    Each rank only ever holds (B x B) logits, where `siglip_loss_gather` holds (N x N).

    Gradient convention: the same as `siglip_loss_gather`, so either form can feed the same
    trainer. The returned value equals the global L on every rank (one all-reduce of the detached
    L_r, for logging), but its gradient is that of W * L_r. Hence a rank's local embeddings receive
    W * dL/dz (the backward sends each text block's gradient, summed over the ranks, back to its
    owner), exactly as in the gather form, and DDP / DeepSpeed's averaging gives the single-process
    dL/dtheta. t_prime and bias receive W * dL_r/dt on rank r, which differs per rank from the
    gather form's dL/dt, but its AVERAGE over ranks is dL/dt, as for the gather form. Under gradient
    SUMMING divide by W.

    Requires the same local batch size and dimension on every rank (the receive buffers take the
    local shape; a mismatch is not checked, as that would cost a collective and a host sync per
    step), i.e. a loader that drops the last incomplete batch. Every rank must call it (P2P ops).

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
    world = _world(group)
    if world == 1:
        return siglip_loss(zs, zt, t_prime, bias, max_temperature)
    with torch.autocast(device_type=zs.device.type, enabled=False):
        t = _temperature(t_prime, max_temperature)
        local = _SiglipRing.apply(zs.float().contiguous(), zt.float().contiguous(), t, bias.float().reshape(()), group)
        total = local.detach().clone()
        dist.all_reduce(total, group=group)
        # The value of `total` exactly (x - x.detach() is 0), the gradient of world * L_r.
        scaled = world * local
        return total + (scaled - scaled.detach())


SIGLIP_EXCHANGES = {"gather": siglip_loss_gather, "ring": siglip_loss_ring}
"""The distributed SigLIP forms by config name; every form gives the same loss and averaged gradients."""


def siglip_loss_distributed(
    zs: torch.Tensor,
    zt: torch.Tensor,
    t_prime: torch.Tensor,
    bias: torch.Tensor,
    group: dist.ProcessGroup | None = None,
    max_temperature: float | None = None,
    exchange: str = "gather",
) -> torch.Tensor:
    """Exact SigLIP loss over the global batch of all ranks, in the form named by `exchange`.

    Args:
        zs, zt, t_prime, bias, group, max_temperature: as in `siglip_loss_gather`.
        exchange: a key of `SIGLIP_EXCHANGES`: "gather" (`siglip_loss_gather`, (N x N) logits per
            rank) or "ring" (`siglip_loss_ring`, (B x B) blocks; same loss and averaged gradients).

    Returns:
        0-dim float32 loss, equal on every rank to the single-process loss of the global batch.
    """
    try:
        form = SIGLIP_EXCHANGES[exchange]
    except KeyError:
        raise ValueError(f"exchange: expected one of {sorted(SIGLIP_EXCHANGES)}, got {exchange!r}") from None
    return form(zs, zt, t_prime, bias, group=group, max_temperature=max_temperature)


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


def clip_loss_distributed(
    za: torch.Tensor, zb: torch.Tensor, logit_scale: torch.Tensor, group: dist.ProcessGroup | None = None
) -> torch.Tensor:
    """Exact symmetric InfoNCE over the global batch of all ranks (every rank's pairs are every
    rank's negatives), for L2-normalised (B, D) embeddings and the scale s (shape (1,)).

    The same exchange and gradient convention as `siglip_loss_gather`: every rank returns the
    single-process loss of the whole batch, and gradients averaged over ranks (DeepSpeed, DDP) are
    the single-process gradients.
    """
    if za.ndim != 2 or za.shape != zb.shape or za.shape[0] == 0:
        raise ValueError(f"embeddings: expected two non-empty (B, D) tensors of one shape, got {tuple(za.shape)} "
                         f"and {tuple(zb.shape)}")
    if _world(group) > 1:  # one all-gather of both, backward summed over ranks (as siglip_loss_gather)
        d = za.shape[1]
        both = _AllGatherRows.apply(torch.cat([za, zb], dim=1), group)
        za, zb = both[:, :d], both[:, d:]
    with torch.autocast(device_type=za.device.type, enabled=False):
        logits = logit_scale.float().reshape(()) * (za.float() @ zb.float().T)
        return clip_loss(logits, logits.T)
