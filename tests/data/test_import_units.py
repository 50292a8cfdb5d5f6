"""`sensorlm import` spread over Ray tasks (issue 26): the same dataset with 1 and 2 workers, from
many files and one large multi-subject file read in chunks; a bad file is one line and leaves
nothing; the per-subject units see only their own rows."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest

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


def _import(export, out: Path, workers: int, **kw) -> dict:
    files, raw = export
    return import_device_export(files, out, spec=load_import_spec(raw["spec"], window_minutes=360),
                                labels=raw["labels"], log=None, workers=workers, chunk_rows=700, max_count=8,
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


@pytest.mark.slow
def test_one_and_two_ray_workers_give_the_same_dataset(export, tmp_path, module_ray):
    one = _import(export, tmp_path / "one", workers=1)
    two = _import(export, tmp_path / "two", workers=2)
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


@pytest.mark.slow
def test_a_bad_row_on_a_ray_worker_is_the_same_one_line_and_writes_nothing(export, tmp_path, module_ray):
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
