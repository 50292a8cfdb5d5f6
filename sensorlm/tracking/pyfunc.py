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

Bad inputs raise ValueError naming the key and the expected shape. Through
``mlflow.pyfunc.load_model`` the signature is enforced first: a key the signature does not
know is dropped by MLflow with a warning (the class itself rejects unknown keys), and values
of the wrong type fail MLflow's schema check.
"""

from __future__ import annotations

import importlib.metadata
import math
import re
from pathlib import Path
from typing import Any, Mapping

import mlflow
import numpy as np
import torch

from sensorlm.tracking.package import (
    load_model_package,
    read_package_meta,
    sensor_normalisation,
    sst_normalisation,
)

SUPPORTED_FAMILIES = ("sensorlm", "sst")
# sensorlm/tracking/pyfunc.py -> sensorlm/ (from this file: `sensorlm.__file__` is None when an
# editable install resolves sensorlm as a namespace package).
SENSORLM_SOURCE_DIR = Path(__file__).resolve().parents[1]
SENSORLM_KEYS = ("text", "sensor")
SST_KEYS = ("daily", "land", "padded_days", "month", "month_of_year")
# Input examples are stored as JSON beside the model and run once when logging; bigger
# examples (sst_base is 1.5M values per sample) are left out.
MAX_EXAMPLE_VALUES = 200_000
EXAMPLE_CAPTION = "A day with a 30 minute morning run and 7 hours of sleep."

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


def _check_keys(data: Mapping[str, Any], allowed: tuple[str, ...], family: str) -> None:
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ValueError(
            f"model input: unknown key(s) {unknown} for a {family} model (accepted keys: {list(allowed)})"
        )


def _float_array(value: Any, name: str, ndim: int, meaning: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise ValueError(f"input {name!r}: expected numbers {meaning}, could not convert: {e}") from None
    if arr.ndim != ndim:
        raise ValueError(f"input {name!r}: expected shape {meaning}, got {arr.shape}")
    if np.isinf(arr).any():
        raise ValueError(f"input {name!r}: {int(np.isinf(arr).sum())} infinite values (use NaN for missing)")
    return arr


def _texts(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"input 'text': expected a list of strings, got {type(value).__name__}")
    for i, text in enumerate(value):
        if not isinstance(text, str):
            raise ValueError(f"input 'text'[{i}]: expected a string, got {type(text).__name__}")
    return list(value)


def _mask_array(value: Any, name: str, shape: tuple[int, ...], meaning: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype == object or not (arr.dtype == bool or np.issubdtype(arr.dtype, np.number)):
        raise ValueError(f"input {name!r}: expected 0/1 or bool values {meaning}, got dtype {arr.dtype}")
    if tuple(arr.shape) != shape:
        raise ValueError(f"input {name!r}: expected shape {shape} {meaning}, got {tuple(arr.shape)}")
    if arr.dtype != bool:
        if np.isnan(arr.astype(np.float64)).any() or not np.isin(arr, (0, 1)).all():
            raise ValueError(f"input {name!r}: values must be 0/1 or bool {meaning}")
    return arr.astype(bool)


# ---------------------------------------------------------------------------------------------
# The pyfunc


class SensorLMPyfunc(mlflow.pyfunc.PythonModel):
    """Serves a sensorlm model package (SensorLM embeddings or SST monthly maps).

    The package directory comes from ``context.artifacts["package"]``; its model_config.json
    names the family, which picks the input handling (see the module docstring).
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
        meta = read_package_meta(package_dir)
        if meta["family"] not in SUPPORTED_FAMILIES:
            raise ValueError(
                f"model package {package_dir}: family {meta['family']!r} (preset {meta['preset']!r}) has no "
                f"pyfunc; supported: {list(SUPPORTED_FAMILIES)}"
            )
        package = load_model_package(package_dir)
        if package.data_stats is None:
            raise FileNotFoundError(
                f"model package {package_dir}: missing data_stats.json (needed to normalise inputs)"
            )
        self.package = package
        self.family = package.family
        self.model = package.model
        self.device = torch.device("cpu")
        cfg = package.config
        if self.family == "sensorlm":
            if package.tokenizer is None:
                raise FileNotFoundError(f"model package {package_dir}: missing tokenizer.json (SensorLM text input)")
            mean, std = sensor_normalisation(package.data_stats)
            # The same float32 arithmetic as sensorlm.data.loader, so served inputs match training.
            self.sensor_mean = np.asarray(mean, np.float32)
            self.sensor_inv_std = (1.0 / np.asarray(std, np.float64)).astype(np.float32)
            self.sample_shape = (int(cfg["sensor"]["input_len"]), int(cfg["sensor"]["num_channels"]))
            self.context_len = int(cfg["text"]["context_len"])
        else:
            self.sst_mean, self.sst_std = sst_normalisation(package.data_stats)
            self.sst_mean32 = np.float32(self.sst_mean)
            self.sst_inv_std32 = np.float32(1.0 / self.sst_std)
            self.months = int(cfg["months"])
            self.days = self.months * int(cfg["days_per_month"])
            self.grid = (int(cfg["height"]), int(cfg["width"]))

    def to(self, device: str | torch.device) -> "SensorLMPyfunc":
        """Run the SensorLM model on `device` (batch embedding on a GPU); inputs move there and the
        embeddings come back as CPU numpy arrays.

        Args:
            device: a torch device, e.g. "cpu" or "cuda".
        """
        if self.family != "sensorlm":
            raise ValueError(f"SensorLMPyfunc.to: only SensorLM models move devices here, not {self.family!r}")
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def predict(self, context, model_input, params: dict[str, Any] | None = None):
        """Embeddings (SensorLM) or monthly maps (SST); see the module docstring for the keys.

        Args:
            context: MLflow's model context (unused; the package was read in load_context).
            model_input: a dict of named inputs, or the one-row DataFrame MLflow makes of it.
            params: unused.
        """
        if not hasattr(self, "model"):
            raise RuntimeError("SensorLMPyfunc.predict called before load_context")
        data = _input_mapping(model_input)
        with torch.inference_mode():
            if self.family == "sensorlm":
                return self._predict_sensorlm(data)
            return self._predict_sst(data)

    # SensorLM -----------------------------------------------------------------------------

    def _predict_sensorlm(self, data: dict[str, Any]) -> np.ndarray | dict[str, np.ndarray]:
        _check_keys(data, SENSORLM_KEYS, "SensorLM")
        if not data:
            raise ValueError(f"model input: give at least one of {list(SENSORLM_KEYS)}")
        out = {}
        if "text" in data:
            out["text_emb"] = self.embed_text(_texts(data["text"]))
        if "sensor" in data:
            out["sensor_emb"] = self.embed_sensor(data["sensor"])
        return out if len(out) == 2 else next(iter(out.values()))

    def embed_text(self, texts: list[str]) -> np.ndarray:
        """(N, D) L2-normalised text embeddings of captions."""
        if not texts:
            return np.zeros((0, self.model.embed_dim), np.float32)
        ids, mask = self.package.tokenizer.encode(texts, self.context_len)
        emb = self.model.encode_text(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        return emb.float().cpu().numpy()

    def normalise_sensor(self, raw: Any) -> tuple[np.ndarray, np.ndarray]:
        """Raw (N, T, C) values with NaN = missing -> normalised values (0 where missing) and the
        (N, T) missing-minute mask (True where every channel is NaN)."""
        T, C = self.sample_shape
        x = _float_array(raw, "sensor", 3, f"(N, T={T}, C={C}) in raw units, NaN = missing")
        if tuple(x.shape[1:]) != (T, C):
            raise ValueError(f"input 'sensor': expected shape (N, {T}, {C}), got {x.shape}")
        nan = np.isnan(x)
        missing = nan.all(axis=2)
        x = np.where(nan, np.float32(0.0), (x - self.sensor_mean) * self.sensor_inv_std)
        return x, missing

    def embed_sensor(self, raw: Any) -> np.ndarray:
        """(N, D) L2-normalised sensor embeddings of raw (N, T, C) sensor days."""
        x, missing = self.normalise_sensor(raw)
        if x.shape[0] == 0:
            return np.zeros((0, self.model.embed_dim), np.float32)
        emb = self.model.encode_sensor(torch.from_numpy(x).to(self.device), torch.from_numpy(missing).to(self.device))
        return emb.float().cpu().numpy()

    # SST ----------------------------------------------------------------------------------

    def _predict_sst(self, data: dict[str, Any]) -> np.ndarray:
        _check_keys(data, SST_KEYS, "SST")
        if "daily" not in data:
            raise ValueError(f"model input: SST needs key 'daily' (accepted keys: {list(SST_KEYS)})")
        H, W = self.grid
        daily = _float_array(data["daily"], "daily", 4, f"(N, M*D={self.days}, H={H}, W={W}) in degrees C")
        if tuple(daily.shape[1:]) != (self.days, H, W):
            raise ValueError(f"input 'daily': expected shape (N, {self.days}, {H}, {W}), got {daily.shape}")
        N = daily.shape[0]
        nan = np.isnan(daily)

        land = None
        if "land" in data:
            raw_land = np.asarray(data["land"])
            if raw_land.ndim == 2:
                raw_land = np.broadcast_to(raw_land, (N, H, W))
            land = _mask_array(raw_land, "land", (N, H, W), "(N, H, W) or (H, W), 1 = land")
        if "padded_days" in data:
            padded = _mask_array(data["padded_days"], "padded_days", (N, self.days), "(N, M*D), 1 = padded")
        else:
            padded = nan.all(axis=(2, 3))

        if "month" in data and "month_of_year" in data:
            raise ValueError("model input: give 'month' or 'month_of_year', not both")
        month_of_year = None
        if "month" in data:
            month = np.asarray(data["month"])
            if month.shape != (N,) or not np.issubdtype(month.dtype, np.integer):
                raise ValueError(f"input 'month': expected (N={N},) integers 1..12, got {month.dtype} {month.shape}")
            if N and (month.min() < 1 or month.max() > 12):
                raise ValueError(f"input 'month': values must be 1..12, got range [{month.min()}, {month.max()}]")
            offsets = np.arange(self.months - 1, -1, -1)
            month_of_year = (month.astype(np.int64)[:, None] - 1 - offsets[None, :]) % 12
        elif "month_of_year" in data:
            month_of_year = np.asarray(data["month_of_year"])
            if month_of_year.shape != (N, self.months) or not np.issubdtype(month_of_year.dtype, np.integer):
                raise ValueError(
                    f"input 'month_of_year': expected (N={N}, M={self.months}) integers 0..11, "
                    f"got {month_of_year.dtype} {month_of_year.shape}"
                )
            if month_of_year.size and (month_of_year.min() < 0 or month_of_year.max() > 11):
                raise ValueError(
                    f"input 'month_of_year': values must be 0..11 (January = 0), got range "
                    f"[{month_of_year.min()}, {month_of_year.max()}]"
                )
            month_of_year = month_of_year.astype(np.int64)

        if N == 0:
            return np.zeros((0, H, W), np.float32)
        missing = nan | padded[:, :, None, None]
        if land is not None:
            missing = missing | land[:, None]
        x = np.where(missing, np.float32(0.0), (daily - self.sst_mean32) * self.sst_inv_std32)
        pred = self.model(
            torch.from_numpy(x)[:, None],
            torch.from_numpy(missing)[:, None],
            torch.from_numpy(padded),
            None if land is None else torch.from_numpy(np.ascontiguousarray(land)),
            None if month_of_year is None else torch.from_numpy(month_of_year),
        )
        maps = pred[:, 0].float().numpy() * self.sst_std + self.sst_mean
        if land is not None:
            maps = np.where(land, 0.0, maps)
        return maps.astype(np.float32)


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
    from mlflow.models import ModelSignature
    from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Schema

    def nested(depth: int, dtype: DataType) -> Array:
        t: Any = dtype
        for _ in range(depth):
            t = Array(t)
        return t

    cfg = meta["config"]
    stats = None
    stats_path = package_dir / "data_stats.json"
    if stats_path.is_file():
        import json

        stats = json.loads(stats_path.read_text())
    if meta["family"] == "sensorlm":
        signature = ModelSignature(
            inputs=Schema([
                ColSpec(Array(DataType.string), "text", required=False),
                ColSpec(nested(3, DataType.double), "sensor", required=False),
            ])
        )
        T, C = int(cfg["sensor"]["input_len"]), int(cfg["sensor"]["num_channels"])
        example: dict[str, Any] = {"text": [EXAMPLE_CAPTION]}
        if T * C <= MAX_EXAMPLE_VALUES and stats is not None:
            mean, _ = sensor_normalisation(stats)
            # Plain lists: MLflow refuses examples that mix lists and numpy arrays.
            example["sensor"] = np.broadcast_to(np.asarray(mean, np.float64), (1, T, C)).tolist()
        return signature, example
    days = int(cfg["months"]) * int(cfg["days_per_month"])
    H, W = int(cfg["height"]), int(cfg["width"])
    signature = ModelSignature(
        inputs=Schema([
            ColSpec(nested(4, DataType.double), "daily"),
            ColSpec(AnyType(), "land", required=False),
            ColSpec(AnyType(), "padded_days", required=False),
            ColSpec(Array(DataType.long), "month", required=False),
            ColSpec(nested(2, DataType.long), "month_of_year", required=False),
        ])
    )
    if days * H * W > MAX_EXAMPLE_VALUES or stats is None:
        return signature, None
    mean, _ = sst_normalisation(stats)
    example = {"daily": np.full((1, days, H, W), mean, np.float64).tolist(), "month": [7]}
    return signature, example


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
    if meta["family"] not in SUPPORTED_FAMILIES:
        raise ValueError(
            f"model package {package_dir}: family {meta['family']!r} has no pyfunc "
            f"(supported: {list(SUPPORTED_FAMILIES)})"
        )
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
