"""Small pieces every evaluation module uses."""

from __future__ import annotations

import re

from sensorlm.tracking.resolve import RUN_ID  # noqa: F401 (evaluation reads run ids too)
# MLflow accepts these characters in metric names and tag keys (mlflow.utils.validation).
MLFLOW_BAD_CHARS = re.compile(r"[^\w.\- :/]")


def say(msg: str) -> None:
    print(f"[sensorlm.evaluate] {msg}", flush=True)


def metric_key(name: str) -> str:
    """``recall@1`` -> ``recall_at_1``; characters MLflow refuses -> ``_``."""
    return MLFLOW_BAD_CHARS.sub("_", name.replace("@", "_at_"))


def is_local(data: str) -> bool:
    return "://" not in data and not data.startswith("pipe:")
