"""MLflow helpers: tracking URI resolution, experiments, params, run tags, registry versions.

Conventions used by the trainer and the sweeps:
- Registered model versions carry their evaluation metrics as version tags ``metric.<name>``
  (string floats), so the champion can be compared without opening its run.
- The alias ``champion`` marks the version a sweep should beat.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.entities import Param
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from sensorlm.typed_config import flatten, redact, to_dict

METRIC_TAG_PREFIX = "metric."
DEFAULT_DB_NAME = "mlflow.db"
DEFAULT_ARTIFACT_DIR = "mlruns"
# MLflow's limits (mlflow.utils.validation): param values <= 6000 chars, 100 params per batch.
MAX_PARAM_VALUE_LENGTH = 6000
MAX_PARAMS_PER_BATCH = 100
TRUNCATION_MARK = "...[truncated]"


def _say(msg: str) -> None:
    print(f"[sensorlm.tracking] {msg}", flush=True)


def resolve_tracking_uri(configured: str | None) -> str:
    """Tracking URI to use: the configured one, else ``MLFLOW_TRACKING_URI``, else a local SQLite file.

    Args:
        configured: the URI from the run config (None or "" to fall through).

    Returns:
        The URI; the default is ``sqlite:///<cwd>/mlflow.db`` (the registry needs a database
        store, so the default is SQLite rather than a plain ``./mlruns`` file store). A relative
        SQLite path is made absolute here, once: Ray workers and sweep trials run in other folders.
    """
    uri = configured or os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / DEFAULT_DB_NAME}"
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        raw = unquote(uri[len(prefix):])
        if raw and raw != ":memory:" and not raw.startswith("/"):
            uri = prefix + str((Path.cwd() / raw).resolve())
    if redact(uri) != uri:
        # MLflow prints "View run ... at: <the URI>" when a run ends: not with a password in it
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    return uri


class TrackingUnavailable(ValueError):
    """The tracking server cannot be used (unreachable, or it refused the login); one line."""


def check_tracking_server(uri: str, timeout: float = 5.0) -> None:
    """Fail within seconds, naming the URI, when a tracking server is down or refuses our login.

    MLflow's own client retries a dead server with exponential backoff for minutes, silently; a
    job checks once before it starts anything. Local stores (sqlite, files) need no check.

    Args:
        uri: the resolved tracking URI.
        timeout: seconds to wait for the server.

    Raises:
        TrackingUnavailable: connection refused or timed out, or HTTP 401/403.
    """
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    import requests

    shown = redact(uri)
    user = os.environ.get("MLFLOW_TRACKING_USERNAME") or (unquote(parsed.username) if parsed.username else None)
    password = os.environ.get("MLFLOW_TRACKING_PASSWORD") or (unquote(parsed.password) if parsed.password else None)
    base = parsed._replace(netloc=parsed.hostname + (f":{parsed.port}" if parsed.port else "")).geturl().rstrip("/")
    try:
        resp = requests.get(f"{base}/api/2.0/mlflow/experiments/search", params={"max_results": 1},
                            auth=(user, password) if user else None, timeout=timeout)
    except requests.RequestException as exc:
        reason = ("connection refused or no route" if isinstance(exc, requests.ConnectionError)
                  else f"no answer in {timeout:.0f} s" if isinstance(exc, requests.Timeout) else type(exc).__name__)
        raise TrackingUnavailable(f"tracking server {shown} is unreachable ({reason}); start it, "
                                  "or unset MLFLOW_TRACKING_URI to use a local sqlite store") from None
    if resp.status_code in (401, 403):
        who = f"user {user!r}" if user else "no login (MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD unset)"
        raise TrackingUnavailable(f"tracking server {shown} refused {who} (HTTP {resp.status_code})")


def ui_hint(uri: str) -> str:
    """How to look at runs in this store: a command for a local store, the address of a server."""
    shown = redact(uri)
    if urlparse(uri).scheme in ("http", "https"):
        return f"open {shown} in a browser"
    return f"mlflow ui --backend-store-uri {shown}"


def default_artifact_location(tracking_uri: str) -> str | None:
    """Artifact root for new experiments on a local SQLite store: ``mlruns`` beside the DB file.

    For other stores (a tracking server, a file store) None: the server's own default applies.

    Args:
        tracking_uri: the resolved tracking URI.
    """
    parsed = urlparse(tracking_uri)
    if parsed.scheme != "sqlite":
        return None
    # sqlite:////abs/path.db -> path "//abs/path.db"; sqlite:///rel.db -> "/rel.db" (relative).
    raw = unquote(tracking_uri[len("sqlite:///") :])
    if raw in ("", ":memory:"):
        return (Path.cwd() / DEFAULT_ARTIFACT_DIR).resolve().as_uri()
    db_path = Path(raw)
    if not db_path.is_absolute():
        db_path = Path.cwd() / db_path
    return (db_path.parent / DEFAULT_ARTIFACT_DIR).resolve().as_uri()


def setup_experiment(name: str, tracking_uri: str, artifact_location: str | None = None) -> str:
    """Point MLflow at `tracking_uri` and make `name` the active experiment (created if needed).

    Args:
        name: experiment name.
        tracking_uri: a resolved URI (see :func:`resolve_tracking_uri`).
        artifact_location: artifact root for a new experiment; by default ``mlruns`` next to a
            SQLite DB, so artifacts never land in whatever directory the process happens to run in.

    Returns:
        The experiment id.
    """
    if not name:
        raise ValueError("experiment name must be a non-empty string")
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = artifact_location or default_artifact_location(tracking_uri)
        experiment_id = client.create_experiment(name, artifact_location=location)
        _say(f"created experiment {name!r} (id {experiment_id}) at {redact(tracking_uri)}")
    else:
        if experiment.lifecycle_stage == "deleted":
            raise ValueError(
                f"experiment {name!r} at {redact(tracking_uri)} is deleted; restore it "
                f"(MlflowClient().restore_experiment({experiment.experiment_id!r})) or pick another name"
            )
        experiment_id = experiment.experiment_id
        if artifact_location and experiment.artifact_location.rstrip("/") != artifact_location.rstrip("/"):
            _say(f"experiment {name!r} keeps its artifact location {experiment.artifact_location} "
                 f"({artifact_location} applies to a new experiment)")
    mlflow.set_experiment(experiment_id=experiment_id)
    return experiment_id


def _param_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (bool, int, float)):
        return str(value)
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return str(value)


def config_params(cfg: Any) -> tuple[dict[str, str], list[str]]:
    """Flattened ``{dotted.key: str}`` params of a config and the keys whose values were cut.

    Args:
        cfg: a dataclass config or a nested mapping.
    """
    data = redact(to_dict(cfg) if dataclasses.is_dataclass(cfg) else cfg)  # no credential becomes a param
    if not isinstance(data, Mapping):
        raise ValueError(f"config params: expected a dataclass or mapping, got {type(cfg).__name__}")
    params: dict[str, str] = {}
    truncated: list[str] = []
    for key, value in flatten(data).items():
        text = _param_value(value)
        if len(text) > MAX_PARAM_VALUE_LENGTH:
            text = text[: MAX_PARAM_VALUE_LENGTH - len(TRUNCATION_MARK)] + TRUNCATION_MARK
            truncated.append(key)
        params[key] = text
    return params, truncated


def log_config_params(cfg_dict: Any, run_id: str | None = None, uri: str | None = None) -> dict[str, str]:
    """Log a (nested) config as flattened MLflow params, in batches of 100.

    Values longer than MLflow's 6000-character limit are cut and end with ``...[truncated]``;
    the cut keys are printed and recorded in the run tag ``sensorlm.truncated_params``.

    Args:
        cfg_dict: a dataclass config or a nested mapping.
        run_id: run to log to; default the active run.
        uri: its tracking URI (default: the current one).

    Returns:
        The params as logged.
    """
    if run_id is None:
        active = mlflow.active_run()
        if active is None:
            raise ValueError("log_config_params: no active MLflow run and no run_id given")
        run_id = active.info.run_id
    params, truncated = config_params(cfg_dict)
    client = MlflowClient(uri)
    items = [Param(k, v) for k, v in params.items()]
    for start in range(0, len(items), MAX_PARAMS_PER_BATCH):
        client.log_batch(run_id, params=items[start : start + MAX_PARAMS_PER_BATCH], synchronous=True)
    if truncated:
        client.set_tag(run_id, "sensorlm.truncated_params", ",".join(truncated))
        _say(f"params longer than {MAX_PARAM_VALUE_LENGTH} chars were truncated: {', '.join(truncated)}")
    return params


def _git_info(start: Path) -> tuple[str, bool] | None:
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=start,
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip(), bool(status.stdout.strip())


def _ray_job_id() -> str | None:
    job_id = os.environ.get("RAY_JOB_ID")
    if job_id:
        return job_id
    # Only ask Ray when this process already uses it: importing ray or calling ray.init here
    # would start a cluster just to read an id.
    ray = sys.modules.get("ray")
    if ray is None:
        return None
    try:
        if not ray.is_initialized():
            return None
        return str(ray.get_runtime_context().get_job_id())
    except Exception:  # a half-initialised Ray must not break logging
        return None


def sensorlm_version() -> str:
    """sensorlm's version: the package attribute, else the installed distribution's, else "unknown"."""
    import sensorlm

    version = getattr(sensorlm, "__version__", None)
    if version:
        return str(version)
    try:
        return importlib.metadata.version("sensorlm")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def run_tags(manifest_path: str | Path | None = None) -> dict[str, str]:
    """Provenance tags for a run.

    Keys: ``git_commit`` and ``git_dirty`` (when the working dir or the sensorlm source is in a
    git repo), ``dataset_manifest_sha256`` (when a manifest is given), ``ray_job_id`` (from
    ``RAY_JOB_ID`` or an already-initialised Ray), ``hostname``, ``sensorlm_version``.

    Args:
        manifest_path: a dataset's manifest.json, or the dataset directory holding it.
    """
    tags: dict[str, str] = {"hostname": socket.gethostname(), "sensorlm_version": sensorlm_version()}
    for start in (Path.cwd(), Path(__file__).resolve().parents[1]):
        info = _git_info(start)
        if info is not None:
            tags["git_commit"], dirty = info
            tags["git_dirty"] = str(dirty).lower()
            break
    if manifest_path is not None:
        path = Path(manifest_path)
        if path.is_dir():
            path = path / "manifest.json"
        if not path.is_file():
            raise FileNotFoundError(f"dataset manifest {path} does not exist")
        tags["dataset_manifest_sha256"] = sha256_file(path)
    job_id = _ray_job_id()
    if job_id:
        tags["ray_job_id"] = job_id
    return tags


def _format_metric(value: Any, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)  # numpy / torch scalars
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r}: expected a number, got {value!r}") from None
    return repr(float(value))


def register_version(
    model: Any,
    name: str,
    metrics: Mapping[str, Any],
    alias: str | None = None,
    client: MlflowClient | None = None,
) -> ModelVersion:
    """Register a logged model as a new version of `name`, tag it with the digest of its files
    (`sensorlm.tracking.integrity`) and its metrics, set `alias`.

    If `model` is a ModelInfo already registered under `name` (``log_model(...,
    registered_model_name=name)``), that version is reused instead of registering twice.

    Args:
        model: a ``ModelInfo`` from ``log_model`` or a model URI (``runs:/...``, ``models:/...``).
        name: registered model name.
        metrics: evaluation metrics, stored as version tags ``metric.<key>``.
        alias: optional alias to point at the new version (e.g. "champion").
        client: MLflow client (default: one for the current tracking URI).

    Returns:
        The registered ModelVersion (with tags as set).
    """
    client = client or MlflowClient()
    metric_tags = {f"{METRIC_TAG_PREFIX}{k}": _format_metric(v, k) for k, v in metrics.items()}
    version = None
    if isinstance(model, str):
        uri = model
    else:
        uri = getattr(model, "model_uri", None)
        if uri is None:
            raise ValueError(f"register_version: expected a ModelInfo or a URI string, got {type(model).__name__}")
        registered = getattr(model, "registered_model_version", None)
        # log_model(registered_model_name=...) already created a version; reuse it only when it
        # belongs to this name.
        if registered is not None and _version_source_matches(client, name, registered, model):
            version = str(registered)
    if version is None:
        mv = mlflow.register_model(uri, name)
        version = str(mv.version)
    from sensorlm.tracking.integrity import record_digest

    record_digest(client, name, version)  # first: every later load of this version checks it
    for key, value in metric_tags.items():
        client.set_model_version_tag(name, version, key, value)
    if alias:
        client.set_registered_model_alias(name, alias, version)
    return client.get_model_version(name, version)


def set_version_tags(client: MlflowClient, name: str, version: str | int, tags: Mapping[str, str]) -> list[str]:
    """Set tags on a model version; returns the keys the server refused (HTTP 403).

    With sensorlm's auth app the audit tags (``metric.*``, ``eval.*``, ``holdout.*``, ...) are
    write-once for a job's login: a second evaluation or sweep may not change them.

    Args:
        client: MLflow client.
        name: registered model name.
        version: the version.
        tags: key -> value.
    """
    refused = []
    for key, value in tags.items():
        try:
            client.set_model_version_tag(name, str(version), key, value)
        except MlflowException as e:
            if e.error_code != "PERMISSION_DENIED":
                raise
            refused.append(key)
    return refused


def _version_source_matches(client: MlflowClient, name: str, version: Any, info: Any) -> bool:
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        return False
    model_id = getattr(info, "model_id", None)
    if model_id and getattr(mv, "model_id", None) == model_id:
        return True
    # SQLite stores leave ModelVersion.model_id empty; the source is the logged model's URI.
    return bool(mv.source) and mv.source == getattr(info, "model_uri", None)


def get_alias_version(name: str, alias: str, client: MlflowClient | None = None) -> ModelVersion | None:
    """The version `alias` points to, or None when the model or the alias does not exist.

    Args:
        name: registered model name.
        alias: alias, e.g. "champion".
        client: MLflow client (default: one for the current tracking URI).
    """
    client = client or MlflowClient()
    # Read the alias table instead of catching get_model_version_by_alias's error: stores
    # report a missing alias with different error codes.
    try:
        registered = client.get_registered_model(name)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    version = (registered.aliases or {}).get(alias)
    if version is None:
        return None
    return client.get_model_version(name, str(version))


def set_alias(name: str, alias: str, version: int | str, client: MlflowClient | None = None) -> None:
    """Point `alias` of registered model `name` at `version`.

    Args:
        name: registered model name.
        alias: alias to set (moved if it exists).
        version: the version number.
        client: MLflow client (default: one for the current tracking URI).
    """
    client = client or MlflowClient()
    client.set_registered_model_alias(name, alias, str(version))


def version_metric(version: ModelVersion, metric: str) -> float | None:
    """Metric stored on a model version's ``metric.<metric>`` tag, or None if absent."""
    raw = (version.tags or {}).get(f"{METRIC_TAG_PREFIX}{metric}")
    if raw is None:
        return None
    try:
        return float(raw)
    except ValueError:
        raise ValueError(
            f"model {version.name} version {version.version}: tag {METRIC_TAG_PREFIX}{metric}={raw!r} is not a number"
        ) from None


def champion_metric(
    name: str, metric: str, alias: str = "champion", client: MlflowClient | None = None
) -> float | None:
    """The `metric` tag of the version `alias` points to; None if there is no such alias or tag.

    Args:
        name: registered model name.
        metric: metric key as passed to :func:`register_version`.
        alias: alias of the version to read.
        client: MLflow client (default: one for the current tracking URI).
    """
    version = get_alias_version(name, alias, client=client)
    if version is None:
        return None
    return version_metric(version, metric)


# A run the workers stop on purpose (a non-finite loss, an error that would recur) carries the
# reason here: Ray's result keeps only checkpointed reports, so this is how the driver learns it.
FAILURE_TAG = "sensorlm.failure"


def run_failure(tracking_uri: str, run_id: str) -> str | None:
    """Why the workers stopped the run, or None."""
    return MlflowClient(tracking_uri).get_run(run_id).data.tags.get(FAILURE_TAG)


def record_run_failure(tracking_uri: str, run_id: str, message: str) -> None:
    MlflowClient(tracking_uri).set_tag(run_id, FAILURE_TAG, message)


def clear_run_failure(tracking_uri: str, run_id: str) -> None:
    """Forget a failure recorded by an earlier attempt of the run (it is being tried again)."""
    if run_failure(tracking_uri, run_id) is not None:
        MlflowClient(tracking_uri).delete_tag(run_id, FAILURE_TAG)
