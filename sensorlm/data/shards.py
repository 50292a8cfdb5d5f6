"""Parquet -> webdataset shards, with a manifest, written atomically and resumably.

A dataset directory holds ``{split}-%06d.tar`` shards, ``manifest.json`` and (wearable)
``tokenizer.json``. Each sample is a group of tar members sharing a key: arrays as ``<name>.npy``
(float arrays in float32 or float16), metadata as ``json`` and the caption as ``txt``.

Atomic and resumable: a shard is written as ``.{name}.tmp`` and renamed only once complete, so a
final name never holds a truncated shard. After each completed shard ``.progress.json`` records
what is done. A rerun with the same inputs and settings keeps every completed shard whose sha256
still matches, skips its samples in the (deterministic) input stream and writes the rest. The
per-channel statistics are computed in the same single streaming pass over all samples.
``manifest.json`` appears last; its presence means the dataset is complete.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import os
import re
import tarfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from sensorlm.data.schema import KEY_PATTERN, SCHEMA_VERSION, SPLITS, DatasetInfo, ShardSample

MANIFEST = "manifest.json"
PROGRESS = ".progress.json"
SHARD_PATTERN = "{split}-{index:06d}.tar"
DTYPES = ("float32", "float16")
FLOAT16_MAX = float(np.finfo(np.float16).max)
_TAR_BLOCK = 512


class ShardError(ValueError):
    """Shard writing or a manifest check failed; the message names the file or sample."""


FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")  # used with fullmatch: "$" would admit a trailing newline


def check_file_name(name: Any, where: str, error: type[Exception] = ValueError) -> str:
    """`name` if it is a plain file name (letters, digits, '.', '_', '-'; no '..', no path), else
    raise `error` naming `where`."""
    if not isinstance(name, str) or not FILE_NAME.fullmatch(name) or ".." in name:
        raise error(f"{where} = {name!r} is not a plain file name (letters, digits, '.', '_', '-', no '..')")
    return name


def shard_name(split: str, index: int) -> str:
    return SHARD_PATTERN.format(split=split, index=index)


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = _tmp_path(path)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def encode_npy(array: np.ndarray) -> bytes:
    """``.npy`` bytes of a numeric array (never pickled)."""
    if array.dtype.hasobject:
        raise ShardError(f"refusing to write an object array (dtype {array.dtype}): it would need pickle")
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def _member_tar_size(nbytes: int) -> int:
    # one header block + data padded to whole blocks (PAX headers are not needed for short names)
    return _TAR_BLOCK + ((nbytes + _TAR_BLOCK - 1) // _TAR_BLOCK) * _TAR_BLOCK


def encode_sample(sample: ShardSample, dtype: str = "float32") -> list[tuple[str, bytes]]:
    """Tar members (name, bytes) of one sample.

    Args:
        sample: the sample; float arrays are stored in ``dtype``, others unchanged.
        dtype: ``float32`` or ``float16``.
    """
    if not KEY_PATTERN.match(sample.key):
        raise ShardError(f"sample key {sample.key!r} may hold only letters, digits, '_' and '-'")
    members = []
    for name, array in sample.arrays.items():
        array = np.asarray(array)
        if array.dtype.kind == "f":
            if dtype == "float16":
                peak = float(np.abs(array).max(initial=0.0))
                if peak > FLOAT16_MAX:
                    raise ShardError(
                        f"sample {sample.key}: '{name}' holds {peak:g}, beyond float16's range: use --dtype float32"
                    )
            array = array.astype(dtype, copy=False)
        members.append((f"{sample.key}.{name}.npy", encode_npy(array)))
    members.append((f"{sample.key}.json", json.dumps(sample.meta, sort_keys=True).encode("utf-8")))
    if sample.text is not None:
        members.append((f"{sample.key}.txt", sample.text.encode("utf-8")))
    return members


class _HashingFile:
    """File wrapper that hashes and counts what goes through it (tarfile needs write and tell)."""

    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.nbytes = 0

    def write(self, data: bytes) -> int:
        self.f.write(data)
        self.sha.update(data)
        self.nbytes += len(data)
        return len(data)

    def tell(self) -> int:
        return self.nbytes


class _ShardFile:
    """One shard being written under its temporary name."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = _tmp_path(path)
        self._f = open(self.tmp, "wb")
        self._h = _HashingFile(self._f)
        # fixed header fields make shards byte-identical across reruns (resume can compare hashes)
        self._tar = tarfile.open(fileobj=self._h, mode="w", format=tarfile.USTAR_FORMAT)
        self.samples = 0
        self.data_bytes = 0
        self.first_key: str | None = None
        self.last_key: str | None = None

    def add(self, key: str, members: list[tuple[str, bytes]]) -> None:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 0
            info.mode = 0o444
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            self._tar.addfile(info, io.BytesIO(data))
            self.data_bytes += _member_tar_size(len(data))
        self.samples += 1
        self.first_key = self.first_key or key
        self.last_key = key

    def finish(self) -> dict[str, Any]:
        self._tar.close()
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()
        os.replace(self.tmp, self.path)
        return {
            "name": self.path.name,
            "samples": self.samples,
            "bytes": self._h.nbytes,
            "sha256": self._h.sha.hexdigest(),
            "first_key": self.first_key,
            "last_key": self.last_key,
        }

    def abort(self) -> None:
        try:
            self._tar.close()
        except Exception:  # the shard is discarded anyway
            pass
        self._f.close()
        if self.tmp.exists():
            self.tmp.unlink()


# ---------------------------------------------------------------------------------------------
# statistics


class RunningStats:
    """Per-channel mean/std over a stream of (N, C) blocks, merged with Chan's formula (float64).

    Args:
        channels: number of channels C.
    """

    def __init__(self, channels: int):
        self.count = np.zeros(channels, np.float64)
        self.mean = np.zeros(channels, np.float64)
        self.m2 = np.zeros(channels, np.float64)

    def update(self, values: np.ndarray, valid: np.ndarray | None = None) -> None:
        """Add a block.

        Args:
            values: (N, C) values.
            valid: (N,) or (N, C) bool, True = include (missing minutes excluded).
        """
        x = np.asarray(values, np.float64)
        if valid is None:
            w = np.ones_like(x)
        else:
            w = np.broadcast_to(np.asarray(valid, np.float64).reshape(x.shape[0], -1), x.shape)
        n_b = w.sum(0)
        safe = np.maximum(n_b, 1)
        mean_b = (x * w).sum(0) / safe
        self.merge((n_b, mean_b, (((x - mean_b) ** 2) * w).sum(0)))

    def state(self) -> list[list[float]]:
        """(count, mean, M2) per channel: what `merge` takes from another process."""
        return [self.count.tolist(), self.mean.tolist(), self.m2.tolist()]

    def merge(self, state: Sequence[Sequence[float]]) -> None:
        """Add the statistics of another stream (Chan et al.'s pairwise formula)."""
        n_b, mean_b, m2_b = (np.asarray(v, np.float64) for v in state)
        n = self.count + n_b
        delta = mean_b - self.mean
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = np.where(n > 0, n_b / np.maximum(n, 1), 0.0)
        self.mean = self.mean + delta * frac
        self.m2 = self.m2 + m2_b + delta**2 * self.count * frac
        self.count = n

    def std(self) -> np.ndarray:
        var = np.where(self.count > 1, self.m2 / np.maximum(self.count - 1, 1), 0.0)
        std = np.sqrt(np.maximum(var, 0.0))
        # a constant (or empty) channel would divide by zero when normalising
        return np.where(std > 1e-8, std, 1.0)

    def as_dict(self) -> dict[str, list[float]]:
        return {"mean": self.mean.tolist(), "std": self.std().tolist(), "count": self.count.astype(int).tolist()}


# ---------------------------------------------------------------------------------------------
# writing


def _load_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ShardError(f"{path}: not valid JSON ({exc}); delete it to start over") from exc


def shard_settings(info: DatasetInfo, max_count: int, max_bytes: int, dtype: str,
                   fingerprint: dict[str, Any] | None = None) -> dict[str, Any]:
    """The writing settings a manifest records (checked): a rerun with others starts over."""
    if isinstance(max_count, bool) or not isinstance(max_count, int) or max_count < 1:
        raise ValueError(f"max_count must be a positive integer, got {max_count!r}")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 4096:
        raise ValueError(f"max_bytes must be an integer >= 4096, got {max_bytes!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {DTYPES}, got {dtype!r}")
    return {"kind": info.kind, "dtype": dtype, "max_count": max_count, "max_bytes": max_bytes,
            "shapes": {k: list(v) for k, v in info.shapes().items()}, "inputs": fingerprint or {}}


def write_shards(
    samples: Iterable[ShardSample],
    out_dir: str | os.PathLike,
    info: DatasetInfo,
    *,
    max_count: int = 1000,
    max_bytes: int = 256 << 20,
    dtype: str = "float32",
    activities: Sequence[str] | None = None,
    extra: dict[str, Any] | None = None,
    fingerprint: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Write samples into ``{split}-%06d.tar`` shards and ``manifest.json``; resume if interrupted.

    Args:
        samples: the samples, in a deterministic order (a rerun must see the same order).
        out_dir: local output directory (upload it afterwards to serve shards from a URL).
        info: shapes/channels of the dataset (from `ParquetSource.info`).
        max_count: maximum samples per shard.
        max_bytes: maximum shard size in bytes (tar member data and headers; a sample larger than
            this gets a shard of its own).
        dtype: float storage type, ``float32`` or ``float16``.
        activities: wearable class labels in label order (labels seen but not listed are appended).
        extra: more manifest fields (tokenizer, generator, sources).
        fingerprint: JSON-able description of the inputs; a rerun with a different one refuses to
            resume rather than mix two datasets.
        log: progress messages (default: silent).

    Returns:
        the manifest dict (also written to ``out_dir/manifest.json``).
    """
    settings = shard_settings(info, max_count, max_bytes, dtype, fingerprint)
    log = log or (lambda msg: None)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    writer = _ShardSetWriter(out, info, settings, _kept_shards(out, settings, log), log)
    # from here until the new manifest is written the directory is incomplete: say so on disk
    (out / MANIFEST).unlink(missing_ok=True)
    try:
        for sample in samples:
            writer.add(sample)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    manifest = writer.manifest(activities, extra)
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    (out / PROGRESS).unlink(missing_ok=True)
    log(f"manifest: {manifest['num_samples']} samples in {sum(len(v) for v in writer.splits.values())} shards")
    return manifest


def write_shard_part(samples: Iterable[ShardSample], out_dir: str | os.PathLike, info: DatasetInfo,
                     settings: dict[str, Any], part: str) -> dict[str, Any]:
    """One part of a dataset written by one of several parallel writers: its samples' shards,
    named ``{part}-{split}-%06d.tar`` until `merge_shard_parts` numbers every part's in order, and
    what the merge needs (shard entries, counts, labels, keys, statistics). `settings` as
    `write_shards` records them (the same for every part); a part that fails leaves no shard."""
    writer = _ShardSetWriter(Path(out_dir), info, settings, {}, lambda msg: None, part=part)
    try:
        for sample in samples:
            writer.add(sample)
        writer.close()
    except BaseException:
        writer.abort()
        for shards in writer.splits.values():
            for shard in shards:
                (Path(out_dir) / shard["name"]).unlink(missing_ok=True)
        raise
    return {"part": part, "splits": writer.splits, "counts": dict(writer.counts), "labels": sorted(writer.labels_seen),
            "keys": sorted(writer.seen_keys), "train_stats": writer.train_stats.state(),
            "all_stats": writer.all_stats.state()}


def merge_shard_parts(parts: Sequence[dict[str, Any]], out_dir: str | os.PathLike, info: DatasetInfo,
                      settings: dict[str, Any], *, activities: Sequence[str] | None = None,
                      extra: dict[str, Any] | None = None, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The dataset of `write_shard_part`'s parts, in the order given: each split's shards numbered
    ``{split}-%06d.tar`` across the parts, the statistics merged (equal to one writer's up to float
    rounding), keys checked unique across parts, and ``manifest.json`` written last."""
    log = log or (lambda msg: None)
    out = Path(out_dir)
    # the writer's bookkeeping (splits, counts, labels, keys, statistics, manifest); as a part it
    # keeps no progress file, and it writes no shard
    merged = _ShardSetWriter(out, info, settings, {}, log, part="merged")
    for part in parts:
        clash = merged.seen_keys.intersection(part["keys"])
        if clash:
            raise ShardError(f"duplicate sample key {min(clash)!r} (keys must be unique across all inputs)")
        merged.seen_keys.update(part["keys"])
        for split, shards in part["splits"].items():
            for shard in shards:
                name = shard_name(split, len(merged.splits.setdefault(split, [])))
                os.replace(out / shard["name"], out / name)
                merged.splits[split].append({**shard, "name": name})
        merged.counts.update(part["counts"])
        merged.labels_seen.update(part["labels"])
        merged.train_stats.merge(part["train_stats"])
        merged.all_stats.merge(part["all_stats"])
    if not merged.seen_keys:
        raise ShardError("no samples to write")
    manifest = merged.manifest(activities, extra)
    _atomic_write_text(out / MANIFEST, json.dumps(manifest, indent=1))
    log(f"manifest: {manifest['num_samples']} samples in {sum(len(v) for v in merged.splits.values())} shards")
    return manifest


def _kept_shards(out: Path, settings: dict[str, Any], log: Callable[[str], None]) -> dict[str, list[dict[str, Any]]]:
    """What an interrupted run with the same settings finished (each split's shards up to the first
    missing or changed one); everything else it left is removed."""
    for tmp in out.glob(".*.tmp"):  # temporary files are never complete
        tmp.unlink()
    previous = _load_json(out / PROGRESS) or _load_json(out / MANIFEST)
    done: dict[str, list[dict[str, Any]]] = {}
    if previous is not None:
        if previous.get("settings") != settings:
            raise ShardError(
                f"{out}: holds shards written with other inputs or settings "
                f"({previous.get('settings')} != {settings}); use a new directory, or rerun prepare-data with "
                "--overwrite to replace it"
            )
        for split, entry in previous.get("splits", {}).items():
            kept = []
            for shard in entry["shards"]:
                path = out / shard["name"]
                if path.is_file() and path.stat().st_size == shard["bytes"] and sha256_file(path) == shard["sha256"]:
                    kept.append(shard)
                else:
                    log(f"resume: {shard['name']} is missing or changed; rewriting from there")
                    break
            done[split] = kept
        log("resume: keeping " + ", ".join(f"{s}: {len(v)} shards" for s, v in done.items()))
    # shards under final names not recorded as done (e.g. a crash between rename and progress write)
    keep_names = {s["name"] for shards in done.values() for s in shards}
    for path in out.glob("*-[0-9][0-9][0-9][0-9][0-9][0-9].tar"):
        if path.name not in keep_names:
            path.unlink()
    return done


class _ShardSetWriter:
    """The shards of every split being written: checks each sample, gathers the statistics over all
    of them, skips the samples of shards kept from an interrupted run (checking they are the same)
    and rolls a split's shard over at ``max_count`` samples or ``max_bytes``."""

    def __init__(self, out: Path, info: DatasetInfo, settings: dict[str, Any], done: dict[str, list[dict[str, Any]]],
                 log: Callable[[str], None], part: str | None = None):
        # a part (`write_shard_part`) names its shards `{part}-{split}-%06d.tar` and keeps no progress file
        self.out, self.info, self.settings, self.log, self.part = out, info, settings, log, part
        self.splits: dict[str, list[dict[str, Any]]] = {s: list(v) for s, v in done.items()}
        self.skip_left = {s: [(sh["samples"], sh["first_key"], sh["last_key"]) for sh in v] for s, v in done.items()}
        self.in_shard = collections.Counter()  # position inside the current kept shard during skipping
        self.open_shards: dict[str, _ShardFile] = {}
        self.seen_keys: set[str] = set()
        self.labels_seen: set[str] = set()
        self.shapes = info.shapes()
        width = len(info.channels) if info.kind == "wearable" else 1
        self.train_stats, self.all_stats = RunningStats(width), RunningStats(width)
        self.counts = collections.Counter({s: 0 for s in SPLITS})  # and fold<k> splits (sensorlm.data.folds)
        self.save_progress()

    def save_progress(self) -> None:
        if self.part is not None:
            return
        _atomic_write_text(self.out / PROGRESS, json.dumps(
            {"settings": self.settings, "splits": {s: {"shards": v} for s, v in self.splits.items()}}, indent=1))

    def add(self, sample: ShardSample) -> None:
        if sample.key in self.seen_keys:
            raise ShardError(f"duplicate sample key {sample.key!r} (keys must be unique across all inputs)")
        self.seen_keys.add(sample.key)
        for name, shape in self.shapes.items():
            got = tuple(np.shape(sample.arrays.get(name)))
            if got != shape:
                raise ShardError(f"sample {sample.key}: '{name}' has shape {got}, expected {shape}")
        self._count(sample)
        if not self._skip_kept(sample):
            self._write(sample)

    def _count(self, sample: ShardSample) -> None:
        # statistics over every sample (also those skipped on resume): one pass over the data
        if self.info.kind == "wearable":
            self.labels_seen.add(sample.meta.get("primary_activity", ""))
            block = (sample.arrays["sensor"], sample.arrays["missing"] == 0)
        else:
            block = (sample.arrays["daily"].reshape(-1, 1), (sample.arrays["mask"] == 0).reshape(-1))
        if sample.split == "train":
            self.train_stats.update(*block)
        self.all_stats.update(*block)
        self.counts[sample.split] += 1

    def _skip_kept(self, sample: ShardSample) -> bool:
        """True for a sample of a shard kept from the interrupted run (its first and last keys checked)."""
        split = sample.split
        pending = self.skip_left.get(split)
        if not pending:
            return False
        n, first_key, last_key = pending[0]
        pos = self.in_shard[split]
        if (pos == 0 and sample.key != first_key) or (pos == n - 1 and sample.key != last_key):
            raise ShardError(
                f"{self.out}: input changed since the interrupted run (sample {sample.key} where "
                f"{first_key if pos == 0 else last_key} was); use a new directory or delete it"
            )
        self.in_shard[split] = pos + 1
        if pos + 1 == n:
            pending.pop(0)
            self.in_shard[split] = 0
        return True

    def _write(self, sample: ShardSample) -> None:
        split, dtype = sample.split, self.settings["dtype"]
        members = encode_sample(sample, dtype)
        size = sum(_member_tar_size(len(data)) for _, data in members)
        cur = self.open_shards.get(split)
        if cur is not None and (cur.samples >= self.settings["max_count"]
                                or cur.data_bytes + size > self.settings["max_bytes"]):
            self.splits.setdefault(split, []).append(cur.finish())
            self.save_progress()
            self.log(f"wrote {cur.path.name} ({cur.samples} samples)")
            cur = None
        if cur is None:
            name = shard_name(split, len(self.splits.get(split, [])))
            cur = self.open_shards[split] = _ShardFile(self.out / (name if self.part is None else f"{self.part}-{name}"))
        cur.add(sample.key, members)

    def abort(self) -> None:
        for cur in self.open_shards.values():
            cur.abort()

    def close(self) -> None:
        for split, cur in self.open_shards.items():
            if cur.samples:
                self.splits.setdefault(split, []).append(cur.finish())
                self.log(f"wrote {cur.path.name} ({cur.samples} samples)")
            else:
                cur.abort()
        for split, pending in self.skip_left.items():
            if pending:
                raise ShardError(
                    f"{self.out}: input has fewer '{split}' samples than the interrupted run wrote; "
                    "use a new directory or delete it"
                )
        if not self.seen_keys:
            raise ShardError("no samples to write")
        self.save_progress()

    def manifest(self, activities: Sequence[str] | None, extra: dict[str, Any] | None) -> dict[str, Any]:
        info, counts = self.info, self.counts
        stats_src = self.train_stats if counts["train"] else self.all_stats
        manifest: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "kind": info.kind,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "dtype": self.settings["dtype"],
            "sample_shape": {k: list(v) for k, v in self.shapes.items()},
            "num_samples": sum(counts.values()),
            "splits": {
                s: {"num_samples": sum(sh["samples"] for sh in v), "shards": v} for s, v in sorted(self.splits.items())
            },
            "stats_split": "train" if counts["train"] else "all",
            "settings": self.settings,
        }
        if info.kind == "wearable":
            labels = list(activities or info.activities or [])
            labels += sorted(self.labels_seen - set(labels) - {""})
            manifest["channels"] = [{"name": n, "unit": u} for n, u in info.channels]
            manifest["activities"] = labels
            manifest["stats"] = {"sensor": stats_src.as_dict()}
        else:
            s = stats_src.as_dict()
            manifest["stats"] = {"sst": {"mean": s["mean"][0], "std": s["std"][0], "count": s["count"][0], "unit": "degC"}}
            # normalised errors times sst_std are errors in degC
            manifest["sst_mean"], manifest["sst_std"] = s["mean"][0], s["std"][0]
        manifest.update(extra or {})
        return manifest


# ---------------------------------------------------------------------------------------------
# manifest


def load_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Read and sanity-check a local ``manifest.json`` (or the directory holding it)."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"manifest not found: {path} (run prepare_data first)")
    return parse_manifest(path.read_text(encoding="utf-8"), str(path))


def parse_manifest(text: str, origin: str = MANIFEST) -> dict[str, Any]:
    """Parse manifest JSON text, raising ShardError naming the missing field."""
    try:
        manifest = json.loads(text)
    except ValueError as exc:
        raise ShardError(f"{origin}: not valid JSON ({exc})") from exc
    for field in ("schema_version", "kind", "sample_shape", "splits", "stats"):
        if field not in manifest:
            raise ShardError(f"{origin}: manifest has no '{field}' field")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ShardError(f"{origin}: schema_version {manifest['schema_version']}, this code reads {SCHEMA_VERSION}")
    _check_manifest_types(manifest, origin)
    # Names from a manifest become paths and, with a pipe: source, part of a shell command: only
    # plain file names inside the dataset are accepted.
    if manifest.get("tokenizer") is not None:
        check_file_name(manifest["tokenizer"], f"{origin}: tokenizer", ShardError)
    for split, entry in manifest["splits"].items():
        for i, shard in enumerate(entry.get("shards", [])):
            check_file_name(shard.get("name"), f"{origin}: splits.{split}.shards[{i}].name", ShardError)
    return manifest


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _check_manifest_types(manifest: dict[str, Any], origin: str) -> None:
    """Every field the readers use has the type they expect, so a hand-edited or foreign manifest
    is one line naming the field, not a TypeError deep in the loader."""
    def bad(field: str, want: str, value: Any) -> ShardError:
        return ShardError(f"{origin}: manifest field {field} must be {want}, got {value!r}"[:500])

    if not isinstance(manifest["kind"], str):
        raise bad("kind", "a string", manifest["kind"])
    shapes = manifest["sample_shape"]
    if not isinstance(shapes, dict):
        raise bad("sample_shape", "an object of shapes", shapes)
    for key, shape in shapes.items():
        if not isinstance(shape, list) or not all(_is_count(d) and d > 0 for d in shape):
            raise bad(f"sample_shape.{key}", "a list of positive integers", shape)
    if not isinstance(manifest["splits"], dict):
        raise bad("splits", "an object", manifest["splits"])
    for split, entry in manifest["splits"].items():
        if not isinstance(entry, dict):
            raise bad(f"splits.{split}", "an object", entry)
        if "num_samples" in entry and not _is_count(entry["num_samples"]):
            raise bad(f"splits.{split}.num_samples", "a count", entry["num_samples"])
        shards = entry.get("shards", [])
        if not isinstance(shards, list):
            raise bad(f"splits.{split}.shards", "a list", shards)
        for i, shard in enumerate(shards):
            where = f"splits.{split}.shards[{i}]"
            if not isinstance(shard, dict):
                raise bad(where, "an object", shard)
            for field in ("samples", "bytes"):
                if field in shard and not _is_count(shard[field]):
                    raise bad(f"{where}.{field}", "a count", shard[field])
            if "sha256" in shard and not isinstance(shard["sha256"], str):
                raise bad(f"{where}.sha256", "a hex string", shard["sha256"])
    if not isinstance(manifest["stats"], dict):
        raise bad("stats", "an object", manifest["stats"])
    for field in ("num_samples", "text_len", "vocab_size"):
        if field in manifest and not _is_count(manifest[field]):
            raise bad(field, "a count", manifest[field])
    labels = manifest.get("activities")
    if labels is not None and not (isinstance(labels, list) and all(isinstance(x, str) for x in labels)):
        raise bad("activities", "a list of label strings", labels)
    prompts = manifest.get("prompts")
    if prompts is not None and not (isinstance(prompts, dict)
                                    and all(isinstance(v, str) for v in prompts.values())):
        raise bad("prompts", "an object of label -> prompt strings", prompts)
    channels = manifest.get("channels")
    if channels is not None and not (isinstance(channels, list) and all(
            isinstance(c, dict) and isinstance(c.get("name"), str) for c in channels)):
        raise bad("channels", "a list of {name, unit} objects", channels)
    template = manifest.get("prompt_template")
    if template is not None:
        from sensorlm.data.captioner import check_prompt_template

        check_prompt_template(template, f"{origin}: manifest field prompt_template", ShardError)


def tar_files(data, origin: str) -> list[tuple[str, memoryview]]:
    """(name, content) of the regular files of an uncompressed tar held in memory, in order.

    The shards this module writes are plain ustar; reading their 512-byte headers here costs a
    few microseconds a member where `tarfile` builds an object per member. Every header's checksum
    is verified (all at once, with numpy: tar blocks are 512-byte aligned); a truncated or corrupt
    shard raises ShardError naming `origin` and the offset; a member kind beyond files and
    directories (GNU long names, pax headers) raises too, so such a tar is read with `tarfile`.
    """
    view = memoryview(data)
    at, end = 0, len(data)
    if end < 1024:
        raise ShardError(f"{origin}: {end} bytes, not a tar archive")
    files, headers, stored = [], [], []
    while at + 512 <= end:
        header = bytes(view[at:at + 512])
        if header[0] == 0 and header.count(0) == 512:  # two zero blocks end the archive
            break
        try:
            size = _octal(header[124:136])
            stored.append(_octal(header[148:156]))
        except ValueError:
            raise ShardError(f"{origin}: tar header at byte {at} is corrupt") from None
        headers.append(at)
        kind = header[156]
        body = at + 512
        if body + size > end:
            raise ShardError(f"{origin}: truncated: member at byte {at} needs {size} bytes, {end - body} left")
        if kind in (48, 0):  # "0" or NUL: a regular file
            name = header[:100].split(b"\0", 1)[0].decode("utf-8")
            if header[345] and header[257:262] == b"ustar":
                name = header[345:500].split(b"\0", 1)[0].decode("utf-8") + "/" + name
            files.append((name, view[body:body + size]))
        elif kind != 53:  # "5": directories are skipped; anything else is not a plain shard
            raise ShardError(f"{origin}: tar member kind {chr(kind)!r} at byte {at} (not a plain file)")
        at = body + (size + 511) // 512 * 512
    else:
        if at != end:
            raise ShardError(f"{origin}: truncated: {end - at} bytes after the last complete member")
    if headers:
        import numpy as np

        blocks = np.frombuffer(view, np.uint8, count=end // 512 * 512).reshape(-1, 512)[np.asarray(headers) // 512]
        # the checksum field itself counts as eight spaces
        sums = blocks.sum(axis=1, dtype=np.int64) - blocks[:, 148:156].sum(axis=1, dtype=np.int64) + 256
        bad = np.flatnonzero(sums != np.asarray(stored))
        if bad.size:
            raise ShardError(f"{origin}: tar header at byte {headers[int(bad[0])]} fails its checksum")
    return files


def _octal(field: bytes) -> int:
    try:
        return int(field.strip(b"\0 "), 8)  # "00000046400\0", "012055\0 ": digits padded by NUL/space
    except ValueError:
        return int(field.split(b"\0", 1)[0].strip() or b"0", 8)


def verify_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """Check that every shard in a local dataset exists with the recorded size and sha256.

    Args:
        path: dataset directory (or its manifest.json).

    Returns:
        the manifest.

    Raises:
        ShardError listing every missing or changed shard.
    """
    path = Path(path)
    root = path if path.is_dir() else path.parent
    manifest = load_manifest(path)
    problems = []
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            f = root / shard["name"]
            if not f.is_file():
                problems.append(f"{f}: missing")
            elif f.stat().st_size != shard["bytes"]:
                problems.append(f"{f}: {f.stat().st_size} bytes, manifest says {shard['bytes']}")
            elif sha256_file(f) != shard["sha256"]:
                problems.append(f"{f}: sha256 differs from the manifest")
        total = sum(s["samples"] for s in entry["shards"])
        if total != entry["num_samples"]:
            problems.append(f"split {split}: shards hold {total} samples, manifest says {entry['num_samples']}")
    if problems:
        raise ShardError("dataset check failed:\n  " + "\n  ".join(problems))
    return manifest


__all__ = [
    "MANIFEST",
    "ShardError",
    "RunningStats",
    "encode_sample",
    "encode_npy",
    "write_shards",
    "load_manifest",
    "parse_manifest",
    "verify_manifest",
    "sha256_file",
    "shard_name",
]
