"""Training with everything in object storage (issue 26, item 4), against moto's S3 server on
loopback: the dataset is read from s3://, Ray Train's checkpoints are written there and a rerun
resumes from them, and the registered model package lives in the bucket (MLflow's artifact
location) and serves from there."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("s3fs")
pytestmark = pytest.mark.slow
RAY_CPUS = 2  # module_ray (tests/conftest.py)
BUCKET = "sensorlm-data"


@pytest.fixture(scope="module")
def dataset(s3, tmp_path_factory):
    from sensorlm.data.prepare import prepare_synthetic

    local = tmp_path_factory.mktemp("wearable")
    prepare_synthetic("wearable", "tiny", local, seed=0, log=None)
    s3.put(f"{local}/", f"{BUCKET}/wearable/", recursive=True)
    return f"s3://{BUCKET}/wearable"


def _cfg(tmp_path, dataset, steps: int):
    from sensorlm.training.config import load_train_config

    return load_train_config("sensorlm_tiny", [
        f"data.path={dataset}", "data.synthetic=null", f"storage_path=s3://{BUCKET}/ray",
        f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}", f"tracking.artifact_location=s3://{BUCKET}/mlflow",
        "tracking.system_metrics=false", "tracking.registered_model_name=from_s3", "data.num_workers=0",
        "scaling.cpus_per_worker=1", "checkpoint.best_metric=null", "scaling.num_workers=2", "scaling.zero_stage=2",
        "batch_size=8", "name=s3-run", f"steps={steps}", "log_every=2", "eval_every=100", "data.val_batches=1",
        "checkpoint.every_steps=2", "optim.warmup_steps=1"])


# `s3` before `module_ray`: the local Ray's workers inherit the AWS variables pointing at moto
def test_a_run_reads_writes_and_resumes_in_s3_and_its_model_serves_from_there(s3, module_ray, dataset, tmp_path):
    import mlflow
    from mlflow.tracking import MlflowClient

    from sensorlm.training.trainer import train

    first = train(_cfg(tmp_path, dataset, 4))
    assert first.metrics["step"] == 4 and first.model_uri == "models:/from_s3/1"
    assert first.package_dir.startswith(f"s3://{BUCKET}/ray/s3-run/checkpoint_")
    # the ZeRO states and the package are in the bucket, nothing on local disk but MLflow's DB
    stored = s3.find(f"{BUCKET}/ray/s3-run")
    assert any(k.endswith("zero_pp_rank_1_mp_rank_00_optim_states.pt") for k in stored)
    assert any(k.endswith("package/model.safetensors") for k in stored)
    assert not (tmp_path / "ray").exists() and not (tmp_path / "mlruns").exists()

    # the same name with more steps resumes from the checkpoint in the bucket
    cfg = _cfg(tmp_path, dataset, 6)
    second = train(cfg)
    assert second.metrics["step"] == 6 and second.run_id == first.run_id and second.model_uri == "models:/from_s3/2"
    client = MlflowClient(cfg.tracking.tracking_uri)
    assert [(m.step, m.value) for m in client.get_metric_history(second.run_id, "train/resumed_from_step")] == [(4, 4.0)]

    # the registered package is an artifact in the bucket and serves from there
    source = client.get_model_version("from_s3", "2").source
    version_artifacts = client.get_run(second.run_id).info.artifact_uri
    assert version_artifacts.startswith(f"s3://{BUCKET}/mlflow/"), version_artifacts
    assert any(k.endswith("model.safetensors") for k in s3.find(f"{BUCKET}/mlflow")), source
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    served = mlflow.pyfunc.load_model(second.model_uri)
    emb = np.asarray(served.predict({"text": ["A quiet day overall.", "Slept 7.1 hours."]}))
    assert emb.shape[0] == 2 and np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
