"""Shared helpers of the infra tests: the repository's paths, the local server script and the runner
of docs/cluster.md's walkthrough (doc_walkthrough.py), both imported by path."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"


def _load_by_path(name: str, path: Path):
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def load_servers_module():
    """Import infra/local/servers.py (a script, not a package module) once per session."""
    return _load_by_path("sensorlm_infra_servers", INFRA / "local" / "servers.py")


@pytest.fixture(scope="session")
def servers():
    return load_servers_module()


@pytest.fixture(scope="session")
def walkthrough():
    """tests/infra/doc_walkthrough.py: `doc_blocks`, `WALKTHROUGH`, `DocSession`."""
    return _load_by_path("sensorlm_infra_doc_walkthrough", Path(__file__).with_name("doc_walkthrough.py"))


@pytest.fixture(scope="session")
def session_alive():
    """A function: the live (not zombie) pids of a process session, checked independently of
    servers.py's own bookkeeping (a server's processes all share its leader's session)."""
    import os

    import psutil

    def alive(sid: int) -> list[int]:
        pids = []
        for proc in psutil.process_iter():
            try:
                if os.getsid(proc.pid) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                    pids.append(proc.pid)
            except (ProcessLookupError, PermissionError, psutil.Error):
                pass
        return pids

    return alive


def _postgres_bin(name: str) -> str | None:
    import glob
    import shutil

    found = shutil.which(name)
    if found:
        return found
    versions = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return versions[-1] if versions else None


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL server on a free loopback port with password (scram) auth, and the
    SQLAlchemy URL of an empty database `mlflow` on it. Skipped where PostgreSQL is not installed,
    unless SENSORLM_REQUIRE_POSTGRES=1 (CI installs it and sets that, so it never skips there)."""
    import os
    import secrets
    import shutil
    import socket
    import subprocess
    import tempfile

    initdb, pg_ctl = _postgres_bin("initdb"), _postgres_bin("pg_ctl")
    if not (initdb and pg_ctl):
        message = "PostgreSQL (initdb, pg_ctl) is not installed"
        if os.environ.get("SENSORLM_REQUIRE_POSTGRES") == "1":
            pytest.fail(message + " and SENSORLM_REQUIRE_POSTGRES=1")
        pytest.skip(message)
    # PostgreSQL refuses to run as root: as root, run it as the `postgres` user of its package.
    as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    root = Path(tempfile.mkdtemp(prefix="slm-pg-", dir="/tmp"))  # short: the socket path is limited
    password = secrets.token_hex(16)
    (root / "pw").write_text(password)
    if as_user:
        import pwd

        ids = pwd.getpwnam("postgres")
        os.chown(root, ids.pw_uid, ids.pw_gid)
        os.chown(root / "pw", ids.pw_uid, ids.pw_gid)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = root / "data"

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"

    run(initdb, "-D", str(data), "-U", "sensorlm", "--pwfile", str(root / "pw"), "--auth-host=scram-sha-256",
        "--auth-local=scram-sha-256", "--no-sync")
    run(pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "60", "start",
        "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off")
    try:
        import psycopg

        with psycopg.connect(f"postgresql://sensorlm:{password}@127.0.0.1:{port}/postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://sensorlm:{password}@127.0.0.1:{port}/mlflow"
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"], capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)
