"""``sensorlm promote MODEL VERSION [--alias champion]`` (also `jobs/promote.py`): move an alias with the
promoter's MLflow login (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD, never on the command line);
exit 2 when refused, 1 when MLflow fails otherwise."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="registered model name, e.g. sensorlm")
    parser.add_argument("version", help="the version to promote")
    parser.add_argument("--alias", default="champion")
    parser.add_argument("--tracking-uri", default=None, help="default: MLFLOW_TRACKING_URI")


def run(args: argparse.Namespace) -> int:
    """``sensorlm promote MODEL VERSION``: 2 when refused, 1 when MLflow fails otherwise."""
    from sensorlm.tracking.integrity import ModelIntegrityError
    from sensorlm.tracking.promote import PromotionFailed, PromotionRefused, promote

    try:
        done = promote(args.model, args.version, args.alias, args.tracking_uri)
    except (PromotionRefused, ModelIntegrityError) as e:
        print(f"[sensorlm.promote] refused: {e}", flush=True)
        return 2
    except PromotionFailed as e:
        print(f"[sensorlm.promote] failed: {e}", flush=True)
        return 1
    before = f" (was version {done['previous']})" if done["previous"] else ""
    print(f"[sensorlm.promote] {done['model']} version {done['version']} is now @{done['alias']}{before}", flush=True)
    return 0
