"""A registered version's files are checked wherever it is loaded (sensorlm/tracking/integrity.py):
the digest recorded at registration, a tampered version refused in one line by evaluate, embed,
export, promote and `load_model`, on a temporary SQLite store."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file

from sensorlm.cli import main as cli_main
from sensorlm.data.prepare import prepare_synthetic
from sensorlm.models import create_model, model_config
from sensorlm.tracking.integrity import DIGEST_TAG, ModelIntegrityError, model_digest
from sensorlm.tracking.loading import load_model
from sensorlm.tracking.mlflow_utils import register_version, setup_experiment
from sensorlm.tracking.package import save_model_package
from sensorlm.tracking.pyfunc import log_model_package


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Two registered versions of one tiny SensorLM (same weights): version 2 gets tampered."""
    root = tmp_path_factory.mktemp("integrity")
    store = f"sqlite:///{root / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    data = root / "wear"
    manifest = prepare_synthetic("wearable", "tiny", data, seed=0, log=None)
    torch.manual_seed(0)
    package = save_model_package(
        create_model("sensorlm_tiny"), "sensorlm_tiny", model_config("sensorlm_tiny"), root / "pkg",
        tokenizer_path=data / "tokenizer.json",
        data_stats={k: manifest[k] for k in ("stats", "channels", "sample_shape", "activities")},
    )
    setup_experiment("integrity", store)
    versions = []
    for _ in range(2):
        with mlflow.start_run():
            info = log_model_package(package)
        versions.append(register_version(info, "wear", {"val/loss": 1.0}))
    yield {"store": store, "data": data, "root": root, "versions": versions}
    mlflow.set_tracking_uri(previous)


def _model_dir(store: str, version: str) -> Path:
    """Where the registry keeps the version's files (what a job's login can overwrite)."""
    uri = MlflowClient(store).get_model_version_download_uri("wear", version)
    return Path(uri.removeprefix("file://"))


@pytest.fixture(scope="module")
def tampered(registry):
    """Version 2 with one weight changed in place, as a job uploading over its artifacts would."""
    weights = next(_model_dir(registry["store"], "2").rglob("model.safetensors"))
    state = load_file(str(weights))
    key = next(iter(state))
    state[key] = state[key] + 1.0
    save_file(state, str(weights), metadata={"preset": "sensorlm_tiny"})
    return "models:/wear/2"


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)


def test_registration_records_the_digest_of_the_files_served(registry):
    client = MlflowClient(registry["store"])
    for mv in registry["versions"]:
        recorded = client.get_model_version("wear", mv.version).tags[DIGEST_TAG]
        assert len(recorded) == 64
    # the digest covers code and weights alike: the same package logged twice digests the same
    # files except MLflow's own per-model metadata, so the digests differ only through MLmodel
    v1 = _model_dir(registry["store"], "1")
    assert client.get_model_version("wear", "1").tags[DIGEST_TAG] == model_digest(v1)
    assert {p.name for p in v1.rglob("*")} >= {"model.safetensors", "MLmodel", "pyfunc.py", "loop.py"}


def test_an_untouched_version_loads_everywhere(registry):
    store = registry["store"]
    model = load_model("models:/wear/1", store)
    emb = model.predict({"text": ["A day with running: a run."]})
    assert emb.shape[0] == 1 and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)

    from sensorlm.inference.embed import load_embedder, pin_model

    embedder = load_embedder(pin_model("models:/wear/1", store))
    assert embedder.family == "sensorlm"


def test_a_tampered_version_is_refused_by_every_loader(registry, tampered, capsys):
    store = registry["store"]
    refused = r"models:/wear/2: its files do not match the digest recorded when it was registered"
    with pytest.raises(ModelIntegrityError, match=refused):
        load_model(tampered, store)

    from sensorlm.inference.embed import load_embedder, pin_model

    with pytest.raises(ModelIntegrityError, match=refused):
        load_embedder(pin_model(tampered, store))
    from sensorlm.tracking.resolve import resolve_model as resolve_for_evaluation

    with pytest.raises(ModelIntegrityError, match=refused):
        resolve_for_evaluation(tampered, store)

    # the commands: one line, exit 2, nothing written
    capsys.readouterr()
    for argv in (["evaluate", tampered, "--data", str(registry["data"]), "--tracking-uri", store, "--no-log"],
                 ["export", tampered, "--dataset", str(registry["data"]), "--out", "pairs", "--tracking-uri", store]):
        assert cli_main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "its files do not match the digest" in err and "models:/wear/2" in err, err
    assert not Path("pairs").exists()


def test_promotion_checks_the_files_first(registry, tampered, capsys):

    store = registry["store"]
    assert cli_main(["promote", "wear", "2", "--tracking-uri", store]) == 2
    out = capsys.readouterr().out
    assert "refused: models:/wear/2: its files do not match the digest" in out
    assert "champion" not in MlflowClient(store).get_registered_model("wear").aliases
    assert cli_main(["promote", "wear", "1", "--tracking-uri", store]) == 0
    assert MlflowClient(store).get_registered_model("wear").aliases["champion"] == 1


def test_a_version_without_a_digest_loads_with_a_warning_but_is_never_promoted(registry, capsys):
    store = registry["store"]
    client = MlflowClient(store)
    with mlflow.start_run():
        info = log_model_package(next(registry["root"].glob("pkg")))
    mv = mlflow.register_model(info.model_uri, "wear")  # as an older sensorlm registered it
    assert DIGEST_TAG not in (client.get_model_version("wear", mv.version).tags or {})
    load_model(f"models:/wear/{mv.version}", store)
    assert f"models:/wear/{mv.version} has no {DIGEST_TAG} tag" in capsys.readouterr().out


    assert cli_main(["promote", "wear", str(mv.version), "--tracking-uri", store]) == 2
    assert "what it holds cannot be checked" in capsys.readouterr().out


def test_digest_sees_every_file(tmp_path):
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("x = 1\n")
    (tmp_path / "MLmodel").write_text("python_function: {}\n")
    before = model_digest(tmp_path)
    (tmp_path / "registered_model_meta").write_text("model_name: x\nmodel_version: 3\n")
    assert model_digest(tmp_path) == before, "MLflow rewrites registered_model_meta when registering"
    (tmp_path / "code" / "a.py").write_text("x = 2\n")
    assert model_digest(tmp_path) != before
    (tmp_path / "code" / "a.py").write_text("x = 1\n")
    (tmp_path / "code" / "b.py").write_text("")
    assert model_digest(tmp_path) != before, "an added file changes the digest"
    json.dumps(before)
