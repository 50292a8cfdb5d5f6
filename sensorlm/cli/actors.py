"""What `sensorlm embed` and `sensorlm caption` share: the inputs and the Ray Data actor pool's
options, and the report printed at the end."""

from __future__ import annotations

import argparse


def add_input_and_actor_options(p: argparse.ArgumentParser, verb: str) -> argparse._MutuallyExclusiveGroup:
    """--out, the sensor inputs (one of them is required; the group is returned for more), the
    export options and the actor pool's; `verb` ("embed", "caption") words the help."""
    p.add_argument("--out", required=True, help="output folder (path or URI): one Parquet file per input file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", "--data", dest="dataset",
                     help="prepared wearable dataset (directory or URL with manifest.json)")
    src.add_argument("--parquet", nargs="+", metavar="PATH", help="wearable Parquet files or directories")
    src.add_argument("--exports", nargs="+", metavar="EXPORT", help="device exports (CSV/Parquet), imported first")
    p.add_argument("--split", nargs="+", help=f"dataset splits to {verb} (default: all)")
    p.add_argument("--spec", help="channel spec for --exports (YAML/JSON; default: from column headers)")
    p.add_argument("--labels", help="label file for --exports")
    p.add_argument("--batch-size", type=int, default=64, help="samples per model call (default 64)")
    p.add_argument("--actors", type=int, default=1, help="actors, each with one model copy (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor, also torch threads (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor; > 0 runs on CUDA (default 0)")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and errors")
    return src


def input_and_actor_fields(args: argparse.Namespace) -> dict:
    """The `EmbedInput` and `EmbedOptions` fields the options above name."""
    spec = None
    if args.exports:
        from sensorlm.data.device_import import load_import_spec

        spec = load_import_spec(args.spec)
    return dict(dataset=args.dataset, splits=args.split, parquet=args.parquet, exports=args.exports, import_spec=spec,
                labels=args.labels, batch_size=args.batch_size, num_actors=args.actors,
                cpus_per_actor=args.cpus_per_actor, gpus_per_actor=args.gpus_per_actor, tracking_uri=args.tracking_uri)


def log_to(tag: str, quiet: bool):
    return None if quiet else (lambda msg: print(f"[{tag}] {msg}", flush=True))


def report_status(report, tag: str, quiet: bool) -> int:
    """Print the summary (quiet) and the first skipped inputs; the exit status: unreadable inputs are
    reported and skipped (0), an unexpected error in a file is a failure (1)."""
    if quiet:
        print(f"[{tag}] {report.summary()}", flush=True)
    for b in report.bad[:10]:
        where = " ".join(x for x in (b["shard"], b["key"], b["detail"]) if x)
        print(f"[{tag}] skipped {b['reason']}: {where}", flush=True)
    return 1 if any(b["reason"] == "error" for b in report.bad) else 0
