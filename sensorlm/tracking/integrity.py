"""What a registered version holds, checked wherever it is loaded.

A job's MLflow login (EDIT on its experiment) can upload artifacts, so it could overwrite the
weights or the code of a version after the promoter gave it ``@champion``. At registration the
digest of the whole logged model (weights, config, tokenizer, data stats, the pyfunc's code and
the sensorlm source it carries, MLmodel) is recorded as the version tag `DIGEST_TAG`; the tag is
write-once for a job (the auth app's rule, infra/mlflow_auth) and every load of a registered
version (evaluate, embed, export, sweeps, promote, `loading.load_model`) recomputes it from the files it
downloaded and refuses a mismatch.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

DIGEST_TAG = "sensorlm.package_sha256"
# The version tags the promotion gate and this check rely on: write-once for a job's login, changed
# only with MANAGE (infra/mlflow_auth/sensorlm_mlflow_auth.py names the same keys; a test checks).
AUDIT_TAGS = ("sensorlm.promoted", DIGEST_TAG, "sensorlm.val_split", "sensorlm.holdout_split")
AUDIT_TAG_PREFIXES = ("metric.", "eval.", "holdout.")
# MLflow rewrites this file of the logged model when a version is registered (name and version).
_NOT_DIGESTED = {"registered_model_meta"}


class ModelIntegrityError(ValueError):
    """A registered version's files are not the ones it was registered with; one line."""


def model_digest(model_dir: str | Path) -> str:
    """SHA-256 over every file of a logged model directory: each file's path and content hash.

    Args:
        model_dir: the downloaded model (MLmodel, code/, artifacts/, ...), a package directory, or
            the one file a version's source names.
    """
    root = Path(model_dir)
    lines = []
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    if root.is_file():  # a version whose source is a single file
        root = root.parent
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel in _NOT_DIGESTED:
            continue
        digest = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        lines.append(f"{rel}\0{digest.hexdigest()}\n")
    if not lines:
        raise ModelIntegrityError(f"model directory {root} holds no files")
    return hashlib.sha256("".join(lines).encode()).hexdigest()


def verify_model_dir(model_dir: str | Path, expected: str | None, what: str,
                     say: Callable[[str], None] = print) -> str:
    """Recompute the digest of a downloaded version and compare it with the one recorded.

    Args:
        model_dir: the downloaded model directory.
        expected: the version's `DIGEST_TAG`, or None for a version registered before digests.
        what: the version, for messages (``models:/sensorlm/3``).
        say: where the one-line notice for an unverified (digest-less) version goes.

    Raises:
        ModelIntegrityError: the files differ from what was registered.
    """
    actual = model_digest(model_dir)
    if expected is None:
        say(f"[sensorlm] warning: {what} has no {DIGEST_TAG} tag (registered before sensorlm recorded package "
            "digests): its files are not verified")
    elif actual != expected:
        raise ModelIntegrityError(
            f"{what}: its files do not match the digest recorded when it was registered ({DIGEST_TAG} "
            f"{expected[:16]}..., the files give {actual[:16]}...): its artifacts were changed after registration; "
            "refusing to load it"
        )
    return actual


def _download(client: Any, source: str, dst: str | Path) -> Path:
    """`source` (a version's download URI) into `dst`, without MLflow's per-file progress bar."""
    import mlflow

    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(dst),
                                                        tracking_uri=client.tracking_uri))
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def download_version(client: Any, name: str, version: str | int, dst: str | Path,
                     say: Callable[[str], None] = print) -> Path:
    """Download registered version `name`/`version` into `dst` and verify it (see the module doc).

    Args:
        client: an MlflowClient of the registry.
        name: registered model name.
        version: its version.
        dst: an empty local directory.
        say: printer for the notice about a version without a digest.

    Returns:
        The local model directory.
    """
    mv = client.get_model_version(name, str(version))
    local = _download(client, client.get_model_version_download_uri(name, str(version)), dst)
    verify_model_dir(local, (mv.tags or {}).get(DIGEST_TAG), f"models:/{name}/{version}", say)
    return local


def record_digest(client: Any, name: str, version: str | int) -> str:
    """Digest the files of a just-registered version (as the registry serves them) and tag it.

    Args:
        client: an MlflowClient with the registering job's login.
        name: registered model name.
        version: the new version.
    """
    recorded = (client.get_model_version(name, str(version)).tags or {}).get(DIGEST_TAG)
    if recorded:  # a version registered by log_model(registered_model_name=...) and reused
        return recorded
    with tempfile.TemporaryDirectory(prefix="sensorlm-digest-") as tmp:
        digest = model_digest(_download(client, client.get_model_version_download_uri(name, str(version)), tmp))
    client.set_model_version_tag(name, str(version), DIGEST_TAG, digest)
    return digest
