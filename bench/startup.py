"""Command to first training step of the README's main job, on a warm machine.

Runs ``python jobs/train_sensorlm.py --config configs/sensorlm_tiny.yaml`` (2 steps, a throwaway
MLflow store and Ray storage) ``--repeats`` times and reads the line the worker prints after its
first optimizer step ("first step done X s after the command"); the clock starts before the
Python process is spawned (``SENSORLM_T0``). The synthetic dataset and DeepSpeed's compiled
communication op are made by a first untimed run, so every timed run is warm.

``--ray-head`` times the same job on a local Ray head started once beforehand
(``infra/local/servers.py start ray``, joined through the variables of ``env ray``), as for many
short runs on one machine: no Ray daemons to start per run, and Ray Train's coordinator actor
already exists after the first run.

    python bench/startup.py --repeats 3
    python bench/startup.py --repeats 3 --ray-head
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
LINE = re.compile(r"first step done ([0-9.]+) s after the command")


def one_run(tmp: Path, i: int, ray_env: dict[str, str | None]) -> tuple[float | None, float, str]:
    env = {**os.environ, "SENSORLM_T0": str(time.time())}
    for key, value in ray_env.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "sensorlm" / "torch_extensions"))
    cmd = [sys.executable, "jobs/train_sensorlm.py", "--config", "configs/sensorlm_tiny.yaml", "steps=2",
           "log_every=1", "eval_every=2", "checkpoint.every_steps=2", "checkpoint.best_metric=null",
           "optim.warmup_steps=1", "tracking.register=false", f"tracking.tracking_uri=sqlite:///{tmp / 'mlflow.db'}",
           f"storage_path={tmp / 'ray'}", f"name=startup-{i}"]
    start = time.time()
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    total = time.time() - start
    found = LINE.search(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not found:
        return None, total, (proc.stdout + proc.stderr)[-2000:]
    return float(found.group(1)), total, ""


SERVERS = [sys.executable, str(REPO / "infra" / "local" / "servers.py")]


def start_head(state: Path) -> dict[str, str | None]:
    """Start a 2-CPU local Ray head; the client variables of its ``env ray`` (None = unset)."""
    subprocess.run([*SERVERS, "start", "ray", "--num-cpus", "2", "--state-dir", str(state)], check=True,
                   capture_output=True, text=True)
    out = subprocess.run([*SERVERS, "env", "ray", "--state-dir", str(state)], check=True, capture_output=True,
                         text=True).stdout
    env: dict[str, str | None] = {}
    for line in out.splitlines():
        if line.startswith("export "):
            key, _, value = line[len("export "):].partition("=")
            env[key] = value.strip("'")
        elif line.startswith("unset "):
            env[line.split()[1]] = None
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--ray-head", action="store_true", help="join a local Ray head started once beforehand")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sensorlm-startup-") as d:
        tmp = Path(d)
        ray_env = start_head(tmp / "servers") if args.ray_head else {}
        try:
            return timed_runs(tmp, args.repeats, ray_env)
        finally:
            if args.ray_head:
                subprocess.run([*SERVERS, "stop", "ray", "--state-dir", str(tmp / "servers")], capture_output=True)


def timed_runs(tmp: Path, repeats: int, ray_env: dict[str, str | None]) -> int:
    first, _, err = one_run(tmp, 0, ray_env)  # warm-up: data, compiled op, page cache
    if first is None:
        print(err, file=sys.stderr)
        return 1
    print(f"warm-up run: first step {first:.1f} s after the command")
    times, totals = [], []
    for i in range(1, repeats + 1):
        t, total, err = one_run(tmp, i, ray_env)
        if t is None:
            print(err, file=sys.stderr)
            return 1
        times.append(t)
        totals.append(total)
        print(f"run {i}: first step {t:.1f} s after the command (whole 2-step job {total:.1f} s)")
    times.sort()
    totals.sort()
    print(f"median command-to-first-step: {times[len(times) // 2]:.1f} s over {len(times)} warm runs "
          f"(whole job {totals[len(totals) // 2]:.1f} s){' on a running Ray head' if ray_env else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
