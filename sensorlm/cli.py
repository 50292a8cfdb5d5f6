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


COMMANDS: dict[str, Command] = {
    "prepare-data": Command(add_prepare_data_args, run_prepare_data, "Parquet (or generated data) -> shards"),
}


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
