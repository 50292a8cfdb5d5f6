"""The per-worker training loop: Ray Train worker -> DeepSpeed engine -> task step.

One code path for CPU (fp32, gloo) and GPU (bf16, NCCL) and for every model family: what
differs between families (data, loss, validation) comes from their record in `sensorlm.families`;
the engine (build, resume, save) is `engine.py`.
"""

from __future__ import annotations

import gc
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from sensorlm.typed_config import from_dict
from sensorlm.training.config import TrainConfig
from sensorlm.training.early_stopping import EarlyStopping
from sensorlm.training.engine import build_engine, resume, save_and_report, saved_world_size


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
    ``ray.train`` does not reach it); botocore's "Found credentials ..." lines per process when
    data or checkpoints live in S3."""
    import logging

    for name in ("all_gather_into_tensor", "reduce_scatter_tensor"):
        warnings.filterwarnings("ignore", message=rf".*{name}.* is deprecated", category=FutureWarning)
    if not os.environ.get("SENSORLM_VERBOSE"):
        for name in ("mlflow", "botocore", "aiobotocore"):
            logging.getLogger(name).setLevel(logging.WARNING)
        try:
            from ray.train.v2._internal.execution import context as train_context
        except ImportError:  # another Ray layout: its line stays
            return
        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)


def _one_line(exc: BaseException, limit: int = 600) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _train(cfg: TrainConfig, run: dict[str, Any]) -> None:
    """One attempt of the run on this worker: model, engine, resume, steps, checkpoints."""
    import ray.train

    from sensorlm.data.tokenizer import tokenizer_from_str
    from sensorlm.families import get_family
    from sensorlm.training.bounds import clamp_bounded_parameters

    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.scaling.threads_per_worker)
    device = _device(cfg.scaling.use_gpu)
    zero_world = saved_world_size(ray.train.get_checkpoint())  # ZeRO partitions: a universal load
    engine, model, mcfg, scheduler = build_engine(cfg, world, device,
                                                  load_universal=zero_world is not None and zero_world != world)
    ck = cfg.checkpoint
    early = (EarlyStopping(ck.best_metric, ck.best_mode, ck.early_stop_patience, ck.early_stop_min_delta)
             if ck.early_stop_patience else None)
    step, data_seed, checkpoint, saved_world = resume(engine, cfg, rank, world, early)
    accum = cfg.scaling.grad_accum_at(world, cfg.optim.grad_accum)

    family = get_family(cfg.task)
    tokenizer = tokenizer_from_str(run["tokenizer_json"], f"{run['dataset']}: tokenizer") if run.get("tokenizer_json") else None
    task = family.task(cfg, run["manifest"], device, mcfg, tokenizer)
    text_len = family.text_len(mcfg)
    bounds = model.parameter_bounds() if hasattr(model, "parameter_bounds") else {}
    train_iter = iter(_loader(cfg, run, "train", rank, world, data_seed, text_len))
    exact = checkpoint is not None and cfg.data.resume == "exact"
    if exact:
        # The loader has no state to restore: read and drop what the first `step` steps used, so
        # the resumed run sees exactly the batches the uninterrupted one would (data time only).
        for _ in range(step * accum):
            next(train_iter)
    logger = _open_logger(cfg, run, rank, step, resumed=checkpoint is not None, replayed=exact,
                          saved_world=saved_world, world=world)

    window = _Window(cfg, rank, world, device, step, accum)
    skips = window.skips
    last_val: dict[str, float] = {}
    stopped_early = False
    # Ray, DeepSpeed, MLflow and the model live as long as the worker: out of the collector's
    # generations, its collections walk only what the steps allocate (bench/RESULTS.md, "CPU train step").
    gc.freeze()
    engine.train()
    while step < cfg.steps:
        window.optimizer_step(engine, task, train_iter, step)
        if bounds:  # after the optimizer step: a bounded scale stays trainable at its bound
            clamp_bounded_parameters(engine, bounds)
        step += 1
        if step == window.start_step + 1 and rank == 0 and run.get("t0"):
            _log_startup(float(run["t0"]), logger, step)
        _maybe_fail(cfg, run, step, rank)

        if step % cfg.log_every == 0 or step == cfg.steps:
            failure, skipped = window.report(engine, scheduler, step, logger)
            if failure:
                _stop_run(failure, step, rank, logger, skips, skipped, device)
                return

        if step % cfg.eval_every == 0 or step == cfg.steps:
            val_batches = _take(_loader(cfg, run, "val", rank, world, cfg.data.seed, text_len), cfg.data.val_batches)
            last_val = _validate(engine, task, val_batches, window, skips, step, logger)
            if last_val is None:
                return
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
            save_and_report(engine, cfg, run, step, data_seed, last_val if validated else {}, final=final,
                            state={"early_stopping": early.state_dict()} if early is not None else {},
                            extra={"early_stopped": 1.0} if stopped_early else {})
        if stopped_early:
            break
    _log_data_placement(logger, ctx, window.shards_read, device)
    skips.log_events(logger, device)
    logger.close()


def _open_logger(cfg: TrainConfig, run: dict[str, Any], rank: int, step: int, resumed: bool, replayed: bool,
                 saved_world: int | None = None, world: int = 1) -> _Logger:
    """Rank 0 logs to the run's MLflow run; a restart leaves a trace (a resize a line, a tag and
    ``train/world_size``), and the steps a resumed run replays (``data.resume=exact``) log nothing again."""
    logger = _Logger(run.get("mlflow_run_id") if rank == 0 else None, run.get("tracking_uri"), cfg.tracking.system_metrics)
    # a curve of the run's size over the steps (elastic or resized), at the first step of this size
    logger.log({"train/world_size": float(world), "train/global_batch": float(_global_batch(cfg, world))}, step + 1)
    if resumed:
        logger.log({"train/resumed_from_step": float(step)}, step)
    if resumed and saved_world is not None and saved_world != world and rank == 0:
        accum = cfg.scaling.grad_accum_at(world, cfg.optim.grad_accum)
        text = (f"{saved_world} -> {world} workers at step {step}: global batch {_global_batch(cfg, saved_world)} -> "
                f"{_global_batch(cfg, world)} ({cfg.batch_size} x {accum} micro-steps x {world} workers)")
        print(f"[sensorlm] resized: {text}", flush=True)
        if logger.run is not None:
            logger.run.set_tags({f"sensorlm.resize.step{step}": text})
    if resumed:
        if replayed:
            logger.skip_through(logger.last_logged_step())
    return logger


def _global_batch(cfg: TrainConfig, world: int) -> int:
    """Samples per optimizer step on `world` workers (an elastic run keeps its full group's)."""
    return cfg.batch_size * cfg.scaling.grad_accum_at(world, cfg.optim.grad_accum) * world


def _log_startup(t0: float, logger: _Logger, step: int) -> None:
    startup = time.time() - t0
    print(f"[sensorlm] first step done {startup:.1f} s after the command", flush=True)
    logger.log({"perf/seconds_to_first_step": startup}, step)


def _validate(engine, task, batches, window: "_Window", skips: "_SkipAccount", step: int,
              logger: _Logger) -> dict[str, float] | None:
    """The validation metrics at `step` (reduced over the ranks), printed and logged by rank 0; None
    when the run was stopped because one is not finite (never in skip mode before the last step:
    a non-finite final model is never registered)."""
    engine.eval()
    metrics = task.evaluate(engine, batches)
    engine.train()
    bad = sorted(k for k, v in metrics.items() if not math.isfinite(v))
    if bad and (step == window.cfg.steps or not window.skip_mode):
        _, skipped = _window_status(window.first_bad_step, 0.0, skips, step, window.device)
        _stop_run(f"validation at step {step}: {', '.join(bad)} not finite", step, window.rank, logger, skips, skipped,
                  window.device)
        return None
    if window.rank == 0:
        print("[sensorlm] validation " + " ".join(f"{k} {v:.4f}" for k, v in metrics.items()), flush=True)
        logger.log(metrics, step)
    return metrics


class _Window:
    """Runs the optimizer steps and keeps what the ones since the last log line add up to: their
    loss summed on the device (read once per log interval, the only host sync of a step), their
    data wait and throughput. For the whole run: the first step whose loss was not finite (0 =
    none, on the device), the samples the loader skipped and the shards this rank read."""

    def __init__(self, cfg: TrainConfig, rank: int, world: int, device: torch.device, start_step: int, grad_accum: int):
        self.cfg, self.rank, self.device, self.grad_accum = cfg, rank, device, grad_accum
        self.samples_per_step = cfg.batch_size * grad_accum * world
        self.skip_mode = cfg.optim.on_non_finite == "skip"
        self.skipped_steps = 0
        self.run_start, self.start_step = time.perf_counter(), start_step
        self.loss_sum = torch.zeros((), device=device)
        self.first_bad_step = torch.zeros((), device=device, dtype=torch.int64)
        self.scalars: dict[str, torch.Tensor] = {}
        self.skips = _SkipAccount(rank)
        self.shards_read: set[str] = set()
        self._reset()

    def _reset(self) -> None:
        self.loss_sum.zero_()
        self.start, self.steps, self.data_time, self.micro_steps = time.perf_counter(), 0, 0.0, 0

    def optimizer_step(self, engine, task, batches, step: int) -> None:
        """One optimizer step (`grad_accum` micro-steps) at step `step` (0-based)."""
        for _ in range(self.grad_accum):
            t0 = time.perf_counter()
            batch = next(batches)
            self.data_time += time.perf_counter() - t0
            self.skips.add(batch.get("skipped"))
            self.shards_read.update(batch.get("shard") or ())
            loss, self.scalars = task.loss(engine, batch)
            if self.skip_mode and not _finite_everywhere(loss, self.device):
                # one small all-reduce and host sync per micro-step, only in skip mode: every rank
                # must leave out the same step or the gradient all-reduce would wait forever
                self.skipped_steps += 1
                continue
            engine.backward(loss)
            engine.step()
            loss = loss.detach()
            self.loss_sum += loss
            self.micro_steps += 1
            self.first_bad_step = torch.where((self.first_bad_step == 0) & ~torch.isfinite(loss), step + 1,
                                              self.first_bad_step)
        self.steps += 1

    def report(self, engine, scheduler, step: int, logger: _Logger):
        """Print and log the window's metrics (rank 0) and start a new window. Collective: returns
        (the reason to stop or None, the skipped-sample metrics) the same on every rank."""
        cfg = self.cfg
        elapsed = time.perf_counter() - self.start
        grad_norm = float(engine.get_global_grad_norm() or 0.0)
        failure, skipped = _window_status(self.first_bad_step, grad_norm, self.skips, step, self.device)
        if failure:
            return failure, skipped
        metrics = {
            "train/loss": self.loss_sum.item() / self.micro_steps if self.micro_steps else float("nan"),
            "train/lr": scheduler.get_last_lr()[0],
            "train/grad_norm": grad_norm,
            "train/samples_per_s": self.steps * self.samples_per_step / elapsed,
            "train/data_wait_frac": self.data_time / elapsed,
            **{f"train/{k}": float(v) for k, v in self.scalars.items()},
            **skipped,
        }
        if self.skip_mode:
            metrics["train/non_finite_steps_skipped"] = float(self.skipped_steps)
        if self.device.type == "cuda":  # this rank's high-water mark since the start (GPU sizing)
            metrics["perf/peak_mem_gib"] = torch.cuda.max_memory_allocated(self.device) / 2**30
        if self.rank == 0:
            rate = (step - self.start_step) / (time.perf_counter() - self.run_start)
            print(
                f"[sensorlm] step {step}/{cfg.steps} loss {metrics['train/loss']:.4f} "
                f"lr {metrics['train/lr']:.2e} {metrics['train/samples_per_s']:.1f} samples/s "
                f"data {metrics['train/data_wait_frac']:.0%} ETA {_format_eta((cfg.steps - step) / max(rate, 1e-9))}",
                flush=True,
            )
            logger.log(metrics, step)
        self._reset()
        return None, skipped


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
