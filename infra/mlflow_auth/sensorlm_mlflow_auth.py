"""MLflow's basic-auth app with two rules of sensorlm's least-privilege split (``--app-name sensorlm-auth``).

MLflow 3.17 lets whoever may create a version of a registered model (EDIT on it) also move its
aliases: both need ``update`` on the model. sensorlm wants training jobs to register versions but
never to move ``@champion``, so on top of MLflow's own checks:

1. Setting or deleting an alias (``POST``/``DELETE .../registered-models/alias``) needs MANAGE on
   the registered model (the promoter has it, job users have EDIT) or an admin.
2. Creating a registered model that does not exist yet is for admins only: names are
   pre-created by the admin bootstrap, so a job cannot take a name (and MANAGE on it) first.
   Creating one that exists passes through, so ``mlflow.register_model`` keeps working.

Every other request is MLflow's basic-auth app unchanged (authentication first, then its own
validators). The server finds this module through the ``mlflow.app`` entry point of the
``sensorlm_mlflow_auth-1.0.dist-info`` folder beside it: put this folder on the server's
``PYTHONPATH`` (infra/local/servers.py and the sensorlm-mlflow image do).
"""

from __future__ import annotations

from flask import request

_ALIAS = "/mlflow/registered-models/alias"
_CREATE_MODEL = "/mlflow/registered-models/create"


def _least_privilege_rules():
    from mlflow.server import auth

    path = request.path
    alias = path.endswith(_ALIAS) and request.method in ("POST", "DELETE")
    create = path.endswith(_CREATE_MODEL) and request.method == "POST"
    if not (alias or create):
        return None
    authorization = auth.authenticate_request()
    if not isinstance(authorization, auth.Authorization):
        return authorization  # MLflow's 401 response
    if auth.sender_is_admin():
        return None
    if alias:
        if not auth._get_permission_from_registered_model_name().can_manage:
            return auth.make_forbidden_response()
        return None
    name = auth._get_request_param("name")
    if auth._fetch_or_none(auth._get_model_registry_store().get_registered_model, name) is None:
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
