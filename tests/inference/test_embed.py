"""`sensorlm embed` (sensorlm/inference/embed.py) on a tiny dataset with a local Ray (one per module)."""

from __future__ import annotations

import dataclasses
import importlib.util
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import mlflow
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from sensorlm.cli import main
from sensorlm.data.schema import schema_for, write_rows
from sensorlm.inference.embed import REPORT_FILE, EmbedError, EmbedOptions, embed
from sensorlm.models import create_model, model_config
from sensorlm.tracking.mlflow_utils import register_version, setup_experiment
from sensorlm.tracking.package import save_model_package
from sensorlm.data.shards import encode_sample
from sensorlm.tracking.pyfunc import SensorLMPyfunc, log_model_package

# the shared tiny-dataset helpers, loaded by path (pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location(
    "pipeline_fixtures", Path(__file__).resolve().parents[1] / "data" / "pipeline_fixtures.py")
_fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fx)

N = 10  # samples: shards of 4 -> train-000000..2 (val every 4th: 3 val, 7 train)
PROMPTS = ["a day with a long run", "a quiet day at home", "cycling to work and back"]


@pytest.fixture(scope="module", autouse=True)
def local_ray(module_ray):
    """The local Ray `sensorlm embed` starts (through `init_ray`, as every command does)."""


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("data") / "wearable"
    _fx.write_wearable(out, n=N, max_count=3, val_every=4)
    return out


@pytest.fixture(scope="module")
def package(dataset, tmp_path_factory) -> Path:
    """A sensorlm_tiny package fitted to the dataset's 6 channels, with its stats and tokenizer."""
    base = model_config("sensorlm_tiny")
    cfg = model_config("sensorlm_tiny", sensor=dataclasses.replace(base.sensor, num_channels=_fx.C, patch=(6, _fx.C)))
    torch.manual_seed(0)
    model = create_model("sensorlm_tiny", sensor=cfg.sensor).eval()
    manifest = json.loads((dataset / "manifest.json").read_text())
    return save_model_package(model, "sensorlm_tiny", cfg, tmp_path_factory.mktemp("pkg") / "pkg",
                              tokenizer_path=dataset / "tokenizer.json", data_stats={"stats": manifest["stats"]})


@pytest.fixture(scope="module")
def registered(package, tmp_path_factory) -> str:
    """The package logged (models-from-code) and registered as embed-tiny v1 @champion; returns the store."""
    store = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))  # MLflow's relative artifact folders land here
    try:
        setup_experiment("embed-tests", store)
        with mlflow.start_run():
            info = log_model_package(package)
        register_version(info, "embed-tiny", {"val/loss": 0.5}, alias="champion")
    finally:
        os.chdir(cwd)
    return store


def _raw(samples) -> np.ndarray:
    raw = np.stack([s.arrays["sensor"] for s in samples]).astype(np.float32)
    raw[np.stack([s.arrays["missing"] for s in samples]).astype(bool)] = np.nan
    return raw


def _read(out: Path) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(out.glob("*.parquet"))])


def test_dataset_embeddings_equal_pyfunc_predict(registered, dataset, tmp_path):
    out = tmp_path / "emb"
    report = embed("models:/embed-tiny@champion", str(out), dataset=str(dataset), batch_size=2,
                   tracking_uri=registered, log=None)
    names = sorted(p.name for p in out.glob("*.parquet"))
    assert names == sorted(report.written) == ["train-000000.parquet", "train-000001.parquet",
                                               "train-000002.parquet", "val-000000.parquet"]
    assert report.rows == N and report.bad_count == 0 and not report.failed and report.samples_per_s > 0

    table = _read(out)
    assert table.schema.field("embedding").type == pa.list_(pa.float32(), 64)
    meta = pq.read_schema(out / "val-000000.parquet").metadata
    assert meta[b"sensorlm.model_uri"] == b"models:/embed-tiny/1" and meta[b"sensorlm.model_version"] == b"1"
    assert meta[b"sensorlm.model_requested"] == b"models:/embed-tiny@champion"

    samples = {s.key: s for s in _fx.wearable_samples(N, val_every=4)}
    keys = table.column("key").to_pylist()
    assert sorted(keys) == sorted(samples)
    rows = {k: i for i, k in enumerate(keys)}
    assert table.column("label")[rows["s0001"]].as_py() == samples["s0001"].meta["primary_activity"]
    assert table.column("split")[rows["s0000"]].as_py() == "val"

    mlflow.set_tracking_uri(registered)
    served = mlflow.pyfunc.load_model("models:/embed-tiny/1")
    expected = served.predict({"sensor": _raw([samples[k] for k in keys])})
    got = np.stack(table.column("embedding").to_numpy(zero_copy_only=False))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert json.loads((out / REPORT_FILE).read_text())["rows"] == N


def test_rerun_recomputes_only_missing_files(package, dataset, tmp_path):
    out = tmp_path / "emb"
    first = embed(str(package), str(out), dataset=str(dataset), splits=["train"], log=None)
    assert len(first.written) == 3
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    lost = "train-000001.parquet"
    kept_table = pq.read_table(out / lost)
    (out / lost).unlink()  # as if the job died before this file's rename ...
    (out / f".{lost}.0123abcd.tmp").write_bytes(b"half a file")  # ... leaving its temporary file

    again = embed(str(package), str(out), dataset=str(dataset), splits=["train"], log=None)
    assert again.written == [lost] and sorted(again.existing) == sorted(set(before) - {lost})
    assert again.rows == kept_table.num_rows
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*.parquet")}
    assert {k: v for k, v in after.items() if k != lost} == {k: v for k, v in before.items() if k != lost}
    assert pq.read_table(out / lost).equals(kept_table)

    done = embed(str(package), str(out), dataset=str(dataset), splits=["train"], log=None)  # nothing left
    assert done.written == [] and len(done.existing) == 3 and done.rows == 0


def test_corrupt_shard_and_bad_sample_are_skipped_and_reported(package, dataset, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(dataset, data)
    whole = (data / "train-000001.tar").read_bytes()
    (data / "train-000001.tar").write_bytes(whole[: len(whole) // 2 + 100])  # truncated
    samples = list(_fx.wearable_samples(6))
    samples[4].arrays["sensor"] = samples[4].arrays["sensor"][:, :5]  # wrong shape

    report = embed(str(package), str(tmp_path / "emb"), dataset=str(data), log=None)
    assert report.failed == ["train-000001.parquet"]
    assert not (tmp_path / "emb" / "train-000001.parquet").exists()
    (bad,) = report.bad
    assert bad["reason"] == "unreadable_shard" and bad["shard"] == "train-000001.tar"
    assert report.rows == N - 3 and len(report.written) == 3
    on_disk = json.loads((tmp_path / "emb" / REPORT_FILE).read_text())
    assert on_disk["bad"][0]["shard"] == "train-000001.tar"

    # a sample of the wrong shape (appended to a shard after writing) is skipped, the rest embedded
    odd = tmp_path / "odd"
    _fx.write_wearable_samples(odd, samples[:4] + samples[5:], max_count=64)
    with tarfile.open(odd / "train-000000.tar", "a") as tar:
        for name, member in encode_sample(samples[4]):
            info = tarfile.TarInfo(name)
            info.size = len(member)
            tar.addfile(info, io.BytesIO(member))
    report = embed(str(package), str(tmp_path / "emb-odd"), dataset=str(odd), log=None)
    assert report.rows == 5 and [(b["reason"], b["key"]) for b in report.bad] == [("wrong_shape", "s0004")]


def test_text_prompts_and_parquet_days(package, tmp_path, capsys):
    out = tmp_path / "text"
    report = embed(str(package), str(out), texts=PROMPTS, prompts_per_file=2, log=None)
    assert [n[:12] for n in report.written] == ["text-000000-", "text-000001-"]
    table = _read(out)
    assert table.column("prompt").to_pylist() == PROMPTS
    pyfunc = SensorLMPyfunc()
    pyfunc.load_package(package)
    expected = pyfunc.predict(None, {"text": PROMPTS})
    np.testing.assert_allclose(np.stack(table.column("embedding").to_numpy(zero_copy_only=False)), expected,
                               atol=1e-5)
    assert pq.read_schema(out / report.written[0]).metadata[b"sensorlm.embedding"] == b"text"

    # Parquet days through the CLI: subject and day come along
    info = _fx.wearable_info()
    schema = schema_for("wearable", seq_len=info.seq_len, channels=info.channels, activities=_fx.ACTS)
    rows = [{"key": s.key, "subject_id": f"u{i % 2}", "day": i, "split": s.split,
             "sensor": s.arrays["sensor"].reshape(-1), "missing": s.arrays["missing"].reshape(-1),
             "caption": s.text, "primary_activity": s.meta["primary_activity"]}
            for i, s in enumerate(_fx.wearable_samples(5))]
    write_rows(rows, tmp_path / "days" / "days.parquet", schema)
    wide = schema_for("wearable", seq_len=info.seq_len, channels=info.channels + [("extra", "u")], activities=_fx.ACTS)
    write_rows([dict(rows[0], sensor=np.zeros(info.seq_len * (_fx.C + 1), np.float32))],
               tmp_path / "days" / "wide.parquet", wide)  # another shape: skipped, reported
    assert main(["embed", str(package), "--parquet", str(tmp_path / "days"), "--out", str(tmp_path / "pq"),
                 "--batch-size", "2", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "5 rows in 1 files" in printed and "skipped unreadable_file: wide.parquet wrong_shape" in printed
    days = pq.read_table(tmp_path / "pq" / "days.parquet")
    assert days.column("subject_id").to_pylist() == ["u0", "u1", "u0", "u1", "u0"]
    assert days.column("day").to_pylist() == [0, 1, 2, 3, 4]


def test_bad_arguments_are_one_line_errors(package, dataset, tmp_path, capsys):
    def error(*argv) -> str:
        assert main(["embed", *argv, "--out", str(tmp_path / "o")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        (err,) = [line for line in lines if "error:" in line]  # (MLflow may log its own INFO lines)
        assert err.startswith("sensorlm embed: error: ") and lines[-1] == err
        return err

    assert "model " + str(tmp_path / "nope") in error(str(tmp_path / "nope"), "--dataset", str(dataset))
    assert "model models:/nope/1: not found in the registry" in error(
        "models:/nope/1", "--dataset", str(dataset), "--tracking-uri", f"sqlite:///{tmp_path / 'empty.db'}")
    assert f"dataset {tmp_path / 'none'}: no manifest.json" in error(str(package), "--dataset", str(tmp_path / "none"))
    wide = save_model_package(create_model("sensorlm_tiny"), "sensorlm_tiny", model_config("sensorlm_tiny"),
                              tmp_path / "wide", tokenizer_path=dataset / "tokenizer.json",
                              data_stats={"stats": {"sensor": {"mean": [0.0] * 34, "std": [1.0] * 34}}})
    err = error(str(wide), "--dataset", str(dataset))
    assert "samples are (T, C) = (144, 6)" in err and "expects (144, 34)" in err
    # a folder of one model's embeddings is not resumed with another model
    assert main(["embed", str(package), "--text", "a walk", "--out", str(tmp_path / "t"), "--quiet"]) == 0
    with pytest.raises(EmbedError, match="holds embeddings of .* use another output folder"):
        embed(str(wide), str(tmp_path / "t"), texts=["a walk"], log=None)
    with pytest.raises(EmbedError, match="exactly one input"):
        embed(str(package), str(tmp_path / "o"), log=None)
    # the options are one typed record, checked before the model is touched
    with pytest.raises(EmbedError, match="embed: unknown option 'batchsize'"):
        embed(str(package), str(tmp_path / "o"), texts=["a walk"], batchsize=4, log=None)
    with pytest.raises(EmbedError, match="num_actors must be an integer >= 1, got 0"):
        embed("models:/none/1", str(tmp_path / "o"), texts=["a walk"], num_actors=0, log=None)
    with pytest.raises(EmbedError, match="cpus_per_actor must be > 0"):
        EmbedOptions(cpus_per_actor=0)
    assert not (tmp_path / "o").exists()


def test_device_export_is_imported_on_the_fly(tmp_path):
    from sensorlm.data.device_import import import_device_export, load_import_spec
    from sensorlm.data.synthetic.device import write_device_export

    export = write_device_export(tmp_path / "raw", subjects=2, days=2, epoch_s=60, seed=0)
    spec = load_import_spec(export["spec"], window_minutes=240)
    probe = import_device_export([export["export"]], tmp_path / "probe", spec=spec, log=None)  # for the shape
    t, c = probe["sample_shape"]["sensor"]
    base = model_config("sensorlm_tiny")
    cfg = model_config("sensorlm_tiny", sensor=dataclasses.replace(base.sensor, input_len=t, num_channels=c,
                                                                   patch=(6, c)))
    pkg = save_model_package(create_model("sensorlm_tiny", sensor=cfg.sensor), "sensorlm_tiny", cfg,
                             tmp_path / "pkg", tokenizer_path=tmp_path / "probe" / "tokenizer.json",
                             data_stats={"stats": probe["stats"]})
    out = tmp_path / "emb"
    report = embed(str(pkg), str(out), exports=[export["export"]], import_spec=spec, labels=export["labels"], log=None)
    n = sum(e["num_samples"] for e in probe["splits"].values())
    assert report.rows == n and (out / "_import" / "manifest.json").is_file()
    table = pq.read_table(out)  # the folder: _import and _embed_report.json are skipped
    assert table.num_rows == n and set(table.column("subject_id").to_pylist()) == set(probe["import"]["subjects"])
    assert None not in table.column("day").to_pylist()
    again = embed(str(pkg), str(out), exports=[export["export"]], import_spec=spec, labels=export["labels"], log=None)
    assert again.written == [] and again.rows == 0  # the import and every file are reused
