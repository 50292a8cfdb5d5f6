"""One subject's device rows -> fixed-grid windows -> captioned wearable rows, and the train/val split.

A subject is the unit of work of `sensorlm import` (`sensorlm.data.import_units`): its rows are
sorted (out-of-order rows counted), duplicate timestamps averaged (counted), each channel
resampled onto the grid and cut into windows from local midnight; windows under the coverage are
dropped and counted. Nothing here looks at another subject, so subjects can be windowed anywhere,
in any order, and give the same rows.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Any

import numpy as np

from sensorlm.data.captioner import ChannelInfo, caption_window
from sensorlm.data.folds import assign_folds, fold_split

# what one subject adds to the import report (device_import._Report's fields of the same names)
SUBJECT_COUNTS = ("out_of_order_rows", "duplicate_timestamps", "windows_kept", "windows_dropped_low_coverage",
                  "windows_dropped_empty", "values_filled", "channel_absent_in_window", "windows_labelled",
                  "windows_unlabelled")


def window_labels(labels, subject: str, w_start, w_end) -> tuple[list[dict[str, Any]], list[int]]:
    """The label intervals overlapping a window, clipped to it (minutes since its start), and
    their rows (index) in `labels`."""
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


def _resample(frame, channels, grid: str):
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


def _windows(spec, grid_frame):
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


def window_key(subject: str, start) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", f"{subject}_{start:%Y%m%dT%H%M}")


def _fill_gaps(values: np.ndarray, has: np.ndarray, counts: collections.Counter) -> np.ndarray:
    """The shard needs finite values: a channel's gap at a grid point that has other data holds the
    channel's window mean (0 if the channel is absent from the window); a point without data, 0."""
    filled = values.copy()
    for c in range(filled.shape[1]):
        col = filled[:, c]
        gap = np.isnan(col) & has
        if gap.any():
            seen = col[has & ~np.isnan(col)]
            if not seen.size:
                counts["channel_absent_in_window"] += 1
            counts["values_filled"] += int(gap.sum())
            col[gap] = float(seen.mean()) if seen.size else 0.0
    filled[~has] = 0.0
    return filled


def subject_rows(subject: str, frame, channels, spec, labels) -> tuple[list[dict], dict[str, int], list[int]]:
    """One subject's windows as wearable Parquet rows (captions generated, split "train").

    Args:
        subject: the subject's name.
        frame: its rows (``time`` and one column per channel), in the export's order.
        channels: the `ChannelSpec`s, in dataset order.
        spec: the `ImportSpec`.
        labels: label intervals (``subject, start, end, label``; rows of other subjects are
            ignored), or None.

    Returns:
        the rows (each with ``_unit``: (subject, date) for the split), the counts of
        `SUBJECT_COUNTS`, and the `labels` index of every interval a window used.
    """
    info = [ChannelInfo(c.name, c.unit, c.kind) for c in channels]
    names = [c.name for c in channels]
    counts: collections.Counter = collections.Counter({k: 0 for k in SUBJECT_COUNTS})
    times = frame["time"].to_numpy()
    counts["out_of_order_rows"] += int((np.diff(times.astype("datetime64[ns]").astype(np.int64)) < 0).sum())
    frame = frame.sort_values("time", kind="stable")
    if frame["time"].duplicated(keep=False).any():
        counts["duplicate_timestamps"] += int(frame["time"].duplicated().sum())
        frame = frame.groupby("time", as_index=False)[names].mean()
    grid = _resample(frame, channels, f"{spec.grid_seconds}s")
    first_day = grid.index[0].normalize() if len(grid) else None
    rows, used = [], set()
    for w_start, w_end, win in _windows(spec, grid):
        has = win["_has_data"].fillna(False).to_numpy(bool)
        if not has.any():
            counts["windows_dropped_empty"] += 1
            continue
        if has.mean() < spec.min_coverage:
            counts["windows_dropped_low_coverage"] += 1
            continue
        values = win[names].to_numpy(np.float64)
        intervals, rows_used = window_labels(labels, subject, w_start, w_end)
        used.update(rows_used)
        label = main_label(intervals, spec.window_minutes, spec.main_label_min_fraction)
        start_minute = w_start.hour * 60 + w_start.minute + w_start.second / 60
        cap = caption_window(values, ~has, info, step_min=spec.step_min, start_minute=start_minute,
                             labels=intervals, main_label=label or None, prompt_template=spec.prompt_template)
        filled = _fill_gaps(values, has, counts)
        counts["windows_kept"] += 1
        counts["windows_labelled" if label else "windows_unlabelled"] += 1
        rows.append({
            "key": window_key(subject, w_start), "subject_id": str(subject),
            "day": int((w_start.normalize() - first_day).days), "split": "train",
            "sensor": filled.astype(np.float32).reshape(-1), "missing": (~has).astype(np.uint8),
            "caption": cap.text, "primary_activity": label,
            "activities": json.dumps(intervals),
            "meta": json.dumps({"start": w_start.isoformat(), "end": w_end.isoformat(),
                                "coverage": float(has.mean()), "captions": cap.levels()}),
            "_unit": (str(subject), f"{w_start:%Y-%m-%d}"),
        })
    return rows, dict(counts), sorted(used)


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


def split_windows(windows: list[tuple[tuple[str, str], str]], split, error: type[Exception]) -> tuple[list[str], dict]:
    """The split of every window, from (``_unit``, main label) pairs in dataset order.

    Args:
        windows: each window's (subject, date) unit and main label ("" if none).
        split: the `SplitSpec` (by subject, day or auto; val fraction or folds; seed).
        error: the exception class for an export that cannot be split.

    Returns:
        the split names in `windows` order, and the report's fields: ``split_by``, ``splits``
        (windows per split) and ``label_counts`` (split -> label -> windows).
    """
    by = split.by
    if by == "auto":
        by = "subject" if len({u[0] for u, _ in windows}) >= 5 else "day"

    def unit(u):
        return u[0] if by == "subject" else u

    units = sorted({unit(u) for u, _ in windows})
    if len(units) < 2:
        raise error(f"cannot hold out a validation split by {by}: the export has {len(units)} {by}(s) with kept "
                    "windows" + ("; use split.by=day" if by == "subject" else ""))
    unit_labels: dict = {}
    for u, label in windows:
        if label:
            unit_labels.setdefault(unit(u), set()).add(label)
    if split.folds:
        if len(units) < split.folds:
            raise error(f"cannot deal {split.folds} folds by {by}: the export has {len(units)} {by}(s) with kept windows")
        assign = {u: fold_split(k) for u, k in assign_folds(units, split.seed, split.folds, unit_labels).items()}
        names = [fold_split(k) for k in range(split.folds)]
    else:
        assign = _assign_splits(units, split.seed, split.val_fraction, unit_labels)
        names = ["train", "val"]
    splits = [assign[unit(u)] for u, _ in windows]
    counts = {s: splits.count(s) for s in names}
    label_counts = {s: dict(sorted(collections.Counter(lab for (_, lab), sp in zip(windows, splits)
                                                       if sp == s and lab).items())) for s in names}
    return splits, {"split_by": by, "splits": counts, "label_counts": label_counts}
