"""The trainer on one GPU in one prepared call (issue 31): bench/gpu/run.sh runs this after it has
installed the carried wheels.

    python bench/gpu/run.py --out "$OUT"              # on the GPU machine
    python bench/gpu/run.py --dry-run --out DIR       # the same steps on the CPU, tiny sizes, fp32

Steps, each a ``sensorlm train`` / ``sensorlm embed`` command in its own process:

1. smoke: the tiny preset (``configs/sensorlm_tiny.yaml``) on the GPU, a few steps;
2. the paper preset (``configs/sensorlm_vitb_10_2.yaml``: ViT-B/10/2 over (1440, 34), 205M
   parameters) in bf16 with ZeRO-2, then ZeRO-3, on paper-shaped synthetic days (the ``bench``
   preset), at the largest per-GPU batch of ``--batches`` that fits (tried from the largest; an
   out-of-memory run is retried at the next), for ``--steps`` steps; the ZeRO-2 run registers its model;
3. ``sensorlm embed`` with that registered version on the GPU over the same days.

Figures are the trainer's own: steady ``train/samples_per_s`` (the log windows after the first),
``perf/peak_mem_gib`` (this rank's ``torch.cuda.max_memory_allocated``), and MFU from the FLOP count
in bench/RESULTS.md (1.961 TFLOP per sample per step of the paper preset) against the datasheet's
989.4 TFLOP/s bf16 dense of an H100 SXM. All of it goes to ``OUT/gpu_run.json`` and the log.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PAPER_TFLOP_PER_SAMPLE = 1.961  # bench/RESULTS.md, "GPU step": 3 x forward of sensorlm_vitb_10_2
H100_BF16_TFLOPS = 989.4  # datasheet, dense
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "out of memory")


def _say(msg: str) -> None:
    print(f"[bench.gpu] {msg}", flush=True)


def sensorlm(args: list[str], log: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """``python -m sensorlm.cli ARGS`` in its own process, its output kept in `log` and echoed."""
    cmd = [sys.executable, "-m", "sensorlm.cli", *args]
    _say("$ sensorlm " + " ".join(args))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout_s, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    log.write_text(done.stdout)
    for line in done.stdout.splitlines():
        if line.startswith(("[sensorlm]", "[embed]", "sensorlm ")):
            print("   " + line, flush=True)
    _say(f"exit {done.returncode} after {time.perf_counter() - t0:.0f} s (log {log})")
    return done


def run_figures(tracking_uri: str, run_name: str, flop_per_sample: float | None, peak_tflops: float | None) -> dict:
    """The trainer's figures of a finished run, read back from its MLflow store."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              f"attributes.run_name = '{run_name}'")
    if not runs:
        raise RuntimeError(f"no MLflow run named {run_name!r} in {tracking_uri}")
    run = runs[0]
    history = sorted(client.get_metric_history(run.info.run_id, "train/samples_per_s"), key=lambda m: m.step)
    rates = [m.value for m in history]
    steady = rates[1:] or rates  # the first window holds the warm-up (allocator, autotuning)
    rate = len(steady) / sum(1.0 / r for r in steady) if steady else float("nan")  # samples over time
    out: dict[str, Any] = {
        "run_id": run.info.run_id, "status": run.info.status, "windows_samples_per_s": rates,
        "steady_samples_per_s": rate, "final_loss": run.data.metrics.get("train/loss"),
        "peak_mem_gib": run.data.metrics.get("perf/peak_mem_gib"),
        "seconds_to_first_step": run.data.metrics.get("perf/seconds_to_first_step"),
    }
    if flop_per_sample and peak_tflops:
        out["model_tflops"] = rate * flop_per_sample
        out["mfu"] = rate * flop_per_sample / peak_tflops
    return out


def train_at_largest_batch(name: str, config: str, batches: list[int], common: list[str], work: Path,
                           timeout_s: float) -> tuple[int, subprocess.CompletedProcess]:
    """Train at the first batch of `batches` that fits; an out-of-memory run moves to the next."""
    for batch in batches:
        run_name = f"{name}-b{batch}"
        done = sensorlm(["train", "--config", config, f"name={run_name}", f"batch_size={batch}", *common],
                        work / f"{run_name}.log", timeout_s)
        if done.returncode == 0:
            return batch, done
        if not any(m in done.stdout for m in OOM_MARKERS):
            raise RuntimeError(f"{run_name} failed (not out of memory); see {work / (run_name + '.log')}:\n"
                               + done.stdout[-3000:])
        _say(f"batch {batch} does not fit; trying the next")
    raise RuntimeError(f"{name}: none of the batches {batches} fits")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO_ROOT / "outputs" / "bench" / "gpu"))
    p.add_argument("--dry-run", action="store_true", help="the same steps on the CPU: tiny preset, fp32, few steps")
    p.add_argument("--steps", type=int, default=None, help="steps of each paper-preset run (default 150; dry run 4)")
    p.add_argument("--batches", type=int, nargs="+", default=None,
                   help="per-GPU batches to try, largest first (default 128 96 64 32; dry run 8)")
    p.add_argument("--timeout", type=float, default=420.0, help="seconds a single command may take")
    p.add_argument("--stages", type=int, nargs="+", default=[2, 3], choices=[2, 3],
                   help="ZeRO stages of the paper-preset runs (default 2 3; stage 2 registers the model embed uses)")
    args = p.parse_args(argv)
    dry = args.dry_run
    steps = args.steps or (4 if dry else 150)
    batches = sorted(args.batches or ([8] if dry else [128, 96, 64, 32]), reverse=True)
    out = args.out.resolve()
    work = out / "work"
    work.mkdir(parents=True, exist_ok=True)
    uri = f"sqlite:///{work / 'mlflow.db'}"
    os.environ["MLFLOW_TRACKING_URI"] = uri
    gpu = [] if dry else ["scaling.use_gpu=true", "scaling.precision=bf16"]
    where = [f"storage_path={work / 'ray'}", f"tracking.tracking_uri={uri}", "tracking.system_metrics=false",
             "scaling.num_workers=1"]
    report: dict[str, Any] = {"mode": "dry-run (CPU)" if dry else "gpu", "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
                              "python": platform.python_version(), "steps": steps}
    try:
        import torch

        report["torch"] = torch.__version__
        if torch.cuda.is_available():
            props = torch.cuda.get_device_properties(0)
            report["gpu"] = {"name": props.name, "memory_gib": props.total_memory / 2**30, "sms": props.multi_processor_count}
        elif not dry:
            raise SystemExit("no CUDA device: run with --dry-run on a machine without a GPU")
    except ImportError:  # pragma: no cover - torch is in every environment this runs in
        pass

    def save() -> None:
        (out / "gpu_run.json").write_text(json.dumps(report, indent=1, default=str))

    # 1. smoke: the tiny preset end to end on the device (a dry run's ZeRO stages below already
    # are the tiny preset, so it skips this one and keeps the CI test short)
    tiny_data = work / "wearable_tiny"
    smoke = 4 if dry else 20
    if dry:
        report["smoke_tiny"] = {"skipped": "dry run: the ZeRO-2 stage below is the tiny preset"}
    done = None if dry else sensorlm(["train", "--config", "configs/sensorlm_tiny.yaml", "name=smoke-tiny", f"steps={smoke}",
                     f"log_every={smoke // 2}", f"eval_every={smoke}", f"checkpoint.every_steps={smoke}",
                     "checkpoint.best_metric=null", "data.synthetic=tiny",
                     f"data.path={tiny_data}", "tracking.register=false", *where, *gpu],
                    work / "smoke-tiny.log", args.timeout)
    if done is not None:
        report["smoke_tiny"] = {"exit": done.returncode}
        if done.returncode == 0:
            report["smoke_tiny"].update(run_figures(uri, "smoke-tiny", None, None))
    save()
    if done is not None and done.returncode != 0:
        _say("the tiny smoke run failed; stopping (log above)")
        return 1

    # 2. the paper preset (its tiny stand-in on a dry run) with ZeRO-2 and ZeRO-3
    config = "configs/sensorlm_tiny.yaml" if dry else "configs/sensorlm_vitb_10_2.yaml"
    data = tiny_data if dry else work / "wearable_bench"
    flop = None if dry else PAPER_TFLOP_PER_SAMPLE
    peak = None if dry else H100_BF16_TFLOPS
    log_every = max(1, min(25, steps // 4))
    common = [f"steps={steps}", f"log_every={log_every}", f"eval_every={steps}", f"checkpoint.every_steps={steps}",
              "checkpoint.best_metric=null", f"optim.warmup_steps={max(1, steps // 10)}", f"data.path={data}",
              f"data.synthetic={'tiny' if dry else 'bench'}", "data.num_workers=2" if not dry else "data.num_workers=0",
              "data.val_batches=2", *where, *gpu]
    model_version = None
    for stage in sorted(args.stages):
        name = f"paper-zero{stage}"
        try:
            batch, _ = train_at_largest_batch(name, config, batches, [*common, f"scaling.zero_stage={stage}",
                                                                     f"tracking.register={'true' if stage == 2 else 'false'}",
                                                                     "tracking.registered_model_name=sensorlm-gpu"],
                                              work, args.timeout)
        except RuntimeError as exc:
            report[name] = {"error": str(exc)[:2000]}
            save()
            _say(str(exc).splitlines()[0])
            continue
        figures = run_figures(uri, f"{name}-b{batch}", flop, peak)
        report[name] = {"per_gpu_batch": batch, **figures}
        _say(f"{name}: batch {batch}, {figures['steady_samples_per_s']:.1f} samples/s"
             + (f", MFU {figures['mfu']:.1%}" if "mfu" in figures else "")
             + (f", peak {figures['peak_mem_gib']:.1f} GiB" if figures.get("peak_mem_gib") else ""))
        if stage == 2:
            from mlflow.tracking import MlflowClient

            versions = MlflowClient(uri).search_model_versions("name = 'sensorlm-gpu'")
            model_version = max(int(v.version) for v in versions) if versions else None
        save()

    # 3. embed with the registered version on the device
    if model_version is not None:
        embed_out = work / "embeddings"
        args_embed = ["embed", f"models:/sensorlm-gpu/{model_version}", "--dataset", str(data), "--out", str(embed_out),
                      "--tracking-uri", uri, "--batch-size", "256" if not dry else "16"]
        if not dry:
            args_embed += ["--gpus-per-actor", "1"]
        t0 = time.perf_counter()
        done = sensorlm(args_embed, work / "embed.log", args.timeout)
        report["embed"] = {"exit": done.returncode, "wall_s": time.perf_counter() - t0}
        summary = embed_out / "_embed_report.json"
        if summary.is_file():
            rep = json.loads(summary.read_text())
            report["embed"].update({k: rep.get(k) for k in ("samples_per_s", "samples_per_s_per_actor", "rows")
                                    if k in rep})
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    save()
    _say(f"wrote {out / 'gpu_run.json'}")
    failed = [k for k, v in report.items() if isinstance(v, dict) and (v.get("error") or v.get("exit", 0) != 0)]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
