"""``sensorlm prepare-data wearable|sst --out DIR [--size tiny | --parquet FILE ...]``: Parquet (or the generated demo
data) -> shards, manifest and tokenizer (also `jobs/prepare_data.py`)."""

from __future__ import annotations

import argparse
import sys

from sensorlm.cli.argtypes import positive_int, size


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["wearable", "sst"], help="which dataset")
    p.add_argument("--out", required=True, help="output dataset directory (shards, manifest.json, tokenizer.json)")
    p.add_argument(
        "--size",
        help="size of the generated demo data (wearable: tiny/demo/small/paper, sst: tiny/demo/base; default "
             "tiny); also sets defaults",
    )
    p.add_argument("--preset", dest="deprecated_preset", help=argparse.SUPPRESS)  # the old name of --size
    p.add_argument(
        "--parquet", nargs="+", metavar="FILE", help="convert these Parquet files instead of generating data"
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--max-count", type=positive_int, help="maximum samples per shard (default by size)")
    p.add_argument("--max-bytes", type=size, default="256M", help="maximum shard size, e.g. 256M (default)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="float storage in shards")
    p.add_argument("--vocab-size", type=positive_int, help="tokenizer vocabulary (default by size, else 32000)")
    p.add_argument("--text-len", type=positive_int, help="caption tokens recorded as the loader default")
    p.add_argument("--verify", action="store_true", help="re-read every shard and check its sha256 at the end")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier dataset in --out written with other inputs or settings (a folder "
                        "holding files prepare-data did not write is refused all the same)")
    p.add_argument("--quiet", action="store_true", help="print only errors")


def run(args: argparse.Namespace) -> int:
    from sensorlm.data.prepare import prepare_dataset
    from sensorlm.data.shards import verify_manifest

    log = None if args.quiet else (lambda msg: print(f"[prepare-data] {msg}", flush=True))
    size = args.size
    if args.deprecated_preset:
        print("[prepare-data] --preset is deprecated: it is now --size", file=sys.stderr, flush=True)
        if size and size != args.deprecated_preset:
            raise ValueError(f"--size {size} and --preset {args.deprecated_preset} disagree; give --size only")
        size = args.deprecated_preset
    manifest = prepare_dataset(
        args.kind,
        args.out,
        size=size or "tiny",
        parquet=args.parquet,
        seed=args.seed,
        max_count=args.max_count,
        max_bytes=args.max_bytes,
        dtype=args.dtype,
        vocab_size=args.vocab_size,
        text_len=args.text_len,
        log=log,
        overwrite=args.overwrite,
    )
    if args.verify:
        verify_manifest(args.out)
    if not args.quiet:
        splits = ", ".join(
            f"{s}: {e['num_samples']} in {len(e['shards'])} shards" for s, e in manifest["splits"].items()
        )
        print(f"[prepare-data] done: {args.out} ({splits})", flush=True)
    return 0
