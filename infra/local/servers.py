#!/usr/bin/env python
"""Start, health-check and stop a local Ray head and MLflow tracking server on 127.0.0.1.

    python infra/local/servers.py start ray    [--port P] [--dashboard-port P] [--num-cpus N]
                                               [--with-mlflow] [--no-auth]
    python infra/local/servers.py start mlflow [--port P] [--backend-store-uri URI]
                                               [--artifacts-destination DIR_OR_URI] [--no-auth]
    python infra/local/servers.py status [ray|mlflow|all]      # exit 0 only if all are healthy
    eval "$(python infra/local/servers.py env [ray|mlflow|all])"  # client-side variables
    python infra/local/servers.py stop [ray|mlflow|all]

Everything the servers write (pids, ports, URLs, logs, the Ray token, the MLflow auth config
and the default sqlite store) lives in one state directory: ``--state-dir``, else
``$SENSORLM_SERVERS_DIR``, else ``<repo>/.cache/servers`` (``.cache/`` is git-ignored).

Ray token authentication stays on by default: a fresh random token is written to
``<state>/ray/auth_token`` (mode 0600) and given to the head with ``RAY_AUTH_MODE=token`` and
``RAY_AUTH_TOKEN_PATH``; clients get the same two variables from ``env ray``. It never touches
``~/.ray/auth_token``, so several heads on one machine keep separate tokens. ``--no-auth``
(``RAY_AUTH_MODE=disabled``) exists for loopback-only experiments; see ``docs/cluster.md``.
The head also gets ``RAY_JOB_STOP_WAIT_TIME_S=30`` (unless set): ``ray job stop`` waits that long
between SIGTERM and SIGKILL, time for a training driver to mark its MLflow run KILLED; and
``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0`` (unless set), so ``stop`` does not sit out Ray's 30 s
node drain.

MLflow authentication (on by default; ``--no-auth`` for a deliberate experiment on a machine
nobody else uses) is MLflow's basic-auth app with sensorlm's promotion rule
(``infra/mlflow_auth``, app name ``sensorlm-auth``). The admin credentials come from
``SENSORLM_MLFLOW_ADMIN_USER`` / ``SENSORLM_MLFLOW_ADMIN_PASSWORD`` and reach the server as
environment variables only; the auth config file written to the state directory holds no secret.
The default permission is NO_PERMISSIONS. Once the server is up the admin bootstrap
(`bootstrap_identities`) pre-creates the experiments and registered models (``--experiment``,
``--model``; default ``sensorlm`` each) and two users with random passwords in
``<state>/mlflow/credentials/<user>`` (0600):

- ``sensorlm-job``: EDIT on those experiments and models: creates runs and model versions, can
  neither delete versions nor move aliases. ``env mlflow`` and ``start ray --with-mlflow`` hand
  jobs this login, never the admin's.
- ``sensorlm-promoter``: READ on the experiments, MANAGE on the models: moves ``@champion``
  (``python jobs/promote.py``; ``env mlflow --as promoter``).

`add_job_user` creates further job users, each with its own experiments.

Stopping signals the server's own process session, never ``ray stop``: ``ray stop`` kills every
Ray process of the user on the machine, including other people's clusters.

Importable as well: ``start_ray``, ``start_mlflow``, ``stop``, ``status``, ``client_env``.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import dataclasses
import importlib.util
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import psutil

REPO_ROOT = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
SERVERS = ("ray", "mlflow")

ENV_STATE_DIR = "SENSORLM_SERVERS_DIR"
ENV_ADMIN_USER = "SENSORLM_MLFLOW_ADMIN_USER"
ENV_ADMIN_PASSWORD = "SENSORLM_MLFLOW_ADMIN_PASSWORD"
ENV_BACKEND_STORE_URI = "SENSORLM_MLFLOW_BACKEND_STORE_URI"
# MLflow's basic-auth app plus the rule that only MANAGE moves an alias (infra/mlflow_auth).
MLFLOW_AUTH_APP = "sensorlm-auth"
MLFLOW_AUTH_APP_DIR = REPO_ROOT / "infra" / "mlflow_auth"
JOB_USER = "sensorlm-job"
PROMOTER_USER = "sensorlm-promoter"
# Never in a Ray head's (so a job's) environment: the MLflow admin's login (ours and MLflow's own
# bootstrap variables) and the key that signs the auth app's forms.
PRIVILEGED_ENV_PREFIXES = ("SENSORLM_MLFLOW_ADMIN_", "MLFLOW_AUTH_ADMIN_")
PRIVILEGED_ENV = ("MLFLOW_FLASK_SERVER_SECRET_KEY",)
ROLES = ("job", "promoter", "admin")
# MLflow's own password rule for users of the basic-auth app (mlflow.utils.validation).
MIN_MLFLOW_PASSWORD_LEN = 12
# Ray puts unix sockets under <temp-dir>/session_<timestamp>_<pid>/sockets/; sun_path holds
# 107 bytes, so the temp dir has to stay short (pytest's tmp_path is often too long).
MAX_RAY_TEMP_DIR_LEN = 48
# Grace between the SIGTERM and the SIGKILL of `ray job stop` (RAY_JOB_STOP_WAIT_TIME_S).
JOB_STOP_WAIT_S = 30


class ServerError(RuntimeError):
    """A server could not be started, checked or stopped; the message says why and what to do."""


@dataclasses.dataclass
class ServerState:
    """What ``start_*`` records about a running server (``<state>/<name>.json``).

    Args:
        name: ``ray`` or ``mlflow``.
        pid: the server's leader process; it leads its own session (``start_new_session``).
        create_time: the leader's start time (psutil), so a reused pid is never signalled.
        url: the HTTP endpoint (Ray dashboard / job server, MLflow tracking server).
        ports: every port the server was told to use, by role.
        log: the leader's combined stdout/stderr.
        auth: ``token`` / ``disabled`` for Ray, ``basic`` / ``none`` for MLflow.
        details: server-specific paths (Ray temp dir and token file, MLflow stores).
    """

    name: str
    pid: int
    create_time: float
    url: str
    ports: dict[str, int]
    log: str
    auth: str
    details: dict[str, str] = dataclasses.field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# state directory and processes


def default_state_dir() -> Path:
    """``$SENSORLM_SERVERS_DIR`` or ``<repo>/.cache/servers``."""
    return Path(os.environ.get(ENV_STATE_DIR) or REPO_ROOT / ".cache" / "servers")


def _state_file(state_dir: Path, name: str) -> Path:
    return Path(state_dir) / f"{name}.json"


def load_state(state_dir: Path, name: str) -> ServerState | None:
    """The recorded state of server `name`, or None when none was recorded.

    Args:
        state_dir: the state directory.
        name: ``ray`` or ``mlflow``.
    """
    path = _state_file(state_dir, name)
    if not path.is_file():
        return None
    try:
        return ServerState(**json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise ServerError(f"{path}: unreadable server state ({e}); delete it if no server is running") from e


def _save_state(state_dir: Path, state: ServerState) -> None:
    path = _state_file(state_dir, state.name)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(dataclasses.asdict(state), indent=2) + "\n")
    tmp.replace(path)


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by the owner only (0600), replacing any old file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    tmp.replace(path)


def _leader(state: ServerState) -> psutil.Process | None:
    """The recorded leader process if it is still the one we started, else None."""
    try:
        proc = psutil.Process(state.pid)
        # Compare start times: after a reboot or a long time the pid may belong to someone else.
        if abs(proc.create_time() - state.create_time) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def _session_members(sid: int, not_before: float) -> list[psutil.Process]:
    """Live processes of session `sid` started at or after `not_before`: the server and all it
    spawned (they keep its session; Linux does not hand out a pid still used as a session id)."""
    members = []
    for proc in psutil.process_iter():
        try:
            if (
                os.getsid(proc.pid) == sid
                and proc.create_time() >= not_before - 1.0
                and proc.status() != psutil.STATUS_ZOMBIE
            ):
                members.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return members


def _terminate_session(state: ServerState, grace_s: float) -> list[int]:
    """SIGTERM the server's leader, wait, then SIGKILL whatever is left of its session.

    Returns the pids still alive after SIGKILL (normally none).
    """
    sid, since = state.pid, state.create_time
    try:
        if abs(psutil.Process(sid).create_time() - since) > 1.0:
            return []  # the pid now belongs to someone else: leave it and its session alone
    except psutil.NoSuchProcess:
        pass  # the leader is gone; its orphans (if any) still carry its session id
    if _leader(state) is not None:
        # `ray start --block` and `mlflow server` shut their own children down on SIGTERM.
        try:
            os.kill(state.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _session_members(sid, since):
            time.sleep(0.25)
    # Also reached when the leader died first (a failed start): its orphans keep the session.
    leftover = _session_members(sid, since)
    for proc in leftover:
        try:
            proc.kill()
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(leftover, timeout=5)
    return [p.pid for p in alive]


def _log_tail(path: str | Path, lines: int = 40) -> str:
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return f"(no log at {path})"
    return "\n".join(text[-lines:])


# ---------------------------------------------------------------------------------------------
# ports and HTTP


def port_is_free(port: int) -> bool:
    """True when nothing listens on `port` on any interface (Ray binds some ports on 0.0.0.0)."""
    for addr in ("", HOST):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # As the servers themselves do: connections in TIME_WAIT do not make a port busy.
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((addr, port))
            except OSError:
                return False
    return True


def free_ports(count: int) -> list[int]:
    """`count` distinct ports that are free right now (held open together so they differ)."""
    socks, ports = [], []
    try:
        while len(ports) < count:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


def _check_port(port: int, flag: str) -> int:
    if not 0 < port < 65536:
        raise ServerError(f"{flag} {port}: not a TCP port (1-65535)")
    if not port_is_free(port):
        raise ServerError(f"{flag} {port}: port {port} is already in use; choose another or leave {flag} out")
    return port


def http_get(url: str, headers: dict[str, str] | None = None, timeout: float = 5.0) -> tuple[int, str]:
    """GET `url`; returns (status, body), status 0 when the server cannot be reached."""
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")
    except (urllib.error.URLError, OSError):
        return 0, ""


def _wait_until(check, proc: subprocess.Popen, timeout_s: float, what: str, log: Path) -> None:
    """Poll `check()` until it returns True; fail early if `proc` exits, with the log's tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with code {proc.returncode} while starting; log {log}:\n{_log_tail(log)}")
        if check():
            return
        time.sleep(0.5)
    raise ServerError(f"{what} did not become healthy within {timeout_s:.0f} s; log {log}:\n{_log_tail(log)}")


def _executable(name: str) -> str:
    """The console script `name` of this interpreter's environment (the project's venv)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise ServerError(f"`{name}` is not installed in this environment; run `pip install -e .` first")
    return found


def _refuse_if_running(state_dir: Path, name: str) -> None:
    old = load_state(state_dir, name)
    if old is None:
        return
    if _leader(old) is not None:
        raise ServerError(
            f"{name} is already running (pid {old.pid}, {old.url}) from state dir {state_dir}; "
            f"run `python infra/local/servers.py stop {name}` first"
        )
    _state_file(state_dir, name).unlink(missing_ok=True)  # stale record of a dead server


# ---------------------------------------------------------------------------------------------
# Ray head


def ray_auth_headers(state: ServerState) -> dict[str, str]:
    """The ``Authorization`` header the Ray dashboard / job server wants ({} when auth is off)."""
    if state.auth != "token":
        return {}
    token = Path(state.details["token_path"]).read_text().strip()
    return {"Authorization": f"Bearer {token}"}


def ray_head_env(token_path: Path | None, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the Ray head (and of every process it starts, job drivers included).

    Args:
        token_path: the token file; None starts the head with ``RAY_AUTH_MODE=disabled``.
        base: the environment to start from (default: this process's).
    """
    env = dict(os.environ if base is None else base)
    # RAY_AUTH_TOKEN outranks RAY_AUTH_TOKEN_PATH, and an inherited RAY_ADDRESS would make
    # `ray start --head` look for another cluster: neither may leak in from the caller.
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        env.pop(var, None)
    # Every job inherits this environment: it carries the job identity's login at most. The
    # admin's variables (set to start MLflow, docs/cluster.md section 0) and a promoter's or
    # admin's MLflow login exported in the caller's shell stay behind.
    privileged_users = {PROMOTER_USER, env.get(ENV_ADMIN_USER) or None} - {None}
    for var in [k for k in env if k.startswith(PRIVILEGED_ENV_PREFIXES) or k in PRIVILEGED_ENV]:
        env.pop(var)
    if env.get("MLFLOW_TRACKING_USERNAME") in privileged_users:
        env.pop("MLFLOW_TRACKING_USERNAME")
        env.pop("MLFLOW_TRACKING_PASSWORD", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    # `ray job stop` sends SIGTERM to the job's driver, then SIGKILL after this many seconds
    # (Ray's default: 3). The training driver marks its MLflow run KILLED and lets Ray Train shut
    # its workers down; on a busy machine that takes longer than 3 s.
    env.setdefault("RAY_JOB_STOP_WAIT_TIME_S", str(JOB_STOP_WAIT_S))
    # Ray 2.60 drains a node on SIGTERM (up to 30 s) so Serve replicas can quiesce; after any job
    # has run, leased idle workers keep a local head "busy" for the whole 30 s. `stop` on this
    # one-node head means stop (jobs are stopped with `ray job stop`), so no drain.
    env.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    # Ray Train on one machine, as for a job's own local Ray (no preemption watcher, faster polls)
    from sensorlm.ray_runtime import ONE_MACHINE_ENV

    for key, value in ONE_MACHINE_ENV.items():
        env.setdefault(key, value)
    if token_path is None:
        # Loopback-only opt-out: the dashboard binds 127.0.0.1, but Ray's GCS and raylet gRPC
        # ports listen on every interface whatever --node-ip-address says, so without a token
        # anyone who can reach this machine can run code on the cluster.
        env["RAY_AUTH_MODE"] = "disabled"
    else:
        env["RAY_AUTH_MODE"] = "token"
        env["RAY_AUTH_TOKEN_PATH"] = str(token_path)
    return env


def start_ray(
    state_dir: Path | None = None,
    port: int | None = None,
    dashboard_port: int | None = None,
    num_cpus: int = 2,
    object_store_mb: int = 256,
    temp_dir: str | None = None,
    auth: bool = True,
    with_mlflow: bool = False,
    timeout_s: float = 120.0,
) -> ServerState:
    """Start a Ray head whose dashboard and job server listen on 127.0.0.1.

    Args:
        state_dir: where state, logs and the token go (default ``default_state_dir()``).
        port: GCS port (default: a free one).
        dashboard_port: dashboard / job server port (default: a free one).
        num_cpus: logical CPUs the head offers to tasks.
        object_store_mb: object store size; small by default since the machine is shared.
        temp_dir: Ray's temp dir (default: a fresh short ``/tmp/slm-ray-*``, removed on stop; a
            given one is kept).
        auth: keep Ray token authentication on (``RAY_AUTH_MODE=token``, fresh token).
        with_mlflow: give the head the client variables of the MLflow server recorded in the
            same state dir (``MLFLOW_TRACKING_URI``, and with auth the job user's login). Job
            drivers and workers inherit the head's environment, so credentials never travel in
            a job's runtime env, which Ray logs and shows on the dashboard.
        timeout_s: how long to wait for the dashboard and the job agent.
    """
    state_dir = Path(state_dir or default_state_dir()).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    _refuse_if_running(state_dir, "ray")
    mlflow_state = None
    if with_mlflow:
        mlflow_state = load_state(state_dir, "mlflow")
        if mlflow_state is None or _leader(mlflow_state) is None:
            raise ServerError(f"--with-mlflow: no MLflow server is running from state dir {state_dir}; start it first")
        if mlflow_state.auth == "basic" and not Path(mlflow_state.details.get("job_password_file", "")).is_file():
            raise ServerError(f"--with-mlflow: the MLflow job user's password file is missing from {state_dir}; "
                              "restart the MLflow server with `start mlflow --auth`")
    if num_cpus < 1:
        raise ServerError(f"--num-cpus must be >= 1, got {num_cpus}")
    if object_store_mb < 80:
        raise ServerError(f"--object-store-mb must be >= 80 (Ray's minimum is 75 MiB), got {object_store_mb}")
    # Every port a head opens by default (6379, 8265, 10001, 52365) is fixed; several people
    # start heads on this machine, so each one gets its own free ports.
    auto = iter(free_ports(4))
    ports = {
        "gcs": _check_port(port, "--port") if port else next(auto),
        "dashboard": _check_port(dashboard_port, "--dashboard-port") if dashboard_port else next(auto),
        "client_server": next(auto),
        "dashboard_agent": next(auto),
    }
    own_temp_dir = temp_dir is None
    if temp_dir is None:
        temp_dir = tempfile.mkdtemp(prefix="slm-ray-", dir="/tmp")
    elif len(str(temp_dir)) > MAX_RAY_TEMP_DIR_LEN:
        raise ServerError(
            f"--temp-dir {temp_dir}: {len(str(temp_dir))} characters; Ray's unix socket paths under it "
            f"must fit in 107 bytes, so keep it under {MAX_RAY_TEMP_DIR_LEN} (e.g. /tmp/slm-ray)"
        )
    Path(temp_dir).mkdir(parents=True, exist_ok=True)

    home = state_dir / "ray"
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)
    token_path = None
    if auth:
        # A fresh token per head, never ~/.ray/auth_token: other heads on this machine keep theirs.
        token_path = home / "auth_token"
        _write_private(token_path, secrets.token_hex(32))
    log = home / "ray_head.log"
    env = ray_head_env(token_path)
    if mlflow_state is not None:
        env = resolved_client_env(mlflow_state, base=env, role="job")
    cmd = [
        _executable("ray"), "start", "--head",
        # --block keeps `ray start` as the parent of every head process: SIGTERM to it shuts the
        # head down, and the whole head lives in one session we can account for.
        "--block",
        "--port", str(ports["gcs"]),
        "--dashboard-host", HOST,
        "--dashboard-port", str(ports["dashboard"]),
        "--ray-client-server-port", str(ports["client_server"]),
        "--dashboard-agent-listen-port", str(ports["dashboard_agent"]),
        # 0/0: workers take ports the OS hands out, as under ray.init(), instead of the fixed
        # 10002-19999 range that every head on the machine would share.
        "--min-worker-port", "0", "--max-worker-port", "0",
        "--num-cpus", str(num_cpus),
        "--object-store-memory", str(object_store_mb * 1024 * 1024),
        "--temp-dir", str(temp_dir),
        "--include-dashboard", "true",
        "--disable-usage-stats",
    ]
    with open(log, "w") as out:
        # cwd = repo root: a job submitted without --working-dir runs `python jobs/...` from here.
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=REPO_ROOT, start_new_session=True,
        )
    state = ServerState(
        name="ray",
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        url=f"http://{HOST}:{ports['dashboard']}",
        ports=ports,
        log=str(log),
        auth="token" if auth else "disabled",
        details={
            "temp_dir": str(temp_dir),
            # Only a temp dir this script created is removed on stop, never one it was given.
            "temp_dir_created": "yes" if own_temp_dir else "no",
            "token_path": str(token_path or ""),
            "mlflow_tracking_uri": mlflow_state.url if mlflow_state else "",
        },
    )
    _save_state(state_dir, state)
    headers = ray_auth_headers(state)
    agent_health = f"http://{HOST}:{ports['dashboard_agent']}/api/local_raylet_healthz"

    def healthy() -> bool:
        # The job server answers once the dashboard is up; jobs need the node's agent as well,
        # and drivers need the GCS address `ray start` records when it is done.
        return (
            http_get(f"{state.url}/api/version", headers)[0] == 200
            and http_get(agent_health)[0] == 200
            and bool(_ray_gcs_address(Path(temp_dir)))
        )

    try:
        _wait_until(healthy, proc, timeout_s, "the Ray head", log)
        state.details["gcs_address"] = _ray_gcs_address(Path(temp_dir))
    except BaseException as e:
        # A failed `ray start` leaves processes behind; its session logs stay for debugging.
        _stop_state(state_dir, state, grace_s=10.0, keep_temp=True)
        if isinstance(e, ServerError):
            raise ServerError(f"{e}\nRay's own logs: {temp_dir}/session_latest/logs") from None
        raise
    _save_state(state_dir, state)
    return state


def _ray_gcs_address(temp_dir: Path) -> str:
    # Ray replaces a loopback --node-ip-address by the host's address; it records what it used.
    marker = temp_dir / "ray_current_cluster"
    try:
        return marker.read_text().strip()
    except OSError:
        return ""


def ray_health(state: ServerState) -> dict[str, Any]:
    """Health of a recorded Ray head: alive, job server answering, and how it treats no token."""
    code, body = http_get(f"{state.url}/api/version", ray_auth_headers(state))
    info: dict[str, Any] = {"healthy": code == 200, "status": code}
    if code == 200:
        info["ray_version"] = json.loads(body).get("ray_version")
    if state.auth == "token":
        info["unauthenticated_status"] = http_get(f"{state.url}/api/version")[0]
    return info


# ---------------------------------------------------------------------------------------------
# MLflow tracking server


def _has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def redact_uri(uri: str) -> str:
    """`uri` with any password replaced by ``***`` (for logs and the state file)."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _admin_credentials() -> tuple[str, str]:
    user = os.environ.get(ENV_ADMIN_USER, "")
    password = os.environ.get(ENV_ADMIN_PASSWORD, "")
    if not user:
        raise ServerError(f"--auth needs the admin user name in the environment variable {ENV_ADMIN_USER} (unset or empty)")
    if not password:
        raise ServerError(f"--auth needs the admin password in the environment variable {ENV_ADMIN_PASSWORD} (unset or empty)")
    if len(password) < MIN_MLFLOW_PASSWORD_LEN:
        raise ServerError(
            f"{ENV_ADMIN_PASSWORD} has {len(password)} characters; MLflow's basic-auth app needs at least "
            f"{MIN_MLFLOW_PASSWORD_LEN} (try: export {ENV_ADMIN_PASSWORD}=\"$(openssl rand -hex 16)\")"
        )
    return user, password


def basic_auth_header(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def write_auth_config(path: Path, auth_db_uri: str) -> None:
    """Write MLflow's basic-auth config (0600). It holds no credentials: those go by environment.

    Args:
        path: the ``.ini`` file to write (``MLFLOW_AUTH_CONFIG_PATH``).
        auth_db_uri: SQLAlchemy URI of the users/permissions database.
    """
    cfg = configparser.ConfigParser()
    cfg["mlflow"] = {
        # Nothing for a user without a grant: jobs see only the experiments granted to them.
        "default_permission": "NO_PERMISSIONS",
        "database_uri": auth_db_uri,
        "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth",
        # Without the cache every request pays a scrypt check (~0.17 s of server CPU on 2 cores):
        # a model upload is ~70 requests. One server process, so no worker serves a stale entry.
        "auth_cache_ttl_seconds": "60",
    }
    lines = [
        "# Written by infra/local/servers.py. The admin user and password are not here: they are",
        f"# passed as MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD from {ENV_ADMIN_USER} /",
        f"# {ENV_ADMIN_PASSWORD}, and MLflow only uses them when it first creates the admin user.",
    ]
    buf = io.StringIO()
    cfg.write(buf)
    _write_private(path, "\n".join(lines) + "\n" + buf.getvalue())


def _check_db_driver(uri: str) -> None:
    """The database driver SQLAlchemy picks for `uri` is importable (``postgresql://`` means psycopg 3
    in SQLAlchemy 2.1; ``postgresql+psycopg2://`` psycopg2), else an error naming it."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(uri).get_dialect()
    except (ArgumentError, NoSuchModuleError) as e:
        raise ServerError(f"--backend-store-uri {redact_uri(uri)}: {e}") from None
    try:
        dialect.import_dbapi()
    except ImportError as e:
        raise ServerError(
            f"--backend-store-uri {redact_uri(uri)}: SQLAlchemy's {dialect.name}+{dialect.driver} driver needs "
            f"the module {e.name!r}, which is not installed; install the project's infra extra: "
            "pip install -e '.[infra]' (psycopg 3 for postgresql://)"
        ) from None


def start_mlflow(
    state_dir: Path | None = None,
    port: int | None = None,
    backend_store_uri: str | None = None,
    artifacts_destination: str | None = None,
    auth: bool = True,
    workers: int = 1,
    timeout_s: float = 120.0,
    experiments: tuple[str, ...] = ("sensorlm",),
    models: tuple[str, ...] = ("sensorlm",),
) -> ServerState:
    """Start ``mlflow server`` on 127.0.0.1 with a database store and proxied artifacts.

    Args:
        state_dir: where state, logs and the default stores go (default ``default_state_dir()``).
        port: listening port (default: a free one).
        backend_store_uri: SQLAlchemy URI (default ``$SENSORLM_MLFLOW_BACKEND_STORE_URI``, else
            ``sqlite:///<state>/mlflow/mlflow.db``); ``postgresql://user:pw@host/db`` for PostgreSQL.
        artifacts_destination: where the server stores artifacts (a directory or ``s3://...``;
            default ``<state>/mlflow/artifacts``); clients upload through the server.
        auth: run MLflow's basic-auth app (the default; with sensorlm's rules), admin credentials from
            ``SENSORLM_MLFLOW_ADMIN_USER`` / ``SENSORLM_MLFLOW_ADMIN_PASSWORD``, then
            `bootstrap_identities` (job user, promoter, pre-created experiments and models).
        workers: uvicorn worker processes (each costs a few hundred MB).
        timeout_s: how long to wait for ``GET /health``.
        experiments: with auth, the experiments the admin pre-creates and grants.
        models: with auth, the registered-model names the admin pre-creates and grants.
    """
    state_dir = Path(state_dir or default_state_dir()).resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    _refuse_if_running(state_dir, "mlflow")
    if workers < 1:
        raise ServerError(f"--workers must be >= 1, got {workers}")
    # Every input is checked before anything is written or started.
    user, password = _admin_credentials() if auth else ("", "")
    if auth and not _has_module("flask_wtf"):
        raise ServerError(
            "--auth: MLflow's basic-auth app needs Flask-WTF, which is not installed; "
            "install the project's infra extra: pip install -e '.[infra]' (it pulls mlflow[auth])"
        )
    port = _check_port(port, "--port") if port else free_ports(1)[0]
    home = state_dir / "mlflow"
    uri = backend_store_uri or os.environ.get(ENV_BACKEND_STORE_URI) or f"sqlite:///{home / 'mlflow.db'}"
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    if scheme not in ("sqlite", "postgresql", "mysql", "mssql"):
        raise ServerError(
            f"--backend-store-uri {redact_uri(uri)!r}: the model registry needs a database store "
            "(sqlite:///path.db or postgresql://user:password@host:5432/db)"
        )
    _check_db_driver(uri)
    dest = artifacts_destination or str(home / "artifacts")
    if dest.startswith("s3://") and not _has_module("boto3"):
        raise ServerError(f"--artifacts-destination {dest}: S3 needs boto3; pip install -e '.[infra]'")
    home.mkdir(parents=True, exist_ok=True)
    home.chmod(0o700)  # the auth database holds password hashes, the stores hold the runs
    if "://" not in dest:
        Path(dest).mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    # Job execution starts a huey consumer per worker (about 1.5 GB more); the project does not
    # use MLflow server jobs and the machine is shared.
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    # Passed by environment, not argv, so a database password stays out of `ps` and the state file.
    env["MLFLOW_BACKEND_STORE_URI"] = uri
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        env.pop(var, None)
    cmd = [
        _executable("mlflow"), "server",
        "--host", HOST,
        "--port", str(port),
        "--serve-artifacts",
        "--artifacts-destination", dest,
        "--workers", str(workers),
    ]
    details = {"backend_store_uri": redact_uri(uri), "artifacts_destination": dest}
    headers: dict[str, str] = {}
    if auth:
        ini = home / "basic_auth.ini"
        write_auth_config(ini, f"sqlite:///{home / 'basic_auth.db'}")
        env.update(
            MLFLOW_AUTH_CONFIG_PATH=str(ini),
            MLFLOW_AUTH_ADMIN_USERNAME=user,
            MLFLOW_AUTH_ADMIN_PASSWORD=password,
            # Signs the CSRF tokens of the auth app's forms; one value shared by all workers.
            MLFLOW_FLASK_SERVER_SECRET_KEY=os.environ.get("MLFLOW_FLASK_SERVER_SECRET_KEY") or secrets.token_hex(32),
        )
        # The app's module and entry point live in infra/mlflow_auth (a dist-info folder).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(MLFLOW_AUTH_APP_DIR), env.get("PYTHONPATH")]))
        cmd += ["--app-name", MLFLOW_AUTH_APP]
        details.update(auth_config=str(ini), auth_db=str(home / "basic_auth.db"))
        headers = basic_auth_header(user, password)

    log = home / "mlflow_server.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=env, cwd=home, start_new_session=True,
        )
    state = ServerState(
        name="mlflow",
        pid=proc.pid,
        create_time=psutil.Process(proc.pid).create_time(),
        url=f"http://{HOST}:{port}",
        ports={"http": port},
        log=str(log),
        auth="basic" if auth else "none",
        details=details,
    )
    _save_state(state_dir, state)
    try:
        _wait_until(lambda: http_get(f"{state.url}/health")[0] == 200, proc, timeout_s, "the MLflow server", log)
        if auth:
            code, _ = http_get(f"{state.url}/api/2.0/mlflow/experiments/search?max_results=1", headers)
            if code != 200:
                raise ServerError(
                    f"the MLflow server is up but refuses the admin credentials from {ENV_ADMIN_USER} / "
                    f"{ENV_ADMIN_PASSWORD} (HTTP {code}). MLflow sets the admin password only when it creates "
                    f"the user database {details['auth_db']}: use the password it was created with, change it "
                    "through MLflow's update-password API, or delete that file to start afresh."
                )
            state.details.update(bootstrap_identities(state, (user, password), experiments, models))
            _save_state(state_dir, state)
    except BaseException:
        _stop_state(state_dir, state, grace_s=10.0)
        raise
    return state


def _bootstrap_module():
    """infra/mlflow_auth/bootstrap.py (the admin bootstrap the Kubernetes Job runs too), by path."""
    name = "sensorlm_mlflow_bootstrap"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, MLFLOW_AUTH_APP_DIR / "bootstrap.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


def _bootstrapped(call, *args):
    boot = _bootstrap_module()
    try:
        return call(boot)(*args)
    except boot.BootstrapError as e:
        raise ServerError(str(e)) from None


def ensure_user(state: ServerState, admin: tuple[str, str], username: str) -> Path:
    """Create MLflow user `username` with a random password kept in ``<state>/mlflow/credentials/<username>``
    (0600) unless both exist already; returns the password file. Only the admin may create users.

    Args:
        state: the recorded MLflow server (basic auth).
        admin: (user, password) of the admin.
        username: the user to create.
    """
    folder = Path(state.log).parent / "credentials"
    path = folder / username
    if path.is_file():
        # The file is the password the user was created with (a new auth database gets it again).
        _bootstrapped(lambda b: b.ensure_user, state.url, admin, username, path.read_text().strip(), False)
        return path
    password = secrets.token_hex(16)
    _bootstrapped(lambda b: b.ensure_user, state.url, admin, username, password)
    folder.mkdir(mode=0o700, exist_ok=True)
    _write_private(path, password)
    return path


def add_job_user(state: ServerState, admin: tuple[str, str], username: str, experiments: tuple[str, ...],
                 models: tuple[str, ...] = ()) -> Path:
    """A job user: EDIT on its `experiments` (runs, metrics, artifacts; no deleting) and on `models`
    (new versions; no deleting versions, no aliases). Returns its password file.

    Args:
        state: the recorded MLflow server (basic auth).
        admin: (user, password) of the admin.
        username: the user (created if missing).
        experiments: experiment names, pre-created by the admin; nobody else gets them.
        models: registered-model names, pre-created by the admin.
    """
    path = ensure_user(state, admin, username)
    _bootstrapped(lambda b: b.grant_job_user, state.url, admin, username, experiments, models)
    return path


def bootstrap_identities(state: ServerState, admin: tuple[str, str], experiments: tuple[str, ...],
                         models: tuple[str, ...]) -> dict[str, str]:
    """The admin bootstrap (infra/mlflow_auth/bootstrap.py): experiments and registered models
    pre-created, the job user (`add_job_user`) and the promoter (READ on the experiments, MANAGE on
    the models: it may move aliases). Idempotent. Returns what the state file records (paths, no secrets).

    Args:
        state: the recorded MLflow server (basic auth).
        admin: (user, password) of the admin.
        experiments: experiment names the job user logs to.
        models: registered-model names the job user registers versions of.
    """
    job = add_job_user(state, admin, JOB_USER, experiments, models)
    promoter = ensure_user(state, admin, PROMOTER_USER)
    _bootstrapped(lambda b: b.grant_promoter, state.url, admin, PROMOTER_USER, experiments, models)
    return {"job_user": JOB_USER, "job_password_file": str(job),
            "promoter_user": PROMOTER_USER, "promoter_password_file": str(promoter),
            "experiments": ",".join(experiments), "models": ",".join(models)}


def mlflow_health(state: ServerState) -> dict[str, Any]:
    """Health of a recorded MLflow server; with auth, also what an anonymous request gets."""
    code, body = http_get(f"{state.url}/health")
    info: dict[str, Any] = {"healthy": code == 200 and body.strip() == "OK", "status": code}
    if state.auth == "basic":
        info["unauthenticated_status"] = http_get(f"{state.url}/api/2.0/mlflow/experiments/search?max_results=1")[0]
    return info


# ---------------------------------------------------------------------------------------------
# status, client environment, stop


def status(state_dir: Path | None = None, names: tuple[str, ...] = SERVERS) -> dict[str, dict[str, Any]]:
    """Health of each named server: ``running`` False when it is not recorded or its process is gone.

    Args:
        state_dir: the state directory.
        names: which servers.
    """
    state_dir = Path(state_dir or default_state_dir())
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        state = load_state(state_dir, name)
        if state is None:
            out[name] = {"running": False, "healthy": False, "reason": "not started (no state file)"}
            continue
        if _leader(state) is None:
            out[name] = {"running": False, "healthy": False, "reason": f"process {state.pid} is gone", "log": state.log}
            continue
        health = ray_health(state) if name == "ray" else mlflow_health(state)
        out[name] = {"running": True, "url": state.url, "pid": state.pid, "auth": state.auth, "log": state.log, **health}
    return out


def client_env(state: ServerState, role: str = "job") -> dict[str, str | None]:
    """Variables a client needs for this server; None means "unset it".

    Ray: ``RAY_API_SERVER_ADDRESS`` (the job server, for ``ray job ...``), ``RAY_ADDRESS`` (the GCS,
    for a driver's ``ray.init()``), and the auth pair ``RAY_AUTH_MODE`` / ``RAY_AUTH_TOKEN_PATH``.
    MLflow: ``MLFLOW_TRACKING_URI``; with auth the login of `role`: ``job`` (the default) and
    ``promoter`` read their password from their 0600 file (``$(cat FILE)``), ``admin`` refers to the
    admin variables (``$SENSORLM_MLFLOW_ADMIN_USER``), so no secret is ever printed.

    Args:
        state: a recorded server.
        role: ``job``, ``promoter`` or ``admin`` (MLflow with auth only).
    """
    if role not in ROLES:
        raise ServerError(f"--as {role}: one of {', '.join(ROLES)}")
    if state.name == "ray":
        env: dict[str, str | None] = {
            "RAY_API_SERVER_ADDRESS": state.url,
            "RAY_ADDRESS": state.details.get("gcs_address") or None,
            "RAY_AUTH_MODE": state.auth,
            # RAY_AUTH_TOKEN would outrank the file, so a stale one in the shell must go.
            "RAY_AUTH_TOKEN": None,
            "RAY_AUTH_TOKEN_PATH": state.details["token_path"] if state.auth == "token" else None,
        }
        return env
    env = {"MLFLOW_TRACKING_URI": state.url}
    if state.auth == "basic" and role == "admin":
        env["MLFLOW_TRACKING_USERNAME"] = f"${{{ENV_ADMIN_USER}}}"
        env["MLFLOW_TRACKING_PASSWORD"] = f"${{{ENV_ADMIN_PASSWORD}}}"
    elif state.auth == "basic":
        user, password_file = state.details.get(f"{role}_user"), state.details.get(f"{role}_password_file")
        if not user or not password_file:
            raise ServerError(f"the MLflow server in this state dir has no {role} user; restart it with `start mlflow --auth`")
        env["MLFLOW_TRACKING_USERNAME"] = user
        env["MLFLOW_TRACKING_PASSWORD"] = f"$(cat '{password_file}')"
    else:
        env["MLFLOW_TRACKING_USERNAME"] = None
        env["MLFLOW_TRACKING_PASSWORD"] = None
    return env


def _resolve(value: str) -> str:
    if value.startswith("$(cat '") and value.endswith("')"):
        return Path(value[len("$(cat '"):-2]).read_text().strip()
    return os.path.expandvars(value) if value.startswith("$") else value


def resolved_client_env(state: ServerState, base: dict[str, str] | None = None, role: str = "job") -> dict[str, str]:
    """`base` (default: this process's environment) with `client_env(state, role)` applied, references
    to ``$SENSORLM_MLFLOW_ADMIN_*`` and password files resolved; for starting client subprocesses."""
    env = dict(os.environ if base is None else base)
    for key, value in client_env(state, role).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = _resolve(value)
    return env


def shell_exports(env: dict[str, str | None]) -> str:
    """``export``/``unset`` lines for `env`; ``${VAR}`` and ``$(cat FILE)`` are left for the shell."""
    lines = []
    for key, value in env.items():
        if value is None:
            lines.append(f"unset {key}")
        elif value.startswith(("${", "$(")):
            lines.append(f'export {key}="{value}"')
        else:
            lines.append(f"export {key}='{value}'")
    return "\n".join(lines)


def _stop_state(state_dir: Path, state: ServerState, grace_s: float = 30.0, keep_temp: bool = False) -> dict[str, Any]:
    report: dict[str, Any] = {"name": state.name, "pid": state.pid}
    was_running = _leader(state) is not None
    leftover = _terminate_session(state, grace_s)
    if leftover:
        raise ServerError(f"{state.name}: processes {leftover} of session {state.pid} survived SIGKILL")
    report["result"] = "stopped" if was_running else "was not running"
    # A stopped server's ports can take a moment to be released by the kernel.
    deadline = time.monotonic() + 10
    busy = [p for p in state.ports.values() if not port_is_free(p)]
    while busy and time.monotonic() < deadline:
        time.sleep(0.25)
        busy = [p for p in busy if not port_is_free(p)]
    report["ports_still_busy"] = busy
    temp_dir = state.details.get("temp_dir")
    if state.name == "ray" and temp_dir and state.details.get("temp_dir_created") == "yes" and not keep_temp:
        # Ray leaves its session dir and ray_current_cluster behind; the logs in it go too.
        shutil.rmtree(temp_dir, ignore_errors=True)
        report["removed"] = temp_dir
    _state_file(state_dir, state.name).unlink(missing_ok=True)
    return report


def stop(
    state_dir: Path | None = None, names: tuple[str, ...] = SERVERS, grace_s: float = 30.0, keep_temp: bool = False
) -> list[dict[str, Any]]:
    """Stop the named servers recorded in `state_dir` (only processes this script started).

    Args:
        state_dir: the state directory.
        names: which servers.
        grace_s: seconds between SIGTERM and SIGKILL.
        keep_temp: keep Ray's temp dir (its session logs) instead of removing it.
    """
    state_dir = Path(state_dir or default_state_dir())
    reports = []
    for name in names:
        state = load_state(state_dir, name)
        if state is None:
            reports.append({"name": name, "result": "not started"})
            continue
        reports.append(_stop_state(state_dir, state, grace_s=grace_s, keep_temp=keep_temp))
    return reports


# ---------------------------------------------------------------------------------------------
# command line


def _names(which: str) -> tuple[str, ...]:
    return SERVERS if which == "all" else (which,)


def _parser() -> argparse.ArgumentParser:
    # --state-dir on every subcommand, so the wrapper scripts can pass it after `start ray`.
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--state-dir", type=Path, default=None, help=f"default ${ENV_STATE_DIR} or .cache/servers")
    parser = argparse.ArgumentParser(description="Local Ray head and MLflow server on 127.0.0.1.")
    sub = parser.add_subparsers(dest="command", required=True)

    start = sub.add_parser("start", help="start a server and wait until it is healthy")
    start_sub = start.add_subparsers(dest="server", required=True)
    ray_p = start_sub.add_parser("ray", parents=[common], help="Ray head: dashboard and job server on 127.0.0.1")
    ray_p.add_argument("--port", type=int, default=None, help="GCS port (default: free)")
    ray_p.add_argument("--dashboard-port", type=int, default=None, help="dashboard/job server port (default: free)")
    ray_p.add_argument("--num-cpus", type=int, default=2)
    ray_p.add_argument("--object-store-mb", type=int, default=256)
    ray_p.add_argument(
        "--temp-dir", default=None, help=f"short path (< {MAX_RAY_TEMP_DIR_LEN} chars); default /tmp/slm-ray-*"
    )
    ray_p.add_argument(
        "--no-auth", action="store_true",
        help="RAY_AUTH_MODE=disabled; loopback experiments only (Ray's gRPC ports listen on all interfaces)",
    )
    ray_p.add_argument(
        "--with-mlflow", action="store_true",
        help="pass the running MLflow server's client variables to the head (jobs inherit them)",
    )
    ray_p.add_argument("--timeout", type=float, default=120.0)
    ml_p = start_sub.add_parser("mlflow", parents=[common], help="MLflow tracking server on 127.0.0.1")
    ml_p.add_argument("--port", type=int, default=None, help="default: a free port")
    ml_p.add_argument(
        "--backend-store-uri", default=None, help=f"default ${ENV_BACKEND_STORE_URI} or sqlite in the state dir"
    )
    ml_p.add_argument("--artifacts-destination", default=None, help="directory or s3:// URI; default in the state dir")
    auth = ml_p.add_mutually_exclusive_group()
    auth.add_argument(
        "--auth", dest="auth", action="store_true", default=True,
        help=f"basic auth, the default: admin from ${ENV_ADMIN_USER} / ${ENV_ADMIN_PASSWORD}",
    )
    auth.add_argument(
        "--no-auth", dest="auth", action="store_false",
        help="no authentication: anyone who reaches the port may read, write and delete every run and model "
             "(an explicit experiment on a machine nobody else uses)",
    )
    ml_p.add_argument("--workers", type=int, default=1)
    ml_p.add_argument("--experiment", action="append", default=None,
                      help="with --auth: an experiment the admin pre-creates for the job user (repeatable; default sensorlm)")
    ml_p.add_argument("--model", action="append", default=None,
                      help="with --auth: a registered-model name the admin pre-creates (repeatable; default sensorlm)")
    ml_p.add_argument("--timeout", type=float, default=120.0)

    for cmd, help_text in (
        ("status", "health of the servers (exit 1 unless all are healthy)"),
        ("env", 'print export/unset lines for clients: eval "$(... env ray)"'),
        ("stop", "stop the servers this state dir recorded"),
    ):
        p = sub.add_parser(cmd, parents=[common], help=help_text)
        p.add_argument("server", nargs="?", default="all", choices=(*SERVERS, "all"))
        if cmd == "env":
            p.add_argument("--json", action="store_true", help="print a JSON object instead")
            p.add_argument("--as", dest="role", choices=ROLES, default="job",
                           help="MLflow login to export (default job; promoter to move @champion)")
        if cmd == "stop":
            p.add_argument("--keep-temp", action="store_true", help="keep Ray's temp dir (its session logs)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    state_dir = Path(args.state_dir or default_state_dir())
    try:
        if args.command == "start" and args.server == "ray":
            st = start_ray(
                state_dir, port=args.port, dashboard_port=args.dashboard_port, num_cpus=args.num_cpus,
                object_store_mb=args.object_store_mb, temp_dir=args.temp_dir, auth=not args.no_auth,
                with_mlflow=args.with_mlflow, timeout_s=args.timeout,
            )
            print(f"ray head up: {st.url} (auth: {st.auth}, pid {st.pid}, log {st.log})")
            print('client side: eval "$(python infra/local/servers.py env ray)"')
        elif args.command == "start":
            st = start_mlflow(
                state_dir, port=args.port, backend_store_uri=args.backend_store_uri,
                artifacts_destination=args.artifacts_destination, auth=args.auth, workers=args.workers,
                timeout_s=args.timeout, experiments=tuple(args.experiment or ("sensorlm",)),
                models=tuple(args.model or ("sensorlm",)),
            )
            print(f"mlflow server up: {st.url} (auth: {st.auth}, pid {st.pid}, log {st.log})")
            print('client side: eval "$(python infra/local/servers.py env mlflow)"')
        elif args.command == "status":
            report = status(state_dir, _names(args.server))
            print(json.dumps(report, indent=2))
            return 0 if all(r.get("healthy") for r in report.values()) else 1
        elif args.command == "env":
            merged: dict[str, str | None] = {}
            for name in _names(args.server):
                st = load_state(state_dir, name)
                if st is None or _leader(st) is None:
                    if args.server != "all":
                        raise ServerError(f"{name} is not running (state dir {state_dir})")
                    continue
                merged.update(client_env(st, args.role))
            print(json.dumps(merged, indent=2) if args.json else shell_exports(merged))
        elif args.command == "stop":
            for rep in stop(state_dir, _names(args.server), keep_temp=args.keep_temp):
                print(json.dumps(rep))
    except ServerError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
