"""The per-worker training loop: Ray Train worker -> DeepSpeed engine -> task step.

One code path for CPU (fp32, gloo) and GPU (bf16, NCCL) and for every model family: what
differs between families (data, loss, validation) comes from their record in `families.py`.
"""

from __future__ import annotations

import gc
import json
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from sensorlm.typed_config import from_dict
from sensorlm.training.config import TrainConfig
from sensorlm.training.deepspeed_config import build_deepspeed_config
from sensorlm.training.distributed import barrier
from sensorlm.training.early_stopping import EarlyStopping
from sensorlm.training.rng import rng_state, set_rng_state

CKPT_TAG = "ds"
RNG_DIR = "rng"  # rank{r}.json: each rank's RNG states (JSON, not pickled)


def _device(use_gpu: bool) -> torch.device:
    if use_gpu and torch.cuda.is_available():
        import ray.train.torch

        return ray.train.torch.get_device()
    return torch.device("cpu")


def _format_eta(seconds: float) -> str:
    seconds = int(max(0, seconds))
    return f"{seconds // 3600:d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class _Logger:
    """Rank-0 metric sink: MLflow (run created by the driver) plus a progress line."""

    def __init__(self, run_id: str | None, tracking_uri: str | None, system_metrics: bool):
        self.run = None  # the driver's MLflow run (a `TrackedRun`), on rank 0 only
        self.monitor = None
        self.run_id = run_id
        self.tracking_uri = tracking_uri
        self.skip_until = 0
        if run_id and tracking_uri:
            from sensorlm.tracking.run import TrackedRun

            self.run = TrackedRun(tracking_uri, run_id)
            if system_metrics:
                self.monitor = self.run.start_system_metrics()

    def last_logged_step(self) -> int:
        """The last step with a train/loss in the run (0 if none), e.g. before a resume."""
        if self.run is None:
            return 0
        return max(self.run.metric_steps("train/loss"), default=0)

    def skip_through(self, step: int) -> None:
        """Drop metrics of steps up to `step`: an exact resume replays them with the same values."""
        self.skip_until = step

    def log(self, metrics: dict[str, float], step: int) -> None:
        if self.run is not None and step > self.skip_until:
            self.run.log_metrics(metrics, step)

    def log_dict(self, obj: dict, artifact_file: str) -> None:
        if self.run is not None:
            self.run.log_dict(obj, artifact_file)

    def close(self) -> None:
        if self.monitor is not None:
            self.monitor.finish()


def _loader(cfg: TrainConfig, run: dict, split: str, rank: int, world: int, seed: int, text_len: int | None):
    from sensorlm.data.loader import LoaderSpec
    from sensorlm.families import get_family

    where = LoaderSpec(batch_size=cfg.batch_size, rank=rank, world_size=world, seed=seed, text_len=text_len,
                       shard_part=None if split == "train" else cfg.data.val_shards)
    return get_family(cfg.task).loader(cfg, run["dataset"], run["manifest"], split, where)


# Errors that come back on every attempt (bad config, data, shapes, strict data checks): the
# failing rank records them on the MLflow run before Ray restarts the worker group, and the
# restarted workers end at once instead of training again. Worker deaths are retried as usual.
RECURRING_ERRORS = (ValueError, FileNotFoundError)


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. `loop_config` = {"train": TrainConfig as dict, "run": driver facts}."""
    import ray.train

    from sensorlm.tracking.mlflow_utils import record_run_failure, run_failure

    quiet_logs()
    cfg = from_dict(TrainConfig, loop_config["train"])
    run = loop_config["run"]
    tracked = bool(run.get("mlflow_run_id") and run.get("tracking_uri"))
    earlier = run_failure(run["tracking_uri"], run["mlflow_run_id"]) if tracked else None
    if earlier:  # an earlier attempt of this fit hit an error that would recur: do not train again
        ray.train.report({"step": 0, "fatal_error": earlier})
        return
    try:
        _train(cfg, run)
    except RECURRING_ERRORS as exc:
        rank = ray.train.get_context().get_world_rank()
        message = f"{type(exc).__name__} on rank {rank}: {_one_line(exc)}"
        if tracked:
            record_run_failure(run["tracking_uri"], run["mlflow_run_id"], message)
        print(f"[sensorlm] {message} (not retried: it would recur)", flush=True)
        raise


def quiet_logs() -> None:
    """What a job log should not carry unless asked (``--verbose``): torch 2.13 marks
    all_gather_into_tensor / reduce_scatter_tensor deprecated and DeepSpeed calls them every step
    (our own code uses the new names), one FutureWarning per rank per call site; MLflow's INFO
    lines (system-metrics monitor start and stop); Ray Train's "Reporting training result ..."
    line for every report of every rank (its logger is named by its file, so the level of
    ``ray.train`` does not reach it)."""
    import logging

    for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
        warnings.filterwarnings("ignore", message=rf".*{name}.* is deprecated", category=FutureWarning)
    if not os.environ.get("SENSORLM_VERBOSE"):
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        try:
            from ray.train.v2._internal.execution import context as train_context
        except ImportError:  # another Ray layout: its line stays
            return
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _skip_inference_comm_op() -> None:
    """DeepSpeed loads (first time: compiles) a C++ shared-memory all-reduce at its first
    init_distributed; only its inference_all_reduce uses it, never training. Skipping it saves
    about 3 s of every start-up on CPU (and a "built successfully" line per rank)."""
    import deepspeed.ops

    compatible = getattr(deepspeed.ops, "__compatible_ops__", None)
    if isinstance(compatible, dict):
        compatible["deepspeed_shm_comm"] = False


def _one_line(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _train(cfg: TrainConfig, run: dict[str, Any]) -> None:
    """One attempt of the run on this worker: model, engine, resume, steps, checkpoints."""
    import deepspeed
    import ray.train

    from sensorlm.data.tokenizer import tokenizer_from_str
    from sensorlm.models import create_model, model_config
    from sensorlm.training.bounds import clamp_bounded_parameters
    from sensorlm.training.checkpointing import install_safe_loading
    from sensorlm.families import get_family
    from sensorlm.training.optim import build_optimizer, build_scheduler

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    device = _device(cfg.scaling.use_gpu)

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
        config=build_deepspeed_config(cfg, world),
        dist_init_required=False,
    )
    install_safe_loading(engine)

    step, data_seed = 0, cfg.data.seed
    ck = cfg.checkpoint
    early = (EarlyStopping(ck.best_metric, ck.best_mode, ck.early_stop_patience, ck.early_stop_min_delta)
             if ck.early_stop_patience else None)
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as ckpt_dir:
            _, client_state = engine.load_checkpoint(ckpt_dir, tag=CKPT_TAG)
            rng_file = Path(ckpt_dir) / RNG_DIR / f"rank{rank}.json"
            rng = json.loads(rng_file.read_text()) if rng_file.is_file() else None
        step = int(client_state["step"])
        if early is not None and client_state.get("early_stopping"):
            early.load_state_dict(client_state["early_stopping"])  # count on from where it left off
        if cfg.data.resume == "exact":
            data_seed = int(client_state["data_seed"])  # the same stream, fast-forwarded below
            if rng is not None and int(client_state.get("world_size", world)) == world:
                set_rng_state(rng)
        else:  # "fresh": a new stream per resume, no fast-forward
            data_seed = int(client_state["data_seed"]) + 1
        if rank == 0:
            print(f"[sensorlm] resumed from step {step} (checkpoint {checkpoint.path})", flush=True)

    family = get_family(cfg.task)
    tokenizer = tokenizer_from_str(run["tokenizer_json"], f"{run['dataset']}: tokenizer") if run.get("tokenizer_json") else None
    task = family.task(cfg, run["manifest"], device, mcfg, tokenizer)
    text_len = family.text_len(mcfg)
    bounds = model.parameter_bounds() if hasattr(model, "parameter_bounds") else {}
    train_iter = iter(_loader(cfg, run, "train", rank, world, data_seed, text_len))
    if checkpoint and cfg.data.resume == "exact":
        # The loader has no state to restore: read and drop what the first `step` steps used, so
        # the resumed run sees exactly the batches the uninterrupted one would (data time only).
        for _ in range(step * cfg.optim.grad_accum):
            next(train_iter)
    logger = _Logger(run.get("mlflow_run_id") if rank == 0 else None, run.get("tracking_uri"), cfg.tracking.system_metrics)
    if checkpoint:
        logger.log({"train/resumed_from_step": float(step)}, step)  # a restart leaves a trace
        if cfg.data.resume == "exact":
            logger.skip_through(logger.last_logged_step())  # replayed steps log the same values again

    samples_per_step = cfg.batch_size * cfg.optim.grad_accum * world
    loss_sum = torch.zeros((), device=device)
    # the first step whose loss was not finite (0 = none): tracked on the device, read at log time
    first_bad_step = torch.zeros((), device=device, dtype=torch.int64)
    skip_mode = cfg.optim.on_non_finite == "skip"
    skipped_steps = 0
    window_start, window_steps, data_time, micro_steps = time.perf_counter(), 0, 0.0, 0
    skips = _SkipAccount(rank)
    shards_read: set[str] = set()
    run_start, start_step = time.perf_counter(), step
    last_val: dict[str, float] = {}
    stopped_early = False
    scalars: dict[str, torch.Tensor] = {}
    # Ray, DeepSpeed, MLflow and the model live as long as the worker: out of the collector's
    # generations, its collections walk only what the steps allocate (bench/RESULTS.md, "CPU train step").
    gc.freeze()
    engine.train()
    while step < cfg.steps:
        for _ in range(cfg.optim.grad_accum):
            t0 = time.perf_counter()
            batch = next(train_iter)
            data_time += time.perf_counter() - t0
            skips.add(batch.get("skipped"))
            shards_read.update(batch.get("shard") or ())
            loss, scalars = task.loss(engine, batch)
            if skip_mode and not _finite_everywhere(loss, device):
                # one small all-reduce and host sync per micro-step, only in skip mode: every rank
                # must leave out the same step or the gradient all-reduce would wait forever
                skipped_steps += 1
                continue
            engine.backward(loss)
            engine.step()
            loss_sum += loss.detach()
            micro_steps += 1
            first_bad_step = torch.where((first_bad_step == 0) & ~torch.isfinite(loss.detach()), step + 1, first_bad_step)
        if bounds:  # after the optimizer step: a bounded scale stays trainable at its bound
            clamp_bounded_parameters(engine, bounds)
        step += 1
        window_steps += 1
        if step == start_step + 1 and rank == 0 and run.get("t0"):
            startup = time.time() - float(run["t0"])
            print(f"[sensorlm] first step done {startup:.1f} s after the command", flush=True)
            logger.log({"perf/seconds_to_first_step": startup}, step)
        _maybe_fail(cfg, run, step, rank)

        if step % cfg.log_every == 0 or step == cfg.steps:
            # The only host sync of the step, once per log interval.
            elapsed = time.perf_counter() - window_start
            grad_norm = float(engine.get_global_grad_norm() or 0.0)
            failure, skipped = _window_status(first_bad_step, grad_norm, skips, step, device)
            if failure:
                _stop_run(failure, step, rank, logger, skips, skipped, device)
                return
            metrics = {
                "train/loss": loss_sum.item() / micro_steps if micro_steps else float("nan"),
                "train/lr": scheduler.get_last_lr()[0],
                "train/grad_norm": grad_norm,
                "train/samples_per_s": window_steps * samples_per_step / elapsed,
                "train/data_wait_frac": data_time / elapsed,
                **{f"train/{k}": float(v) for k, v in scalars.items()},
                **skipped,
            }
            if skip_mode:
                metrics["train/non_finite_steps_skipped"] = float(skipped_steps)
            if device.type == "cuda":  # this rank's high-water mark since the start (GPU sizing)
                metrics["perf/peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
            if rank == 0:
                rate = (step - start_step) / (time.perf_counter() - run_start)
                print(
                    f"[sensorlm] step {step}/{cfg.steps} loss {metrics['train/loss']:.4f} "
                    f"lr {metrics['train/lr']:.2e} {metrics['train/samples_per_s']:.1f} samples/s "
                    f"data {metrics['train/data_wait_frac']:.0%} ETA {_format_eta((cfg.steps - step) / max(rate, 1e-9))}",
                    flush=True,
                )
                logger.log(metrics, step)
            loss_sum.zero_()
            window_start, window_steps, data_time, micro_steps = time.perf_counter(), 0, 0.0, 0

        if step % cfg.eval_every == 0 or step == cfg.steps:
            engine.eval()
            val_batches = _take(_loader(cfg, run, "val", rank, world, cfg.data.seed, text_len), cfg.data.val_batches)
            last_val = task.evaluate(engine, val_batches)
            engine.train()
            bad = sorted(k for k, v in last_val.items() if not math.isfinite(v))
            if bad and (step == cfg.steps or not skip_mode):  # a non-finite final model is never registered
                _, skipped = _window_status(first_bad_step, 0.0, skips, step, device)
                _stop_run(f"validation at step {step}: {', '.join(bad)} not finite", step, rank, logger, skips, skipped,
                          device)
                return
            if rank == 0:
                print("[sensorlm] validation " + " ".join(f"{k} {v:.4f}" for k, v in last_val.items()), flush=True)
                logger.log(last_val, step)
            # the validation metrics are reduced over the ranks, so every rank decides the same
            if early is not None and early.metric in last_val and early.update(last_val[early.metric], step):
                stopped_early = step < cfg.steps
                if stopped_early and rank == 0:
                    print(f"[sensorlm] {early.reason(step)}", flush=True)
                    logger.log({"train/early_stopped_at_step": float(step)}, step)

        final = step == cfg.steps or stopped_early
        if step % cfg.checkpoint.every_steps == 0 or final:
            validated = step % cfg.eval_every == 0 or step == cfg.steps
            # the validation metrics of this step, never an earlier one's
            _save_and_report(engine, cfg, run, step, data_seed, last_val if validated else {}, final=final,
                             state={"early_stopping": early.state_dict()} if early is not None else {},
                             extra={"early_stopped": 1.0} if stopped_early else {})
        if stopped_early:
            break
    _log_data_placement(logger, ctx, shards_read, device)
    skips.log_events(logger, device)
    logger.close()


class _SkipAccount:
    """Skipped samples of this rank: counts by reason, and the first events with shard and key."""

    MAX_EVENTS = 100

    def __init__(self, rank: int):
        self.rank = rank
        self.counts: dict[str, float] = {}
        self.events: list[dict] = []

    def add(self, record: dict | None) -> None:
        for reason, n in (record or {}).items():
            if reason != "total" and isinstance(n, (int, float)):
                self.counts[reason] = self.counts.get(reason, 0) + n
        for ev in (record or {}).get("events", []):
            if len(self.events) < self.MAX_EVENTS:
                self.events.append({**ev, "rank": self.rank})

    def log_events(self, logger, device) -> None:
        """Every rank's first events as ``data/skipped_samples.json`` (collective)."""
        from sensorlm.training.distributed import all_gather_json

        events = [ev for evs in all_gather_json(self.events, device) for ev in evs]
        if events:
            logger.log_dict({"events": events, "note": f"first {self.MAX_EVENTS} per rank"},
                            "data/skipped_samples.json")


def _finite_everywhere(loss: torch.Tensor, device) -> bool:
    from sensorlm.training.distributed import all_reduce_sum

    bad = (~torch.isfinite(loss.detach())).to(torch.float32).reshape(1)
    return all_reduce_sum(bad).item() == 0


def _window_status(first_bad_step: torch.Tensor, grad_norm: float, skips: _SkipAccount, step: int,
                   device) -> tuple[str | None, dict[str, float]]:
    """One exchange between the ranks per log interval (collective): the reason to stop, the same
    on every rank (the earliest non-finite loss, or a non-finite gradient norm), or None; and the
    skipped-sample counts since the start summed over every rank, as metrics."""
    from sensorlm.training.distributed import all_gather_json

    mine = {"loss_step": int(first_bad_step.item()), "grad": math.isfinite(grad_norm), "skipped": skips.counts}
    everyone = all_gather_json(mine, device)
    total: dict[str, float] = {}
    for r in everyone:
        for reason, n in r["skipped"].items():
            total[reason] = total.get(reason, 0) + n
    skipped = {f"data/skipped/{k}": float(v) for k, v in sorted(total.items())}
    skipped["data/skipped_total"] = float(sum(total.values()))
    bad_steps = [r["loss_step"] for r in everyone if r["loss_step"]]
    if bad_steps:
        return f"non-finite loss at step {min(bad_steps)}", skipped
    if not all(r["grad"] for r in everyone):
        return f"non-finite gradient norm at step {step}", skipped
    return None, skipped


def _stop_run(reason: str, step: int, rank: int, logger, skips: _SkipAccount, skipped: dict[str, float],
              device) -> None:
    """End this worker cleanly with a report the driver turns into a FAILED run: a failure that
    will recur is not handed to Ray's retries (every rank calls this: the skip accounting and
    Ray's report are collective)."""
    import ray.train

    from sensorlm.tracking.mlflow_utils import record_run_failure

    message = f"{reason} (optim.on_non_finite=stop); the run stops and registers no model"
    skips.log_events(logger, device)
    if rank == 0:
        print(f"[sensorlm] {message}", flush=True)
        logger.log(skipped, step)
        if logger.run is not None:
            record_run_failure(logger.tracking_uri, logger.run_id, message)  # the driver reads it
    logger.close()
    ray.train.report({"step": step, "fatal_error": message})


def _log_data_placement(logger: _Logger, ctx, shards_read: set[str], device: torch.device) -> None:
    """Which node each rank ran on and which training shards it read (collective; rank 0 logs
    ``data/shards_by_rank.json`` to the run): ranks on different nodes must read different shards."""
    import socket

    import ray

    from sensorlm.training.distributed import all_gather_json

    mine = {
        "rank": ctx.get_world_rank(),
        "node_rank": ctx.get_node_rank(),
        "node_id": ray.get_runtime_context().get_node_id(),
        "hostname": socket.gethostname(),
        "train_shards": sorted(shards_read),
    }
    everyone = all_gather_json(mine, device)
    if mine["rank"] == 0 and any(r["train_shards"] for r in everyone):  # shard-less data (embedding pairs): nothing to say
        for r in everyone:
            print(
                f"[sensorlm] rank {r['rank']} on node {r['node_rank']} ({r['node_id'][:12]}) read "
                f"{len(r['train_shards'])} training shards",
                flush=True,
            )
        logger.log_dict({"ranks": everyone}, "data/shards_by_rank.json")


def _take(loader, n: int):
    for i, batch in enumerate(loader):
        if n and i >= n:
            break
        yield batch


def _maybe_fail(cfg: TrainConfig, run: dict, step: int, rank: int) -> None:
    fi = cfg.fault_injection
    if fi.raise_at_step and step == fi.raise_at_step and rank == fi.rank:
        raise ValueError(f"fault injection: a recurring error at step {step}")
    if fi.fail_once_at_step and step == fi.fail_once_at_step and rank == fi.rank:
        marker = Path(run["fault_marker"])
        if not marker.exists():
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(f"worker {rank} killed at step {step}\n")
            print(f"[sensorlm] fault injection: worker {rank} dies at step {step}", flush=True)
            # let Ray's controller poll (every RAY_TRAIN_HEALTH_CHECK_INTERVAL_S, default 2 s) and
            # record the last checkpoint's report first: a restart must resume from it
            time.sleep(2.5 * float(os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "2")))
            os._exit(1)  # a hard death, as from an OOM kill, not a Python exception


def _save_and_report(engine, cfg: TrainConfig, run: dict, step: int, data_seed: int, val: dict, final: bool,
                     state: dict | None = None, extra: dict | None = None) -> None:
    """Collective DeepSpeed save on every rank, then one Ray report per rank (Ray merges dirs).
    ``state`` joins the checkpoint's client state, ``extra`` the reported metrics."""
    import ray.train

    rank = ray.train.get_context().get_world_rank()
    with tempfile.TemporaryDirectory(prefix="sensorlm-ckpt-") as tmp:
        engine.save_checkpoint(tmp, tag=CKPT_TAG,
                               client_state={"step": step, "data_seed": data_seed,
                                             "world_size": ray.train.get_context().get_world_size(), **(state or {})})
        rng_dir = Path(tmp) / RNG_DIR
        rng_dir.mkdir(exist_ok=True)
        (rng_dir / f"rank{rank}.json").write_text(json.dumps(rng_state()))  # Ray merges every rank's files
        # The final checkpoint always carries the package; with a best metric every validated one
        # does too, so the best of them can be registered (trainer.best_package).
        if final or (cfg.checkpoint.best_metric and cfg.checkpoint.best_metric in val):
            _export_package(engine, cfg, run, Path(tmp) / "package", rank)
        barrier()
        metrics = {"step": step, **val, **(extra or {})}
        has_files = any(Path(tmp).iterdir())
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp) if has_files else None)


def _export_package(engine, cfg: TrainConfig, run: dict, out_dir: Path, rank: int) -> None:
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
