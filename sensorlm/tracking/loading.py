"""Loading a registered version for use: verified against the digest recorded at registration
(`sensorlm.tracking.integrity`), and built from its package with the installed sensorlm, so no
code stored with the model runs."""

from __future__ import annotations

import re
import tempfile
from typing import Any

from sensorlm.tracking.integrity import download_version

# models:/NAME/VERSION or models:/NAME@ALIAS ("\Z", not "$": no trailing newline)
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))/?\Z")


def load_model(model_uri: str, tracking_uri: str | None = None):
    """A registered version as sensorlm's pyfunc, verified first and built from its package with
    this installation's code: ``load_model("models:/sensorlm@champion").predict({"text": [...]})``.
    (``mlflow.pyfunc.load_model`` runs the code stored with the model and checks nothing.)

    Args:
        model_uri: ``models:/NAME/VERSION`` or ``models:/NAME@ALIAS``.
        tracking_uri: the registry (default: `resolve_tracking_uri`'s choice).

    Raises:
        ModelIntegrityError: the version's files differ from those registered.
        ValueError: a URI of another form.
    """
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri
    from sensorlm.tracking.package import find_package_dir
    from sensorlm.tracking.pyfunc import SensorLMPyfunc

    m = MODEL_URI.match(str(model_uri).strip())
    if not m:
        raise ValueError(f"model URI {model_uri!r}: expected models:/NAME/VERSION or models:/NAME@ALIAS")
    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    version = m["version"] or client.get_model_version_by_alias(m["name"], m["alias"]).version
    model = SensorLMPyfunc()
    with tempfile.TemporaryDirectory(prefix="sensorlm-load-") as tmp:
        model.load_package(find_package_dir(download_version(client, m["name"], version, tmp), model_uri))
    return VerifiedModel(model, f"models:/{m['name']}/{version}")


class VerifiedModel:
    """A verified registered version: ``predict(inputs)`` as MLflow's loaded pyfunc offers it, and
    the family handler's helpers (``embed_text``, ``to``, ...).

    Args:
        pyfunc: the `SensorLMPyfunc` loaded from the verified package.
        uri: the pinned ``models:/NAME/VERSION``.
    """

    def __init__(self, pyfunc: Any, uri: str):
        self.pyfunc, self.uri = pyfunc, uri

    def predict(self, model_input: Any) -> Any:
        """Embeddings or maps of `model_input` (see `sensorlm.tracking.pyfunc` for the keys)."""
        return self.pyfunc.predict(None, model_input)

    def __getattr__(self, name: str) -> Any:
        if name == "pyfunc":
            raise AttributeError(name)
        return getattr(self.pyfunc, name)
