"""Issue 8 end to end, on real servers on free loopback ports (slow).

One MLflow server (basic auth, sqlite) and one Ray head (token auth), started once for the module
by docs/cluster.md's own `start` block, serve every test here:

- the walkthrough of docs/cluster.md section 0, block by block as a reader runs it (doc_walkthrough.py);
- both servers refuse requests without credentials (401) and accept the right ones;
- `ray job submit --working-dir .` of a short training job ends SUCCEEDED, `ray job logs` shows
  its progress, and its run, metrics, artifacts and registered model version are read back over HTTP;
- `ray job stop` on a long job stops its workers and leaves its MLflow run KILLED;
- a run across two Ray nodes (`ray.cluster_utils.Cluster`) puts one worker on each node, and the
  two read different shards;
- the `stop` block ends every process the servers started and frees their ports.
"""

from __future__ import annotations

import json
import math
import stat
import subprocess
import time
import uuid
from pathlib import Path

import numpy as np
import psutil
import pytest
import requests

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
DATA_DIR = REPO_ROOT / "data" / "wearable_tiny"  # where the walkthrough's jobs generate the tiny dataset
LONG_RUN = "loopback-long"


def _out(result: subprocess.CompletedProcess, tail: int = 6000) -> str:
    return (result.stdout + "\n" + result.stderr)[-tail:]



@pytest.fixture(scope="module")
def loopback(walkthrough, tmp_path_factory):
    """The walkthrough's shell session after its `start` block: MLflow (auth) and a Ray head up."""
    home_token = Path.home() / ".ray" / "auth_token"
    session = walkthrough.DocSession(tmp_path_factory.mktemp("loopback") / "state")
    session.home_token_before = home_token.read_bytes() if home_token.exists() else None
    started = session.run("start", timeout_s=300)
    try:
        assert started.returncode == 0, _out(started)
        session.start_stdout = started.stdout
        yield session
    finally:
        session.stop_servers()


@pytest.fixture
def mlflow_client(loopback, monkeypatch):
    """An MlflowClient of the loopback server with the credentials the start block exported (the job user)."""
    from mlflow import MlflowClient

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.setenv(var, loopback.env[var])
    return MlflowClient(loopback.env["MLFLOW_TRACKING_URI"])


def _runs_named(client, name: str):
    experiment = client.get_experiment_by_name("sensorlm")
    if experiment is None:
        return []
    return client.search_runs([experiment.experiment_id], f"attributes.run_name = '{name}'")


# ---------------------------------------------------------------------------------------------
# the servers the start block left running


def test_start_block_leaves_both_servers_healthy_with_auth(loopback, servers):
    state_dir = loopback.state_dir
    report = servers.status(state_dir)
    assert report["mlflow"]["healthy"] and report["mlflow"]["auth"] == "basic", report
    assert report["ray"]["healthy"] and report["ray"]["auth"] == "token" and report["ray"]["ray_version"] == "2.60.0"
    assert report["mlflow"]["unauthenticated_status"] == 401 and report["ray"]["unauthenticated_status"] == 401
    assert '"unauthenticated_status": 401' in loopback.start_stdout  # what `servers.py status` printed

    # The head hands the MLflow client settings to its jobs (it runs them as its children), and
    # gives drivers time to mark their run KILLED on `ray job stop`.
    ray_state, mlflow_state = servers.load_state(state_dir, "ray"), servers.load_state(state_dir, "mlflow")
    head_env = psutil.Process(ray_state.pid).environ()
    assert head_env["MLFLOW_TRACKING_URI"] == mlflow_state.url
    # ... as the job user (register, no alias moves, no deletes), never the admin.
    assert head_env["MLFLOW_TRACKING_USERNAME"] == mlflow_state.details["job_user"] == "sensorlm-job"
    assert head_env["MLFLOW_TRACKING_PASSWORD"] != loopback.env["SENSORLM_MLFLOW_ADMIN_PASSWORD"]
    assert head_env["RAY_JOB_STOP_WAIT_TIME_S"] == "30"
    assert head_env["RAY_AUTH_MODE"] == "token" and head_env["RAY_AUTH_TOKEN_PATH"] == ray_state.details["token_path"]
    # MLflow runs without its job-execution workers (about 1.5 GB less).
    assert psutil.Process(mlflow_state.pid).environ()["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"


def test_mlflow_basic_auth_refuses_anonymous_and_accepts_users(loopback, servers, monkeypatch):
    from mlflow import MlflowClient

    admin = (loopback.env["SENSORLM_MLFLOW_ADMIN_USER"], loopback.env["SENSORLM_MLFLOW_ADMIN_PASSWORD"])
    st = servers.load_state(loopback.state_dir, "mlflow")
    api = f"{st.url}/api/2.0/mlflow"
    search = f"{api}/experiments/search"
    assert requests.get(search, params={"max_results": 1}, timeout=10).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=(admin[0], "wrong-password-123"), timeout=10).status_code == 401
    assert requests.get(search, params={"max_results": 1}, auth=admin, timeout=10).status_code == 200
    # docs/cluster.md step 4 creates the training jobs' user exactly like this.
    trainer_password = uuid.uuid4().hex
    created = requests.post(
        f"{api}/users/create", json={"username": "trainer", "password": trainer_password}, auth=admin, timeout=10
    )
    assert created.status_code == 200, created.text
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "trainer")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", trainer_password)
    client = MlflowClient(st.url)
    run = client.create_run(client.create_experiment("infra-auth-test"))
    client.log_param(run.info.run_id, "p", "1")
    assert client.get_run(run.info.run_id).data.params == {"p": "1"}
    # The auth config is private and holds no credential; neither does the state file or argv.
    ini = Path(st.details["auth_config"])
    assert stat.S_IMODE(ini.stat().st_mode) == 0o600
    assert admin[1] not in ini.read_text() and f"= {admin[0]}" not in ini.read_text()
    assert admin[1] not in (loopback.state_dir / "mlflow.json").read_text()
    assert "--backend-store-uri" not in " ".join(psutil.Process(st.pid).cmdline())


def test_ray_job_server_wants_the_token(loopback, servers):
    st = servers.load_state(loopback.state_dir, "ray")
    token_path = Path(st.details["token_path"])
    assert stat.S_IMODE(token_path.stat().st_mode) == 0o600
    token = token_path.read_text().strip()
    version = f"{st.url}/api/version"
    assert requests.get(version, timeout=10).status_code == 401
    assert requests.get(version, headers={"Authorization": "Bearer not-the-token"}, timeout=10).status_code == 403
    ok = requests.get(version, headers={"Authorization": f"Bearer {token}"}, timeout=10)
    assert ok.status_code == 200 and ok.json()["ray_version"] == "2.60.0"
    # The `ray` CLI without the token is refused too.
    no_token = {k: v for k, v in loopback.env.items() if not k.startswith("RAY_AUTH")}
    no_token["RAY_AUTH_MODE"] = "disabled"
    refused = subprocess.run(["ray", "job", "list"], env=no_token, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "Authentication required" in refused.stdout + refused.stderr


# ---------------------------------------------------------------------------------------------
# the walkthrough's jobs


def test_refuse_block_without_credentials_401_with_them_a_job_runs(loopback):
    result = loopback.run("refuse", timeout_s=300)
    assert result.returncode == 0, _out(result)
    lines = result.stdout.splitlines()
    assert lines[:2] == ["401", "401"], "both servers must refuse a request without credentials"
    assert f"job sees MLflow at {loopback.env['MLFLOW_TRACKING_URI']} as sensorlm-job" in lines, _out(result)
    assert "admin variables in the job: none" in lines, _out(result)


def test_a_job_environment_holds_no_admin_or_promoter_secret(loopback):
    """The start block exported the MLflow admin's password before starting the head: no variable
    of a submitted job holds it (compared by digest, so the job never prints a secret)."""
    import hashlib

    admin_password = loopback.env["SENSORLM_MLFLOW_ADMIN_PASSWORD"]
    mlflow_state = json.loads((loopback.state_dir / "mlflow.json").read_text())
    promoter_password = Path(mlflow_state["details"]["promoter_password_file"]).read_text().strip()
    script = ("import hashlib, json, os; print('ENV', json.dumps({k: hashlib.sha256(v.encode()).hexdigest() "
              "for k, v in os.environ.items()}))")
    done = subprocess.run(["ray", "job", "submit", "--", "python", "-c", script], env=loopback.env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, _out(done)
    line = next(x for x in done.stdout.splitlines() if x.startswith("ENV "))
    digests = json.loads(line[4:])
    assert digests["MLFLOW_TRACKING_USERNAME"] == hashlib.sha256(b"sensorlm-job").hexdigest()
    for secret in (admin_password, promoter_password):
        assert hashlib.sha256(secret.encode()).hexdigest() not in digests.values()
    assert not [k for k in digests if "ADMIN" in k or k == "MLFLOW_FLASK_SERVER_SECRET_KEY"]


def test_train_block_job_succeeds_logs_progress_and_registers_a_model(loopback, servers, mlflow_client, tmp_path):
    result = loopback.run("train", timeout_s=900)
    out = result.stdout + result.stderr
    assert result.returncode == 0, _out(result)
    assert "Job 'loopback-demo' succeeded" in out
    assert _job_status(loopback, servers, "loopback-demo") == "SUCCEEDED"
    # `ray job logs | grep [sensorlm]`: the progress lines of rank 0, validation, registration.
    logged = [line for line in result.stdout.splitlines() if "[sensorlm]" in line]
    for step in (5, 10, 15, 20):
        assert any(f"[sensorlm] step {step}/20 loss " in line and "samples/s" in line and "ETA" in line for line in logged), out[-4000:]
    assert any("[sensorlm] validation val/loss" in line for line in logged)
    assert any("[sensorlm] registered model sensorlm version 1" in line for line in logged)
    registered = [line.split() for line in result.stdout.splitlines() if line.startswith("registered: ")]
    assert len(registered) == 1, out[-4000:]
    _, name, _, version, _, run_id, status = registered[0]
    assert (name, version, status) == ("sensorlm", "1", "READY")

    # Everything again over HTTP, through the MLflow client.
    run = mlflow_client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "loopback-demo"
    assert run.data.tags["sensorlm.run_name"] == "loopback-demo"
    assert run.data.params["steps"] == "20" and run.data.params["data.synthetic"] == "tiny"
    losses = sorted((m.step, m.value) for m in mlflow_client.get_metric_history(run_id, "train/loss"))
    assert [s for s, _ in losses] == [5, 10, 15, 20] and all(math.isfinite(v) for _, v in losses)
    assert 0.0 <= run.data.metrics["val/zero_shot_acc"] <= 1.0
    mv = mlflow_client.get_model_version("sensorlm", "1")
    assert mv.run_id == run_id and mv.status == "READY"
    placement = json.loads(
        Path(mlflow_client.download_artifacts(run_id, "data/shards_by_rank.json", str(tmp_path))).read_text()
    )["ranks"]
    assert [r["rank"] for r in placement] == [0, 1]
    assert placement[0]["train_shards"] and placement[1]["train_shards"]
    assert not set(placement[0]["train_shards"]) & set(placement[1]["train_shards"])

    # The registered version loads and embeds (artifacts come back through the server), after
    # its files were checked against the digest the job recorded when it registered them.
    from sensorlm.tracking import load_model
    from sensorlm.tracking.integrity import DIGEST_TAG

    assert len(mv.tags[DIGEST_TAG]) == 64
    model = load_model("models:/sensorlm/1", loopback.env["MLFLOW_TRACKING_URI"])
    text_emb = np.asarray(model.predict({"text": ["A day with running: a run.", "A quiet day overall."]}))
    assert text_emb.shape[0] == 2 and np.all(np.isfinite(text_emb))
    np.testing.assert_allclose(np.linalg.norm(text_emb, axis=1), 1.0, atol=1e-5)


def _job_status(loopback, servers, submission_id: str) -> str:
    """The job's status from the job server's REST API (with the token)."""
    st = servers.load_state(loopback.state_dir, "ray")
    resp = requests.get(f"{st.url}/api/jobs/{submission_id}", headers=servers.ray_auth_headers(st), timeout=30)
    resp.raise_for_status()
    return resp.json()["status"]


def _alive_train_workers(loopback, servers) -> list[dict]:
    st = servers.load_state(loopback.state_dir, "ray")
    resp = requests.get(
        f"{st.url}/api/v0/actors", params={"limit": 1000, "detail": "false"}, headers=servers.ray_auth_headers(st),
        timeout=30,
    )
    resp.raise_for_status()
    actors = resp.json()["data"]["result"]["result"]
    return [a for a in actors if a.get("class_name") == "RayTrainWorker" and a.get("state") == "ALIVE"]


def test_stop_long_job_stops_its_workers_and_marks_the_run_killed(loopback, servers, mlflow_client):
    submitted = loopback.run("submit-long", timeout_s=300)
    assert submitted.returncode == 0, _out(submitted)
    # Stop it only once it trains: its MLflow run exists and rank 0 has logged a loss.
    deadline, run = time.monotonic() + 600, None
    while time.monotonic() < deadline:
        runs = _runs_named(mlflow_client, LONG_RUN)
        if runs and mlflow_client.get_metric_history(runs[0].info.run_id, "train/loss"):
            run = runs[0]
            break
        time.sleep(3)
    assert run is not None, "the long job never logged a loss:\n" + subprocess.run(
        ["ray", "job", "logs", LONG_RUN], env=loopback.env, capture_output=True, text=True, timeout=120
    ).stdout[-4000:]
    assert run.info.status == "RUNNING"
    assert len(_alive_train_workers(loopback, servers)) == 2

    stopped = loopback.run("stop-long", timeout_s=300)
    assert stopped.returncode == 0, _out(stopped)
    assert f"Job '{LONG_RUN}' was stopped" in stopped.stdout + stopped.stderr
    assert f"run {LONG_RUN} KILLED" in stopped.stdout.splitlines(), _out(stopped)

    assert _job_status(loopback, servers, LONG_RUN) == "STOPPED"
    after = mlflow_client.get_run(run.info.run_id)
    assert after.info.status == "KILLED" and after.info.end_time is not None
    # Nothing trains any more: no worker actor alive, and the loss curve stops growing.
    deadline = time.monotonic() + 60
    while _alive_train_workers(loopback, servers) and time.monotonic() < deadline:
        time.sleep(2)
    assert _alive_train_workers(loopback, servers) == []
    logged = len(mlflow_client.get_metric_history(run.info.run_id, "train/loss"))
    time.sleep(3)
    assert len(mlflow_client.get_metric_history(run.info.run_id, "train/loss")) == logged
    assert mlflow_client.get_run(run.info.run_id).info.status == "KILLED"


# ---------------------------------------------------------------------------------------------
# two Ray nodes


def test_two_ray_nodes_one_worker_each_read_different_shards(loopback, mlflow_client, ray_cluster_env, tmp_path):
    """The real `train()` on a two-node `ray.cluster_utils.Cluster` (one CPU per node, one CPU per
    worker, so Ray must put a worker on each node), logging to the loopback MLflow server."""
    import ray
    from ray.cluster_utils import Cluster

    from sensorlm.training.config import load_train_config
    from sensorlm.training.trainer import train

    cfg = load_train_config(
        "configs/sensorlm_tiny.yaml",
        [
            f"name=two-nodes-{uuid.uuid4().hex[:6]}", "steps=4", "log_every=2", "eval_every=4",
            "checkpoint.every_steps=4", "data.synthetic=tiny", f"data.path={DATA_DIR}", "data.num_workers=0",
            f"storage_path={tmp_path / 'ray_results'}", f"tracking.tracking_uri={loopback.env['MLFLOW_TRACKING_URI']}",
            "tracking.register=false", "tracking.system_metrics=false",
            "scaling.num_workers=2", "scaling.cpus_per_worker=1",
        ],
    )
    if ray.is_initialized():
        ray.shutdown()
    # The nodes' processes inherit the MLflow credentials from this environment.
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        ray_cluster_env.setenv(var, loopback.env[var])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker_node = cluster.add_node(num_cpus=1)
        ray.init(address=cluster.address)
        cluster.wait_for_nodes()
        node_ids = {cluster.head_node.node_id, worker_node.node_id}
        assert len(node_ids) == 2 and {n["NodeID"] for n in ray.nodes() if n["Alive"]} == node_ids
        result = train(cfg)
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert result.metrics["step"] == 4
    assert mlflow_client.get_run(result.run_id).info.status == "FINISHED"

    placement = json.loads(
        Path(mlflow_client.download_artifacts(result.run_id, "data/shards_by_rank.json", str(tmp_path))).read_text()
    )["ranks"]
    assert [r["rank"] for r in placement] == [0, 1]
    # One worker on each node...
    assert {r["node_id"] for r in placement} == node_ids, placement
    # ... and each node read its own shards, all of them the dataset's training shards.
    shards = [set(r["train_shards"]) for r in placement]
    assert shards[0] and shards[1] and not shards[0] & shards[1], placement
    manifest = json.loads((DATA_DIR / "manifest.json").read_text())
    assert shards[0] | shards[1] <= {s["name"] for s in manifest["splits"]["train"]["shards"]}


# ---------------------------------------------------------------------------------------------
# the end of the walkthrough


def test_a_password_in_the_tracking_uri_is_never_logged(loopback, mlflow_client, monkeypatch, tmp_path, capsys):
    """`tracking.tracking_uri=http://user:secret@host`: the run is created with it, but no param,
    config artifact or printed line carries the password (any user with READ would see it)."""
    from urllib.parse import urlparse

    from sensorlm.training.config import load_train_config
    from sensorlm.training.trainer import end_run, open_mlflow_run

    env = loopback.env
    password = env["MLFLOW_TRACKING_PASSWORD"]
    server = urlparse(env["MLFLOW_TRACKING_URI"])
    secret_uri = f"{server.scheme}://{env['MLFLOW_TRACKING_USERNAME']}:{password}@{server.netloc}"
    for var in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        monkeypatch.delenv(var)  # only the URI carries the credential
    # recorded, so the switch the trainer flips for such a URI is undone after the test
    monkeypatch.setenv("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "false")
    cfg = load_train_config("sensorlm_tiny", [f"tracking.tracking_uri={secret_uri}", "name=secret-uri",
                                              "data.path=s3://bucket/ds", "data.synthetic=null"])
    uri, run_id = open_mlflow_run(cfg, "secret-uri", {"train_batch_size": 64}, {"kind": "wearable"}, "s3://bucket/ds")
    end_run(uri, run_id, "FINISHED")
    from mlflow import MlflowClient

    mlflow_client = MlflowClient(secret_uri)  # the fixture's client reads the credentials deleted above
    run = mlflow_client.get_run(run_id)
    assert run.data.params["tracking.tracking_uri"] == f"{server.scheme}://{env['MLFLOW_TRACKING_USERNAME']}:***@{server.netloc}"
    assert not any(password in v for v in run.data.params.values())
    local = mlflow_client.download_artifacts(run_id, "config/train_config.yaml", str(tmp_path))
    assert password not in Path(local).read_text()
    out = capsys.readouterr()
    assert password not in out.out + out.err


def test_stop_block_ends_every_server_process_and_frees_the_ports(loopback, servers, walkthrough, session_alive, request):
    ray_state, mlflow_state = servers.load_state(loopback.state_dir, "ray"), servers.load_state(loopback.state_dir, "mlflow")
    result = loopback.run("stop", timeout_s=300)
    assert result.returncode == 0, _out(result)
    reports = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert {r["name"]: r["result"] for r in reports} == {"ray": "stopped", "mlflow": "stopped"}
    for st in (ray_state, mlflow_state):
        assert session_alive(st.pid) == [], f"{st.name} processes survived stop"
        assert all(servers.port_is_free(p) for p in (st.ports.get("http"), st.ports.get("dashboard"), st.ports.get("gcs")) if p)
        assert servers.load_state(loopback.state_dir, st.name) is None
    assert not Path(ray_state.details["temp_dir"]).exists()
    # The head used its own token file; the user's ~/.ray/auth_token is untouched.
    home_token = Path.home() / ".ray" / "auth_token"
    assert (home_token.read_bytes() if home_token.exists() else None) == loopback.home_token_before
    # The blocks ran in the doc's order; run as a whole, the module ran every one of them.
    ran = loopback.ran
    assert ran == [tag for tag in walkthrough.WALKTHROUGH if tag in ran]
    mine = [item for item in request.session.items if item.module is request.module]
    if len(mine) == len([name for name in dir(request.module) if name.startswith("test_")]):
        assert tuple(ran) == walkthrough.WALKTHROUGH

