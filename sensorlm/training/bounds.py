"""Bounded scale parameters under DeepSpeed: clamp in place after every optimizer step.

A model names them with ``parameter_bounds()`` (`sensorlm.models.bounds`). Under ZeRO 1-3 and
bf16 the optimizer steps its own fp32 master copy and writes it back into the module at the next
step, so both copies are clamped: the master through DeepSpeed's `safe_set_full_fp32_param` (each
rank's own partition under ZeRO-3), the module's copy in place (gathered first under ZeRO-3). Every rank calls this (collective under
ZeRO-3); the values are the same everywhere, so no rank's copy drifts.
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
    from deepspeed.utils import safe_get_full_fp32_param, safe_set_full_fp32_param

    module = getattr(engine, "module", engine)
    for name, (low, high) in bounds.items():
        param = module.get_parameter(name)
        zero3 = hasattr(param, "ds_id")
        with deepspeed.zero.GatheredParameters([param], modifier_rank=0, enabled=zero3):
            param.data.clamp_(low, high)
        if not param.requires_grad:  # frozen: no master copy
            continue
        if zero3:
            # A clamp is elementwise: each rank clamps its own slice of the fp32 master. (DeepSpeed
            # 0.19.8's set_full_hp_param fails on a parameter smaller than the world size: it
            # narrows the value past the padded partition.)
            partition, _ = param._z3_optimizer._get_fp32_opt_state_partition(param, release_swap_buffers=True)
            partition.clamp_(low, high)
        else:
            master = safe_get_full_fp32_param(param)
            if master is not None:  # ZeRO 1-2 and bf16 keep one; plain fp32 steps the module's own
                safe_set_full_fp32_param(param, master.clamp(low, high))
