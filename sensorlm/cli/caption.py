"""``sensorlm caption MODEL --out DIR (--dataset DIR | --parquet ... | --exports ...)``: a captioning
(`sensorlm_coca`) model's captions of every window, with the captioner's reference caption beside
each, as Parquet files on Ray Data (resumable; docs/evaluation.md, "Captions")."""

from __future__ import annotations

import argparse

from sensorlm.cli.actors import add_input_and_actor_options, input_and_actor_fields, log_to, report_status
from sensorlm.cli.argtypes import positive_int


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a sensorlm_coca model: models:/NAME/VERSION, models:/NAME@ALIAS or a package directory")
    add_input_and_actor_options(p, "caption")
    p.add_argument("--method", choices=["greedy", "beam", "top_p"], default="greedy", help="decoding (default greedy)")
    p.add_argument("--max-len", type=positive_int, default=48, help="caption tokens at most (default 48)")
    p.add_argument("--num-beams", type=positive_int, default=4, help="beams of --method beam (default 4)")
    p.add_argument("--top-p", type=float, default=0.9, help="nucleus of --method top_p (default 0.9)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed of --method top_p (default 0)")


def run(args: argparse.Namespace) -> int:
    from sensorlm.inference.caption import CaptionOptions, caption

    generation = CaptionOptions(method=args.method, max_len=args.max_len, num_beams=args.num_beams, top_p=args.top_p,
                                seed=args.seed)
    report = caption(args.model, args.out, generation=generation, log=log_to("caption", args.quiet),
                     **input_and_actor_fields(args))
    return report_status(report, "caption", args.quiet)
