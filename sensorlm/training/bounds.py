"""Bounded scale parameters under DeepSpeed: clamp in place after every optimizer step.

A model names them with ``parameter_bounds()`` (`sensorlm.models.bounds`). Under ZeRO 1-3 and
bf16 the optimizer steps its own fp32 master copy and writes it back into the module at the next
step, so both copies are clamped in place: the module's and each rank's own slice of the master.
Every rank calls this (it gathers a partitioned ZeRO-3 parameter); the values are the same
everywhere, so no rank's copy drifts.
"""

from __future__ import annotations

import torch


@torch.no_grad()
def clamp_bounded_parameters(engine, bounds: dict[str, tuple[float | None, float | None]]) -> None:
    """Clamp `bounds` (parameter name -> (low, high)) of the engine's module in place.

    Args:
        engine: a DeepSpeed engine (or a plain module: then only the parameter is clamped).
        bounds: raw-parameter bounds, e.g. ``{"t_prime": (log t_min, log t_max)}``.
    """
    import deepspeed

    module = getattr(engine, "module", engine)
    for name, (low, high) in bounds.items():
        param = module.get_parameter(name)
        # Every rank computes the same clamp, so no collective is needed where the rank holds the
        # values: the whole module copy (ZeRO 1-2, and ZeRO-3's persistent small parameters) and
        # its own piece of the fp32 master. Only a partitioned ZeRO-3 parameter is gathered.
        whole = param.data.numel() == getattr(param, "ds_numel", param.data.numel())
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=not whole):
            param.data.clamp_(low, high)
        for piece in _master_pieces(param):
            piece.clamp_(low, high)


def _master_pieces(param) -> list[torch.Tensor]:
    """This rank's slices of the optimizer's fp32 master copy of `param` (none for a frozen
    parameter or a plain fp32 engine, which steps the module's own copy). DeepSpeed's
    safe_get/set_full_fp32_param would gather and scatter the whole value every step (and
    set_full_hp_param in 0.19.8 fails under ZeRO-3 on a parameter smaller than the world size)."""
    if not param.requires_grad:
        return []
    if hasattr(param, "ds_id"):  # ZeRO-3
        partition, _ = param._z3_optimizer._get_fp32_opt_state_partition(param, release_swap_buffers=True)
        return [partition]
    mapping = getattr(param, "_hp_mapping", None)  # ZeRO 1-2 and bf16: None on ranks holding no piece
    return [mapping.hp_fragment] if mapping is not None else []
