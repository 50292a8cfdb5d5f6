"""``sensorlm embed MODEL --out DIR (--dataset DIR | --parquet ... | --exports ... | --text ...)`` (also
`jobs/embed.py`): a registered model over data or prompts -> Parquet embeddings on Ray Data (docs/embed.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Declare the options of ``sensorlm embed`` on an argparse parser.

    Args:
        p: the subcommand's ``argparse.ArgumentParser``.
    """
    p.add_argument("model", help="models:/name/version, models:/name@alias, or a model package directory")
    p.add_argument("--out", required=True, help="output folder (path or URI): one Parquet file per input file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--dataset", help="prepared wearable dataset (directory or URL with manifest.json)")
    src.add_argument("--parquet", nargs="+", metavar="PATH", help="wearable Parquet files or directories")
    src.add_argument("--exports", nargs="+", metavar="EXPORT", help="device exports (CSV/Parquet), imported first")
    src.add_argument("--text", nargs="+", metavar="PROMPT", help="text prompts")
    src.add_argument("--text-file", help="text prompts, one per line")
    p.add_argument("--split", nargs="+", help="dataset splits to embed (default: all)")
    p.add_argument("--spec", help="channel spec for --exports (YAML/JSON; default: from column headers)")
    p.add_argument("--labels", help="label file for --exports")
    p.add_argument("--batch-size", type=int, default=64, help="samples per model call (default 64)")
    p.add_argument("--actors", type=int, default=1, help="actors, each with one model copy (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor, also torch threads (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor; > 0 runs on CUDA (default 0)")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and errors")


def run(args: argparse.Namespace) -> int:
    """Run ``sensorlm embed`` from parsed arguments; returns the exit status (1 if a file failed).

    Args:
        args: the namespace `add_arguments` declared.
    """
    from sensorlm.inference.embed import embed

    texts = args.text
    if args.text_file:
        path = Path(args.text_file)
        if not path.is_file():
            raise FileNotFoundError(f"text file {path}: no such file")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    spec = None
    if args.exports:
        from sensorlm.data.device_import import load_import_spec

        spec = load_import_spec(args.spec)
    log = None if args.quiet else (lambda msg: print(f"[embed] {msg}", flush=True))
    report = embed(args.model, args.out, dataset=args.dataset, splits=args.split, parquet=args.parquet,
                   exports=args.exports, import_spec=spec, labels=args.labels, texts=texts,
                   batch_size=args.batch_size, num_actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                   gpus_per_actor=args.gpus_per_actor, tracking_uri=args.tracking_uri, log=log)
    if args.quiet:
        print(f"[embed] {report.summary()}", flush=True)
    for b in report.bad[:10]:
        where = " ".join(x for x in (b["shard"], b["key"], b["detail"]) if x)
        print(f"[embed] skipped {b['reason']}: {where}", flush=True)
    # Unreadable inputs are reported and skipped (exit 0); an unexpected error in a file is a failure.
    return 1 if any(b["reason"] == "error" for b in report.bad) else 0
