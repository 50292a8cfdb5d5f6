"""How jobs start Ray (sensorlm/ray_runtime.py): a new local Ray of their own even beside another
instance on the machine, the cluster under `ray job submit`, Ray's chatter at WARNING."""

import logging

import pytest


@pytest.fixture()
def calls(monkeypatch):
    import ray

    seen = []

    class Ctx:
        dashboard_url = None

    def fake_init(**kwargs):
        seen.append(kwargs)
        Ctx.dashboard_url = f"127.0.0.1:{kwargs.get('dashboard_port')}"
        return Ctx

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", fake_init)
    return seen


def test_a_local_ray_of_its_own_with_a_known_dashboard_and_quiet_logs(calls, monkeypatch):
    from sensorlm.ray_runtime import init_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    init_ray({"A": "1"}, num_cpus=2)
    (kw,) = calls
    # address="local": a new instance, never "Found multiple active Ray instances"
    assert kw["address"] == "local" and kw["num_cpus"] == 2 and kw["include_dashboard"]
    env = kw["runtime_env"]["env_vars"]
    assert env["A"] == "1" and env["RAY_API_SERVER_ADDRESS"] == f"http://127.0.0.1:{kw['dashboard_port']}"
    assert env["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0"  # no spot instances on a laptop
    assert kw["logging_level"] == logging.WARNING and kw["logging_config"].log_level == "WARNING"
    init_ray({}, verbose=True)
    assert calls[1]["logging_config"].log_level == "INFO"


def test_under_ray_job_submit_it_joins_the_cluster(calls, monkeypatch):
    from sensorlm.ray_runtime import init_ray

    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    init_ray({"A": "1"})
    (kw,) = calls
    assert "address" not in kw and "num_cpus" not in kw  # Ray reads RAY_ADDRESS itself
    assert kw["runtime_env"]["env_vars"] == {"A": "1"}
