"""The ``sensorlm`` console command: one subcommand per entry in `COMMANDS`.

Adding a subcommand is one line: ``COMMANDS["name"] = Command(add_arguments, run, "help")`` where
``add_arguments(parser)`` declares its options and ``run(args) -> int`` does the work (import heavy
modules inside ``run`` so that ``sensorlm --help`` stays fast).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Callable, NamedTuple, Sequence

from sensorlm.errors import run_guarded


class Command(NamedTuple):
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    help: str


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _size(text: str) -> int:
    """Bytes, with an optional K/M/G suffix (powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().removesuffix("b").removesuffix("i")
    mult = units.get(t[-1:], 1)
    if t[-1:] in units:
        t = t[:-1]
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a size such as 268435456 or 256M, got {text!r}") from None
    if value < 4096:
        raise argparse.ArgumentTypeError(f"shard size must be at least 4096 bytes, got {text!r}")
    return value


def add_prepare_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=["wearable", "sst"], help="which dataset")
    p.add_argument("--out", required=True, help="output dataset directory (shards, manifest.json, tokenizer.json)")
    p.add_argument(
        "--preset",
        default="tiny",
        help="synthetic generator preset (wearable: tiny/small/paper, sst: tiny/base); also sets defaults",
    )
    p.add_argument(
        "--parquet", nargs="+", metavar="FILE", help="convert these Parquet files instead of generating data"
    )
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--max-count", type=_positive_int, help="maximum samples per shard (default by preset)")
    p.add_argument("--max-bytes", type=_size, default="256M", help="maximum shard size, e.g. 256M (default)")
    p.add_argument("--dtype", choices=["float32", "float16"], default="float32", help="float storage in shards")
    p.add_argument("--vocab-size", type=_positive_int, help="tokenizer vocabulary (default by preset, else 32000)")
    p.add_argument("--text-len", type=_positive_int, help="caption tokens recorded as the loader default")
    p.add_argument("--verify", action="store_true", help="re-read every shard and check its sha256 at the end")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier dataset in --out written with other inputs or settings (a folder "
                        "holding files prepare-data did not write is refused all the same)")
    p.add_argument("--quiet", action="store_true", help="print only errors")


def run_prepare_data(args: argparse.Namespace) -> int:
    from sensorlm.data.prepare import prepare_dataset
    from sensorlm.data.shards import verify_manifest

    log = None if args.quiet else (lambda msg: print(f"[prepare-data] {msg}", flush=True))
    manifest = prepare_dataset(
        args.kind,
        args.out,
        preset=args.preset,
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


def add_import_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("exports", nargs="+", metavar="EXPORT",
                   help="device files: long-format CSV/Parquet or a vendor format (see --format)")
    from sensorlm.data.formats import known_formats

    p.add_argument("--format", default="auto", metavar="NAME",
                   help=f"auto (each file's own, by content and extension; logged), {', '.join(known_formats())} "
                        "(docs/data.md, 'Device formats')")
    p.add_argument("--out", required=True, help="new dataset directory (shards, manifest.json, tokenizer.json)")
    p.add_argument("--spec", help="channel spec (YAML/JSON); default: channels from 'name[unit]' column headers")
    p.add_argument("--labels", help="label intervals (subject,start,end,label) or day labels (subject,date,label)")
    p.add_argument("--window-minutes", type=_positive_int, help="window length (default 1440: a calendar day)")
    p.add_argument("--stride-minutes", type=_positive_int, help="window stride (default: the window length)")
    p.add_argument("--grid-seconds", type=_positive_int, help="resampling grid (default 60)")
    p.add_argument("--min-coverage", type=float, help="drop windows with less data than this fraction (default 0.5)")
    p.add_argument("--main-label-min-fraction", type=float,
                   help="a window's main label must cover this fraction of it (default 0: the most-covering label)")
    p.add_argument("--prompt-template", help="zero-shot prompt with a {label} placeholder (default 'A day with {label}.')")
    p.add_argument("--split-by", choices=["auto", "subject", "day"], help="validation split unit (default auto)")
    p.add_argument("--folds", type=_positive_int,
                   help="deal the split units into K folds (splits fold0..fold{K-1}) for k-fold validation: "
                        "train with data.fold=k/K (default: one train/val split)")
    p.add_argument("--max-count", type=_positive_int, default=64, help="maximum samples per shard (default 64)")
    p.add_argument("--vocab-size", type=_positive_int, default=1024, help="tokenizer vocabulary (default 1024)")
    p.add_argument("--text-len", type=_positive_int, help="caption tokens recorded as the loader default")
    p.add_argument("--quiet", action="store_true", help="print only errors")


def run_import(args: argparse.Namespace) -> int:
    from sensorlm.config import ConfigError
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
    import_device_export(args.exports, args.out, spec=spec, labels=args.labels, log=log, fmt=args.format,
                         max_count=args.max_count, vocab_size=args.vocab_size, text_len=args.text_len)
    if not args.quiet:
        print(f"[import] done: {args.out} (report: {args.out}/import_report.json)", flush=True)
    return 0


def _lazy(module: str, add: str, run: str, *bound) -> Command:
    """A subcommand whose module is imported only when used (``sensorlm --help`` stays fast)."""
    import importlib

    def add_arguments(p: argparse.ArgumentParser) -> None:
        getattr(importlib.import_module(module), add)(p, *bound)

    def run_command(args: argparse.Namespace) -> int:
        return getattr(importlib.import_module(module), run)(args)

    return add_arguments, run_command


def add_export_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a SensorLM: models:/NAME/VERSION, models:/NAME@ALIAS or a package directory")
    p.add_argument("--dataset", required=True, help="wearable dataset directory (shards + manifest + tokenizer)")
    p.add_argument("--out", required=True, help="the new paired-embedding folder (what ProjectionCL trains on)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")


def run_export(args: argparse.Namespace) -> int:
    from sensorlm.data.embedding_pairs import export_sensorlm_pairs
    from sensorlm.tracking.resolve import resolve_model
    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    package = resolve_model(args.model, resolve_tracking_uri(args.tracking_uri)).package
    out = export_sensorlm_pairs(package, args.dataset, args.out)
    print(f"[export] wrote {out}; train ProjectionCL on it: sensorlm train --config projection_cl_tiny "
          f"data.path={out} data.synthetic=null", flush=True)
    return 0


COMMANDS: dict[str, Command] = {
    "train": Command(*_lazy("sensorlm.training.cli", "add_train_args", "run_train"),
                     "train a model (any family) on Ray Train + DeepSpeed; MLflow run and registered model"),
    "sweep": Command(*_lazy("sensorlm.tuning.sweep", "add_sweep_args", "run_sweep_command"),
                     "Ray Tune over the trainer: nested MLflow runs, champion on held-out data"),
    "evaluate": Command(*_lazy("sensorlm.evaluation.evaluate", "add_evaluate_args", "run_evaluate"),
                        "evaluate a registered model (models:/NAME/VERSION or @ALIAS): metrics and plots"),
    "prepare-data": Command(add_prepare_data_args, run_prepare_data, "Parquet (or generated data) -> shards"),
    "import": Command(add_import_args, run_import, "device exports (CSV/Parquet) + labels -> captioned dataset"),
    "export": Command(add_export_args, run_export, "a SensorLM's sensor/caption embeddings -> paired dataset"),
    "embed": Command(*_lazy("sensorlm.inference.embed", "add_arguments", "run"),
                     "a registered model over data or prompts -> Parquet embeddings (Ray Data)"),
    "promote": Command(*_lazy("sensorlm.tracking.promote", "add_promote_args", "run_promote"),
                       "move an alias (@champion) to a version, with the promoter's login"),
}


def build_parser(prog: str = "sensorlm", only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with `only`, just that subcommand gets its options (the others
    are listed by name and help), so no other command's modules are imported."""
    parser = argparse.ArgumentParser(prog=prog, description="sensorlm: sensor foundation models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        if only is None or name == only:
            cmd.add_arguments(p)
            if "--verbose" not in p._option_string_actions:
                p.add_argument("--verbose", action="store_true", help="tracebacks of internal errors")
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "sensorlm") -> int:
    """Run a subcommand (see `COMMANDS`).

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        prog: program name shown in usage messages.
    """
    os.environ.setdefault("SENSORLM_T0", str(time.time()))  # start-up time is measured from here
    argv = list(sys.argv[1:] if argv is None else argv)
    # `sensorlm --help` and each command's own options without importing torch for the others
    chosen = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(prog, only=chosen if chosen in COMMANDS else "")
    args, extra = parser.parse_known_args(argv)
    # key=value overrides may follow options too (`evaluate MODEL --dry-run batch_size=16`):
    # argparse takes positionals in one run only
    if extra and hasattr(args, "overrides") and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = list(args.overrides or []) + extra
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    verbose = bool(getattr(args, "verbose", False) or os.environ.get("SENSORLM_VERBOSE"))
    return run_guarded(lambda: args._run(args), f"{prog} {args.command}", verbose)


if __name__ == "__main__":
    sys.exit(main())
