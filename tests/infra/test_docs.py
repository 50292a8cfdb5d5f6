"""docs/cluster.md: the commands it shows refer to files, Secrets and keys that exist, and its
loopback walkthrough is exactly the blocks tests/infra/test_e2e.py runs (that is where they run).
README's "Run on a cluster" shows only commands of docs/cluster.md, its loopback ones from those blocks."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DOC = REPO_ROOT / "docs" / "cluster.md"
README = REPO_ROOT / "README.md"
K8S = REPO_ROOT / "infra" / "k8s"


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


def test_ci_blocks_are_the_walkthrough_test_e2e_runs(walkthrough):
    blocks = walkthrough.doc_blocks()
    assert tuple(blocks) == walkthrough.WALKTHROUGH, "test_e2e.py runs WALKTHROUGH (doc_walkthrough.py) block by block"
    assert "servers.py start mlflow --auth" in blocks["start"] and "servers.py start ray --with-mlflow" in blocks["start"]
    assert "ray job submit --submission-id loopback-demo --working-dir ." in blocks["train"]
    assert "ray job logs loopback-demo" in blocks["train"]
    assert "ray job submit --no-wait --submission-id loopback-long" in blocks["submit-long"]
    assert "ray job stop loopback-long" in blocks["stop-long"]
    assert blocks["stop"].strip() == "python infra/local/servers.py stop"
    # Secrets never travel in a job's runtime env (ray job list and the dashboard show it).
    assert "--runtime-env-json" not in "".join(blocks.values())


def _lines(code: str) -> list[str]:
    return [line.strip() for line in code.splitlines() if line.strip()]


def test_readme_cluster_section_shows_the_docs_commands(walkthrough):
    text = README.read_text()
    assert "[Run on a cluster](#run-on-a-cluster)" in text and "\n## Run on a cluster\n" in text
    section = text.split("\n## Run on a cluster\n", 1)[1].split("\n## ", 1)[0]
    loopback, cluster = re.findall(r"```bash\n(.*?)```", section, re.S)
    # Run verbatim in CI: every loopback line is a line of a block test_e2e.py runs.
    ci_lines = {line for code in walkthrough.doc_blocks().values() for line in _lines(code)}
    for line in _lines(loopback):
        assert line in ci_lines, f"README runs {line!r}, which no CI block of docs/cluster.md runs"
    for needed in ("servers.py start mlflow --auth", "ray job submit", "search_model_versions", "servers.py stop"):
        assert needed in loopback
    # The cluster commands are docs/cluster.md's (checked against the manifests below).
    doc_lines = {line for code in _code_blocks() for line in _lines(code)}
    for line in _lines(cluster):
        assert line in doc_lines, f"README shows {line!r}, which docs/cluster.md does not"
    for needed in ("docker push", "render.py", "kubectl apply -f build/k8s/namespace.yaml", "build/k8s/raycluster.yaml",
                   "ray job submit", "jobs/promote.py"):
        assert needed in cluster


def test_paths_in_the_doc_exist():
    text = DOC.read_text()
    path_re = r"(?<![\w/.])((?:infra|jobs|configs|tests|docs)/[\w./*-]+\.(?:py|yaml|sh|md)|infra/docker/Dockerfile)"
    paths = set(re.findall(path_re, text))
    assert len(paths) > 10
    for p in paths:
        matches = list(REPO_ROOT.glob(p)) if "*" in p else [REPO_ROOT / p]
        assert matches and all(m.exists() for m in matches), f"docs/cluster.md mentions {p}, which does not exist"


def test_secret_commands_create_every_secret_and_key_the_manifests_use():
    created: dict[tuple[str, str], set[str]] = {}
    for words in _commands():
        if words[:1] == ["kubectl"] and "secret" in words and "generic" in words:
            name = words[words.index("generic") + 1]
            namespace = words[words.index("-n") + 1]
            keys = {w.split("=", 2)[1] for w in words if w.startswith(("--from-literal=", "--from-file="))}
            created[(namespace, name)] = keys
    example = {
        (d["metadata"]["namespace"], d["metadata"]["name"]): set(d["stringData"])
        for d in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text())
    }
    assert created == example, "docs/cluster.md step 3 must create exactly the Secrets (and namespaces, keys) of secrets.example.yaml"


def _doc_and_readme_commands():
    readme = README.read_text()
    blocks = _code_blocks() + re.findall(r"```bash\n(.*?)```", readme, re.S)
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                yield line


SECRET_WORD = re.compile(r"(?i)password|secret|token|access-key|flask")


def test_no_password_on_a_command_line():
    """Secrets travel in files and environment variables, never in argv (ps, shell history)."""
    for line in _doc_and_readme_commands():
        for m in re.finditer(r"--from-literal=([\w-]+)=(\S+)", line):
            key, value = m.groups()
            assert not SECRET_WORD.search(key), f"{line!r}: secret key {key} as a literal; use --from-file"
            assert "$" not in value, f"{line!r}: a computed value on the command line; use --from-file"
        assert not re.search(r"curl\b.*\s-u\s", line), f"{line!r}: curl -u puts the password in argv"
        assert not re.search(r"://[^/\s:@]+:[^@\s/]+@", line), f"{line!r}: a URL with a password"
        assert "--password" not in line, f"{line!r}: a password flag"
        # `export VAR="$(...)"` is a shell builtin: the value goes to the environment, not to an argv.
        assert not re.search(r"\bpassword\b\S*\s*:\s*\$\(", line), f"{line!r}: a password built into an argument"


def test_threat_model_names_every_credential_and_the_promotion_step():
    text = DOC.read_text()
    assert "\n## Who holds what\n" in text and "\n## Promotion: moving `@champion`\n" in text
    section = text.split("\n## Who holds what\n", 1)[1].split("\n## 0. ", 1)[0]
    for holder in ("admin", "promoter", "job user", "Ray token", "service account", "instance profile"):
        assert holder in section, f"'Who holds what' does not say who holds the {holder}"
    for secret in yaml.safe_load_all((K8S / "secrets.example.yaml").read_text()):
        assert secret["metadata"]["name"] in section, f"'Who holds what' omits {secret['metadata']['name']}"
    promotion = text.split("\n## Promotion: moving `@champion`\n", 1)[1].split("\n## ", 1)[0]
    assert "python jobs/promote.py sensorlm" in promotion and "env mlflow --as promoter" in promotion
    assert "sensorlm.champion_candidate" in promotion and "sensorlm.promotion_pending" in promotion


def test_applied_manifests_exist_and_the_example_is_never_applied():
    """Manifests are applied as infra/k8s/render.py writes them (build/k8s/, digests filled in)."""
    applied = []
    for words in _commands():
        if "-f" in words and words[0] == "kubectl":
            applied += [w for w in words if w.startswith(("infra/", "build/"))]
    assert not [p for p in applied if p.startswith("infra/k8s/")], "apply the rendered build/k8s/ files, never the templates"
    assert "build/k8s/secrets.example.yaml" not in applied
    for p in applied:
        assert (K8S / Path(p).name).is_file(), f"docs/cluster.md applies {p}, whose template infra/k8s/{Path(p).name} does not exist"
    for needed in ("namespace", "networkpolicy", "storage", "postgres", "mlflow", "raycluster", "rayjob"):
        assert f"build/k8s/{needed}.yaml" in applied, f"the walkthrough never applies build/k8s/{needed}.yaml"
    render_at = next(i for i, w in enumerate(_commands()) if w[:2] == ["python", "infra/k8s/render.py"])
    first_apply = next(i for i, w in enumerate(_commands()) if w[:2] == ["kubectl", "apply"])
    assert render_at < first_apply, "render.py runs before the first kubectl apply"


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
            assert tag.endswith(":$TAG") and tag.startswith("$REGISTRY/"), f"{tag}: push under the registry, pin by digest"
            built.add(tag.split("/")[-1].split(":")[0])
    assert built == {"sensorlm", "sensorlm-mlflow"}
    text = "".join(p.read_text() for p in K8S.glob("*.yaml"))
    for image in built:
        digest = image.upper().replace("-", "_") + "_DIGEST"
        assert f"image: ${{REGISTRY}}/{image}@sha256:${{{digest}}}" in text, f"no manifest runs {image} by digest"
        exported = [w for w in _commands() if w[:1] == ["export"] and w[1].startswith(f"{digest}=")]
        assert exported, f"docs/cluster.md never sets {digest} for render.py"
