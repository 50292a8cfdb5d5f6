"""Which model: resolve a model URI (registered version, alias, run, local directory) through
MLflow's own API, download it and rebuild the torch module from its package (nothing unpickled).
The one resolver of model URIs: evaluation, export and the sweeps' held-out scoring use it."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

from dataclasses import dataclass

from sensorlm.typed_config import redact
from sensorlm.tracking.package import ModelPackage, find_package_dir, load_model_package, read_mlmodel

RUN_ID = re.compile(r"[0-9a-f]{32}")  # an MLflow run id
_RUN_ID = RUN_ID


@dataclass
class ResolvedModel:
    """A model found in MLflow (or on disk) and loaded.

    Args:
        uri: the URI as given.
        package: the loaded model package (torch module, tokenizer, data stats).
        name: registered model name, if the model is a registered version.
        version: registered version, likewise.
        training_run_id: the run that logged the model (its metrics are the training curves).
    """

    uri: str
    package: ModelPackage
    name: str | None
    version: str | None
    training_run_id: str | None


# ---------------------------------------------------------------------------------------------
# model resolution

_ACCEPTED = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a 32-character run id, "
    "or a local model package directory"
)


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _registered_version(client, name: str, alias: str | None, version: str | None, uri: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as e:
        if _not_found(e):
            raise ValueError(f"model URI {uri!r}: no registered model named {name!r} at {redact(tracking_uri)}") from None
        raise
    if alias is not None:
        aliases = dict(registered.aliases or {})
        if alias not in aliases:
            have = ", ".join(f"@{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            raise ValueError(f"model URI {uri!r}: model {name!r} has no alias {alias!r} (aliases: {have})")
        version = str(aliases[alias])
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if _not_found(e):
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
            raise ValueError(
                f"model URI {uri!r}: model {name!r} has no version {version} (versions: {versions or 'none'})"
            ) from None
        raise


def _check_run(client, run_id: str, uri: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if _not_found(e):
            raise ValueError(f"model URI {uri!r}: no MLflow run with id {run_id} at {redact(tracking_uri)}") from None
        raise


def _version_of_run(client, run_id: str):
    """The newest registered version logged by `run_id`, or None."""
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return None
    return max(versions, key=lambda v: (int(v.version), v.name))


def _download_and_load(artifact_uri: str, uri: str, client=None, version=None) -> tuple[ModelPackage, str | None]:
    """Download a model and load its package; a registered `version` (with `client`) is verified
    against the digest recorded when it was registered."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from sensorlm.tracking.integrity import download_version

    with tempfile.TemporaryDirectory(prefix="sensorlm-eval-") as tmp:
        try:
            if version is not None:
                local = download_version(client, version.name, version.version, tmp)
            else:
                local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp)
        except MlflowException as e:
            raise ValueError(f"model URI {uri!r}: cannot download {artifact_uri}: {redact(e.message)}") from None
        root = Path(local)
        package = load_model_package(find_package_dir(root, uri))
        meta = read_mlmodel(root) or {}
        return package, meta.get("run_id")


def resolve_model(model_uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Find a model in the registry (or a run, or on disk), download it and load its package.

    Args:
        model_uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``, a bare
            32-character run id (``runs:/RUN_ID/model``), or a local directory holding a model
            package or a logged pyfunc model.
        tracking_uri: MLflow tracking URI (default: `resolve_tracking_uri`'s choice).

    Raises:
        ValueError: naming the URI and what is missing (model, alias, version, run).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ValueError(f"model URI must be a non-empty string ({_ACCEPTED}), got {model_uri!r}")
    uri = model_uri.strip()
    local = Path(uri).expanduser()
    if "://" not in uri and not uri.startswith(("models:", "runs:")) and local.is_dir():
        package_dir = find_package_dir(local, uri)
        meta = read_mlmodel(local) or {}
        return ResolvedModel(uri, load_model_package(package_dir), None, None, meta.get("run_id"))

    tracking_uri = resolve_tracking_uri(tracking_uri)
    # download_artifacts resolves models:/ and runs:/ through the global tracking URI.
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)

    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        m_alias = re.fullmatch(r"([^/@]+)@([^/@]+)", rest)
        m_version = re.fullmatch(r"([^/@]+)/(\d+)", rest)
        if m_alias:
            mv = _registered_version(client, m_alias[1], m_alias[2], None, uri, tracking_uri)
        elif m_version:
            mv = _registered_version(client, m_version[1], None, m_version[2], uri, tracking_uri)
        else:
            raise ValueError(f"model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        package, logged_run = _download_and_load(f"models:/{mv.name}/{mv.version}", uri, client, mv)
        return ResolvedModel(uri, package, mv.name, str(mv.version), mv.run_id or logged_run)

    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].partition("/")
        path = path.strip("/") or "model"
    elif _RUN_ID.fullmatch(uri):
        run_id, path = uri, "model"
    else:
        raise ValueError(f"unknown model URI {uri!r}: expected {_ACCEPTED}")
    _check_run(client, run_id, uri, tracking_uri)
    package, _ = _download_and_load(f"runs:/{run_id}/{path}", uri)
    mv = _version_of_run(client, run_id)
    if mv is None:
        return ResolvedModel(uri, package, None, None, run_id)
    return ResolvedModel(uri, package, mv.name, str(mv.version), run_id)


def pinned_version(model_uri: str, tracking_uri: str) -> tuple[str, str]:
    """(name, version) of ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` (an alias pinned to the
    version it points at now), checked against the registry; LookupError in one line otherwise."""
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.loading import MODEL_URI

    m = MODEL_URI.match(model_uri)
    if not m:
        raise LookupError(f"model {model_uri!r}: expected models:/name/version or models:/name@alias")
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    try:
        if m["alias"]:
            mv = client.get_model_version_by_alias(m["name"], m["alias"])
        else:
            mv = client.get_model_version(m["name"], m["version"])
    except Exception as exc:  # MlflowException: not found, or the store cannot be reached
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LookupError(f"model {model_uri}: not found in the registry at {redact(tracking_uri)} "
                          f"({redact(detail)})") from None
    return m["name"], str(mv.version)

