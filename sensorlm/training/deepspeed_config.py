"""The DeepSpeed JSON, generated from the typed run config (a user file may override keys)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from sensorlm.typed_config import ConfigError
from sensorlm.training.config import TrainConfig


def resolve_precision(cfg: TrainConfig) -> str:
    """``bf16`` on GPU and ``fp32`` on CPU unless the config pins one."""
    if cfg.scaling.precision != "auto":
        return cfg.scaling.precision
    return "bf16" if cfg.scaling.use_gpu else "fp32"


def build_deepspeed_config(cfg: TrainConfig, world_size: int, load_universal: bool = False) -> dict[str, Any]:
    """DeepSpeed config for `cfg` on `world_size` ranks (``load_universal``: the run resumes from a
    universal checkpoint, converted from one written at another world size).

    The optimizer and LR schedule are built by the trainer (torch AdamW with parameter groups
    and a LambdaLR) and handed to ``deepspeed.initialize``, so they are not in this dict.
    """
    s = cfg.scaling
    accum = s.grad_accum_at(world_size, cfg.optim.grad_accum)
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": cfg.batch_size,
        "gradient_accumulation_steps": accum,
        "train_batch_size": cfg.batch_size * accum * world_size,
        "gradient_clipping": cfg.optim.grad_clip,
        "zero_optimization": {"stage": s.zero_stage},
        "bf16": {"enabled": resolve_precision(cfg) == "bf16"},
        "steps_per_print": 10**9,  # progress is ours; keep DeepSpeed's per-step log quiet
        "wall_clock_breakdown": False,
        # ZeRO-1/2 need this for a client (torch) optimizer; we trust torch's AdamW.
        "zero_allow_untested_optimizer": True,
    }
    if load_universal:
        ds["checkpoint"] = {"load_universal": True}
    if ds["bf16"]["enabled"]:
        # BatchNorm buffers (SST decoder) must match the bf16 weights DeepSpeed casts to.
        ds["data_types"] = {"buffer_dtype": "bf16"}
    if s.zero_stage >= 2:
        ds["zero_optimization"].update({"overlap_comm": s.use_gpu, "contiguous_gradients": True})
    if s.zero_stage == 3:
        ds["zero_optimization"].update({"stage3_gather_16bit_weights_on_model_save": False})
    if s.deepspeed_config:
        _deep_merge(ds, load_user_deepspeed_config(s.deepspeed_config))
    return ds


def load_user_deepspeed_config(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"scaling.deepspeed_config: file {p} does not exist")
    try:
        data = json.loads(p.read_text()) if p.suffix == ".json" else yaml.safe_load(p.read_text())
    except (json.JSONDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"scaling.deepspeed_config: cannot parse {p}: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"scaling.deepspeed_config: {p} must hold a mapping")
    return data


def _deep_merge(dst: dict, src: dict) -> None:
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
