"""``sensorlm import EXPORT ... --out DIR``: device exports (CSV/Parquet, vendor formats) and label
intervals -> a captioned dataset (docs/data.md)."""

from __future__ import annotations

import argparse
import dataclasses

from sensorlm.cli.argtypes import positive_int


def workers_arg(text: str) -> int | str:
    return text if text == "auto" else positive_int(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("exports", nargs="+", metavar="EXPORT",
                   help="device files: long-format CSV/Parquet or a vendor format (see --format)")
    from sensorlm.data.formats import known_formats

    p.add_argument("--format", default="auto", metavar="NAME",
                   help=f"auto (each file's own, by content and extension; logged), {', '.join(known_formats())} "
                        "(docs/data.md, 'Device formats')")
    p.add_argument("--out", required=True,
                   help="new dataset directory (shards, manifest.json, tokenizer.json), or an fsspec URL such as "
                        "s3://bucket/ds (built locally, then uploaded, manifest.json last)")
    p.add_argument("--scratch", help="where a URL --out is built first (default: the system's temporary folder; "
                                     "on a multi-node cluster a shared folder every node sees)")
    p.add_argument("--spec", help="channel spec (YAML/JSON); default: channels from 'name[unit]' column headers")
    p.add_argument("--labels", help="label intervals (subject,start,end,label) or day labels (subject,date,label)")
    p.add_argument("--window-minutes", type=positive_int, help="window length (default 1440: a calendar day)")
    p.add_argument("--stride-minutes", type=positive_int, help="window stride (default: the window length)")
    p.add_argument("--grid-seconds", type=positive_int, help="resampling grid (default 60)")
    p.add_argument("--min-coverage", type=float, help="drop windows with less data than this fraction (default 0.5)")
    p.add_argument("--main-label-min-fraction", type=float,
                   help="a window's main label must cover this fraction of it (default 0: the most-covering label)")
    p.add_argument("--prompt-template", help="zero-shot prompt with a {label} placeholder (default 'A day with {label}.')")
    p.add_argument("--split-by", choices=["auto", "subject", "day"], help="validation split unit (default auto)")
    p.add_argument("--folds", type=positive_int,
                   help="deal the split units into K folds (splits fold0..fold{K-1}) for k-fold validation: "
                        "train with data.fold=k/K (default: one train/val split)")
    p.add_argument("--max-count", type=positive_int, default=64, help="maximum samples per shard (default 64)")
    p.add_argument("--vocab-size", type=positive_int, default=1024, help="tokenizer vocabulary (default 1024)")
    p.add_argument("--text-len", type=positive_int, help="caption tokens recorded as the loader default")
    p.add_argument("--workers", type=workers_arg, default="auto", metavar="N",
                   help="import on N Ray workers at once, one file then one subject per task (the same dataset "
                        "with any N); 1 = in this process; auto (default) = the CPUs of the Ray this runs on "
                        "(under `ray job submit`, or RAY_ADDRESS set), else 1")
    p.add_argument("--quiet", action="store_true", help="print only errors")


def run(args: argparse.Namespace) -> int:
    from sensorlm.typed_config import ConfigError
    from sensorlm.data.device_import import import_device_export, load_import_spec

    try:
        spec = load_import_spec(
            args.spec, window_minutes=args.window_minutes, stride_minutes=args.stride_minutes,
            grid_seconds=args.grid_seconds, min_coverage=args.min_coverage, prompt_template=args.prompt_template,
            main_label_min_fraction=args.main_label_min_fraction,
        )
        if args.split_by:
            spec.split.by = args.split_by
        if args.folds:
            spec.split = dataclasses.replace(spec.split, folds=args.folds)  # checked there
    except ConfigError as exc:
        raise ValueError(f"channel spec: {exc}") from None
    log = None if args.quiet else (lambda msg: print(f"[import] {msg}", flush=True))
    from sensorlm.data.formats import known_formats

    if args.format != "auto" and args.format not in known_formats():
        raise ValueError(f"--format {args.format!r}: known formats are auto, {', '.join(known_formats())}")
    from sensorlm.data.import_units import ray_cpus

    workers = (ray_cpus() or 1) if args.workers == "auto" else args.workers
    import_device_export(args.exports, args.out, spec=spec, labels=args.labels, log=log, fmt=args.format,
                         workers=workers, scratch=args.scratch, max_count=args.max_count, vocab_size=args.vocab_size,
                         text_len=args.text_len)
    if not args.quiet:
        print(f"[import] done: {args.out} (report: {args.out}/import_report.json)", flush=True)
    return 0
