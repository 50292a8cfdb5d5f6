"""MLflow pyfunc for sensorlm model packages, logged as models-from-code (no pickle).

MLflow stores this file with the model and executes it at load time; it ends with
``mlflow.models.set_model(SensorLMPyfunc())``. The weights travel as the artifact "package"
(a directory written by `sensorlm.tracking.package.save_model_package`), and the sensorlm
source travels as ``code_paths`` so loading needs nothing of this project beyond what MLflow
stored (see `log_model_package`).

Inputs (a dict; MLflow's signature enforcement turns it into a one-row DataFrame, also accepted):

SensorLM family
    {"text": list[str]}                  -> (N, D) float32 L2-normalised text embeddings
    {"sensor": (N, T, C) raw units}      -> (N, D) float32 L2-normalised sensor embeddings;
                                            NaN = missing value (a minute with every channel
                                            NaN is a missing minute)
    both keys                            -> {"text_emb": (N1, D), "sensor_emb": (N2, D)}
SST family
    {"daily": (N, M*D, H, W) degrees C, NaN = missing (cloud / land / padded day),
     "land": optional (N, H, W) or (H, W), 1/True = land,
     "padded_days": optional (N, M*D), 1/True = slot beyond the month's length
                    (default: a day slot that is NaN at every pixel),
     "month": optional (N,) calendar month 1..12 of the last (target) month, or
     "month_of_year": optional (N, M) month of every slot, 0 = January}
                                         -> (N, H, W) float32 monthly map of the last month in
                                            degrees C (0 on land when "land" is given)
ProjectionCL family
    {"a": (N, dim_a)} and/or {"b": (N, dim_b)} features
                                         -> (N, D) float32 L2-normalised embeddings in the shared
                                            space ({"a_emb", "b_emb"} for both keys)

Bad inputs raise a one-line ValueError naming the key, the expected shape and the shape given
(a single day without the batch axis included). Through ``mlflow.pyfunc.load_model`` the
signature is enforced first: a key the signature does not know is dropped by MLflow with a
warning (the class itself rejects unknown keys), and a value that is no array at all (a string
for "sensor") fails MLflow's schema check. The signature declares array inputs as arrays of any
depth, so a wrong shape reaches our check and never makes MLflow print the whole input.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from pathlib import Path
from typing import Any, Mapping

import mlflow
import torch

from sensorlm.tracking.package import load_model_package, read_package_meta

# sensorlm/tracking/pyfunc.py -> sensorlm/ (from this file: `sensorlm.__file__` is None when an
# editable install resolves sensorlm as a namespace package).
SENSORLM_SOURCE_DIR = Path(__file__).resolve().parents[1]

# The runtime needs of the pyfunc; sensorlm itself travels as code_paths (it is not on PyPI).
RUNTIME_PACKAGES = ("mlflow", "torch", "numpy", "safetensors", "tokenizers", "pyyaml")


# ---------------------------------------------------------------------------------------------
# Input coercion


def _input_mapping(model_input: Any) -> dict[str, Any]:
    """The request as {key: batch value}; accepts a dict or the DataFrame MLflow builds from one."""
    if isinstance(model_input, Mapping):
        return dict(model_input)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas ships with mlflow
        pd = None
    if pd is not None and isinstance(model_input, pd.DataFrame):
        out: dict[str, Any] = {}
        for col in model_input.columns:
            cells = [v for v in model_input[col].tolist() if not _is_null(v)]
            if not cells:
                continue
            if len(cells) == 1:
                out[str(col)] = cells[0]  # the whole batch in one cell (signature enforcement)
            else:
                out[str(col)] = cells  # one sample per row
        return out
    raise ValueError(
        f"model input: expected a dict of named inputs (or a DataFrame of them), got {type(model_input).__name__}"
    )


def _is_null(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


# ---------------------------------------------------------------------------------------------
# The pyfunc


class SensorLMPyfunc(mlflow.pyfunc.PythonModel):
    """Serves a sensorlm model package of any family with a serving handler.

    The package directory comes from ``context.artifacts["package"]``; its model_config.json
    names the family, whose record names the input handler (`sensorlm.tracking.serving`).
    """

    # Inputs are a dict of arrays, which MLflow's type-hint validation cannot describe; the
    # signature does the checking. This flag (MLflow's own, used by ChatModel) skips the
    # type-hint wrapper and its "add type hints" warning on every load.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        artifacts = getattr(context, "artifacts", None) or {}
        if "package" not in artifacts:
            raise ValueError(f"model artifacts: expected an artifact named 'package', got {sorted(artifacts)}")
        self.load_package(artifacts["package"])

    def load_package(self, package_dir: str | Path) -> None:
        """Read a package directory (what load_context does with the "package" artifact).

        Args:
            package_dir: directory written by `save_model_package`.
        """
        serving = _serving(read_package_meta(package_dir), package_dir)
        package = load_model_package(package_dir)
        self.handler = serving(package, package_dir)
        self.package = package
        self.family = package.family
        self.model = package.model

    def to(self, device: str | torch.device) -> "SensorLMPyfunc":
        """Run the SensorLM model on `device` (batch embedding on a GPU); inputs move there and the
        embeddings come back as CPU numpy arrays.

        Args:
            device: a torch device, e.g. "cpu" or "cuda".
        """
        if not hasattr(self.handler, "to"):
            raise ValueError(f"SensorLMPyfunc.to: only SensorLM models move devices here, not {self.family!r}")
        self.handler.to(device)
        return self

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        """Embeddings (SensorLM) or monthly maps (SST); see the module docstring for the keys.

        Args:
            context: MLflow's model context (unused; the package was read in load_context).
            model_input: a dict of named inputs, or the one-row DataFrame MLflow makes of it.
            params: unused.
        """
        if not hasattr(self, "handler"):
            raise RuntimeError("SensorLMPyfunc.predict called before load_context")
        data = _input_mapping(model_input)
        with torch.inference_mode():
            return self.handler.predict(data)

    def __getattr__(self, name: str):
        # the family handler's helpers (embed_text, normalise_sensor, ...) on the pyfunc itself
        if name != "handler" and "handler" in self.__dict__:
            return getattr(self.__dict__["handler"], name)
        raise AttributeError(name)


def _serving(meta: Mapping[str, Any], package_dir) -> type:
    """The input handler of a package's family (its record in `sensorlm.families`)."""
    from sensorlm.families import FAMILIES, resolve

    family = FAMILIES.get(meta["family"])
    if family is None or not family.serving:
        raise ValueError(
            f"model package {package_dir}: family {meta['family']!r} (preset {meta['preset']!r}) has no "
            f"pyfunc; supported: {[f.name for f in FAMILIES.values() if f.serving]}"
        )
    return resolve(family.serving)


# ---------------------------------------------------------------------------------------------
# Logging


def _base_version(version: str) -> str:
    # "2.13.0+cpu" -> "2.13.0": local version labels are not installable from an index.
    return re.split(r"\+", version, maxsplit=1)[0]


def pip_requirements() -> list[str]:
    """Pinned runtime requirements from the installed versions (``+cpu`` style suffixes dropped)."""
    reqs = []
    for name in RUNTIME_PACKAGES:
        try:
            reqs.append(f"{name}=={_base_version(importlib.metadata.version(name))}")
        except importlib.metadata.PackageNotFoundError:
            raise RuntimeError(f"cannot pin runtime requirement {name!r}: it is not installed") from None
    return reqs


def _signature_and_example(package_dir: Path, meta: Mapping[str, Any]) -> tuple[Any, Any]:
    import json

    stats_path = package_dir / "data_stats.json"
    stats = json.loads(stats_path.read_text()) if stats_path.is_file() else None
    return _serving(meta, package_dir).signature_and_example(meta["config"], stats)


def log_model_package(
    package_dir: str | Path,
    *,
    registered_model_name: str | None = None,
    name: str = "model",
    input_example: Any = "auto",
    signature: Any = "auto",
    check_example: bool = True,
):
    """Log a model package as an MLflow pyfunc (models-from-code) to the active run.

    The model is this file plus the package as the artifact "package". ``code_paths`` carries the
    whole ``sensorlm`` source tree (a few hundred KB) because sensorlm is not installable from
    an index; ``pip_requirements`` pins the installed torch / numpy / safetensors / tokenizers /
    mlflow / pyyaml (``+cpu`` suffixes dropped), instead of MLflow's inference, which picks up
    Ray's bundled packages.

    Args:
        package_dir: directory written by `save_model_package`.
        registered_model_name: also register the model under this name (None: don't).
        name: the logged model's name.
        input_example: "auto" builds a one-sample example from the package (left out when it
            would exceed 200k values), None logs none, anything else is used as given.
        signature: "auto" for the family's signature (optional inputs, see the module
            docstring), None for none, or a ModelSignature.
        check_example: run the example through the pyfunc here first, so a package that cannot
            serve fails before it is logged (MLflow only warns).

    Returns:
        MLflow's ModelInfo.
    """
    package_dir = Path(package_dir).resolve()
    meta = read_package_meta(package_dir)
    auto_signature, auto_example = _signature_and_example(package_dir, meta)
    if isinstance(signature, str) and signature == "auto":
        signature = auto_signature
    if isinstance(input_example, str) and input_example == "auto":
        input_example = auto_example
    if check_example and input_example is not None:
        probe = SensorLMPyfunc()
        probe.load_package(package_dir)
        probe.predict(None, input_example)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).resolve()),
        artifacts={"package": str(package_dir)},
        code_paths=[str(SENSORLM_SOURCE_DIR)],
        pip_requirements=pip_requirements(),
        signature=signature,
        input_example=input_example,
        registered_model_name=registered_model_name,
    )


mlflow.models.set_model(SensorLMPyfunc())
