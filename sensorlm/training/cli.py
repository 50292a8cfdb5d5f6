"""Command line of the training jobs: ``--config PRESET_OR_YAML`` plus ``key=value`` overrides."""

from __future__ import annotations

import argparse
import sys

from sensorlm.config import ConfigError, redact
from sensorlm.training.config import load_train_config


def main(argv: list[str] | None = None, default_config: str = "sensorlm_tiny", task: str | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train a sensorlm model on Ray Train + DeepSpeed.")
    parser.add_argument("--config", default=default_config, help="configs/NAME.yaml, a YAML path, or NAME")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. optim.lr=3e-4 scaling.zero_stage=3")
    parser.add_argument("--dry-run", action="store_true", help="validate and print the resolved config, then exit")
    args = parser.parse_args(argv)
    try:
        cfg = load_train_config(args.config, args.overrides)
        if task and cfg.task != task:
            raise ConfigError(f"this job trains task {task!r}, but the config has task {cfg.task!r}")
    except ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    if args.dry_run:
        import yaml

        from sensorlm.config import to_dict

        print(yaml.safe_dump(to_dict(cfg), sort_keys=False))
        return 0
    from sensorlm.training.trainer import RunFailed, train

    try:
        result = train(cfg)
    except ConfigError as e:  # config against the data, found once the manifest is read
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:
        print(f"[sensorlm] run failed: {e}", file=sys.stderr)
        return 1
    print(f"[sensorlm] done: {', '.join(f'{k}={v:.4f}' for k, v in result.metrics.items() if isinstance(v, float))}")
    if result.model_uri:
        print(f"[sensorlm] registered {result.model_uri} (MLflow run {result.run_id})")
    if result.tracking_uri:
        print(f"[sensorlm] look at it: mlflow ui --backend-store-uri {redact(result.tracking_uri)}")
    return 0
