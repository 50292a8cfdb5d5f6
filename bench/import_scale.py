"""`sensorlm import` with 1 and N workers (issue 26, item 1): windows/s, the ratio, the peak memory
of the driver and of a worker at two export sizes, and the projection to the paper's population.

A generated study (SYNTHETIC, `sensorlm.data.synthetic.device`): S subjects x 7 days at 30-s
epochs, as one file per subject (a study's exports in a bucket) and as one multi-subject file.
Each size is imported with ``--workers 1`` (in this process) and with ``--workers N`` (Ray
tasks; Ray started before the clock, as on a cluster that is up), and the two datasets are
checked to hold the same shards byte for byte. Each import runs in a fresh process so its peak
memory is its own.

    python bench/import_scale.py [--subjects 20 100] [--workers 2] [--rounds 1] [--layouts per_subject one_file]

With ``--rounds R`` each pair runs R times, 1 and N workers alternating, and the ratio reported is
the median of the rounds' ratios (this machine's speed drifts by 10-30% over minutes).

Results go in bench/RESULTS.md ("Import on Ray").
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAPER_PERSON_DAYS = 2_500_000

_ONE = r"""
import json, sys, time
sys.path.insert(0, {repo!r})
from pathlib import Path
from sensorlm.data.device_import import import_device_export, load_import_spec
files, spec, labels, out, workers = {files!r}, {spec!r}, {labels!r}, {out!r}, {workers}
peaks, marks = [], {{}}
def log(msg):
    m = __import__("re").search(r"peak memory of a Ray worker (\d+) MB", msg)
    if m: peaks.append(int(m.group(1)))
    if msg.startswith("window subjects:"): marks["units_done"] = time.perf_counter()
    if msg.startswith("write shards:"): marks["parts_done"] = time.perf_counter()
if workers > 1:
    from sensorlm.ray_runtime import init_ray
    init_ray(num_cpus=workers)
t0 = time.perf_counter()
m = import_device_export(files, out, spec=load_import_spec(spec), labels=labels, log=log, workers=workers)
wall = time.perf_counter() - t0
from sensorlm.data.import_units import peak_rss_mb
print(json.dumps({{"wall_s": wall, "windows": m["num_samples"], "driver_peak_mb": peak_rss_mb(),
                  "parts_s": marks["parts_done"] - marks["units_done"],
                  "serial_tail_s": t0 + wall - marks["parts_done"],
                  "worker_peak_mb": max(peaks) if peaks else None}}))
"""


def _study(root: Path, subjects: int) -> dict:
    """The generated export, as one multi-subject file and as one file per subject."""
    import pandas as pd

    sys.path.insert(0, str(REPO))
    from sensorlm.data.synthetic.device import write_device_export

    raw = root / f"study{subjects}"
    if not (raw / "export.csv").is_file():
        write_device_export(raw, subjects=subjects, days=7, epoch_s=30, seed=0)
        per = raw / "per_subject"
        per.mkdir()
        for subject, rows in pd.read_csv(raw / "export.csv", dtype=str).groupby("participant"):
            rows.to_csv(per / f"{subject}.csv", index=False)
    return {"one_file": [str(raw / "export.csv")], "per_subject": sorted(map(str, (raw / "per_subject").glob("*.csv"))),
            "spec": str(raw / "spec.yaml"), "labels": str(raw / "labels.csv"),
            "csv_mb": (raw / "export.csv").stat().st_size / 2**20}


def _run(files: list[str], study: dict, out: Path, workers: int) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    code = _ONE.format(repo=str(REPO), files=files, spec=study["spec"], labels=study["labels"], out=str(out),
                       workers=workers)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=3600)
    if done.returncode:
        raise SystemExit(f"import with {workers} workers failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["shards"] = hashlib.sha256(b"".join(p.read_bytes() for p in sorted(out.glob("*.tar")))).hexdigest()
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, nargs="+", default=[20, 100])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench" / "import")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--layouts", nargs="+", choices=("per_subject", "one_file"), default=["per_subject", "one_file"])
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for subjects in args.subjects:
        study = _study(args.out, subjects)
        for layout in args.layouts:
            rounds = []
            for r in range(args.rounds):
                one = _run(study[layout], study, args.out / "ds1", 1)
                many = _run(study[layout], study, args.out / f"ds{args.workers}", args.workers)
                same = one["shards"] == many["shards"]
                rounds.append({"one": one, "many": many, "same_shards": same, "speedup": one["wall_s"] / many["wall_s"]})
                print(f"[bench] {subjects} subjects, {layout}, round {r}: 1 worker {one['windows'] / one['wall_s']:.1f} "
                      f"windows/s (driver {one['driver_peak_mb']:.0f} MB), {args.workers} workers "
                      f"{many['windows'] / many['wall_s']:.1f} windows/s (driver {many['driver_peak_mb']:.0f} MB, worker "
                      f"{many['worker_peak_mb']} MB): {rounds[-1]['speedup']:.2f}x, same shards {same}", flush=True)
            middle = sorted(rounds, key=lambda x: x["speedup"])[len(rounds) // 2]
            rows.append({"subjects": subjects, "person_days": subjects * 7, "layout": layout, "csv_mb": study["csv_mb"],
                         "windows": middle["one"]["windows"], **middle, "rounds": rounds,
                         "same_shards": all(x["same_shards"] for x in rounds)})
            if args.rounds > 1:
                each = ", ".join(f"{x['speedup']:.2f}" for x in rounds)
                print(f"[bench] {subjects} subjects, {layout}: median of {args.rounds} rounds {middle['speedup']:.2f}x "
                      f"(rounds: {each})", flush=True)
    # Amdahl: the units (files, subjects, parts with their shards) spread over the cores; the
    # driver's tail (tokenizer, merge of the parts' shards and statistics) does not. Both per
    # window, from the largest per-subject run. (The driver's split, between stages 2 and 3, is
    # counted with the units: it is Arrow-level and small.)
    largest = max(rows, key=lambda r: (r["layout"] == "per_subject", r["subjects"]))
    one = largest["one"]
    serial = one["serial_tail_s"] / largest["windows"]  # one day-window per person-day
    units = (one["wall_s"] - one["serial_tail_s"]) / largest["windows"]
    efficiency = (one["wall_s"] - one["serial_tail_s"]) / (largest["many"]["wall_s"] - largest["many"]["serial_tail_s"]) / args.workers
    parallel_h = PAPER_PERSON_DAYS * units / (100 * efficiency) / 3600
    serial_h = PAPER_PERSON_DAYS * serial / 3600
    summary = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs", "rows": rows,
               "projection": {"person_days": PAPER_PERSON_DAYS, "cores": 100, "unit_s_per_window": units,
                              "serial_s_per_window": serial, "unit_efficiency": efficiency,
                              "parallel_hours": parallel_h, "serial_hours": serial_h}}
    (args.out / "import_scale.json").write_text(json.dumps(summary, indent=1))
    print(f"[bench] projection: {PAPER_PERSON_DAYS:,} person-days on 100 cores: the units {units * 1e3:.1f} ms/window "
          f"at {efficiency:.0%} efficiency take {parallel_h:.2f} h; the driver's serial tail {serial * 1e3:.2f} ms/window "
          f"takes {serial_h:.2f} h; total {parallel_h + serial_h:.2f} h", flush=True)
    return 0 if all(r["same_shards"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
