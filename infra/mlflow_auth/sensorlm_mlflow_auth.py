"""MLflow's basic-auth app with sensorlm's least-privilege rules (``--app-name sensorlm-auth``).

MLflow 3.17 lets whoever may create a version of a registered model (EDIT on it) also move its
aliases, rename the model, rewrite descriptions and any version tag. sensorlm wants training jobs
to register versions and nothing more, so on top of MLflow's own checks:

1. Setting or deleting an alias (``POST``/``DELETE .../registered-models/alias``) needs MANAGE on
   the registered model (the promoter has it, job users have EDIT) or an admin.
2. Creating a registered model that does not exist yet is for admins only: names are
   pre-created by the admin bootstrap, so a job cannot take a name (and MANAGE on it) first.
   Creating one that exists passes through, so ``mlflow.register_model`` keeps working.
3. Renaming a registered model, and editing the description of a model or a version, need MANAGE.
4. The version tags the promotion gate and the load-time check rely on (`AUDIT_TAGS`,
   `AUDIT_TAG_PREFIXES`) are write-once for EDIT: a job may set one its version does not have yet
   (registration writes the metrics and the package digest, a first evaluation its scores), but
   changing or deleting one needs MANAGE. ``sensorlm.promoted`` is the promoter's alone.

Every other request is MLflow's basic-auth app unchanged (authentication first, then its own
validators). The server finds this module through the ``mlflow.app`` entry point of the
``sensorlm_mlflow_auth-1.0.dist-info`` folder beside it: put this folder on the server's
``PYTHONPATH`` (infra/local/servers.py and the sensorlm-mlflow image do).
"""

from __future__ import annotations

from flask import request

_ALIAS = "/mlflow/registered-models/alias"
_CREATE_MODEL = "/mlflow/registered-models/create"
# (path suffix, methods): need MANAGE on the registered model named in the request.
_MANAGE_ONLY = (
    ("/mlflow/registered-models/rename", ("POST",)),
    ("/mlflow/registered-models/update", ("PATCH",)),
    ("/mlflow/model-versions/update", ("PATCH",)),
)
_SET_TAG = "/mlflow/model-versions/set-tag"
_DELETE_TAG = "/mlflow/model-versions/delete-tag"

# The version tags the promotion gate compares (metrics, held-out and evaluation scores, the split
# they were computed on) and the package digest checked at load (sensorlm.tracking.integrity).
# sensorlm.tracking.integrity.AUDIT_TAGS must name the same keys (a test checks).
PROMOTED_TAG = "sensorlm.promoted"
AUDIT_TAGS = (PROMOTED_TAG, "sensorlm.package_sha256", "sensorlm.val_split", "sensorlm.holdout_split")
AUDIT_TAG_PREFIXES = ("metric.", "eval.", "holdout.")


def is_audit_tag(key: str) -> bool:
    """True for a version tag key that EDIT may write once and only MANAGE may change."""
    return key in AUDIT_TAGS or key.startswith(AUDIT_TAG_PREFIXES)


def _rule(path: str, method: str) -> str | None:
    if path.endswith(_ALIAS) and method in ("POST", "DELETE"):
        return "alias"
    if path.endswith(_CREATE_MODEL) and method == "POST":
        return "create"
    if any(path.endswith(suffix) and method in methods for suffix, methods in _MANAGE_ONLY):
        return "manage"
    if (path.endswith(_SET_TAG) and method == "POST") or (path.endswith(_DELETE_TAG) and method == "DELETE"):
        return "tag"
    return None


def _tag_needs_manage(auth) -> bool:
    key = auth._get_request_param("key")
    if not isinstance(key, str) or not is_audit_tag(key):
        return False
    if key == PROMOTED_TAG or request.method == "DELETE":
        return True
    store, name = auth._get_model_registry_store(), auth._get_request_param("name")
    version = auth._fetch_or_none(lambda v: store.get_model_version(name, v), str(auth._get_request_param("version")))
    # A version that does not exist: MLflow's own handler answers (404) after its checks.
    return version is not None and key in (version.tags or {})


def _least_privilege_rules():
    from mlflow.server import auth

    rule = _rule(request.path, request.method)
    if rule is None:
        return None
    authorization = auth.authenticate_request()
    if not isinstance(authorization, auth.Authorization):
        return authorization  # MLflow's 401 response
    if auth.sender_is_admin():
        return None
    if rule == "create":
        name = auth._get_request_param("name")
        if auth._fetch_or_none(auth._get_model_registry_store().get_registered_model, name) is None:
            return auth.make_forbidden_response()
        return None
    if rule == "tag" and not _tag_needs_manage(auth):
        return None
    if not auth._get_permission_from_registered_model_name().can_manage:
        return auth.make_forbidden_response()
    return None


def create_app(app=None):
    """The basic-auth app (Flask, or FastAPI around it under uvicorn) with the rules above."""
    from mlflow.server import app as flask_app
    from mlflow.server import auth

    flask_app = app or flask_app
    served = auth.create_app(flask_app)
    # After MLflow's own before_request: both must pass; ours only narrows what it allows.
    flask_app.before_request(_least_privilege_rules)
    return served
