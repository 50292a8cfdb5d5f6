"""A ZeRO checkpoint resumes at another world size (issue 26, item 2): written by 2 ranks it goes
on with 1 and with 3 (ZeRO-3 2 -> 1 -> 3; ZeRO-2 2 -> 3 as an elastic run starts, and 2 -> 1 -> 2
in test_node_loss.py, on a cluster that loses a node), through DeepSpeed's universal checkpoint;
the step count and LR schedule carry on, and the resize is a line, a tag and a metric in MLflow."""

from __future__ import annotations

import math

import pytest

from sensorlm.training.config import load_train_config
from sensorlm.training.optim import warmup_cosine

pytestmark = pytest.mark.slow
RAY_CPUS = 3  # module_ray (tests/conftest.py): up to three workers of one (logical) CPU


@pytest.fixture(scope="module")
def wearable_dir(tmp_path_factory):
    from sensorlm.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("wearable_tiny")
    prepare_synthetic("wearable", "tiny", out, seed=0, log=None)
    return out


def _run(tmp_path, data, stage: int, workers, steps: int, *more: str):
    from sensorlm.training.trainer import train

    cfg = load_train_config("sensorlm_tiny", [
        f"data.path={data}", f"storage_path={tmp_path / 'ray'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.system_metrics=false", "tracking.register=false", "data.num_workers=0", "scaling.cpus_per_worker=1",
        "checkpoint.best_metric=null", f"scaling.zero_stage={stage}", f"scaling.num_workers={list(workers) if isinstance(workers, tuple) else workers}",
        "batch_size=8",
        "name=resize", f"steps={steps}", "log_every=1", "eval_every=100", "data.val_batches=1",
        "checkpoint.every_steps=2", "optim.warmup_steps=1", *more])
    return cfg, train(cfg)


def _history(cfg, run_id, key):
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(cfg.tracking.tracking_uri).get_metric_history(run_id, key))


@pytest.mark.parametrize("stage, worlds", [(3, (2, 1, 3))])
def test_a_zero_checkpoint_resumes_on_fewer_and_more_workers(stage, worlds, module_ray, wearable_dir, tmp_path):
    from mlflow.tracking import MlflowClient

    results = [_run(tmp_path, wearable_dir, stage, world, 2 * (i + 1)) for i, world in enumerate(worlds)]
    cfg, last = results[-1]
    assert [r.metrics["step"] for _, r in results] == [2 * (i + 1) for i in range(len(worlds))]
    assert len({r.run_id for _, r in results}) == 1  # one MLflow run, one curve
    tags = MlflowClient(cfg.tracking.tracking_uri).get_run(last.run_id).data.tags
    for i in range(1, len(worlds)):
        assert f"{worlds[i - 1]} -> {worlds[i]} workers at step {2 * i}" in tags[f"sensorlm.resize.step{2 * i}"]
    assert _history(cfg, last.run_id, "train/world_size") == [(2 * i + 1, float(w)) for i, w in enumerate(worlds)]
    # The optimizer and schedule came back through the conversion: the LR is where the schedule
    # of the last run says (not a restarted warmup) and the loss stays finite.
    steps = 2 * len(worlds)
    lrs = dict(_history(cfg, last.run_id, "train/lr"))
    assert lrs[steps] == pytest.approx(cfg.optim.lr * warmup_cosine(steps, steps, 1, cfg.optim.min_lr_ratio), rel=1e-5)
    assert all(math.isfinite(v) for _, v in _history(cfg, last.run_id, "train/loss"))


def test_an_elastic_run_starts_with_the_workers_the_cluster_has(module_ray, wearable_dir, tmp_path):
    """A ZeRO-2 checkpoint of 2 ranks resumed by [1, 4] on a Ray of 3 CPUs: Ray Train's elastic
    group starts with what fits (3), not waiting for 4, resumes the checkpoint on 3 ranks, and its
    steps have the global batch of 4 workers, the nearest on 3 (8 x 1 micro-step x 3 = 24)."""
    from mlflow.tracking import MlflowClient

    _run(tmp_path, wearable_dir, 2, 2, 2)
    cfg, result = _run(tmp_path, wearable_dir, 2, (1, 4), 4, "scaling.resize_check_s=2")
    assert cfg.scaling.num_workers == (1, 4) and result.metrics["step"] == 4
    assert _history(cfg, result.run_id, "train/world_size") == [(1, 2.0), (3, 3.0)]
    tags = MlflowClient(cfg.tracking.tracking_uri).get_run(result.run_id).data.tags
    assert "2 -> 3 workers at step 2" in tags["sensorlm.resize.step2"]
    assert _history(cfg, result.run_id, "train/global_batch") == [(1, 16.0), (3, 24.0)]
    assert all(math.isfinite(v) for _, v in _history(cfg, result.run_id, "train/loss"))
