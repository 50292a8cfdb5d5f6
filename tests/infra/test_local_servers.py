"""infra/local/servers.py: bad inputs refused before anything starts, and (slow) a real MLflow server
with a sqlite store and no auth on a free loopback port. The authenticated servers (MLflow basic
auth, Ray token auth) are tested in tests/infra/test_e2e.py, on the servers of the docs' walkthrough."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pytest
import requests

ADMIN_USER = "ci-admin"
ADMIN_PASSWORD = "ci-" + uuid.uuid4().hex  # only this test process knows it


def _listening_socket():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s



def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


# ---------------------------------------------------------------------------------------------
# refused before anything starts


def test_auth_without_admin_user_names_the_variable(servers, tmp_path, monkeypatch):
    monkeypatch.delenv("SENSORLM_MLFLOW_ADMIN_USER", raising=False)
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)
    with pytest.raises(servers.ServerError, match="SENSORLM_MLFLOW_ADMIN_USER"):
        servers.start_mlflow(tmp_path, auth=True)
    assert servers.load_state(tmp_path, "mlflow") is None
    assert not (tmp_path / "mlflow").exists(), "nothing may be written before the inputs are checked"


def test_auth_without_password_names_the_variable(servers, tmp_path, monkeypatch):
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_USER", ADMIN_USER)
    monkeypatch.delenv("SENSORLM_MLFLOW_ADMIN_PASSWORD", raising=False)
    with pytest.raises(servers.ServerError, match="SENSORLM_MLFLOW_ADMIN_PASSWORD"):
        servers.start_mlflow(tmp_path, auth=True)


def test_auth_with_short_password_is_refused(servers, tmp_path, monkeypatch):
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_USER", ADMIN_USER)
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_PASSWORD", "short")
    with pytest.raises(servers.ServerError, match=r"SENSORLM_MLFLOW_ADMIN_PASSWORD has 5 characters.*at least 12"):
        servers.start_mlflow(tmp_path, auth=True)


def test_auth_config_holds_no_credentials_and_caches_password_checks(servers, tmp_path, monkeypatch):
    from mlflow.server.auth.config import read_auth_config

    ini = tmp_path / "basic_auth.ini"
    servers.write_auth_config(ini, f"sqlite:///{tmp_path / 'auth.db'}")
    assert ini.stat().st_mode & 0o777 == 0o600
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    for var in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    cfg = read_auth_config()  # MLflow's own reader
    assert cfg.default_permission == "READ" and cfg.auth_cache_ttl_seconds == 60
    assert cfg.admin_username is None and cfg.admin_password is None


def test_port_in_use_is_named(servers, tmp_path):
    with _listening_socket() as s:
        port = s.getsockname()[1]
        with pytest.raises(servers.ServerError, match=f"--port {port}: port {port} is already in use"):
            servers.start_mlflow(tmp_path, port=port)
        with pytest.raises(servers.ServerError, match=f"--dashboard-port {port}: port {port} is already in use"):
            servers.start_ray(tmp_path, dashboard_port=port)
    assert servers.load_state(tmp_path, "ray") is None


@pytest.mark.parametrize(
    "scheme, module", [("postgresql", "psycopg"), ("postgresql+psycopg2", "psycopg2"), ("mysql", "MySQLdb")]
)
def test_database_without_driver_names_the_module(servers, tmp_path, monkeypatch, scheme, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    with pytest.raises(servers.ServerError, match=rf"driver needs the module '{module}'.*\.\[infra\]") as err:
        servers.start_mlflow(tmp_path, backend_store_uri=f"{scheme}://mlflow:s3cret-pw@db.example:5432/mlflow")
    assert "s3cret-pw" not in str(err.value), "the database password must not reach error messages"
    assert not (tmp_path / "mlflow").exists() and servers.load_state(tmp_path, "mlflow") is None


def test_unknown_database_driver_is_named(servers, tmp_path):
    with pytest.raises(servers.ServerError, match=r"postgresql\+nosuchdriver"):
        servers.start_mlflow(tmp_path, backend_store_uri="postgresql+nosuchdriver://u:pw@h/db")


def test_non_database_store_is_refused(servers, tmp_path):
    with pytest.raises(servers.ServerError, match="--backend-store-uri.*database store"):
        servers.start_mlflow(tmp_path, backend_store_uri=f"file://{tmp_path}/mlruns")


def test_long_ray_temp_dir_is_refused(servers, tmp_path):
    long_dir = "/tmp/" + "x" * 60
    with pytest.raises(servers.ServerError, match="--temp-dir.*107 bytes"):
        servers.start_ray(tmp_path, temp_dir=long_dir)
    assert not Path(long_dir).exists()


def test_bad_numbers_are_refused(servers, tmp_path):
    with pytest.raises(servers.ServerError, match="--num-cpus must be >= 1, got 0"):
        servers.start_ray(tmp_path, num_cpus=0)
    with pytest.raises(servers.ServerError, match="--workers must be >= 1, got 0"):
        servers.start_mlflow(tmp_path, workers=0)
    with pytest.raises(servers.ServerError, match="--port 70000: not a TCP port"):
        servers.start_mlflow(tmp_path, port=70000)


def test_with_mlflow_needs_a_running_mlflow(servers, tmp_path):
    with pytest.raises(servers.ServerError, match="--with-mlflow: no MLflow server is running"):
        servers.start_ray(tmp_path, with_mlflow=True)


def test_status_env_and_stop_without_servers(servers, tmp_path):
    report = servers.status(tmp_path)
    assert report == {
        "ray": {"running": False, "healthy": False, "reason": "not started (no state file)"},
        "mlflow": {"running": False, "healthy": False, "reason": "not started (no state file)"},
    }
    assert servers.stop(tmp_path) == [{"name": "ray", "result": "not started"}, {"name": "mlflow", "result": "not started"}]
    cli = [sys.executable, str(Path(servers.__file__)), ]
    out = subprocess.run([*cli, "status", "--state-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and json.loads(out.stdout)["ray"]["running"] is False
    out = subprocess.run([*cli, "env", "ray", "--state-dir", str(tmp_path)], capture_output=True, text=True)
    assert out.returncode == 1 and "ray is not running" in out.stderr


# ---------------------------------------------------------------------------------------------
# environment handed to servers and clients


def test_ray_head_env_is_explicit_about_auth(servers, tmp_path):
    inherited = {"RAY_AUTH_TOKEN": "stale", "RAY_ADDRESS": "10.0.0.1:6379", "PATH": "/usr/bin"}
    on = servers.ray_head_env(tmp_path / "tok", base=inherited)
    assert on["RAY_AUTH_MODE"] == "token" and on["RAY_AUTH_TOKEN_PATH"] == str(tmp_path / "tok")
    assert "RAY_AUTH_TOKEN" not in on and "RAY_ADDRESS" not in on
    # `ray job stop` gives drivers time to mark their MLflow run KILLED; a caller's value wins.
    assert on["RAY_JOB_STOP_WAIT_TIME_S"] == "30"
    assert on["RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S"] == "0"  # `stop` does not wait out a drain
    assert servers.ray_head_env(None, base={"RAY_JOB_STOP_WAIT_TIME_S": "5"})["RAY_JOB_STOP_WAIT_TIME_S"] == "5"
    off = servers.ray_head_env(None, base=inherited)
    assert off["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in off


def test_client_env_never_prints_secrets(servers, monkeypatch):
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_USER", ADMIN_USER)
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)
    ml = servers.ServerState("mlflow", 1, 0.0, "http://127.0.0.1:5001", {"http": 5001}, "log", "basic")
    exports = servers.shell_exports(servers.client_env(ml))
    assert ADMIN_PASSWORD not in exports
    assert 'export MLFLOW_TRACKING_PASSWORD="${SENSORLM_MLFLOW_ADMIN_PASSWORD}"' in exports
    resolved = servers.resolved_client_env(ml, base={})
    assert resolved == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5001",
        "MLFLOW_TRACKING_USERNAME": ADMIN_USER,
        "MLFLOW_TRACKING_PASSWORD": ADMIN_PASSWORD,
    }
    ray = servers.ServerState(
        "ray", 1, 0.0, "http://127.0.0.1:8266", {}, "log", "token",
        {"token_path": "/s/ray/auth_token", "gcs_address": "192.0.2.1:6380"},
    )
    exports = servers.shell_exports(servers.client_env(ray)).splitlines()
    assert "export RAY_AUTH_MODE='token'" in exports
    assert "export RAY_AUTH_TOKEN_PATH='/s/ray/auth_token'" in exports
    assert "unset RAY_AUTH_TOKEN" in exports, "a stale RAY_AUTH_TOKEN would outrank the token file"
    assert "export RAY_API_SERVER_ADDRESS='http://127.0.0.1:8266'" in exports


def test_redact_uri(servers):
    assert servers.redact_uri("postgresql://u:pw@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert servers.redact_uri("sqlite:////tmp/x.db") == "sqlite:////tmp/x.db"


# ---------------------------------------------------------------------------------------------
# stop signals only what it started


def _fake_state(servers, proc: subprocess.Popen, create_time: float):
    return servers.ServerState("mlflow", proc.pid, create_time, "http://127.0.0.1:1", {}, "log", "none")


def test_stop_never_signals_a_process_it_did_not_start(servers, tmp_path):
    # A recorded pid whose start time differs is someone else's process (pid reuse).
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        servers._save_state(tmp_path, _fake_state(servers, proc, create_time=12345.0))
        (report,) = servers.stop(tmp_path, ("mlflow",))
        assert report["result"] == "was not running"
        assert proc.poll() is None, "stop killed a process it did not start"
    finally:
        proc.kill()
        proc.wait()


def test_stop_ends_the_whole_session_it_started(servers, session_alive, tmp_path):
    # A leader that ignores SIGTERM and a child of its session: both end (SIGKILL after grace).
    proc = subprocess.Popen(
        ["bash", "-c", "trap '' TERM; sleep 30 & wait"], start_new_session=True
    )
    time.sleep(0.5)
    assert len(session_alive(proc.pid)) == 2
    servers._save_state(tmp_path, _fake_state(servers, proc, psutil.Process(proc.pid).create_time()))
    (report,) = servers.stop(tmp_path, ("mlflow",), grace_s=1.0)
    proc.wait(timeout=5)
    assert report["result"] == "stopped"
    assert session_alive(proc.pid) == []
    assert servers.load_state(tmp_path, "mlflow") is None


# ---------------------------------------------------------------------------------------------
# real servers (slow)


@pytest.mark.slow
def test_mlflow_server_sqlite_runs_artifacts_and_registry(servers, session_alive, tmp_path):
    from mlflow import MlflowClient

    st = servers.start_mlflow(tmp_path / "state", timeout_s=120)
    try:
        assert st.url.startswith("http://127.0.0.1:")
        assert requests.get(f"{st.url}/health", timeout=5).text == "OK"
        health = servers.status(tmp_path / "state", ("mlflow",))["mlflow"]
        assert health["healthy"] and health["auth"] == "none"
        client = MlflowClient(st.url)
        exp = client.create_experiment("infra-test")
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "loss", 0.5)
        (tmp_path / "note.txt").write_text("hello")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        # Artifacts go through the server (mlflow-artifacts:/) into its artifacts destination.
        assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
        stored = list((tmp_path / "state" / "mlflow" / "artifacts").rglob("note.txt"))
        assert len(stored) == 1 and stored[0].read_text() == "hello"
        # The registry needs a database store: sqlite is one.
        client.create_registered_model("infra-test-model")
        mv = client.create_model_version("infra-test-model", f"runs:/{run.info.run_id}/note.txt", run.info.run_id)
        assert mv.version == "1"
        ps_line = " ".join(psutil.Process(st.pid).cmdline())
        assert "--backend-store-uri" not in ps_line, "the store URI (maybe with a password) must not be in argv"
    finally:
        reports = servers.stop(tmp_path / "state", ("mlflow",))
    assert reports[0]["result"] == "stopped" and reports[0]["ports_still_busy"] == []
    assert servers.port_is_free(st.ports["http"])
    assert session_alive(st.pid) == []


@pytest.mark.slow
def test_mlflow_server_postgresql_store(servers, session_alive, postgres_url, tmp_path):
    """`--backend-store-uri postgresql://...`: runs, metrics and the registry live in PostgreSQL; the
    password stays out of argv, the state file and `status`."""
    import psycopg
    from mlflow import MlflowClient

    password = postgres_url.split(":")[2].split("@")[0]
    st = servers.start_mlflow(tmp_path / "state", backend_store_uri=postgres_url, timeout_s=180)
    try:
        client = MlflowClient(st.url)
        run = client.create_run(client.create_experiment("infra-pg"))
        client.log_metric(run.info.run_id, "loss", 0.25, step=3)
        client.create_registered_model("infra-pg-model")
        client.create_model_version("infra-pg-model", f"runs:/{run.info.run_id}/m", run.info.run_id)
        assert [m.value for m in client.get_metric_history(run.info.run_id, "loss")] == [0.25]

        for text in (" ".join(psutil.Process(st.pid).cmdline()), (tmp_path / "state" / "mlflow.json").read_text(),
                     json.dumps(servers.status(tmp_path / "state", ("mlflow",)))):
            assert password not in text
        assert st.details["backend_store_uri"] == postgres_url.replace(password, "***")
    finally:
        servers.stop(tmp_path / "state", ("mlflow",))
    assert session_alive(st.pid) == []
    # Read back from the database itself, with the server gone.
    with psycopg.connect(postgres_url) as conn:
        metrics = conn.execute("SELECT key, value, step FROM metrics WHERE run_uuid = %s", (run.info.run_id,))
        assert metrics.fetchall() == [("loss", 0.25, 3)]
        assert conn.execute("SELECT name, version FROM model_versions").fetchall() == [("infra-pg-model", 1)]


# MLflow with basic auth and the Ray head with token auth, job submission, logs and stop run in
# tests/infra/test_e2e.py, on the servers docs/cluster.md's walkthrough starts (one start for all).


@pytest.fixture(autouse=True)
def _no_leftover_servers(servers, tmp_path):
    """Whatever a test started under tmp_path is stopped, even when the test failed half-way."""
    yield
    for state_dir in {tmp_path, tmp_path / "state"}:
        for name in servers.SERVERS:
            if (state_dir / f"{name}.json").exists():
                try:
                    servers.stop(state_dir, (name,), grace_s=10)
                except servers.ServerError:
                    pass


def test_terminate_helper_does_not_touch_other_sessions(servers, tmp_path):
    # A process of another session survives the stop of ours even when started in between.
    ours = subprocess.Popen(["sleep", "30"], start_new_session=True)
    theirs = subprocess.Popen(["sleep", "30"], start_new_session=True)
    try:
        servers._save_state(tmp_path, _fake_state(servers, ours, psutil.Process(ours.pid).create_time()))
        servers.stop(tmp_path, ("mlflow",), grace_s=2)
        ours.wait(timeout=5)
        assert ours.returncode == -signal.SIGTERM
        assert theirs.poll() is None
    finally:
        theirs.kill()
        theirs.wait()


def test_stop_removes_only_a_ray_temp_dir_it_created(servers, tmp_path):
    finished = subprocess.Popen(["true"], start_new_session=True)
    finished.wait()
    for created, kept in (("no", True), ("yes", False)):
        temp_dir = tmp_path / f"ray-temp-{created}"
        (temp_dir / "session_latest").mkdir(parents=True)
        state = servers.ServerState(
            "ray", finished.pid, 0.0, "http://127.0.0.1:1", {}, "log", "token",
            {"temp_dir": str(temp_dir), "temp_dir_created": created, "token_path": ""},
        )
        servers._save_state(tmp_path, state)
        (report,) = servers.stop(tmp_path, ("ray",))
        assert report["result"] == "was not running"
        assert temp_dir.exists() == kept


def test_shell_wrappers_call_the_script(servers, tmp_path):
    local = Path(servers.__file__).parent
    env = {**os.environ, "SENSORLM_SERVERS_DIR": str(tmp_path), "PYTHON": sys.executable}
    health = subprocess.run(["bash", str(local / "healthcheck.sh"), "mlflow"], env=env, capture_output=True, text=True)
    assert health.returncode == 1 and json.loads(health.stdout)["mlflow"]["running"] is False
    stopped = subprocess.run(["bash", str(local / "stop_all.sh")], env=env, capture_output=True, text=True)
    assert stopped.returncode == 0 and '"result": "not started"' in stopped.stdout
    for script in ("start_ray_head.sh", "start_mlflow.sh"):
        usage = subprocess.run(["bash", str(local / script), "--help"], env=env, capture_output=True, text=True)
        assert usage.returncode == 0 and "--state-dir" in usage.stdout
