"""End-to-end: the real `train()` on Ray Train + DeepSpeed (CPU, gloo) with MLflow in sqlite.

Each test is a real 2-worker run of a tiny preset, so they are marked slow (about a minute each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sensorlm.training.config import load_train_config
from sensorlm.training.optim import warmup_cosine

pytestmark = pytest.mark.slow


RAY_CPUS = 4  # module_ray (tests/conftest.py)


@pytest.fixture(scope="module")
def ray_session(module_ray):
    """The local Ray the runs of this module share."""


@pytest.fixture(scope="module")
def wearable_dir(tmp_path_factory):
    from sensorlm.data.prepare import prepare_synthetic

    out = tmp_path_factory.mktemp("wearable_tiny")
    prepare_synthetic("wearable", "tiny", out, seed=0, log=None)
    return out


def _cfg(base, tmp_path, data_dir, *overrides):
    return load_train_config(
        base,
        [
            f"data.path={data_dir}",
            f"storage_path={tmp_path / 'ray'}",
            f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
            "tracking.system_metrics=false",
            "data.num_workers=0",
            "scaling.cpus_per_worker=1",
            "checkpoint.best_metric=null",  # these runs checkpoint between validations
            # the distributed layout (the README's config runs one worker): 2 ranks, ZeRO-2
            "scaling.num_workers=2", "batch_size=32", "scaling.zero_stage=2",
            *overrides,
        ],
    )


def _metric_history(cfg, run_id, key):
    from mlflow.tracking import MlflowClient

    return sorted((m.step, m.value) for m in MlflowClient(cfg.tracking.tracking_uri).get_metric_history(run_id, key))


def test_zero1_bf16_resume_continues_step_count_and_schedule_and_exports_fp32_masters(
        ray_session, wearable_dir, tmp_path):
    import json

    import torch
    from safetensors.torch import load_file

    from sensorlm.training.trainer import train

    common = ("name=resume-run", "scaling.zero_stage=1", "scaling.precision=bf16", "log_every=3",
              "eval_every=100", "checkpoint.every_steps=3", "optim.warmup_steps=2", "tracking.register=false")
    first = train(_cfg("sensorlm_tiny", tmp_path, wearable_dir, "steps=6", *common))
    assert first.metrics["step"] == 6
    # Same name, more steps: Ray hands the step-6 checkpoint back and the run continues.
    second = train(_cfg("sensorlm_tiny", tmp_path, wearable_dir, "steps=12", *common))
    assert second.metrics["step"] == 12
    assert second.run_id == first.run_id  # one MLflow run, one curve
    cfg = _cfg("sensorlm_tiny", tmp_path, wearable_dir, "steps=12", *common)
    losses = _metric_history(cfg, first.run_id, "train/loss")
    assert [s for s, _ in losses] == [3, 6, 9, 12]
    assert all(np.isfinite(v) for _, v in losses)
    # The LR scheduler state came back: after resume the LR is where the 12-step schedule says,
    # not a restarted warmup.
    lrs = dict(_metric_history(cfg, first.run_id, "train/lr"))
    assert lrs[9] == pytest.approx(cfg.optim.lr * warmup_cosine(9, 12, 2, cfg.optim.min_lr_ratio), rel=1e-5)
    # bf16 training exports DeepSpeed's fp32 master weights, not the module's bf16 copies
    meta = json.loads((Path(second.package_dir) / "model_config.json").read_text())
    assert meta["training"]["precision"] == "bf16" and "fp32 master" in meta["training"]["weights"]
    weights = load_file(str(Path(second.package_dir) / "model.safetensors"))
    w = weights["sensor_encoder.patch_embed.weight"]
    assert w.dtype == torch.float32
    assert (w.to(torch.bfloat16).float() != w).float().mean() > 0.5  # not bf16 values widened


def test_zero3_worker_death_restarts_from_checkpoint_exactly_and_registers(ray_session, wearable_dir, tmp_path):
    import mlflow
    import torch

    from sensorlm.tracking.package import load_model_package
    from sensorlm.training.trainer import train

    cfg = _cfg(
        "sensorlm_tiny", tmp_path, wearable_dir,
        "name=fault-run", "steps=8", "scaling.zero_stage=3", "log_every=2", "eval_every=8",
        "checkpoint.every_steps=4", "checkpoint.max_failures=1",
        "fault_injection.fail_once_at_step=6", "fault_injection.rank=1",
        "tracking.registered_model_name=sensorlm_e2e",
    )
    result = train(cfg)
    assert (tmp_path / "ray" / "fault-run" / "fault_injected").is_file()  # the worker did die
    assert result.metrics["step"] == 8
    assert result.model_uri == "models:/sensorlm_e2e/1"
    # Exact resume: killed at step 6, resumed from the step-4 checkpoint, it ends with the weights
    # of the uninterrupted run, bitwise (CPU, same world size), and logs each step once.
    from safetensors.torch import load_file

    clean = train(_cfg("sensorlm_tiny", tmp_path, wearable_dir, "name=clean-run", "steps=8", "scaling.zero_stage=3",
                       "log_every=2", "eval_every=8", "checkpoint.every_steps=4", "tracking.register=false"))
    resumed_w = load_file(str(Path(result.package_dir) / "model.safetensors"))
    clean_w = load_file(str(Path(clean.package_dir) / "model.safetensors"))
    assert set(resumed_w) == set(clean_w)
    for name, w in clean_w.items():
        assert torch.equal(resumed_w[name], w), name
    assert _metric_history(cfg, result.run_id, "train/resumed_from_step") == [(4, 4.0)]  # it did resume
    assert [s for s, _ in _metric_history(cfg, result.run_id, "train/loss")] == [2, 4, 6, 8]

    # Consolidated ZeRO-3 weights: full shapes, loadable without DeepSpeed.
    package = load_model_package(result.package_dir)
    rng = np.random.default_rng(0)
    sensor = rng.normal(size=(3, 144, 34)).astype(np.float32)
    texts = ["A day with running: a run.", "A quiet day overall.", "Slept 7.1 hours."]

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    served = mlflow.pyfunc.load_model(result.model_uri)
    text_emb = np.asarray(served.predict({"text": texts}))
    sensor_emb = np.asarray(served.predict({"sensor": sensor}))

    from sensorlm.tracking.package import sensor_normalisation

    mean, std = (np.asarray(v, np.float32) for v in sensor_normalisation(package.data_stats))
    ids, mask = package.tokenizer.encode(texts, package.model.config.text.context_len)
    with torch.no_grad():
        want_text = package.model.encode_text(torch.as_tensor(ids), torch.as_tensor(mask)).numpy()
        x = torch.as_tensor((sensor - mean) / std)
        want_sensor = package.model.encode_sensor(x, torch.zeros(3, 144, dtype=torch.bool)).numpy()
    np.testing.assert_allclose(text_emb, want_text, atol=1e-5)
    np.testing.assert_allclose(sensor_emb, want_sensor, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, atol=1e-5)


def test_own_device_export_to_registered_model_and_zero_shot(ray_session, tmp_path, capsys):
    """docs/data.md's walk-through with its commands: a device export (3 subjects x 5 days, 30-s
    epochs, 7 channels, gaps, duplicates, labels of the user's own) -> import -> train the tiny
    preset with no model override -> registered -> zero-shot evaluation over those labels. Four
    labels (chance 0.25); seeds 0, 1, 2 reached 0.89, 0.94, 0.89 (README); the bound is 2x chance."""
    import json

    from sensorlm.cli import main as sensorlm_main
    from sensorlm.data.synthetic.device import write_device_export

    raw = write_device_export(tmp_path / "raw")
    data, db = tmp_path / "mine", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sensorlm_main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--labels", str(raw["labels"]),
                          "--out", str(data), "--window-minutes", "120", "--stride-minutes", "60",
                          "--main-label-min-fraction", "0.5", "--prompt-template", "Two hours of {label}.",
                          "--quiet"]) == 0
    assert sensorlm_main(["train", "--config", "configs/sensorlm_tiny.yaml", f"data.path={data}", "data.synthetic=null",
                       "steps=80", "optim.warmup_steps=20", "log_every=20", "eval_every=40",
                       "checkpoint.every_steps=80", "batch_size=32", f"storage_path={tmp_path / 'ray'}",
                       f"tracking.tracking_uri={db}", "tracking.system_metrics=false", "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert "model input follows the data: sensorlm_tiny sensor (120, 7) patch (6, 7)" in out
    assert "registered models:/sensorlm/1" in out
    assert sensorlm_main(["evaluate", "models:/sensorlm/1", "--data", str(data), "--tracking-uri", db, "--out",
                          str(tmp_path / "eval"), "--rollout-samples", "0", "--shots"]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    chance = 1 / 4
    assert metrics["zero_shot/accuracy"] >= 2 * chance, metrics
    assert {"desk_work", "high_activity", "relaxing", "sleep"} <= {k.split("/")[2] for k in metrics
                                                                    if k.startswith("zero_shot/per_class/")}


def test_unlabelled_export_trains_with_the_readme_config_on_a_fold(ray_session, tmp_path, capsys):
    """SensorLM's premise: recordings without labels pretrain. The README's config (best metric
    val/zero_shot_acc) on an import without --labels trains, ranks checkpoints by val/loss (one
    line says so), and registers the best of them. The import is dealt into 3 folds and the run
    validates on fold 1 (data.fold=1/3), training on the other two."""
    import json

    from mlflow.tracking import MlflowClient

    from sensorlm.cli import main as sensorlm_main
    from sensorlm.data.synthetic.device import write_device_export

    raw = write_device_export(tmp_path / "raw")
    data, db = tmp_path / "unlabelled", f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert sensorlm_main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--out", str(data),
                          "--window-minutes", "120", "--stride-minutes", "60", "--folds", "3", "--quiet"]) == 0
    assert sensorlm_main(["train", "--config", "configs/sensorlm_tiny.yaml", f"data.path={data}", "data.synthetic=null",
                       "data.fold=1/3", "steps=20", "optim.warmup_steps=5", "log_every=10", "eval_every=10", "checkpoint.every_steps=10",
                       "batch_size=32", f"storage_path={tmp_path / 'ray'}", f"tracking.tracking_uri={db}",
                       "tracking.system_metrics=false", "data.num_workers=0"]) == 0
    out = capsys.readouterr().out
    assert "the dataset has no labels, so checkpoints are ranked by val/loss (lower is better)" in out
    assert "registered models:/sensorlm/1" in out
    client = MlflowClient(db)
    version = client.get_model_version("sensorlm", "1")
    assert "metric.val/loss" in version.tags and "metric.val/zero_shot_acc" not in version.tags
    fold = json.loads((data / "manifest.json").read_text())["splits"]["fold1"]["num_samples"]
    run = client.get_run(version.run_id)
    assert run.data.params["data.fold"] == "1/3" and run.data.metrics["val/samples"] == fold


def test_training_reads_a_pipe_template_tokenizer_included(ray_session, wearable_dir, tmp_path):
    """The README's object-store form, data.path=pipe:CMD {name}: shards, manifest and the caption
    tokenizer all come through the command (the tokenizer once, on the driver); the registered
    package carries the dataset's tokenizer."""
    from sensorlm.tracking.package import load_model_package
    from sensorlm.training.trainer import train

    cfg = load_train_config("sensorlm_tiny", [
        f"data.path=pipe:cat {wearable_dir}/{{name}}", "data.synthetic=null", "steps=4", "eval_every=4",
        "log_every=2", "checkpoint.every_steps=4", "optim.warmup_steps=1", "batch_size=16", "data.num_workers=0",
        f"storage_path={tmp_path / 'ray'}", f"tracking.tracking_uri=sqlite:///{tmp_path / 'mlflow.db'}",
        "tracking.system_metrics=false", "tracking.register=false"])
    result = train(cfg)
    assert result.metrics["step"] == 4 and np.isfinite(result.metrics["val/loss"])
    package = load_model_package(result.package_dir)
    assert (Path(result.package_dir) / "tokenizer.json").read_bytes() == (wearable_dir / "tokenizer.json").read_bytes()
    assert package.tokenizer.vocab_size > 0


def test_non_finite_run_fails_registers_nothing_and_rank1_skips_are_logged(ray_session, wearable_dir, tmp_path):
    """lr=1e30 without clipping: the loss goes non-finite, the run ends FAILED with one line naming
    the step and registers nothing; a hostile sample in every shard rank 1 reads is in MLflow with
    its shard and key."""
    import io
    import json
    import shutil
    import tarfile

    from mlflow.tracking import MlflowClient

    from sensorlm.data.loader import _assign_shards
    from sensorlm.data.shards import encode_npy, load_manifest
    from sensorlm.training.trainer import RunFailed, train

    data = tmp_path / "hostile"
    shutil.copytree(wearable_dir, data)
    names = [s["name"] for s in load_manifest(data)["splits"]["train"]["shards"]]
    rank1 = _assign_shards(names, epoch=0, seed=0, shuffle=True, rank=1, world_size=2)
    for name in rank1:  # one wrong-shaped sample at the front of each of rank 1's shards
        with tarfile.open(data / name) as t:
            members = [(m, t.extractfile(m).read()) for m in t.getmembers()]
        with tarfile.open(data / name, "w", format=tarfile.USTAR_FORMAT) as t:
            bad = [("bad0.sensor.npy", encode_npy(np.zeros((3, 3), np.float32))),
                   ("bad0.missing.npy", encode_npy(np.zeros(144, np.uint8))), ("bad0.json", b"{}"), ("bad0.txt", b"x")]
            for n, b in bad:
                info = tarfile.TarInfo(n)
                info.size = len(b)
                t.addfile(info, io.BytesIO(b))
            for m, b in members:
                t.addfile(m, io.BytesIO(b))
    cfg = _cfg("sensorlm_tiny", tmp_path, data, "name=nan-run", "steps=20", "log_every=4", "eval_every=20",
               "optim.lr=1e30", "optim.grad_clip=0", "tracking.registered_model_name=sensorlm_nan")
    with pytest.raises(RunFailed, match=r"non-finite loss at step \d+ \(optim.on_non_finite=stop\)"):
        train(cfg)
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("sensorlm").experiment_id],
                             filter_string="tags.`sensorlm.run_name` = 'nan-run'")[0]
    assert run.info.status == "FAILED" and "non-finite loss" in run.data.tags["sensorlm.failure"]
    assert not client.search_registered_models("name = 'sensorlm_nan'")
    assert run.data.metrics["data/skipped/wrong_shape"] >= 1
    local = client.download_artifacts(run.info.run_id, "data/skipped_samples.json", str(tmp_path))
    events = json.loads(Path(local).read_text())["events"]
    assert any(e["rank"] == 1 and e["key"] == "bad0" and e["shard"] in rank1 and e["reason"] == "wrong_shape"
               for e in events), events



def test_the_best_checkpoint_by_its_metric_is_registered(ray_session, wearable_dir, tmp_path, capsys):
    """With checkpoint.best_metric the registered weights are the best validated checkpoint's, not
    the last step's; the log and the version say which step. (best_mode=min on the zero-shot
    accuracy makes the chosen step a known one here: the lowest accuracy, the later of ties.)"""
    from mlflow.tracking import MlflowClient

    from sensorlm.training.trainer import train

    cfg = _cfg("sensorlm_tiny", tmp_path, wearable_dir, "name=best-ckpt", "steps=6", "log_every=2", "eval_every=2",
               "checkpoint.every_steps=2", "checkpoint.keep_last=3", "checkpoint.best_metric=val/zero_shot_acc",
               "checkpoint.best_mode=min", "scaling.num_workers=1", "batch_size=16")
    result = train(cfg)
    history = _metric_history(cfg, result.run_id, "val/zero_shot_acc")
    low = min(v for _, v in history)
    expected = max(step for step, v in history if v == low)
    client = MlflowClient(cfg.tracking.tracking_uri)
    version = client.get_model_version("sensorlm", result.model_version)
    assert version.tags["sensorlm.step"] == str(expected)
    assert float(version.tags["metric.val/zero_shot_acc"]) == pytest.approx(low)
    assert client.get_run(result.run_id).data.tags["sensorlm.registered_step"] == str(expected)
    assert f"the registered model is the checkpoint of step {expected}" in capsys.readouterr().out


def test_early_stopping_ends_the_run_registers_its_best_and_a_rerun_does_nothing(ray_session, wearable_dir, tmp_path,
                                                                                 capsys):
    """checkpoint.early_stop_patience ends the run at the first validation that does not improve by
    min_delta (huge here, so that is the second one, at step 4 of 20); the log, the MLflow run and
    the registered version say so, and a rerun of the same name trains nothing."""
    from mlflow.tracking import MlflowClient

    from sensorlm.training.trainer import train

    cfg = _cfg("sensorlm_tiny", tmp_path, wearable_dir, "name=early-stop", "steps=20", "log_every=2", "eval_every=2",
               "checkpoint.every_steps=2", "checkpoint.keep_last=3", "checkpoint.best_metric=val/loss",
               "checkpoint.best_mode=min", "checkpoint.early_stop_patience=1", "checkpoint.early_stop_min_delta=1e9",
               "scaling.num_workers=1", "batch_size=16")
    result = train(cfg)
    out = capsys.readouterr().out
    assert "early stop at step 4: val/loss has not improved on its best" in out
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["sensorlm.early_stopped_step"] == "4" and run.data.tags["sensorlm.final_step"] == "4"
    assert run.data.metrics["train/early_stopped_at_step"] == 4.0
    history = dict(_metric_history(cfg, result.run_id, "val/loss"))
    assert sorted(history) == [2, 4]  # no training past the stop
    best = min(history, key=lambda s: (history[s], -s))
    version = client.get_model_version("sensorlm", result.model_version)
    assert version.tags["sensorlm.step"] == str(best)

    again = train(cfg)
    assert "run early-stop stopped early at step 4" in capsys.readouterr().out
    assert again.run_id == result.run_id and again.model_version == result.model_version
