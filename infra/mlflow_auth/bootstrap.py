#!/usr/bin/env python
"""The MLflow admin bootstrap of sensorlm's identities (stdlib only; runs in the sensorlm-mlflow image).

As the admin: pre-create the experiments and registered models, then

- the job user: EDIT on those experiments (runs, metrics, artifacts; no deletes) and models (new
  versions and their tags; no deleting versions, no alias moves: sensorlm_mlflow_auth.py);
- the promoter: READ on the experiments, MANAGE on the models (moves ``@champion``).

With the server's ``default_permission = NO_PERMISSIONS`` nobody else sees anything. Idempotent: users
that exist get their password reset to the given one, grants are re-applied.

    MLFLOW_TRACKING_URI=... SENSORLM_MLFLOW_ADMIN_USER=... SENSORLM_MLFLOW_ADMIN_PASSWORD=... \\
    SENSORLM_MLFLOW_JOB_USER=... SENSORLM_MLFLOW_JOB_PASSWORD=... \\
    SENSORLM_MLFLOW_PROMOTER_USER=... SENSORLM_MLFLOW_PROMOTER_PASSWORD=... \\
    SENSORLM_MLFLOW_EXPERIMENTS=sensorlm SENSORLM_MLFLOW_MODELS=sensorlm python bootstrap.py

infra/k8s/mlflow.yaml runs it as the Job ``mlflow-bootstrap`` (credentials from Secrets, by
environment only); infra/local/servers.py calls the same functions.
"""

from __future__ import annotations

import base64
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request


class BootstrapError(RuntimeError):
    """A bootstrap request failed; the message names it and the HTTP status."""


def api(url: str, method: str, path: str, auth: tuple[str, str], body: dict | None = None,
        query: dict | None = None) -> tuple[int, dict]:
    """One MLflow REST call (``/api/<path>``) as `auth` (user, password); returns (status, JSON body or {})."""
    full = f"{url.rstrip('/')}/api/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
    token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
    req = urllib.request.Request(full, data=json.dumps(body).encode() if body is not None else None, method=method,
                                 headers={"Authorization": f"Basic {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            code, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        code, text = e.code, e.read().decode(errors="replace")
    try:
        return code, json.loads(text) if text.strip() else {}
    except ValueError:
        return code, {"raw": text[:500]}


def _ok(what: str, code: int, body: dict) -> dict:
    if code != 200:
        raise BootstrapError(f"MLflow admin bootstrap: {what} failed (HTTP {code}): {str(body)[:300]}")
    return body


def ensure_user(url: str, admin: tuple[str, str], username: str, password: str, reset: bool = True) -> None:
    """Create `username` with `password`; an existing user gets `password` when `reset`."""
    code, _ = api(url, "GET", "2.0/mlflow/users/get", admin, query={"username": username})
    if code != 200:
        _ok(f"create user {username}", *api(url, "POST", "2.0/mlflow/users/create", admin,
                                            {"username": username, "password": password}))
    elif reset:
        _ok(f"set the password of {username}", *api(url, "PATCH", "2.0/mlflow/users/update-password", admin,
                                                     {"username": username, "password": password}))


def ensure_experiment(url: str, admin: tuple[str, str], name: str) -> str:
    """The id of experiment `name`, created if it does not exist."""
    code, body = api(url, "GET", "2.0/mlflow/experiments/get-by-name", admin, query={"experiment_name": name})
    if code == 200:
        return body["experiment"]["experiment_id"]
    return _ok(f"create experiment {name}", *api(url, "POST", "2.0/mlflow/experiments/create", admin,
                                                 {"name": name}))["experiment_id"]


def ensure_registered_model(url: str, admin: tuple[str, str], name: str) -> None:
    """Create registered model `name` unless it exists (only the admin may create model names)."""
    code, body = api(url, "POST", "2.0/mlflow/registered-models/create", admin, {"name": name})
    if code != 200 and body.get("error_code") != "RESOURCE_ALREADY_EXISTS":
        _ok(f"create registered model {name}", code, body)


def grant(url: str, admin: tuple[str, str], username: str, resource_type: str, resource_id: str, permission: str) -> None:
    """Give `username` `permission` on one experiment (by id) or registered model (by name)."""
    _ok(f"grant {permission} on {resource_type} {resource_id} to {username}",
        *api(url, "POST", "3.0/mlflow/users/permissions/grant", admin,
             {"username": username, "resource_type": resource_type, "resource_id": resource_id,
              "permission": permission}))


def grant_job_user(url: str, admin: tuple[str, str], username: str, experiments, models=()) -> None:
    """EDIT on `experiments` (pre-created here) and on `models` (pre-created here)."""
    for name in experiments:
        grant(url, admin, username, "experiment", ensure_experiment(url, admin, name), "EDIT")
    for name in models:
        ensure_registered_model(url, admin, name)
        grant(url, admin, username, "registered_model", name, "EDIT")


def grant_promoter(url: str, admin: tuple[str, str], username: str, experiments, models) -> None:
    """READ on `experiments`, MANAGE on `models` (the only non-admin who may move aliases)."""
    for name in experiments:
        grant(url, admin, username, "experiment", ensure_experiment(url, admin, name), "READ")
    for name in models:
        ensure_registered_model(url, admin, name)
        grant(url, admin, username, "registered_model", name, "MANAGE")


def _env(name: str) -> str:
    value = os.environ.get(name, "")
    if not value:
        raise BootstrapError(f"{name} is unset or empty")
    return value


def main() -> int:
    try:
        url = _env("MLFLOW_TRACKING_URI")
        admin = (_env("SENSORLM_MLFLOW_ADMIN_USER"), _env("SENSORLM_MLFLOW_ADMIN_PASSWORD"))
        job = (_env("SENSORLM_MLFLOW_JOB_USER"), _env("SENSORLM_MLFLOW_JOB_PASSWORD"))
        promoter = (_env("SENSORLM_MLFLOW_PROMOTER_USER"), _env("SENSORLM_MLFLOW_PROMOTER_PASSWORD"))
        experiments = [e for e in os.environ.get("SENSORLM_MLFLOW_EXPERIMENTS", "sensorlm").split(",") if e]
        models = [m for m in os.environ.get("SENSORLM_MLFLOW_MODELS", "sensorlm").split(",") if m]
        for _ in range(60):  # the server may still be starting
            if api(url, "GET", "2.0/mlflow/users/current", admin)[0] in (200, 401, 403, 404):
                break
            time.sleep(5)
        ensure_user(url, admin, *job)
        ensure_user(url, admin, *promoter)
        grant_job_user(url, admin, job[0], experiments, models)
        grant_promoter(url, admin, promoter[0], experiments, models)
    except BootstrapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"bootstrap done: job user {job[0]}, promoter {promoter[0]}, experiments {experiments}, models {models}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
