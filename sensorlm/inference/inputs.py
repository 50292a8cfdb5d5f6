"""Inputs of `sensorlm embed`, cut into units of work (one output file each), and read on the actors.

A unit is a JSON-able dict: ``type`` ("shard", "parquet" or "text"), ``input`` (URL or path),
``shard`` (the name reports use), ``output`` (the output file name) and what reading it needs.
Reading yields `Sample`s in raw units (NaN = missing minute, the pyfunc's convention); a bad sample
is passed to the ``bad(reason, key, detail)`` callback and skipped, a unit that cannot be read
raises `BadInput`.
"""

from __future__ import annotations

import io
import itertools
import json
import os
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from sensorlm.inference import EmbedError

if TYPE_CHECKING:
    import numpy as np

PROMPTS_PER_FILE = 10_000


# ---------------------------------------------------------------------------------------------
# units of work


def _output_name(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]", "_", stem) or "part"
    name, i = f"{base}.parquet", 1
    while name in taken:
        name, i = f"{base}-{i}.parquet", i + 1
    taken.add(name)
    return name


def dataset_units(source: str, splits: Sequence[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One unit per shard of a prepared wearable dataset, and its manifest.

    Args:
        source: dataset directory or URL (see `sensorlm.data.loader.DatasetLocation`).
        splits: splits to embed (default: all).
    """
    from sensorlm.data.loader import DatasetLocation, load_dataset_manifest

    try:
        manifest = load_dataset_manifest(source)
    except FileNotFoundError:
        raise FileNotFoundError(f"dataset {source}: no manifest.json (is it a prepared dataset?)") from None
    if manifest["kind"] != "wearable":
        raise EmbedError(f"dataset {source}: kind {manifest['kind']!r}; embed reads wearable (SensorLM) datasets")
    unknown = sorted(set(splits or ()) - set(manifest["splits"]))
    if unknown:
        raise EmbedError(f"dataset {source}: no split(s) {unknown} (has {sorted(manifest['splits'])})")
    loc = DatasetLocation(source)
    units, taken = [], set()
    for split in splits or sorted(manifest["splits"]):
        for shard in manifest["splits"][split]["shards"]:
            units.append({"type": "shard", "input": loc.url(shard["name"]), "shard": shard["name"], "split": split,
                          "shape": manifest["sample_shape"]["sensor"],
                          "output": _output_name(Path(shard["name"]).stem, taken)})
    return units, manifest


def parquet_units(paths: Sequence[str]) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """One unit per Parquet file (directories expand to their ``*.parquet``), and the sample shape.

    Args:
        paths: wearable Parquet files (sensorlm.data.schema) or directories of them.
    """
    import pyarrow.parquet as pq

    from sensorlm.data.schema import validate_schema

    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(p.glob("*.parquet"))
            if not found:
                raise FileNotFoundError(f"parquet directory {p}: no *.parquet files")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise FileNotFoundError(f"parquet input {p}: no such file or directory")
    shapes, units, taken = {}, [], set()
    for f in files:
        try:
            info = validate_schema(pq.read_schema(f), "wearable", str(f))
            shapes[str(f)] = (info.seq_len, len(info.channels))
        except Exception as exc:  # a file that cannot be read is a bad input, skipped at run time
            shapes[str(f)] = None
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            units.append({"type": "parquet", "input": str(f), "shard": f.name, "output": _output_name(f.stem, taken),
                          "unreadable": first})
            continue
        units.append({"type": "parquet", "input": str(f), "shard": f.name, "output": _output_name(f.stem, taken),
                      "shape": list(shapes[str(f)])})
    return units, next((s for s in shapes.values() if s), None)


def text_units(prompts: Sequence[str], per_file: int = PROMPTS_PER_FILE) -> list[dict[str, Any]]:
    """Prompts in files of `per_file` (a rerun with the same prompts resumes file by file).

    Args:
        prompts: the text prompts, in output order.
        per_file: prompts per output file.
    """
    import hashlib

    prompts = [str(p) for p in prompts]
    if not prompts:
        raise EmbedError("text prompts: the list is empty")
    units = []
    for i in range(0, len(prompts), per_file):
        chunk = prompts[i:i + per_file]
        # the name carries the prompts' hash: other prompts in the same folder are a new file, not a stale one
        digest = hashlib.sha256("\n".join(chunk).encode("utf-8")).hexdigest()[:10]
        name = f"text-{i // per_file:06d}-{digest}"
        units.append({"type": "text", "prompts": chunk, "shard": name, "output": f"{name}.parquet"})
    return units


# ---------------------------------------------------------------------------------------------
# reading one unit (on the actor)


class BadInput(Exception):
    """A whole unit cannot be read (skipped, reported, no output written)."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason, self.detail = reason, detail


@dataclass
class Sample:
    """One sample to embed, with what the output records about it."""

    key: str
    split: str | None
    subject_id: str | None
    day: int | None
    label: str | None
    raw: np.ndarray  # (T, C) float32 in raw units, NaN = missing minute
    block: np.ndarray | None = None  # the decoded (N, T, C) block `raw` is row `row` of, if any
    row: int = -1
    caption: str | None = None  # the caption stored with the sample (the captioner's), if any


def stack_raw(samples: Sequence[Sample]) -> np.ndarray:
    """(N, T, C) of the samples' raw days: a view when they are consecutive rows of one decoded
    block (a shard's samples are), else a stacked copy."""
    import numpy as np

    block, first = samples[0].block, samples[0].row
    if block is not None and all(s.block is block and s.row == first + i for i, s in enumerate(samples)):
        return block[first:first + len(samples)]
    return np.stack([s.raw for s in samples])


def _raw_sensor(sensor: np.ndarray, missing: np.ndarray, owned: bool = False) -> np.ndarray:
    """`sensor` as float32 with NaN at missing minutes (the pyfunc's convention); `owned`: `sensor`
    is a fresh float32 array of the caller's, changed in place."""
    import numpy as np

    raw = sensor if owned and sensor.dtype == np.float32 else np.array(sensor, dtype=np.float32)
    raw[np.asarray(missing).astype(bool)] = np.nan
    return raw


def _sample_fields(meta: dict[str, Any], split: str | None) -> dict[str, Any]:
    day = meta.get("day")
    subject = meta.get("subject_id", meta.get("subject"))
    label = meta.get("primary_activity")
    return {"split": meta.get("split", split), "subject_id": None if subject is None else str(subject),
            "day": int(day) if isinstance(day, int) and not isinstance(day, bool) else None,
            "label": str(label) if label not in (None, "") else None}


def _sample_meta(key: str, members: dict[str, Any], bad: Callable[[str, str, str], None]) -> dict | None:
    """A sample's ``json`` member as a dict, or None after reporting why not."""
    try:
        meta = json.loads(bytes(members["json"]))
    except ValueError as exc:
        bad("decode_error", key, f"{type(exc).__name__}: {exc}")
        return None
    if not isinstance(meta, dict):
        bad("bad_json", key, "json is not an object")
        return None
    return meta


def _decode_shard_sample(key: str, members: dict[str, bytes], shape: tuple[int, int], split: str,
                         bad: Callable[[str, str, str], None]) -> Sample | None:
    """One sample with all three members, decoded and checked on its own."""
    import numpy as np

    from sensorlm.data.loader import _load_npy

    try:
        sensor, missing = _load_npy(members["sensor.npy"]), _load_npy(members["missing.npy"])
    except Exception as exc:
        bad("decode_error", key, f"{type(exc).__name__}: {exc}")
        return None
    if sensor.shape != shape or missing.shape != shape[:1]:
        bad("wrong_shape", key, f"sensor {sensor.shape} / missing {missing.shape}, expected {shape} / {shape[:1]}")
        return None
    if sensor.dtype.kind != "f" or not np.isfinite(sensor).all():
        bad("non_finite" if sensor.dtype.kind == "f" else "wrong_dtype", key, f"sensor dtype {sensor.dtype}, "
            f"{int((~np.isfinite(sensor)).sum()) if sensor.dtype.kind == 'f' else 0} NaN/inf values")
        return None
    meta = _sample_meta(key, members, bad)
    if meta is None:
        return None
    return Sample(key=key, raw=_raw_sensor(sensor, missing, owned=True), caption=_text(members),
                  **_sample_fields(meta, split))


def _text(members: dict[str, Any]) -> str | None:
    text = members.get("txt")
    return None if text is None else bytes(text).decode("utf-8", errors="replace")


def _npy_payloads(members: list[Any], shape: tuple[int, ...], kinds: str):
    """The .npy members that share the first one's header (the same dtype and `shape`) as one
    (N, *shape) array, decoded with one copy, and their indices (the others are decoded one by one);
    (None, []) when the first one is not of a dtype kind in `kinds`."""
    import numpy as np

    from sensorlm.data.loader import _load_npy

    first = members[0]
    try:
        probe = _load_npy(first)
    except ValueError:
        return None, []
    if probe.shape != shape or probe.dtype.kind not in kinds or probe.dtype.hasobject:
        return None, []
    head = len(first) - probe.nbytes
    header = bytes(first[:head])
    same = [i for i, m in enumerate(members) if len(m) == len(first) and m[:head] == header]
    block = np.empty((len(same), *shape), dtype=np.float32 if kinds == "f" else probe.dtype)
    for row, i in enumerate(same):  # one copy each, straight from the shard into the block
        block[row] = np.frombuffer(members[i], dtype=probe.dtype, offset=head).reshape(shape)
    return block, same


def _decode_shard(entries: list[tuple[str, dict[str, Any]]], shape: tuple[int, int], split: str,
                  bad: Callable[[str, str, str], None]) -> list[Sample]:
    """The samples of one shard, in order. Samples whose arrays share the usual headers are decoded
    and checked as one block (a shard's samples all have them); any other goes one by one."""
    import numpy as np

    complete = []
    for key, members in entries:
        absent = [n for n in ("sensor.npy", "missing.npy", "json") if n not in members]
        if absent:
            bad("missing_member", key, f"no {absent[0]} member")
        else:
            complete.append((key, members))
    if not complete:
        return []
    sensors = _npy_payloads([m["sensor.npy"] for _, m in complete], shape, "f")
    flags = _npy_payloads([m["missing.npy"] for _, m in complete], shape[:1], "ub")
    if sensors[0] is None or flags[0] is None or sensors[1] != flags[1]:
        return [s for key, m in complete if (s := _decode_shard_sample(key, m, shape, split, bad)) is not None]
    raw, fast = sensors  # float32, the block's own memory
    finite = np.isfinite(raw).all(axis=(1, 2))
    raw[flags[0].astype(bool)] = np.nan  # the pyfunc's convention for a missing minute
    row = {i: r for r, i in enumerate(fast)}
    out = []
    for i, (key, members) in enumerate(complete):
        if i not in row:
            sample = _decode_shard_sample(key, members, shape, split, bad)
        elif not finite[row[i]]:
            n = int((~np.isfinite(raw[row[i]])).sum())
            bad("non_finite", key, f"sensor, {n} NaN/inf values")
            continue
        elif (meta := _sample_meta(key, members, bad)) is None:
            continue
        else:
            sample = Sample(key=key, raw=raw[row[i]], block=raw, row=row[i], caption=_text(members),
                            **_sample_fields(meta, split))
        if sample is not None:
            out.append(sample)
    return out


def _read_whole(url: str):
    """A shard's bytes: a local file mapped (the page cache's own pages, no copy), else read."""
    if "://" not in url and not url.startswith("pipe:"):
        import mmap

        with open(url, "rb") as f:
            if os.fstat(f.fileno()).st_size == 0:
                return b""
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    with _open_stream(url) as stream:
        return stream.read()


def _open_stream(url: str):
    if "://" not in url and not url.startswith("pipe:"):
        return open(url, "rb")
    from sensorlm.data.loader import wds_gopen

    return wds_gopen.gopen(url, "rb")


def _shard_samples(unit: dict[str, Any], bad: Callable[[str, str, str], None]) -> Iterator[Sample]:
    """Samples of a webdataset shard; members are grouped by key as webdataset does (name up to the
    first dot). The whole shard is read before anything is yielded, so a truncated shard is
    skipped whole rather than embedded in part."""
    from sensorlm.data.shards import ShardError, tar_files

    shape = tuple(unit["shape"])
    try:
        data = _read_whole(unit["input"])
        try:
            files = tar_files(data, unit["input"])
        except ShardError:  # not a plain ustar shard (long names, pax): the standard library reads it
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
                files = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
        parts = [(*name.rsplit("/", 1)[-1].partition(".")[::2], content) for name, content in files]
        entries = [(key, {ext: content for _, ext, content in group})
                   for key, group in itertools.groupby(parts, key=lambda p: p[0])]
        samples = _decode_shard(entries, shape, unit["split"], bad)
    except FileNotFoundError:
        raise BadInput("missing_shard", f"{unit['input']}: not found") from None
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        raise BadInput("unreadable_shard", f"{unit['input']}: {type(exc).__name__}: {exc}") from None
    yield from samples


def _parquet_samples(unit: dict[str, Any], bad: Callable[[str, str, str], None]) -> Iterator[Sample]:
    from sensorlm.data.schema import ParquetSource

    if "unreadable" in unit:
        raise BadInput("unreadable_file", unit["unreadable"])
    samples = []
    try:
        # ParquetSource validates every row; it stops at the first bad one, so the file is skipped whole
        for s in ParquetSource(unit["input"], "wearable"):
            samples.append(Sample(key=s.key, raw=_raw_sensor(s.arrays["sensor"], s.arrays["missing"]),
                                  caption=s.text or None, **_sample_fields(s.meta, s.split)))
    except FileNotFoundError:
        raise BadInput("missing_file", f"{unit['input']}: not found") from None
    except Exception as exc:
        raise BadInput("unreadable_file", f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}") from None
    yield from samples


def read_samples(unit: dict[str, Any], bad: Callable[[str, str, str], None]) -> list[Sample]:
    """The valid samples of a shard or Parquet unit.

    Args:
        unit: from `dataset_units` or `parquet_units`.
        bad: called as ``bad(reason, key, detail)`` for every skipped sample.

    Raises:
        BadInput: the unit cannot be read at all.
    """
    reader = _shard_samples if unit["type"] == "shard" else _parquet_samples
    return list(reader(unit, bad))

