"""Parquet schemas of the two datasets: the documented input format of ``prepare_data``.

Users can bring their own Parquet files; ours are written by `write_parquet` from the synthetic
generators, so both go through the same reader. A file that does not match gets a `SchemaError`
naming the file, the column and the expected type, or the row, key and the shape that is wrong.

Wearable (one row per subject-day; schema metadata ``sensorlm.kind = "wearable"``)

=================  =====================================  ===========================================
column             Arrow type                             meaning
=================  =====================================  ===========================================
key                string                                 unique sample id: letters, digits, ``_-``
subject_id         string                                 who (the train/val split is by subject)
day                any integer                            day index of that subject
split              string                                 ``train``, ``val`` or ``test``
sensor             list<float32> or list<float16>         T*C values, minute-major ((T, C) flattened),
                                                          0 where the minute is missing, all finite
missing            list<uint8> or list<bool>  (optional)  T flags, 1 = minute missing (default: none)
caption            string                     (optional)  the day's caption; missing or empty: generated
                                                          from the data (`sensorlm.data.captioner`)
primary_activity   string                                 label of the day's main activity ("" = none)
activities         string (JSON list)         (optional)  ``[{"label", "start_min", "end_min"}, ...]``
meta               string (JSON object)       (optional)  extra metadata copied to the sample's json
=================  =====================================  ===========================================

Schema metadata: ``sensorlm.seq_len`` = T, ``sensorlm.channels`` = JSON ``[[name, unit], ...]``
(C entries), optionally ``sensorlm.activities`` = JSON list of labels (class order for ``label``),
``sensorlm.channel_kinds`` = JSON ``{name: kind}`` (default: inferred from name and unit),
``sensorlm.step_minutes`` (grid step; default 1440 / T), ``sensorlm.prompt_template`` (default
``A day with {label}.``) and ``sensorlm.prompts`` = JSON ``{label: prompt}``; the last four steer the
generated captions and the zero-shot prompts, and are copied to the manifest.

SST (one row per sample; schema metadata ``sensorlm.kind = "sst"``), D = months x 32 day slots:

=================  =====================================  ===========================================
key                string                                 unique sample id
split              string                                 ``train``, ``val`` or ``test``
month              any integer                            calendar month of the last month, 1..12
daily              list<float32>                          D*H*W observed SST in degC, 0 where missing
mask               list<uint8> or list<bool>              D*H*W, 1 = missing (cloud/land/pad/holdout)
padded_days        list<uint8> or list<bool>              D, 1 = padding slot past the month's end
holdout            list<uint8> or list<bool>              H*W, 1 = ocean pixel hidden for validation
target             list<float32>                          H*W monthly mean of the last month, 0 on land
land               list<uint8> or list<bool>              H*W, 1 = land
clim               list<float32>                          H*W climatology
meta               string (JSON object)       (optional)  extra metadata copied to the sample's json
=================  =====================================  ===========================================

Schema metadata: ``sensorlm.days`` = D, ``sensorlm.height`` = H, ``sensorlm.width`` = W.
`schema_for(kind, ...)` returns a `pyarrow.Schema` with the metadata filled in; ``list`` may also be
``large_list`` or ``fixed_size_list``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from sensorlm.data.folds import FOLD_SPLIT

SCHEMA_VERSION = 1
KINDS = ("wearable", "sst")
SPLITS = ("train", "val", "test")
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]+\Z")  # no '.', '/': webdataset splits member names at the first '.'
SST_DAY_SLOTS = 32


class SchemaError(ValueError):
    """A Parquet file does not match the documented schema; the message names file, column/row."""


@dataclass
class ShardSample:
    """One sample on its way to a shard.

    Args:
        key: unique id (letters, digits, ``_-``).
        split: ``train``/``val``/``test``.
        arrays: member name (without ``.npy``) -> array, e.g. ``sensor``, ``missing``.
        meta: JSON-serialisable metadata (the ``.json`` member).
        text: caption (the ``.txt`` member) or None.
    """

    key: str
    split: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
    text: str | None = None


# ---------------------------------------------------------------------------------------------
# column specifications

_FLOAT32 = (pa.float32(),)
_SENSOR_FLOATS = (pa.float32(), pa.float16())
_FLAGS = (pa.uint8(), pa.bool_())


@dataclass(frozen=True)
class _Col:
    name: str
    kind: str  # "string" | "int" | "list"
    values: tuple = ()  # accepted value types of a list column
    required: bool = True
    shape: str = ""  # which shape a list column has, see `_expected_len`


WEARABLE_COLUMNS = (
    _Col("key", "string"),
    _Col("subject_id", "string"),
    _Col("day", "int"),
    _Col("split", "string"),
    _Col("sensor", "list", _SENSOR_FLOATS, shape="TC"),
    _Col("missing", "list", _FLAGS, required=False, shape="T"),
    _Col("caption", "string", required=False),
    _Col("primary_activity", "string"),
    _Col("activities", "string", required=False),
    _Col("meta", "string", required=False),
)

SST_COLUMNS = (
    _Col("key", "string"),
    _Col("split", "string"),
    _Col("month", "int"),
    _Col("daily", "list", _FLOAT32, shape="DHW"),
    _Col("mask", "list", _FLAGS, shape="DHW"),
    _Col("padded_days", "list", _FLAGS, shape="D"),
    _Col("holdout", "list", _FLAGS, shape="HW"),
    _Col("target", "list", _FLOAT32, shape="HW"),
    _Col("land", "list", _FLAGS, shape="HW"),
    _Col("clim", "list", _FLOAT32, shape="HW"),
    _Col("meta", "string", required=False),
)

COLUMNS = {"wearable": WEARABLE_COLUMNS, "sst": SST_COLUMNS}
# JSON schema metadata carried into `DatasetInfo.extra` and from there into the manifest
EXTRA_METADATA = ("generator", "channel_kinds", "step_minutes", "prompt_template", "prompts", "import", "folds")

# metadata keys
_M = "sensorlm."


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _arrow_type(col: _Col, value_type: pa.DataType | None = None) -> pa.DataType:
    if col.kind == "string":
        return pa.string()
    if col.kind == "int":
        return pa.int32()
    return pa.list_(value_type or col.values[0])


def schema_for(
    kind: str,
    *,
    seq_len: int | None = None,
    channels: Sequence[tuple[str, str]] | None = None,
    activities: Sequence[str] | None = None,
    days: int | None = None,
    height: int | None = None,
    width: int | None = None,
    sensor_dtype: str = "float32",
    extra: dict[str, Any] | None = None,
) -> pa.Schema:
    """The Arrow schema (with shape metadata) for a dataset kind.

    Args:
        kind: ``wearable`` or ``sst``.
        seq_len, channels, activities: wearable shape T, channel (name, unit) pairs, class labels.
        days, height, width: SST shape D (months x 32), H, W.
        sensor_dtype: ``float32`` or ``float16`` for the wearable ``sensor`` column.
        extra: more metadata, stored JSON-encoded under ``sensorlm.<name>``.
    """
    _check_kind(kind)
    meta: dict[str, str] = {_M + "kind": kind, _M + "schema_version": str(SCHEMA_VERSION)}
    fields = []
    if kind == "wearable":
        if not seq_len or not channels:
            raise ValueError("wearable schema needs seq_len and channels")
        if sensor_dtype not in ("float32", "float16"):
            raise ValueError(f"sensor_dtype must be float32 or float16, got {sensor_dtype!r}")
        meta[_M + "seq_len"] = str(int(seq_len))
        meta[_M + "channels"] = json.dumps([[str(n), str(u)] for n, u in channels])
        if activities is not None:
            meta[_M + "activities"] = json.dumps([str(a) for a in activities])
        for col in WEARABLE_COLUMNS:
            vt = pa.float16() if (col.name == "sensor" and sensor_dtype == "float16") else None
            fields.append(pa.field(col.name, _arrow_type(col, vt), nullable=not col.required))
    else:
        if not days or not height or not width:
            raise ValueError("sst schema needs days, height and width")
        meta[_M + "days"] = str(int(days))
        meta[_M + "height"] = str(int(height))
        meta[_M + "width"] = str(int(width))
        for col in SST_COLUMNS:
            fields.append(pa.field(col.name, _arrow_type(col), nullable=not col.required))
    for name, value in (extra or {}).items():
        meta[_M + name] = json.dumps(value)
    return pa.schema(fields, metadata=meta)


# ---------------------------------------------------------------------------------------------
# schema validation


def _type_ok(col: _Col, tp: pa.DataType) -> bool:
    if col.kind == "string":
        return pa.types.is_string(tp) or pa.types.is_large_string(tp)
    if col.kind == "int":
        return pa.types.is_integer(tp)
    if not (pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp)):
        return False
    return any(tp.value_type.equals(v) for v in col.values)


_NAMES = {"float": "float32", "halffloat": "float16", "double": "float64", "bool": "bool"}


def _type_text(tp: pa.DataType) -> str:
    """Arrow type in numpy-like words: ``list<float32>`` (Arrow prints ``list<element: float>``)."""
    if pa.types.is_list(tp) or pa.types.is_large_list(tp) or pa.types.is_fixed_size_list(tp):
        outer = "large_list" if pa.types.is_large_list(tp) else "list"
        return f"{outer}<{_type_text(tp.value_type)}>"
    return _NAMES.get(str(tp), str(tp))


def _expected_type(col: _Col) -> str:
    if col.kind == "string":
        return "string"
    if col.kind == "int":
        return "an integer type (int32)"
    return " or ".join(f"list<{_type_text(v)}>" for v in col.values)


@dataclass
class DatasetInfo:
    """Shape and label information read from a Parquet file's schema metadata."""

    kind: str
    seq_len: int | None = None
    channels: list[tuple[str, str]] | None = None
    activities: list[str] | None = None
    days: int | None = None
    height: int | None = None
    width: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Array member name -> shape of one sample."""
        if self.kind == "wearable":
            t, c = self.seq_len, len(self.channels)
            return {"sensor": (t, c), "missing": (t,)}
        d, h, w = self.days, self.height, self.width
        return {
            "daily": (d, h, w),
            "mask": (d, h, w),
            "padded_days": (d,),
            "holdout": (h, w),
            "target": (h, w),
            "land": (h, w),
            "clim": (h, w),
        }

    def same_shape(self, other: "DatasetInfo") -> bool:
        return self.kind == other.kind and self.shapes() == other.shapes() and self.channels == other.channels


def _meta_int(meta: dict[bytes, bytes], name: str, path: str, minimum: int = 1) -> int:
    raw = meta.get((_M + name).encode())
    if raw is None:
        raise SchemaError(f"{path}: schema metadata '{_M}{name}' is missing (see sensorlm.data.schema.schema_for)")
    try:
        value = int(raw.decode())
    except ValueError:
        raise SchemaError(f"{path}: schema metadata '{_M}{name}' = {raw!r} is not an integer") from None
    if value < minimum:
        raise SchemaError(f"{path}: schema metadata '{_M}{name}' = {value}, must be >= {minimum}")
    return value


def _meta_json(meta: dict[bytes, bytes], name: str, path: str, required: bool) -> Any:
    raw = meta.get((_M + name).encode())
    if raw is None:
        if required:
            raise SchemaError(f"{path}: schema metadata '{_M}{name}' is missing (see sensorlm.data.schema.schema_for)")
        return None
    try:
        return json.loads(raw.decode())
    except (ValueError, UnicodeDecodeError):
        raise SchemaError(f"{path}: schema metadata '{_M}{name}' is not valid JSON: {raw[:80]!r}") from None


def validate_schema(schema: pa.Schema, kind: str, path: str = "<table>") -> DatasetInfo:
    """Check column names/types and shape metadata; return the dataset info.

    Args:
        schema: the Arrow schema of the file.
        kind: ``wearable`` or ``sst``.
        path: file name used in error messages.

    Raises:
        SchemaError naming the column, its type and the expected type, or the metadata key.
    """
    _check_kind(kind)
    meta = schema.metadata or {}
    file_kind = meta.get((_M + "kind").encode())
    if file_kind is not None and file_kind.decode() != kind:
        raise SchemaError(f"{path}: schema metadata says kind '{file_kind.decode()}', expected '{kind}'")
    names = set(schema.names)
    for col in COLUMNS[kind]:
        if col.name not in names:
            if col.required:
                raise SchemaError(
                    f"{path}: required column '{col.name}' is missing (expected {_expected_type(col)}; "
                    f"found columns {schema.names})"
                )
            continue
        tp = schema.field(col.name).type
        if not _type_ok(col, tp):
            raise SchemaError(f"{path}: column '{col.name}' has type {_type_text(tp)}, expected {_expected_type(col)}")
    extra = {}
    for key, value in meta.items():
        k = key.decode(errors="replace")
        if k.startswith(_M) and k[len(_M) :] in EXTRA_METADATA:
            extra[k[len(_M) :]] = _meta_json(meta, k[len(_M) :], path, required=True)
    if kind == "wearable":
        channels = _meta_json(meta, "channels", path, required=True)
        if not isinstance(channels, list) or not channels or not all(
            isinstance(c, (list, tuple)) and len(c) == 2 and all(isinstance(s, str) for s in c) for c in channels
        ):
            raise SchemaError(f"{path}: schema metadata '{_M}channels' must be a JSON list of [name, unit] pairs")
        activities = _meta_json(meta, "activities", path, required=False)
        if activities is not None and (
            not isinstance(activities, list) or not all(isinstance(a, str) for a in activities)
        ):
            raise SchemaError(f"{path}: schema metadata '{_M}activities' must be a JSON list of strings")
        return DatasetInfo(
            kind=kind,
            seq_len=_meta_int(meta, "seq_len", path),
            channels=[(str(n), str(u)) for n, u in channels],
            activities=activities,
            extra=extra,
        )
    return DatasetInfo(
        kind=kind,
        days=_meta_int(meta, "days", path),
        height=_meta_int(meta, "height", path),
        width=_meta_int(meta, "width", path),
        extra=extra,
    )


# ---------------------------------------------------------------------------------------------
# reading


def _list_column(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(flat values, per-row lengths) of a list column without nulls."""
    lengths = pc.list_value_length(arr).to_numpy(zero_copy_only=False).astype(np.int64)
    flat = arr.flatten().to_numpy(zero_copy_only=False)
    return flat, lengths


class ParquetSource:
    """A validated Parquet file of one dataset kind, read in streaming row batches.

    Args:
        path: the ``.parquet`` file.
        kind: ``wearable`` or ``sst``.
        batch_rows: rows per Arrow batch while streaming.

    Raises:
        FileNotFoundError, or SchemaError naming the column or metadata that does not match.
    """

    def __init__(self, path: str | os.PathLike, kind: str, batch_rows: int = 64):
        self.path = str(path)
        self.kind = kind
        self.batch_rows = batch_rows
        if not Path(self.path).is_file():
            raise FileNotFoundError(f"parquet file not found: {self.path}")
        try:
            self._file = pq.ParquetFile(self.path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SchemaError(f"{self.path}: not a readable Parquet file ({exc})") from exc
        self.info = validate_schema(self._file.schema_arrow, kind, self.path)
        self.num_rows = self._file.metadata.num_rows
        self._columns = [c.name for c in COLUMNS[kind] if c.name in self._file.schema_arrow.names]

    def _expected_len(self, shape: str) -> int:
        i = self.info
        sizes = {"T": i.seq_len, "C": len(i.channels or []), "D": i.days, "H": i.height, "W": i.width}
        n = 1
        for ch in shape:
            n *= sizes[ch]
        return n

    def _shape_text(self, shape: str) -> str:
        i = self.info
        sizes = {"T": i.seq_len, "C": len(i.channels or []), "D": i.days, "H": i.height, "W": i.width}
        return "x".join(str(sizes[ch]) for ch in shape)

    def captions(self, split: str | None = "train") -> Iterator[str]:
        """Stream the caption column (wearable), optionally of one split only."""
        if self.kind != "wearable":
            raise ValueError("captions() is only defined for the wearable dataset")
        if not self._all_captioned():
            yield from (s.text for s in self if split is None or s.split == split)
            return
        for batch in self._file.iter_batches(batch_size=1024, columns=["caption", "split"]):
            caps = batch.column(0).to_pylist()
            splits = batch.column(1).to_pylist()
            for cap, sp in zip(caps, splits):
                if cap and (split is None or sp == split):
                    yield cap

    def _all_captioned(self) -> bool:
        if "caption" not in self._columns:
            return False
        col = self._file.read(columns=["caption"]).column(0)
        return not (col.null_count or pc.any(pc.equal(pc.utf8_trim_whitespace(col), "")).as_py())

    def _caption(self, sensor: np.ndarray, missing: np.ndarray, activities: list, label: str):
        """Captions computed from the row's data (for rows without one), at every level."""
        from sensorlm.data.captioner import DEFAULT_PROMPT_TEMPLATE, ChannelInfo, caption_window, infer_kind

        extra = self.info.extra
        kinds = extra.get("channel_kinds") or {}
        channels = [ChannelInfo(n, u, kinds.get(n) or infer_kind(n, u)) for n, u in self.info.channels]
        step = float(extra.get("step_minutes") or 1440 / self.info.seq_len)
        return caption_window(sensor, missing.astype(bool), channels, step_min=step, labels=activities,
                              main_label=label or None,
                              prompt_template=extra.get("prompt_template") or DEFAULT_PROMPT_TEMPLATE)

    def __iter__(self) -> Iterator[ShardSample]:
        specs = {c.name: c for c in COLUMNS[self.kind]}
        row0 = 0
        for batch in self._file.iter_batches(batch_size=self.batch_rows, columns=self._columns):
            n = batch.num_rows
            cols: dict[str, Any] = {}
            keys = batch.column("key").to_pylist()
            for name in self._columns:
                arr = batch.column(name)
                spec = specs[name]
                if arr.null_count and spec.required:
                    bad = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                    raise SchemaError(
                        f"{self.path}: row {row0 + bad} (key {keys[bad]}): column '{name}' is null"
                    )
                if spec.kind == "list":
                    if arr.null_count:
                        bad = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
                        raise SchemaError(
                            f"{self.path}: row {row0 + bad} (key {keys[bad]}): column '{name}' is null"
                        )
                    flat, lengths = _list_column(arr)
                    want = self._expected_len(spec.shape)
                    wrong = np.flatnonzero(lengths != want)
                    if wrong.size:
                        i = int(wrong[0])
                        raise SchemaError(
                            f"{self.path}: row {row0 + i} (key {keys[i]}): column '{name}' has {lengths[i]} "
                            f"values, expected {self._shape_text(spec.shape)}={want}"
                        )
                    cols[name] = flat.reshape(n, want) if n else flat.reshape(0, want)
                else:
                    cols[name] = arr.to_pylist()
            for i in range(n):
                yield self._row_to_sample(cols, i, row0 + i)
            row0 += n

    def _fail(self, row: int, key: str, msg: str) -> SchemaError:
        return SchemaError(f"{self.path}: row {row} (key {key}): {msg}")

    def _json_col(self, cols, name, i, row, key, want_type):
        raw = cols.get(name, [None] * (i + 1))[i]
        if raw is None:
            return None
        try:
            value = json.loads(raw)
        except ValueError:
            raise self._fail(row, key, f"column '{name}' is not valid JSON: {raw[:80]!r}") from None
        if not isinstance(value, want_type):
            raise self._fail(row, key, f"column '{name}' must be a JSON {want_type.__name__}")
        return value

    def _row_to_sample(self, cols: dict[str, Any], i: int, row: int) -> ShardSample:
        key = cols["key"][i]
        if not KEY_PATTERN.match(key):
            raise self._fail(row, key, "column 'key' may hold only letters, digits, '_' and '-'")
        split = cols["split"][i]
        if split not in SPLITS and not FOLD_SPLIT.match(split):
            raise self._fail(row, key, f"column 'split' = {split!r}, expected one of {SPLITS} or fold<k>")
        extra = self._json_col(cols, "meta", i, row, key, dict) or {}
        if self.kind == "wearable":
            t, c = self.info.seq_len, len(self.info.channels)
            sensor = np.ascontiguousarray(cols["sensor"][i]).reshape(t, c)
            if not np.isfinite(sensor).all():
                bad = int((~np.isfinite(sensor)).sum())
                raise self._fail(row, key, f"column 'sensor' has {bad} NaN/inf values (write 0 and flag 'missing')")
            if "missing" in cols:
                missing = np.asarray(cols["missing"][i]).astype(np.uint8)
                if missing.max(initial=0) > 1:
                    raise self._fail(row, key, "column 'missing' must hold 0/1 flags")
            else:
                missing = np.zeros(t, np.uint8)
            caption = (cols["caption"][i] if "caption" in cols else None) or ""
            activities = self._json_col(cols, "activities", i, row, key, list) or []
            meta = dict(extra)
            if not caption.strip():
                generated = self._caption(sensor, missing, activities, cols["primary_activity"][i])
                caption = generated.text
                meta["captions"] = generated.levels()
            if not caption.strip():
                raise self._fail(row, key, "column 'caption' is empty and no caption can be computed from the row")
            meta.update(
                key=key,
                subject_id=cols["subject_id"][i],
                day=int(cols["day"][i]),
                split=split,
                primary_activity=cols["primary_activity"][i],
                activities=activities,
            )
            return ShardSample(key, split, {"sensor": sensor, "missing": missing}, meta, caption)
        d, h, w = self.info.days, self.info.height, self.info.width
        month = int(cols["month"][i])
        if not 1 <= month <= 12:
            raise self._fail(row, key, f"column 'month' = {month}, expected 1..12")
        arrays = {}
        for name, shape in self.info.shapes().items():
            a = np.ascontiguousarray(cols[name][i]).reshape(shape)
            if a.dtype == np.bool_ or a.dtype == np.uint8:
                a = a.astype(np.uint8)
                if a.max(initial=0) > 1:
                    raise self._fail(row, key, f"column '{name}' must hold 0/1 flags")
            elif not np.isfinite(a).all():
                raise self._fail(row, key, f"column '{name}' has NaN/inf values (write 0 and flag 'mask')")
            arrays[name] = a
        meta = dict(extra)
        meta.update(key=key, split=split, month=month)
        return ShardSample(key, split, arrays, meta, None)


def read_parquet(path: str | os.PathLike, kind: str) -> Iterator[ShardSample]:
    """Validate a Parquet file and stream its rows as `ShardSample`s.

    Args:
        path: the file.
        kind: ``wearable`` or ``sst``.
    """
    yield from ParquetSource(path, kind)


# ---------------------------------------------------------------------------------------------
# writing (from the synthetic generators, or any records with the right attributes)


def _safe_key(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", text)


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def wearable_row(day: Any) -> dict[str, Any]:
    """One Parquet row from a `WearableDay`-like object (attributes as in CONTRACTS.md)."""
    values = np.asarray(day.values, dtype=np.float32)
    if hasattr(day, "metadata"):
        meta = _jsonable(day.metadata())
        for name in ("key", "subject_id", "day", "split", "primary_activity", "activities", "caption", "label"):
            meta.pop(name, None)  # columns of their own (label is recomputed from the manifest)
    else:
        meta = {name: _jsonable(getattr(day, name)) for name in ("sleep",) if hasattr(day, name)}
    key = getattr(day, "key", None) or f"{day.subject_id}_d{int(day.day):03d}"
    return {
        "key": _safe_key(str(key)),
        "subject_id": str(day.subject_id),
        "day": int(day.day),
        "split": str(day.split),
        "sensor": values.reshape(-1),
        "missing": np.asarray(day.missing).astype(np.uint8).reshape(-1),
        "caption": str(day.caption),
        "primary_activity": str(day.primary_activity),
        "activities": json.dumps(_jsonable(list(day.activities))),
        "meta": json.dumps(meta),
    }


def sst_row(sample: Any, index: int) -> dict[str, Any]:
    """One Parquet row from an `SSTSample`-like object (attributes as in CONTRACTS.md)."""
    key = getattr(sample, "key", None) or f"{sample.split}_{int(getattr(sample, 'index', index)):06d}"
    clim = sample.climatology if hasattr(sample, "climatology") else sample.clim
    meta = {name: _jsonable(getattr(sample, name)) for name in ("year", "months", "index")
            if getattr(sample, name, None) is not None}
    return {
        "key": _safe_key(str(key)),
        "split": str(sample.split),
        "month": int(sample.month),
        "daily": np.asarray(sample.daily, np.float32).reshape(-1),
        "mask": np.asarray(sample.mask).astype(np.uint8).reshape(-1),
        "padded_days": np.asarray(sample.padded_days).astype(np.uint8).reshape(-1),
        "holdout": np.asarray(sample.holdout).astype(np.uint8).reshape(-1),
        "target": np.asarray(sample.target, np.float32).reshape(-1),
        "land": np.asarray(sample.land).astype(np.uint8).reshape(-1),
        "clim": np.asarray(clim, np.float32).reshape(-1),
        "meta": json.dumps(meta),
    }


def _rows_to_table(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    arrays = []
    for f in schema:
        values = [r.get(f.name) for r in rows]
        if pa.types.is_list(f.type):
            flat = np.concatenate([np.asarray(v) for v in values]) if values else np.zeros(0)
            offsets = np.zeros(len(values) + 1, dtype=np.int32)
            offsets[1:] = np.cumsum([len(v) for v in values])
            flat_arr = pa.array(flat.astype(f.type.value_type.to_pandas_dtype()), type=f.type.value_type)
            arrays.append(pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), flat_arr))
        else:
            arrays.append(pa.array(values, type=f.type))
    return pa.Table.from_arrays(arrays, schema=schema)


def write_rows(rows: list[dict[str, Any]], path: str | os.PathLike, schema: pa.Schema) -> int:
    """Write ready Parquet rows (dicts by column) under a temporary name, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    try:
        pq.write_table(_rows_to_table(rows, schema), str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(rows)


def write_parquet(
    records: Iterable[Any],
    path: str | os.PathLike,
    kind: str,
    *,
    rows_per_group: int = 256,
    channels: Sequence[tuple[str, str]] | None = None,
    activities: Sequence[str] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> int:
    """Write generator records (`WearableDay` / `SSTSample`) to a Parquet file, streaming.

    The file is written under a temporary name and renamed at the end.

    Args:
        records: iterable of WearableDay (wearable) or SSTSample (sst) objects.
        path: output ``.parquet`` file.
        kind: ``wearable`` or ``sst``.
        rows_per_group: rows buffered per Parquet row group.
        channels: wearable (name, unit) pairs (default: the 34 generator channels).
        activities: wearable class labels (default: the generator's ACTIVITIES).
        extra_metadata: more schema metadata (e.g. ``{"generator": {"preset": "tiny", "seed": 0}}``).

    Returns:
        number of rows written.
    """
    _check_kind(kind)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    writer = None
    schema = None
    buf: list[dict[str, Any]] = []
    count = 0

    def flush():
        nonlocal buf
        if buf:
            writer.write_table(_rows_to_table(buf, schema), row_group_size=len(buf))
            buf = []

    try:
        for i, rec in enumerate(records):
            if schema is None:
                if kind == "wearable":
                    if channels is None or activities is None:
                        from sensorlm.data.synthetic import wearable as sw

                        channels = channels or [(c.name, c.unit) for c in sw.CHANNELS]
                        activities = activities if activities is not None else list(sw.ACTIVITIES)
                    seq_len = int(np.asarray(rec.values).shape[0])
                    schema = schema_for(
                        "wearable", seq_len=seq_len, channels=channels, activities=activities, extra=extra_metadata
                    )
                else:
                    d, h, w = np.asarray(rec.daily).shape
                    schema = schema_for("sst", days=d, height=h, width=w, extra=extra_metadata)
                writer = pq.ParquetWriter(str(tmp), schema)
            buf.append(wearable_row(rec) if kind == "wearable" else sst_row(rec, i))
            count += 1
            if len(buf) >= rows_per_group:
                flush()
        if writer is None:
            raise ValueError(f"no records to write to {path}")
        flush()
        writer.close()
        writer = None
        os.replace(tmp, path)
    finally:
        if writer is not None:
            writer.close()
        if tmp.exists():
            tmp.unlink()
    return count
