"""CPU train step: the Ray + DeepSpeed trainer against a plain single-process torch loop.

    python bench/train_step.py                         # 3 rounds, about 7 minutes on an idle 2-core machine
    python bench/train_step.py --rounds 4 --json outputs/bench/train_step.jsonl
    python bench/train_step.py --profile outputs/bench/train_step_profile --steps 60   # cProfile both sides

Both sides train the same model preset (``configs/sensorlm_tiny.yaml``: ``sensorlm_tiny``) with
the same global batch (2 workers x 32 = 64), the same loss (SigLIP over the global batch), torch
AdamW with the trainer's parameter groups and warmup + cosine schedule, gradient clipping at the
config's value, and the same streaming loader (`make_loader`, resampled, the config's loader
worker count) over the same prepared demo dataset.

- ``ray``: the real trainer, `sensorlm.training.trainer.train`, on ``configs/sensorlm_tiny.yaml``
  with overrides (steps, log_every, data path, a private MLflow sqlite store and Ray storage, no
  model registration, no system metrics): 2 Ray Train workers x 1 torch thread, DeepSpeed ZeRO-2,
  fp32, gloo. samples/s is read back from the run's MLflow history of ``train/samples_per_s``
  (one value per ``log_every`` window, measured on rank 0).
- ``plain``: one process, ``torch.set_num_threads(2)``, no Ray, no DeepSpeed, no MLflow; windows
  timed exactly as the trainer times them (data wait included, one host sync per window). By
  default every round also runs it with 1 thread: on 2 shared cores a 2-thread loop beside its
  loader process is fragile (bench/RESULTS.md, "CPU train step").

Steady state = the windows after the first ``--drop`` ones, as total samples / total time.
Fixed start-up = the run's wall time minus its steps at the steady rate (for ``ray``: from
``ray.init`` to `train` returning, so it includes worker start, ``deepspeed.initialize``, the
final validation, checkpoint and package export). Each run is its own subprocess, and rounds
alternate plain, ray, plain, ray, ... so a change in the machine's load hits both sides.
Prints a Markdown summary; ``--json`` appends one JSON object per run plus a summary line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG = REPO_ROOT / "configs" / "sensorlm_tiny.yaml"
DEFAULT_DATA = REPO_ROOT / "outputs" / "bench" / "wearable_demo"
METRIC = "train/samples_per_s"


# ---------------------------------------------------------------------------------------------
# the plain loop


def plain_train(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler,
    batches: Iterator[dict],
    steps: int,
    log_every: int,
    grad_clip: float,
) -> list[dict[str, float]]:
    """Train `model` for `steps` steps on `batches` (SigLIP loss) and time it per window.

    Args:
        model: a `SensorLM`.
        optimizer, scheduler: stepped once per batch.
        batches: loader batches (``sensor``, ``input_ids``, ``attention_mask``, optional ``missing``).
        steps: optimizer steps.
        log_every: steps per timing window (the trainer's ``log_every``).
        grad_clip: max global gradient norm (0 = off), as DeepSpeed's ``gradient_clipping``.

    Returns:
        one dict per window: ``step`` (last step), ``steps``, ``samples``, ``seconds``,
        ``samples_per_s``, ``data_wait_frac``, ``loss`` (window mean).
    """
    from sensorlm.losses import siglip_loss

    params = [p for p in model.parameters() if p.requires_grad]
    windows: list[dict[str, float]] = []
    loss_sum = torch.zeros(())
    window_start, window_steps, window_samples, data_time = time.perf_counter(), 0, 0, 0.0
    model.train()
    for step in range(1, steps + 1):
        t0 = time.perf_counter()
        batch = next(batches)
        data_time += time.perf_counter() - t0
        out = model(batch["sensor"], batch["input_ids"], batch["attention_mask"], batch.get("missing"), validate=False)
        loss = siglip_loss(out["sensor_emb"], out["text_emb"], out["t_prime"], out["bias"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        scheduler.step()
        loss_sum += loss.detach()
        window_steps += 1
        window_samples += int(batch["sensor"].shape[0])
        if step % log_every == 0 or step == steps:
            elapsed = time.perf_counter() - window_start
            windows.append({
                "step": step,
                "steps": window_steps,
                "samples": window_samples,
                "seconds": elapsed,
                "samples_per_s": window_samples / elapsed,
                "data_wait_frac": data_time / elapsed,
                "loss": loss_sum.item() / window_steps,
            })
            loss_sum.zero_()
            window_start, window_steps, window_samples, data_time = time.perf_counter(), 0, 0, 0.0
    return windows


def steady_rate(rates: list[float], drop: int) -> float:
    """samples/s over the windows after the first `drop` (equal-size windows: the harmonic mean,
    i.e. total samples / total time)."""
    kept = rates[drop:]
    if not kept:
        raise ValueError(f"no steady-state windows: {len(rates)} windows, dropping the first {drop}")
    return len(kept) / sum(1.0 / r for r in kept)


def bench_config(data_dir: Path, steps: int, log_every: int, work: Path, name: str, extra: list[str] | None = None):
    """The trainer's config for a bench run: ``configs/sensorlm_tiny.yaml`` plus bench overrides."""
    from sensorlm.training.config import load_train_config

    return load_train_config(str(CONFIG), [
        f"steps={steps}",
        f"log_every={log_every}",
        f"data.path={data_dir}",
        f"name={name}",
        f"storage_path={work / 'ray'}",
        f"tracking.tracking_uri=sqlite:///{work / 'mlflow.db'}",
        "tracking.register=false",
        "tracking.system_metrics=false",
        *(extra or []),
    ])


def run_plain(cfg, threads: int = 2, batches: Iterable[dict] | None = None) -> dict[str, Any]:
    """The plain single-process loop on `cfg`'s model, optimizer, schedule and data.

    Args:
        cfg: a `TrainConfig` (the bench's).
        threads: torch intra-op threads.
        batches: batches to train on instead of `make_loader` over ``cfg.data.path`` at the
            global batch size (tests pass synthetic ones).
    """
    from sensorlm.models import create_model, model_config
    from sensorlm.training.optim import build_optimizer, build_scheduler

    t_start = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(cfg.seed)
    world = cfg.scaling.num_workers
    mcfg = model_config(cfg.model.preset, **cfg.model.overrides)
    model = create_model(cfg.model.preset, **cfg.model.overrides)
    optimizer = build_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay, cfg.optim.betas, cfg.optim.eps, fused=False)
    scheduler = build_scheduler(optimizer, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
    if batches is None:
        from sensorlm.data.loader import make_loader

        batches = make_loader(
            cfg.data.path, "train", cfg.batch_size * cfg.optim.grad_accum * world,
            rank=0, world_size=1, num_workers=cfg.data.num_workers, seed=cfg.data.seed, shuffle=True,
            shuffle_buffer=cfg.data.shuffle_buffer, resampled=True, drop_last=True,
            text_len=mcfg.text.context_len, strict=cfg.data.strict,
        )
    windows = plain_train(model, optimizer, scheduler, iter(batches), cfg.steps, cfg.log_every, cfg.optim.grad_clip)
    wall = time.perf_counter() - t_start
    return {"side": "plain", "threads": threads, "wall_s": wall, "windows": windows,
            "rates": [w["samples_per_s"] for w in windows]}


# ---------------------------------------------------------------------------------------------
# the Ray + DeepSpeed trainer


def run_ray(cfg) -> dict[str, Any]:
    """`trainer.train(cfg)` on a fresh local Ray; per-window samples/s from MLflow."""
    import ray
    from mlflow.tracking import MlflowClient

    from sensorlm.training.trainer import train, worker_env

    t_start, epoch_start = time.perf_counter(), time.time()
    # train()'s own ray.init arguments, but never attach to a cluster someone else started here.
    ray.init(address="local", runtime_env={"env_vars": worker_env(cfg)}, log_to_driver=True)
    t_ray = time.perf_counter()
    try:
        result = train(cfg)
    finally:
        t_end, epoch_end = time.perf_counter(), time.time()
        ray.shutdown()
    client = MlflowClient(result.tracking_uri)
    history = sorted(client.get_metric_history(result.run_id, METRIC), key=lambda m: m.step)
    wait = {m.step: m.value for m in client.get_metric_history(result.run_id, "train/data_wait_frac")}
    loss = {m.step: m.value for m in client.get_metric_history(result.run_id, "train/loss")}
    windows = [{"step": m.step, "samples_per_s": m.value, "data_wait_frac": wait.get(m.step),
                "loss": loss.get(m.step), "timestamp_ms": m.timestamp} for m in history]
    # Where the fixed cost sits: before the first step (ray.init, workers, deepspeed.initialize,
    # loader start) and after the last logged window (validation, checkpoint, package, teardown).
    samples_per_window = cfg.log_every * cfg.batch_size * cfg.optim.grad_accum * cfg.scaling.num_workers
    first_step_s = windows[0]["timestamp_ms"] / 1000 - epoch_start - samples_per_window / windows[0]["samples_per_s"]
    return {"side": "ray", "wall_s": t_end - t_start, "ray_init_s": t_ray - t_start,
            "until_first_step_s": first_step_s, "after_last_window_s": epoch_end - windows[-1]["timestamp_ms"] / 1000,
            "shutdown_s": time.perf_counter() - t_end, "windows": windows,
            "rates": [w["samples_per_s"] for w in windows], "run_id": result.run_id}


def _profiled_loop(profile_dir: str):
    """The trainer's worker loop under cProfile, one ``ray-rank{r}.pstats`` per worker."""

    def loop_under_cprofile(loop_config):
        import cProfile

        import ray.train

        from sensorlm.training import loop  # imported in the worker: the trainer's own function

        rank = ray.train.get_context().get_world_rank()
        prof = cProfile.Profile()
        try:
            prof.runcall(loop.train_loop_per_worker, loop_config)
        finally:
            prof.dump_stats(str(Path(profile_dir) / f"ray-rank{rank}.pstats"))

    return loop_under_cprofile


def write_profile_text(pstats_path: Path, top: int = 60) -> Path:
    import io
    import pstats

    out = io.StringIO()
    stats = pstats.Stats(str(pstats_path), stream=out)
    stats.sort_stats("cumulative").print_stats(top)
    stats.sort_stats("tottime").print_stats(top // 2)
    txt = pstats_path.with_suffix(".txt")
    txt.write_text(out.getvalue())
    return txt


# ---------------------------------------------------------------------------------------------
# the driver: interleaved rounds, each run a subprocess


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in ("torch", "ray", "deepspeed", "mlflow", "webdataset", "numpy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "versions": versions,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _run_child(side: str, threads: int, args, work: Path, index: int) -> dict[str, Any]:
    label = f"{side}-{threads}t" if side == "plain" else side
    out = work / f"{label}-{index}.json"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--one", side, "--steps", str(args.steps),
           "--log-every", str(args.log_every), "--data", str(args.data), "--work", str(work),
           "--name", f"bench-{label}-{index}", "--result", str(out), "--threads", str(threads),
           "--overrides", *args.overrides]
    if args.profile:
        cmd += ["--profile", str(args.profile)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # Ray workers get OMP_NUM_THREADS from the trainer's runtime env; the driver only waits.
    env["OMP_NUM_THREADS"] = str(threads if side == "plain" else 1)
    load_before = loadavg()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0 or not out.is_file():
        sys.stderr.write(proc.stdout[-6000:])
        raise RuntimeError(f"{side} run {index} failed with exit code {proc.returncode}")
    res = json.loads(out.read_text())
    res.update(label=label, round=index, process_s=elapsed, load_before=load_before, load_after=loadavg())
    return res


def summarize_run(res: dict[str, Any], steps: int, log_every: int, drop: int, global_batch: int) -> dict[str, Any]:
    rate = steady_rate(res["rates"], drop)
    wall = res["wall_s"]
    return {**res, "steady_samples_per_s": rate, "steady_windows": len(res["rates"]) - drop,
            "fixed_s": wall - steps * global_batch / rate}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (one plain + one ray run each)")
    p.add_argument("--steps", type=int, default=100, help="optimizer steps per run")
    p.add_argument("--log-every", type=int, default=10, help="steps per timing window")
    p.add_argument("--drop", type=int, default=2, help="first windows left out of the steady state")
    p.add_argument("--threads", type=int, nargs="+", default=[2, 1],
                   help="torch threads of the plain loop; several = one plain run per count in every round")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="prepared wearable dataset (made if missing)")
    p.add_argument("--json", type=Path, default=None, help="append the runs and the summary here (JSON lines)")
    p.add_argument("--profile", type=Path, default=None,
                   help="instead of timing rounds: one plain and one ray run under cProfile, stats written here")
    p.add_argument("--overrides", nargs="*", default=[], metavar="KEY=VALUE",
                   help="run-config overrides for both sides (e.g. scaling.num_workers=1 batch_size=64); the plain "
                        "loop keeps the same global batch")
    p.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--one", choices=("plain", "ray"), default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.steps % args.log_every:
        p.error(f"--steps ({args.steps}) must be a multiple of --log-every ({args.log_every}): equal windows")
    if args.steps // args.log_every <= args.drop:
        p.error(f"--steps {args.steps} / --log-every {args.log_every} leaves no window after --drop {args.drop}")

    if args.one:  # a child: one run, result as JSON
        cfg = bench_config(args.data, args.steps, args.log_every, args.work, args.name, args.overrides)
        if args.profile and args.one == "ray":
            from sensorlm.training import loop

            # make_torch_trainer looks the function up at call time; workers get the wrapper by value
            loop.train_loop_per_worker = _profiled_loop(str(args.profile.resolve()))
        if args.profile and args.one == "plain":
            import cProfile

            prof = cProfile.Profile()
            res = prof.runcall(run_plain, cfg, args.threads[0])
            prof.dump_stats(str(args.profile / "plain.pstats"))
        else:
            res = run_plain(cfg, args.threads[0]) if args.one == "plain" else run_ray(cfg)
        args.result.write_text(json.dumps(res))
        return 0

    if not (args.data / "manifest.json").is_file():
        from sensorlm.data.prepare import prepare_synthetic

        print(f"preparing the demo wearable dataset in {args.data}", flush=True)
        prepare_synthetic("wearable", "demo", args.data, seed=0)
    info = machine()
    info["load_start"] = loadavg()
    print(f"machine: {info}", flush=True)
    cfg = bench_config(args.data, args.steps, args.log_every, Path(tempfile.gettempdir()), "check", args.overrides)
    global_batch = cfg.batch_size * cfg.optim.grad_accum * cfg.scaling.num_workers
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix="sensorlm-bench-train-step-") as tmp:
            for side, threads in (("plain", args.threads[0]), ("ray", 1)):
                res = summarize_run(_run_child(side, threads, args, Path(tmp), 0), args.steps, args.log_every,
                                    args.drop, global_batch)
                print(f"profiled {res['label']}: steady {res['steady_samples_per_s']:.1f} samples/s "
                      f"(cProfile overhead included), windows {[round(x, 1) for x in res['rates']]}", flush=True)
        for stats in sorted(args.profile.glob("*.pstats")):
            print(f"wrote {write_profile_text(stats)}")
        return 0
    runs: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="sensorlm-bench-train-step-") as tmp:
        for r in range(args.rounds):
            for side, threads in [*(("plain", t) for t in args.threads), ("ray", 1)]:
                res = _run_child(side, threads, args, Path(tmp), r)
                res = summarize_run(res, args.steps, args.log_every, args.drop, global_batch)
                runs.append(res)
                print(f"round {r} {res['label']:8s}: steady {res['steady_samples_per_s']:7.1f} samples/s, "
                      f"windows {[round(x, 1) for x in res['rates']]}, wall {res['wall_s']:.1f} s, "
                      f"fixed {res['fixed_s']:.1f} s, load {res['load_before']} -> {res['load_after']}", flush=True)
    info["load_end"] = loadavg()
    summary = summarize(runs, args, global_batch, time.perf_counter() - t0)
    print(markdown(summary, runs, info))
    if args.json:
        with args.json.open("a") as f:
            f.write(json.dumps({"machine": info}) + "\n")
            for res in runs:
                f.write(json.dumps(res) + "\n")
            f.write(json.dumps({"summary": summary}) + "\n")
    return 0


def summarize(runs: list[dict], args, global_batch: int, total_s: float) -> dict[str, Any]:
    labels = list(dict.fromkeys(r["label"] for r in runs))
    by = {lab: [r for r in runs if r["label"] == lab] for lab in labels}
    med = {lab: statistics.median(r["steady_samples_per_s"] for r in by[lab]) for lab in labels}
    fixed = {lab: statistics.median(r["fixed_s"] for r in by[lab]) for lab in labels}
    out = {
        "rounds": args.rounds, "steps": args.steps, "log_every": args.log_every, "drop": args.drop,
        "global_batch": global_batch, "plain_threads": args.threads,
        "median_samples_per_s": med, "median_fixed_s": fixed,
        "ray_init_median_s": statistics.median(r["ray_init_s"] for r in by["ray"]),
        "total_s": total_s, "ratios": {},
    }
    for lab in labels:
        if lab == "ray":
            continue
        # Per round: ray over that round's plain run (close in time, so close in machine load).
        rounds = [ray["steady_samples_per_s"] / plain["steady_samples_per_s"] for plain, ray in zip(by[lab], by["ray"])]
        out["ratios"][lab] = {"ratio_of_medians": med["ray"] / med[lab], "per_round": rounds,
                              "median_per_round": statistics.median(rounds)}
    return out


def markdown(s: dict[str, Any], runs: list[dict], info: dict) -> str:
    lines = [
        "| round | run | steady samples/s | window samples/s | wall s | fixed s | load (1 min) before -> after |",
        "|---:|---|---:|---|---:|---:|---|",
    ]
    for r in runs:
        lines.append(f"| {r['round']} | {r['label']} | {r['steady_samples_per_s']:.1f} | "
                     f"{' '.join(f'{x:.0f}' for x in r['rates'])} | {r['wall_s']:.1f} | {r['fixed_s']:.1f} | "
                     f"{r['load_before'][0]:.1f} -> {r['load_after'][0]:.1f} |")
    lines.append("")
    lines.append("median steady samples/s: " + ", ".join(f"{k} {v:.1f}" for k, v in s["median_samples_per_s"].items()))
    for lab, r in s["ratios"].items():
        lines.append(f"ray / {lab}: ratio of medians {r['ratio_of_medians']:.3f}; per round "
                     f"{', '.join(f'{x:.3f}' for x in r['per_round'])} (median {r['median_per_round']:.3f})")
    lines.append("fixed start-up (median s): " + ", ".join(f"{k} {v:.1f}" for k, v in s["median_fixed_s"].items())
                 + f" (ray.init {s['ray_init_median_s']:.1f} s); whole bench {s['total_s']:.0f} s")
    lines.append(f"load average (1/5/15 min): start {info['load_start']}, end {info['load_end']}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
