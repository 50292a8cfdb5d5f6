"""The driver's checks and bookkeeping that need no Ray run: data against config, Ctrl-C, reruns."""

import importlib.util
from pathlib import Path

import pytest

from sensorlm.typed_config import ConfigError
from sensorlm.training.config import load_train_config

_spec = importlib.util.spec_from_file_location(
    "pipeline_fixtures", Path(__file__).parents[1] / "data" / "pipeline_fixtures.py")
_fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fx)


@pytest.fixture()
def no_ray(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))


def _cfg(tmp_path, data, *more):
    return load_train_config("sensorlm_tiny", [f"data.path={data}", "data.synthetic=null",
                                               f"tracking.tracking_uri=sqlite:///{tmp_path / 'm.db'}",
                                               f"storage_path={tmp_path / 'ray'}", "tracking.system_metrics=false",
                                               "checkpoint.best_metric=null", *more])


def test_empty_or_too_small_validation_is_refused_before_ray(tmp_path, no_ray):
    from sensorlm.training.trainer import train

    data = tmp_path / "noval"
    _fx.write_wearable(data, n=16, val_every=0)  # no 'val' split at all
    with pytest.raises(ConfigError, match=r"the 'val' split has 0 samples, fewer than the 1 worker \("):
        train(_cfg(tmp_path, data))
    data = tmp_path / "oneval"
    _fx.write_wearable(data, n=16, val_every=16)  # one val sample for two workers
    with pytest.raises(ConfigError, match=r"the 'val' split has 1 samples, fewer than the 2 workers"):
        train(_cfg(tmp_path, data, "scaling.num_workers=2"))


def test_ctrl_c_leaves_the_run_killed_and_a_finished_run_is_not_retrained(tmp_path, monkeypatch, capsys):
    import ray
    from mlflow.tracking import MlflowClient

    from sensorlm.training import trainer

    data = tmp_path / "w"
    _fx.write_wearable(data, n=24, val_every=3)

    class Interrupted:
        def fit(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(trainer, "make_torch_trainer", lambda *a, **k: Interrupted())
    cfg = _cfg(tmp_path, data, "name=ctrl-c")
    with pytest.raises(KeyboardInterrupt):
        trainer.train(cfg)
    client = MlflowClient(cfg.tracking.tracking_uri)
    run = client.search_runs([client.get_experiment_by_name("sensorlm").experiment_id])[0]
    assert run.info.status == "KILLED" and "Ctrl-C" in run.data.tags["sensorlm.stopped"]
    assert "rerun with name=ctrl-c to resume" in capsys.readouterr().out

    # a run that FINISHED at >= the asked steps is reported, not trained or registered again
    client.set_tag(run.info.run_id, "sensorlm.final_step", str(cfg.steps))
    client.set_tag(run.info.run_id, "sensorlm.model_uri", "models:/sensorlm/3")
    client.set_terminated(run.info.run_id, "FINISHED")
    monkeypatch.setattr(trainer, "make_torch_trainer", lambda *a, **k: pytest.fail("trained again"))
    result = trainer.train(cfg)
    assert (result.run_id, result.model_uri, result.model_version) == (run.info.run_id, "models:/sensorlm/3", "3")
    assert f"already finished at step {cfg.steps}" in capsys.readouterr().out
    # more steps than it finished with: it continues (here, the fake trainer is asked to fit)
    with pytest.raises(pytest.fail.Exception, match="trained again"):
        trainer.train(_cfg(tmp_path, data, "name=ctrl-c", f"steps={cfg.steps + 10}"))


def test_validation_parts_are_the_even_and_odd_val_shards(tmp_path):
    """A sweep selects on the even-numbered val shards and crowns on the odd-numbered ones: each
    part is checked on its own before Ray starts."""
    from sensorlm.data.loader import make_loader, select_shards
    from sensorlm.training.model_from_data import check_validation_split

    data = tmp_path / "w"
    manifest = _fx.write_wearable(data, n=30, max_count=4, val_every=3)  # val: 10 samples in shards 4, 4, 2
    even, odd = select_shards(manifest, "val", "even"), select_shards(manifest, "val", "odd")
    assert [s["samples"] for s in even] == [4, 2] and [s["samples"] for s in odd] == [4]
    keys = {part: {k for b in make_loader(data, "val", 8, shuffle=False, num_workers=0, shard_part=part) for k in b["key"]}
            for part in ("even", "odd")}
    assert len(keys["even"]) == 6 and len(keys["odd"]) == 4 and not keys["even"] & keys["odd"]
    check_validation_split(_cfg(tmp_path, data, "data.val_part=holdout", "scaling.num_workers=4"), manifest)
    with pytest.raises(ConfigError, match=r"odd-numbered shards: data.val_part=holdout\) has 4 samples, fewer than the 5"):
        check_validation_split(_cfg(tmp_path, data, "data.val_part=holdout", "scaling.num_workers=5"), manifest)


def test_the_package_of_a_checkpoint_is_found_where_it_lies_or_is_none(tmp_path):
    """A local checkpoint's package is its folder; one without a package (or no checkpoint) is
    None, and train() then says that nothing was registered."""
    from ray.train import Checkpoint

    from sensorlm.training.trainer import local_package, package_of

    bare = tmp_path / "checkpoint_0"
    (bare / "ds").mkdir(parents=True)
    assert package_of(Checkpoint.from_directory(str(bare))) is None and package_of(None) is None
    (bare / "package").mkdir()
    (bare / "package" / "model.safetensors").write_bytes(b"x")
    ckpt = Checkpoint.from_directory(str(bare))
    assert package_of(ckpt) == f"{bare}/package"
    with local_package(ckpt) as local:
        assert local == f"{bare}/package"


def test_the_start_timeout_is_one_runs_and_a_later_run_gets_its_own_or_the_users(monkeypatch):
    import os

    from sensorlm.training import trainer

    monkeypatch.delenv(trainer.START_TIMEOUT_VAR, raising=False)
    monkeypatch.setattr(trainer, "_USER_START_TIMEOUT", None)
    trainer.set_start_timeout(8.0)
    assert os.environ[trainer.START_TIMEOUT_VAR] == "8.0"
    trainer.set_start_timeout(None)  # the next run sets none: Ray's default again
    assert trainer.START_TIMEOUT_VAR not in os.environ
    monkeypatch.setattr(trainer, "_USER_START_TIMEOUT", "120")
    trainer.set_start_timeout(8.0)
    trainer.set_start_timeout(None)
    assert os.environ[trainer.START_TIMEOUT_VAR] == "120"
