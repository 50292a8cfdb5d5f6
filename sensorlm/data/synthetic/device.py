"""A SYNTHETIC device export, as a wrist device's software writes one: for demos, docs and tests.

Nothing here is measured from a person. It writes what `sensorlm import` reads from real devices:
``export.csv`` (30-s epochs, a ``participant`` column, seven channels in their own units, off-wrist
gaps with no rows, a dead battery for half a day, duplicate and out-of-order rows), ``labels.csv``
(``subject, start, end, label`` intervals with labels of the user's own: sleep, desk_work,
high_activity, relaxing) and ``spec.yaml`` (the channel spec naming columns, units and kinds).
Local times without DST. ``python -m sensorlm.data.synthetic.device OUT`` writes them to OUT.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

# column, channel name, unit, kind
CHANNELS = [
    ("HR", "heart_rate", "bpm", "heart_rate"),
    ("steps", "steps", "count", "count"),
    ("ENMO", "enmo", "mg", "accel"),
    ("skin_temp", "skin_temperature", "degC", "temperature"),
    ("ambient_temp", "ambient_temperature", "degC", "temperature"),
    ("lux", "light", "lux", "light"),
    ("SpO2", "spo2", "%", "spo2"),
]
# label -> (heart rate above resting, steps per 30 s, ENMO mg, skin degC, ambient degC, lux, SpO2 %)
_STATES = {
    "sleep": (-8, 0.0, 5, 34.6, 20.0, 0.5, 95.0),
    "desk_work": (12, 1.0, 25, 33.0, 22.5, 450, 97.0),
    "high_activity": (85, 75.0, 420, 31.5, 17.0, 6000, 96.0),
    "relaxing": (4, 0.5, 15, 33.6, 21.0, 120, 97.0),
    None: (18, 12.0, 70, 32.8, 21.5, 300, 97.0),  # unlabelled routine: getting ready, lunch, commute
}


def _day_plan(rng: np.random.Generator) -> list[tuple[int, int, str | None]]:
    """(start_min, end_min, label) of one day, in minutes since midnight."""
    wake = int(rng.integers(390, 450))
    bed = int(rng.integers(1350, 1400))
    workout = bool(rng.random() < 0.8)
    plan = [(0, wake, "sleep"), (wake, 540, None), (540, 720, "desk_work"), (720, 780, None),
            (780, 1020, "desk_work"), (1020, 1050, None)]
    if workout:
        end = 1050 + int(rng.integers(80, 120))
        plan += [(1050, end, "high_activity"), (end, 1170, None)]
    else:
        plan += [(1050, 1170, None)]
    plan += [(1170, bed, "relaxing"), (bed, 1440, "sleep")]
    return plan


def write_device_export(out_dir: str | Path, *, subjects: int = 3, days: int = 5, epoch_s: int = 30,
                        seed: int = 0) -> dict[str, Path]:
    """Write ``export.csv``, ``labels.csv`` and ``spec.yaml`` into `out_dir`; return their paths."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    per_min = 60 // epoch_s
    frames, labels = [], []
    t0 = pd.Timestamp("2024-03-04")  # a Monday; no DST change within the recording
    for s in range(subjects):
        subject = f"P{s + 1:02d}"
        resting = float(rng.uniform(55, 68))
        for d in range(days):
            day0 = t0 + pd.Timedelta(days=d)
            state = np.empty(1440, dtype=object)
            for a, b, lab in _day_plan(rng):
                state[a:b] = lab
                if lab is not None:
                    labels.append((subject, day0 + pd.Timedelta(minutes=a), day0 + pd.Timedelta(minutes=b), lab))
            n = 1440 * per_min
            minute = np.arange(n) // per_min
            params = np.array([_STATES[state[m]] for m in minute], dtype=np.float64)
            noise = rng.normal(size=(n, 7))
            cols = {
                "HR": resting + params[:, 0] + 3 * noise[:, 0],
                "steps": rng.poisson(params[:, 1]),
                "ENMO": np.maximum(0, params[:, 2] * (1 + 0.3 * noise[:, 2])),
                "skin_temp": params[:, 3] + 0.2 * noise[:, 3],
                "ambient_temp": params[:, 4] + 0.3 * noise[:, 4],
                "lux": np.maximum(0, params[:, 5] * (1 + 0.2 * noise[:, 5])),
                "SpO2": np.clip(params[:, 6] + 0.7 * noise[:, 6], 85, 100),
            }
            keep = np.ones(n, bool)
            off = int(rng.integers(600, 1300)) * per_min  # an hour off the wrist (shower, charging)
            keep[off: off + 60 * per_min] = False
            if s == subjects - 1 and d == days - 1:
                keep[720 * per_min:] = False  # the battery died at noon on the last day
            frame = pd.DataFrame({"timestamp": day0 + pd.to_timedelta(np.arange(n) * epoch_s, unit="s"),
                                  "participant": subject, **cols})[keep]
            frames.append(frame)
    export = pd.concat(frames, ignore_index=True)
    export["HR"] = export["HR"].round(0)
    for col in ("ENMO", "skin_temp", "ambient_temp", "lux", "SpO2"):
        export[col] = export[col].round(2)
    # What device software does: re-sent epochs (duplicates) and a block written out of order.
    dups = export.sample(n=40, random_state=seed)
    export = pd.concat([export, dups], ignore_index=True)
    block = export.iloc[1000:1010]
    export = pd.concat([export.drop(block.index), block], ignore_index=True)
    export["timestamp"] = export["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")
    paths = {"export": out / "export.csv", "labels": out / "labels.csv", "spec": out / "spec.yaml"}
    export.to_csv(paths["export"], index=False)
    lab = pd.DataFrame(labels, columns=["subject", "start", "end", "label"])
    # a label from before the recording started: counted in the import report as outside the data
    lab.loc[len(lab)] = ("P01", t0 - pd.Timedelta(days=2), t0 - pd.Timedelta(days=2) + pd.Timedelta(hours=1), "relaxing")
    for col in ("start", "end"):
        lab[col] = pd.to_datetime(lab[col]).dt.strftime("%Y-%m-%d %H:%M:%S")
    lab.to_csv(paths["labels"], index=False)
    lines = ["time_column: timestamp", "subject_column: participant", "channels:"]
    lines += [f"  - {{name: {name}, unit: '{unit}', kind: {kind}, column: {col}}}" for col, name, unit, kind in CHANNELS]
    paths["spec"].write_text("\n".join(lines) + "\n")
    return paths


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m sensorlm.data.synthetic.device OUT_DIR")
    for name, path in write_device_export(sys.argv[1]).items():
        print(f"{name}: {path}")
