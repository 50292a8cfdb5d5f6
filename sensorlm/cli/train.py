"""``sensorlm train --config PRESET_OR_YAML [key=value ...]`` (also `jobs/train_*.py`, which set ``--task``)."""

from __future__ import annotations

import argparse
import os
import sys


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="sensorlm_tiny", help="configs/NAME.yaml, a YAML path, or NAME")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=3e-4 scaling.zero_stage=3")
    p.add_argument("--task", help="refuse a config of another task (what jobs/train_*.py pass)")
    p.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, then exit")
    p.add_argument("--verbose", action="store_true", help="Ray's own INFO logs too")


def run(args: argparse.Namespace) -> int:
    """Train; a failure the user can fix is one line on stderr and exit code 2 (a failed run: 1)."""
    from sensorlm.typed_config import ConfigError
    from sensorlm.training.config import load_train_config

    cfg = load_train_config(args.config, args.overrides)
    if args.task and cfg.task != args.task:
        raise ConfigError(f"this job trains task {args.task!r}, but the config has task {cfg.task!r}")
    if args.dry_run:
        import yaml

        from sensorlm.typed_config import redact, to_dict

        print(yaml.safe_dump(redact(to_dict(cfg)), sort_keys=False))
        return 0
    if args.verbose:
        os.environ["SENSORLM_VERBOSE"] = "1"
    from sensorlm.tracking.mlflow_utils import ui_hint
    from sensorlm.training.trainer import RunFailed, train

    try:
        result = train(cfg)
    except RunFailed as e:
        print(f"[sensorlm] run failed: {e}", file=sys.stderr)
        return 1
    print(f"[sensorlm] done: {', '.join(f'{k}={v:.4f}' for k, v in result.metrics.items() if isinstance(v, float))}")
    if result.model_uri:
        print(f"[sensorlm] registered {result.model_uri} (MLflow run {result.run_id})")
    if result.tracking_uri:
        print(f"[sensorlm] look at it: {ui_hint(result.tracking_uri)}")
    return 0
