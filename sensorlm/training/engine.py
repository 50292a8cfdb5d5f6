"""The DeepSpeed engine of one worker: built from the run config, resumed from Ray Train's
checkpoint, saved and reported (every rank; the saves are collective).

A ZeRO checkpoint partitions the optimizer state over the ranks that wrote it. Resumed at another
world size (a run restarted with fewer or more workers), it is converted to DeepSpeed's universal
checkpoint first (each rank converts its own copy, loading with weights_only=True) and loaded
with ``checkpoint.load_universal``; the world size each checkpoint was written at is in its
client state."""

from __future__ import annotations

import contextlib
import io
import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch

from sensorlm.training.config import TrainConfig
from sensorlm.training.deepspeed_config import build_deepspeed_config
from sensorlm.training.distributed import barrier
from sensorlm.training.early_stopping import EarlyStopping
from sensorlm.training.rng import rng_state, set_rng_state

CKPT_TAG = "ds"
RNG_DIR = "rng"  # rank{r}.json: each rank's RNG states (JSON, not pickled)


def saved_world_size(checkpoint) -> int | None:
    """The data-parallel world size a Ray checkpoint's ZeRO state was written at (its optimizer
    partitions), or None for none (no checkpoint, or ZeRO stage 0, which any world size loads)."""
    if checkpoint is None:
        return None
    import fnmatch

    import pyarrow.fs

    # listed where it lies (storage_path may be s3://): resume() downloads it once, later
    listing = checkpoint.filesystem.get_file_info(pyarrow.fs.FileSelector(f"{checkpoint.path}/{CKPT_TAG}",
                                                                          allow_not_found=True))
    return sum(fnmatch.fnmatch(f.base_name, "*zero_pp_rank_*_optim_states.pt") for f in listing) or None


def build_engine(cfg: TrainConfig, world: int, device: torch.device, load_universal: bool = False):
    """The model of the run config (the same initial weights on every rank), its optimizer and
    schedule, wrapped by DeepSpeed (``load_universal``: to resume a checkpoint of another world
    size). Returns (engine, model, model config, scheduler)."""
    import deepspeed

    from sensorlm.models import create_model, model_config
    from sensorlm.training.checkpointing import install_safe_loading
    from sensorlm.training.optim import build_optimizer, build_scheduler

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    mcfg = model_config(cfg.model.preset, **cfg.model.overrides)
    model = create_model(cfg.model.preset, **cfg.model.overrides)
    if world > 1:  # BatchNorm statistics over the global batch: N workers compute what one does
        from sensorlm.training.sync_batchnorm import sync_batchnorm

        model = sync_batchnorm(model, device)
    if cfg.scaling.activation_checkpointing and hasattr(model, "set_grad_checkpointing"):
        model.set_grad_checkpointing(True)
    if cfg.scaling.compile:
        # Block by block, batch dim dynamic: +23% on H100 vs eager, and no graph breaks around
        # DeepSpeed's hooks (bench/RESULTS.md); a whole-engine compile was slower.
        from sensorlm.models.blocks import TransformerBlock

        for block in (m for m in model.modules() if isinstance(m, TransformerBlock)):
            block.compile(dynamic=True)
    model.to(device)
    optimizer = build_optimizer(
        model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.eps, fused=device.type == "cuda"
    )
    scheduler = build_scheduler(optimizer, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
    _skip_inference_comm_op()
    engine, optimizer, _, scheduler = deepspeed.initialize(
        model=model,
        optimizer=optimizer,
        lr_scheduler=scheduler,
        config=build_deepspeed_config(cfg, world, load_universal),
        dist_init_required=False,
    )
    install_safe_loading(engine)
    return engine, model, mcfg, scheduler


def resume(engine, cfg: TrainConfig, rank: int, world: int,
           early: EarlyStopping | None) -> tuple[int, int, Any, int | None]:
    """Load Ray Train's checkpoint into `engine` (and `early`), if there is one. Returns (step,
    data seed, checkpoint or None, the world size that wrote it): with ``data.resume=exact`` the
    data seed and RNG states of the interrupted run (the caller fast-forwards the stream), else a
    new stream per resume."""
    import ray.train

    step, data_seed = 0, cfg.data.seed
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return step, data_seed, None, None
    with checkpoint.as_directory() as ckpt_dir:
        if engine.load_universal_checkpoint():
            client_state = _load_resized(engine, Path(ckpt_dir))
        else:
            _, client_state = engine.load_checkpoint(ckpt_dir, tag=CKPT_TAG)
        rng_file = Path(ckpt_dir) / RNG_DIR / f"rank{rank}.json"
        rng = json.loads(rng_file.read_text()) if rng_file.is_file() else None
    step = int(client_state["step"])
    if early is not None and client_state.get("early_stopping"):
        early.load_state_dict(client_state["early_stopping"])  # count on from where it left off
    if cfg.data.resume == "exact":
        data_seed = int(client_state["data_seed"])  # the same stream, fast-forwarded by the caller
        if rng is not None and int(client_state.get("world_size", world)) == world:
            set_rng_state(rng)
    else:  # "fresh": a new stream per resume, no fast-forward
        data_seed = int(client_state["data_seed"]) + 1
    if rank == 0:
        print(f"[sensorlm] resumed from step {step} (checkpoint {checkpoint.path})", flush=True)
    return step, data_seed, checkpoint, int(client_state.get("world_size", world))


def _load_resized(engine, ckpt_dir: Path) -> dict[str, Any]:
    """Convert a checkpoint of another world size to a universal one (this rank's own copy, one
    process, weights_only loads) and load it; returns its client state."""
    from types import SimpleNamespace as Namespace  # the converter reads its arguments as attributes

    from deepspeed.checkpoint import ds_to_universal

    from sensorlm.training.checkpointing import weights_only_loads

    # The converter prints its steps and progress bars, and the load warns that there is no tensor
    # parallelism (none is used): kept out of the log unless the conversion fails.
    chatter = io.StringIO()
    ds_logger = logging.getLogger("DeepSpeed")
    level = ds_logger.level
    with tempfile.TemporaryDirectory(prefix="sensorlm-universal-") as tmp, weights_only_loads():
        try:
            with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
                ds_to_universal.main(Namespace(input_folder=str(ckpt_dir / CKPT_TAG), output_folder=f"{tmp}/{CKPT_TAG}",
                                               num_extract_workers=1, num_merge_workers=1, keep_temp_folder=False,
                                               strict=True, inject_missing_state=False))
        except BaseException:
            print(chatter.getvalue()[-4000:], flush=True)
            raise
        ds_logger.setLevel(logging.ERROR)
        try:
            _, client_state = engine.load_checkpoint(tmp, tag=CKPT_TAG)
        finally:
            ds_logger.setLevel(level)
    return client_state


def _skip_inference_comm_op() -> None:
    """DeepSpeed loads (first time: compiles) a C++ shared-memory all-reduce at its first
    init_distributed; only its inference_all_reduce uses it, never training. Skipping it saves
    about 3 s of every start-up on CPU (and a "built successfully" line per rank)."""
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def save_and_report(engine, cfg: TrainConfig, run: dict, step: int, data_seed: int, val: dict, final: bool,
                     state: dict | None = None, extra: dict | None = None) -> None:
    """Collective DeepSpeed save on every rank, then one Ray report per rank (Ray merges dirs).
    ``state`` joins the checkpoint's client state, ``extra`` the reported metrics."""
    import ray.train
    from deepspeed.checkpoint.constants import UNIVERSAL_CHECKPOINT_INFO

    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory(prefix="sensorlm-ckpt-") as tmp:
        # UNIVERSAL_CHECKPOINT_INFO marks a checkpoint DeepSpeed may convert for another world size
        engine.save_checkpoint(tmp, tag=CKPT_TAG,
                               client_state={"step": step, "data_seed": data_seed, UNIVERSAL_CHECKPOINT_INFO: {},
                                             "world_size": ray.train.get_context().get_world_size(), **(state or {})})
        rng_dir = Path(tmp) / RNG_DIR
        rng_dir.mkdir(exist_ok=True)
        (rng_dir / f"rank{rank}.json").write_text(json.dumps(rng_state()))  # Ray merges every rank's files
        # The final checkpoint always carries the package; with a best metric every validated one
        # does too, so the best of them can be registered (trainer.best_checkpoint).
        if final or (cfg.checkpoint.best_metric and cfg.checkpoint.best_metric in val):
            export_package(engine, cfg, run, Path(tmp) / "package", rank)
        barrier()
        metrics = {"step": step, **val, **(extra or {})}
        has_files = any(Path(tmp).iterdir())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if has_files else None)


def export_package(engine, cfg: TrainConfig, run: dict, out_dir: Path, rank: int) -> None:
    """Consolidated fp32 weights as a plain safetensors package. Under bf16 these are DeepSpeed's
    fp32 master weights (the module holds bf16 copies), under fp32 the module's own (gathered under
    ZeRO-3); the package records which (collective: every rank calls it)."""
    import deepspeed

    from sensorlm.models import model_config
    from sensorlm.tracking.package import save_model_package

    module = engine.module
    bf16 = bool(engine.bfloat16_enabled())
    state = None
    if bf16:
        from deepspeed.utils import safe_get_full_fp32_param

        masters = {name: safe_get_full_fp32_param(p) for name, p in module.named_parameters()}
        if rank == 0:
            state = {k: (masters[k] if k in masters else v.float() if v.is_floating_point() else v)
                     for k, v in module.state_dict().items()}
        precision = {"precision": "bf16", "weights": "fp32 master weights (DeepSpeed optimizer)"}
    else:
        precision = {"precision": "fp32", "weights": "fp32 module weights"}
    params = list(module.parameters())
    with deepspeed.zero.GatheredParameters(params, modifier_rank=None, enabled=cfg.scaling.zero_stage == 3 and not bf16):
        if rank == 0:
            save_model_package(
                module,
                cfg.model.preset,
                model_config(cfg.model.preset, **cfg.model.overrides),
                out_dir,
                tokenizer_json=run.get("tokenizer_json"),
                data_stats=run.get("data_stats"),
                state_dict=state,
                training={**precision, "zero_stage": cfg.scaling.zero_stage},
            )
