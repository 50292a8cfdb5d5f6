"""Device exports in: timestamped rows -> fixed-grid windows -> captioned wearable dataset.

A device export is long-format CSV or Parquet: a time column, an optional subject column and one
column per channel, in the device's own units and epochs (15 s, 30 s, 60 s, irregular), or a
vendor format of `sensorlm.data.formats`. pandas does the time handling: rows are sorted
(out-of-order rows counted), duplicate timestamps averaged (counted), each channel resampled onto
a fixed grid (default one minute; mean for rates and levels, sum for counts: `CHANNEL_KINDS`,
overridable per channel) and cut into windows (default a calendar day from local midnight; length
and stride configurable). A grid point without any data is flagged missing; windows under
``min_coverage`` are dropped and counted. Label intervals (``subject, start, end, label``) or day
labels (``subject, date, label``) become each window's activities and main label. Captions are
computed from the data (`sensorlm.data.captioner`).

The work is one unit per file (with several workers, per byte range of a large local CSV:
`sensorlm.data.csv_ranges`), then one per subject (`sensorlm.data.import_units`), then one per
part of about 4,096 windows that writes its Parquet file and shards (`sensorlm.data.import_parts`),
here or on ``workers`` Ray tasks: the same input gives the same dataset (samples, keys, splits,
shards, statistics, report) with any number of workers; parts of another size would cut shards
elsewhere, with the same samples and statistics equal to float rounding. The tokenizer is trained
on the same captions in the same order, but the `tokenizers` trainer breaks frequency ties in an
order of its own in every process, so two imports (with one worker or many) may number a few
subword tokens differently. The dataset is built in a hidden folder beside ``out`` and renamed
only when complete, so a failed import leaves nothing under the final name. What was
dropped, filled or fixed is in ``import_report.json`` and the manifest's ``import`` field.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from sensorlm.data.captioner import prompt_for
from sensorlm.data.device_reading import CHUNK_ROWS, long_header_channels, read_labels
from sensorlm.data.import_spec import (
    ChannelSpec,
    DeviceImportError,
    ImportSpec,
    SplitSpec,
    channels_from_header,
    load_import_spec,
)
from sensorlm.data.import_parts import plan_parts, write_part
from sensorlm.data.import_units import FileUnit, SubjectUnit, read_file, run_units, window_subject
from sensorlm.data.prepare import DEFAULT_MAX_BYTES, DEFAULT_MAX_COUNT
from sensorlm.data.windowing import SUBJECT_COUNTS, main_label, split_windows
from sensorlm.typed_config import to_dict

REPORT = "import_report.json"


@dataclass
class _Report:
    files: list[str] = field(default_factory=list)
    rows: int = 0
    out_of_order_rows: int = 0
    duplicate_timestamps: int = 0
    subjects: list[str] = field(default_factory=list)
    windows_kept: int = 0
    windows_dropped_low_coverage: int = 0
    windows_dropped_empty: int = 0
    values_filled: int = 0
    channel_absent_in_window: int = 0
    labels: int = 0
    labels_outside_data: int = 0
    windows_labelled: int = 0
    windows_unlabelled: int = 0
    split_by: str = ""
    splits: dict[str, int] = field(default_factory=dict)
    formats: dict[str, str] = field(default_factory=dict)  # file -> format read
    label_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> label -> windows


def _file_units(paths: Sequence[str | Path], spec: ImportSpec, fmt: str, chunk_rows: int) -> list[FileUnit]:
    """Each file's format (detected unless `fmt` names one) and, for long-format files, the
    channels to parse: the spec's, else those of the first long-format file's headers."""
    import tempfile

    from sensorlm.data.formats import LONG, detect
    from sensorlm.data.object_store import local_copy

    units, long_channels = [], tuple(spec.channels)
    with tempfile.TemporaryDirectory(prefix="sensorlm-heads-") as heads:
        for i, location in enumerate(map(str, paths)):
            # of a URL, the first 64 KiB (its header) will do, but Parquet keeps its schema at the end
            head = None if location.lower().endswith(".parquet") else 1 << 16
            with local_copy(location, Path(heads), head=head) as p:
                name = detect(p) if fmt == "auto" else fmt
                if name == LONG and not long_channels:
                    long_channels = tuple(long_header_channels(p, spec))
            units.append(FileUnit(i, location, name, long_channels if name == LONG else (), chunk_rows))
    return units


def _cut_large_files(units: list[FileUnit], workers: int, log: Callable[[str], None]) -> list[FileUnit]:
    """With several workers, each large local CSV as byte ranges read in parallel, their rows
    counted first (`sensorlm.data.csv_ranges`); units renumbered in file and range order."""
    from sensorlm.data import csv_ranges
    from sensorlm.data.formats import LONG

    planned = {u.index: csv_ranges.plan_ranges(u.path) for u in units if u.fmt == LONG and csv_ranges.can_cut(u.path)}
    planned = {i: r for i, r in planned.items() if len(r) > 1}
    for i in list(planned):  # the header line, checked as a range is
        if problem := csv_ranges.scan_range(units[i].path, 0, planned[i][0][0])["problem"]:
            log(f"{_name(units[i].path)}: read by one task ({problem} in its header)")
            del planned[i]
    if not planned:
        return units
    todo = [(units[i].path, a, b) for i, ranges in planned.items() for a, b in ranges]
    scans = iter(run_units(lambda r: csv_ranges.scan_range(*r), todo, workers, "scan ranges",
                           lambda r: f"{r[0]} bytes {r[1]}-{r[2]}", log))
    out: list[FileUnit] = []
    for unit in units:
        ranges = planned.get(unit.index, [])
        found = [next(scans) for _ in ranges]
        if problem := next((f["problem"] for f in found if f["problem"]), None):
            log(f"{_name(unit.path)}: read by one task ({problem})")
        if not ranges or problem:
            out.append(replace(unit, index=len(out)))
            continue
        log(f"{_name(unit.path)}: read in parallel as {len(ranges)} byte ranges")
        rows, lines = 0, 1  # the header line
        for (start, end), f in zip(ranges, found):
            out.append(replace(unit, index=len(out), span=csv_ranges.CsvRange(start, end, rows, lines)))
            rows, lines = rows + f["rows"], lines + f["lines"]
    return out


def _name(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1]


def _merge_files(units: list[FileUnit], read: list[dict], fmt: str, report: _Report,
                 log: Callable[[str], None]) -> tuple[list[ChannelSpec], dict[str, list[str]], list[str]]:
    """The dataset's channels (every file's, in file order), each subject's pieces in file and row
    order, and the label files the device files carried."""
    channels: list[ChannelSpec] = []
    pieces: dict[str, list[str]] = {}
    values: dict[str, int] = {}
    for unit, r in zip(units, read):
        if not (unit.span and unit.span.lines_before > 1):  # a file, or the first range of one
            name = _name(unit.path)
            log(f"{name}: {r['description']}{' (detected)' if fmt == 'auto' else ''}" + "".join(f"; {n}" for n in r["notes"]))
            report.formats[name] = unit.fmt
            report.files.append(name)
        report.rows += r["rows"]
        known = {c.name for c in channels}
        channels += [ChannelSpec(**c) for c in r["channels"] if c["name"] not in known]
        for ch, n in r["values"].items():
            values[ch] = values.get(ch, 0) + n
        for subject, paths in r["pieces"].items():
            pieces.setdefault(subject, []).extend(paths)
    for ch in channels:
        if not values.get(ch.name):
            raise DeviceImportError(f"{', '.join(report.files)}: channel {ch.name!r} has no numeric value in any row")
    return channels, pieces, [r["labels"] for r in read if r["labels"]]


def _write_labels(labels: str | Path | None, carried: list[str], spec: ImportSpec, subjects: list[str],
                  scratch: Path) -> str | None:
    """The user's label file, then the labels the device files carried, as one Parquet file with
    each interval's row number (``_row``): every subject's task reads only its own rows."""
    import pandas as pd

    frames = [read_labels(labels, spec, subjects)] if labels else []
    frames += [pd.read_parquet(p) for p in carried]
    if not frames:
        return None
    frame = pd.concat(frames, ignore_index=True)
    frame["subject"] = frame["subject"].astype(str)
    frame["_row"] = range(len(frame))
    path = scratch / "labels.parquet"
    frame.to_parquet(path)
    return str(path)


def _merge_parts(parts: list[dict], out: Path, vocab_size: int | None, text_len: int | None,
                 log: Callable[[str], None]) -> dict[str, Any]:
    """The tokenizer, trained on the parts' training captions, and the parts' shards as one dataset."""
    from sensorlm.data.prepare import dataset_extra
    from sensorlm.data.schema import ParquetSource
    from sensorlm.data.shards import merge_shard_parts

    sources = [ParquetSource(p["parquet"], "wearable") for p in parts]
    extra = dataset_extra("wearable", sources, out, {}, vocab_size, text_len, None, log)
    info = sources[0].info
    return merge_shard_parts(parts, out, info, parts[0]["settings"], activities=info.activities, extra=extra, log=log)


def _windows_and_report(units: list[FileUnit], spec: ImportSpec, labels, fmt: str, workers: int, scratch: Path,
                        report: _Report, log: Callable[[str], None]):
    """Stages 1 and 2 (`sensorlm.data.import_units`) and their summaries merged into `report`."""
    for sub in ("pieces", "labels", "windows"):
        (scratch / sub).mkdir(parents=True, exist_ok=True)
    read = run_units(functools.partial(read_file, spec=spec, scratch=scratch), units, workers, "read files",
                     lambda u: u.path, log)
    channels, pieces, carried = _merge_files(units, read, fmt, report, log)
    report.subjects = sorted(pieces)
    labels_path = _write_labels(labels, carried, spec, report.subjects, scratch)
    subjects = [SubjectUnit(i, s, tuple(pieces[s]), tuple(channels)) for i, s in enumerate(report.subjects)]
    windowed = run_units(functools.partial(window_subject, spec=spec, labels_path=labels_path, scratch=scratch),
                         subjects, workers, "window subjects", lambda u: f"subject {u.subject!r}", log)
    used: set[int] = set()
    for w in windowed:
        for k in SUBJECT_COUNTS:
            setattr(report, k, getattr(report, k) + w["counts"][k])
        used.update(w["used_labels"])
    if labels_path:
        import pyarrow.parquet as pq

        report.labels = pq.read_metadata(labels_path).num_rows
        report.labels_outside_data = report.labels - len(used)
    return channels, windowed


def import_device_export(
    exports: Sequence[str | Path],
    out_dir: str | Path,
    *,
    spec: ImportSpec | None = None,
    labels: str | Path | None = None,
    log: Callable[[str], None] | None = print,
    fmt: str = "auto",
    workers: int = 1,
    chunk_rows: int = CHUNK_ROWS,
    scratch: str | Path | None = None,
    max_count: int | None = None,
    dtype: str = "float32",
    vocab_size: int | None = None,
    text_len: int | None = None,
) -> dict[str, Any]:
    """Import device exports (and optional labels) into a dataset directory; return its manifest.

    Args:
        exports: device files (paths or fsspec URLs such as ``s3://bucket/study/P01.csv``):
            long-format CSV or Parquet, or any format of `sensorlm.data.formats`.
        out_dir: the dataset directory to create (must not exist yet or be empty), or an fsspec
            URL (``s3://bucket/ds``; must hold nothing yet): built under `scratch`, then uploaded.
        spec: how to read them (default: `ImportSpec()`, channels from ``name[unit]`` headers).
        labels: label intervals or day labels (CSV/Parquet), or None.
        log: progress printer, or None.
        fmt: the format of every file, or "auto": each file's own, by content and extension (logged).
        workers: 1 = in this process; more = that many Ray tasks at once (same result).
        chunk_rows: rows of a long-format file parsed at once (bounds a task's memory).
        scratch: where a URL output is built (default: the system's temporary folder); with
            several workers on several nodes, a shared folder every node sees.
        max_count, dtype, vocab_size, text_len: as for `prepare_dataset` (samples per shard, float
            storage, tokenizer vocabulary, the loader's caption length).
    """
    from sensorlm.data.schema import schema_for

    from sensorlm.data.object_store import check_empty, is_url, publish

    spec = spec or ImportSpec()
    log = log or (lambda msg: None)
    if not exports:
        raise DeviceImportError("no device export files given")
    if is_url(out_dir):  # built in a local folder, then uploaded (manifest last)
        import tempfile

        check_empty(str(out_dir))
        local = Path(tempfile.mkdtemp(prefix="sensorlm-import-", dir=scratch))
        try:
            manifest = import_device_export(exports, local / "dataset", spec=spec, labels=labels, log=log, fmt=fmt,
                                            workers=workers, chunk_rows=chunk_rows, max_count=max_count, dtype=dtype,
                                            vocab_size=vocab_size, text_len=text_len)
            publish(local / "dataset", str(out_dir), log)
        finally:
            shutil.rmtree(local, ignore_errors=True)
        return manifest
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DeviceImportError(f"{out}: exists and is not empty; import into a new directory")
    report = _Report()
    tmp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if workers > 1:
            from sensorlm.data.import_units import warm_up

            warm_up(workers)
        units = _file_units(exports, spec, fmt, chunk_rows)
        if workers > 1:  # one worker reads a file in order anyway: no need to count its rows first
            units = _cut_large_files(units, workers, log)
        channels, windowed = _windows_and_report(units, spec, labels, fmt, workers, tmp / "work", report, log)
        if not report.windows_kept:
            raise DeviceImportError(
                f"{', '.join(report.files)}: no window reaches min_coverage {spec.min_coverage} "
                f"({report.windows_dropped_low_coverage} under it, {report.windows_dropped_empty} empty)")
        windows = [(tuple(u), lab) for w in windowed for u, lab in w["windows"]]
        splits, fields = split_windows(windows, spec.split, DeviceImportError)
        for k, v in fields.items():
            setattr(report, k, v)
        label_set = sorted({lab for _, lab in windows if lab})
        prompts = {lab: prompt_for(lab, spec.prompt_template) for lab in label_set}
        extra = {"channel_kinds": {c.name: c.kind for c in channels}, "prompt_template": spec.prompt_template,
                 "prompts": prompts, "step_minutes": spec.step_min, "import": vars(report),
                 **({"folds": spec.split.folds} if spec.split.folds else {})}
        schema = schema_for("wearable", seq_len=spec.seq_len, channels=[(c.name, c.unit) for c in channels],
                            activities=label_set, extra=extra)
        units = plan_parts(windowed, splits)
        (tmp / "parquet").mkdir()
        shard_args = {"max_count": max_count or DEFAULT_MAX_COUNT, "max_bytes": DEFAULT_MAX_BYTES, "dtype": dtype,
                      "fingerprint": {"sources": [f"import-{u.index:05d}.parquet" for u in units]}}
        parts = run_units(functools.partial(write_part, schema=schema, out=tmp, shard_args=shard_args), units, workers,
                          "write shards", lambda u: f"part {u.index} ({len(u.splits)} windows)", log)
        shutil.rmtree(tmp / "work")
        (tmp / REPORT).write_text(json.dumps({"spec": to_dict(spec), **vars(report)}, indent=1))
        manifest = _merge_parts(parts, tmp, vocab_size, text_len, log)
        if out.exists():
            out.rmdir()  # empty, checked above
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    r = report
    split_counts = ", ".join(f"{n} {s}" for s, n in r.splits.items())
    log(f"import: {r.rows} rows of {len(r.subjects)} subjects -> {r.windows_kept} windows "
        f"({split_counts} by {r.split_by}); dropped "
        f"{r.windows_dropped_low_coverage} under coverage {spec.min_coverage}, {r.windows_dropped_empty} empty; "
        f"{r.duplicate_timestamps} duplicate timestamps averaged, {r.out_of_order_rows} out-of-order rows sorted; "
        f"{r.windows_labelled} labelled windows ({len(label_set)} labels), {r.labels_outside_data} label "
        f"intervals outside the data")
    return manifest


__all__ = ["ChannelSpec", "DeviceImportError", "ImportSpec", "SplitSpec", "channels_from_header",
           "import_device_export", "load_import_spec", "main_label", "read_labels"]
