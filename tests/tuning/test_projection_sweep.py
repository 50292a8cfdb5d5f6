"""A ProjectionCL sweep end to end: its trials are the shared trainer (Ray Train + DeepSpeed
ZeRO-2 on CPU, global negatives), over the logit-scale bounds; the sweep is interrupted, resumed
without rerunning its finished trial, and registers a champion whose pyfunc loads in a fresh
process without pickle."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pytest

from sensorlm.typed_config import from_dict
from sensorlm.tuning.space import SweepConfig


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
        "base_config": "projection_cl_tiny",
        "base_overrides": [
            "steps=20", "eval_every=10", "log_every=10", "batch_size=32", "optim.warmup_steps=2",
            f"data.path={root / 'pairs'}", "tracking.system_metrics=false", "scaling.zero_stage=2",
            "model.overrides.logit_scale_init=20.0",  # above every searched max: clamped at construction
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
            "min_logit_scale": {"type": "uniform", "low": 1.0, "high": 4.0},
            "max_logit_scale": {"type": "choice", "values": [8.0]},
        },
    })


def _result_lines(trial_dir: Path) -> list[str]:
    return (trial_dir / "result.json").read_text().splitlines()


@pytest.mark.slow
def test_interrupted_projection_sweep_resumes_and_its_champion_serves(ray_for_sweeps, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import get_alias_version
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
    done_run = next(r.run_id for r in first.trials if r.trial_id == done)
    curve_before = [(m.step, m.value) for m in client.get_metric_history(done_run, "val/loss")]
    assert [s for s, _ in curve_before] == [10, 20]
    # the scale started at 20, above its bound of 8: inside [min, 8] from the first logged step on
    row = next(r for r in first.trials if r.trial_id == done)
    scale = [m.value for m in client.get_metric_history(done_run, "train/logit_scale")]
    assert scale and all(row.params["min_logit_scale"] - 1e-4 <= s <= 8.0 + 1e-4 for s in scale)

    capsys.readouterr()
    second = run_sweep(cfg)  # same name: Tuner.restore
    assert "resuming" in capsys.readouterr().out
    assert second.complete and second.parent_run_id == first.parent_run_id and len(second.trials) == 2
    assert all(1.0 <= r.params["min_logit_scale"] <= 4.0 and r.params["max_logit_scale"] == 8.0 for r in second.trials)
    assert _result_lines(trial_dir) == before  # the finished trial did not run again
    done_row = next(r for r in second.trials if r.trial_id == done)
    assert [(m.step, m.value) for m in client.get_metric_history(done_row.run_id, "val/loss")] == curve_before
    children = client.search_runs([client.get_run(first.parent_run_id).info.experiment_id],
                                  filter_string=f"tags.mlflow.parentRunId = '{first.parent_run_id}'")
    assert len(children) == 2

    # The winner is registered as a pyfunc and is champion: selected on the even validation rows,
    # crowned on the odd ones.
    assert second.promoted and second.model_version == "1"
    version = get_alias_version("projection_cl", "champion", client=client)
    assert ";part=selection;" in version.tags["sensorlm.val_split"]
    assert ";part=holdout;" in version.tags["sensorlm.holdout_split"]
    assert 0 <= float(version.tags["holdout.val/recall_at_1"]) <= 1
    meta = json.loads((sweep_dir / "sweep.json").read_text())
    assert meta["finished"] and meta["registration"]["version"] == "1"

    # A fresh interpreter loads it from MLflow (models-from-code: safetensors + JSON, no pickle).
    val_a = np.load(tmp_path / "pairs" / "val_a.npy")[:3]
    script = textwrap.dedent(f"""
        import json, mlflow, numpy as np
        mlflow.set_tracking_uri({cfg.tracking.tracking_uri!r})
        model = mlflow.pyfunc.load_model("models:/projection_cl@champion")
        out = model.predict({{"a": np.load({str(tmp_path / 'pairs' / 'val_a.npy')!r})[:3].tolist()}})
        print(json.dumps(np.asarray(out).tolist()))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    served = np.asarray(json.loads(proc.stdout.strip().splitlines()[-1]))
    from sensorlm.tracking.package import load_model_package

    import torch

    package = load_model_package(second.best.package_dir)
    with torch.no_grad():
        want = torch.nn.functional.normalize(package.model.encode_a(torch.from_numpy(val_a.astype(np.float32))), dim=-1)
    np.testing.assert_allclose(served, want.numpy(), rtol=1e-4, atol=1e-5)
    assert package.config["max_logit_scale"] == 8.0 and package.config["min_logit_scale"] == second.best.params["min_logit_scale"]
