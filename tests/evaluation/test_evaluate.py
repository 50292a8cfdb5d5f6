"""End to end: evaluate tiny registered models from a temporary SQLite MLflow store
(sensorlm/evaluation/evaluate.py), plus the bad inputs: URIs, datasets, compare runs, features.

The models are untrained (random weights): the tests check that every number is computed and
logged correctly, not that anything was learned.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import matplotlib.image as mpimg
import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from sensorlm.cli import main as sensorlm_main
from sensorlm.data.synthetic.captions import activity_prompt
from sensorlm.data.loader import make_loader
from sensorlm.data.prepare import prepare_synthetic
from sensorlm.evaluation.evaluate import evaluate_model, format_metrics_table
from sensorlm.evaluation.metrics import retrieval_recall
from sensorlm.models import create_model, model_config
from sensorlm.tracking.mlflow_utils import register_version, setup_experiment
from sensorlm.tracking.package import load_model_package, save_model_package
from sensorlm.tracking.pyfunc import log_model_package

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
STATS_KEYS = ("stats", "channels", "sample_shape", "activities")  # what the trainer packages


def check_png(path: Path) -> None:
    assert path.is_file(), path
    assert path.read_bytes()[:8] == PNG_SIGNATURE, path
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert 300 <= h <= 3000 and 300 <= w <= 3000, (path.name, h, w)
    assert img[..., :3].std() > 0.01, f"{path.name} is blank"


def _data_stats(dataset: Path) -> dict:
    manifest = json.loads((dataset / "manifest.json").read_text())
    return {k: manifest[k] for k in STATS_KEYS if k in manifest}


def _training_run(store: str, run_name: str, curves: dict[str, list[float]], *, data_path=None, package=None,
                  tags=None) -> tuple[str, object]:
    """A fake training run: params, metric curves, and optionally a logged model package."""
    setup_experiment("training", store)
    info = None
    with mlflow.start_run(run_name=run_name, tags=tags) as run:
        if data_path is not None:
            mlflow.log_param("data.path", str(data_path))
        for key, values in curves.items():
            for step, value in enumerate(values):
                mlflow.log_metric(key, value, step=10 * (step + 1))
        if package is not None:
            info = log_model_package(package)
    return run.info.run_id, info


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaluate")
    previous = mlflow.get_tracking_uri()
    store = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(store)
    wear, sst = root / "wear", root / "sst"
    prepare_synthetic("wearable", "tiny", wear, seed=0, log=None)
    prepare_synthetic("sst", "tiny", sst, seed=0, log=None)

    torch.manual_seed(0)
    pkg = save_model_package(
        create_model("sensorlm_tiny"), "sensorlm_tiny", model_config("sensorlm_tiny"), root / "sensorlm_pkg",
        tokenizer_path=wear / "tokenizer.json", data_stats=_data_stats(wear),
    )
    wear_run, wear_info = _training_run(
        store, "sensorlm-map", {"train/loss": [2.0, 1.5, 1.2], "val/loss": [2.1, 1.7, 1.4],
                                "val/zero_shot_acc": [0.1, 0.2, 0.3], "val/samples": [32, 32, 32]},
        data_path=wear, package=pkg,
    )
    register_version(wear_info, "wear-tiny", {"val/loss": 1.4}, alias="champion")
    # Runs to compare against (curves only, as an ablation sweep would leave them).
    meanpool_run, _ = _training_run(store, "sensorlm-meanpool", {"val/zero_shot_acc": [0.1, 0.15, 0.25],
                                                                 "val/loss": [2.2, 1.9, 1.6]},
                                    tags={"ablation": "pooling"})
    hvt_run, _ = _training_run(store, "sensorlm-hvt", {"val/zero_shot_acc": [0.05, 0.2, 0.35]},
                               tags={"ablation": "tower"})

    torch.manual_seed(1)
    sst_pkg = save_model_package(create_model("sst_tiny"), "sst_tiny", model_config("sst_tiny"), root / "sst_pkg",
                                 data_stats=_data_stats(sst))
    sst_run, sst_info = _training_run(
        store, "sst-run", {"train/loss": [1.0, 0.8], "val/rmse_holdout_c": [2.0, 1.5], "val/rmse_ocean_c": [1.8, 1.2]},
        data_path=sst, package=sst_pkg,
    )
    register_version(sst_info, "sst-tiny", {"val/rmse_holdout_c": 1.5})
    yield dict(root=root, store=store, wear=wear, sst=sst, pkg=pkg, sst_pkg=sst_pkg, wear_run=wear_run,
               meanpool_run=meanpool_run, hvt_run=hvt_run, sst_run=sst_run)
    mlflow.set_tracking_uri(previous)


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # anything written relative to the cwd stays out of the repository


# --------------------------------------------------------------------------------------------- SensorLM


def test_sensorlm_registered_model_end_to_end(env, tmp_path):
    out = tmp_path / "out"
    # No data given: the dataset comes from the training run's data.path param.
    result = evaluate_model(
        "models:/wear-tiny/1", tracking_uri=env["store"], out_dir=out, rollout_samples=2,
        compare=["sensorlm-meanpool", "tag:ablation=pooling", "tag:ablation=tower"],
    )
    m = result.metrics
    activities = json.loads((env["wear"] / "manifest.json").read_text())["activities"]
    assert (result.model_name, result.model_version, result.training_run_id) == ("wear-tiny", "1", env["wear_run"])
    assert m["eval/num_samples"] == 32  # the whole val split of the tiny dataset
    assert m["data/skipped_total"] == 0

    fractions = ["zero_shot/accuracy", "zero_shot/macro_f1"]
    fractions += [f"zero_shot/per_class/{a}/{k}" for a in activities for k in ("precision", "recall", "f1")]
    for direction in ("sensor_to_text", "text_to_sensor"):
        recalls = [m[f"retrieval/{direction}/recall_at_{k}"] for k in (1, 5, 10)]
        assert recalls == sorted(recalls)  # recall@k grows with k
        fractions += [f"retrieval/{direction}/recall_at_{k}" for k in (1, 5, 10)]
    fractions += [f"probe/{k}shot/accuracy" for k in (1, 5, 10)]
    for key in fractions:
        assert 0.0 <= m[key] <= 1.0, (key, m[key])
    assert sum(m[f"zero_shot/per_class/{a}/support"] for a in activities) == 32
    assert m["probe/num_train_samples"] == 96

    # The zero-shot accuracy, recomputed here from the package and the loader directly.
    pkg = load_model_package(env["pkg"])
    ids, mask = pkg.tokenizer.encode([activity_prompt(a) for a in activities], 48)
    loader = make_loader(env["wear"], "val", 16, shuffle=False, num_workers=0, tokenizer=pkg.tokenizer)
    correct = n = 0
    with torch.no_grad():
        cls = pkg.model.encode_text(torch.as_tensor(ids), torch.as_tensor(mask))
        for b in loader:
            pred = (pkg.model.encode_sensor(b["sensor"], b["missing"]) @ cls.T).argmax(1)
            correct += int((pred == b["label"]).sum())
            n += len(b["label"])
    assert m["zero_shot/accuracy"] == pytest.approx(correct / n)

    # Plots: local PNGs of sensible size.
    expected = {"tsne", "confusion_matrix", "attention_rollout_0", "attention_rollout_1", "convergence",
                "ablation_val_zero_shot_acc", "ablation_val_loss"}
    assert set(result.plots) == expected
    for path in result.plots.values():
        assert path.parent == out
        check_png(path)
    # Both tag filters and the name resolve to the two comparison runs (the name and the pooling
    # tag name the same run, counted once).
    assert sorted(result.compared.values()) == sorted([env["meanpool_run"], env["hvt_run"]])
    saved = json.loads((out / "metrics.json").read_text())
    assert saved == pytest.approx(m)

    # The MLflow evaluation run: linked to the version and the training run, metrics and artifacts logged.
    client = MlflowClient(env["store"])
    run = client.get_run(result.run_id)
    assert client.get_experiment(run.info.experiment_id).name == "wear-tiny-evaluation"
    tags = run.data.tags
    assert tags["sensorlm.model_name"] == "wear-tiny"
    assert tags["sensorlm.model_version"] == "1"
    assert tags["sensorlm.model_uri"] == "models:/wear-tiny/1"
    assert tags["sensorlm.eval_split"] == "val"
    assert tags["sensorlm.training_run_id"] == env["wear_run"]
    assert run.info.status == "FINISHED"
    assert run.data.metrics["zero_shot/accuracy"] == pytest.approx(m["zero_shot/accuracy"])
    assert run.data.metrics["retrieval/sensor_to_text/recall_at_5"] == pytest.approx(
        m["retrieval/sensor_to_text/recall_at_5"]
    )
    artifacts = {a.path for a in client.list_artifacts(result.run_id, "plots")}
    assert artifacts == {f"plots/{name}.png" for name in expected}
    assert "metrics.json" in {a.path for a in client.list_artifacts(result.run_id)}

    version = client.get_model_version("wear-tiny", "1")
    assert version.tags["eval.run_id"] == result.run_id
    assert version.tags["eval.split"] == "val"
    assert float(version.tags["eval.zero_shot/accuracy"]) == pytest.approx(m["zero_shot/accuracy"])
    assert float(version.tags["eval.retrieval/text_to_sensor/recall_at_10"]) == pytest.approx(
        m["retrieval/text_to_sensor/recall_at_10"]
    )
    assert not any(k.startswith("eval.zero_shot/per_class") for k in version.tags)
    assert version.tags["metric.val/loss"] == repr(1.4)  # the trainer's tags are left alone

    table = format_metrics_table(m, "sensorlm")
    assert "zero_shot/accuracy" in table and "precision" in table and activities[0] in table


def test_alias_resolves_to_the_same_version(env, tmp_path):
    result = evaluate_model("models:/wear-tiny@champion", tracking_uri=env["store"], out_dir=tmp_path / "o",
                            log=False, shots=(), rollout_samples=0, max_samples=8)
    assert (result.model_name, result.model_version, result.run_id) == ("wear-tiny", "1", None)
    assert result.metrics["eval/num_samples"] == 8
    assert not any(k.startswith("probe/") for k in result.metrics)
    assert set(result.plots) == {"tsne", "confusion_matrix", "convergence"}


def test_cli_dry_run_resolves_version_and_alias_and_options(env, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for uri in ("models:/wear-tiny/1", "models:/wear-tiny@champion"):
        assert sensorlm_main(["evaluate", uri, "--tracking-uri", env["store"], "--dry-run", "batch_size=16",
                              "--shots", "1", "5"]) == 0
        out = capsys.readouterr().out
        assert f"# {uri}: sensorlm model 'sensorlm_tiny' version 1" in out
        assert "batch_size: 16" in out and "- 5" in out
    assert not any(tmp_path.iterdir())  # resolved, nothing evaluated or written
    assert sensorlm_main(["evaluate", "models:/wear-tiny/1", "--tracking-uri", env["store"], "--dry-run",
                          "bach_size=16"]) == 2
    assert "unknown config key bach_size; did you mean 'batch_size'?" in capsys.readouterr().err
    assert sensorlm_main(["evaluate", "models:/wear-tiny/9", "--tracking-uri", env["store"], "--dry-run"]) == 2
    assert "sensorlm evaluate: error:" in capsys.readouterr().err


# --------------------------------------------------------------------------------------------- SST


def test_sst_registered_model_end_to_end(env, tmp_path, monkeypatch):
    import functools

    import sensorlm.evaluation.dineof as dineof_module

    # DINEOF with few modes and iterations: the wiring is tested here, the method in test_dineof.py.
    fast = functools.partial(dineof_module.dineof_monthly_mean, max_modes=2, max_iter=20)
    monkeypatch.setattr(dineof_module, "dineof_monthly_mean", fast)
    # A bare run id: the version is found through the run that logged it.
    result = evaluate_model(env["sst_run"], env["sst"], tracking_uri=env["store"], out_dir=tmp_path / "sst",
                            map_samples=2, batch_size=3)
    m = result.metrics
    assert (result.model_name, result.model_version) == ("sst-tiny", "1")
    assert m["eval/num_samples"] == 8
    for source in ("model", "climatology", "observed_mean", "dineof"):
        for region in ("holdout", "observed", "ocean"):
            assert math.isfinite(m[f"{source}/rmse_{region}"]) and m[f"{source}/rmse_{region}"] > 0
            assert math.isfinite(m[f"{source}/bias_{region}"])
            assert -1.0 <= m[f"{source}/corr_{region}"] <= 1.0

    # Climatology and the model, recomputed independently: the loader batch in degrees C, and
    # the served pyfunc (its own input handling) for the model.
    manifest = json.loads((env["sst"] / "manifest.json").read_text())
    mean, std = manifest["stats"]["sst"]["mean"], manifest["stats"]["sst"]["std"]
    served = mlflow.pyfunc.load_model("models:/sst-tiny/1")
    clim_err, model_err, hold_all, ocean_all = [], [], [], []
    for b in make_loader(env["sst"], "val", 4, shuffle=False, num_workers=0):
        c = lambda t: t.numpy().astype(np.float64) * std + mean  # noqa: E731
        target, clim = c(b["target"]), c(b["clim"])
        daily = np.where(b["mask"].numpy() > 0, np.nan, c(b["daily"]))
        pred = served.predict({"daily": daily, "land": b["land"].numpy(), "padded_days": b["padded_days"].numpy(),
                               "month": b["month"].numpy()})
        ocean = ~b["land"].numpy()
        clim_err.append(clim - target)
        model_err.append(pred - target)
        hold_all.append(b["holdout"].numpy() & ocean)
        ocean_all.append(ocean)
    clim_err, model_err = np.concatenate(clim_err), np.concatenate(model_err)
    hold, ocean = np.concatenate(hold_all), np.concatenate(ocean_all)
    assert m["climatology/rmse_holdout"] == pytest.approx(np.sqrt(np.mean(clim_err[hold] ** 2)), rel=1e-9)
    assert m["climatology/rmse_ocean"] == pytest.approx(np.sqrt(np.mean(clim_err[ocean] ** 2)), rel=1e-9)
    assert m["model/rmse_holdout"] == pytest.approx(np.sqrt(np.mean(model_err[hold] ** 2)), rel=1e-4)
    assert m["model/n_holdout"] == hold.sum() and m["model/n_ocean"] == ocean.sum()

    assert set(result.plots) == {"sst_maps_0", "sst_maps_1", "convergence"}
    for path in result.plots.values():
        check_png(path)
    client = MlflowClient(env["store"])
    run = client.get_run(result.run_id)
    assert run.data.tags["sensorlm.training_run_id"] == env["sst_run"]
    assert run.data.tags["sensorlm.model_name"] == "sst-tiny"
    assert client.get_experiment(run.info.experiment_id).name == "sst-tiny-evaluation"
    version = client.get_model_version("sst-tiny", "1")
    assert float(version.tags["eval.climatology/rmse_holdout"]) == pytest.approx(m["climatology/rmse_holdout"])
    assert version.tags["eval.run_id"] == result.run_id

    table = format_metrics_table(m, "sst").splitlines()
    assert table[0].split() == ["metric", "model", "climatology", "observed_mean", "dineof"]
    assert any(line.split()[0] == "rmse_observed" and len(line.split()) == 5 for line in table)
    assert "metrics_table.txt" in {a.path for a in client.list_artifacts(result.run_id)}


# --------------------------------------------------------------------------------------------- ProjectionCL


def test_projection_cl_local_package_on_feature_files(tmp_path):
    torch.manual_seed(2)
    model = create_model("projection_cl_tiny")
    pkg = save_model_package(model, "projection_cl_tiny", model_config("projection_cl_tiny"), tmp_path / "pkg")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(20, 64)).astype(np.float32), rng.normal(size=(20, 48)).astype(np.float32)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    result = evaluate_model(str(pkg), embeddings_a=tmp_path / "a.npy", embeddings_b=tmp_path / "b.npy",
                            out_dir=tmp_path / "out", log=False)
    with torch.no_grad():
        za, zb = model.encode_a(torch.from_numpy(a)).numpy(), model.encode_b(torch.from_numpy(b)).numpy()
    want = retrieval_recall(za, zb)
    for k in (1, 5, 10):
        assert result.metrics[f"retrieval/a_to_b/recall_at_{k}"] == pytest.approx(want[f"recall@{k}"])
        assert 0.0 <= result.metrics[f"retrieval/b_to_a/recall_at_{k}"] <= 1.0
    assert result.metrics["eval/num_samples"] == 20
    assert (tmp_path / "out" / "metrics.json").is_file()

    np.save(tmp_path / "b_short.npy", b[:10])
    with pytest.raises(ValueError, match="20 rows and --embeddings-b 10"):
        evaluate_model(str(pkg), embeddings_a=tmp_path / "a.npy", embeddings_b=tmp_path / "b_short.npy", log=False)
    with pytest.raises(ValueError, match=r"b\.npy: expected shape \(N, 64\), got \(20, 48\)"):
        evaluate_model(str(pkg), embeddings_a=tmp_path / "b.npy", embeddings_b=tmp_path / "b.npy", log=False)
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}] * 20, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy: not a plain .npy array"):
        evaluate_model(str(pkg), embeddings_a=tmp_path / "obj.npy", embeddings_b=tmp_path / "b.npy", log=False)
    with pytest.raises(ValueError, match="pass --embeddings-a"):
        evaluate_model(str(pkg), embeddings_b=tmp_path / "b.npy", log=False)
    with pytest.raises(ValueError, match=r"no dataset given \(--data\)"):
        evaluate_model(str(pkg), log=False)

    # or on a paired-embedding dataset's split, like the one it trained on
    from sensorlm.data.embedding_pairs import make_synthetic_pairs

    make_synthetic_pairs("tiny", tmp_path / "pairs")
    on_data = evaluate_model(str(pkg), data=tmp_path / "pairs", split="val", out_dir=tmp_path / "out2", log=False)
    assert on_data.metrics["eval/num_samples"] == 256
    assert 0.0 <= on_data.metrics["retrieval/a_to_b/recall_at_1"] <= 1.0


# --------------------------------------------------------------------------------------------- CLI, HVT


def test_cli_on_a_local_hvt_package_skips_rollout(env, tmp_path, capsys):
    torch.manual_seed(3)
    pkg = save_model_package(
        create_model("sensorlm_hvt_tiny"), "sensorlm_hvt_tiny", model_config("sensorlm_hvt_tiny"), tmp_path / "hvt",
        tokenizer_path=env["wear"] / "tokenizer.json", data_stats=_data_stats(env["wear"]),
    )
    out = tmp_path / "out"
    code = sensorlm_main(["evaluate", str(pkg), "--data", str(env["wear"]), "--out", str(out), "--no-log", "--shots",
                 "--max-samples", "8", "--rollout-samples", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "attention rollout skipped: the HVT sensor tower" in printed
    assert "zero_shot/accuracy" in printed and "retrieval/sensor_to_text/recall_at_1" in printed
    assert sorted(p.name for p in out.glob("*.png")) == ["confusion_matrix.png", "tsne.png"]
    assert "the training run of this model is not known" in (out / "notes.txt").read_text()

    assert sensorlm_main(["evaluate", "models:/no-such-model/1", "--tracking-uri", env["store"], "--no-log"]) == 2
    assert "no registered model named 'no-such-model'" in capsys.readouterr().err


def test_downloaded_pyfunc_directory_against_another_store(env, tmp_path):
    local = mlflow.artifacts.download_artifacts("models:/wear-tiny/1", dst_path=str(tmp_path / "dl"))
    other_store = f"sqlite:///{tmp_path / 'other.db'}"
    result = evaluate_model(local, env["wear"], tracking_uri=other_store, out_dir=tmp_path / "o", log=False,
                            shots=(), rollout_samples=0, max_samples=4)
    mlflow.set_tracking_uri(env["store"])
    assert result.model_name is None and result.training_run_id is None
    assert any(f"training run {env['wear_run']} is not in {other_store}" in n for n in result.notes)
    assert result.metrics["eval/num_samples"] == 4
    assert set(result.plots) == {"tsne", "confusion_matrix"}


# --------------------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize(
    "uri, message",
    [
        ("models:/no-such-model/1", "no registered model named 'no-such-model'"),
        ("models:/wear-tiny@nochamp", r"model 'wear-tiny' has no alias 'nochamp' \(aliases: @champion -> v1\)"),
        ("models:/wear-tiny/99", r"model 'wear-tiny' has no version 99 \(versions: \[1\]\)"),
        ("models:/wear-tiny", "expected models:/NAME@ALIAS or models:/NAME/VERSION"),
        ("runs:/" + "0" * 32 + "/model", "no MLflow run with id " + "0" * 32),
        ("not-a-model", "unknown model URI 'not-a-model'"),
    ],
)
def test_bad_model_uris_name_the_problem(env, uri, message):
    with pytest.raises(ValueError, match=message):
        evaluate_model(uri, env["wear"], tracking_uri=env["store"], log=False)


def test_run_without_a_logged_model(env):
    with pytest.raises(ValueError, match=f"runs:/{env['meanpool_run']}/model"):
        evaluate_model(env["meanpool_run"], env["wear"], tracking_uri=env["store"], log=False)


def test_bad_datasets_and_compare_runs(env, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=f"dataset {empty}: no manifest.json"):
        evaluate_model("models:/wear-tiny/1", empty, tracking_uri=env["store"], log=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        evaluate_model("models:/wear-tiny/1", tmp_path / "nowhere", tracking_uri=env["store"], log=False)
    with pytest.raises(ValueError, match=r"sensorlm model, which is evaluated on 'wearable' data.*holds 'sst' data"):
        evaluate_model("models:/wear-tiny/1", env["sst"], tracking_uri=env["store"], log=False)
    with pytest.raises(ValueError, match=r"sst model, which is evaluated on 'sst' data.*holds 'wearable' data"):
        evaluate_model("models:/sst-tiny/1", env["wear"], tracking_uri=env["store"], log=False)
    with pytest.raises(ValueError, match="no split 'test'"):
        evaluate_model("models:/wear-tiny/1", env["wear"], "test", tracking_uri=env["store"], log=False)
    with pytest.raises(ValueError, match="--compare 'no-such-run': no MLflow run"):
        evaluate_model("models:/wear-tiny/1", env["wear"], tracking_uri=env["store"], log=False,
                       compare=["no-such-run"])
    with pytest.raises(ValueError, match="--compare 'tag:ablation': expected tag:KEY=VALUE"):
        evaluate_model("models:/wear-tiny/1", env["wear"], tracking_uri=env["store"], log=False,
                       compare=["tag:ablation"])
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        evaluate_model("models:/wear-tiny/1", env["wear"], tracking_uri=env["store"], batch_size=0)


def test_a_pipe_command_recorded_as_data_path_is_never_run(env, tmp_path):
    """Whoever may write to the experiment may write the training run's data.path param: evaluation
    without --data refuses a pipe: command there (one line) and never runs it."""
    marker = tmp_path / "pwned"
    run_id, info = _training_run(env["store"], "sensorlm-poisoned", {"val/loss": [1.0]},
                                 data_path=f"pipe:touch {marker}; cat {env['wear']}/{{name}}", package=env["pkg"])
    register_version(info, "wear-poisoned", {"val/loss": 1.0})
    with pytest.raises(ValueError, match=r"recorded data.path 'pipe:touch .*not a plain path or object-store URL.*--data"):
        evaluate_model("models:/wear-poisoned/1", tracking_uri=env["store"], out_dir=tmp_path / "out", log=False)
    assert not marker.exists(), "the recorded command ran"


@pytest.mark.parametrize("location, ok", [
    ("/data/wear", True), ("data/wear", True), ("file:///data/wear", True), ("s3://bucket/wear", True),
    ("gs://bucket/wear", True), ("https://host/wear", True),
    ("pipe:cat /data/{name}", False), ("pipe:curl x", False), ("s3://bucket/{name}", False),
    ("ftp://host/x", False), ("/data/wear\npipe:rm", False), ("", False),
])
def test_data_only_locations(location, ok):
    from sensorlm.data.loader import is_data_only_location

    assert is_data_only_location(location) is ok


def test_convergence_plots_only_what_changes_and_describes_the_model(env):
    from sensorlm.tracking.history import _convergence_curves

    run_id, _ = _training_run(env["store"], "curves", {
        "train/loss": [2.0, 1.0], "val/loss": [2.1, 1.5], "val/samples": [32, 32], "val/labelled_samples": [30, 30],
        "val/majority_share": [0.2, 0.2], "val/zero_shot_acc": [0.3, 0.3], "val/zero_shot_macro_f1": [0.1, 0.4]})
    curves = _convergence_curves(MlflowClient(env["store"]), run_id)
    assert set(curves) == {"train/loss", "val/loss", "val/zero_shot_macro_f1"}


def test_options_are_one_evaluation_config():
    """evaluate_model takes the EvalConfig's fields as keywords: an unknown one or a bad value is
    one line before any model is loaded."""
    from sensorlm.typed_config import ConfigError

    with pytest.raises(ConfigError, match=r"unknown evaluation option 'batchsize' \(known: .*batch_size"):
        evaluate_model("models:/nothing/1", batchsize=8)
    with pytest.raises(ConfigError, match="batch_size must be an integer >= 1, got 0"):
        evaluate_model("models:/nothing/1", batch_size=0)
