"""The sweep driver (sensorlm/tuning/sweep.py) and its trials (sensorlm/tuning/trials.py) on SensorLM.

Fast tests cover the champion rule, the results table and plot, and resume refusals. The slow
tests run real sweeps: Ray Tune over the trainer's TorchTrainer (2 workers x 0.5 CPU,
DeepSpeed on CPU) on the tiny preset, MLflow in a temporary SQLite store.

The slow sweeps judge trials on ``val/loss`` rather than the default zero-shot accuracy: after
8 steps on the tiny data the accuracy of every trial is noise, while the loss separates a bias
of +10 (every negative pair scored as a match: a loss in the hundreds) from -10 or -5 (near 10
and 5) by orders of magnitude, which makes ASHA's decisions and "worse settings" certain.
"""

from __future__ import annotations

import csv
import math
import uuid
from types import SimpleNamespace

import pytest

from sensorlm.typed_config import ConfigError, from_dict, to_dict
from sensorlm.tuning.space import SweepConfig
from sensorlm.tuning.sweep import (
    TrialRow,
    _config_differences,
    best_completed,
    champion_decision,
    plot_metric_vs_params,
    write_results_csv,
)

SPLIT = "dataset_manifest_sha256=abc;split=val;samples=all;batch=16x2"


def _version(version="3", metric=None, split=SPLIT):
    tags = {}
    if metric is not None:
        tags["metric.val/loss"] = repr(metric)
    if split is not None:
        tags["sensorlm.val_split"] = split
    return SimpleNamespace(name="m", version=version, tags=tags)


# --- the champion rule ------------------------------------------------------------------------


def test_champion_decision():
    promote, why = champion_decision(1.0, "min", None, "val/loss", SPLIT)
    assert promote and "no current champion" in why
    promote, why = champion_decision(0.5, "min", _version(metric=0.7), "val/loss", SPLIT)
    assert promote and "beats the champion's 0.7" in why
    promote, why = champion_decision(0.9, "min", _version(metric=0.7), "val/loss", SPLIT)
    assert not promote and "does not beat the champion's 0.7 (version 3" in why
    promote, why = champion_decision(0.7, "min", _version(metric=0.7), "val/loss", SPLIT)
    assert not promote  # a tie does not move the alias
    promote, why = champion_decision(0.9, "max", _version(metric=0.7), "val/loss", SPLIT)
    assert promote
    promote, why = champion_decision(0.1, "min", _version(metric=0.7, split="other"), "val/loss", SPLIT)
    assert not promote and "different split" in why and "other" in why
    promote, why = champion_decision(0.1, "min", _version(metric=0.7, split=None), "val/loss", SPLIT)
    assert not promote and "no sensorlm.val_split tag" in why
    promote, why = champion_decision(0.1, "min", _version(metric=None), "val/loss", SPLIT)
    assert not promote and "has no val/loss" in why


def test_best_completed_ignores_stopped_and_failed_trials():
    rows = [
        TrialRow("a", "completed", 8, {"val/loss": 3.0}, {}, "r1", "/p/a"),
        TrialRow("b", "early_stopped", 2, {"val/loss": 1.0}, {}, "r2", None),
        TrialRow("c", "completed", 8, {"val/loss": 2.0}, {}, "r3", "/p/c"),
        TrialRow("d", "error", 4, {"val/loss": 0.5}, {}, "r4", None),
        TrialRow("e", "completed", 8, {"val/loss": math.nan}, {}, "r5", "/p/e"),
    ]
    assert best_completed(rows, "val/loss", "min").trial_id == "c"
    assert best_completed(rows, "val/loss", "max").trial_id == "a"
    assert best_completed(rows[1:2], "val/loss", "min") is None


def test_results_table_and_plot(tmp_path):
    cfg = SweepConfig(
        task="sensorlm", name="t", metric="val/loss",
        params={"temperature_init": {"type": "loguniform", "low": 1.0, "high": 30.0},
                "learn_temperature": {"type": "choice", "values": [True, False]}},
    )
    rows = [
        TrialRow("a", "completed", 8, {"val/loss": 3.0, "val/zero_shot_acc": 0.2}, {"temperature_init": 2.0, "learn_temperature": True}, "r1", "/p/a"),
        TrialRow("b", "early_stopped", 2, {"val/loss": 9.0}, {"temperature_init": 20.0, "learn_temperature": False}, "r2", None),
    ]
    path = write_results_csv(rows, list(cfg.params), tmp_path / "results" / "trials.csv")
    with open(path) as f:
        table = list(csv.DictReader(f))
    assert [r["trial_id"] for r in table] == ["a", "b"]
    assert table[0]["param.temperature_init"] == "2.0" and table[1]["status"] == "early_stopped"
    assert float(table[0]["val/loss"]) == 3.0 and table[1]["val/zero_shot_acc"] == ""
    plot = plot_metric_vs_params(rows, cfg, tmp_path / "results" / "plot.png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_config_differences_and_tracking_uri(tmp_path, monkeypatch):
    lr = {"lr": {"type": "grid", "values": [1e-3]}}
    a = to_dict(SweepConfig(task="sensorlm", name="s", params=lr))
    b = to_dict(SweepConfig(task="sensorlm", name="s", num_samples=2, storage_path="elsewhere", params=lr))
    assert _config_differences(a, b) == ["num_samples"]  # where it is stored may differ
    monkeypatch.chdir(tmp_path)
    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    # one resolver for every layer: a relative SQLite path is made absolute (trials run elsewhere)
    assert resolve_tracking_uri("sqlite:///runs.db") == f"sqlite:///{tmp_path / 'runs.db'}"
    assert resolve_tracking_uri("sqlite:////abs/runs.db") == "sqlite:////abs/runs.db"
    assert resolve_tracking_uri("http://mlflow:5000") == "http://mlflow:5000"


def test_resume_of_a_missing_sweep_is_refused(tmp_path):
    from sensorlm.tuning.sweep import run_sweep

    cfg = SweepConfig(task="projection_cl", name="nothing", storage_path=str(tmp_path),
                      params={"lr": {"type": "grid", "values": [1e-3]}})
    with pytest.raises(ConfigError, match=r"sweep 'nothing': nothing to resume"):
        run_sweep(cfg, resume=True)


# --- real sweeps --------------------------------------------------------------------------------


def _siglip_cfg(root, data_dir, name, bias_values):
    return from_dict(SweepConfig, {
        "task": "sensorlm",
        "name": name,
        "base_config": "sensorlm_tiny",
        "base_overrides": [
            "steps=8", "eval_every=2", "log_every=2", "batch_size=16", "optim.warmup_steps=2",
            f"data.path={data_dir}", "data.num_workers=0", "tracking.system_metrics=false",
        ],
        "searcher": "grid",
        "metric": "val/loss",
        "storage_path": str(root / "sweeps"),
        "asha": {"enabled": True, "grace_period": 2, "reduction_factor": 2, "max_t": 8},
        "resources": {"num_workers": 2, "cpus_per_worker": 0.5, "trial_cpus": 0.5},
        "tracking": {"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "experiment": "sweeps",
                     "registered_model_name": "sensorlm_sweep"},
        # SigLIP's temperature starts at 10, above the searched bound of 5: clamped back at step 1
        "params": {"bias_init": {"type": "grid", "values": bias_values},
                   "temperature_min": {"type": "grid", "values": [1.0]},
                   "temperature_max": {"type": "grid", "values": [5.0]}},
    })


@pytest.fixture(scope="module")
def siglip_sweep(ray_for_sweeps, wearable_dir, tmp_path_factory):
    """One 2-trial grid over the SigLIP bias, run once for the tests below. Grid order is trial
    order (one at a time): -10 runs first and completes; +10 falls far below it at ASHA's first
    rung (step 2) and is stopped there. (Each trial costs ~40 s of Ray Train start-up on 2 CPUs.)"""
    from sensorlm.tuning.sweep import run_sweep

    root = tmp_path_factory.mktemp("siglip_sweep")
    cfg = _siglip_cfg(root, wearable_dir, f"siglip-{uuid.uuid4().hex[:6]}", [-10.0, 10.0])
    return root, cfg, run_sweep(cfg)


def _client(cfg):
    from mlflow.tracking import MlflowClient

    return MlflowClient(cfg.tracking.tracking_uri)


@pytest.mark.slow
def test_asha_stops_trials_early_and_the_best_completed_trial_wins(siglip_sweep):
    _, cfg, result = siglip_sweep
    assert result.complete
    by_bias = {r.params["bias_init"]: r for r in result.trials}
    assert sorted(by_bias) == [-10.0, 10.0]
    assert by_bias[10.0].status == "early_stopped" and by_bias[10.0].step == 2
    assert by_bias[-10.0].status == "completed" and by_bias[-10.0].step == 8
    assert by_bias[-10.0].package_dir and by_bias[-10.0].package_dir.endswith("/package")
    assert result.best is not None and result.best.status == "completed"
    completed = [r for r in result.trials if r.status == "completed"]
    assert result.best.metrics["val/loss"] == min(r.metrics["val/loss"] for r in completed)
    assert by_bias[10.0].metrics["val/loss"] > 10 * result.best.metrics["val/loss"]


@pytest.mark.slow
def test_mlflow_parent_and_child_runs_hold_params_curves_and_results(siglip_sweep, tmp_path):
    import mlflow

    _, cfg, result = siglip_sweep
    client = _client(cfg)
    parent = client.get_run(result.parent_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["sensorlm.sweep_role"] == "parent"
    assert parent.data.params["searcher"] == "grid" and parent.data.params["metric"] == "val/loss"
    assert parent.data.params["params.bias_init.values"] == "[-10.0, 10.0]"
    assert parent.data.metrics["trials/early_stopped"] == 1
    assert parent.data.metrics[f"best/{cfg.metric}"] == pytest.approx(result.best.metrics["val/loss"])
    assert {a.path for a in client.list_artifacts(result.parent_run_id, "results")} == {
        "results/trials.csv", "results/metric_vs_params.png"}
    local = mlflow.artifacts.download_artifacts(
        run_id=result.parent_run_id, artifact_path="results/trials.csv", dst_path=str(tmp_path),
        tracking_uri=cfg.tracking.tracking_uri)
    with open(local) as f:
        table = list(csv.DictReader(f))
    assert sorted(float(r["param.bias_init"]) for r in table) == [-10.0, 10.0]

    children = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'")
    assert len(children) == 2
    rows = {r.trial_id: r for r in result.trials}
    for child in children:
        row = rows[child.data.tags["sensorlm.trial_id"]]
        bias = row.params["bias_init"]
        assert child.data.params["sweep.bias_init"] == str(bias)
        assert float(child.data.params["model.overrides.bias_init"]) == bias  # what the model was built with
        assert child.data.params["checkpoint.every_steps"] == "2"  # every validation reaches ASHA
        assert child.info.status == {"completed": "FINISHED", "early_stopped": "KILLED"}[row.status]
        curve = client.get_metric_history(child.info.run_id, "val/loss")
        steps = sorted(m.step for m in curve)
        # A curve per child, one point per validation. Reports reach Tune asynchronously, so a
        # stopped trial may have logged one more validation than ASHA saw before it was killed.
        assert steps == list(range(2, steps[-1] + 1, 2)) and row.step <= steps[-1] <= 8
        assert all(math.isfinite(m.value) for m in curve)
        # the bounded temperature: logged every interval, inside [1, 5] from the first step on
        assert child.data.params["model.overrides.temperature_max"] == "5.0"
        temperature = [m.value for m in client.get_metric_history(child.info.run_id, "train/temperature")]
        assert temperature and all(1.0 - 1e-4 <= t <= 5.0 + 1e-4 for t in temperature)


@pytest.mark.slow
def test_the_winner_is_registered_as_champion(siglip_sweep):
    _, cfg, result = siglip_sweep
    from sensorlm.tracking.mlflow_utils import get_alias_version

    assert result.promoted and result.model_version == "1"
    assert "no registered version scored on the held-out data" in result.decision
    champion = get_alias_version("sensorlm_sweep", "champion", client=_client(cfg))
    assert str(champion.version) == "1"
    assert float(champion.tags["metric.val/loss"]) == pytest.approx(result.best.metrics["val/loss"])
    # selected on the even-numbered val shards, crowned on the odd-numbered ones it never saw
    assert champion.tags["sensorlm.val_split"].startswith("dataset_manifest_sha256=")
    assert ";part=selection;" in champion.tags["sensorlm.val_split"]
    assert ";part=holdout;" in champion.tags["sensorlm.holdout_split"]
    assert math.isfinite(float(champion.tags["holdout.val/loss"]))
    assert champion.tags["sensorlm.trial_id"] == result.best.trial_id
    assert champion.run_id == result.best.run_id


@pytest.mark.slow
def test_a_worse_rerun_registers_without_moving_the_alias(siglip_sweep, wearable_dir, capsys):
    from sensorlm.tracking.mlflow_utils import get_alias_version
    from sensorlm.tuning.sweep import run_sweep

    root, first_cfg, first = siglip_sweep
    cfg = _siglip_cfg(root, wearable_dir, f"siglip-worse-{uuid.uuid4().hex[:6]}", [10.0])
    capsys.readouterr()
    result = run_sweep(cfg)
    out = capsys.readouterr().out
    assert result.complete and result.best is not None
    assert result.model_version == "2" and not result.promoted
    assert "registered WITHOUT @champion" in out and "does not beat the best registered version's" in out
    assert str(get_alias_version("sensorlm_sweep", "champion", client=_client(cfg)).version) == first.model_version


@pytest.mark.slow
def test_the_shipped_siglip_sweep_learns_and_is_judged_on_held_out_windows(ray_for_sweeps, tmp_path, capsys):
    """configs/sweeps/siglip_tiny.yaml as shipped, but for 2 of its 6 trials, run side by side (one
    core each): each trial is the README's job, so it learns (60-step trials scored 0.125 held
    out); its best trial is far above chance (0.10) on the half selection never saw, scores are
    reported side by side, and the gate compares a challenger with the registered champion window
    by window."""
    from mlflow.tracking import MlflowClient

    from sensorlm.tuning.gate import decide
    from sensorlm.tuning.space import load_sweep_config
    from sensorlm.tuning.trials import TrainSweep

    db = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # two trials at once: each trains on one thread, so 2 x (0.1 + 0.9) logical CPUs fill 2 cores
    cfg = load_sweep_config("siglip_tiny", ["num_samples=2", "max_concurrent_trials=2", "resources.trial_cpus=0.1",
                                            "resources.cpus_per_worker=0.9", "name=shipped", f"storage_path={tmp_path / 'sweeps'}",
                                            f"tracking.tracking_uri={db}", f"base.data.path={tmp_path / 'demo'}",
                                            "base.tracking.system_metrics=false"])
    from sensorlm.tuning.sweep import run_sweep

    result = run_sweep(cfg)
    out = capsys.readouterr().out
    assert result.complete and len(result.trials) == 2 and result.best is not None
    assert result.best.metrics["val/zero_shot_acc"] >= 0.5 and result.best.holdout >= 0.5, result.trials
    assert "on the selection part" in out and "on the held-out part" in out
    with open(result.results_csv) as f:
        table = {r["trial_id"]: r for r in csv.DictReader(f)}
    for row in result.trials:
        if row.status == "completed":
            assert float(table[row.trial_id]["holdout.val/zero_shot_acc"]) == pytest.approx(row.holdout)
    assert result.promoted and result.model_version == "1"
    client = MlflowClient(db)
    assert float(client.get_model_version("sensorlm", "1").tags["holdout.val/zero_shot_acc"]) == result.best.holdout

    # the champion against itself, on the real held-out windows: paired, a tie, the champion stays
    task = TrainSweep(cfg)
    task.prepare(tmp_path / "gate", db)
    again = task.holdout_score(task.load_version("models:/sensorlm/1", db))
    assert again.value == pytest.approx(result.best.holdout) and len(again.per_window) >= 100
    gate = decide(task, cfg, again, client, db)
    assert not gate.promote and "a tie keeps the champion" in gate.reason
    assert f"over {len(again.per_window)} held-out windows" in gate.reason
    assert gate.tags["holdout.compared_with_version"] == "1" and float(gate.tags["holdout.val/zero_shot_acc.difference"]) == 0


# --- the entry points ---------------------------------------------------------------------------


def test_entry_point_dry_run_and_config_errors(capsys):
    from sensorlm.cli import main as sensorlm_main

    def main(argv, task):
        return sensorlm_main(["sweep", "--task", task, *argv])

    assert main(["--config", "siglip_tiny", "--dry-run", "num_samples=3"], task="sensorlm") == 0
    out = capsys.readouterr().out
    assert "# 3 trials" in out and "temperature_init" in out
    code = main(["--config", "projection_tiny", "--dry-run", "params.min_logit_scale={type: grid, values: [200.0]}"],
                task="projection_cl")
    assert code == 2
    assert "params.min_logit_scale: values up to 200.0 exceed max_logit_scale" in capsys.readouterr().err
    assert main(["--config", "projection_tiny", "--dry-run"], task="sensorlm") == 2
    assert "this entry point sweeps task 'sensorlm'" in capsys.readouterr().err
    assert main(["--config", "siglip_tiny", "--dry-run", "base.optim.lr=-1"], task="sensorlm") == 2
    assert "optim.lr must be a positive number" in capsys.readouterr().err


def test_entry_point_script_runs(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "tune" / "sweep_projection.py"), "--config", "projection_tiny", "--dry-run",
         "name=cli-check"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "name: cli-check" in proc.stdout and "# 6 trials" in proc.stdout
    assert not (tmp_path / "outputs").exists()  # a dry run starts nothing


def test_the_scripts_export_is_sensorlm_export(tmp_path):
    """One export command: tune/sweep_projection.py export --model M is `sensorlm export M` (its
    checks and one-line errors)."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run(
        [sys.executable, str(root / "tune" / "sweep_projection.py"), "export", "--model", str(tmp_path / "nowhere"),
         "--dataset", str(tmp_path / "ds"), "--out", str(tmp_path / "pairs"), "--tracking-uri",
         f"sqlite:///{tmp_path / 'mlflow.db'}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("tune/sweep_projection.py export: ")]
    assert len(errors) == 1 and "error: unknown model URI" in errors[0] and "nowhere" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "pairs").exists()


def test_trials_ending_inside_warmup_are_refused():
    from sensorlm.tuning.trials import TrainSweep

    cfg = from_dict(SweepConfig, {"task": "sensorlm", "name": "w", "base_config": "sensorlm_tiny",
                                  "base_overrides": ["steps=60"], "params": {"lr": {"type": "grid", "values": [1e-3]}}})
    with pytest.raises(ConfigError, match=r"optim.warmup_steps \(100\) is not below their steps \(60\)"):
        TrainSweep(cfg)
