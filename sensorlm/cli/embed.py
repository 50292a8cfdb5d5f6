"""``sensorlm embed MODEL --out DIR (--dataset DIR | --parquet ... | --exports ... | --text ...)`` (also
`jobs/embed.py`): a registered model over data or prompts -> Parquet embeddings on Ray Data (docs/embed.md)."""

from __future__ import annotations

import argparse
from pathlib import Path

from sensorlm.cli.actors import add_input_and_actor_options, input_and_actor_fields, log_to, report_status


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="models:/name/version, models:/name@alias, or a model package directory")
    src = add_input_and_actor_options(p, "embed")
    src.add_argument("--text", nargs="+", metavar="PROMPT", help="text prompts")
    src.add_argument("--text-file", help="text prompts, one per line")


def run(args: argparse.Namespace) -> int:
    """Run ``sensorlm embed``; the exit status is 1 if a file failed."""
    from sensorlm.inference.embed import embed

    texts = args.text
    if args.text_file:
        path = Path(args.text_file)
        if not path.is_file():
            raise FileNotFoundError(f"text file {path}: no such file")
        texts = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    report = embed(args.model, args.out, log=log_to("embed", args.quiet), texts=texts, **input_and_actor_fields(args))
    return report_status(report, "embed", args.quiet)
