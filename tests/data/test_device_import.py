"""Device exports in: resampling, windows, labels, the import report, and one-line errors."""

import json

import numpy as np
import pandas as pd
import pytest

from sensorlm.cli import main as cli_main
from sensorlm.typed_config import ConfigError
from sensorlm.data.device_import import (
    DeviceImportError,
    ImportSpec,
    import_device_export,
    load_import_spec,
)
from sensorlm.data.synthetic.device import write_device_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    return write_device_export(tmp_path_factory.mktemp("raw"), subjects=3, days=5, epoch_s=30, seed=0)


@pytest.fixture(scope="module")
def imported(export, tmp_path_factory):
    out = tmp_path_factory.mktemp("imp") / "ds"
    spec = load_import_spec(export["spec"], window_minutes=120, stride_minutes=60, main_label_min_fraction=0.5,
                            prompt_template="Two hours of {label}.")
    manifest = import_device_export([export["export"]], out, spec=spec, labels=export["labels"], log=None,
                                    max_count=64, vocab_size=1024)
    return out, manifest


def test_import_report_counts_what_was_fixed(imported):
    out, manifest = imported
    report = json.loads((out / "import_report.json").read_text())
    assert report["subjects"] == ["P01", "P02", "P03"]
    assert report["duplicate_timestamps"] == 40  # the generator re-sent 40 epochs
    assert report["out_of_order_rows"] > 0
    # 3 subjects x 5 days x 24 hourly starts, less the hours after P03's battery died at noon
    assert report["windows_kept"] + report["windows_dropped_low_coverage"] == 3 * 5 * 24 - 12
    assert report["labels_outside_data"] >= 1  # the interval from before the recording
    assert report["split_by"] == "day" and report["splits"]["val"] > 0
    assert manifest["import"]["windows_kept"] == report["windows_kept"] == manifest["num_samples"]


def test_manifest_says_what_the_data_is(imported):
    out, manifest = imported
    assert manifest["sample_shape"]["sensor"] == [120, 7]
    assert [c["name"] for c in manifest["channels"]][:2] == ["heart_rate", "steps"]
    assert manifest["channel_kinds"]["enmo"] == "accel"
    assert manifest["activities"] == ["desk_work", "high_activity", "relaxing", "sleep"]
    assert manifest["prompts"]["high_activity"] == "Two hours of high activity."
    assert not (out.parent / ".ds.importing").exists()


def test_resampling_and_windows_match_pandas(export, imported):
    """One window's grid values are the export's 30-s epochs averaged (duplicates averaged first)
    or summed per minute; its caption opens with its main label."""
    from sensorlm.data.schema import ParquetSource

    out, _ = imported
    raw = pd.read_csv(export["export"], parse_dates=["timestamp"])
    sub = raw[raw.participant == "P02"].groupby("timestamp").mean(numeric_only=True)
    start = pd.Timestamp("2024-03-05 09:00")
    window = sub[(sub.index >= start) & (sub.index < start + pd.Timedelta(hours=2))]
    per_min = window.resample("60s").agg({"HR": "mean", "steps": "sum"})
    sample = next(s for s in ParquetSource(out / "parquet" / "import-00000.parquet", "wearable")
                  if s.key == "P02_20240305T0900")
    observed = sample.arrays["missing"] == 0
    got = sample.arrays["sensor"]
    idx = ((per_min.index - start) / pd.Timedelta(minutes=1)).astype(int)
    np.testing.assert_allclose(got[idx, 0], per_min["HR"].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(got[idx, 1], per_min["steps"].to_numpy(), rtol=1e-5)
    assert observed.sum() == len(per_min)
    assert sample.meta["primary_activity"] == "desk_work"
    assert sample.text.startswith("Two hours of desk work.")
    assert set(sample.meta["captions"]) == {"low", "middle", "high_summary", "high_all"}


def test_header_channels_and_day_labels(tmp_path):
    times = pd.date_range("2024-01-01", periods=2 * 1440, freq="60s")
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"time": times.strftime("%Y-%m-%dT%H:%M:%S"),
                       "heart_rate[bpm]": 60 + rng.normal(size=len(times)),
                       "steps[count]": rng.poisson(3, size=len(times)),
                       "wrist_temp[degC]": 33 + rng.normal(size=len(times))})
    df = df.astype({"heart_rate[bpm]": object})
    df.loc[5, "heart_rate[bpm]"], df.loc[6, "heart_rate[bpm]"] = "NaN", "NA"  # missing, as exports write it
    df.to_csv(tmp_path / "one.csv", index=False)
    pd.DataFrame({"date": ["2024-01-01", "2024-01-02"], "label": ["rest_day", "long_run"]}).to_csv(
        tmp_path / "days.csv", index=False)
    manifest = import_device_export([tmp_path / "one.csv"], tmp_path / "ds", labels=tmp_path / "days.csv",
                                    log=None, vocab_size=256)
    assert manifest["sample_shape"]["sensor"] == [1440, 3]  # default: a calendar day of minutes
    assert [c["unit"] for c in manifest["channels"]] == ["bpm", "count", "degC"]
    assert manifest["channel_kinds"] == {"heart_rate": "heart_rate", "steps": "count", "wrist_temp": "temperature"}
    assert sorted(manifest["activities"]) == ["long_run", "rest_day"]
    assert manifest["import"]["subjects"] == ["one"]  # no subject column: the file's name


# ------------------------------------------------------------------------------------------- bad input


def _csv(tmp_path, rows, name="bad.csv"):
    path = tmp_path / name
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _good_rows(n=200):
    times = pd.date_range("2024-01-01 08:00", periods=n, freq="60s").strftime("%Y-%m-%d %H:%M:%S")
    return {"time": list(times), "subject": ["s1"] * n, "hr[bpm]": [60.0] * n}


@pytest.mark.parametrize("edit,message", [
    (lambda r: r["time"].__setitem__(3, "yesterday"), r"bad.csv: row 4: column 'time' = 'yesterday' is not a timestamp"),
    (lambda r: r["time"].__setitem__(5, "01/02/2024 08:05"), r"bad.csv: row 6: column 'time' = '01/02/2024 08:05'"),
    (lambda r: r["hr[bpm]"].__setitem__(7, "abc"), r"bad.csv: row 8: column 'hr\[bpm\]' = 'abc' is not a number"),
    (lambda r: r.__setitem__("hr[bpm]", [""] * len(r["time"])), r"channel 'hr' has no numeric value in any row"),
    (lambda r: r.__setitem__("subject", ["s1"] * 10 + [""] * (len(r["time"]) - 10)), r"row 11: column 'subject' is empty"),
])
def test_bad_export_is_one_line_and_writes_nothing(tmp_path, edit, message):
    rows = _good_rows()
    edit(rows)
    out = tmp_path / "ds"
    with pytest.raises(DeviceImportError, match=message) as info:
        import_device_export([_csv(tmp_path, rows)], out, log=None)
    assert "\n" not in str(info.value)
    assert not out.exists() and not list(tmp_path.glob(".ds*"))


def test_bad_spec_and_labels_named(tmp_path):
    export = _csv(tmp_path, {**_good_rows(3 * 1440), "subject": ["s1"] * 1440 + ["s2"] * 1440 + ["s3"] * 1440,
                             "time": list(pd.date_range("2024-01-01", periods=1440, freq="60s")
                                          .strftime("%Y-%m-%d %H:%M:%S")) * 3}, "e.csv")
    spec = tmp_path / "spec.yaml"
    spec.write_text("channels:\n  - {name: hr, unit: bpm, kind: heart_rate, column: HeartRate}\n")
    with pytest.raises(DeviceImportError, match=r"e.csv: the channel spec names column 'HeartRate' \(channel 'hr'\)"):
        import_device_export([export], tmp_path / "a", spec=load_import_spec(spec), log=None)
    spec.write_text("channels:\n  - {name: hr, unit: bpm, kind: pulse}\n")
    with pytest.raises(ConfigError, match="channel 'hr': unknown kind 'pulse'"):
        load_import_spec(spec)
    spec.write_text("window_minute: 60\n")
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['window_minute'\]"):
        load_import_spec(spec)
    labels = _csv(tmp_path, {"subject": ["s1"], "start": ["2024-01-01 10:00"], "end": ["2024-01-01 09:00"],
                             "label": ["walk"]}, "l.csv")
    with pytest.raises(DeviceImportError, match=r"l.csv: row 1: end 2024-01-01 09:00:00 is not after start"):
        import_device_export([export], tmp_path / "b", labels=labels, log=None)
    labels = _csv(tmp_path, {"start": ["2024-01-01 10:00"], "end": ["2024-01-01 11:00"], "label": ["walk"]}, "m.csv")
    with pytest.raises(DeviceImportError, match=r"m.csv: no 'subject' column, but the export has 3 subjects"):
        import_device_export([export], tmp_path / "c", labels=labels, log=None)
    assert not any((tmp_path / n).exists() for n in "abc")


def test_too_little_data_and_existing_output_named(tmp_path):
    export = _csv(tmp_path, _good_rows(200))  # 200 minutes of one day: under half a day
    with pytest.raises(DeviceImportError, match="no window reaches min_coverage 0.5"):
        import_device_export([export], tmp_path / "ds", log=None)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DeviceImportError, match="full: exists and is not empty"):
        import_device_export([export], tmp_path / "full", log=None)
    assert (tmp_path / "full" / "keep.txt").read_text() == "mine"
    with pytest.raises(DeviceImportError, match="cannot hold out a validation split by day: the export has 1 day"):
        import_device_export([export], tmp_path / "ds", spec=ImportSpec(min_coverage=0.1), log=None)


def test_cli_import_errors_are_one_line(tmp_path, capsys):
    rows = _good_rows()
    rows["time"][2] = "noon"
    assert cli_main(["import", str(_csv(tmp_path, rows)), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sensorlm import: error: ") and "row 3: column 'time' = 'noon'" in err and "\n" not in err


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_day_split_is_stratified_so_every_label_can_be_scored(tmp_path, seed):
    """One person, 12 days; 'exercise' on 2 days and 'travel' on 3, 'rest' the others: whatever the
    seed, validation holds a day of each label found on two or more days and training keeps one."""
    times = pd.date_range("2024-01-01", periods=12 * 96, freq="15min")
    rows = {"time": times.strftime("%Y-%m-%d %H:%M:%S"), "subject": ["p1"] * len(times),
            "hr[bpm]": np.linspace(60, 90, len(times))}
    export = _csv(tmp_path, rows, "export.csv")
    day_label = {2: "exercise", 9: "exercise", 4: "travel", 5: "travel", 11: "travel"}
    labels = pd.DataFrame({"subject": "p1", "date": [f"2024-01-{d + 1:02d}" for d in range(12)],
                           "label": [day_label.get(d, "rest") for d in range(12)]})
    labels.to_csv(tmp_path / "labels.csv", index=False)
    spec = load_import_spec(None, grid_seconds=900)
    spec.split.seed = seed
    import_device_export([export], tmp_path / "ds", spec=spec, labels=tmp_path / "labels.csv", log=None)
    report = json.loads((tmp_path / "ds" / "import_report.json").read_text())
    counts = report["label_counts"]
    assert report["split_by"] == "day" and report["splits"]["val"] >= 2
    for label in ("exercise", "travel", "rest"):
        assert counts["val"].get(label, 0) >= 1 and counts["train"].get(label, 0) >= 1, counts
    assert sum(counts["train"].values()) + sum(counts["val"].values()) == 12
