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
    assert env["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"  # a finished run ends ~3 s sooner
    assert kw["logging_level"] == logging.WARNING and kw["logging_config"].log_level == "WARNING"
    init_ray({}, verbose=True)
    assert calls[1]["logging_config"].log_level == "INFO"


def test_under_ray_job_submit_it_joins_the_cluster(calls, monkeypatch):
    from sensorlm.ray_runtime import init_ray

    monkeypatch.setenv("RAY_ADDRESS", "http://10.0.0.5:8265")
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    init_ray({"A": "1"})
    (kw,) = calls
    assert "address" not in kw and "num_cpus" not in kw  # Ray reads RAY_ADDRESS itself
    assert kw["runtime_env"]["env_vars"] == {"A": "1"}  # a cluster's polling and watcher as Ray sets them


def test_a_running_local_head_tells_every_process_its_dashboard(calls, monkeypatch):
    """`infra/local/servers.py env ray` names the head's dashboard; Ray Train's placement-group
    cleaner (in a worker) needs it too, or it guesses among the Ray instances on the machine."""
    from sensorlm.ray_runtime import init_ray

    monkeypatch.setenv("RAY_ADDRESS", "192.0.2.2:6379")
    monkeypatch.setenv("RAY_API_SERVER_ADDRESS", "http://127.0.0.1:8299")
    init_ray({"A": "1"})
    assert calls[0]["runtime_env"]["env_vars"] == {"A": "1", "RAY_API_SERVER_ADDRESS": "http://127.0.0.1:8299"}
    monkeypatch.setenv("RAY_ADDRESS", "ray://10.0.0.5:10001")  # Ray Client: that address is a port-forward here
    init_ray({"A": "1"})
    assert calls[1]["runtime_env"]["env_vars"] == {"A": "1"}


def test_ray_token_auth_notice_is_dropped_unless_verbose(calls, monkeypatch):
    """Ray 2.60 warns at every local start that token authentication (its default) is on; the
    job log leaves it out, and keeps every other warning of that logger."""
    from sensorlm.ray_runtime import init_ray

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    log = logging.getLogger("ray._private.authentication.authentication_token_setup")
    monkeypatch.setattr(log, "filters", [])
    init_ray({}, verbose=True)
    assert log.filters == []
    init_ray({})
    notice = log.makeRecord(log.name, logging.WARNING, __file__, 1,
                            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled", (), None)
    other = log.makeRecord(log.name, logging.WARNING, __file__, 1, "Token authentication is disabled for this Ray cluster", (), None)
    assert not log.filter(notice) and log.filter(other)
    init_ray({})
    assert len(log.filters) == 1  # once, however many jobs start in one process
