"""The ``sensorlm`` console command: one subcommand per module of this package.

Adding a subcommand is one module ``sensorlm/cli/NAME.py`` with ``add_arguments(parser)`` (its
options) and ``run(args) -> int`` (the work; heavy modules imported inside it so that
``sensorlm --help`` stays fast) and one line in `COMMANDS`. The scripts under ``jobs/`` and
``tune/`` are ``main([command, *argv])``; every command fails through `sensorlm.errors.run_guarded`.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Sequence

from sensorlm.errors import run_guarded


# name -> (module under sensorlm.cli, help). Each module has add_arguments(parser) and run(args) -> int
# and imports its heavy dependencies inside run, so `sensorlm --help` imports no torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a model (any family) on Ray Train + DeepSpeed; MLflow run and registered model"),
    "sweep": ("sweep", "Ray Tune over the trainer: nested MLflow runs, champion on held-out data"),
    "evaluate": ("evaluate", "evaluate a registered model (models:/NAME/VERSION or @ALIAS): metrics and plots"),
    "prepare-data": ("prepare_data", "Parquet (or generated data) -> shards"),
    "import": ("import_exports", "device exports (CSV/Parquet) + labels -> captioned dataset"),
    "export": ("export", "a SensorLM's sensor/caption embeddings -> paired dataset"),
    "embed": ("embed", "a registered model over data or prompts -> Parquet embeddings (Ray Data)"),
    "caption": ("caption", "a captioning (sensorlm_coca) model over data -> Parquet captions (Ray Data)"),
    "promote": ("promote", "move an alias (@champion) to a version, with the promoter's login"),
}


def command_module(name: str):
    """The module of command `name` (``sensorlm.cli.<module>``)."""
    return importlib.import_module(f"sensorlm.cli.{COMMANDS[name][0]}")


def build_parser(prog: str = "sensorlm", only: str | None = None) -> argparse.ArgumentParser:
    """The command-line parser; with `only`, just that subcommand gets its options (the others
    are listed by name and help), so no other command's modules are imported."""
    parser = argparse.ArgumentParser(prog=prog, description="sensorlm: sensor foundation models")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if only is None or name == only:
            module = command_module(name)
            module.add_arguments(p)
            if "--verbose" not in p._option_string_actions:
                p.add_argument("--verbose", action="store_true", help="tracebacks of internal errors")
            p.set_defaults(_run=module.run)
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
