"""One MLflow run handle for training, sweeps and evaluation.

`TrackedRun.open` creates a run, or reopens the run of the same name (a resumed training run, a
restarted sweep trial), logs its params (redacted; on resume the keys the run lacks, and the
changed ones named in a tag, since MLflow refuses to change a param) and hands back a handle that logs metrics in batches, dicts and artifacts, and
ends the run with the status that fits: FINISHED, FAILED on an error, KILLED on Ctrl-C or
SIGTERM (``ray job stop``). `register` logs a model package as a pyfunc under a run and makes it
a new version of a registered model; training, sweeps and jobs use it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

RUN_NAME_TAG = "sensorlm.run_name"
MAX_METRICS_PER_BATCH = 1000


def find_run(uri: str, experiment: str, name: str):
    """The MLflow run named `name` (tag ``sensorlm.run_name``) in `experiment`, or None."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return None
    runs = client.search_runs([exp.experiment_id], filter_string=f"tags.`{RUN_NAME_TAG}` = '{name}'", max_results=1)
    return runs[0] if runs else None


class TrackedRun:
    """An open MLflow run.

    Args:
        uri: the tracking URI.
        run_id: the run.
        resumed: True when `open` found the run of this name and continued it.
    """

    def __init__(self, uri: str, run_id: str, resumed: bool = False):
        from mlflow.tracking import MlflowClient

        self.uri = uri
        self.run_id = run_id
        self.resumed = resumed
        self.client = MlflowClient(uri)
        self.ended: str | None = None

    @classmethod
    def open(cls, uri: str, experiment: str, name: str, *, tags: Mapping[str, str] | None = None,
             params: Any = None, display_name: str | None = None, resume: bool = True,
             artifact_location: str | None = None) -> "TrackedRun":
        """Create the run `name` in `experiment`, or continue the one of that name.

        Args:
            uri: the tracking URI.
            experiment: created when missing.
            name: identifies the run across restarts (tag ``sensorlm.run_name``).
            tags: tags of a new run.
            params: a nested config (dataclass or mapping), logged flattened and redacted.
            display_name: the name shown in the UI (default `name`).
            resume: continue a run of this name if there is one.
            artifact_location: the artifact root of a new experiment (e.g. ``s3://bucket/mlflow``).
        """
        from mlflow.tracking import MlflowClient

        from sensorlm.tracking.mlflow_utils import log_config_params, setup_experiment

        experiment_id = setup_experiment(experiment, uri, artifact_location)
        client = MlflowClient(uri)
        existing = find_run(uri, experiment, name) if resume else None
        if existing is not None:
            run = cls(uri, existing.info.run_id, resumed=True)
            client.update_run(run.run_id, status="RUNNING")
        else:
            created = client.create_run(experiment_id, run_name=display_name or name,
                                        tags={**(tags or {}), RUN_NAME_TAG: name})
            run = cls(uri, created.info.run_id)
        if params is not None and not run.resumed:
            log_config_params(params, run_id=run.run_id, uri=uri)
        elif params is not None:
            run._log_params_on_resume(params)
        return run

    def _log_params_on_resume(self, params: Any) -> None:
        """MLflow refuses to change a logged param: on resume, log the keys the run lacks and name
        the changed ones (e.g. more ``steps``) in the tag ``sensorlm.resumed_with``."""
        from sensorlm.tracking.mlflow_utils import config_params

        flat, _ = config_params(params)
        logged = self.client.get_run(self.run_id).data.params
        new = {k: v for k, v in flat.items() if k not in logged}
        if new:
            self.log_params(new)
        changed = [f"{k}={flat[k]} (was {logged[k]})" for k in sorted(flat) if k in logged and logged[k] != flat[k]]
        if changed:
            self.set_tags({"sensorlm.resumed_with": "; ".join(changed)[:5000]})

    # logging -----------------------------------------------------------------------------------

    def log_metrics(self, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step) for k, v in metrics.items()]
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_METRICS_PER_BATCH], synchronous=True)

    def log_params(self, params: Mapping[str, str]) -> None:
        from mlflow.entities import Param

        self.client.log_batch(self.run_id, params=[Param(k, str(v)) for k, v in params.items()], synchronous=True)

    def set_tags(self, tags: Mapping[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def log_dict(self, obj: Any, artifact_file: str) -> None:
        from sensorlm.typed_config import redact

        self.client.log_dict(self.run_id, redact(obj), artifact_file)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def metric_steps(self, key: str) -> list[int]:
        """The steps at which metric `key` was logged."""
        return [m.step for m in self.client.get_metric_history(self.run_id, key)]

    def log_series(self, key: str, points: Sequence[tuple[int, float]]) -> None:
        """Metric `key` at several steps at once, e.g. one value per sweep trial."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(key, float(v), now, int(step)) for step, v in points]
        for start in range(0, len(items), MAX_METRICS_PER_BATCH):
            self.client.log_batch(self.run_id, metrics=items[start : start + MAX_METRICS_PER_BATCH], synchronous=True)

    @property
    def status(self) -> str:
        """RUNNING, FINISHED, FAILED or KILLED, as the tracking server has it now."""
        return self.client.get_run(self.run_id).info.status

    def reopen(self) -> None:
        """Mark an ended run RUNNING again (a resumed sweep's parent run)."""
        self.client.update_run(self.run_id, status="RUNNING")
        self.ended = None

    def children(self) -> list:
        """The runs whose ``mlflow.parentRunId`` is this run (MLflow `Run` entities)."""
        experiment_id = self.client.get_run(self.run_id).info.experiment_id
        return self.client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'")

    def start_system_metrics(self, interval_s: float = 5.0):
        """MLflow's system-metrics monitor (CPU, memory, GPU) on this run; returns it (call its
        ``finish()``), or None with a line when it cannot run (psutil missing ...)."""
        import mlflow

        mlflow.set_tracking_uri(self.uri)  # the monitor logs through the fluent API's client
        try:
            from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

            monitor = SystemMetricsMonitor(self.run_id, sampling_interval=interval_s, samples_before_logging=1)
            monitor.start()
            return monitor
        except Exception as e:  # optional: psutil missing etc.
            print(f"[sensorlm] system metrics disabled: {e}", flush=True)
            return None

    # ending ------------------------------------------------------------------------------------

    def end(self, status: str = "FINISHED") -> None:
        """End the run (FINISHED, FAILED or KILLED); the first call wins."""
        if self.ended is None:
            self.client.set_terminated(self.run_id, status=status)
            self.ended = status

    def __enter__(self) -> "TrackedRun":
        """Within ``with``: SIGTERM (``ray job stop``) ends the run KILLED; an error ends it FAILED,
        Ctrl-C KILLED (tagged); a clean exit leaves it to the caller (``end()``)."""
        self._previous_sigterm = signal.getsignal(signal.SIGTERM)

        def on_sigterm(signum, frame):
            self.end("KILLED")
            raise SystemExit(143)

        try:
            signal.signal(signal.SIGTERM, on_sigterm)
        except ValueError:  # not the main thread (a Tune trial): Ray stops those itself
            self._previous_sigterm = None
        return self

    def watch_sigterm(self) -> None:
        """Install the SIGTERM handler again (``ray.init`` replaces it with a bare exit)."""
        if getattr(self, "_previous_sigterm", None) is not None:
            self.__enter__()

    def __exit__(self, kind, exc, tb) -> None:
        if getattr(self, "_previous_sigterm", None) is not None:
            signal.signal(signal.SIGTERM, self._previous_sigterm)
        if kind is None:
            return
        if issubclass(kind, KeyboardInterrupt):
            self.set_tags({"sensorlm.stopped": "interrupted by the user (Ctrl-C)"})
            self.end("KILLED")
        else:
            self.end("FAILED")


def register(run: TrackedRun, package_dir: str | Path, name: str, metrics: Mapping[str, Any],
             alias: str | None = None, tags: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Log a model package as a pyfunc under `run` and register it as a new version of `name`.

    Args:
        run: the training (or trial) run the package came from.
        package_dir: the package (safetensors weights, model_config.json, ...).
        name: the registered model.
        metrics: numbers stored as version tags ``metric.<key>``.
        alias: an alias to point at the new version (None: none).
        tags: more version tags (e.g. the checkpoint's step).

    Returns:
        (``models:/<name>/<version>``, version).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import register_version
    from sensorlm.tracking.pyfunc import log_model_package

    status = run.client.get_run(run.run_id).info.status
    mlflow.set_tracking_uri(run.uri)
    with mlflow.start_run(run_id=run.run_id):
        info = log_model_package(package_dir, registered_model_name=None)
    run.client.update_run(run.run_id, status=status)  # start_run's exit marked it FINISHED
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    version = register_version(info.model_uri, name, numeric, alias=alias, client=MlflowClient(run.uri))
    version_id = str(getattr(version, "version", version))
    for key, value in (tags or {}).items():
        MlflowClient(run.uri).set_model_version_tag(name, version_id, key, value)
    print(f"[sensorlm] registered model {name} version {version_id}", flush=True)
    return f"models:/{name}/{version_id}", version_id
