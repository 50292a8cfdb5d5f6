"""Tracking URI resolution, experiments, params, run tags and registry helpers
(sensorlm/tracking/mlflow_utils.py), on temporary SQLite stores."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from mlflow.tracking import MlflowClient

from sensorlm.tracking import mlflow_utils as mu

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path, monkeypatch) -> str:
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    yield uri
    if mlflow.active_run():
        mlflow.end_run()
    mlflow.set_tracking_uri(previous)


# --- tracking URI --------------------------------------------------------------------------


def test_resolve_tracking_uri_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://tracking.example:5000")
    assert mu.resolve_tracking_uri("sqlite:////data/runs.db") == "sqlite:////data/runs.db"
    assert mu.resolve_tracking_uri(None) == "http://tracking.example:5000"
    assert mu.resolve_tracking_uri("") == "http://tracking.example:5000"
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert mu.resolve_tracking_uri(None) == f"sqlite:///{tmp_path / 'mlflow.db'}"


def test_default_artifact_location(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert mu.default_artifact_location("sqlite:////srv/x/runs.db") == "file:///srv/x/mlruns"
    assert mu.default_artifact_location("sqlite:///rel/runs.db") == (tmp_path / "rel" / "mlruns").as_uri()
    assert mu.default_artifact_location("http://127.0.0.1:5000") is None


def test_setup_experiment_puts_artifacts_beside_the_db(store, tmp_path):
    exp_id = mu.setup_experiment("exp-a", store)
    exp = MlflowClient(store).get_experiment(exp_id)
    assert exp.name == "exp-a"
    assert exp.artifact_location == (tmp_path / "mlruns").as_uri()
    assert mu.setup_experiment("exp-a", store) == exp_id  # idempotent
    assert mlflow.get_tracking_uri() == store
    with mlflow.start_run() as run:
        assert run.info.experiment_id == exp_id

    MlflowClient(store).delete_experiment(exp_id)
    with pytest.raises(ValueError, match="exp-a.*deleted"):
        mu.setup_experiment("exp-a", store)


def test_an_artifact_location_is_a_new_experiments_and_an_existing_one_says_it_keeps_its_own(store, tmp_path, capsys):
    elsewhere = (tmp_path / "bucket").as_uri()
    exp_id = mu.setup_experiment("exp-b", store, elsewhere)
    assert MlflowClient(store).get_experiment(exp_id).artifact_location == elsewhere
    assert mu.setup_experiment("exp-b", store, elsewhere) == exp_id
    assert "keeps its artifact location" not in capsys.readouterr().out
    assert mu.setup_experiment("exp-b", store, (tmp_path / "other").as_uri()) == exp_id
    assert f"experiment 'exp-b' keeps its artifact location {elsewhere}" in capsys.readouterr().out
    with pytest.raises(ValueError, match="non-empty"):
        mu.setup_experiment("", store)


# --- params ---------------------------------------------------------------------------------


def test_config_params_flatten_and_truncate():
    cfg = {
        "model": {"preset": "sensorlm_tiny", "overrides": {"text": {"depth": 2}}},
        "train": {"lr": 1e-3, "betas": [0.9, 0.95], "warmup": None, "bf16": True},
        "notes": "x" * 7000,
    }
    params, truncated = mu.config_params(cfg)
    assert params["model.preset"] == "sensorlm_tiny"
    assert params["model.overrides.text.depth"] == "2"
    assert params["train.lr"] == "0.001"
    assert json.loads(params["train.betas"]) == [0.9, 0.95]
    assert params["train.warmup"] == "None" and params["train.bf16"] == "True"
    assert truncated == ["notes"]
    assert len(params["notes"]) == mu.MAX_PARAM_VALUE_LENGTH and params["notes"].endswith(mu.TRUNCATION_MARK)


def test_config_params_of_a_dataclass():
    from sensorlm.models import model_config

    params, truncated = mu.config_params(model_config("sst_tiny"))
    assert params["height"] == "32" and json.loads(params["patch"]) == [4, 4, 4] and not truncated
    with pytest.raises(ValueError, match="mapping"):
        mu.config_params(["not", "a", "config"])


def test_log_config_params_batches_and_reports_truncation(store, capsys):
    mu.setup_experiment("params", store)
    cfg = {"section": {f"p{i:03d}": i for i in range(250)}, "long": "y" * 6500}
    with mlflow.start_run() as run:
        logged = mu.log_config_params(cfg)
    data = MlflowClient(store).get_run(run.info.run_id).data
    assert len(data.params) == 251 == len(logged)
    assert data.params["section.p249"] == "249"
    assert data.params["long"].endswith(mu.TRUNCATION_MARK)
    assert data.tags["sensorlm.truncated_params"] == "long"
    assert "truncated: long" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no active MLflow run"):
        mu.log_config_params({"a": 1})


# --- run tags -------------------------------------------------------------------------------


def test_run_tags(tmp_path, monkeypatch):
    manifest = tmp_path / "data" / "manifest.json"
    manifest.parent.mkdir()
    manifest.write_text('{"kind": "wearable"}')
    monkeypatch.setenv("RAY_JOB_ID", "02000000")
    ray_loaded = "ray" in sys.modules

    tags = mu.run_tags(manifest.parent)
    assert tags["dataset_manifest_sha256"] == hashlib.sha256(manifest.read_bytes()).hexdigest()
    assert mu.run_tags(manifest)["dataset_manifest_sha256"] == tags["dataset_manifest_sha256"]
    assert tags["ray_job_id"] == "02000000"
    assert tags["hostname"] and tags["sensorlm_version"] not in ("", "unknown")
    assert ("ray" in sys.modules) == ray_loaded  # reading tags never imports (or starts) Ray

    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True)
    if head.returncode == 0:
        assert tags["git_commit"] == head.stdout.strip() and tags["git_dirty"] in ("true", "false")
    else:
        assert "git_commit" not in tags

    monkeypatch.delenv("RAY_JOB_ID")
    if not ray_loaded:
        assert "ray_job_id" not in mu.run_tags()
    with pytest.raises(FileNotFoundError, match="manifest"):
        mu.run_tags(tmp_path / "nowhere")


# --- registry -------------------------------------------------------------------------------

MODEL_CODE = """
import mlflow


class Constant(mlflow.pyfunc.PythonModel):
    _skip_type_hint_validation = True

    def predict(self, context, model_input, params=None):
        return [1.0]


mlflow.models.set_model(Constant())
"""


def _log_constant(tmp_path: Path, registered_model_name: str | None = None):
    code = tmp_path / "constant_model.py"
    code.write_text(MODEL_CODE)
    with mlflow.start_run():
        return mlflow.pyfunc.log_model(
            name="model", python_model=str(code), pip_requirements=["mlflow"],
            registered_model_name=registered_model_name,
        )


def test_register_version_tags_and_aliases(store, tmp_path):
    mu.setup_experiment("registry", store)
    assert mu.get_alias_version("m", "champion") is None  # no such model yet
    assert mu.champion_metric("m", "val/loss") is None

    v1 = mu.register_version(_log_constant(tmp_path), "m", {"val/loss": 0.5, "val/acc": 0.75}, alias="champion")
    assert v1.version == "1" or v1.version == 1
    assert v1.tags["metric.val/loss"] == "0.5" and v1.tags["metric.val/acc"] == "0.75"
    assert mu.champion_metric("m", "val/loss") == 0.5
    assert mu.champion_metric("m", "val/missing_metric") is None
    assert mu.get_alias_version("m", "staging") is None

    v2 = mu.register_version(_log_constant(tmp_path).model_uri, "m", {"val/loss": 0.25})
    assert str(v2.version) == "2"
    assert mu.champion_metric("m", "val/loss") == 0.5  # alias untouched
    mu.set_alias("m", "champion", v2.version)
    assert str(mu.get_alias_version("m", "champion").version) == "2"
    assert mu.champion_metric("m", "val/loss") == 0.25

    with pytest.raises(ValueError, match="val/loss"):
        mu.register_version(_log_constant(tmp_path), "m", {"val/loss": "low"})


def test_register_version_reuses_log_model_registration(store, tmp_path):
    mu.setup_experiment("registry-reuse", store)
    info = _log_constant(tmp_path, registered_model_name="reused")
    version = mu.register_version(info, "reused", {"val/loss": 1.0}, alias="champion")
    assert str(version.version) == "1"
    assert len(MlflowClient(store).search_model_versions("name='reused'")) == 1
    assert mu.champion_metric("reused", "val/loss") == 1.0
    # the same ModelInfo under another name registers a new model
    other = mu.register_version(info, "other", {"val/loss": 2.0})
    assert str(other.version) == "1" and other.name == "other"


def test_version_metric_rejects_non_numeric_tag(store, tmp_path):
    mu.setup_experiment("registry-bad", store)
    v = mu.register_version(_log_constant(tmp_path), "bad", {}, alias="champion")
    MlflowClient(store).set_model_version_tag("bad", str(v.version), "metric.val/loss", "n/a")
    with pytest.raises(ValueError, match="not a number"):
        mu.champion_metric("bad", "val/loss")


def test_nothing_printed_at_import():
    proc = subprocess.run(
        [sys.executable, "-c", "import sensorlm.tracking.mlflow_utils, sensorlm.tracking.package"],
        capture_output=True, text=True, timeout=120, cwd=REPO_ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout == ""
