"""infra/local/servers.py: bad inputs refused before anything starts, and (slow) a real MLflow server
with a sqlite store and no auth on a free loopback port, and one with sensorlm's identities (admin,
job users, promoter; default NO_PERMISSIONS). The walkthrough's servers (MLflow basic auth, Ray
token auth) are tested in tests/infra/test_e2e.py."""

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
    # A user sees only what it was granted (per-experiment, per-model grants of the bootstrap).
    assert cfg.default_permission == "NO_PERMISSIONS" and cfg.auth_cache_ttl_seconds == 60
    assert cfg.admin_username is None and cfg.admin_password is None


def test_port_in_use_is_named(servers, tmp_path):
    with _listening_socket() as s:
        port = s.getsockname()[1]
        with pytest.raises(servers.ServerError, match=f"--port {port}: port {port} is already in use"):
            servers.start_mlflow(tmp_path, port=port, auth=False)
        with pytest.raises(servers.ServerError, match=f"--dashboard-port {port}: port {port} is already in use"):
            servers.start_ray(tmp_path, dashboard_port=port)
    assert servers.load_state(tmp_path, "ray") is None


@pytest.mark.parametrize(
    "scheme, module", [("postgresql", "psycopg"), ("postgresql+psycopg2", "psycopg2"), ("mysql", "MySQLdb")]
)
def test_database_without_driver_names_the_module(servers, tmp_path, monkeypatch, scheme, module):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed: importing it fails
    with pytest.raises(servers.ServerError, match=rf"driver needs the module '{module}'.*\.\[infra\]") as err:
        servers.start_mlflow(tmp_path, backend_store_uri=f"{scheme}://mlflow:s3cret-pw@db.example:5432/mlflow", auth=False)
    assert "s3cret-pw" not in str(err.value), "the database password must not reach error messages"
    assert not (tmp_path / "mlflow").exists() and servers.load_state(tmp_path, "mlflow") is None


def test_unknown_database_driver_is_named(servers, tmp_path):
    with pytest.raises(servers.ServerError, match=r"postgresql\+nosuchdriver"):
        servers.start_mlflow(tmp_path, backend_store_uri="postgresql+nosuchdriver://u:pw@h/db", auth=False)


def test_non_database_store_is_refused(servers, tmp_path):
    with pytest.raises(servers.ServerError, match="--backend-store-uri.*database store"):
        servers.start_mlflow(tmp_path, backend_store_uri=f"file://{tmp_path}/mlruns", auth=False)


def test_long_ray_temp_dir_is_refused(servers, tmp_path):
    long_dir = "/tmp/" + "x" * 60
    with pytest.raises(servers.ServerError, match="--temp-dir.*107 bytes"):
        servers.start_ray(tmp_path, temp_dir=long_dir)
    assert not Path(long_dir).exists()


def test_bad_numbers_are_refused(servers, tmp_path):
    with pytest.raises(servers.ServerError, match="--num-cpus must be >= 1, got 0"):
        servers.start_ray(tmp_path, num_cpus=0)
    with pytest.raises(servers.ServerError, match="--workers must be >= 1, got 0"):
        servers.start_mlflow(tmp_path, workers=0, auth=False)
    with pytest.raises(servers.ServerError, match="--port 70000: not a TCP port"):
        servers.start_mlflow(tmp_path, port=70000, auth=False)


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
    # one machine: no spot instances to watch, and Ray Train polls often enough to end runs promptly
    assert on["RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"] == "0" and on["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "0.5"
    assert servers.ray_head_env(None, base={"RAY_JOB_STOP_WAIT_TIME_S": "5"})["RAY_JOB_STOP_WAIT_TIME_S"] == "5"
    off = servers.ray_head_env(None, base=inherited)
    assert off["RAY_AUTH_MODE"] == "disabled" and "RAY_AUTH_TOKEN_PATH" not in off


def test_ray_head_env_carries_no_admin_or_promoter_credentials(servers):
    """docs/cluster.md section 0 exports the MLflow admin's login before starting the head, whose
    environment every job inherits: none of it (nor a promoter's login) may get there."""
    caller = {"PATH": "/usr/bin", "SENSORLM_MLFLOW_ADMIN_USER": ADMIN_USER, "SENSORLM_MLFLOW_ADMIN_PASSWORD": ADMIN_PASSWORD,
              "MLFLOW_AUTH_ADMIN_USERNAME": ADMIN_USER, "MLFLOW_AUTH_ADMIN_PASSWORD": ADMIN_PASSWORD,
              "MLFLOW_FLASK_SERVER_SECRET_KEY": "k" * 64}
    for login in (servers.PROMOTER_USER, ADMIN_USER):
        env = servers.ray_head_env(None, base={**caller, "MLFLOW_TRACKING_USERNAME": login, "MLFLOW_TRACKING_PASSWORD": "pw"})
        assert ADMIN_PASSWORD not in env.values() and "k" * 64 not in env.values(), sorted(env)
        assert not {k for k in env if "ADMIN" in k or k.startswith("MLFLOW_TRACKING_") or "SECRET" in k}, sorted(env)
    # a job user's login stays (it is what --with-mlflow hands the head on purpose)
    job = servers.ray_head_env(None, base={**caller, "MLFLOW_TRACKING_USERNAME": "sensorlm-job", "MLFLOW_TRACKING_PASSWORD": "pw"})
    assert job["MLFLOW_TRACKING_USERNAME"] == "sensorlm-job" and job["MLFLOW_TRACKING_PASSWORD"] == "pw"


def test_mlflow_auth_is_on_unless_turned_off(servers, tmp_path, monkeypatch):
    """`start mlflow` is authenticated by default: without the admin's variables it refuses to
    start (before writing anything); --no-auth is the explicit opt-out."""
    monkeypatch.delenv("SENSORLM_MLFLOW_ADMIN_USER", raising=False)
    assert servers.main(["start", "mlflow", "--state-dir", str(tmp_path), "--port", "70000"]) == 1
    assert servers.load_state(tmp_path, "mlflow") is None and not (tmp_path / "mlflow").exists()
    args = servers._parser().parse_args(["start", "mlflow"])
    assert args.auth is True
    assert servers._parser().parse_args(["start", "mlflow", "--no-auth"]).auth is False
    with pytest.raises(servers.ServerError, match="SENSORLM_MLFLOW_ADMIN_USER"):
        servers.start_mlflow(tmp_path)


def test_client_env_never_prints_secrets(servers, monkeypatch, tmp_path):
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_USER", ADMIN_USER)
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)
    job_password = "job-" + uuid.uuid4().hex
    (tmp_path / "job").write_text(job_password)
    ml = servers.ServerState("mlflow", 1, 0.0, "http://127.0.0.1:5001", {"http": 5001}, "log", "basic",
                             {"job_user": "sensorlm-job", "job_password_file": str(tmp_path / "job")})
    # Jobs get the job user's login by default, the password as a file read by the shell.
    exports = servers.shell_exports(servers.client_env(ml))
    assert job_password not in exports and ADMIN_PASSWORD not in exports
    assert "export MLFLOW_TRACKING_USERNAME='sensorlm-job'" in exports
    assert f'export MLFLOW_TRACKING_PASSWORD="$(cat \'{tmp_path / "job"}\')"' in exports
    assert servers.resolved_client_env(ml, base={}) == {
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5001",
        "MLFLOW_TRACKING_USERNAME": "sensorlm-job",
        "MLFLOW_TRACKING_PASSWORD": job_password,
    }
    # The admin login only when asked for, and still only as references.
    exports = servers.shell_exports(servers.client_env(ml, "admin"))
    assert ADMIN_PASSWORD not in exports
    assert 'export MLFLOW_TRACKING_PASSWORD="${SENSORLM_MLFLOW_ADMIN_PASSWORD}"' in exports
    assert servers.resolved_client_env(ml, base={}, role="admin")["MLFLOW_TRACKING_PASSWORD"] == ADMIN_PASSWORD
    with pytest.raises(servers.ServerError, match="no promoter user"):
        servers.client_env(ml, "promoter")
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

    st = servers.start_mlflow(tmp_path / "state", timeout_s=120, auth=False)
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
    st = servers.start_mlflow(tmp_path / "state", backend_store_uri=postgres_url, timeout_s=180, auth=False)
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


def _as(monkeypatch, user: str, password: str) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)


def _refused(call) -> None:
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException) as err:
        call()
    assert err.value.error_code == "PERMISSION_DENIED", err.value.message  # HTTP 403


@pytest.mark.slow
def test_mlflow_identities_job_user_promoter_and_isolation(servers, tmp_path, monkeypatch, capsys):
    """`start mlflow --auth`: default NO_PERMISSIONS, names pre-created by the admin, a job user that
    registers but may neither delete versions nor move @champion, a promoter that may, a second job
    user that cannot read the first's runs; and the sweep's honest answer to the refused alias."""
    from types import SimpleNamespace

    from mlflow import MlflowClient

    from sensorlm.tracking import promote as promotion
    from sensorlm.tracking.integrity import DIGEST_TAG, record_digest
    from sensorlm.tuning import sweep

    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_USER", ADMIN_USER)
    monkeypatch.setenv("SENSORLM_MLFLOW_ADMIN_PASSWORD", ADMIN_PASSWORD)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    st = servers.start_mlflow(tmp_path / "state", auth=True, experiments=("team-a",), models=("ident-model",))
    try:
        details = st.details
        job = (details["job_user"], Path(details["job_password_file"]).read_text())
        promoter = (details["promoter_user"], Path(details["promoter_password_file"]).read_text())
        for f in ("job_password_file", "promoter_password_file"):
            assert Path(details[f]).stat().st_mode & 0o777 == 0o600
        state_text = (tmp_path / "state" / "mlflow.json").read_text()
        assert job[1] not in state_text and promoter[1] not in state_text and ADMIN_PASSWORD not in state_text
        ps_line = " ".join(psutil.Process(st.pid).cmdline())
        assert "--app-name sensorlm-auth" in ps_line and ADMIN_PASSWORD not in ps_line
        # `env mlflow` hands out the job user, never the admin; `--as promoter` the promoter.
        cli = [sys.executable, str(Path(servers.__file__)), "env", "mlflow", "--state-dir", str(tmp_path / "state")]
        out = subprocess.run(cli, capture_output=True, text=True)
        assert out.returncode == 0 and f"MLFLOW_TRACKING_USERNAME='{job[0]}'" in out.stdout and job[1] not in out.stdout
        out = subprocess.run([*cli, "--as", "promoter"], capture_output=True, text=True)
        assert f"MLFLOW_TRACKING_USERNAME='{promoter[0]}'" in out.stdout and promoter[1] not in out.stdout

        # The job user: runs, artifacts and versions in what it was granted.
        _as(monkeypatch, *job)
        client = MlflowClient(st.url)
        exp = client.get_experiment_by_name("team-a").experiment_id
        run = client.create_run(exp)
        client.log_metric(run.info.run_id, "loss", 0.5)
        (tmp_path / "model.txt").write_text("weights")
        client.log_artifact(run.info.run_id, str(tmp_path / "model.txt"))
        source = f"runs:/{run.info.run_id}/model.txt"
        v1 = client.create_model_version("ident-model", source, run.info.run_id).version
        v2 = client.create_model_version("ident-model", source, run.info.run_id).version
        client.set_model_version_tag("ident-model", v1, "metric.loss", "0.5")  # tags: allowed
        # ... but not the things only the promoter or admin may do.
        _refused(lambda: client.set_registered_model_alias("ident-model", "champion", v1))
        _refused(lambda: client.delete_model_version("ident-model", v1))
        _refused(lambda: client.delete_run(run.info.run_id))
        _refused(lambda: client.create_registered_model("squatted-name"))  # names come from the admin
        # Renames, descriptions, and the version tags the promotion gate and the load-time check
        # rely on: MANAGE only. A job may set an audit tag its version lacks (registration writes
        # metrics and the digest, a first evaluation its scores), never change or delete one.
        _refused(lambda: client.rename_registered_model("ident-model", "renamed-model"))
        _refused(lambda: client.update_registered_model("ident-model", description="swapped"))
        _refused(lambda: client.update_model_version("ident-model", v1, description="swapped"))
        _refused(lambda: client.set_model_version_tag("ident-model", v1, "metric.loss", "0.01"))
        _refused(lambda: client.delete_model_version_tag("ident-model", v1, "metric.loss"))
        _refused(lambda: client.set_model_version_tag("ident-model", v1, "sensorlm.promoted", "champion by a job"))
        client.set_model_version_tag("ident-model", v1, "eval.zero_shot/accuracy", "0.5")
        _refused(lambda: client.set_model_version_tag("ident-model", v1, "eval.zero_shot/accuracy", "0.9"))
        client.set_model_version_tag("ident-model", v1, "notes", "first")
        client.set_model_version_tag("ident-model", v1, "notes", "second")  # other tags stay the job's to edit
        for v in (v1, v2):
            assert len(record_digest(client, "ident-model", v)) == 64  # what registration does
        _refused(lambda: client.set_model_version_tag("ident-model", v1, DIGEST_TAG, "0" * 64))
        _refused(lambda: client.delete_model_version_tag("ident-model", v1, DIGEST_TAG))
        assert client.get_model_version("ident-model", v1).tags["metric.loss"] == "0.5"
        assert client.get_registered_model("ident-model").name == "ident-model"
        with pytest.raises(promotion.PromotionRefused, match="promoter"):
            promotion.promote("ident-model", v1, tracking_uri=st.url)

        # The sweep with the job's login: no failure; the version is nominated, the parent run says so.
        parent = client.create_run(exp).info.run_id
        cfg = SimpleNamespace(registered_name="ident-model", tracking=SimpleNamespace(alias="champion"),
                              metric="loss", mode="min")
        task = SimpleNamespace(
            holdout_key=lambda: None, split_key=lambda: "val-split-1",
            register=lambda best, uri: (f"models:/ident-model/{v2}", v2),
        )
        best = SimpleNamespace(trial_id="t1", metrics={"loss": 0.25})
        model_uri, version, promoted, decision = sweep._register_best(task, cfg, best, st.url, "sweep-x", parent)
        assert (model_uri, version, promoted) == (f"models:/ident-model/{v2}", v2, False)
        command = f"python jobs/promote.py ident-model {v2}"
        assert "awaiting promotion" in decision and command in decision
        printed = capsys.readouterr().out
        assert f"promote it with the promoter's credentials: {command}" in printed
        tags = client.get_model_version("ident-model", v2).tags
        assert tags[promotion.CANDIDATE_TAG] == "champion" and "no current champion" in tags[promotion.CANDIDATE_REASON_TAG]
        assert tags[sweep.SPLIT_TAG] == "val-split-1"
        assert client.get_run(parent).data.tags["sensorlm.promotion_pending"] == command
        assert "champion" not in client.get_registered_model("ident-model").aliases

        # The promoter moves @champion (jobs/promote.py, the command the sweep printed), and again.
        env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_TRACKING_")}
        env.update(MLFLOW_TRACKING_URI=st.url, MLFLOW_TRACKING_USERNAME=promoter[0], MLFLOW_TRACKING_PASSWORD=promoter[1])
        repo = Path(servers.__file__).parents[2]
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo), env.get("PYTHONPATH")]))  # this checkout's sensorlm
        done = subprocess.run([sys.executable, *command.split()[1:]], cwd=repo, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"ident-model version {v2} is now @champion" in done.stdout
        _as(monkeypatch, *promoter)
        moved = promotion.promote("ident-model", v1, tracking_uri=st.url)
        assert moved["previous"] == v2
        promoter_client = MlflowClient(st.url)
        assert promoter_client.get_registered_model("ident-model").aliases["champion"] == v1
        # MANAGE may correct what a job may not
        promoter_client.set_model_version_tag("ident-model", v1, "metric.loss", "0.4")
        promoter_client.update_model_version("ident-model", v1, description="champion since the last sweep")
        assert promoter_client.get_model_version("ident-model", v1).tags["metric.loss"] == "0.4"

        # A second job user, granted its own experiment only: the first's runs are not its to read.
        admin = (ADMIN_USER, ADMIN_PASSWORD)
        other = servers.add_job_user(st, admin, "team-b-job", ("team-b",))
        _as(monkeypatch, "team-b-job", other.read_text())
        client_b = MlflowClient(st.url)
        _refused(lambda: client_b.get_run(run.info.run_id))
        _refused(lambda: client_b.get_experiment(exp))
        assert client_b.search_runs([exp]) == []
        client_b.create_run(client_b.get_experiment_by_name("team-b").experiment_id)  # its own: fine
        # Anonymous: nothing.
        assert requests.get(f"{st.url}/api/2.0/mlflow/experiments/search?max_results=1", timeout=10).status_code == 401
    finally:
        servers.stop(tmp_path / "state", ("mlflow",))


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


def test_auth_app_protects_the_tags_sensorlm_relies_on():
    """The server-side rule (infra/mlflow_auth) and the client side (sensorlm.tracking.integrity,
    the sweep's and evaluation's tags) name the same audit tags."""
    import importlib.util

    from sensorlm.tracking import integrity
    from sensorlm.tracking.promote import PROMOTED_TAG
    from sensorlm.tuning.gate import HOLDOUT_TAG
    from sensorlm.tuning.sweep import SPLIT_TAG

    path = Path(__file__).resolve().parents[2] / "infra" / "mlflow_auth" / "sensorlm_mlflow_auth.py"
    spec = importlib.util.spec_from_file_location("sensorlm_mlflow_auth", path)
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    assert app.AUDIT_TAGS == integrity.AUDIT_TAGS and app.AUDIT_TAG_PREFIXES == integrity.AUDIT_TAG_PREFIXES
    for key in (PROMOTED_TAG, integrity.DIGEST_TAG, HOLDOUT_TAG, SPLIT_TAG, "metric.val/loss", "eval.run_id",
                "holdout.val/zero_shot_acc"):
        assert app.is_audit_tag(key), key
    for key in ("sensorlm.champion_candidate", "sensorlm.sweep", "notes"):
        assert not app.is_audit_tag(key), key  # a job nominates and annotates its own versions
    assert app._rule("/api/2.0/mlflow/registered-models/rename", "POST") == "manage"
    assert app._rule("/ajax-api/2.0/mlflow/model-versions/update", "PATCH") == "manage"
    assert app._rule("/api/2.0/mlflow/model-versions/delete-tag", "DELETE") == "tag"
    assert app._rule("/api/2.0/mlflow/model-versions/get", "GET") is None
