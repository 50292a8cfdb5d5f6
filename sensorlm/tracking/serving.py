"""Serving a model package by family: the pyfunc's input checks, prediction and signature.

Each model family names its handler in its record (`sensorlm.families`); the pyfunc
(`sensorlm.tracking.pyfunc`) loads a package and hands requests to it. See the pyfunc module's
docstring for every family's inputs and outputs.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from sensorlm.tracking.package import ModelPackage, sensor_normalisation, sst_normalisation

# Input examples are stored as JSON beside the model and run once when logging; bigger
# examples (sst_base is 1.5M values per sample) are left out.
MAX_EXAMPLE_VALUES = 200_000
EXAMPLE_CAPTION = "A day with a 30 minute morning run and 7 hours of sleep."


# Array inputs are "an array of anything" in the signatures: MLflow checks nesting depth (not
# shape) before our handler runs, and its error for a wrong depth (a single 2-D day for (N, T, C))
# prints the whole input. The handlers check every array's shape and dtype and name the key in
# one line. (Plain `AnyType` columns would make MLflow read a dict as DataFrame columns, so inputs
# of different lengths, text and sensor, A and B, would no longer go together.)


def _any_array():
    from mlflow.types.schema import AnyType, Array

    return Array(AnyType())


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




class SensorLMServing:
    """SensorLM: text and/or raw sensor days -> L2-normalised embeddings."""

    KEYS = ("text", "sensor")

    def __init__(self, package: ModelPackage, package_dir: str | Path):
        if package.tokenizer is None:
            raise FileNotFoundError(f"model package {package_dir}: missing tokenizer.json (SensorLM text input)")
        if package.data_stats is None:
            raise FileNotFoundError(f"model package {package_dir}: missing data_stats.json (needed to normalise inputs)")
        self.package = package
        self.model = package.model
        cfg = package.config
        mean, std = sensor_normalisation(package.data_stats)
        # The same float32 arithmetic as sensorlm.data.loader, so served inputs match training.
        self.sensor_mean = np.asarray(mean, np.float32)
        self.sensor_inv_std = (1.0 / np.asarray(std, np.float64)).astype(np.float32)
        self.sample_shape = (int(cfg["sensor"]["input_len"]), int(cfg["sensor"]["num_channels"]))
        self.context_len = int(cfg["text"]["context_len"])
        self.device = torch.device("cpu")

    def to(self, device: str | torch.device) -> "SensorLMServing":
        """Embed on `device` (a GPU for batch embedding); results come back as CPU numpy arrays."""
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def predict(self, data: dict[str, Any]) -> np.ndarray | dict[str, np.ndarray]:
        """One output for one input key, else a dict of them (``text_emb``, ``sensor_emb``, ...)."""
        _check_keys(data, self.KEYS, type(self).__name__.removesuffix("Serving"))
        if not data:
            raise ValueError(f"model input: give at least one of {list(self.KEYS)}")
        out = self._outputs(data)
        return out if len(out) > 1 else next(iter(out.values()))

    def _outputs(self, data: dict[str, Any]) -> dict[str, np.ndarray]:
        out = {}
        if "text" in data:
            out["text_emb"] = self.embed_text(_texts(data["text"]))
        if "sensor" in data:
            out["sensor_emb"] = self.embed_sensor(data["sensor"])
        return out

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


    @staticmethod
    def signature_and_example(cfg: Mapping[str, Any], stats: Mapping[str, Any] | None):
        from mlflow.models import ModelSignature
        from mlflow.types.schema import Array, ColSpec, DataType, Schema

        any_array = _any_array()
        signature = ModelSignature(inputs=Schema([
            ColSpec(Array(DataType.string), "text", required=False),
            ColSpec(any_array, "sensor", required=False),
        ]))
        T, C = int(cfg["sensor"]["input_len"]), int(cfg["sensor"]["num_channels"])
        example: dict[str, Any] = {"text": [EXAMPLE_CAPTION]}
        if T * C <= MAX_EXAMPLE_VALUES and stats is not None:
            mean, _ = sensor_normalisation(stats)
            # Plain lists: MLflow refuses examples that mix lists and numpy arrays.
            example["sensor"] = np.broadcast_to(np.asarray(mean, np.float64), (1, T, C)).tolist()
        return signature, example


class CoCaServing(SensorLMServing):
    """SensorLM's captioning variant: the dual encoder's inputs, plus ``caption``: raw sensor days
    (N, T, C) -> N generated captions (greedy, at most ``CAPTION_MAX_TOKENS`` tokens)."""

    KEYS = ("text", "sensor", "caption")
    CAPTION_MAX_TOKENS = 48

    def _outputs(self, data: dict[str, Any]) -> dict[str, np.ndarray]:
        out = super()._outputs(data)
        if "caption" in data:
            out["caption"] = np.asarray(self.caption_sensor(data["caption"]), dtype=object)
        return out

    def caption_sensor(self, raw: Any, decoding=None, seed: int | None = None) -> list[str]:
        """Captions of raw (N, T, C) sensor days (NaN = missing).

        Args:
            raw: the days in raw units.
            decoding: a `sensorlm.models.generation.Decoding` (default: greedy, `CAPTION_MAX_TOKENS`).
            seed: the seed of ``top_p`` sampling.
        """
        from sensorlm.models.generation import Decoding, Tokens, captions_text, generate

        x, missing = self.normalise_sensor(raw)
        if x.shape[0] == 0:
            return []
        decoding = decoding or Decoding(max_len=self.CAPTION_MAX_TOKENS)
        if decoding.max_len > self.context_len:  # the text tower's positions end there
            decoding = dataclasses.replace(decoding, max_len=self.context_len)
        generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        ids = generate(self.model, torch.from_numpy(x).to(self.device), torch.from_numpy(missing).to(self.device),
                       Tokens.of(self.package.tokenizer), decoding, generator)
        return captions_text(ids.cpu(), self.package.tokenizer)

    @staticmethod
    def signature_and_example(cfg: Mapping[str, Any], stats: Mapping[str, Any] | None):
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        signature, example = SensorLMServing.signature_and_example(cfg, stats)
        inputs = Schema([*signature.inputs.inputs, ColSpec(_any_array(), "caption", required=False)])
        return ModelSignature(inputs=inputs), example


class SSTServing:
    """SST: daily maps with gaps -> the last month's monthly map in degrees C."""

    KEYS = ("daily", "land", "padded_days", "month", "month_of_year")

    def __init__(self, package: ModelPackage, package_dir: str | Path):
        if package.data_stats is None:
            raise FileNotFoundError(f"model package {package_dir}: missing data_stats.json (needed to normalise inputs)")
        self.package = package
        self.model = package.model
        cfg = package.config
        self.sst_mean, self.sst_std = sst_normalisation(package.data_stats)
        self.sst_mean32 = np.float32(self.sst_mean)
        self.sst_inv_std32 = np.float32(1.0 / self.sst_std)
        self.months = int(cfg["months"])
        self.days = self.months * int(cfg["days_per_month"])
        self.grid = (int(cfg["height"]), int(cfg["width"]))

    def predict(self, data: dict[str, Any]) -> np.ndarray:
        _check_keys(data, self.KEYS, "SST")
        if "daily" not in data:
            raise ValueError(f"model input: SST needs key 'daily' (accepted keys: {list(self.KEYS)})")
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



    @staticmethod
    def signature_and_example(cfg: Mapping[str, Any], stats: Mapping[str, Any] | None):
        from mlflow.models import ModelSignature
        from mlflow.types.schema import AnyType, Array, ColSpec, DataType, Schema

        days = int(cfg["months"]) * int(cfg["days_per_month"])
        H, W = int(cfg["height"]), int(cfg["width"])
        any_array = _any_array()
        signature = ModelSignature(inputs=Schema([
            ColSpec(any_array, "daily"),
            ColSpec(AnyType(), "land", required=False),
            ColSpec(AnyType(), "padded_days", required=False),
            ColSpec(Array(DataType.long), "month", required=False),
            ColSpec(any_array, "month_of_year", required=False),
        ]))
        if days * H * W > MAX_EXAMPLE_VALUES or stats is None:
            return signature, None
        mean, _ = sst_normalisation(stats)
        return signature, {"daily": np.full((1, days, H, W), mean, np.float64).tolist(), "month": [7]}


class ProjectionServing:
    """ProjectionCL: features of either modality -> L2-normalised embeddings in the shared space."""

    KEYS = ("a", "b")

    def __init__(self, package: ModelPackage, package_dir: str | Path):
        self.package = package
        self.model = package.model
        self.dims = tuple(int(d) for d in package.config["modality_dims"])

    def predict(self, data: dict[str, Any]) -> np.ndarray | dict[str, np.ndarray]:
        _check_keys(data, self.KEYS, "ProjectionCL")
        if not data:
            raise ValueError(f"model input: give at least one of {list(self.KEYS)}")
        out = {}
        for key, dim, encode in (("a", self.dims[0], self.model.encode_a), ("b", self.dims[1], self.model.encode_b)):
            if key in data:
                x = _float_array(data[key], key, 2, f"(N, {dim}) features of modality {key.upper()}")
                if x.shape[1] != dim:
                    raise ValueError(f"input {key!r}: expected shape (N, {dim}), got {x.shape}")
                emb = torch.nn.functional.normalize(encode(torch.from_numpy(x)), dim=-1)
                out[f"{key}_emb"] = emb.float().numpy()
        return out if len(out) == 2 else next(iter(out.values()))

    @staticmethod
    def signature_and_example(cfg: Mapping[str, Any], stats: Mapping[str, Any] | None):
        from mlflow.models import ModelSignature
        from mlflow.types.schema import ColSpec, Schema

        any_array = _any_array()
        signature = ModelSignature(inputs=Schema([
            ColSpec(any_array, "a", required=False),
            ColSpec(any_array, "b", required=False),
        ]))
        da, db = (int(d) for d in cfg["modality_dims"])
        return signature, {"a": np.zeros((1, da)).tolist(), "b": np.zeros((1, db)).tolist()}
