"""Loader throughput: decoded samples/s per loader process, paper-size wearable and SST samples.

    python bench/loader.py                       # both kinds, 0/1/2 workers
    python bench/loader.py --kind wearable --workers 0 4 8 --samples 2048

Writes a temporary dataset of paper-size samples (wearable: 1440x34 float32 = 196 KB plus mask,
metadata and a caption of realistic length; SST: the ``base`` shape, 96x128x128 day slots), then
times full passes of `make_loader` after the first batch (start-up excluded). "per process" divides
by the processes doing the decoding (the workers, or the main process when workers=0). Prints a
Markdown table for bench/RESULTS.md and the machine it ran on.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sensorlm.data.loader import make_loader
from sensorlm.data.schema import DatasetInfo, ShardSample
from sensorlm.data.shards import write_shards
from sensorlm.data.tokenizer import TOKENIZER_FILE, train_tokenizer

WEARABLE_T, WEARABLE_C = 1440, 34
SST_D, SST_H, SST_W = 96, 128, 128  # base preset: 3 months x 32 day slots, 128x128 pixels


def _captions(n: int) -> list[str]:
    """Captions of the real length: the tiny generator's, cycled."""
    from sensorlm.data.synthetic.wearable import generate_wearable

    pool = [d.caption for d in generate_wearable("tiny", seed=0, num_subjects=8, days_per_subject=4)]
    return [pool[i % len(pool)] for i in range(n)]


def build_wearable(out: Path, n: int, dtype: str) -> None:
    from sensorlm.data.synthetic.wearable import ACTIVITIES, CHANNELS

    rng = np.random.default_rng(0)
    captions = _captions(n)
    tok = train_tokenizer(captions, 32000)
    tok.save(out / TOKENIZER_FILE)
    info = DatasetInfo("wearable", seq_len=WEARABLE_T, channels=[(c.name, c.unit) for c in CHANNELS],
                       activities=list(ACTIVITIES))

    def samples():
        for i in range(n):
            sensor = rng.normal(size=(WEARABLE_T, WEARABLE_C)).astype(np.float32)
            missing = (rng.random(WEARABLE_T) < 0.05).astype(np.uint8)
            sensor[missing == 1] = 0
            act = ACTIVITIES[i % len(ACTIVITIES)]
            meta = {"key": f"b{i:06d}", "primary_activity": act, "activities": [], "split": "train"}
            yield ShardSample(f"b{i:06d}", "train", {"sensor": sensor, "missing": missing}, meta, captions[i])

    write_shards(samples(), out, info, max_count=128, dtype=dtype, activities=list(ACTIVITIES),
                 extra={"tokenizer": TOKENIZER_FILE, "vocab_size": tok.vocab_size, "text_len": 64})


def build_sst(out: Path, n: int, dtype: str) -> None:
    rng = np.random.default_rng(0)
    info = DatasetInfo("sst", days=SST_D, height=SST_H, width=SST_W)
    land = (rng.random((SST_H, SST_W)) < 0.2).astype(np.uint8)

    def samples():
        for i in range(n):
            mask = (rng.random((SST_D, SST_H, SST_W)) < 0.5).astype(np.uint8)
            daily = (15 + 5 * rng.random((SST_D, SST_H, SST_W), dtype=np.float32)) * (1 - mask)
            padded = np.zeros(SST_D, np.uint8)
            arrays = {"daily": daily.astype(np.float32), "mask": mask, "padded_days": padded,
                      "holdout": (rng.random((SST_H, SST_W)) < 0.1).astype(np.uint8),
                      "target": np.full((SST_H, SST_W), 15, np.float32), "land": land,
                      "clim": np.full((SST_H, SST_W), 15, np.float32)}
            yield ShardSample(f"b{i:06d}", "train", arrays, {"key": f"b{i:06d}", "month": 1 + i % 12}, None)

    write_shards(samples(), out, info, max_count=4, dtype=dtype)


def measure(path: Path, workers: int, batch_size: int, passes: int, pin_memory: bool = False) -> tuple[float, int]:
    """Samples/s over `passes` full epochs, timed from the first batch of each pass."""
    rates = []
    total = 0
    for epoch in range(passes):
        loader = make_loader(path, "train", batch_size, num_workers=workers, seed=0, epoch=epoch,
                             shuffle_buffer=64, pin_memory=pin_memory)
        it = iter(loader)
        first = next(it)
        n, t0 = 0, time.perf_counter()
        for batch in it:
            n += len(batch["key"])
        dt = time.perf_counter() - t0
        total += n + len(first["key"])
        if n:
            rates.append(n / dt)
    return float(np.median(rates)), total


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return (f"{cpu}, {os.cpu_count()} cores visible, Python {platform.python_version()}, torch {torch.__version__}, "
            f"{platform.system()} {platform.release()}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kind", choices=["wearable", "sst", "both"], default="both")
    p.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--samples", type=int, default=1024, help="wearable samples (SST uses samples/32)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--passes", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32")
    p.add_argument("--pin-memory", action="store_true", help="pin batches (as a GPU trainer would)")
    p.add_argument("--dir", help="keep the benchmark dataset here (default: a temporary directory)")
    args = p.parse_args(argv)

    kinds = ["wearable", "sst"] if args.kind == "both" else [args.kind]
    print(f"machine: {machine()}; pin_memory={args.pin_memory}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.dir or tmp)
        for kind in kinds:
            out = base / f"bench_{kind}_{args.dtype}"
            out.mkdir(parents=True, exist_ok=True)
            n = args.samples if kind == "wearable" else max(8, args.samples // 32)
            t0 = time.perf_counter()
            if not (out / "manifest.json").is_file():
                (build_wearable if kind == "wearable" else build_sst)(out, n, args.dtype)
            n = json.loads((out / "manifest.json").read_text())["num_samples"]  # a kept --dir may differ
            size = sum(f.stat().st_size for f in out.glob("*.tar")) / n
            print(f"{kind}: {n} samples, {size / 1e3:.0f} KB/sample on disk, built in {time.perf_counter() - t0:.1f}s",
                  flush=True)
            for w in args.workers:
                bs = args.batch_size if kind == "wearable" else 4
                rate, seen = measure(out, w, bs, args.passes, args.pin_memory)
                per_proc = rate / max(w, 1)
                rows.append((kind, args.dtype, w, bs, rate, per_proc, size))
                print(f"  workers={w}: {rate:8.1f} samples/s total, {per_proc:8.1f} per loader process "
                      f"({seen} samples read)", flush=True)
    print("\n| sample | dtype | workers | batch | samples/s | per loader process | KB/sample |")
    print("|---|---|---|---|---|---|---|")
    for kind, dtype, w, bs, rate, per_proc, size in rows:
        print(f"| {kind} | {dtype} | {w} | {bs} | {rate:.0f} | {per_proc:.0f} | {size / 1e3:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
