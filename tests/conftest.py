"""Test-wide hygiene: MLflow keeps its tracking/registry URI in module globals (and copies them
into ``MLFLOW_TRACKING_URI`` / ``MLFLOW_REGISTRY_URI``), and library code and fixtures set them;
without this, one test's (or module's) store would silently become the next one's."""
import os

import pytest
from mlflow.tracking._model_registry import utils as registry_utils
from mlflow.tracking._tracking_service import utils as tracking_utils

_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _restoring_mlflow_uris():
    saved = tracking_utils._tracking_uri, registry_utils._registry_uri
    saved_env = {var: os.environ.get(var) for var in _URI_ENV}
    yield
    tracking_utils._tracking_uri, registry_utils._registry_uri = saved
    for var, value in saved_env.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


# Autouse fixtures of a scope are set up before the others of that scope, so the module-level one
# also undoes what module-scoped fixtures (a logged model, a store) set.
_restore_mlflow_uris_per_module = pytest.fixture(scope="module", autouse=True)(_restoring_mlflow_uris)
_restore_mlflow_uris_per_test = pytest.fixture(autouse=True)(_restoring_mlflow_uris)


@pytest.fixture(scope="session", autouse=True)
def _ray_down_before_exit():
    """Stop a Ray that a test left running (a command under test starts its own local Ray) while
    the interpreter is still whole, not in Ray's atexit hook during interpreter teardown: one CI
    run crashed there (SIGSEGV after every test had passed)."""
    import sys

    yield
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="module")
def module_ray(request):
    """A new local Ray for the test module, started the way commands start one (`init_ray`: quiet,
    Ray Train polling every 0.5 s), with the module's ``RAY_CPUS`` logical CPUs (default 2)."""
    import ray

    from sensorlm.ray_runtime import init_ray

    if ray.is_initialized():
        ray.shutdown()
    init_ray(num_cpus=getattr(request.module, "RAY_CPUS", 2))
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A bucket on a moto server at 127.0.0.1; the AWS variables point s3fs (and Ray workers) there."""
    import urllib.request

    import fsspec

    moto_server = pytest.importorskip("moto.server")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    # moto keeps its buckets in this process, shared by every server it starts: a clean store
    urllib.request.urlopen(urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST")).close()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.MonkeyPatch.context() as mp:
        for k, v in env.items():
            mp.setenv(k, v)
        # fsspec caches filesystems by their arguments, not the environment: none of another server
        s3fs = pytest.importorskip("s3fs")
        s3fs.S3FileSystem.clear_instance_cache()
        fs = fsspec.filesystem("s3", skip_instance_cache=True)
        fs.mkdir("sensorlm-data")
        yield fs
        s3fs.S3FileSystem.clear_instance_cache()
    server.stop()


@pytest.fixture
def ray_cluster_env():
    """The environment of a `ray.cluster_utils.Cluster` of the test's own. Everything Ray writes,
    its "current cluster" marker included, goes to a private folder (the shared /tmp/ray marker
    would send other ray.init()s there), and the cluster has its own token (Ray's default token
    auth), never ~/.ray/auth_token. This process's Ray reads the mode and token again on the way
    in and out: both are cached in C++ at first use, and a later ray.init() in this process (the
    next test file) must read its own. Yields the MonkeyPatch, to set more for the nodes."""
    import shutil
    import tempfile
    import uuid
    from pathlib import Path

    from ray._raylet import AuthenticationTokenLoader, Config

    def reload_auth() -> None:
        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()

    ray_tmp = Path(tempfile.mkdtemp(prefix="slm-cl-", dir="/tmp"))  # short: Ray's socket paths
    token = ray_tmp / "auth_token"
    token.write_text(uuid.uuid4().hex + uuid.uuid4().hex)
    token.chmod(0o600)
    try:
        with pytest.MonkeyPatch.context() as env:
            for var, value in {"RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                               "RAY_USAGE_STATS_ENABLED": "0"}.items():
                env.setenv(var, value)
            for var in ("RAY_AUTH_TOKEN", "RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
                env.delenv(var, raising=False)
            reload_auth()
            yield env
    finally:
        reload_auth()
        shutil.rmtree(ray_tmp, ignore_errors=True)

