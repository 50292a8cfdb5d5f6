"""Streaming loader over webdataset shards (wearable and SST), safe against bad data.

Pipeline in each DataLoader worker (built from webdataset pieces):

    shard URLs (shuffled per epoch with the seed, then split by rank and by worker; or
    resampled with replacement from the rank's share) -> webdataset tar reader -> sample shuffle buffer ->
    decode (.npy with allow_pickle=False, .json, .txt only) and validate -> normalise
    (manifest mean/std) -> batch + tokenise -> torch tensors (pinned by the DataLoader)

Nothing in a shard can execute code: only ``.npy`` (no pickle), ``.json`` and ``.txt`` members are
decoded; a sample with any other member is skipped. Bad data (unreadable or truncated shard, wrong
shape or dtype, NaN/inf, missing caption, bad metadata) is skipped and counted with its shard and
key: each batch carries ``batch["skipped"]`` (what the worker skipped since its previous batch) and
`ShardLoader.report` (a `SkipReport`) adds them up for the trainer to log. With ``strict=True`` the
first bad sample raises `DataError` naming the shard and key instead.

Sources: a local dataset directory, a ``file://`` URL, an fsspec URL prefix (``s3://bucket/ds``,
needs the matching fsspec backend such as s3fs), any URL prefix webdataset opens (``http(s)://``,
``gs://``), or a template holding ``{name}`` for the file name, e.g.
``pipe:aws s3 cp s3://bucket/ds/{name} -`` or ``pipe:cat /data/ds/{name}``.
"""

from __future__ import annotations

import collections
import dataclasses
import importlib
import io
import json
import math
import os
import random
import re
import shlex
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence
from urllib.parse import urlparse

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from sensorlm.data.augment import Augment
from sensorlm.data.shards import MANIFEST, check_file_name, parse_manifest
from sensorlm.data.tokenizer import SensorTokenizer, tokenizer_from_str

# `webdataset.gopen` the attribute is the function; the module holds the scheme table
wds_gopen = importlib.import_module("webdataset.gopen")
MAX_EVENTS_PER_BATCH = 16


class DataError(ValueError):
    """Bad data found with ``strict=True`` (or a dataset that cannot be read at all)."""

    def __str__(self) -> str:
        # webdataset appends (stream, url) to the args of exceptions passing through its handlers,
        # and torch's DataLoader re-raises a worker's error with the worker's traceback as its
        # message: either way, the message is the original one line
        text = str(self.args[0]) if self.args else ""
        if "Original Traceback" in text:
            last = text.strip().splitlines()[-1]
            text = last.split("DataError: ", 1)[1] if "DataError: " in last else last
        return text


# ---------------------------------------------------------------------------------------------
# where the shards live


def _gopen_fsspec(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    import fsspec

    return fsspec.open(url, mode).open()


# webdataset 1.0.2 opens pipe:/http(s)/gs itself; object stores go through fsspec
for _scheme in ("s3", "s3a", "gcs", "az", "abfs", "abfss", "memory"):
    wds_gopen.gopen_schemes.setdefault(_scheme, _gopen_fsspec)


# Schemes whose URLs name data and nothing else (webdataset's own http/gs openers run curl/gsutil
# with the URL as one argument, never through a shell).
OBJECT_STORE_SCHEMES = ("s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "http", "https")


def is_data_only_location(location: str) -> bool:
    """True for a plain local path or an object-store URL: a location that opens data and cannot
    run a command (no ``pipe:``, no ``{name}`` template). Locations read from somewhere others can
    write (an MLflow run's params) must pass this before they are opened.

    Args:
        location: a dataset location as recorded.
    """
    text = str(location).strip()
    if not text or "{name}" in text or text.startswith("pipe:") or any(c in text for c in "\n\r\0"):
        return False
    scheme = urlparse(text).scheme
    return scheme in ("", "file") or len(scheme) == 1 or scheme in OBJECT_STORE_SCHEMES


class DatasetLocation:
    """Resolves file names of a dataset (shards, manifest, tokenizer) to URLs and reads them.

    Args:
        source: a directory, a URL prefix, or a template with ``{name}`` (required for ``pipe:``).
    """

    def __init__(self, source: str | os.PathLike):
        self.source = str(source)
        scheme = urlparse(self.source).scheme
        if "{name}" in self.source:
            self.kind = "template"
        elif isinstance(source, os.PathLike) or scheme in ("", "file") or len(scheme) == 1:  # C:\ paths
            self.kind = "local"
            self.root = Path(urlparse(self.source).path if scheme == "file" else self.source)
        elif scheme == "pipe":
            raise ValueError(
                f"pipe: source {self.source!r} needs a {{name}} placeholder for the file name, "
                "e.g. 'pipe:aws s3 cp s3://bucket/dataset/{name} -'"
            )
        else:
            self.kind = "prefix"

    def url(self, name: str) -> str:
        """The URL of dataset file `name`, a plain file name (anything else is refused: names come
        from the manifest, and a pipe: template runs in a shell)."""
        check_file_name(name, f"{self.source}: file name", DataError)
        if self.kind == "template":
            return self.source.replace("{name}", shlex.quote(name))
        if self.kind == "local":
            path = os.path.normpath(self.root / name)  # lexical: a symlinked shard is the owner's choice
            if os.path.dirname(path) != os.path.normpath(self.root):
                raise DataError(f"{self.source}: file name {name!r} resolves outside the dataset ({path})")
            return path
        return self.source.rstrip("/") + "/" + name

    def read_bytes(self, name: str) -> bytes:
        url = self.url(name)
        try:
            if self.kind == "local":
                with open(url, "rb") as f:
                    return f.read()
            stream = wds_gopen.gopen(url, "rb")
            try:
                return stream.read()
            finally:
                stream.close()
        except FileNotFoundError:
            raise FileNotFoundError(f"{url}: not found (is {self.source!r} a prepared dataset?)") from None
        except Exception as exc:
            raise DataError(f"{url}: cannot read ({type(exc).__name__}: {exc})") from exc

    def __repr__(self) -> str:
        return f"DatasetLocation({self.source!r})"


def load_dataset_manifest(source: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a dataset at a directory or URL."""
    loc = DatasetLocation(source)
    return parse_manifest(loc.read_bytes(MANIFEST).decode("utf-8"), loc.url(MANIFEST))


# ---------------------------------------------------------------------------------------------
# skipped-sample accounting


class _WorkerStats:
    """What one worker skipped since its last batch (each worker process holds its own copy)."""

    def __init__(self):
        self.counts: collections.Counter = collections.Counter()
        self.events: list[dict[str, Any]] = []
        self.current_url: str | None = None
        self.current_shard_bad = False
        self.shards_since_good = 0  # shards opened since one yielded any sample
        self.bad_streak = 0  # samples skipped since the last good one

    def record(self, reason: str, shard: str | None, key: str | None, detail: str) -> None:
        self.counts[reason] += 1
        if len(self.events) < MAX_EVENTS_PER_BATCH:
            self.events.append({"reason": reason, "shard": shard, "key": key, "detail": detail[:300]})

    def reset(self) -> None:
        self.__init__()

    def pending(self) -> bool:
        return bool(self.counts)

    def take(self) -> dict[str, Any]:
        # flat: {"total": n, <reason>: n, ..., "events": [...]}, so summing numeric values works
        out: dict[str, Any] = {"total": sum(self.counts.values()), **self.counts, "events": self.events}
        self.counts = collections.Counter()
        self.events = []
        return out


class SkipReport:
    """Totals of skipped data over many batches, for the trainer to log.

    Args:
        max_events: how many recent (shard, key, reason) events to keep.
    """

    def __init__(self, max_events: int = 200):
        self.counts: collections.Counter = collections.Counter()
        self.events: collections.deque = collections.deque(maxlen=max_events)

    def update(self, batch_or_record: dict[str, Any]) -> None:
        """Add a batch's ``skipped`` record (or the record itself)."""
        rec = batch_or_record.get("skipped", batch_or_record)
        if not rec:
            return
        self.counts.update({k: v for k, v in rec.items() if k != "total" and isinstance(v, int)})
        self.events.extend(rec.get("events", []))

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_metrics(self, prefix: str = "data/skipped") -> dict[str, float]:
        """Flat metrics: ``{prefix}_total`` and ``{prefix}/{reason}``."""
        metrics = {f"{prefix}_total": float(self.total)}
        metrics.update({f"{prefix}/{reason}": float(n) for reason, n in sorted(self.counts.items())})
        return metrics

    def summary(self, max_lines: int = 10) -> str:
        """Readable text: counts and the most recent events with shard and key."""
        if not self.total:
            return "no samples skipped"
        lines = ["skipped " + ", ".join(f"{r}={n}" for r, n in sorted(self.counts.items()))]
        for ev in list(self.events)[-max_lines:]:
            lines.append(f"  {ev['reason']}: shard {ev['shard']} key {ev['key']}: {ev['detail']}")
        return "\n".join(lines)

    def reset(self) -> None:
        self.counts.clear()
        self.events.clear()


# ---------------------------------------------------------------------------------------------
# pipeline stages (module-level classes so that spawned workers can unpickle them)


def _worker_id() -> tuple[int, int]:
    info = get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


def sample_spans(counts: Sequence[int], rank: int, world_size: int) -> list[tuple[int, int, int]]:
    """This rank's contiguous share of a split's samples in manifest order, as (shard index, first,
    end) positions inside each shard it overlaps: ranks get equal shares (within one sample) and
    open only their own shards, a boundary shard in part."""
    total = sum(counts)
    lo, hi = rank * total // world_size, (rank + 1) * total // world_size
    spans, start = [], 0
    for i, n in enumerate(counts):
        a, b = max(lo, start), min(hi, start + n)
        if a < b:
            spans.append((i, a - start, b - start))
        start += n
    return spans


def _assign_shards(urls: Sequence[str], *, epoch: int, seed: int, shuffle: bool, rank: int, world_size: int):
    """This rank's shards for an epoch: one shuffle shared by all ranks, then every world_size-th."""
    order = list(urls)
    if shuffle:
        random.Random(f"shards/{seed}/{epoch}").shuffle(order)
    return order[rank::world_size]


class _ShardSource(IterableDataset):
    """Yields ``dict(url=...)`` for this rank and worker (the node/worker split of webdataset)."""

    def __init__(self, urls, *, rank, world_size, seed, shuffle, resampled, stats, strict):
        super().__init__()
        self.urls = list(urls)
        self.rank, self.world_size = rank, world_size
        self.seed, self.shuffle, self.resampled = seed, shuffle, resampled
        self.stats, self.strict = stats, strict
        self.epoch = 0
        self.split_samples = False  # set by make_loader: samples are split between ranks, not shards
        self.span_urls: list[str] = []  # with split_samples: the shards this rank's span overlaps

    def _mark(self, url: str) -> dict[str, str]:
        if self.resampled and self.stats.shards_since_good > max(20, 3 * len(self.urls)):
            raise DataError(
                f"no readable sample in the last {self.stats.shards_since_good} shards opened "
                f"(last: {self.stats.current_url}); see the skipped-sample report"
            )
        self.stats.current_url = url
        self.stats.current_shard_bad = False
        self.stats.shards_since_good += 1
        return dict(url=url)

    def rank_urls(self) -> list[str]:
        """The shards of this rank in the current epoch. A resampled stream draws from them too, so
        ranks (and nodes) never read the same shard. With fewer shards than ranks every rank reads
        them all when resampled; an epoch split by sample reads the shards of its span only."""
        if self.split_samples:
            return list(self.span_urls)
        if len(self.urls) < self.world_size:  # resampled: every rank draws from all shards
            return list(self.urls)
        return _assign_shards(
            self.urls, epoch=self.epoch, seed=self.seed, shuffle=self.shuffle, rank=self.rank,
            world_size=self.world_size,
        )

    def __iter__(self):
        self.stats.reset()  # a fresh pass (matters with num_workers=0, where the object is reused)
        worker, num_workers = _worker_id()
        mine = self.rank_urls()
        if self.resampled:
            rng = random.Random(f"resampled/{self.seed}/{self.epoch}/{self.rank}/{worker}")
            while True:
                yield self._mark(rng.choice(mine))
        for url in mine[worker::num_workers]:
            yield self._mark(url)


class _ShardErrorHandler:
    """webdataset exception handler: count an unreadable shard once, or raise naming it."""

    def __init__(self, stats: _WorkerStats, strict: bool):
        self.stats, self.strict = stats, strict

    def __call__(self, exn: BaseException) -> bool:
        if isinstance(exn, DataError):
            raise exn
        url = self.stats.current_url
        first = exn.args[0] if getattr(exn, "args", None) else exn
        first = re.sub(r" @ <_io\.\w+ name='[^']*'>", "", str(first))  # the shard is named already
        detail = f"{type(exn).__name__}: {first}"
        if self.strict:
            raise DataError(f"{url}: corrupt or unreadable shard ({detail})") from exn
        if not self.stats.current_shard_bad:
            self.stats.current_shard_bad = True
            self.stats.record("corrupt_shard", url, None, detail)
        return True


class _InSpan:
    """Keeps the samples of a shard whose position lies in this rank's span (`sample_spans`)."""

    def __init__(self, spans: dict[str, tuple[int, int]]):
        self.spans = spans

    def __call__(self, src):
        seen: dict[str, int] = {}
        for sample in src:
            url = sample.get("__url__")
            pos = seen.get(url, 0)
            seen[url] = pos + 1
            first, end = self.spans.get(url, (0, 0))
            if first <= pos < end:
                yield sample


class _RawSampleSeen:
    """Notes that a shard yielded a sample (feeds the resampled-mode guard in `_ShardSource`)."""

    def __init__(self, stats: _WorkerStats):
        self.stats = stats

    def __call__(self, src):
        for sample in src:
            self.stats.shards_since_good = 0
            yield sample


class _SampleShuffle:
    """Shuffle buffer seeded by (seed, epoch, rank, worker): same seed and epoch, same order."""

    def __init__(self, bufsize: int, seed: int, rank: int, source: _ShardSource):
        self.bufsize, self.seed, self.rank, self.source = bufsize, seed, rank, source

    def __call__(self, src):
        worker, _ = _worker_id()
        rng = random.Random(f"samples/{self.seed}/{self.source.epoch}/{self.rank}/{worker}")
        buf: list = []
        for sample in src:
            if len(buf) < self.bufsize:
                buf.append(sample)
                continue
            i = rng.randrange(len(buf))
            buf[i], sample = sample, buf[i]
            yield sample
        rng.shuffle(buf)
        yield from buf


_NPY_MAGIC = b"\x93NUMPY"
_NPY_HEADERS: dict[bytes, tuple[np.dtype, tuple[int, ...], bool, int]] = {}  # header -> dtype, shape, fortran, size


def _load_npy(data: bytes) -> np.ndarray:
    """A ``.npy`` member as a writable array. Samples of a dataset share their few headers, so a
    header is parsed once (``np.lib.format``) and later members are one ``frombuffer`` copy.
    Object arrays, the only way ``.npy`` carries pickled code, are refused (ValueError)."""
    if len(data) < 10 or data[:6] != _NPY_MAGIC:
        raise ValueError("not a .npy member (bad magic)")
    major = data[6]
    head_len, start = (int.from_bytes(data[8:10], "little"), 10) if major == 1 else \
        (int.from_bytes(data[8:12], "little"), 12)
    header = bytes(data[:start + head_len])
    known = _NPY_HEADERS.get(header)
    if known is None:
        stream = io.BytesIO(header)
        version = np.lib.format.read_magic(stream)
        if version not in ((1, 0), (2, 0)):  # 3.0 (utf-8 field names): numpy's own reader, uncached
            return np.load(io.BytesIO(data), allow_pickle=False)
        read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, fortran, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError("object arrays cannot be loaded with allow_pickle=False (they would unpickle)")
        known = (dtype, shape, fortran, math.prod(shape))
        if len(_NPY_HEADERS) < 256:
            _NPY_HEADERS[header] = known
    dtype, shape, fortran, size = known
    if len(data) - len(header) != size * dtype.itemsize:
        raise ValueError(f"truncated .npy: {len(data) - len(header)} data bytes for shape {shape} {dtype}")
    flat = np.frombuffer(data, dtype=dtype, count=size, offset=len(header))
    return flat.reshape(shape[::-1]).T.copy() if fortran else flat.reshape(shape).copy()


class _Decoder:
    """Decode, validate and normalise one kind of sample; bad ones are counted or raise."""

    def __init__(self, manifest: dict[str, Any], stats: _WorkerStats, strict: bool, max_bad_streak: int = 0,
                 shard_names: dict[str, str] | None = None, augment: Augment | None = None,
                 seed: int = 0, rank: int = 0):
        self.max_bad_streak = max_bad_streak
        self.augment = augment
        self.seed, self.rank, self._rng, self._sensor_rng = seed, rank, None, None
        self.shard_names = shard_names or {}  # url -> manifest shard name, for batch["shard"]
        self.kind = manifest["kind"]
        self.stats, self.strict = stats, strict
        self.shapes = {k: tuple(v) for k, v in manifest["sample_shape"].items()}
        self.arrays = set(self.shapes)
        allowed = {f"{name}.npy" for name in self.arrays} | {"json"}
        if self.kind == "wearable":
            allowed.add("txt")
            st = manifest["stats"]["sensor"]
            self.mean = np.asarray(st["mean"], np.float32)
            self.inv_std = (1.0 / np.asarray(st["std"], np.float64)).astype(np.float32)
            self.labels = {label: i for i, label in enumerate(manifest.get("activities", []))}
        else:
            st = manifest["stats"]["sst"]
            self.mean = np.float32(st["mean"])
            self.inv_std = np.float32(1.0 / st["std"])
        self.allowed = allowed

    def _augment(self, meta: dict[str, Any], caption: str, x: np.ndarray, missing: np.ndarray) -> str:
        """The training sample's changes (`sensorlm.data.augment`), each from its own seeded stream
        per rank and loader worker, so a resumed run replays them."""
        if self.augment is None:
            return caption
        if self._rng is None:
            worker, _ = _worker_id()
            self._rng = random.Random(f"captions/{self.seed}/{self.rank}/{worker}")
            self._sensor_rng = random.Random(f"augment/{self.seed}/{self.rank}/{worker}")
        if self.augment.changes_sensor:
            self.augment.sensor(x, missing, self._sensor_rng)
        return self.augment.caption(meta, caption, self._rng)

    def bad(self, reason: str, sample: dict[str, Any], detail: str) -> None:
        url, key = sample.get("__url__"), sample.get("__key__")
        if self.strict:
            raise DataError(f"{url}: sample {key}: {reason}: {detail}")
        self.stats.record(reason, self.shard_names.get(url, url), key, detail)  # the manifest's shard name
        self.stats.bad_streak += 1

    def __call__(self, src):
        for sample in src:
            try:
                out = self.decode(sample)
            except DataError:
                raise
            except Exception as exc:  # anything unforeseen is still a named, counted bad sample
                self.bad("decode_error", sample, f"{type(exc).__name__}: {exc}")
                continue
            if out is not None:
                self.stats.bad_streak = 0
                url = sample.get("__url__")
                out["shard"] = self.shard_names.get(url, url)
                yield out
            elif self.max_bad_streak and self.stats.bad_streak > self.max_bad_streak:
                # resampled streams never end: without this a dataset of only bad samples spins forever
                raise DataError(
                    f"{self.stats.bad_streak} bad samples in a row (last: {sample.get('__url__')} "
                    f"{sample.get('__key__')}); see the skipped-sample report"
                )

    def _arrays(self, sample: dict[str, Any]) -> dict[str, np.ndarray] | None:
        members = {k for k in sample if not k.startswith("__")}
        unexpected = sorted(members - self.allowed)
        if unexpected:
            self.bad("unexpected_member", sample, f"members {unexpected} are not decoded (only .npy/.json/.txt)")
            return None
        if self.kind == "wearable" and "txt" not in members:
            self.bad("missing_caption", sample, "no .txt member")
            return None
        absent = sorted(self.allowed - members)
        if absent:
            self.bad("missing_member", sample, f"missing {absent}")
            return None
        arrays = {}
        for name in self.arrays:
            try:
                a = _load_npy(sample[f"{name}.npy"])
            except Exception as exc:
                self.bad("bad_npy", sample, f"{name}.npy: {type(exc).__name__}: {exc}")
                return None
            if a.shape != self.shapes[name]:
                self.bad("wrong_shape", sample, f"{name} has shape {a.shape}, expected {self.shapes[name]}")
                return None
            arrays[name] = a
        return arrays

    def _float(self, sample, name: str, a: np.ndarray) -> np.ndarray | None:
        if a.dtype not in (np.float32, np.float16):
            self.bad("wrong_dtype", sample, f"{name} has dtype {a.dtype}, expected float32 or float16")
            return None
        a = a.astype(np.float32, copy=False)  # first: numpy's float16 arithmetic is slow
        if not np.isfinite(a).all():
            self.bad("non_finite", sample, f"{name} has {int((~np.isfinite(a)).sum())} NaN/inf values")
            return None
        return a

    def _flags(self, sample, name: str, a: np.ndarray) -> np.ndarray | None:
        if a.dtype not in (np.uint8, np.bool_):
            self.bad("wrong_dtype", sample, f"{name} has dtype {a.dtype}, expected uint8 or bool")
            return None
        return a.astype(bool, copy=False)

    def _meta(self, sample) -> dict[str, Any] | None:
        try:
            meta = json.loads(sample["json"].decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            self.bad("bad_json", sample, f"json: {exc}")
            return None
        if not isinstance(meta, dict):
            self.bad("bad_json", sample, "json is not an object")
            return None
        return meta

    def decode(self, sample: dict[str, Any]) -> dict[str, Any] | None:
        arrays = self._arrays(sample)
        if arrays is None:
            return None
        meta = self._meta(sample)
        if meta is None:
            return None
        key = sample["__key__"]
        if self.kind == "wearable":
            try:
                caption = sample["txt"].decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                self.bad("bad_caption", sample, f"txt is not UTF-8: {exc}")
                return None
            if not caption:
                self.bad("missing_caption", sample, "empty caption")
                return None
            sensor = self._float(sample, "sensor", arrays["sensor"])
            missing = self._flags(sample, "missing", arrays["missing"])
            if sensor is None or missing is None:
                return None
            activity = meta.get("primary_activity")
            label = -1 if activity in (None, "") else self.labels.get(activity)  # -1: unlabelled
            if label is None:
                self.bad("bad_label", sample, f"primary_activity {activity!r} not in manifest")
                return None
            x = (sensor - self.mean) * self.inv_std
            x[missing] = 0.0
            caption = self._augment(meta, caption, x, missing)
            return {"key": key, "sensor": x, "missing": missing, "caption": caption, "label": label}
        out: dict[str, Any] = {"key": key}
        for name in ("daily", "target", "clim"):
            a = self._float(sample, name, arrays[name])
            if a is None:
                return None
            out[name] = a
        for name in ("mask", "padded_days", "holdout", "land"):
            a = self._flags(sample, name, arrays[name])
            if a is None:
                return None
            out[name] = a
        month = meta.get("month")
        if isinstance(month, bool) or not isinstance(month, int) or not 1 <= month <= 12:
            self.bad("bad_metadata", sample, f"month {month!r} is not 1..12")
            return None
        out["month"] = month
        daily = (out["daily"] - self.mean) * self.inv_std
        daily[out["mask"]] = 0.0
        out["daily"] = daily
        for name in ("target", "clim"):
            v = (out[name] - self.mean) * self.inv_std
            v[out["land"]] = 0.0
            out[name] = v
        return out


class _Batcher:
    """Batch decoded samples in the worker, tokenise captions, attach the skipped record."""

    def __init__(self, kind, batch_size, drop_last, stats, tokenizer, text_len):
        self.kind, self.batch_size, self.drop_last = kind, batch_size, drop_last
        self.stats, self.tokenizer, self.text_len = stats, tokenizer, text_len

    def __call__(self, src):
        batch: list = []
        for sample in src:
            batch.append(sample)
            if len(batch) == self.batch_size:
                yield self.collate(batch)
                batch = []
        if batch and not self.drop_last:
            yield self.collate(batch)
        elif self.stats.pending():
            # skips after the last batch still reach the report (the loader drops this item)
            yield {"report_only": True, "skipped": self.stats.take()}

    def collate(self, samples: list[dict[str, Any]]) -> dict[str, Any]:
        batch: dict[str, Any] = {"key": [s["key"] for s in samples], "shard": [s["shard"] for s in samples]}
        if self.kind == "wearable":
            batch["sensor"] = torch.from_numpy(np.stack([s["sensor"] for s in samples]))
            batch["missing"] = torch.from_numpy(np.stack([s["missing"] for s in samples]))
            ids, mask = self.tokenizer.encode([s["caption"] for s in samples], self.text_len)
            batch["input_ids"] = torch.from_numpy(ids)
            batch["attention_mask"] = torch.from_numpy(mask)
            batch["label"] = torch.tensor([s["label"] for s in samples], dtype=torch.int64)
            batch["caption"] = [s["caption"] for s in samples]
        else:
            batch["daily"] = torch.from_numpy(np.stack([s["daily"] for s in samples]))
            batch["mask"] = torch.from_numpy(np.stack([s["mask"] for s in samples]).astype(np.float32))
            batch["padded_days"] = torch.from_numpy(np.stack([s["padded_days"] for s in samples]))
            batch["land"] = torch.from_numpy(np.stack([s["land"] for s in samples]))
            batch["holdout"] = torch.from_numpy(np.stack([s["holdout"] for s in samples]))
            batch["target"] = torch.from_numpy(np.stack([s["target"] for s in samples]))
            batch["clim"] = torch.from_numpy(np.stack([s["clim"] for s in samples]))
            batch["month"] = torch.tensor([s["month"] for s in samples], dtype=torch.int64)
        batch["skipped"] = self.stats.take()
        return batch


def _worker_init(_worker_id: int) -> None:
    # one tokenizer thread pool per worker would oversubscribe the cores (and warn after fork)
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


# ---------------------------------------------------------------------------------------------
# the loader


SHARD_PARTS = ("even", "odd")


def select_shards(manifest: dict[str, Any], split: str, part: str | None = None) -> list[dict[str, Any]]:
    """The manifest entries of a split's shards, or of its even- or odd-numbered ones."""
    if split not in manifest["splits"]:
        raise ValueError(f"no split {split!r} (has {sorted(manifest['splits'])})")
    shards = manifest["splits"][split]["shards"]
    if part is None:
        return shards
    if part not in SHARD_PARTS:
        raise ValueError(f"shard part must be one of {SHARD_PARTS}, got {part!r}")
    return shards[0::2] if part == "even" else shards[1::2]


class ShardLoader:
    """Iterable of batches for one rank; see `make_loader`.

    Attributes:
        manifest: the dataset manifest.
        report: `SkipReport` updated as batches are produced.
        epoch: the epoch whose order the next iteration uses (`set_epoch`).
    """

    def __init__(self, location: DatasetLocation, manifest: dict[str, Any], split: str, shards: list[dict[str, Any]],
                 pipeline, source: _ShardSource, dataloader: DataLoader, spec: LoaderSpec):
        self.location = location
        self.manifest = manifest
        self.kind = manifest["kind"]
        self.split = split
        self.urls = source.urls
        self.pipeline = pipeline
        self._source = source
        self.dataloader = dataloader
        self.spec = spec
        self.batch_size = spec.batch_size
        self.drop_last = spec.drop_last
        # the requested count: each rank runs min(num_workers, its shard count) workers
        self.rank, self.world_size, self.num_workers = spec.rank, spec.world_size, spec.num_workers
        self.resampled = spec.resampled
        self.batches_per_epoch = spec.batches_per_epoch
        self.equalize = spec.equalize
        self.report = SkipReport()
        self.epoch = source.epoch
        self._samples = dict(zip(self.urls, (s["samples"] for s in shards)))

    def set_epoch(self, epoch: int) -> None:
        """Use the shard/sample order of `epoch` from the next iteration on (same for all ranks)."""
        self.epoch = int(epoch)

    def batches_per_rank(self, epoch: int | None = None) -> list[int]:
        """Batches each rank yields in a non-resampled epoch if no sample is skipped."""
        if self.resampled:
            raise TypeError("a resampled loader has no natural epoch length; set batches_per_epoch")
        epoch = self.epoch if epoch is None else epoch
        counts = []
        if self._source.split_samples:
            return [self._span_batches(rank) for rank in range(self.world_size)]
        for rank in range(self.world_size):
            mine = _assign_shards(
                self.urls, epoch=epoch, seed=self._source.seed, shuffle=self._source.shuffle, rank=rank,
                world_size=self.world_size,
            )
            total = 0
            workers = max(1, min(self.num_workers, len(mine)))  # as make_loader caps it on that rank
            for w in range(workers):
                n = sum(self._samples[u] for u in mine[w::workers])
                total += n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
            counts.append(total)
        return counts

    def _span_batches(self, rank: int) -> int:
        spans = sample_spans([self._samples[u] for u in self.urls], rank, self.world_size)
        total = 0
        workers = max(1, min(self.num_workers, len(spans)))  # as make_loader caps it on that rank
        for w in range(workers):
            n = sum(end - first for _, first, end in spans[w::workers])
            total += n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return total

    def __len__(self) -> int:
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        counts = self.batches_per_rank()
        return min(counts) if self.equalize else counts[self.rank]

    def _limit(self) -> int | None:
        if self.batches_per_epoch is not None:
            return self.batches_per_epoch
        if self.resampled:
            return None
        if self.equalize and self.world_size > 1:
            # ranks must take the same number of steps or a collective waits forever
            return min(self.batches_per_rank())
        return None

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._source.epoch = self.epoch  # copied into the workers when they start
        limit = self._limit()
        produced = 0
        if limit == 0:
            return
        for item in self.dataloader:
            self.report.update(item)
            if item.get("report_only"):
                continue
            yield item
            produced += 1
            if limit is not None and produced >= limit:
                break


@dataclass(frozen=True)
class LoaderSpec:
    """How one rank reads one split: every option of `make_loader` but the dataset, split and the
    objects it may be handed (manifest, tokenizer, augment). Checked when built; a bad value is one
    ``ValueError`` naming the field.

    Args:
        batch_size: samples per batch (per rank).
        rank, world_size: this process's data-parallel rank and the number of ranks (pass Ray Train's
            world rank and size; nothing is read from the environment).
        seed: base seed; the same seed and epoch give the same order.
        epoch: starting epoch (`ShardLoader.set_epoch` changes it).
        num_workers: DataLoader worker processes (0 = in this process); capped at this rank's shards.
        shuffle: shuffle shards per epoch and samples in a buffer (False: file order, for eval).
        shuffle_buffer: samples held in each worker's shuffle buffer (0: no sample shuffling).
        resampled: draw shards with replacement forever from this rank's share (from all shards when
            there are fewer shards than ranks); step-based training: set batches_per_epoch or stop by
            step count.
        batches_per_epoch: stop each iteration after this many batches.
        equalize: with world_size > 1 and no batches_per_epoch, stop every rank after the smallest
            rank's batch count so all ranks take the same number of steps.
        drop_last: drop each worker's last partial batch.
        text_len: caption length in tokens (the model's text context); default: the manifest's
            ``text_len`` (48 for the tiny preset), else 64.
        strict: raise `DataError` on the first bad shard or sample instead of skipping it.
        pin_memory: pin batch tensors (default: when CUDA is available).
        prefetch_factor: batches prefetched per worker.
        shard_part: ``even`` or ``odd``: only the split's even- or odd-numbered shards (a sweep
            selects on one part of the validation split and promotes champions on the other).
        split_samples: split by sample instead of by shard: each rank takes a contiguous span of
            the split's samples in manifest order (`sample_spans`) and reads only the shards it
            overlaps, so ranks get equal shares of a split with few or uneven shards, as validation
            wants; automatic when there are fewer shards than ranks. Not with ``resampled``.
    """

    batch_size: int = 32
    rank: int = 0
    world_size: int = 1
    seed: int = 0
    epoch: int = 0
    num_workers: int = 2
    shuffle: bool = True
    shuffle_buffer: int = 256
    resampled: bool = False
    batches_per_epoch: int | None = None
    equalize: bool = True
    drop_last: bool = False
    text_len: int | None = None
    strict: bool = False
    pin_memory: bool | None = None
    prefetch_factor: int = 2
    split_samples: bool = False
    shard_part: str | None = None

    def __post_init__(self) -> None:
        for name, low in (("batch_size", 1), ("world_size", 1), ("rank", 0), ("num_workers", 0),
                          ("shuffle_buffer", 0), ("prefetch_factor", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.rank >= self.world_size:
            raise ValueError(f"rank {self.rank} must be < world_size {self.world_size}")
        n = self.batches_per_epoch
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
            raise ValueError(f"batches_per_epoch must be a non-negative integer or None, got {n!r}")
        t = self.text_len
        if t is not None and (isinstance(t, bool) or not isinstance(t, int) or t < 2):
            raise ValueError(f"text_len must be an integer >= 2, got {t!r}")
        if self.shard_part is not None and self.shard_part not in SHARD_PARTS:
            raise ValueError(f"shard part must be one of {SHARD_PARTS}, got {self.shard_part!r}")


def make_loader(
    source: str | os.PathLike,
    split: str = "train",
    batch_size: int | None = None,
    spec: LoaderSpec | None = None,
    *,
    manifest: dict[str, Any] | None = None,
    tokenizer: SensorTokenizer | None = None,
    augment: Augment | None = None,
    **options: Any,
) -> ShardLoader:
    """Build the streaming loader of one split for one rank.

    Args:
        source: dataset directory or URL (see the module docstring).
        split: ``train``/``val``/``test``.
        batch_size: samples per batch (per rank); default: the spec's, else 32.
        spec: how to read it (`LoaderSpec`); `options` are its fields by name, on top of it.
        manifest: use this manifest instead of reading the dataset's.
        tokenizer: wearable tokenizer (default: the dataset's ``tokenizer.json``).
        augment: wearable training samples' changes (`sensorlm.data.augment.Augment`: caption mix,
            crop in time, channel dropout); None = samples as stored.
        **options: `LoaderSpec` fields (rank, world_size, seed, num_workers, shuffle, ...); an unknown
            name is one ``ValueError``.

    Returns:
        a `ShardLoader`; iterate it for batches. Wearable batch: ``sensor`` (B,T,C) float32
        normalised, ``missing`` (B,T) bool, ``input_ids``/``attention_mask`` (B,L) int64, ``label``
        (B,) int64, ``key``/``caption``/``shard`` (manifest shard name of each sample) lists,
        ``skipped`` dict. SST batch: ``daily`` (B,D,H,W)
        float32 normalised (0 where missing), ``mask`` (B,D,H,W) float32 1=missing,
        ``padded_days`` (B,D) bool, ``land``/``holdout`` (B,H,W) bool, ``target``/``clim``
        (B,H,W) float32 normalised (0 on land; times manifest ``sst_std`` = degC), ``month`` (B,)
        int64, ``key``, ``shard``, ``skipped``. ``skipped`` = {"total": n, <reason>: n, "events": [{reason,
        shard, key, detail}, ...]}: what this batch's worker skipped since its previous batch.
    """
    if batch_size is not None:
        options["batch_size"] = batch_size
    known = {f.name for f in dataclasses.fields(LoaderSpec)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise ValueError(f"make_loader: unknown option {unknown[0]!r} (LoaderSpec fields: {', '.join(sorted(known))})")
    spec = dataclasses.replace(spec or LoaderSpec(), **options)
    location = DatasetLocation(source)
    if manifest is None:
        manifest = parse_manifest(location.read_bytes(MANIFEST).decode("utf-8"), location.url(MANIFEST))
    if split not in manifest["splits"]:
        raise ValueError(f"{location.source}: no split {split!r} (has {sorted(manifest['splits'])})")
    shards = select_shards(manifest, split, spec.shard_part)
    urls = [location.url(s["name"]) for s in shards]
    if not urls:
        raise ValueError(f"{location.source}: split {split!r} has no shards")
    # fewer shards than ranks (or asked): ranks split the samples, each a contiguous span of them
    # read from the shards the span overlaps (validation I/O does not grow with the ranks)
    by_sample = not spec.resampled and (spec.split_samples or len(urls) < spec.world_size)
    spans = sample_spans([int(s["samples"]) for s in shards], spec.rank, spec.world_size) if by_sample else []
    text_len = spec.text_len if spec.text_len is not None else int(manifest.get("text_len") or 64)
    tok = None
    if manifest["kind"] == "wearable":
        tok = tokenizer
        if tok is None:
            tok_file = manifest.get("tokenizer")
            if not tok_file:
                raise ValueError(f"{location.source}: manifest names no tokenizer; pass tokenizer=")
            tok = tokenizer_from_str(location.read_bytes(tok_file).decode("utf-8"), location.url(tok_file))
    num_workers = spec.num_workers
    if not spec.resampled:
        # a worker without shards would only add start-up time (every rank caps the same way)
        num_workers = min(num_workers, len(spans) if by_sample else len(urls[spec.rank::spec.world_size]))
    stats = _WorkerStats()
    src = _ShardSource(urls, rank=spec.rank, world_size=spec.world_size, seed=spec.seed, shuffle=spec.shuffle,
                       resampled=spec.resampled, stats=stats, strict=spec.strict)
    src.split_samples = by_sample
    src.span_urls = [urls[i] for i, _, _ in spans]
    src.epoch = int(spec.epoch)
    pipeline = wds.DataPipeline(
        src,
        wds.tarfile_to_samples(handler=_ShardErrorHandler(stats, spec.strict)),
        _InSpan({urls[i]: (first, end) for i, first, end in spans}) if by_sample else None,
        _RawSampleSeen(stats) if spec.resampled else None,
        _SampleShuffle(spec.shuffle_buffer, spec.seed, spec.rank, src) if spec.shuffle and spec.shuffle_buffer else None,
        _Decoder(manifest, stats, spec.strict,
                 max_bad_streak=max(1000, 3 * manifest["splits"][split]["num_samples"]) if spec.resampled else 0,
                 shard_names=dict(zip(urls, (s["name"] for s in shards))), augment=augment, seed=spec.seed,
                 rank=spec.rank),
        _Batcher(manifest["kind"], spec.batch_size, spec.drop_last, stats, tok, text_len),
    )
    pin_memory = torch.cuda.is_available() if spec.pin_memory is None else spec.pin_memory
    dl_kwargs: dict[str, Any] = {}
    if num_workers > 0:
        dl_kwargs.update(prefetch_factor=spec.prefetch_factor, worker_init_fn=_worker_init)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torch warns about IterableDataset length
        dataloader = DataLoader(pipeline, batch_size=None, num_workers=num_workers, pin_memory=pin_memory,
                                **dl_kwargs)
    return ShardLoader(location, manifest, split, shards, pipeline, src, dataloader, spec)


__all__ = ["DataError", "DatasetLocation", "LoaderSpec", "ShardLoader", "SkipReport", "load_dataset_manifest",
           "make_loader"]
