"""docs/cluster.md: the commands it shows refer to files, Secrets and keys that exist, and (slow)
the blocks marked `<!-- ci: servers -->` / `<!-- ci: e2e -->` run verbatim on loopback."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "cluster.md"
K8S = REPO_ROOT / "infra" / "k8s"


def doc_blocks(tags: set[str]) -> list[tuple[str, str]]:
    """(tag, code) of every fenced block right after a `<!-- ci: TAG -->` line, in order."""
    text = DOC.read_text()
    pattern = re.compile(r"<!-- ci: (\w+) -->\n```bash\n(.*?)```", re.S)
    return [(m.group(1), m.group(2)) for m in pattern.finditer(text) if m.group(1) in tags]


def run_doc_blocks(tags: set[str], state_dir: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """Run the tagged blocks in one bash session from the repository root, as a reader would.

    The state dir is the test's own; `python` and `ray` are this interpreter's environment's.
    """
    blocks = doc_blocks(tags)
    script = "set -euo pipefail\n" + "\n".join(code for _, code in blocks)
    env = dict(os.environ)
    for var in [k for k in env if k.startswith(("RAY_", "MLFLOW_TRACKING_", "SENSORLM_"))]:
        env.pop(var)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["SENSORLM_SERVERS_DIR"] = str(state_dir)
    env["OMP_NUM_THREADS"] = "1"
    try:
        return subprocess.run(
            ["bash", "-c", script], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s
        )
    finally:
        # Whatever the blocks started is stopped even if one of them failed half-way.
        subprocess.run([sys.executable, str(REPO_ROOT / "infra/local/servers.py"), "stop", "--state-dir", str(state_dir)],
                       capture_output=True, timeout=120)


def _code_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", DOC.read_text(), re.S)


def _commands() -> list[list[str]]:
    """Every command of every bash block, line continuations joined, split into words."""
    out = []
    for block in _code_blocks():
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" # ")[0].strip()
            if line and not line.startswith("#"):
                try:
                    out.append(shlex.split(line))
                except ValueError:
                    continue  # heredoc bodies and such
    return out


def test_ci_blocks_exist_in_order():
    tags = [tag for tag, _ in doc_blocks({"servers", "e2e"})]
    assert tags[0] == "servers" and tags[-1] == "servers", "the loopback flow must start and stop the servers"
    assert "e2e" in tags
    first = doc_blocks({"servers"})[0][1]
    assert "servers.py start mlflow --auth" in first and "servers.py start ray" in first
    assert "servers.py stop" in doc_blocks({"servers"})[-1][1]


def test_paths_in_the_doc_exist():
    text = DOC.read_text()
    path_re = r"(?<![\w/.])((?:infra|jobs|configs|tests|docs)/[\w./*-]+\.(?:py|yaml|sh|md)|infra/docker/Dockerfile)"
    paths = set(re.findall(path_re, text))
    assert len(paths) > 10
    for p in paths:
        matches = list(REPO_ROOT.glob(p)) if "*" in p else [REPO_ROOT / p]
        assert matches and all(m.exists() for m in matches), f"docs/cluster.md mentions {p}, which does not exist"


def test_secret_commands_create_every_secret_and_key_the_manifests_use():
    created: dict[str, set[str]] = {}
    for words in _commands():
        if words[:1] == ["kubectl"] and "secret" in words and "generic" in words:
            name = words[words.index("generic") + 1]
            keys = {w.split("=", 2)[1] for w in words if w.startswith("--from-literal=")}
            created[name] = keys
    example = {
        d["metadata"]["name"]: set(d["stringData"]) for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    }
    assert created == example, "docs/cluster.md step 3 must create exactly the Secrets and keys of secrets.example.yaml"


def test_applied_manifests_exist_and_the_example_is_never_applied():
    applied = []
    for words in _commands():
        if "-f" in words and words[0] in ("kubectl", "sed"):
            applied += [w for w in words if w.startswith("infra/")]
    assert "infra/k8s/secrets.example.yaml" not in applied
    for p in applied:
        assert (REPO_ROOT / p).is_file(), f"docs/cluster.md applies {p}, which does not exist"
    for needed in ("namespace", "storage", "postgres", "mlflow", "raycluster", "rayjob"):
        assert f"infra/k8s/{needed}.yaml" in applied, f"the walkthrough never applies infra/k8s/{needed}.yaml"


def test_submitted_training_commands_are_valid():
    from sensorlm.training.config import load_train_config

    submits = [w for w in _commands() if w[:3] == ["ray", "job", "submit"] and "jobs/train_sensorlm.py" in w]
    assert len(submits) >= 2, "expected the loopback and the cluster submissions"
    for words in submits:
        entry = words[words.index("--") + 1 :]
        assert entry[:2] == ["python", "jobs/train_sensorlm.py"]
        config = entry[entry.index("--config") + 1]
        overrides = [w for w in entry[2:] if "=" in w]
        assert (REPO_ROOT / config).is_file(), f"{config} does not exist"
        # An s3:// storage path is Ray Train's to resolve; every other key goes through the loader.
        overrides = [o for o in overrides if not o.startswith("storage_path=s3://")]
        cfg = load_train_config(str(REPO_ROOT / config), overrides)
        assert cfg.name, "submitted runs get a fixed name so a resubmission resumes"


def test_image_names_in_build_commands_match_the_manifests():
    built = set()
    for words in _commands():
        if words[:2] == ["docker", "build"]:
            tag = words[words.index("-t") + 1]
            built.add(tag.split("/")[-1])
    assert built == {"sensorlm:latest", "sensorlm-mlflow:latest"}
    text = "".join(p.read_text() for p in K8S.glob("*.yaml"))
    for image in built:
        assert f"image: {image}" in text, f"no manifest uses {image}"


@pytest.mark.slow
def test_loopback_servers_walkthrough_runs(tmp_path):
    result = run_doc_blocks({"servers"}, tmp_path / "state", timeout_s=300)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    lines = result.stdout.splitlines()
    assert lines.count("401") == 2, "both servers must refuse a request without credentials"
    assert any(line.startswith("job sees MLflow at http://127.0.0.1:") for line in lines), out[-4000:]
    assert '"unauthenticated_status": 401' in result.stdout
    assert not (tmp_path / "state" / "ray.json").exists() and not (tmp_path / "state" / "mlflow.json").exists()


@pytest.mark.slow
def test_loopback_walkthrough_trains_and_registers_a_model(tmp_path):
    """The whole section 0: servers, a short training job on the Ray head, the registered model."""
    result = run_doc_blocks({"servers", "e2e"}, tmp_path / "state", timeout_s=1500)
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-8000:]
    assert re.search(r"^registered: sensorlm version \d+ run \w+ READY$", result.stdout, re.M), out[-6000:]
