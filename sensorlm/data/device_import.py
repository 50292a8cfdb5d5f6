"""Device exports in: timestamped rows -> fixed-grid windows -> captioned wearable dataset.

A device export is long-format CSV or Parquet: a time column, an optional subject column and one
column per channel, in the device's own units and epochs (15 s, 30 s, 60 s, irregular). pandas
does the time handling: rows are sorted (out-of-order rows counted), duplicate timestamps averaged
(counted), each channel resampled onto a fixed grid (default one minute; mean for rates and
levels, sum for counts: `CHANNEL_KINDS`, overridable per channel) and cut into windows (default a
calendar day from local midnight; length and stride configurable). A grid point without any data
is flagged missing; windows under ``min_coverage`` are dropped and counted. Label intervals
(``subject, start, end, label``) or day labels (``subject, date, label``) become each window's
activities and main label. Captions are computed from the data (`sensorlm.data.captioner`).

The result goes through the same Parquet -> shards path as every dataset (`prepare_dataset`); it is
built in a hidden folder beside ``out`` and renamed only when complete, so a failed import leaves
nothing under the final name. What was dropped, filled or fixed is in ``import_report.json`` and the
manifest's ``import`` field.
"""

from __future__ import annotations

import collections
import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Sequence

import numpy as np

from sensorlm.data.folds import assign_folds, fold_split
from sensorlm.typed_config import ConfigError, from_dict, load_yaml, to_dict
from sensorlm.data.captioner import (
    check_prompt_template,
    CHANNEL_KINDS,
    DEFAULT_PROMPT_TEMPLATE,
    ChannelInfo,
    caption_window,
    infer_kind,
    prompt_for,
)

REPORT = "import_report.json"
_HEADER = re.compile(r"^\s*(?P<name>[^\[\]]+?)\s*\[(?P<unit>[^\[\]]*)\]\s*$")
_NAME_OK = re.compile(r"^[A-Za-z0-9_ .-]+\Z")


class DeviceImportError(ValueError):
    """A device export, channel spec or label file cannot be imported; the message names the file,
    the row or time and the column."""



@dataclass
class ChannelSpec:
    """One channel: its name in the dataset, unit, kind (`CHANNEL_KINDS`), source column, aggregation.

    Args:
        name: channel name in the dataset (letters, digits, ``_ .-``).
        unit: unit as the device reports it.
        kind: what it measures; decides the resampling and which captions it feeds.
        column: the export's column (default: ``name``, or ``name[unit]``).
        agg: ``mean``, ``sum``, ``max``, ``min`` or ``last`` (default: by kind).
    """

    name: str
    unit: str = ""
    kind: str = "level"
    column: str | None = None
    agg: str | None = None

    def __post_init__(self):
        if not _NAME_OK.match(self.name):
            raise ConfigError(f"channel {self.name!r}: names may hold letters, digits, '_', ' ', '.', '-'")
        if self.kind not in CHANNEL_KINDS:
            raise ConfigError(f"channel {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(CHANNEL_KINDS)})")
        if self.agg is not None and self.agg not in ("mean", "sum", "max", "min", "last"):
            raise ConfigError(f"channel {self.name!r}: agg {self.agg!r} is not one of mean, sum, max, min, last")

    @property
    def aggregation(self) -> str:
        return self.agg or CHANNEL_KINDS[self.kind]


@dataclass
class SplitSpec:
    """How windows are split into train and val: by ``subject``, by ``day`` (subject-day), or
    ``auto`` (by subject with 5 or more subjects, else by day). ``folds`` >= 2 deals the units
    into that many folds instead (`sensorlm.data.folds`; ``val_fraction`` is then unused)."""

    by: Literal["auto", "subject", "day"] = "auto"
    val_fraction: float = 0.2
    seed: int = 0
    folds: int = 0

    def __post_init__(self):
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"split.val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"split.folds must be 0 (one train/val split) or >= 2, got {self.folds}")


@dataclass
class ImportSpec:
    """How to read one kind of device export (a YAML or JSON file; every field has a default).

    Args:
        time_column: the timestamp column.
        subject_column: the subject column (None: one subject per file, named by ``subject`` or the file stem).
        subject: subject name when there is no subject column.
        time_format: strftime format of the timestamps (None: ISO 8601).
        timezone: zone that tz-aware timestamps are converted to before the offset is dropped
            (None: their own offset); naive timestamps are taken as local time.
        grid_seconds: resampling grid.
        window_minutes / stride_minutes: window length and stride; windows start at local midnight.
        min_coverage: windows with a smaller fraction of grid points holding data are dropped.
        main_label_min_fraction: the most-covering label becomes the window's main label only if
            it covers at least this fraction of the window.
        prompt_template: zero-shot prompt (and the captions' summary sentence), ``{label}`` placeholder.
        channels: the channels to import; empty = every ``name[unit]`` column of the export.
    """

    time_column: str = "time"
    subject_column: str | None = "subject"
    subject: str | None = None
    time_format: str | None = None
    timezone: str | None = None
    grid_seconds: int = 60
    window_minutes: int = 1440
    stride_minutes: int | None = None
    min_coverage: float = 0.5
    main_label_min_fraction: float = 0.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    split: SplitSpec = field(default_factory=SplitSpec)
    channels: list[ChannelSpec] = field(default_factory=list)

    def __post_init__(self):
        if self.grid_seconds < 1:
            raise ConfigError(f"grid_seconds must be >= 1, got {self.grid_seconds}")
        if self.window_minutes * 60 % self.grid_seconds:
            raise ConfigError(f"window_minutes {self.window_minutes} is not a whole number of {self.grid_seconds}-s grid steps")
        stride = self.stride_minutes or self.window_minutes
        if stride < 1 or stride * 60 % self.grid_seconds:
            raise ConfigError(f"stride_minutes {stride} must be a positive whole number of grid steps")
        if not 0 <= self.min_coverage <= 1:
            raise ConfigError(f"min_coverage must lie in [0, 1], got {self.min_coverage}")
        check_prompt_template(self.prompt_template, "prompt_template", ConfigError)
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ConfigError(f"channels: duplicate names in {names}")

    @property
    def seq_len(self) -> int:
        return self.window_minutes * 60 // self.grid_seconds

    @property
    def step_min(self) -> float:
        return self.grid_seconds / 60.0


def load_import_spec(path: str | Path | None = None, **overrides: Any) -> ImportSpec:
    """Read a channel spec (YAML/JSON; JSON is YAML) and apply keyword overrides (None = unset)."""
    data = to_dict(ImportSpec())
    if path is not None:
        raw = load_yaml(path)
        chans = raw.get("channels")
        if isinstance(chans, dict):  # {name: {unit, kind, ...}} is accepted too
            raw["channels"] = [{"name": k, **(v or {})} for k, v in chans.items()]
        unknown = set(raw) - set(data)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)} (valid keys: {', '.join(sorted(data))})")
        data.update(raw)
    for k, v in overrides.items():
        if v is not None:
            data[k] = v
    return from_dict(ImportSpec, data, "")


def channels_from_header(columns: Sequence[str], skip: Sequence[str]) -> list[ChannelSpec]:
    """Channels from ``name[unit]`` column headers, kinds inferred from name and unit."""
    out = []
    for col in columns:
        if col in skip:
            continue
        m = _HEADER.match(str(col))
        if m:
            name, unit = m.group("name"), m.group("unit").strip()
            out.append(ChannelSpec(name=name, unit=unit, kind=infer_kind(name, unit), column=col))
    return out


# ---------------------------------------------------------------------------------------------
# reading


def _read_table(path: Path):
    import pandas as pd

    if not path.is_file():
        raise FileNotFoundError(f"device export not found: {path}")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        if suffix in (".csv", ".txt", ".gz"):
            # strings, so a bad cell can be named; pandas' NA tokens ("", "NaN", "NA", "null", ...) are missing
            return pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (ValueError, OSError) as exc:
        raise DeviceImportError(f"{path}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    raise DeviceImportError(f"{path}: unknown file type {suffix!r} (expected .csv or .parquet)")


def parse_times(raw, path: Path, column: str, time_format: str | None, timezone: str | None):
    """Timestamps as naive local times; an unparseable or mixed-format value is an error naming its row."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(raw):
        times = raw
    else:
        text = raw.astype("string").str.strip()
        try:
            times = pd.to_datetime(text, format=time_format or "ISO8601", errors="coerce")
        except (ValueError, TypeError) as exc:  # e.g. tz-aware and naive values mixed
            raise DeviceImportError(f"{path}: column '{column}': mixed timestamp kinds ({str(exc).splitlines()[0]})") from None
        bad = times.isna() & text.notna()
        if bad.any() or text.isna().any():
            i = int(np.flatnonzero((bad | text.isna()).to_numpy())[0])
            how = f"format {time_format!r}" if time_format else "ISO 8601 (set time_format for other layouts)"
            raise DeviceImportError(
                f"{path}: row {i + 1}: column '{column}' = {raw.iloc[i]!r} is not a timestamp in {how}"
            )
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert(timezone) if timezone else times
        times = times.dt.tz_localize(None)
    return times


def _numeric(raw, path: Path, column: str):
    import pandas as pd

    if pd.api.types.is_numeric_dtype(raw):
        out = raw.astype("float64")
    else:
        text = raw.astype("string").str.strip()
        out = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = out.isna() & text.notna() & (text != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DeviceImportError(f"{path}: row {i + 1}: column '{column}' = {raw.iloc[i]!r} is not a number")
    out[~np.isfinite(out.to_numpy())] = np.nan
    return out


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


def read_export(paths: Sequence[str | Path], spec: ImportSpec, report: _Report, fmt: str = "auto",
                log: Callable[[str], None] | None = None):
    """One DataFrame (subject, time, channel columns) from every export file, checked, and the label
    intervals the files carry (None if none do).

    Args:
        paths: the export files.
        spec: how to read long-format files, and the channels to keep (empty: every channel).
        report: counts for import_report.json.
        fmt: a format of `sensorlm.data.formats` for every file, or "auto" (each file's own).
        log: progress printer.
    """
    import pandas as pd

    from sensorlm.data.formats import LONG, detect, get_format

    log = log or (lambda msg: None)
    frames, carried = [], []
    channels = list(spec.channels)
    for p in map(Path, paths):
        name = detect(p) if fmt == "auto" else fmt
        report.formats[p.name] = name
        if name == LONG:
            log(f"{p.name}: long-format table{' (detected)' if fmt == 'auto' else ''}")
            out, channels = _read_long(p, spec, channels)
        else:
            form = get_format(name)
            recording = form.read(p, spec.subject)
            log(f"{p.name}: {form.description}{' (detected)' if fmt == 'auto' else ''}; "
                + "; ".join(recording.notes))
            out, channels = _recording_frame(p, recording, spec, channels)
            if recording.labels is not None and len(recording.labels):
                carried.append(recording.labels)
        frames.append(out)
        report.files.append(p.name)
        report.rows += len(out)
    data = pd.concat(frames, ignore_index=True)
    for ch in channels:
        if ch.name not in data or data[ch.name].notna().sum() == 0:
            raise DeviceImportError(f"{', '.join(report.files)}: channel {ch.name!r} has no numeric value in any row")
    labels = pd.concat(carried, ignore_index=True) if carried else None
    return data, channels, labels


def _read_long(p: Path, spec: ImportSpec, channels: list[ChannelSpec]):
    """A long-format CSV/Parquet file as (subject, time, channels); channels from its header if none yet."""
    import pandas as pd

    df = _read_table(p)
    if spec.time_column not in df.columns:
        raise DeviceImportError(f"{p}: no time column '{spec.time_column}' (columns: {list(df.columns)}); a device "
                                "file of another layout needs --format (docs/data.md, 'Device formats')")
    if not channels:
        channels = channels_from_header(df.columns, [spec.time_column, spec.subject_column or ""])
        if not channels:
            raise DeviceImportError(
                f"{p}: no channel spec given and no 'name[unit]' column headers to read channels from"
            )
    out = pd.DataFrame({"time": parse_times(df[spec.time_column], p, spec.time_column, spec.time_format,
                                            spec.timezone)})
    if spec.subject_column and spec.subject_column in df.columns:
        subj = df[spec.subject_column].astype("string").str.strip()
        if subj.isna().any():
            i = int(np.flatnonzero(subj.isna().to_numpy())[0])
            raise DeviceImportError(f"{p}: row {i + 1}: column '{spec.subject_column}' is empty")
        out["subject"] = subj.to_numpy()
    else:
        out["subject"] = spec.subject or p.stem
    for ch in channels:
        col = ch.column or next((c for c in df.columns if c == ch.name or _HEADER.match(str(c)) and
                                 _HEADER.match(str(c)).group("name") == ch.name), None)
        if col is None or col not in df.columns:
            raise DeviceImportError(
                f"{p}: the channel spec names column '{ch.column or ch.name}' (channel {ch.name!r}), "
                f"which the export lacks (columns: {list(df.columns)})"
            )
        out[ch.name] = _numeric(df[col], p, col).to_numpy()
    return out, channels


def _recording_frame(p: Path, recording, spec: ImportSpec, channels: list[ChannelSpec]):
    """A device format's recording as (subject, time, channels): the spec's channels (by ``column``,
    else name) if it names any, else every channel the format read (added to those of earlier files)."""
    frame = recording.frame
    if spec.channels:
        out = frame[["time", "subject"]].copy()
        for ch in spec.channels:
            col = ch.column or ch.name
            if col not in frame.columns:
                raise DeviceImportError(f"{p}: the channel spec names {col!r} (channel {ch.name!r}); this file's "
                                        f"channels are {[c.name for c in recording.channels]}")
            out[ch.name] = frame[col].to_numpy()
        return out, channels
    known = {c.name for c in channels}
    channels = channels + [ChannelSpec(c.name, c.unit, c.kind) for c in recording.channels if c.name not in known]
    return frame, channels


# ---------------------------------------------------------------------------------------------
# labels


def read_labels(path: str | Path, spec: ImportSpec, subjects: Sequence[str]):
    """Label intervals (``start, end, label`` or ``date, label``; ``subject`` optional) as a DataFrame."""
    import pandas as pd

    p = Path(path)
    df = _read_table(p)
    if "label" not in df.columns:
        raise DeviceImportError(f"{p}: no 'label' column (columns: {list(df.columns)})")
    if {"start", "end"} <= set(df.columns):
        start = parse_times(df["start"], p, "start", spec.time_format, spec.timezone)
        end = parse_times(df["end"], p, "end", spec.time_format, spec.timezone)
    elif "date" in df.columns:
        start = parse_times(df["date"], p, "date", None, spec.timezone).dt.normalize()
        end = start + pd.Timedelta(days=1)
    else:
        raise DeviceImportError(f"{p}: needs columns start, end, label (intervals) or date, label (day labels)")
    labels = df["label"].astype("string").str.strip()
    for i in range(len(df)):
        if pd.isna(labels.iloc[i]) or not labels.iloc[i]:
            raise DeviceImportError(f"{p}: row {i + 1}: column 'label' is empty")
        if not end.iloc[i] > start.iloc[i]:
            raise DeviceImportError(f"{p}: row {i + 1}: end {end.iloc[i]} is not after start {start.iloc[i]}")
    if "subject" in df.columns:
        subject = df["subject"].astype("string").str.strip().to_numpy()
    elif len(subjects) == 1:
        subject = np.full(len(df), subjects[0], dtype=object)
    else:
        raise DeviceImportError(f"{p}: no 'subject' column, but the export has {len(subjects)} subjects")
    return pd.DataFrame({"subject": subject, "start": start.to_numpy(), "end": end.to_numpy(),
                         "label": labels.to_numpy()})


def _window_labels(labels, subject: str, w_start, w_end) -> tuple[list[dict[str, Any]], list[int]]:
    """The label intervals overlapping a window, clipped to it (minutes since its start), and
    their rows in `labels`."""
    if labels is None:
        return [], []
    sel = labels[(labels["subject"] == subject) & (labels["end"] > w_start) & (labels["start"] < w_end)]
    out = []
    for row in sel.itertuples(index=False):
        s = max(row.start, w_start)
        e = min(row.end, w_end)
        out.append({"label": str(row.label), "start_min": (s - w_start).total_seconds() / 60.0,
                    "end_min": (e - w_start).total_seconds() / 60.0})
    return out, [int(i) for i in sel.index]


def main_label(intervals: list[dict[str, Any]], window_minutes: float, min_fraction: float) -> str:
    """The label covering most of the window (summed over its intervals), or "" below `min_fraction`."""
    cover: dict[str, float] = {}
    for a in intervals:
        cover[a["label"]] = cover.get(a["label"], 0.0) + a["end_min"] - a["start_min"]
    if not cover:
        return ""
    best = max(sorted(cover), key=lambda k: cover[k])
    return best if cover[best] >= min_fraction * window_minutes and cover[best] > 0 else ""


# ---------------------------------------------------------------------------------------------
# windows


def _resample(frame, channels: list[ChannelSpec], grid: str):
    """One subject's rows on the grid (left-labelled bins from midnight) and a has-data flag."""
    import pandas as pd

    r = frame.set_index("time")[[c.name for c in channels]].resample(grid, origin="start_day")
    cols = {}
    for ch in channels:
        g = r[ch.name]
        agg = ch.aggregation
        cols[ch.name] = g.sum(min_count=1) if agg == "sum" else getattr(g, agg)()
    out = pd.DataFrame(cols)
    out["_has_data"] = out.notna().any(axis=1)
    return out


def _windows(spec: ImportSpec, grid_frame):
    import pandas as pd

    if grid_frame.empty:
        return
    length = pd.Timedelta(minutes=spec.window_minutes)
    stride = pd.Timedelta(minutes=spec.stride_minutes or spec.window_minutes)
    first, last = grid_frame.index[0], grid_frame.index[-1]
    start = first.normalize()
    while start <= last:
        end = start + length
        index = pd.date_range(start, periods=spec.seq_len, freq=f"{spec.grid_seconds}s")
        yield start, end, grid_frame.reindex(index)
        start = start + stride


def _assign_splits(units: list, seed: int, val_fraction: float, unit_labels: dict | None = None) -> dict:
    """Validation units, seeded, stratified by label: every label found in two or more units gets
    one of them in validation and keeps one in training (rarest labels first; this may take
    validation past `val_fraction`, never past half the units), then random units fill validation
    up to `val_fraction`; a unit whose label would leave training is skipped."""
    order = sorted(units)
    rng = np.random.default_rng(seed)
    rng.shuffle(order)
    n_val = max(1, int(round(val_fraction * len(order))))
    labels_of = {u: set((unit_labels or {}).get(u, ())) for u in order}
    holders = {}
    for u in order:
        for lab in labels_of[u]:
            holders.setdefault(lab, []).append(u)
    val: list = []

    def keeps_training(u) -> bool:  # moving u to val leaves every one of its labels a training unit
        return all(any(h not in val and h != u for h in holders[lab]) for lab in labels_of[u])

    for lab in sorted(holders, key=lambda lab: (len(holders[lab]), lab)):
        # coverage may take validation past val_fraction, never past half the units
        if len(holders[lab]) < 2 or any(h in val for h in holders[lab]) or len(val) >= max(n_val, len(order) // 2):
            continue
        pick = next((h for h in holders[lab] if keeps_training(h)), None)
        if pick is not None:
            val.append(pick)
    for u in order:
        if len(val) >= n_val:
            break
        if u not in val and keeps_training(u):
            val.append(u)
    return {u: ("val" if u in val else "train") for u in order}


def _key(subject: str, start) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{subject}_{start:%Y%m%dT%H%M}")


def build_rows(data, channels: list[ChannelSpec], spec: ImportSpec, labels, report: _Report) -> list[dict]:
    """Windows of every subject as wearable Parquet rows (captions generated)."""
    info = [ChannelInfo(c.name, c.unit, c.kind) for c in channels]
    rows = []
    used_labels: set[int] = set()
    for subject in sorted(data["subject"].unique()):
        frame = data[data["subject"] == subject]
        times = frame["time"].to_numpy()
        report.out_of_order_rows += int((np.diff(times.astype("datetime64[ns]").astype(np.int64)) < 0).sum())
        frame = frame.sort_values("time", kind="stable")
        dup = frame["time"].duplicated(keep=False)
        if dup.any():
            report.duplicate_timestamps += int(frame["time"].duplicated().sum())
            frame = frame.groupby("time", as_index=False)[[c.name for c in channels]].mean()
        grid = _resample(frame, channels, f"{spec.grid_seconds}s")
        first_day = grid.index[0].normalize() if len(grid) else None
        for w_start, w_end, win in _windows(spec, grid):
            has = win["_has_data"].fillna(False).to_numpy(bool)
            if not has.any():
                report.windows_dropped_empty += 1
                continue
            if has.mean() < spec.min_coverage:
                report.windows_dropped_low_coverage += 1
                continue
            values = win[[c.name for c in channels]].to_numpy(np.float64)
            missing = ~has
            intervals, rows_used = _window_labels(labels, subject, w_start, w_end)
            used_labels.update(rows_used)
            label = main_label(intervals, spec.window_minutes, spec.main_label_min_fraction)
            start_minute = w_start.hour * 60 + w_start.minute + w_start.second / 60
            cap = caption_window(values, missing, info, step_min=spec.step_min, start_minute=start_minute,
                                 labels=intervals, main_label=label or None, prompt_template=spec.prompt_template)
            # The shard needs finite values: a channel's gap at a grid point that has other data
            # holds the channel's window mean (0 if the channel is absent from the window).
            filled = values.copy()
            for c in range(filled.shape[1]):
                col = filled[:, c]
                gap = np.isnan(col) & has
                if gap.any():
                    seen = col[has & ~np.isnan(col)]
                    if not seen.size:
                        report.channel_absent_in_window += 1
                    report.values_filled += int(gap.sum())
                    col[gap] = float(seen.mean()) if seen.size else 0.0
            filled[missing] = 0.0
            report.windows_kept += 1
            report.windows_labelled += bool(label)
            report.windows_unlabelled += not label
            rows.append({
                "key": _key(subject, w_start), "subject_id": str(subject),
                "day": int((w_start.normalize() - first_day).days), "split": "train",
                "sensor": filled.astype(np.float32).reshape(-1), "missing": missing.astype(np.uint8),
                "caption": cap.text, "primary_activity": label,
                "activities": json.dumps(intervals),
                "meta": json.dumps({"start": w_start.isoformat(), "end": w_end.isoformat(),
                                    "coverage": float(has.mean()), "captions": cap.levels()}),
                "_unit": (str(subject), f"{w_start:%Y-%m-%d}"),
            })
    if labels is not None:
        report.labels = len(labels)
        report.labels_outside_data = len(labels) - len(used_labels)
    return rows


def _split_rows(rows: list[dict], spec: ImportSpec, report: _Report) -> None:
    subjects = sorted({r["subject_id"] for r in rows})
    by = spec.split.by
    if by == "auto":
        by = "subject" if len(subjects) >= 5 else "day"
    units = sorted({r["_unit"][0] if by == "subject" else r["_unit"] for r in rows})
    if len(units) < 2:
        raise DeviceImportError(
            f"cannot hold out a validation split by {by}: the export has {len(units)} {by}(s) with kept windows"
            + ("; use split.by=day" if by == "subject" else "")
        )
    def unit(r):
        return r["_unit"][0] if by == "subject" else r["_unit"]

    unit_labels: dict = {}
    for r in rows:
        if r["primary_activity"]:
            unit_labels.setdefault(unit(r), set()).add(r["primary_activity"])
    folds = spec.split.folds
    if folds:
        if len(units) < folds:
            raise DeviceImportError(f"cannot deal {folds} folds by {by}: the export has {len(units)} {by}(s) with "
                                    "kept windows")
        assign = {u: fold_split(k) for u, k in assign_folds(units, spec.split.seed, folds, unit_labels).items()}
        names = [fold_split(k) for k in range(folds)]
    else:
        assign = _assign_splits(units, spec.split.seed, spec.split.val_fraction, unit_labels)
        names = ["train", "val"]
    for r in rows:
        r["split"] = assign[unit(r)]
    report.split_by = by
    report.splits = {s: sum(r["split"] == s for r in rows) for s in names}
    report.label_counts = {s: dict(sorted(collections.Counter(r["primary_activity"] for r in rows
                                                               if r["split"] == s and r["primary_activity"]).items()))
                           for s in names}


def import_device_export(
    exports: Sequence[str | Path],
    out_dir: str | Path,
    *,
    spec: ImportSpec | None = None,
    labels: str | Path | None = None,
    log: Callable[[str], None] | None = print,
    fmt: str = "auto",
    **prepare_kwargs: Any,
) -> dict[str, Any]:
    """Import device exports (and optional labels) into a dataset directory; return its manifest.

    Args:
        exports: device files: long-format CSV or Parquet, or any format of `sensorlm.data.formats`.
        out_dir: the dataset directory to create; must not exist yet or be empty.
        spec: how to read them (default: `ImportSpec()`, channels from ``name[unit]`` headers).
        labels: label intervals or day labels (CSV/Parquet), or None.
        log: progress printer, or None.
        fmt: the format of every file, or "auto": each file's own, by content and extension (logged).
        **prepare_kwargs: more `prepare_dataset` arguments (max_count, dtype, vocab_size, text_len).
    """
    from sensorlm.data.prepare import prepare_dataset
    from sensorlm.data.schema import schema_for, write_rows

    spec = spec or ImportSpec()
    log = log or (lambda msg: None)
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DeviceImportError(f"{out}: exists and is not empty; import into a new directory")
    if not exports:
        raise DeviceImportError("no device export files given")
    report = _Report()
    data, channels, carried = read_export(exports, spec, report, fmt, log)
    report.subjects = sorted(map(str, data["subject"].unique()))
    label_frame = read_labels(labels, spec, report.subjects) if labels else None
    if carried is not None:  # the labels the device files carry, beside a label file of the user's
        import pandas as pd

        label_frame = carried if label_frame is None else pd.concat([label_frame, carried], ignore_index=True)
    rows = build_rows(data, channels, spec, label_frame, report)
    if not rows:
        raise DeviceImportError(
            f"{', '.join(report.files)}: no window reaches min_coverage {spec.min_coverage} "
            f"({report.windows_dropped_low_coverage} under it, {report.windows_dropped_empty} empty)"
        )
    _split_rows(rows, spec, report)
    label_set = sorted({r["primary_activity"] for r in rows if r["primary_activity"]})
    prompts = {lab: prompt_for(lab, spec.prompt_template) for lab in label_set}
    extra = {"channel_kinds": {c.name: c.kind for c in channels}, "prompt_template": spec.prompt_template,
             "prompts": prompts, "step_minutes": spec.step_min, "import": vars(report),
             **({"folds": spec.split.folds} if spec.split.folds else {})}
    schema = schema_for("wearable", seq_len=spec.seq_len, channels=[(c.name, c.unit) for c in channels],
                        activities=label_set, extra=extra)

    tmp = out.with_name(f".{out.name}.importing")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        write_rows([{k: v for k, v in r.items() if k != "_unit"} for r in rows], tmp / "parquet" / "import.parquet",
                   schema)
        (tmp / REPORT).write_text(json.dumps({"spec": to_dict(spec), **vars(report)}, indent=1))
        manifest = prepare_dataset("wearable", tmp, parquet=[tmp / "parquet" / "import.parquet"], size=None,
                                   log=log, staging=True, **prepare_kwargs)
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
