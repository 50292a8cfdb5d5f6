"""The runner of the commands docs/cluster.md marks `<!-- ci: TAG -->` (the `walkthrough` fixture of
conftest.py loads it by path: pytest runs with --import-mode=importlib)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
INFRA = REPO_ROOT / "infra"
DOC = REPO_ROOT / "docs" / "cluster.md"
# The loopback walkthrough of docs/cluster.md section 0, block by block, in the order a reader runs
# them; tests/infra/test_e2e.py runs every one, tests/infra/test_docs.py checks the doc has exactly these.
WALKTHROUGH = ("start", "refuse", "train", "submit-long", "stop-long", "stop")
_BLOCK = re.compile(r"<!-- ci: ([\w-]+) -->\n```bash\n(.*?)```", re.S)


def doc_blocks() -> dict[str, str]:
    """{tag: code} of every fenced bash block right after a `<!-- ci: TAG -->` line, in doc order."""
    blocks: dict[str, str] = {}
    for tag, code in _BLOCK.findall(DOC.read_text()):
        if tag in blocks:
            raise ValueError(f"docs/cluster.md: two blocks are tagged `ci: {tag}`")
        blocks[tag] = code
    return blocks


class DocSession:
    """Runs tagged blocks of docs/cluster.md as a reader would in one shell session.

    Each block runs in bash (``set -euo pipefail``) from the repository root and starts from the
    environment the previous block left (the blocks hand each other exported variables only).
    `python`, `ray` and `mlflow` are this interpreter's environment's; nothing of the caller's
    ``RAY_*``, ``MLFLOW_TRACKING_*`` or ``SENSORLM_*`` leaks in; the servers' state goes to
    `state_dir`.

    Args:
        state_dir: ``SENSORLM_SERVERS_DIR`` of the session.
    """

    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        for var in [k for k in env if k.startswith(("RAY_", "MLFLOW_TRACKING_", "SENSORLM_"))]:
            env.pop(var)
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
        env["SENSORLM_SERVERS_DIR"] = str(self.state_dir)
        env["OMP_NUM_THREADS"] = "1"
        self.env = env
        self.ran: list[str] = []

    def run(self, tag: str, timeout_s: float) -> subprocess.CompletedProcess:
        """Run the block tagged `tag`; on success the next block sees the environment it left."""
        code = doc_blocks()[tag]
        env_file = self.state_dir / ".doc_session_env.json"  # holds the admin password: private
        env_file.unlink(missing_ok=True)
        script = (
            "set -euo pipefail\n"
            f"{code}\n"
            f"(umask 077; {sys.executable} -c 'import json, os; print(json.dumps(dict(os.environ)))' > '{env_file}')\n"
        )
        result = subprocess.run(
            ["bash", "-c", script], cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout_s
        )
        if result.returncode == 0:
            self.env = json.loads(env_file.read_text())
            env_file.unlink()
        self.ran.append(tag)
        return result

    def stop_servers(self) -> None:
        """Stop whatever the blocks started, even if one of them failed half-way."""
        subprocess.run(
            [sys.executable, str(INFRA / "local" / "servers.py"), "stop", "--state-dir", str(self.state_dir)],
            capture_output=True, timeout=180,
        )
