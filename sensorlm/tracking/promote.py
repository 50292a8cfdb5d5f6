"""Promotion: moving an alias (``@champion``) is a separate step with its own MLflow credential.

On a tracking server with sensorlm's identities (docs/cluster.md, "Who holds what") training jobs
log as a job user that may register versions but not move aliases; only the promoter user (MANAGE
on the registered model) may. A job that would have promoted its version therefore *nominates* it
(`mark_candidate`: version tags naming the alias and the reason) and prints the one command that
promotes it, to be run by whoever holds the promoter's login:

    MLFLOW_TRACKING_USERNAME=<promoter> MLFLOW_TRACKING_PASSWORD=<from a file or secret store> \\
        python jobs/promote.py sensorlm 7 --alias champion

On a server without authentication (the embedded sqlite default) the job sets the alias itself,
as before.
"""

from __future__ import annotations

import os
import shlex
import tempfile
import time
from typing import Any

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

CANDIDATE_TAG = "sensorlm.champion_candidate"  # value: the alias the version is nominated for
CANDIDATE_REASON_TAG = "sensorlm.champion_candidate_reason"
PROMOTED_TAG = "sensorlm.promoted"  # value: "<alias> by <user> at <UTC time>"


class PromotionRefused(RuntimeError):
    """The tracking server refused to move the alias for these credentials (HTTP 403)."""


class PromotionFailed(RuntimeError):
    """MLflow failed otherwise: no such model or version, a server error (the message redacted)."""


def is_permission_denied(error: BaseException) -> bool:
    """True for MLflow's answer to a request the user's permissions do not allow (HTTP 403)."""
    return isinstance(error, MlflowException) and error.error_code == "PERMISSION_DENIED"


def promotion_command(model_name: str, version: str | int, alias: str = "champion") -> str:
    """The shell command that promotes `version` (run with the promoter's credentials in the env)."""
    cmd = f"python jobs/promote.py {shlex.quote(model_name)} {shlex.quote(str(version))}"
    return cmd if alias == "champion" else f"{cmd} --alias {shlex.quote(alias)}"


def mark_candidate(client: MlflowClient, model_name: str, version: str | int, alias: str, reason: str) -> None:
    """Tag `version` as nominated for `alias` (a job may tag versions, not move aliases).

    Args:
        client: MLflow client with the job's credentials.
        model_name: registered model name.
        version: the version nominated.
        alias: the alias it should take, e.g. "champion".
        reason: why (the champion decision), kept on the version for the promoter.
    """
    client.set_model_version_tag(model_name, str(version), CANDIDATE_TAG, alias)
    client.set_model_version_tag(model_name, str(version), CANDIDATE_REASON_TAG, reason[:5000])


def promote(model_name: str, version: str | int, alias: str = "champion", tracking_uri: str | None = None) -> dict[str, Any]:
    """Point `alias` of `model_name` at `version`, as the user of ``MLFLOW_TRACKING_USERNAME`` /
    ``MLFLOW_TRACKING_PASSWORD`` (the promoter; with no authentication, anyone).

    Args:
        model_name: registered model name.
        version: the version to promote (it must exist).
        alias: the alias to move (default "champion").
        tracking_uri: tracking server (default: ``MLFLOW_TRACKING_URI`` / MLflow's default).

    Returns:
        ``{"model", "version", "alias", "previous"}`` (previous: the version that held the alias, or None).

    Raises:
        PromotionRefused: the server refused (these credentials may not move aliases).
        ModelIntegrityError: the version's files are not those registered, or it has no digest.
        PromotionFailed: the model or version does not exist, or another server error.
    """
    from sensorlm.typed_config import redact

    try:
        return _promote(model_name, str(version), alias, tracking_uri)
    except MlflowException as e:
        raise PromotionFailed(redact(e.message)) from None


def _promote(model_name: str, version: str, alias: str, tracking_uri: str | None) -> dict[str, Any]:
    from sensorlm.tracking.integrity import DIGEST_TAG, ModelIntegrityError, download_version
    from sensorlm.tracking.mlflow_utils import get_alias_version

    client = MlflowClient(tracking_uri)
    mv = client.get_model_version(model_name, version)  # a clear error for a version that does not exist
    if not (mv.tags or {}).get(DIGEST_TAG):
        raise ModelIntegrityError(f"models:/{model_name}/{version} has no {DIGEST_TAG} tag, so what it holds cannot be "
                                  "checked; promote a version registered by this sensorlm")
    with tempfile.TemporaryDirectory(prefix="sensorlm-promote-") as tmp:
        download_version(client, model_name, version, tmp)  # its files are the ones registered
    holder = get_alias_version(model_name, alias, client=client)
    try:
        client.set_registered_model_alias(model_name, alias, version)
    except MlflowException as e:
        if is_permission_denied(e):
            user = os.environ.get("MLFLOW_TRACKING_USERNAME") or "(no MLFLOW_TRACKING_USERNAME)"
            raise PromotionRefused(
                f"the MLflow user {user} may not move @{alias} of {model_name} (HTTP 403): promotion needs the "
                "promoter's credentials in MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD"
            ) from None
        raise
    who = os.environ.get("MLFLOW_TRACKING_USERNAME") or "anonymous"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    client.set_model_version_tag(model_name, version, PROMOTED_TAG, f"{alias} by {who} at {stamp}")
    return {"model": model_name, "version": version, "alias": alias,
            "previous": str(holder.version) if holder is not None else None}
