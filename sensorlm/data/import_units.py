"""`sensorlm import` as units of work, in this process or spread over Ray tasks.

Three stages, each a list of independent units: (1) one task per export file (or per byte range
of a large CSV, `sensorlm.data.csv_ranges`) parses it in chunks and writes each chunk's rows per
subject to a scratch folder; (2) one task per subject reads its
pieces (in file and row order), windows and captions them (`sensorlm.data.windowing`) and writes
its windows as one Parquet file; (3) one task per part of the dataset writes its Parquet file and
shards (`sensorlm.data.import_parts`). A task's memory is bounded by one chunk or one subject, never
the export. Each task returns a small summary (counts, piece paths, each window's split unit and
label); the driver merges them in unit order, so the result does not depend on how many workers
ran the units or in which order they finished.

With ``workers`` 1 the units run here, one after the other; with more, as Ray tasks of one CPU
each, at most ``workers`` at once, on the local Ray or the cluster the job runs on. (Ray Data's
``map`` was tried first: on 2 CPUs its resource budget ran one task at a time.) The scratch folder
sits beside the output: every node must see it, so on a multi-node cluster import to shared
storage (docs/cluster.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from sensorlm.data.csv_ranges import CsvRange
from sensorlm.data.device_reading import CHUNK_ROWS, read_long_chunks, recording_frame
from sensorlm.data.import_spec import ChannelSpec, DeviceImportError, ImportSpec
from sensorlm.data.windowing import subject_rows


@dataclasses.dataclass(frozen=True)
class FileUnit:
    """Stage 1: one export file (or one byte range of it), its format (`sensorlm.data.formats`)
    and, for long-format files, the channels to parse and the rows parsed at once (a task's memory)."""

    index: int
    path: str
    fmt: str
    channels: tuple[ChannelSpec, ...] = ()
    chunk_rows: int = CHUNK_ROWS
    span: CsvRange | None = None  # one byte range of a large CSV (`sensorlm.data.csv_ranges`), else the file


@dataclasses.dataclass(frozen=True)
class SubjectUnit:
    """Stage 2: one subject, its pieces from stage 1 in file and row order, the dataset's channels."""

    index: int
    subject: str
    pieces: tuple[str, ...]
    channels: tuple[ChannelSpec, ...]


def _subject_tag(subject: str) -> str:
    return hashlib.sha1(subject.encode()).hexdigest()[:16]


def read_file(unit: FileUnit, spec: ImportSpec, scratch: Path) -> dict[str, Any]:
    """Stage 1: parse one export file (a local copy of a URL's) and write its rows per subject
    (time and channel columns)."""
    from sensorlm.data.object_store import local_copy

    with local_copy(unit.path, scratch / "downloads") as path:
        try:
            return _read_local_file(unit, path, spec, scratch)
        except ValueError as exc:  # DeviceImportError, DeviceFormatError: name the URL, not the copy
            if str(path) == unit.path or str(path) not in str(exc):
                raise
            raise type(exc)(str(exc).replace(str(path), unit.path)) from None


def _read_local_file(unit: FileUnit, path: Path, spec: ImportSpec, scratch: Path) -> dict[str, Any]:
    from sensorlm.data.formats import LONG, get_format

    pieces: dict[str, list[str]] = {}
    out: dict[str, Any] = {"rows": 0, "labels": None}

    def write(k: int, frame) -> None:
        out["rows"] += len(frame)
        for subject, part in frame.groupby("subject", sort=True):
            piece = scratch / "pieces" / f"{unit.index:06d}-{k:05d}-{_subject_tag(str(subject))}.parquet"
            part.drop(columns="subject").reset_index(drop=True).to_parquet(piece)
            pieces.setdefault(str(subject), []).append(str(piece))

    if unit.fmt == LONG:
        channels = list(unit.channels)
        values: dict[str, int] = dict.fromkeys((c.name for c in channels), 0)
        for k, chunk in enumerate(read_long_chunks(path, spec, channels, unit.chunk_rows, unit.span)):
            for c in channels:
                values[c.name] += int(chunk[c.name].notna().sum())
            write(k, chunk)
        out.update(description="long-format table", notes=[])
    else:
        form = get_format(unit.fmt)
        recording = form.read(path, spec.subject)
        frame, channels = recording_frame(path, recording, spec)
        values = {c.name: int(frame[c.name].notna().sum()) for c in channels}
        write(0, frame)
        out.update(description=form.description, notes=list(recording.notes))
        if recording.labels is not None and len(recording.labels):
            out["labels"] = str(scratch / "labels" / f"{unit.index:06d}.parquet")
            recording.labels.to_parquet(out["labels"])
    out.update(pieces=pieces, channels=[dataclasses.asdict(c) for c in channels], values=values)
    return out


def window_subject(unit: SubjectUnit, spec: ImportSpec, labels_path: str | None, scratch: Path) -> dict[str, Any]:
    """Stage 2: one subject's windows -> ``windows/{index}.parquet``; its counts and split units."""
    import pandas as pd
    import pyarrow.parquet as pq

    from sensorlm.data.schema import schema_for, write_rows

    names = [c.name for c in unit.channels]
    frame = pd.concat([pd.read_parquet(p) for p in unit.pieces], ignore_index=True).reindex(columns=["time", *names])
    labels = None
    if labels_path:
        labels = pq.read_table(labels_path, filters=[("subject", "==", unit.subject)]).to_pandas().set_index("_row")
    rows, counts, used = subject_rows(unit.subject, frame, list(unit.channels), spec, labels)
    path = None
    if rows:
        path = str(scratch / "windows" / f"{unit.index:06d}.parquet")
        schema = schema_for("wearable", seq_len=spec.seq_len, channels=[(c.name, c.unit) for c in unit.channels])
        write_rows([{k: v for k, v in r.items() if k != "_unit"} for r in rows], path, schema)
    return {"path": path, "counts": counts, "used_labels": used,
            "windows": [[list(r["_unit"]), r["primary_activity"]] for r in rows]}


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM on Linux (ru_maxrss there keeps the peak of the
    process that exec'd it), else ru_maxrss."""
    import resource
    import sys

    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration, ValueError):
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
        return rss / (2**20 if sys.platform == "darwin" else 2**10)


def warm_up(workers: int) -> None:
    """Start `workers` Ray worker processes importing what the units need (pandas, scipy, the
    captioner: about 1.5 s each), so that this overlaps the driver's planning and reading."""
    import ray

    from sensorlm.ray_runtime import init_ray

    init_ray()

    def _imports() -> None:
        import importlib

        for name in ("pandas", "pyarrow.parquet", "scipy.signal", "sensorlm.data.formats", "sensorlm.data.windowing"):
            importlib.import_module(name)

    task = ray.remote(num_cpus=1)(_imports)
    for _ in range(workers):
        task.remote()


def _error_classes() -> dict[str, type[Exception]]:
    from sensorlm.data.formats import DeviceFormatError
    from sensorlm.data.schema import SchemaError
    from sensorlm.data.shards import ShardError

    return {c.__name__: c for c in (DeviceImportError, DeviceFormatError, SchemaError, ShardError, FileNotFoundError,
                                    ValueError)}


def _guarded(fn: Callable[[Any], dict], describe: Callable[[Any], str]) -> Callable[[Any], dict]:
    """A unit's result, or its error as one line and its class: a bad file must fail with the same
    one-line error whichever process read it (Ray would wrap it in its own traceback)."""

    classes = _error_classes()

    def run(unit) -> dict:
        try:
            return {"ok": fn(unit), "peak_rss_mb": peak_rss_mb()}
        except tuple(classes.values()) as exc:
            kind = next(name for name, c in classes.items() if isinstance(exc, c))
            return {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__, "kind": kind}
        except Exception as exc:  # an unexpected failure: name the unit, keep the traceback's end
            return {"error": f"{describe(unit)}: {type(exc).__name__}: {exc}", "kind": "DeviceImportError",
                    "trace": traceback.format_exc(limit=-3)}

    return run


def guided_batch(total: int, left: int, workers: int) -> int:
    """Units in the next batch: at most an eighth of a worker's share (a batch amortizes a
    task's overhead over units that may take 30 ms), shrinking with the units left so that the
    last batches are single units and no worker idles long at the end of a stage (guided
    scheduling, as OpenMP's ``schedule(guided)``)."""
    return max(1, min(total // (8 * workers), left // (4 * workers)))


def run_units(fn: Callable[[Any], dict], units: Sequence[Any], workers: int, what: str,
              describe: Callable[[Any], str], log: Callable[[str], None]) -> list[dict]:
    """`fn` over `units`, here (``workers`` <= 1) or as Ray tasks; results in unit order.

    Here the first failing unit raises its own error. On Ray the first failed unit in unit order
    (so the same one however the work was spread) raises the same class with the same one-line
    message. Progress (units done, units/s, ETA) is logged about every 10% of the units.
    """
    results: list[dict | None] = [None] * len(units)
    t0, every = time.perf_counter(), max(1, len(units) // 10)

    def done(i: int, result: dict, n: int) -> None:
        results[i] = result
        if n % every == 0 or n == len(units):
            rate = n / max(time.perf_counter() - t0, 1e-9)
            eta = (len(units) - n) / rate if rate else 0.0
            log(f"{what}: {n}/{len(units)} ({rate:.1f}/s, ETA {eta:.0f} s)")

    if workers <= 1 or len(units) <= 1:
        for n, (i, unit) in enumerate(enumerate(units), 1):
            done(i, {"ok": fn(unit)}, n)
        return [r["ok"] for r in results]

    import ray

    from sensorlm.ray_runtime import init_ray

    init_ray()
    # Units go in batches (`guided_batch`: a unit can be a 30-ms file, less than a task's
    # overhead), two batches per worker in flight so a worker never waits on the driver, results
    # taken as they finish. A task whose worker or node died runs again (Ray's default for system
    # failures; a unit's files are rewritten whole); a bad input is a result, never retried.
    guarded = _guarded(fn, describe)

    def run_batch(batch: list[tuple[int, Any]]) -> list[tuple[int, dict]]:
        out = []
        for i, unit in batch:
            out.append((i, guarded(unit)))
            if "error" in out[-1][1]:
                break
        return out

    task = ray.remote(num_cpus=1)(run_batch)
    todo = list(enumerate(units))
    pending: list[Any] = []
    n = at = 0
    while True:
        while len(pending) < 2 * workers and at < len(todo):
            size = guided_batch(len(todo), len(todo) - at, workers)
            pending.append(task.remote(todo[at: at + size]))
            at += size
        if not pending:
            break
        ready, pending = ray.wait(pending, num_returns=1)
        for i, result in ray.get(ready[0]):
            n += 1
            done(i, result, n)
    results = [r if r is not None else {"error": "not run (an earlier unit of its batch failed)", "kind": "skip"}
               for r in results]
    peak = max(r.get("peak_rss_mb", 0.0) for r in results)  # (0 where a unit failed)
    log(f"{what}: peak memory of a Ray worker {peak:.0f} MB")
    for result in results:
        if "error" in result and result["kind"] != "skip":
            if result.get("trace"):
                log(result["trace"].rstrip())
            raise _error_classes().get(result["kind"], DeviceImportError)(result["error"])
    return [r["ok"] for r in results]


def ray_cpus() -> int | None:
    """The CPUs of the Ray this process already runs on (initialized, or ``RAY_ADDRESS`` set), else None."""
    import os

    import ray

    if not ray.is_initialized() and not os.environ.get("RAY_ADDRESS"):
        return None
    from sensorlm.ray_runtime import init_ray

    init_ray()
    return int(ray.cluster_resources().get("CPU", 1))
