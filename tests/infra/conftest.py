"""Shared helpers of the infra tests: the repository's paths and the local server script as a module."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"


def load_servers_module():
    """Import infra/local/servers.py (a script, not a package module) once per session."""
    name = "sensorlm_infra_servers"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, INFRA / "local" / "servers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def servers():
    return load_servers_module()
