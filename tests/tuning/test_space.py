"""The sweep config and its search space (sensorlm/tuning/space.py): bad spaces are refused
with the key named, before anything runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from sensorlm.typed_config import ConfigError, from_dict
from sensorlm.tuning.space import CONFIG_DIR, SweepConfig, load_sweep_config


def _cfg(task="sensorlm", searcher="random", **params):
    return SweepConfig(task=task, searcher=searcher, params=params)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(text)
    return path


def test_shipped_sweep_configs_load_and_build_their_tasks():
    from sensorlm.tuning.sweep import make_task

    names = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
    assert {"siglip_tiny", "projection_tiny"} <= set(names)
    for name in names:
        cfg = load_sweep_config(name)
        task = make_task(cfg)  # loads and checks the base training config against the space
        assert task.total_steps() >= 1
        assert cfg.expected_trials() >= 1


def test_defaults_pick_the_task_metric_and_its_direction():
    cfg = _cfg(lr={"type": "loguniform", "low": 1e-4, "high": 1e-2})
    assert (cfg.metric, cfg.mode) == ("val/zero_shot_acc", "max")
    cfg = _cfg(task="projection_cl", lr={"type": "choice", "values": [1e-3]})
    assert (cfg.metric, cfg.mode) == ("val/recall_at_1", "max")
    loss = SweepConfig(task="sensorlm", metric="val/loss", params={"lr": {"type": "choice", "values": [1e-3]}})
    assert loss.mode == "min"


def test_expected_trials_multiplies_grid_values_by_samples():
    cfg = SweepConfig(
        task="sensorlm", searcher="random", num_samples=3,
        params={"bias_init": {"type": "grid", "values": [-10, -5]}, "lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}},
    )
    assert cfg.expected_trials() == 6
    cfg = SweepConfig(task="sensorlm", searcher="optuna", num_samples=5, params={"lr": {"type": "loguniform", "low": 1e-4, "high": 1e-2}})
    assert cfg.expected_trials() == 5


def test_param_space_maps_types_to_tune_domains():
    from ray.tune.search.sample import Categorical, Float

    cfg = SweepConfig(
        task="sensorlm", searcher="random",
        params={
            "temperature_init": {"type": "loguniform", "low": 1.0, "high": 30.0},
            "bias_init": {"type": "uniform", "low": -15.0, "high": -5.0},
            "learn_temperature": {"type": "choice", "values": [True, False]},
            "lr": {"type": "grid", "values": [1e-3, 3e-3]},
        },
    )
    space = cfg.param_space()
    assert isinstance(space["temperature_init"], Float) and space["temperature_init"].lower == 1.0
    assert isinstance(space["bias_init"], Float) and space["bias_init"].upper == -5.0
    assert isinstance(space["learn_temperature"], Categorical)
    assert space["lr"] == {"grid_search": [1e-3, 3e-3]}


# --- bad spaces -------------------------------------------------------------------------------


def test_min_logit_scale_above_max_is_refused_naming_the_keys():
    with pytest.raises(ConfigError, match=r"params\.min_logit_scale.*max_logit_scale"):
        _cfg(
            task="projection_cl",
            min_logit_scale={"type": "grid", "values": [1.0, 20.0]},
            max_logit_scale={"type": "grid", "values": [10.0, 50.0]},
        )
    with pytest.raises(ConfigError, match=r"params\.min_logit_scale"):
        _cfg(
            task="projection_cl",
            min_logit_scale={"type": "uniform", "low": 5.0, "high": 30.0},
            max_logit_scale={"type": "uniform", "low": 10.0, "high": 100.0},
        )
    ok = _cfg(
        task="projection_cl",
        min_logit_scale={"type": "grid", "values": [1.0, 10.0]},
        max_logit_scale={"type": "grid", "values": [10.0, 50.0]},
    )
    assert ok.expected_trials() == 4


def test_temperature_bounds_are_searchable_and_refused_when_crossed():
    ok = _cfg(temperature_min={"type": "grid", "values": [0.5, 2.0]}, temperature_max={"type": "grid", "values": [5.0]})
    assert ok.expected_trials() == 2
    with pytest.raises(ConfigError, match=r"params\.temperature_min: values up to 8\.0 exceed temperature_max values "
                                          r"as low as 5\.0; every trial needs temperature_min <= temperature_max"):
        _cfg(temperature_min={"type": "grid", "values": [0.5, 8.0]}, temperature_max={"type": "grid", "values": [5.0]})


def test_min_logit_scale_above_the_base_configs_fixed_max_is_refused():
    from sensorlm.tuning.trials import TrainSweep

    cfg = SweepConfig(
        task="projection_cl", base_overrides=["model.overrides.max_logit_scale=10.0"],
        params={"min_logit_scale": {"type": "grid", "values": [2.0, 20.0]}},
    )
    with pytest.raises(ConfigError, match=r"params\.min_logit_scale.*fixed at 10\.0"):
        TrainSweep(cfg)
    cfg = SweepConfig(
        task="projection_cl", base_overrides=["model.overrides.min_logit_scale=5.0"],
        params={"max_logit_scale": {"type": "grid", "values": [2.0, 20.0]}},
    )
    with pytest.raises(ConfigError, match=r"min_logit_scale is fixed at 5\.0"):
        TrainSweep(cfg)


@pytest.mark.parametrize(
    "task,name,spec",
    [
        ("sensorlm", "temperature_init", {"type": "grid", "values": [10.0, 0.0]}),
        ("sensorlm", "temperature_init", {"type": "uniform", "low": -1.0, "high": 10.0}),
        ("projection_cl", "max_logit_scale", {"type": "choice", "values": [-5.0]}),
        ("projection_cl", "min_logit_scale", {"type": "grid", "values": [0.0, 1.0]}),
        ("projection_cl", "logit_scale_init", {"type": "uniform", "low": -2.0, "high": 2.0}),
    ],
)
def test_non_positive_scale_is_refused_naming_the_key(task, name, spec):
    with pytest.raises(ConfigError, match=rf"params\.{name}: must be > 0 \(a scale\)"):
        _cfg(task=task, **{name: spec})


def test_non_positive_learning_rate_is_refused():
    with pytest.raises(ConfigError, match=r"params\.lr: must be > 0 \(a learning rate\)"):
        _cfg(lr={"type": "grid", "values": [1e-3, 0]})
    with pytest.raises(ConfigError, match=r"params\.lr: type loguniform needs low > 0"):
        _cfg(lr={"type": "loguniform", "low": 0.0, "high": 1e-2})


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ConfigError, match=r"params\.temprature_init: unknown search parameter for task sensorlm"):
        _cfg(temprature_init={"type": "grid", "values": [10.0]})
    with pytest.raises(ConfigError, match=r"params\.max_logit_scale: unknown search parameter for task sensorlm"):
        _cfg(max_logit_scale={"type": "grid", "values": [10.0]})
    with pytest.raises(ConfigError, match=r"unknown config key params\.lr\.lo\b"):
        _cfg(lr={"type": "uniform", "lo": 1e-4, "high": 1e-2})
    path = _write(tmp_path, "task: sensorlm\nsercher: grid\nparams:\n  lr: {type: grid, values: [0.001]}\n")
    with pytest.raises(ConfigError, match=r"unknown config key sercher"):
        load_sweep_config(str(path))
    path = _write(tmp_path, "task: sensorlm\nasha: {grace: 2}\nparams:\n  lr: {type: grid, values: [0.001]}\n")
    with pytest.raises(ConfigError, match=r"unknown config key asha\.grace\b"):
        load_sweep_config(str(path))
    path = _write(tmp_path, "task: sensorlm\nparams:\n  lr: {type: grid, values: [0.001]}\n")
    with pytest.raises(ConfigError, match=r"unknown config key num_sample\b"):
        load_sweep_config(str(path), ["num_sample=3"])


def test_a_bad_base_override_is_named_before_anything_runs(tmp_path):
    from sensorlm.tuning.sweep import run_sweep

    path = _write(tmp_path, "task: sensorlm\nparams:\n  lr: {type: grid, values: [0.001]}\n")
    cfg = load_sweep_config(str(path), [f"storage_path={tmp_path / 'sweeps'}", "name=bad", "base.optim.lrr=1"])
    with pytest.raises(ConfigError, match=r"unknown config key optim\.lrr"):
        run_sweep(cfg)
    assert not (tmp_path / "sweeps").exists()  # no sweep folder, no MLflow run, no Ray


def test_spec_shapes_and_searcher_compatibility():
    with pytest.raises(ConfigError, match=r"params\.lr: type grid needs a non-empty 'values' list"):
        _cfg(lr={"type": "grid", "values": []})
    with pytest.raises(ConfigError, match=r"params\.bias_init: type uniform needs finite low < high"):
        _cfg(bias_init={"type": "uniform", "low": 1.0, "high": -1.0})
    with pytest.raises(ConfigError, match=r"params\.bias_init: type uniform takes 'low' and 'high', not 'values'"):
        _cfg(bias_init={"type": "uniform", "values": [1.0], "low": 0.0, "high": 1.0})
    with pytest.raises(ConfigError, match=r"params\.lr: searcher grid needs type grid"):
        _cfg(searcher="grid", lr={"type": "loguniform", "low": 1e-4, "high": 1e-2})
    with pytest.raises(ConfigError, match=r"params\.lr: searcher optuna cannot take type grid"):
        _cfg(searcher="optuna", lr={"type": "grid", "values": [1e-3]})
    with pytest.raises(ConfigError, match=r"params\.learn_temperature: values must be true or false"):
        _cfg(learn_temperature={"type": "grid", "values": [True, "no"]})
    with pytest.raises(ConfigError, match=r"params\.learn_temperature: a true/false parameter takes type grid or choice"):
        _cfg(learn_temperature={"type": "uniform", "low": 0.0, "high": 1.0})
    with pytest.raises(ConfigError, match=r"params\.bias_init: values must be finite numbers"):
        _cfg(bias_init={"type": "grid", "values": [math.inf]})
    with pytest.raises(ConfigError, match=r"params: give at least one parameter"):
        SweepConfig(task="sensorlm", params={})


def test_other_fields_are_checked():
    lr = {"lr": {"type": "grid", "values": [1e-3]}}
    with pytest.raises(ConfigError, match=r"metric 'val/acc' is not reported by task sensorlm"):
        SweepConfig(task="sensorlm", metric="val/acc", params=lr)
    with pytest.raises(ConfigError, match=r"num_samples must be >= 1"):
        SweepConfig(task="sensorlm", num_samples=0, params=lr)
    with pytest.raises(ConfigError, match=r"max_concurrent_trials must be >= 1"):
        SweepConfig(task="sensorlm", max_concurrent_trials=0, params=lr)
    with pytest.raises(ConfigError, match=r"name 'a/b'"):
        SweepConfig(task="sensorlm", name="a/b", params=lr)
    with pytest.raises(ConfigError, match=r"asha\.max_t \(1\) must be >= asha\.grace_period \(2\)"):
        from_dict(SweepConfig, dict(task="sensorlm", asha={"grace_period": 2, "max_t": 1}, params=lr))
    with pytest.raises(ConfigError, match=r"asha\.reduction_factor must be > 1"):
        from_dict(SweepConfig, dict(task="sensorlm", asha={"reduction_factor": 1}, params=lr))
    with pytest.raises(ConfigError, match=r"resources\.cpus_per_worker must be > 0"):
        from_dict(SweepConfig, dict(task="sensorlm", resources={"cpus_per_worker": 0}, params=lr))
    with pytest.raises(ConfigError, match=r"resources\.trial_cpus must be > 0, got 0"):  # Ray Tune cannot place it
        from_dict(SweepConfig, dict(task="sensorlm", resources={"trial_cpus": 0}, params=lr))


def test_asha_horizon_beyond_the_trials_steps_is_refused():
    from sensorlm.tuning.trials import TrainSweep

    cfg = from_dict(SweepConfig, dict(
        task="sensorlm", base_overrides=["steps=10", "optim.warmup_steps=2"], asha={"grace_period": 2, "max_t": 20},
        params={"lr": {"type": "grid", "values": [1e-3]}},
    ))
    with pytest.raises(ConfigError, match=r"asha\.max_t \(20\) exceeds the trials' steps \(10\)"):
        TrainSweep(cfg)


def test_yaml_and_overrides(tmp_path):
    path = _write(
        tmp_path,
        "task: projection_cl\nname: p\nsearcher: grid\nasha: {grace_period: 2}\nbase_overrides: [steps=8]\n"
        "params:\n  lr: {type: grid, values: [1e-3, 3e-3]}\n",  # YAML 1.1 reads 1e-3 as a string
    )
    cfg = load_sweep_config(
        str(path),
        ["asha.max_t=8", "base.eval_every=2", "params.max_logit_scale={type: grid, values: [10.0, 50.0]}"],
    )
    assert cfg.params["lr"].values == [1e-3, 3e-3]
    assert cfg.asha.grace_period == 2 and cfg.asha.max_t == 8
    assert cfg.base_overrides == ["steps=8", "eval_every=2"]
    assert cfg.params["max_logit_scale"].values == [10.0, 50.0]
    assert cfg.expected_trials() == 4
    with pytest.raises(ConfigError, match=r"neither a YAML file nor a known sweep"):
        load_sweep_config("no_such_sweep")
