"""``sensorlm caption MODEL --out DIR (--dataset DIR | --parquet ... | --exports ...)``: a captioning
(`sensorlm_coca`) model's captions of every window, with the captioner's reference caption beside
each, as Parquet files on Ray Data (resumable; docs/evaluation.md, "Captions")."""

from __future__ import annotations

import argparse

from sensorlm.cli.argtypes import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a sensorlm_coca model: models:/NAME/VERSION, models:/NAME@ALIAS or a package directory")
    p.add_argument("--out", required=True, help="output folder (path or URI): one Parquet file per input file")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--data", "--dataset", dest="dataset", help="prepared dataset (directory or URL with manifest.json)")
    src.add_argument("--parquet", nargs="+", metavar="PATH", help="wearable Parquet files or directories")
    src.add_argument("--exports", nargs="+", metavar="EXPORT", help="device exports (CSV/Parquet), imported first")
    p.add_argument("--split", nargs="+", help="dataset splits to caption (default: all)")
    p.add_argument("--spec", help="channel spec for --exports (YAML/JSON; default: from column headers)")
    p.add_argument("--labels", help="label file for --exports")
    p.add_argument("--method", choices=["greedy", "beam", "top_p"], default="greedy", help="decoding (default greedy)")
    p.add_argument("--max-len", type=positive_int, default=48, help="caption tokens at most (default 48)")
    p.add_argument("--num-beams", type=positive_int, default=4, help="beams of --method beam (default 4)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus of --method top_p (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of --method top_p (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="windows per model call (default 64)")
    p.add_argument("--actors", type=positive_int, default=1, help="actors, each with one model copy (default 1)")
    p.add_argument("--cpus-per-actor", type=float, default=1.0, help="CPUs per actor, also torch threads (default 1)")
    p.add_argument("--gpus-per-actor", type=float, default=0.0, help="GPUs per actor; > 0 runs on CUDA (default 0)")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI (default: MLFLOW_TRACKING_URI, else ./mlflow.db)")
    p.add_argument("--quiet", action="store_true", help="print only the summary and errors")


def run(args: argparse.Namespace) -> int:
    from sensorlm.inference.caption import CaptionOptions, caption

    spec = None
    if args.exports:
        from sensorlm.data.device_import import load_import_spec

        spec = load_import_spec(args.spec)
    generation = CaptionOptions(method=args.method, max_len=args.max_len, num_beams=args.num_beams, top_p=args.top_p,
                                seed=args.seed)
    log = None if args.quiet else (lambda msg: print(f"[caption] {msg}", flush=True))
    report = caption(args.model, args.out, generation=generation, log=log, dataset=args.dataset, splits=args.split,
                     parquet=args.parquet, exports=args.exports, import_spec=spec, labels=args.labels,
                     batch_size=args.batch_size, num_actors=args.actors, cpus_per_actor=args.cpus_per_actor,
                     gpus_per_actor=args.gpus_per_actor, tracking_uri=args.tracking_uri)
    if args.quiet:
        print(f"[caption] {report.summary()}", flush=True)
    for b in report.bad[:10]:
        where = " ".join(x for x in (b["shard"], b["key"], b["detail"]) if x)
        print(f"[caption] skipped {b['reason']}: {where}", flush=True)
    return 1 if any(b["reason"] == "error" for b in report.bad) else 0
