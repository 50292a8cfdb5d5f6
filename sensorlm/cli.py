"""The ``sensorlm`` console command: one subcommand per entry in `COMMANDS`.

Adding a subcommand is one line: ``COMMANDS["name"] = Command(add_arguments, run, "help")`` where
``add_arguments(parser)`` declares its options and ``run(args) -> int`` does the work (import heavy
modules inside ``run`` so that ``sensorlm --help`` stays fast).
"""

from __future__ import annotations

import argparse
import sys
from typing import Callable, NamedTuple, Sequence


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
    p.add_argument("exports", nargs="+", metavar="EXPORT", help="device export files (CSV or Parquet, long format)")
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
    except ConfigError as exc:
        raise ValueError(f"channel spec: {exc}") from None
    log = None if args.quiet else (lambda msg: print(f"[import] {msg}", flush=True))
    import_device_export(args.exports, args.out, spec=spec, labels=args.labels, log=log,
                         max_count=args.max_count, vocab_size=args.vocab_size, text_len=args.text_len)
    if not args.quiet:
        print(f"[import] done: {args.out} (report: {args.out}/import_report.json)", flush=True)
    return 0


COMMANDS: dict[str, Command] = {
    "prepare-data": Command(add_prepare_data_args, run_prepare_data, "Parquet (or generated data) -> shards"),
    "import": Command(add_import_args, run_import, "device exports (CSV/Parquet) + labels -> captioned dataset"),
}

# Subcommands that live in their own module (`add_arguments(parser)` / `run(args)` there).
from sensorlm.inference import embed as _embed  # noqa: E402 (light: heavy imports happen in run)

COMMANDS["embed"] = Command(_embed.add_arguments, _embed.run, "a SensorLM model over data or prompts -> embeddings")


def build_parser(prog: str = "sensorlm") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="sensorlm: sensor foundation models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help)
        cmd.add_arguments(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "sensorlm") -> int:
    """Run a subcommand; bad input (a ValueError or a missing file) exits with status 2 and a message.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).
        prog: program name shown in usage messages.
    """
    args = build_parser(prog).parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
