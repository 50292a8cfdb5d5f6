"""Device files as devices write them (sensorlm/data/formats): detected by content, read into the
import's long layout with their channels, units and labels, and bad files refused in one line that
names the file and the place, with nothing written."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorlm.cli import main as cli_main
from sensorlm.data.device_import import import_device_export, load_import_spec
from sensorlm.data.formats import DeviceFormatError, detect, get_format, known_formats

import importlib.util
import sys

_spec = importlib.util.spec_from_file_location("device_files", Path(__file__).with_name("device_files.py"))
device_files = importlib.util.module_from_spec(_spec)
sys.modules["device_files"] = device_files
_spec.loader.exec_module(device_files)
START = device_files.START
write_actigraph_csv, write_acttrust, write_actiware = (device_files.write_actigraph_csv, device_files.write_acttrust,
                                                       device_files.write_actiware)
write_agd, write_apple_health, write_awd = device_files.write_agd, device_files.write_apple_health, device_files.write_awd
write_biobank, write_fit, write_geneactiv = device_files.write_biobank, device_files.write_fit, device_files.write_geneactiv
write_cwa = device_files.write_cwa


def _import(files, out: Path, **spec):
    manifest = import_device_export([str(f) for f in files], out, spec=load_import_spec(None, **spec), log=None,
                                    max_count=64, vocab_size=256)
    return manifest, json.loads((out / "import_report.json").read_text())


def _channels(manifest) -> dict[str, str]:
    return {c["name"]: c["unit"] for c in manifest["channels"]}


def test_acttrust_report(tmp_path):
    path = tmp_path / "acttrust.txt"
    pim = write_acttrust(path)
    assert detect(path) == "acttrust"
    rec = get_format("acttrust").read(path, None)
    assert rec.frame["subject"].iloc[0] == "s01" and rec.frame["time"].iloc[1] == pd.Timestamp(START) + pd.Timedelta(minutes=1)
    np.testing.assert_array_equal(rec.frame["pim"].to_numpy(), pim)
    assert rec.frame["temperature"].iloc[1] == pytest.approx(31.01)  # decimal comma read
    manifest, report = _import([path], tmp_path / "ds")
    assert {"pim": "counts", "temperature": "degC", "light": "lux", "event": "presses"}.items() <= _channels(manifest).items()
    assert report["formats"] == {"acttrust.txt": "acttrust"} and report["windows_kept"] == 3


def test_actiwatch_awd_epoch_code_and_markers(tmp_path):
    path = tmp_path / "s02.AWD"
    counts = write_awd(path, code="2", seconds=30)
    assert detect(path) == "awd"
    rec = get_format("awd").read(path, None)
    assert rec.frame["time"].iloc[1] - rec.frame["time"].iloc[0] == pd.Timedelta(seconds=30)
    assert rec.frame["marker"].sum() == sum(1 for i in range(len(counts)) if i % 1000 == 5)
    manifest, _ = _import([path], tmp_path / "ds")
    assert _channels(manifest)["activity"] == "counts"
    # minute grid: each minute holds the sum of its two 30-s epochs
    rows = pd.read_parquet(tmp_path / "ds" / "parquet")
    first = rows[rows["key"].str.endswith(f"{START:%Y%m%d}") | (rows["day"] == 0)].iloc[0]
    sensor = np.asarray(first["sensor"]).reshape(1440, -1)
    np.testing.assert_allclose(sensor[:3, 0], counts[:6].reshape(3, 2).sum(axis=1))


def test_actiware_interval_status_becomes_labels(tmp_path):
    path = tmp_path / "s03.csv"
    counts, status = write_actiware(path)
    assert detect(path) == "actiware"
    rec = get_format("actiware").read(path, None)
    np.testing.assert_array_equal(rec.frame["activity"].to_numpy(), counts)
    labels = rec.labels
    assert set(labels["label"]) == {"active", "rest", "rest_sleep"}
    sleep = labels[labels["label"] == "rest_sleep"].iloc[1]
    assert (sleep["start"].hour, sleep["end"].hour) == (23, 7)  # 23:00 to 07:00, one interval across midnight
    assert rec.frame["asleep"].iloc[0] == 1.0  # Actiware's Sleep/Wake 0 = sleep
    manifest, report = _import([path], tmp_path / "ds", window_minutes=720, stride_minutes=720)
    assert set(manifest["activities"]) <= {"active", "rest", "rest_sleep"} and "active" in manifest["activities"]
    assert report["windows_labelled"] == report["windows_kept"]


def test_actigraph_csv_with_and_without_time_columns(tmp_path):
    dated, bare = tmp_path / "dated.csv", tmp_path / "bare.csv"
    axis1 = write_actigraph_csv(dated)
    write_actigraph_csv(bare, with_times=False)
    for path in (dated, bare):
        assert detect(path) == "actigraph_csv"
        rec = get_format("actigraph_csv").read(path, None)
        np.testing.assert_array_equal(rec.frame["axis1"].to_numpy(), axis1)
        assert rec.frame["time"].iloc[-1] == pd.Timestamp(START) + pd.Timedelta(minutes=len(axis1) - 1)
    manifest, _ = _import([dated], tmp_path / "ds")
    assert {"axis1", "steps", "lux", "vector_magnitude"} <= set(_channels(manifest))


def test_actigraph_agd(tmp_path):
    path = tmp_path / "s05.agd"
    axis1 = write_agd(path)
    assert detect(path) == "agd"
    rec = get_format("agd").read(path, None)
    assert rec.frame["subject"].iloc[0] == "s05" and rec.frame["time"].iloc[0] == pd.Timestamp(START)
    np.testing.assert_array_equal(rec.frame["axis1"].to_numpy(), axis1)
    _import([path], tmp_path / "ds")


def test_biobank_time_series_zone_and_class_labels(tmp_path):
    path = tmp_path / "s06-timeSeries.csv.gz"
    classes = write_biobank(path)
    assert detect(path) == "biobank"
    rec = get_format("biobank").read(path, None)
    assert rec.frame["time"].iloc[0] == pd.Timestamp(START)  # "+0000 [Europe/London]" read as London time
    assert rec.frame["subject"].iloc[0] == "s06-timeSeries"
    by_epoch = rec.labels.iloc[0]
    assert by_epoch["label"] == classes[0] == "sleep" and by_epoch["end"] == pd.Timestamp(START) + pd.Timedelta(hours=7)
    assert set(rec.labels["label"]) == {"sleep", "sedentary", "light", "MVPA"}
    manifest, _ = _import([path], tmp_path / "ds", window_minutes=360, stride_minutes=360)
    assert "sleep" in manifest["activities"] and _channels(manifest)["acc"] == "mg"


def test_fit_records_sessions_and_local_time(tmp_path):
    first, second = tmp_path / "run1.fit", tmp_path / "run2.fit"
    hr = write_fit(first, datetime(2024, 3, 4, 16, 0))
    write_fit(second, datetime(2024, 3, 5, 16, 0))
    assert detect(first) == "fit"
    rec = get_format("fit").read(first, None)
    # UTC 16:00 and the activity's local timestamp one hour ahead: 17:00 local
    assert rec.frame["time"].iloc[0] == pd.Timestamp("2024-03-04 17:00:00")
    np.testing.assert_array_equal(rec.frame["heart_rate"].to_numpy(), hr)
    assert rec.labels.to_dict("records") == [{"subject": "run1", "start": pd.Timestamp("2024-03-04 17:00"),
                                              "end": pd.Timestamp("2024-03-04 18:00"), "label": "running"}]
    manifest, report = _import([first, second], tmp_path / "ds", subject="me", window_minutes=60, stride_minutes=60)
    assert manifest["activities"] == ["running"] and report["subjects"] == ["me"]
    assert _channels(manifest)["heart_rate"] == "bpm"


def test_apple_health_export_streamed(tmp_path):
    path = tmp_path / "export.xml"
    write_apple_health(path)
    assert detect(path) == "apple_health"
    rec = get_format("apple_health").read(path, None)
    assert rec.frame["time"].iloc[0] == pd.Timestamp(START)  # local wall-clock time, offset dropped
    assert set(rec.labels["label"]) == {"running", "sleep"}
    assert rec.frame["heart_rate"].max() == 150 and rec.frame["steps"].sum() == 300 * 3 * 17 * 12
    manifest, _ = _import([path], tmp_path / "ds", grid_seconds=300, window_minutes=720, stride_minutes=720)
    assert {"running", "sleep"} & set(manifest["activities"])


def test_raw_accelerometry_reduced_to_minute_enmo_and_nonwear(tmp_path):
    """GENEActiv BIN (the raw formats share one reduction; actfast reads GT3X and CWA the same way)."""
    path = tmp_path / "s07.bin"
    enmo = write_geneactiv(path, hours=50, still_hours=(30, 32))
    assert detect(path) == "geneactiv"
    rec = get_format("geneactiv").read(path, None)
    minutes = len(enmo) // 60
    np.testing.assert_allclose(rec.frame["enmo"].to_numpy()[:minutes], enmo[: minutes * 60].reshape(-1, 60).mean(axis=1),
                               rtol=1e-4, atol=1e-3)
    still = rec.frame.set_index("time")["nonwear"]
    start = pd.Timestamp(START)
    assert still[start + pd.Timedelta(hours=30):start + pd.Timedelta(hours=32) - pd.Timedelta(minutes=1)].eq(1).all()
    assert still.sum() == 120, "the two still hours, and nothing else, are non-wear"
    manifest, report = _import([path], tmp_path / "ds")
    assert _channels(manifest) == {"enmo": "mg", "light": "lux", "nonwear": "flag"} and report["formats"]["s07.bin"] == "geneactiv"


def test_axivity_cwa_reduced_the_same_way(tmp_path):
    """An AX3 file written here (the 1024-byte header, 512-byte sectors with their checksums)."""
    path = tmp_path / "s08.cwa"
    enmo = write_cwa(path, hours=30, hz=25, still_hours=(1, 2))
    assert detect(path) == "cwa"
    rec = get_format("cwa").read(path, None)
    np.testing.assert_allclose(rec.frame["enmo"].to_numpy(), enmo.reshape(-1, 25 * 60).mean(axis=1), rtol=1e-4, atol=1e-3)
    nonwear = rec.frame.set_index("time")["nonwear"]
    assert nonwear.sum() == 60 and nonwear[pd.Timestamp(START) + pd.Timedelta(hours=1)] == 1
    assert _channels(_import([path], tmp_path / "ds", window_minutes=360, stride_minutes=360)[0]) == {"enmo": "mg", "nonwear": "flag"}


def test_cli_import_names_the_format_it_detected(tmp_path, capsys):
    path = tmp_path / "s02.awd"
    write_awd(path)
    assert cli_main(["import", str(path), "--out", str(tmp_path / "ds")]) == 0
    assert "s02.awd: Philips/CamNtech Actiwatch (.awd) (detected)" in capsys.readouterr().out
    assert cli_main(["import", str(path), "--out", str(tmp_path / "ds2"), "--format", "nope"]) == 2
    assert "--format 'nope': known formats are auto, long, acttrust, awd" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- bad files


def _replace_line(path: Path, index: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[index] = text
    path.write_text("\n".join(lines) + "\n")


def _truncate(path: Path, keep: int) -> None:
    path.write_text("\n".join(path.read_text().splitlines()[:keep]) + "\n")


BAD_FILES = [
    ("awd header only", "x.awd", lambda p: (write_awd(p), _truncate(p, 7)), r"x.awd: a header but no epochs after line 7"),
    ("awd unknown epoch code", "x.awd", lambda p: write_awd(p, code="9"), r"x.awd: line 4: epoch code '9' is not one of"),
    ("awd bad count", "x.awd", lambda p: (write_awd(p), _replace_line(p, 9, "zero")),
     r"x.awd: line 10: 'zero' is not a count"),
    ("acttrust no data", "x.txt", lambda p: (write_acttrust(p), _truncate(p, 8)), r"x.txt: the report has a header but no data"),
    ("acttrust interval mismatch", "x.txt", lambda p: write_acttrust(p, interval=30),
     None),  # consistent file: imports (the check below rewrites the header)
    ("actigraph epochs disagree", "x.csv", lambda p: write_actigraph_csv(p, row_seconds=30),
     r"x.csv: row 13: .* is 30 s after the row before, but the header's Epoch Period says epochs of 60 s"),
    ("agd gap", "x.agd", lambda p: write_agd(p, skip_at=100),
     r"x.agd: row 101: .* is 120 s after the row before, but the settings' epochlength says epochs of 60 s"),
    ("fit bad crc", "x.fit", lambda p: (write_fit(p, datetime(2024, 3, 4, 16)), p.write_bytes(_flip(p.read_bytes(), 500))),
     r"x.fit: not a readable FIT file"),
    ("fit truncated", "x.fit", lambda p: (write_fit(p, datetime(2024, 3, 4, 16)), p.write_bytes(p.read_bytes()[:800])),
     r"x.fit: not a readable FIT file"),
    ("apple health broken xml", "export.xml", lambda p: (write_apple_health(p, days=1),
                                                         p.write_text(p.read_text().replace("</HealthData>", ""))),
     r"export.xml: line \d+: not well-formed XML"),
    ("geneactiv truncated", "x.bin", lambda p: (write_geneactiv(p, hours=2), _truncate(p, 59 + 10 * 3 + 4)),
     r"x.bin: not a readable raw accelerometer file: .*incomplete record"),
    ("unknown file", "x.dat", lambda p: p.write_bytes(bytes(range(256))),
     r"x.dat: not a format sensorlm knows .*known formats: long, acttrust, awd, actiware, actigraph_csv, agd, biobank, "
     r"gt3x, cwa, geneactiv, fit, apple_health"),
]


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1:]


@pytest.mark.parametrize("what, name, write, message", [b for b in BAD_FILES if b[3]], ids=[b[0] for b in BAD_FILES if b[3]])
def test_bad_device_files_are_one_line_and_write_nothing(tmp_path, what, name, write, message):
    path = tmp_path / name
    write(path)
    out = tmp_path / "ds"
    with pytest.raises((DeviceFormatError, FileNotFoundError), match=message):
        import_device_export([str(path)], out, log=None)
    assert not out.exists() and not list(tmp_path.glob(".ds*")), "a failed import leaves nothing behind"


def test_acttrust_header_interval_must_match_the_rows(tmp_path):
    path = tmp_path / "x.txt"
    write_acttrust(path, interval=30)
    path.write_text(path.read_text().replace("INTERVAL : 30", "INTERVAL : 60"))
    with pytest.raises(DeviceFormatError, match=r"x.txt: row 10: .* is 30 s after the row before, but the header's "
                                                r"INTERVAL says epochs of 60 s"):
        get_format("acttrust").read(path, None)


def test_cli_bad_file_is_one_line(tmp_path, capsys):
    path = tmp_path / "x.awd"
    write_awd(path, code="9")
    assert cli_main(["import", str(path), "--out", str(tmp_path / "ds")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "x.awd: line 4: epoch code '9'" in err


def test_every_format_is_documented():
    text = (Path(__file__).resolve().parents[2] / "docs" / "data.md").read_text()
    for name in known_formats():
        assert f"`{name}`" in text, f"docs/data.md does not list the format {name}"
