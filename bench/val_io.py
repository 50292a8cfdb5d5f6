"""Validation bytes read per rank at 1, 2 and 4 ranks (issue 26): each rank's loader is built and
iterated as training validation builds it (split by sample), and the shards it opens are counted
from the batches' own shard names.

    python bench/val_io.py [--data data/wearable_demo] [--synthetic demo]

Results go in bench/RESULTS.md ("Validation I/O per rank").
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="data/wearable_demo")
    p.add_argument("--synthetic", default="demo", help="generate this preset at --data when it has no manifest")
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args(argv)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sensorlm.data.loader import make_loader

    data = Path(args.data)
    if not (data / "manifest.json").is_file():
        from sensorlm.data.prepare import prepare_synthetic

        prepare_synthetic("wearable", args.synthetic, data, seed=0, log=None)
    manifest = json.loads((data / "manifest.json").read_text())
    shards = manifest["splits"]["val"]["shards"]
    size = {s["name"]: s["bytes"] for s in shards}
    total = sum(size.values())
    print(f"# {data}: val split {manifest['splits']['val']['num_samples']} samples in {len(shards)} shards, "
          f"{total / 2**20:.1f} MiB")
    print("| ranks | shards opened per rank | MiB read per rank (max) | samples per rank | all ranks' MiB |")
    print("|---:|---|---:|---|---:|")
    for world in (1, 2, 4):
        opened, samples = [], []
        for rank in range(world):
            loader = make_loader(data, "val", args.batch_size, rank=rank, world_size=world, shuffle=False,
                                 num_workers=0, split_samples=True)
            names, n = set(), 0
            for batch in loader:
                names.update(batch["shard"])
                n += len(batch["key"])
            opened.append(names)
            samples.append(n)
        mib = [sum(size[s] for s in names) / 2**20 for names in opened]
        print(f"| {world} | {', '.join(str(len(o)) for o in opened)} | {max(mib):.1f} | "
              f"{', '.join(map(str, samples))} | {sum(mib):.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
