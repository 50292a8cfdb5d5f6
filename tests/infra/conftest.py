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
