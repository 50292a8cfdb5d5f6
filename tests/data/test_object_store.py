"""Datasets in an S3-compatible store on loopback (moto's standalone server, as s3fs's own tests
use): `sensorlm import` writes there (manifest last, nothing over an existing dataset, nothing left
by a failed import) and the loader reads the same batches from there as from the local copy."""

from __future__ import annotations

import pytest

from sensorlm.data.device_import import import_device_export, load_import_spec
from sensorlm.data.synthetic.device import write_device_export

pytest.importorskip("s3fs")
pytest.importorskip("moto.server")  # the `s3` fixture (tests/conftest.py)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    return write_device_export(tmp_path_factory.mktemp("raw"), subjects=2, days=2, epoch_s=60, seed=1)


def _import(raw, out, **kw):
    return import_device_export([raw["export"]], out, spec=load_import_spec(raw["spec"], window_minutes=360),
                                labels=raw["labels"], log=None, max_count=4, vocab_size=256, **kw)


def test_import_writes_to_s3_and_the_loader_reads_the_same_batches(s3, raw, tmp_path):
    from sensorlm.data.loader import make_loader

    local = _import(raw, tmp_path / "local")
    remote = _import(raw, "s3://sensorlm-data/study", scratch=tmp_path)
    assert remote["splits"] == local["splits"] and remote["stats"] == local["stats"]
    names = {p.rsplit("/", 1)[-1] for p in s3.find("sensorlm-data/study")}
    assert {"manifest.json", "tokenizer.json", "import_report.json"} <= names
    assert {s["name"] for split in local["splits"].values() for s in split["shards"]} <= names
    assert not list(tmp_path.glob("sensorlm-import-*")), "the local build is removed after the upload"

    def keys(source):
        loader = make_loader(source, "train", 4, num_workers=0, shuffle=False)
        return [(k, b["sensor"].sum().item()) for b in loader for k in b["key"]]

    assert keys("s3://sensorlm-data/study") == keys(tmp_path / "local") and len(keys(tmp_path / "local")) > 4


def test_exports_in_a_bucket_import_like_local_files_and_bad_ones_name_their_url(s3, raw, tmp_path):
    s3.put_file(str(raw["export"]), "sensorlm-data/exports/export.csv")
    spec = load_import_spec(raw["spec"], window_minutes=360)
    local = import_device_export([raw["export"]], tmp_path / "local", spec=spec, labels=raw["labels"], log=None)
    remote = import_device_export(["s3://sensorlm-data/exports/export.csv"], tmp_path / "remote", spec=spec,
                                  labels=raw["labels"], log=None)
    assert remote["splits"] == local["splits"] and remote["stats"] == local["stats"]

    text = raw["export"].read_text().splitlines()
    text[3] = text[3].replace(text[3].split(",")[2], "high", 1)
    s3.pipe_file("sensorlm-data/exports/bad.csv", ("\n".join(text) + "\n").encode())
    with pytest.raises(ValueError, match=r"^s3://sensorlm-data/exports/bad.csv: row 3: column 'HR' = 'high' is not"):
        import_device_export(["s3://sensorlm-data/exports/bad.csv"], tmp_path / "bad", spec=spec, log=None)
    with pytest.raises(FileNotFoundError, match="s3://sensorlm-data/exports/none.csv"):
        import_device_export(["s3://sensorlm-data/exports/none.csv"], tmp_path / "none", spec=spec, log=None)
    assert not (tmp_path / "bad").exists() and not (tmp_path / "none").exists()


def test_s3_destinations_are_never_overwritten_and_a_failed_import_leaves_nothing(s3, raw, tmp_path):
    _import(raw, "s3://sensorlm-data/taken", scratch=tmp_path)
    before = sorted(s3.find("sensorlm-data/taken"))
    with pytest.raises(FileExistsError, match="s3://sensorlm-data/taken: exists and is not empty"):
        _import(raw, "s3://sensorlm-data/taken", scratch=tmp_path)
    assert sorted(s3.find("sensorlm-data/taken")) == before

    bad = tmp_path / "bad.csv"
    bad.write_text(raw["export"].read_text().replace("\n", "\nnot-a-time,P01,1,2,3,4,5,6,7\n", 1))
    with pytest.raises(ValueError, match=rf"{bad}: row 1: column 'timestamp' = 'not-a-time' is not a timestamp"):
        import_device_export([bad], "s3://sensorlm-data/failed", spec=load_import_spec(raw["spec"]), log=None,
                             scratch=tmp_path)
    assert not s3.exists("sensorlm-data/failed") or not s3.find("sensorlm-data/failed")
    assert not list(tmp_path.glob("sensorlm-import-*"))
