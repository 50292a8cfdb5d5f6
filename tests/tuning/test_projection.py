"""ProjectionCL training and sweeps (sensorlm/tuning/projection.py): config, data checks,
retrieval metrics, SensorLM embedding export, and a real sweep that is interrupted and
resumed (Optuna searcher) without rerunning its finished trial."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch

from sensorlm.config import ConfigError, from_dict
from sensorlm.tuning.projection import (
    SyntheticPairs,
    apply_projection_params,
    check_arrays,
    load_projection_config,
    make_synthetic_pairs,
    retrieval_metrics,
)
from sensorlm.tuning.space import SweepConfig


def test_config_defaults_overrides_and_errors(tmp_path):
    cfg = load_projection_config(None, ["steps=10", "model.overrides.max_logit_scale=50"])
    assert cfg.model.preset == "projection_cl_tiny" and cfg.steps == 10
    assert cfg.model_config().max_logit_scale == 50.0
    with pytest.raises(ConfigError, match=r"model\.overrides: .*min_logit_scale"):
        load_projection_config(None, ["model.overrides.min_logit_scale=20", "model.overrides.max_logit_scale=10"])
    with pytest.raises(ConfigError, match=r"data: give either the four arrays or data\.synthetic"):
        load_projection_config(None, ["data.train_a=a.npy"])
    with pytest.raises(ConfigError, match=r"data: missing data\.val_a, data\.val_b"):
        load_projection_config(None, ["data.synthetic=null", "data.train_a=a.npy", "data.train_b=b.npy"])
    with pytest.raises(ConfigError, match=r"model\.preset 'sensorlm_tiny' is a SensorLMConfig"):
        load_projection_config(None, ["model.preset=sensorlm_tiny"])
    with pytest.raises(ConfigError, match=r"batch_size must be >= 2"):
        load_projection_config(None, ["batch_size=1"])
    yaml_path = tmp_path / "p.yaml"
    yaml_path.write_text("steps: 5\noptim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown config key optim\.lrr"):
        load_projection_config(str(yaml_path))


def test_trial_params_are_written_into_the_model_and_optimizer():
    base = load_projection_config(None)
    cfg = apply_projection_params(base, {"min_logit_scale": 2.0, "max_logit_scale": 30.0, "logit_scale_init": 5.0, "lr": 0.01})
    mcfg = cfg.model_config()
    assert (mcfg.min_logit_scale, mcfg.max_logit_scale, mcfg.logit_scale_init) == (2.0, 30.0, 5.0)
    assert cfg.optim.lr == 0.01
    with pytest.raises(ConfigError, match=r"min_logit_scale"):
        apply_projection_params(base, {"min_logit_scale": 50.0, "max_logit_scale": 30.0})


def test_synthetic_pairs_and_array_checks(tmp_path):
    paths = make_synthetic_pairs(SyntheticPairs(num_train=40, num_val=12, latent_dim=4, noise=0.1, seed=3), (6, 5), tmp_path)
    shapes = check_arrays(paths, (6, 5))
    assert shapes == {"train_a": (40, 6), "train_b": (40, 5), "val_a": (12, 6), "val_b": (12, 5)}
    again = make_synthetic_pairs(SyntheticPairs(num_train=40, num_val=12, latent_dim=4, noise=0.1, seed=3), (6, 5), tmp_path / "2")
    np.testing.assert_array_equal(np.load(paths["val_a"]), np.load(again["val_a"]))  # seeded
    with pytest.raises(ConfigError, match=r"data\.train_a: .* has shape \(40, 6\); the model needs \(N, 7\)"):
        check_arrays(paths, (7, 5))
    np.save(tmp_path / "short.npy", np.zeros((11, 5), np.float32))
    with pytest.raises(ConfigError, match=r"data\.val_a has 12 rows but data\.val_b has 11"):
        check_arrays({**paths, "val_b": str(tmp_path / "short.npy")}, (6, 5))
    with pytest.raises(ConfigError, match=r"data\.val_b: .*missing\.npy does not exist"):
        check_arrays({**paths, "val_b": str(tmp_path / "missing.npy")}, (6, 5))
    np.save(tmp_path / "ints.npy", np.zeros((12, 5), np.int64))
    with pytest.raises(ConfigError, match=r"data\.val_b: .* has dtype int64"):
        check_arrays({**paths, "val_b": str(tmp_path / "ints.npy")}, (6, 5))
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}] * 12, dtype=object), allow_pickle=True)
    with pytest.raises(ConfigError, match=r"data\.val_b: .* is not a plain \.npy array"):
        check_arrays({**paths, "val_b": str(tmp_path / "objects.npy")}, (6, 5))


def test_retrieval_metrics_match_the_model_loss_and_count_hits():
    from sensorlm.models import create_model

    torch.manual_seed(0)
    model = create_model("projection_cl_tiny", modality_dims=[8, 8], embed_dim=8, logit_scale_init=3.0).eval()
    with torch.no_grad():
        model.proj_a[0].weight.copy_(torch.eye(8))
        model.proj_b[0].weight.copy_(torch.eye(8))
    a = torch.randn(10, 8)
    b = a + 0.01 * torch.randn(10, 8)
    metrics = retrieval_metrics(model, a, b, chunk=3)  # chunks of 3 rows: 3 + 3 + 3 + 1
    with torch.no_grad():
        _, _, loss = model(a, b, return_loss=True)
    assert metrics["val/loss"] == pytest.approx(loss.item(), rel=1e-5)
    assert metrics["val/recall_at_1"] == 1.0 and metrics["val/recall_at_1_b2a"] == 1.0
    assert metrics["val/logit_scale"] == pytest.approx(3.0)
    shuffled = retrieval_metrics(model, a, b[torch.roll(torch.arange(10), 1)], chunk=4)
    assert shuffled["val/recall_at_1"] == 0.0 and shuffled["val/loss"] > metrics["val/loss"]


def test_export_sensorlm_embeddings_pairs_sensor_and_caption_rows(wearable_dir, tmp_path):
    from sensorlm.data.shards import read_manifest
    from sensorlm.models import create_model, model_config
    from sensorlm.tracking.package import save_model_package
    from sensorlm.tuning.projection import export_sensorlm_embeddings

    manifest = read_manifest(str(wearable_dir))
    torch.manual_seed(0)
    model = create_model("sensorlm_tiny")
    package = save_model_package(
        model, "sensorlm_tiny", model_config("sensorlm_tiny"), tmp_path / "package",
        tokenizer_path=wearable_dir / manifest.get("tokenizer", "tokenizer.json"),
        data_stats={k: manifest[k] for k in ("stats", "channels", "sample_shape", "activities") if k in manifest},
    )
    paths = export_sensorlm_embeddings(package, wearable_dir, tmp_path / "emb", splits=("val",), batch_size=16)
    sensor, text = np.load(paths["val_sensor"]), np.load(paths["val_text"])
    assert sensor.shape == text.shape and sensor.shape[1] == model.embed_dim and sensor.shape[0] >= 8
    np.testing.assert_allclose(np.linalg.norm(sensor, axis=1), 1.0, atol=1e-4)
    check_arrays({"train_a": paths["val_sensor"], "train_b": paths["val_text"],
                  "val_a": paths["val_sensor"], "val_b": paths["val_text"]}, (model.embed_dim, model.embed_dim))


# --- a real sweep, interrupted and resumed --------------------------------------------------------


def interrupt_once(marker: str):
    """A Tune callback that interrupts the sweep (as Ctrl+C does; SIGUSR1 is Tune's other stop
    signal) when the first trial completes. Tune saves callbacks with the experiment and brings
    them back on restore, so a marker file keeps it from firing again."""
    from ray import tune

    class InterruptOnce(tune.Callback):
        def __init__(self, marker):
            self.marker = marker

        def on_trial_complete(self, iteration, trials, trial, **info):
            if not os.path.exists(self.marker):
                Path(self.marker).write_text(trial.trial_id)
                os.kill(os.getpid(), signal.SIGUSR1)

    return InterruptOnce(marker)


def _projection_cfg(root, name):
    return from_dict(SweepConfig, {
        "task": "projection_cl",
        "name": name,
        "base_overrides": [
            "steps=30", "eval_every=10", "log_every=10", "batch_size=32",
            "data.synthetic.num_train=256", "data.synthetic.num_val=64", "data.synthetic.noise=0.5",
        ],
        "searcher": "optuna",  # the model-based searcher; its state must survive the restore too
        "num_samples": 2,
        "seed": 7,
        "metric": "val/recall_at_1",
        "storage_path": str(root / "sweeps"),
        "asha": {"enabled": True, "grace_period": 10, "reduction_factor": 2},
        "resources": {"num_workers": 2, "cpus_per_worker": 0.5, "trial_cpus": 0.5},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "projection-sweeps",
                     "registered_model_name": "projection_cl"},
        "params": {
            "min_logit_scale": {"type": "uniform", "low": 1.0, "high": 8.0},
            "max_logit_scale": {"type": "choice", "values": [50.0]},
        },
    })


def _result_lines(trial_dir: Path) -> list[str]:
    return (trial_dir / "result.json").read_text().splitlines()


@pytest.mark.slow
def test_interrupted_projection_sweep_resumes_without_rerunning_finished_trials(ray_for_sweeps, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import get_alias_version
    from sensorlm.tuning.projection import load_registered_projection
    from sensorlm.tuning.sweep import run_sweep

    cfg = _projection_cfg(tmp_path, f"proj-{uuid.uuid4().hex[:6]}")
    marker = tmp_path / "interrupted_after"
    first = run_sweep(cfg, callbacks=[interrupt_once(str(marker))])
    assert not first.complete
    done = marker.read_text()
    assert [r.trial_id for r in first.trials if r.status == "completed"] == [done]
    client = MlflowClient(cfg.tracking.tracking_uri)
    assert client.get_run(first.parent_run_id).info.status == "KILLED"
    assert get_alias_version("projection_cl", "champion", client=client) is None  # nothing registered yet
    sweep_dir = first.sweep_dir
    trial_dir = sweep_dir / "tune" / f"trial_{done}"
    before = _result_lines(trial_dir)
    checkpoints_before = sorted(p.name for p in (sweep_dir / "train" / f"{cfg.name}-{done}").glob("checkpoint_*"))
    done_run = next(r.run_id for r in first.trials if r.trial_id == done)
    curve_before = [(m.step, m.value) for m in client.get_metric_history(done_run, "val/loss")]
    assert [s for s, _ in curve_before] == [10, 20, 30]

    capsys.readouterr()
    second = run_sweep(cfg)  # same name: Tuner.restore
    out = capsys.readouterr().out
    assert "resuming" in out
    assert second.complete and second.parent_run_id == first.parent_run_id
    assert len(second.trials) == 2
    assert all(1.0 <= r.params["min_logit_scale"] <= 8.0 and r.params["max_logit_scale"] == 50.0 for r in second.trials)
    assert all(r.status in ("completed", "early_stopped") for r in second.trials)
    # The finished trial did not run again: same Tune results, same checkpoints, same MLflow curve.
    assert _result_lines(trial_dir) == before
    assert sorted(p.name for p in (sweep_dir / "train" / f"{cfg.name}-{done}").glob("checkpoint_*")) == checkpoints_before
    done_row = next(r for r in second.trials if r.trial_id == done)
    assert [(m.step, m.value) for m in client.get_metric_history(done_row.run_id, "val/loss")] == curve_before
    children = client.search_runs(
        [client.get_run(first.parent_run_id).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'")
    assert len(children) == 2

    # The winner is registered (safetensors package as the version's artifacts) and is champion.
    assert second.promoted and second.model_version == "1"
    version = get_alias_version("projection_cl", "champion", client=client)
    assert str(version.version) == "1" and version.tags["sensorlm.val_split"].startswith("val_a_sha256=")
    # selected on the even validation pairs, crowned on the odd ones
    assert version.tags["sensorlm.val_split"].endswith(";rows=even")
    assert version.tags["sensorlm.holdout_split"].endswith(";rows=odd")
    assert float(version.tags["holdout.val/recall_at_1"]) >= 0
    package = load_registered_projection("models:/projection_cl@champion", cfg.tracking.tracking_uri)
    assert package.family == "projection_cl"
    assert package.config["min_logit_scale"] == second.best.params["min_logit_scale"]
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["finished"] and meta["registration"]["version"] == "1"

    # Running a finished sweep again changes nothing.
    third = run_sweep(cfg)
    assert third.complete and third.model_version == "1"
    assert [(r.trial_id, r.status, r.step) for r in third.trials] == [(r.trial_id, r.status, r.step) for r in second.trials]
    assert len(client.search_model_versions("name='projection_cl'")) == 1
