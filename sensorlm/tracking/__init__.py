"""Everything MLflow: model packages, the pyfunc, tracking and registry helpers.

`package` needs only torch and safetensors; the MLflow-bound modules are imported on first use
so that training workers can write packages without importing MLflow.
"""

from __future__ import annotations

import importlib
from typing import Any

from sensorlm.tracking.package import ModelPackage, load_model_package, save_model_package

_LAZY = {
    "log_model_package": "sensorlm.tracking.pyfunc",
    "SensorLMPyfunc": "sensorlm.tracking.pyfunc",
    "resolve_tracking_uri": "sensorlm.tracking.mlflow_utils",
    "setup_experiment": "sensorlm.tracking.mlflow_utils",
    "log_config_params": "sensorlm.tracking.mlflow_utils",
    "run_tags": "sensorlm.tracking.mlflow_utils",
    "register_version": "sensorlm.tracking.mlflow_utils",
    "get_alias_version": "sensorlm.tracking.mlflow_utils",
    "set_alias": "sensorlm.tracking.mlflow_utils",
    "champion_metric": "sensorlm.tracking.mlflow_utils",
    "promote": "sensorlm.tracking.promote",
    "load_model": "sensorlm.tracking.loading",
    "model_digest": "sensorlm.tracking.integrity",
}

__all__ = ["ModelPackage", "load_model_package", "save_model_package", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'sensorlm.tracking' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
