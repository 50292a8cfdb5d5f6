"""`sensorlm embed` throughput: samples/s per actor (CPU process or GPU), tiny preset on CPU.

    python bench/embed.py                               # tiny preset, CPU, 1 and 2 actors
    python bench/embed.py --preset sensorlm_vitb_10_2 --gpu --samples 8192 --batch-size 256

Writes a temporary dataset of random samples of the preset's shape (tiny: 144x34, paper: 1440x34)
and a randomly initialised model package (throughput does not depend on the weights), then times:

- ``model``: `SensorLMPyfunc.embed_sensor` in this process on ready arrays of the dataset's own
  samples (the model alone: the same missing minutes, decoded beforehand), over a shard's distinct
  batches (the ratios' reference) and on one batch over and over (warm caches, for comparison);
- ``embed``: the whole `sensorlm.inference.embed.embed` run through Ray Data (read shard, decode,
  embed, write Parquet), with 1..N actors; "per actor" divides by the time actors were busy, "wall"
  includes Ray Data's start-up and the actor model loads (excludes ``ray.init``), "all actors busy"
  is the wall rate between the moment the last actor started its first file and the moment the
  first actor finished its last (`EmbedReport.all_busy_samples_per_s`).

Prints Markdown rows for bench/RESULTS.md and the machine it ran on.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from sensorlm.data.schema import DatasetInfo, ShardSample
from sensorlm.data.shards import write_shards
from sensorlm.data.tokenizer import TOKENIZER_FILE, train_tokenizer
from sensorlm.inference.embed import embed
from sensorlm.models import create_model, model_config
from sensorlm.tracking.package import save_model_package
from sensorlm.tracking.pyfunc import SensorLMPyfunc

ACTS = ["rest", "walk", "run", "bike"]


def build(root: Path, preset: str, n: int, per_shard: int) -> tuple[Path, Path]:
    cfg = model_config(preset)
    t, c = cfg.sensor.input_len, cfg.sensor.num_channels
    data = root / "data"
    data.mkdir(parents=True)
    captions = [f"a day with {a} for {m} minutes" for a in ACTS for m in range(10, 60)]
    tok = train_tokenizer(captions, 200, min_frequency=1)
    tok.save(data / TOKENIZER_FILE)
    rng = np.random.default_rng(0)
    info = DatasetInfo(kind="wearable", seq_len=t, channels=[(f"ch{i}", "u") for i in range(c)], activities=ACTS)

    def samples():
        for i in range(n):
            sensor = rng.normal(size=(t, c)).astype(np.float32)
            missing = (rng.random(t) < 0.05).astype(np.uint8)
            sensor[missing == 1] = 0
            meta = {"key": f"b{i:06d}", "primary_activity": ACTS[i % 4], "split": "train"}
            yield ShardSample(f"b{i:06d}", "train", {"sensor": sensor, "missing": missing}, meta, captions[i % 200])

    extra = {"tokenizer": TOKENIZER_FILE, "vocab_size": tok.vocab_size, "text_len": 16}
    manifest = write_shards(samples(), data, info, max_count=per_shard, activities=ACTS, extra=extra)
    torch.manual_seed(0)
    package = save_model_package(create_model(preset), preset, cfg, root / "pkg",
                                 tokenizer_path=data / TOKENIZER_FILE, data_stats={"stats": manifest["stats"]})
    return data, package


def bench_model(package: Path, data: Path, batch: int, device: str, rounds: int = 5) -> tuple[float, float]:
    """The model alone: `embed_sensor` on the dataset's own samples, decoded beforehand (the same
    missing minutes, so the same masked attention). Two figures, median of `rounds` passes:
    one batch embedded over and over (warm caches: the model's best case), and a whole shard's
    distinct batches in turn (what a stream of samples costs it)."""
    from sensorlm.inference.inputs import dataset_units, read_samples

    pf = SensorLMPyfunc()
    pf.load_package(package)
    pf.to(device)
    units, _ = dataset_units(str(data), None)
    x = np.stack([s.raw for s in read_samples(units[0], lambda *a: None)])
    batches = [x[i:i + batch] for i in range(0, len(x) - batch + 1, batch)]

    def timed(chunks) -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for chunk in chunks:
            pf.embed_sensor(chunk)
        if device == "cuda":
            torch.cuda.synchronize()
        return sum(len(c) for c in chunks) / (time.perf_counter() - t0)

    with torch.inference_mode():
        timed(batches)
        same = float(np.median([timed([batches[0]] * len(batches)) for _ in range(rounds)]))
        distinct = float(np.median([timed(batches) for _ in range(rounds)]))
    return same, distinct


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="sensorlm_tiny")
    p.add_argument("--samples", type=int, default=4096)
    p.add_argument("--per-shard", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    p.add_argument("--gpu", action="store_true", help="one GPU per actor")
    args = p.parse_args(argv)
    if args.gpu and not torch.cuda.is_available():
        print("--gpu: no CUDA device here", file=sys.stderr)
        return 2

    import ray

    root = Path(tempfile.mkdtemp(prefix="bench-embed-"))
    try:
        data, package = build(root, args.preset, args.samples, args.per_shard)
        device = "cuda" if args.gpu else "cpu"
        torch.set_num_threads(1)
        model_same, model_rate = bench_model(package, data, args.batch_size, device)
        ray.init(logging_level="ERROR", include_dashboard=False)
        rows = []
        for actors in args.actors:
            out = root / f"out-{actors}"
            report = embed(str(package), str(out), dataset=str(data), batch_size=args.batch_size, num_actors=actors,
                           cpus_per_actor=1, gpus_per_actor=1 if args.gpu else 0, log=None)
            assert report.rows == args.samples and not report.bad, report.summary()
            rows.append((actors, report.samples_per_s_per_actor, report.samples_per_s, report.seconds,
                         report.all_busy_samples_per_s))
        ray.shutdown()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    where = torch.cuda.get_device_name(0) if args.gpu else _cpu_name()
    print(f"# {where}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
          f"preset {args.preset}, {args.samples} samples in shards of {args.per_shard}, batch {args.batch_size}, "
          f"load average {os.getloadavg()[0]:.1f}, {time.strftime('%Y-%m-%d')}")
    unit = "GPU" if args.gpu else "CPU process (1 thread)"
    print(f"model alone, one {unit}: {model_rate:.0f} samples/s over a shard's distinct batches, "
          f"{model_same:.0f} on one batch over and over")
    print("| actors | samples/s per actor (busy) | per actor / model alone | samples/s (wall) | wall s | "
          "samples/s (wall, all actors busy) |")
    print("|---|---|---|---|---|---|")
    for actors, per, wall, secs, steady in rows:
        steady_text = f"{steady:.0f}" if steady else "-"
        print(f"| {actors} | {per:.0f} | {per / model_rate:.2f} | {wall:.0f} | {secs:.1f} | {steady_text} |")
    if len(rows) > 1:
        one = rows[0]
        for actors, _, wall, _, steady in rows[1:]:
            print(f"{actors} actors / {one[0]}: wall {wall / one[2]:.2f}x"
                  + (f", all busy {steady / one[4]:.2f}x" if steady and one[4] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
