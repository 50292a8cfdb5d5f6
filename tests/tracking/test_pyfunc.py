"""The models-from-code pyfunc end to end on a temporary SQLite store (sensorlm/tracking/pyfunc.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml

from sensorlm.data.tokenizer import load_tokenizer, train_tokenizer
from sensorlm.models import create_model, model_config
from sensorlm.models.sst import month_of_year_from_last
from sensorlm.tracking.mlflow_utils import register_version, setup_experiment
from sensorlm.tracking.package import save_model_package
from sensorlm.tracking.pyfunc import SensorLMPyfunc, log_model_package, pip_requirements

CAPTIONS = [
    "a brisk morning walk in the park",
    "running for an hour after work",
    "a long night of deep sleep",
    "cycling to the office and back",
    "a calm day with little activity",
]
C, T = 34, 144
SENSOR_MEAN = np.linspace(40.0, 90.0, C)
SENSOR_STD = np.linspace(0.5, 6.0, C)
SST_MEAN, SST_STD = 18.5, 4.25
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("mlflow")
    return f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(autouse=True)
def _tracking(store, tmp_path, monkeypatch):
    # Everything relative lands in tmp_path, never in the repository.
    monkeypatch.chdir(tmp_path)
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(store)
    yield
    mlflow.set_tracking_uri(previous)


def _log_and_register(store: str, package: Path, name: str):
    setup_experiment("pyfunc-tests", store)
    with mlflow.start_run():
        info = log_model_package(package)
    version = register_version(info, name, {"val/loss": 0.25}, alias="champion")
    return info, version


@pytest.fixture(scope="module")
def sensorlm_logged(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("sensorlm")
    tok = train_tokenizer(CAPTIONS * 4, vocab_size=200).save(root / "tokenizer.json")
    torch.manual_seed(0)
    model = create_model("sensorlm_tiny").eval()
    stats = {"stats": {"sensor": {"mean": SENSOR_MEAN.tolist(), "std": SENSOR_STD.tolist()}}}
    package = save_model_package(model, "sensorlm_tiny", model_config("sensorlm_tiny"), root / "pkg",
                                 tokenizer_path=tok, data_stats=stats)
    mlflow.set_tracking_uri(store)
    info, version = _log_and_register(store, package, "sensorlm-tiny")
    return {"model": model, "tokenizer": load_tokenizer(tok), "info": info, "version": version, "package": package}


@pytest.fixture(scope="module")
def sst_logged(store, tmp_path_factory):
    root = tmp_path_factory.mktemp("sst")
    torch.manual_seed(1)
    model = create_model("sst_tiny").eval()
    stats = {"stats": {"sst": {"mean": SST_MEAN, "std": SST_STD}}}
    package = save_model_package(model, "sst_tiny", model_config("sst_tiny"), root / "pkg", data_stats=stats)
    mlflow.set_tracking_uri(store)
    info, version = _log_and_register(store, package, "sst-tiny")
    return {"model": model, "info": info, "version": version, "package": package}


def _raw_sensor(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = (SENSOR_MEAN + SENSOR_STD * rng.standard_normal((n, T, C))).astype(np.float32)
    x[0, 10:30] = np.nan  # 20 missing minutes
    x[1, 50, 7] = np.nan  # one missing value in an observed minute
    return x


def _expected_sensor(model, raw: np.ndarray) -> np.ndarray:
    nan = np.isnan(raw)
    x = np.where(nan, 0.0, (raw - SENSOR_MEAN) / SENSOR_STD).astype(np.float32)
    with torch.no_grad():
        return model.encode_sensor(torch.from_numpy(x), torch.from_numpy(nan.all(axis=2))).numpy()


def _expected_text(model, tokenizer, texts) -> np.ndarray:
    ids, mask = tokenizer.encode(texts, model.config.text.context_len)
    with torch.no_grad():
        return model.encode_text(torch.from_numpy(ids), torch.from_numpy(mask)).numpy()


@pytest.mark.parametrize("uri", ["models:/sensorlm-tiny/1", "models:/sensorlm-tiny@champion"])
def test_sensorlm_pyfunc_matches_module(sensorlm_logged, uri):
    assert str(sensorlm_logged["version"].version) == "1"
    served = mlflow.pyfunc.load_model(uri)
    model, tok = sensorlm_logged["model"], sensorlm_logged["tokenizer"]
    texts = CAPTIONS[:3]
    raw = _raw_sensor(4)

    text_emb = served.predict({"text": texts})
    assert text_emb.dtype == np.float32 and text_emb.shape == (3, 64)
    np.testing.assert_allclose(text_emb, _expected_text(model, tok, texts), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, atol=1e-5)

    sensor_emb = served.predict({"sensor": raw})
    assert sensor_emb.dtype == np.float32 and sensor_emb.shape == (4, 64)
    np.testing.assert_allclose(sensor_emb, _expected_sensor(model, raw), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(sensor_emb, axis=1), 1.0, atol=1e-5)

    both = served.predict({"text": texts, "sensor": raw})
    assert set(both) == {"text_emb", "sensor_emb"}
    np.testing.assert_allclose(both["text_emb"], text_emb, atol=1e-6)
    np.testing.assert_allclose(both["sensor_emb"], sensor_emb, atol=1e-6)


def test_missing_minutes_do_not_depend_on_their_values(sensorlm_logged):
    served = mlflow.pyfunc.load_model("models:/sensorlm-tiny/1")
    raw = _raw_sensor(2)
    other = raw.copy()
    other[1, 100:110] = np.nan
    a = served.predict({"sensor": other})
    # the same minutes missing with other (NaN) contents give the same embedding
    other2 = other.copy()
    other2[0, 10:30] = np.nan
    np.testing.assert_allclose(served.predict({"sensor": other2}), a, atol=1e-6)
    assert not np.allclose(a[1], served.predict({"sensor": raw})[1], atol=1e-4)


def _sst_inputs(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    days, H, W = 64, 32, 32
    daily = (SST_MEAN + 3.0 * rng.standard_normal((n, days, H, W))).astype(np.float32)
    cloud = rng.random((n, days, H, W)) < 0.4
    daily[cloud] = np.nan
    padded = np.zeros((n, days), bool)
    padded[:, 30:32] = True  # a 30-day month in slot 0
    padded[:, 63] = True  # a 31-day month in slot 1
    daily[padded] = np.nan
    land = np.zeros((n, H, W), bool)
    land[:, :5, :7] = True
    daily[np.broadcast_to(land[:, None], daily.shape)] = np.nan
    month = np.array([7, 2, 11][:n], np.int64)
    return daily, land, padded, month


def _expected_sst(model, daily, land, padded, month) -> np.ndarray:
    missing = np.isnan(daily) | padded[:, :, None, None] | land[:, None]
    x = np.where(missing, 0.0, (daily - SST_MEAN) / SST_STD).astype(np.float32)
    moy = month_of_year_from_last(torch.from_numpy(month), 2)
    with torch.no_grad():
        out = model(torch.from_numpy(x)[:, None], torch.from_numpy(missing)[:, None], torch.from_numpy(padded),
                    torch.from_numpy(land), moy)
    maps = out[:, 0].numpy() * SST_STD + SST_MEAN
    return np.where(land, 0.0, maps)


@pytest.mark.parametrize("uri", ["models:/sst-tiny/1", "models:/sst-tiny@champion"])
def test_sst_pyfunc_matches_module(sst_logged, uri):
    served = mlflow.pyfunc.load_model(uri)
    daily, land, padded, month = _sst_inputs(3)
    maps = served.predict({"daily": daily, "land": land, "padded_days": padded, "month": month})
    assert maps.dtype == np.float32 and maps.shape == (3, 32, 32)
    expected = _expected_sst(sst_logged["model"], daily, land, padded, month)
    np.testing.assert_allclose(maps, expected, atol=1e-4)  # degrees C; 1e-5 in normalised units
    assert np.all(maps[land] == 0.0)
    assert np.all(np.isfinite(maps)) and np.abs(maps[~land] - SST_MEAN).max() < 50

    # month_of_year given directly == derived from the calendar month
    moy = month_of_year_from_last(torch.from_numpy(month), 2).numpy()
    same = served.predict({"daily": daily, "land": land, "padded_days": padded, "month_of_year": moy})
    np.testing.assert_allclose(same, maps, atol=1e-6)
    # without padded_days, day slots that are NaN everywhere count as padded
    derived = served.predict({"daily": daily, "land": land[0].astype(np.uint8), "month": month})
    np.testing.assert_allclose(derived, maps, atol=1e-6)


def test_no_pickle_in_logged_model(sensorlm_logged, tmp_path):
    local = Path(mlflow.artifacts.download_artifacts("models:/sensorlm-tiny/1", dst_path=str(tmp_path / "dl")))
    files = [p for p in local.rglob("*") if p.is_file()]
    assert not [p for p in files if p.suffix in (".pkl", ".pickle") or p.name == "python_model.pkl"]
    mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    flavor = mlmodel["flavors"]["python_function"]
    assert "python_model" not in flavor and flavor["loader_module"] == "mlflow.pyfunc.loaders.code_model"
    assert (local / Path(flavor["model_code_path"]).name).read_text().rstrip().endswith(
        "mlflow.models.set_model(SensorLMPyfunc())"
    )
    # weights as safetensors in the package artifact, sensorlm source as code_paths
    assert (local / flavor["artifacts"]["package"]["path"] / "model.safetensors").is_file()
    assert (local / "code" / "sensorlm" / "models" / "sensorlm.py").is_file()
    reqs = (local / "requirements.txt").read_text().split()
    assert reqs == pip_requirements()
    torch_pin = next(r for r in reqs if r.startswith("torch=="))
    assert "+" not in torch_pin and torch_pin == f"torch=={torch.__version__.split('+')[0]}"
    assert mlmodel["signature"]["inputs"]
    assert (local / "input_example.json").is_file()


def test_bad_inputs_are_named(sensorlm_logged, sst_logged):
    served = mlflow.pyfunc.load_model("models:/sensorlm-tiny/1")
    with pytest.raises(ValueError, match=r"expected shape \(N, 144, 34\), got \(2, 10, 34\)"):
        served.predict({"sensor": np.zeros((2, 10, C), np.float32)})
    with pytest.raises(ValueError, match="give at least one of"):
        served.predict({})
    bad = _raw_sensor(2)
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="infinite"):
        served.predict({"sensor": bad})
    with pytest.raises(Exception, match="text"):
        served.predict({"text": [1, 2]})
    # one day without the batch axis: one line naming the key and both shapes, not the data
    with pytest.raises(ValueError) as day:
        served.predict({"sensor": np.zeros((T, C))})
    assert str(day.value) == f"input 'sensor': expected shape (N, T={T}, C={C}) in raw units, NaN = missing, got ({T}, {C})"
    with pytest.raises(Exception, match=r"^Failed to enforce schema of data '\{'sensor': 'abc'\}'.*got str$"):
        served.predict({"sensor": "abc"})  # not an array at all: MLflow's one line

    # the class itself (no MLflow schema in front) names unknown keys
    direct = SensorLMPyfunc()
    direct.load_package(sensorlm_logged["package"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['image'\]"):
        direct.predict(None, {"text": ["a walk"], "image": [1.0]})
    with pytest.raises(ValueError, match="a dict of named inputs"):
        direct.predict(None, [1, 2, 3])

    sst = mlflow.pyfunc.load_model("models:/sst-tiny/1")
    daily, land, padded, month = _sst_inputs(2)
    with pytest.raises(Exception, match="daily"):
        sst.predict({"land": land})
    with pytest.raises(ValueError, match=r"expected shape \(N, 64, 32, 32\), got \(2, 60, 32, 32\)"):
        sst.predict({"daily": daily[:, :60]})
    with pytest.raises(ValueError) as one_sample:  # no batch axis: one line, not the data
        sst.predict({"daily": daily[0]})
    assert "\n" not in str(one_sample.value) and "'daily'" in str(one_sample.value) and "(64, 32, 32)" in str(one_sample.value)
    with pytest.raises(ValueError, match=r"'land': expected shape \(2, 32, 32\)"):
        sst.predict({"daily": daily, "land": np.zeros((2, 16, 16), bool)})
    with pytest.raises(ValueError, match=r"'month': values must be 1\.\.12"):
        sst.predict({"daily": daily, "month": np.array([0, 13])})
    with pytest.raises(ValueError, match="not both"):
        sst.predict({"daily": daily, "month": month, "month_of_year": np.zeros((2, 2), np.int64)})
    direct_sst = SensorLMPyfunc()
    direct_sst.load_package(sst_logged["package"])
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sensor'\]"):
        direct_sst.predict(None, {"daily": daily, "sensor": daily})


def test_unsupported_family_and_missing_artifact(tmp_path):
    package = save_model_package(create_model("hvt_tiny"), "hvt_tiny", {}, tmp_path / "pkg")
    with pytest.raises(ValueError, match=r"family 'hvt' .* has no pyfunc; supported: \['sensorlm', 'sensorlm_coca', 'sst', 'projection_cl'\]"):
        log_model_package(package)
    with pytest.raises(ValueError, match="'package'"):
        SensorLMPyfunc().load_context(mlflow.pyfunc.PythonModelContext(artifacts={}, model_config=None))


def test_projection_cl_pyfunc_matches_module(tmp_path):
    torch.manual_seed(2)
    model = create_model("projection_cl_tiny").eval()
    package = save_model_package(model, "projection_cl_tiny", {}, tmp_path / "pkg")
    with mlflow.start_run():
        info = log_model_package(package)
    served = mlflow.pyfunc.load_model(info.model_uri)
    a, b = np.random.default_rng(0).normal(size=(3, 64)), np.random.default_rng(1).normal(size=(2, 48))
    out = served.predict({"a": a.tolist(), "b": b.tolist()})
    with torch.no_grad():
        want_a = torch.nn.functional.normalize(model.encode_a(torch.tensor(a, dtype=torch.float32)), dim=-1)
    np.testing.assert_allclose(out["a_emb"], want_a.numpy(), rtol=1e-5, atol=1e-6)
    assert out["b_emb"].shape == (2, 32)
    with pytest.raises(ValueError, match=r"^input 'a': expected shape \(N, 64\) .*, got \(64,\)$"):
        served.predict({"a": a[0]})  # one sample without the batch axis, through MLflow's schema
    probe = SensorLMPyfunc()
    probe.load_package(package)
    with pytest.raises(ValueError, match=r"input 'a': expected shape \(N, 64\), got \(3, 5\)"):
        probe.predict(None, {"a": np.zeros((3, 5))})
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['sensor'\] for a ProjectionCL model"):
        probe.predict(None, {"sensor": np.zeros((3, 5))})


def test_package_without_stats_fails_before_logging(tmp_path):
    package = save_model_package(create_model("sst_tiny"), "sst_tiny", {}, tmp_path / "pkg")
    probe = SensorLMPyfunc()
    with pytest.raises(FileNotFoundError, match="data_stats.json"):
        probe.load_package(package)


def test_loads_without_project_code(sensorlm_logged, store, tmp_path):
    """A fresh interpreter that cannot import the project's sensorlm loads the model from the
    code MLflow stored with it (code_paths) and gives the same embeddings."""
    expected = mlflow.pyfunc.load_model("models:/sensorlm-tiny/1").predict({"text": CAPTIONS[:2]})
    script = textwrap.dedent(
        f"""
        import json, sys
        # hide the editable install and the repository
        sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
        sys.path[:] = [p for p in sys.path if "__editable__" not in p and p not in ("", {str(REPO_ROOT)!r})]
        sys.path_importer_cache.clear()
        try:
            import sensorlm.models
            print("PROJECT_IMPORTABLE")
            sys.exit(3)
        except ImportError:
            pass
        import mlflow
        mlflow.set_tracking_uri({store!r})
        m = mlflow.pyfunc.load_model("models:/sensorlm-tiny/1")
        import sensorlm
        print("FROM", list(sensorlm.__path__)[0])
        print("EMB", json.dumps(m.predict({{"text": {CAPTIONS[:2]!r}}}).tolist()))
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    if proc.returncode == 3 and "PROJECT_IMPORTABLE" in proc.stdout:
        pytest.skip("sensorlm is installed into site-packages here; it cannot be hidden from the subprocess")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    lines = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in proc.stdout.splitlines() if " " in line}
    assert "/code/sensorlm" in lines["FROM"]
    np.testing.assert_allclose(np.array(json.loads(lines["EMB"]), np.float32), expected, atol=1e-6)


def test_dataframe_rows_are_samples(sensorlm_logged):
    import pandas as pd

    direct = SensorLMPyfunc()
    with pytest.raises(RuntimeError, match="before load_context"):
        direct.predict(None, {"text": ["a walk"]})
    direct.load_package(sensorlm_logged["package"])
    raw = _raw_sensor(2)
    frame = pd.DataFrame({"text": CAPTIONS[:2], "sensor": [raw[0], raw[1]]})
    out = direct.predict(None, frame)
    expected = _expected_sensor(sensorlm_logged["model"], raw)
    np.testing.assert_allclose(out["sensor_emb"], expected, atol=1e-5)
    np.testing.assert_allclose(
        out["text_emb"], _expected_text(sensorlm_logged["model"], sensorlm_logged["tokenizer"], CAPTIONS[:2]), atol=1e-5
    )
