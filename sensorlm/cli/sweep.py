"""``sensorlm sweep --config PRESET_OR_YAML [key=value ...]`` (also `tune/sweep_*.py`, which set ``--task``):
exit 0 when complete, 130 when interrupted (resume with the same command)."""

from __future__ import annotations

import argparse
import os


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default="siglip_tiny", help="configs/sweeps/NAME.yaml, a YAML path, or NAME")
    parser.add_argument(
        "overrides", nargs="*",
        help="key=value overrides of the sweep config (num_samples=8, searcher=optuna); base.KEY=VALUE overrides "
             "the trials' training config (base.steps=100)",
    )
    parser.add_argument("--task", help="refuse a sweep config of another task (what tune/sweep_*.py pass)")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--resume", dest="resume", action="store_true", default=None,
                       help="the sweep folder must exist; continue it")
    group.add_argument("--no-resume", dest="resume", action="store_false",
                       help="refuse to continue an existing sweep of the same name")
    parser.add_argument("--dry-run", action="store_true", help="validate, print the resolved config and exit")
    parser.add_argument("--verbose", action="store_true", help="Ray's own INFO logs too")


def run(args: argparse.Namespace) -> int:
    import yaml

    from sensorlm.typed_config import ConfigError, redact, to_dict
    from sensorlm.tracking.mlflow_utils import ui_hint
    from sensorlm.tuning.space import load_sweep_config
    from sensorlm.tuning.sweep import make_task, run_sweep

    cfg = load_sweep_config(args.config, args.overrides)
    if args.task and cfg.task != args.task:
        raise ConfigError(f"this entry point sweeps task {args.task!r}, but the config has task {cfg.task!r}")
    if args.dry_run:
        make_task(cfg)  # the base training config and the space, checked together
        print(yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False))
        print(f"# {cfg.expected_trials()} trials")
        return 0
    if args.verbose:
        os.environ["SENSORLM_VERBOSE"] = "1"
    result = run_sweep(cfg, resume=args.resume)
    if result.complete:
        print(f"[sensorlm.sweep] look at it: {ui_hint(result.tracking_uri)}")
    return 0 if result.complete else 130
