"""`sensorlm import` spread over Ray tasks (issue 26): the same dataset with 1 and 2 workers, from
many files and one large multi-subject file read in chunks; a bad file is one line and leaves
nothing; the per-subject units see only their own rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sensorlm.data import csv_ranges
from sensorlm.data.device_import import import_device_export, load_import_spec
from sensorlm.data.synthetic.device import write_device_export


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """5 subjects x 2 days: P01-P03 in one file (read in chunks of 700 rows, so each subject spans
    chunks), P04 and P05 in a file each; one label file for all."""
    root = tmp_path_factory.mktemp("export")
    raw = write_device_export(root / "raw", subjects=5, days=2, epoch_s=60, seed=3)
    rows = pd.read_csv(raw["export"], dtype=str)
    files = [root / "study_a.csv", root / "P04.csv", root / "P05.csv"]
    rows[rows["participant"].isin(["P01", "P02", "P03"])].to_csv(files[0], index=False)
    for f in files[1:]:
        rows[rows["participant"] == f.stem].to_csv(f, index=False)
    return files, raw


def _import(export, out: Path, workers: int, log=None, **kw) -> dict:
    files, raw = export
    return import_device_export(files, out, spec=load_import_spec(raw["spec"], window_minutes=360),
                                labels=raw["labels"], log=log, workers=workers, chunk_rows=700, max_count=8,
                                vocab_size=256, **kw)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.tar"))}


def test_chunked_reading_gives_the_dataset_of_one_chunk(export, tmp_path):
    """In this process: chunks of 700 rows and one chunk per file give the same shards."""
    files, raw = export
    spec = load_import_spec(raw["spec"], window_minutes=360)
    small = import_device_export(files[:2], tmp_path / "small", spec=spec, labels=raw["labels"], log=None,
                                 chunk_rows=700, max_count=8, vocab_size=256)
    whole = import_device_export(files[:2], tmp_path / "whole", spec=spec, labels=raw["labels"], log=None,
                                 max_count=8, vocab_size=256)
    assert _digests(tmp_path / "small") == _digests(tmp_path / "whole")
    assert small["stats"] == whole["stats"] and small["import"] == whole["import"]
    assert small["import"]["subjects"] == ["P01", "P02", "P03", "P04"]


def test_the_workers_option_reaches_the_import(tmp_path, capsys, monkeypatch):
    from sensorlm.cli import main

    raw = write_device_export(tmp_path / "raw", subjects=2, days=2, epoch_s=60, seed=0)
    seen = {}
    import sensorlm.data.device_import as device_import

    real = device_import.import_device_export
    monkeypatch.setattr(device_import, "import_device_export",
                        lambda *a, **kw: seen.update(workers=kw["workers"]) or real(*a, **kw))
    assert main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--out", str(tmp_path / "a"),
                 "--window-minutes", "360", "--workers", "1", "--quiet"]) == 0
    assert seen == {"workers": 1}
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--out", str(tmp_path / "b"),
                 "--window-minutes", "360", "--quiet"]) == 0
    assert seen == {"workers": 1}, "auto without a running Ray imports in this process"  # (runs before module_ray)
    with pytest.raises(SystemExit):
        main(["import", str(raw["export"]), "--out", str(tmp_path / "c"), "--workers", "0"])
    assert "expected a positive integer, got 0" in capsys.readouterr().err


def _keys_by_split(folder: Path, manifest: dict) -> dict[str, list[str]]:
    import tarfile

    keys: dict[str, list[str]] = {}
    for split, entry in manifest["splits"].items():
        for shard in entry["shards"]:
            with tarfile.open(folder / shard["name"]) as tar:
                keys.setdefault(split, []).extend(n[:-len(".json")] for n in tar.getnames() if n.endswith(".json"))
    return keys


@pytest.mark.slow
def test_one_and_two_ray_workers_give_the_same_dataset(export, tmp_path, module_ray, monkeypatch):
    from sensorlm.data import import_parts

    monkeypatch.setattr(import_parts, "PART_ROWS", 8)  # several parts, written by parallel writers
    monkeypatch.setattr(import_parts, "MIN_PART_ROWS", 1)
    monkeypatch.setattr(csv_ranges, "RANGE_BYTES", 100_000)  # with 2 workers, each file is read as byte ranges
    one = _import(export, tmp_path / "one", workers=1)
    said: list[str] = []
    two = _import(export, tmp_path / "two", workers=2, log=said.append)
    assert [m for m in said if "byte ranges" in m] == [
        "study_a.csv: read in parallel as 6 byte ranges", "P04.csv: read in parallel as 2 byte ranges",
        "P05.csv: read in parallel as 2 byte ranges"]
    assert len(list((tmp_path / "two" / "parquet").glob("import-*.parquet"))) == len(one["sources"]) > 2
    assert one["num_samples"] == two["num_samples"] > 20
    # shards byte for byte: the same samples, keys, splits and order; statistics and report equal
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two") and len(_digests(tmp_path / "one")) > 3
    for field in ("splits", "stats", "activities", "channels", "import"):
        assert one[field] == two[field], field
    report = json.loads((tmp_path / "two" / "import_report.json").read_text())
    assert report == json.loads((tmp_path / "one" / "import_report.json").read_text())
    assert report["subjects"] == ["P01", "P02", "P03", "P04", "P05"] and report["files"] == [
        "study_a.csv", "P04.csv", "P05.csv"]
    assert report["duplicate_timestamps"] > 0 and report["out_of_order_rows"] > 0
    assert not list(tmp_path.glob(".*importing*"))  # the scratch and staging folders are gone
    assert not list((tmp_path / "two").glob("part*.tar"))  # every part's shards were numbered

    # Parts of another size cut the shards elsewhere (a shard never spans two parts), but the
    # samples, their keys, order and splits are the same, and the statistics equal to float rounding.
    monkeypatch.setattr(import_parts, "PART_ROWS", 10**6)
    monkeypatch.setattr(import_parts, "MIN_PART_ROWS", 10**6)
    single = _import(export, tmp_path / "single", workers=1)
    assert len(single["sources"]) == 1
    assert _keys_by_split(tmp_path / "single", single) == _keys_by_split(tmp_path / "two", two)
    for key in ("mean", "std"):
        np.testing.assert_allclose(single["stats"]["sensor"][key], two["stats"]["sensor"][key], rtol=1e-10)
    assert single["stats"]["sensor"]["count"] == two["stats"]["sensor"]["count"]


@pytest.mark.slow
def test_a_bad_row_on_a_ray_worker_is_the_same_one_line_and_writes_nothing(export, tmp_path, module_ray, monkeypatch):
    """With 2 workers the bad row lies in a later byte range of its file: the same row is named."""
    monkeypatch.setattr(csv_ranges, "RANGE_BYTES", 20_000)
    files, raw = export
    bad = tmp_path / "P05.csv"
    rows = pd.read_csv(files[2], dtype=str)
    rows.loc[1234, "HR"] = "n/a?"
    rows.to_csv(bad, index=False)
    messages = []
    for workers in (1, 2):
        out = tmp_path / f"out{workers}"
        with pytest.raises(ValueError) as err:
            _import(([files[0], files[1], bad], raw), out, workers=workers)
        messages.append(str(err.value))
        assert not out.exists() and not list(tmp_path.glob(".*importing*"))
    assert messages[0] == messages[1] == f"{bad}: row 1235: column 'HR' = 'n/a?' is not a number"


def test_parts_follow_the_data_never_the_workers():
    """Whole subjects, in order, cut at the first subject boundary past the part size, which
    follows the number of windows (clamped), so any worker count writes the same parts."""
    from sensorlm.data.import_parts import MIN_PART_ROWS, PART_ROWS, part_rows, plan_parts

    assert part_rows(100) == MIN_PART_ROWS and part_rows(10**8) == PART_ROWS and part_rows(32 * 1000) == 1000
    windowed = [{"path": f"s{i}.parquet", "windows": [0] * n} for i, n in enumerate([200, 0, 100, 300, 5])]
    windowed[1]["path"] = None  # a subject without a window
    splits = [f"x{i}" for i in range(605)]
    parts = plan_parts(windowed, splits)
    assert [p.windows for p in parts] == [("s0.parquet", "s2.parquet"), ("s3.parquet",), ("s4.parquet",)]
    assert [len(p.splits) for p in parts] == [300, 300, 5] and parts[1].splits[0] == "x300"
