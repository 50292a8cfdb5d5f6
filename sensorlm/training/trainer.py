"""The driver side of a training run: data ready, MLflow run open, Ray Train fit, model registered.

``train(cfg)`` is what ``jobs/train_sensorlm.py`` and ``jobs/train_sst.py`` call. It runs the
same way on a laptop (a local Ray started on demand, DeepSpeed on CPU, a sqlite MLflow store)
and on a cluster (``ray job submit``; ``RAY_ADDRESS`` and ``MLFLOW_TRACKING_URI`` set).
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensorlm.typed_config import ConfigError, to_dict
from sensorlm.training.config import TrainConfig
from sensorlm.training.deepspeed_config import build_deepspeed_config
from sensorlm.families import get_family

REPO_ROOT = Path(__file__).resolve().parents[2]


class RunFailed(RuntimeError):
    """The run ended without a usable model (non-finite loss, validation); the message is one line."""


@dataclass
class TrainResult:
    run_id: str | None
    metrics: dict[str, Any]
    checkpoint_path: str | None
    package_dir: str | None
    model_uri: str | None
    model_version: str | None
    tracking_uri: str | None


def default_env() -> dict[str, str]:
    """Environment for Ray workers: DeepSpeed's CPU accelerator when there is no GPU, and a
    persistent cache for the C++ ops DeepSpeed compiles on first use (40 s otherwise)."""
    cache = os.environ.get("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "sensorlm" / "torch_extensions"))
    # Ray Train V2 patches print() into its logger, which echoed every progress line twice;
    # plain stdout already reaches the driver, `ray job logs` and the worker log files.
    env = {"TORCH_EXTENSIONS_DIR": cache, "PYTHONUNBUFFERED": "1", "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}
    if os.environ.get("SENSORLM_VERBOSE"):
        env["SENSORLM_VERBOSE"] = "1"
    return env


def prepare_dataset(cfg: TrainConfig) -> Path | str:
    """Return the dataset location, generating the synthetic dataset first if it is missing."""
    path = cfg.data.path
    if "://" in path or path.startswith("pipe:"):
        return path
    p = Path(path).expanduser()
    if not p.is_absolute():
        p = (Path.cwd() / p).resolve()
    if not (p / "manifest.json").is_file():
        if not cfg.data.synthetic:
            raise FileNotFoundError(f"data.path {p} has no manifest.json and data.synthetic is not set")
        family = get_family(cfg.task)
        print(f"[sensorlm] generating the synthetic {family.data_kind} dataset (size {cfg.data.synthetic}) in {p}",
              flush=True)
        family.make_synthetic(cfg.data.synthetic, p, seed=cfg.data.seed)
    return p


def tokenizer_file(dataset, manifest: dict) -> Path | None:
    """The caption tokenizer a local dataset ships (named by its manifest), or None."""
    if isinstance(dataset, str) or not manifest.get("tokenizer"):
        return None
    path = Path(dataset) / manifest["tokenizer"]
    return path if path.is_file() else None


def dataset_tokenizer(dataset, manifest: dict) -> str | None:
    """The caption tokenizer a dataset ships (named by its manifest) as JSON text, read once on the
    driver through the dataset's own location (a folder, a URL prefix or a ``pipe:`` template) and
    sent to the workers with the config, so no worker needs a local copy."""
    from sensorlm.data.loader import DatasetLocation

    name = manifest.get("tokenizer")
    return DatasetLocation(str(dataset)).read_bytes(name).decode("utf-8") if name else None


def data_decides_model(cfg: TrainConfig, dataset) -> tuple[TrainConfig, dict]:
    """The dataset's checked manifest, and `cfg` with the model's input read from it (one line
    naming the conflict when an override contradicts the data, or validation cannot run)."""
    family = get_family(cfg.task)
    manifest = family.read_manifest(dataset)
    origin = f"{dataset}/manifest.json"
    if cfg.data.fold:  # k-fold: validate on fold k, train on the others (a view; nothing copied)
        from sensorlm.data.folds import fold_view

        try:
            manifest = fold_view(manifest, cfg.data.fold, origin)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    cfg = family.fit_to_data(cfg, manifest, origin)
    family.check_split(cfg, manifest, origin)
    return cfg, manifest


def open_mlflow_run(
    cfg: TrainConfig, run_name: str, ds_config: dict, manifest: dict, dataset, extra_tags: dict | None = None
) -> tuple[str, str]:
    """Create (or, for a resumed run name, reopen) the run's MLflow run; log config and data.

    Args:
        extra_tags: more run tags, e.g. ``{"mlflow.parentRunId": ...}`` for a sweep's trial.
    """
    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri, run_tags
    from sensorlm.tracking.run import TrackedRun

    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    manifest_path = None if isinstance(dataset, str) else Path(dataset) / "manifest.json"
    tags = {**run_tags(manifest_path), "sensorlm.task": cfg.task, **(extra_tags or {})}
    run = TrackedRun.open(uri, cfg.tracking.experiment, run_name, tags=tags, params=to_dict(cfg),
                          display_name=cfg.tracking.run_name or run_name, artifact_location=cfg.tracking.artifact_location)
    if run.resumed:  # rerunning the same name resumes the Ray run; its MLflow run continues too
        print(f"[sensorlm] continuing MLflow run {run.run_id}", flush=True)
        return uri, run.run_id
    run.log_dict(to_dict(cfg), "config/train_config.yaml")
    run.log_dict(ds_config, "config/deepspeed_config.json")
    run.log_dict(manifest, "data/manifest.json")
    tok = tokenizer_file(dataset, manifest)
    if tok is not None:
        run.log_artifact(tok, "data")
    return uri, run.run_id


def end_run(uri: str | None, run_id: str | None, status: str) -> None:
    if uri and run_id:
        from sensorlm.tracking.run import TrackedRun

        TrackedRun(uri, run_id).end(status)


def _storage_dir(cfg: TrainConfig) -> str:
    """Ray storage path: URIs (``s3://...``) pass through; local paths are made absolute."""
    if "://" in cfg.storage_path:
        return cfg.storage_path.rstrip("/")
    storage = Path(cfg.storage_path).expanduser()
    return str(storage if storage.is_absolute() else (Path.cwd() / storage).resolve())


def worker_env(cfg: TrainConfig) -> dict[str, str]:
    env = default_env()
    if not cfg.scaling.use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
        env["OMP_NUM_THREADS"] = str(cfg.scaling.threads_per_worker)
    return env


def run_info(cfg: TrainConfig, dataset, manifest: dict, run_name: str, mlflow_run_id: str | None, tracking_uri: str | None) -> dict:
    """Facts the driver resolved once and every worker needs (plain data, sent with the config)."""
    return {
        "dataset": str(dataset),
        "manifest": manifest,
        "tokenizer_json": dataset_tokenizer(dataset, manifest),
        "data_stats": _data_stats(manifest),
        "mlflow_run_id": mlflow_run_id,
        "tracking_uri": tracking_uri,
        "fault_marker": f"{_storage_dir(cfg)}/{run_name}/fault_injected",
        # when the command started (the CLI sets it first thing): start-up time is measured from it
        "t0": float(os.environ.get("SENSORLM_T0") or time.time()),
    }


START_TIMEOUT_VAR = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
_USER_START_TIMEOUT = os.environ.get(START_TIMEOUT_VAR)  # the user's own, for runs that set none


def set_start_timeout(seconds: float | None) -> None:
    """`scaling.start_timeout_s` where Ray Train reads it: the controller it starts from this
    process gets this variable. A later run in the same process (a sweep's trials, a notebook)
    gets its own value, or the user's own when its config sets none."""
    if seconds is not None:
        os.environ[START_TIMEOUT_VAR] = str(seconds)
    elif _USER_START_TIMEOUT is None:
        os.environ.pop(START_TIMEOUT_VAR, None)
    else:
        os.environ[START_TIMEOUT_VAR] = _USER_START_TIMEOUT


def make_torch_trainer(cfg: TrainConfig, info: dict, run_name: str, callbacks: list | None = None):
    """The Ray Train `TorchTrainer` of a run; sweeps build the same one inside each trial."""
    import ray
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from sensorlm.training.loop import train_loop_per_worker

    set_start_timeout(cfg.scaling.start_timeout_s)
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config={"train": to_dict(cfg), "run": info},
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
            **({"elastic_resize_monitor_interval_s": cfg.scaling.resize_check_s} if cfg.scaling.elastic else {}),
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=_storage_dir(cfg),
            checkpoint_config=CheckpointConfig(
                num_to_keep=cfg.checkpoint.keep_last,
                checkpoint_score_attribute=cfg.checkpoint.best_metric,
                checkpoint_score_order=cfg.checkpoint.best_mode,
            ),
            failure_config=FailureConfig(max_failures=cfg.checkpoint.max_failures),
            worker_runtime_env={"env_vars": worker_env(cfg)},
            callbacks=callbacks,
            # Ray Train's controller INFO lines (resources, worker group) only with --verbose
            logging_config=ray.LoggingConfig(log_level="INFO" if os.environ.get("SENSORLM_VERBOSE") else "WARNING"),
        ),
    )


def package_of(checkpoint) -> str | None:
    """Where a checkpoint's consolidated model package lies (a local path, or a URL when
    ``storage_path`` is one), or None when it holds none."""
    import pyarrow.fs

    if checkpoint is None:
        return None
    path, fs = f"{checkpoint.path}/package", checkpoint.filesystem
    if fs.get_file_info(path).type != pyarrow.fs.FileType.Directory:
        return None
    return path if isinstance(fs, pyarrow.fs.LocalFileSystem) else f"{fs.type_name}://{path}"


@contextlib.contextmanager
def local_package(checkpoint):
    """The checkpoint's package as a local folder: itself, or a copy of only the package (not the
    ZeRO states beside it) from object storage, removed afterwards."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        yield f"{checkpoint.path}/package"
        return
    with tempfile.TemporaryDirectory(prefix="sensorlm-package-") as tmp:
        Path(tmp, "package").mkdir()
        pyarrow.fs.copy_files(f"{checkpoint.path}/package", f"{tmp}/package", source_filesystem=checkpoint.filesystem)
        yield f"{tmp}/package"


def best_checkpoint(result, metric: str | None, mode: str) -> tuple[Any, dict]:
    """The checkpoint to register and its metrics: with a best metric, the best of the kept
    checkpoints that hold a package by that metric (ties: the later step); else the final one."""
    final = (result.checkpoint, dict(result.metrics or {}))
    if not metric:
        return final
    scored = [(ckpt, m) for ckpt, m in (getattr(result, "best_checkpoints", None) or [])
              if metric in m and math.isfinite(float(m[metric])) and package_of(ckpt)]
    if not scored:
        return final
    sign = 1.0 if mode == "max" else -1.0
    ckpt, metrics = max(scored, key=lambda cm: (sign * float(cm[1][metric]), int(cm[1].get("step", 0))))
    return ckpt, dict(metrics)


def train(cfg: TrainConfig) -> TrainResult:
    """Run a whole training job described by `cfg` and return where its results are."""
    from sensorlm.ray_runtime import init_ray
    from sensorlm.tracking.mlflow_utils import check_tracking_server, clear_run_failure, resolve_tracking_uri, run_failure
    from sensorlm.tracking.run import TrackedRun, register
    from sensorlm.training.loop import quiet_logs

    quiet_logs()
    # one progress bar per file of the registered package would drown the log's last lines
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    run_name = cfg.name or f"{cfg.task}-{time.strftime('%Y%m%d-%H%M%S')}"
    check_tracking_server(resolve_tracking_uri(cfg.tracking.tracking_uri))  # seconds, not minutes of retries
    dataset = prepare_dataset(cfg)
    cfg, manifest = data_decides_model(cfg, dataset)
    ds_config = build_deepspeed_config(cfg, cfg.scaling.max_workers)  # (what the most workers would run)

    done = finished_run(cfg, run_name)
    if done is not None:
        return done
    uri, run_id = open_mlflow_run(cfg, run_name, ds_config, manifest, dataset)
    # The handle ends the run KILLED on `ray job stop` (SIGTERM) or Ctrl-C, FAILED on an error.
    try:
        with TrackedRun(uri, run_id) as run:
            init_ray(worker_env(cfg))
            run.watch_sigterm()  # ray.init installs its own SIGTERM handler (a bare exit) over ours
            trainer = make_torch_trainer(cfg, run_info(cfg, dataset, manifest, run_name, run_id, uri), run_name)
            clear_run_failure(uri, run_id)
            result = trainer.fit()
            metrics = dict(result.metrics or {})
            failure = run_failure(uri, run_id)
            if failure:
                raise RunFailed(failure)
            checkpoint, chosen = best_checkpoint(result, cfg.checkpoint.best_metric, cfg.checkpoint.best_mode)
            package_dir = package_of(checkpoint)
            step = int(chosen.get("step", metrics.get("step", cfg.steps)))
            if cfg.checkpoint.best_metric and cfg.checkpoint.best_metric in chosen:
                final_step = int(metrics.get("step", cfg.steps))
                print(f"[sensorlm] the registered model is the checkpoint of step {step} (best "
                      f"{cfg.checkpoint.best_metric} {float(chosen[cfg.checkpoint.best_metric]):.4f}"
                      + (f"; the last step, {final_step}, scored {float(metrics[cfg.checkpoint.best_metric]):.4f})"
                         if step != final_step and cfg.checkpoint.best_metric in metrics else ")"), flush=True)
            model_uri = version = None
            if package_dir and cfg.tracking.register:
                with local_package(checkpoint) as local:
                    model_uri, version = register(run, local, cfg.registered_name, chosen, tags={"sensorlm.step": str(step)})
            elif cfg.tracking.register:  # (never silently): a run that should register and cannot
                print(f"[sensorlm] nothing registered: the checkpoint of step {step} holds no model package "
                      f"({checkpoint.path if checkpoint else 'no checkpoint'})", flush=True)
                run.set_tags({"sensorlm.registered": "no: the checkpoint holds no model package"})
            stopped = {"sensorlm.early_stopped_step": str(int(metrics["step"]))} if metrics.get("early_stopped") else {}
            run.set_tags({"sensorlm.final_step": str(metrics.get("step", cfg.steps)), "sensorlm.registered_step": str(step),
                          **stopped, **({"sensorlm.model_uri": model_uri} if model_uri else {})})
            run.end("FINISHED")
    except KeyboardInterrupt:  # the run is KILLED and resumable by name, like after `ray job stop`
        print(f"[sensorlm] interrupted: MLflow run {run_id} is KILLED; rerun with name={run_name} to resume", flush=True)
        raise
    ckpt_path = result.checkpoint.path if result.checkpoint else None
    return TrainResult(run_id, metrics, ckpt_path, package_dir, model_uri, version, uri)


def finished_run(cfg: TrainConfig, run_name: str) -> TrainResult | None:
    """The result of a run of this name that already FINISHED at least `cfg.steps`, or stopped
    early (rerunning it would train nothing and register the same weights again), or None."""
    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri
    from sensorlm.tracking.run import find_run

    if not cfg.name:
        return None
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    run = find_run(uri, cfg.tracking.experiment, run_name)
    if run is None or run.info.status != "FINISHED":
        return None
    final = int(run.data.tags.get("sensorlm.final_step", "0") or 0)
    stopped = "sensorlm.early_stopped_step" in run.data.tags
    if final < cfg.steps and not stopped:
        return None  # asked for more steps: continue from the last checkpoint
    model_uri = run.data.tags.get("sensorlm.model_uri")
    how = "stopped early" if stopped else "already finished"
    hint = ("Use a new name to train again." if stopped else f"Set steps above {final} to continue it.")
    print(f"[sensorlm] run {run_name} {how} at step {final} (MLflow run {run.info.run_id}"
          f"{', ' + model_uri if model_uri else ''}); nothing to do. {hint}", flush=True)
    version = model_uri.rsplit("/", 1)[-1] if model_uri else None
    return TrainResult(run.info.run_id, dict(run.data.metrics), None, None, model_uri, version, uri)


def _data_stats(manifest: dict) -> dict:
    keys = ("stats", "channels", "sample_shape", "activities")
    return {k: manifest[k] for k in keys if k in manifest}


def register_package(cfg: TrainConfig, uri: str, run_id: str, package_dir: str, metrics: dict, alias: str | None = None) -> tuple[str, str]:
    """Log the package as a pyfunc under `run_id` and register it as a new version of the task's model."""
    from sensorlm.tracking.run import TrackedRun, register

    return register(TrackedRun(uri, run_id), package_dir, cfg.registered_name, metrics, alias=alias)
