"""The shared sweep driver: Ray Tune over the same Ray Train `TorchTrainer` as training.

With Ray Train V2 (the default in Ray 2.60) a `TorchTrainer` is not passed to `Tuner`; each
trial is a Tune *function trainable* that builds and fits a `TorchTrainer` whose
``TuneReportCallback`` forwards every ``ray.train.report`` (metrics + checkpoint path) to Tune.
ASHA judges trials on those reports, keyed by the optimizer ``step`` each one carries.

Layout of a sweep folder ``<storage_path>/<name>/``::

    sweep.json     the sweep config, the MLflow parent run id, the registration outcome
    tune/          the Tune experiment (``Tuner.restore`` resumes it)
    train/         one Ray Train run per trial (``<name>-<trial_id>``): checkpoints, packages
    results/       trials.csv and metric_vs_params.png (also logged to the parent run)

MLflow: one parent run per sweep (sweep config as params, the results table and plot as
artifacts, best metric), one child run per trial (``mlflow.parentRunId``; the trial's training
config and swept values as params, its metric curves). At the end the best *completed* trial
(ASHA-stopped trials have no final model) is registered; it takes the alias (``champion``) only
if it beats the version holding it on the same metric and validation split. Where the tracking
server refuses the job's login the alias move (HTTP 403: only the promoter may), the version is
nominated instead (`sensorlm.tracking.promote`) and the promotion command is logged.

Running a sweep whose folder exists resumes it: finished trials are not run again.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from sensorlm.typed_config import ConfigError, flatten, redact, to_dict
from sensorlm.ray_runtime import init_ray
from sensorlm.tracking.run import TrackedRun
from sensorlm.tuning.gate import HoldoutScore, decide
from sensorlm.tuning.results import (
    ROLE_TAG,
    SPLIT_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
    SweepResult,
    TrialRow,
    best_completed,
    plot_metric_vs_params,
    write_results_csv,
)
from sensorlm.tuning.space import SweepConfig
from sensorlm.tuning.trials import SweepTask, TrainSweep

META_FILE = "sweep.json"
# Keys that may differ when a sweep is resumed (where it is stored is how it was found).
_RESUME_FREE_KEYS = ("storage_path",)


def _say(msg: str) -> None:
    print(f"[sensorlm.sweep] {msg}", flush=True)


# ----------------------------------------------------------------------------------------------
# MLflow


def _open_parent_run(cfg: SweepConfig, task: SweepTask, tracking_uri: str, name: str, sweep_dir: Path) -> str:
    from sensorlm.tracking.mlflow_utils import run_tags
    from sensorlm.tracking.run import TrackedRun

    tags = {
        **run_tags(),
        **task.run_tags(),
        SWEEP_TAG: name,
        ROLE_TAG: "parent",
        "sensorlm.task": cfg.task,
        "sensorlm.sweep_dir": str(sweep_dir),
    }
    run = TrackedRun.open(tracking_uri, cfg.tracking.experiment, f"sweep:{name}", tags=tags, params=to_dict(cfg),
                          display_name=name, resume=False, artifact_location=cfg.tracking.artifact_location)
    run.log_dict(to_dict(cfg), "config/sweep.yaml")
    run.log_dict(task.base_config(), "config/base_train_config.yaml")
    return run.run_id


def _child_runs(parent: TrackedRun) -> dict[str, Any]:
    """Child runs of a sweep by trial id."""
    return {r.data.tags.get(TRIAL_ID_TAG): r for r in parent.children() if r.data.tags.get(TRIAL_ID_TAG)}


def _finalize_child_runs(tracking_uri: str, rows: list[TrialRow], runs: dict[str, Any]) -> None:
    """Give every child run its final status: a trial ASHA stopped was killed mid-run, so its
    run is still RUNNING; mark it KILLED and say why in a tag."""
    final = {"completed": "FINISHED", "early_stopped": "KILLED", "error": "FAILED"}
    for row in rows:
        run = runs.get(row.trial_id)
        if run is None or row.status not in final:
            continue
        child = TrackedRun(tracking_uri, run.info.run_id)
        child.set_tags({"sensorlm.trial_status": row.status})
        if run.info.status != final[row.status]:
            child.end(final[row.status])


# ----------------------------------------------------------------------------------------------
# Champion


def champion_decision(
    new_value: float, mode: str, champion: Any | None, metric: str, split_key: str
) -> tuple[bool, str]:
    """Should the new version take the alias? Only if it beats the holder on `metric` and the
    same validation split.

    Args:
        new_value: the new version's `metric`.
        mode: ``max`` or ``min``.
        champion: the ModelVersion holding the alias, or None.
        metric: the metric key (read from the holder's ``metric.<key>`` tag).
        split_key: the new version's validation split (compared with the holder's
            ``sensorlm.val_split`` tag).

    Returns:
        (promote, reason).
    """
    from sensorlm.tracking.mlflow_utils import version_metric

    if champion is None:
        return True, "there is no current champion"
    version = champion.version
    their_split = (champion.tags or {}).get(SPLIT_TAG)
    if their_split is None:
        return False, (
            f"the current champion (version {version}) has no {SPLIT_TAG} tag, so it is not known to be "
            f"validated on the same split ({split_key}); not comparable"
        )
    if their_split != split_key:
        return False, (
            f"the current champion (version {version}) was validated on a different split "
            f"({their_split}, this sweep: {split_key}); not comparable"
        )
    theirs = version_metric(champion, metric)
    if theirs is None:
        return False, f"the current champion (version {version}) has no {metric} to compare with"
    better = new_value > theirs if mode == "max" else new_value < theirs
    if better:
        return True, f"{metric} {new_value:.6g} beats the champion's {theirs:.6g} (version {version})"
    return False, f"{metric} {new_value:.6g} does not beat the champion's {theirs:.6g} (version {version}, {mode} is better)"


# ----------------------------------------------------------------------------------------------
# The driver


def make_task(cfg: SweepConfig) -> SweepTask:
    return TrainSweep(cfg)


def _trial_dirname(trial) -> str:
    return f"trial_{trial.trial_id}"


def _read_meta(sweep_dir: Path) -> dict[str, Any] | None:
    path = sweep_dir / META_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: invalid JSON ({e}); this sweep folder cannot be resumed") from e


def _write_meta(sweep_dir: Path, meta: dict[str, Any]) -> None:
    path = sweep_dir / META_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
    tmp.replace(path)


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    a = {k: v for k, v in flatten(old).items() if k.split(".")[0] not in _RESUME_FREE_KEYS}
    b = {k: v for k, v in flatten(new).items() if k.split(".")[0] not in _RESUME_FREE_KEYS}
    return sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))


def _build_tuner(cfg: SweepConfig, trainable, tune_root: Path, total_steps: int, callbacks):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search.basic_variant import BasicVariantGenerator

    if cfg.searcher == "optuna":
        from ray.tune.search.optuna import OptunaSearch

        search_alg = OptunaSearch(seed=cfg.seed)
        limit = cfg.max_concurrent_trials  # Tune wraps the searcher in a ConcurrencyLimiter
    else:
        # Tune ignores TuneConfig.max_concurrent_trials for a generator passed in: limit it here.
        search_alg = BasicVariantGenerator(random_state=cfg.seed, max_concurrent=cfg.max_concurrent_trials)
        limit = None
    if cfg.asha.enabled:
        scheduler = ASHAScheduler(
            time_attr="step",
            grace_period=cfg.asha.grace_period,
            reduction_factor=cfg.asha.reduction_factor,
            max_t=cfg.asha.max_t or total_steps,
        )
    else:
        scheduler = FIFOScheduler()
    return tune.Tuner(
        trainable,
        param_space=cfg.param_space(),
        tune_config=tune.TuneConfig(
            metric=cfg.metric,
            mode=cfg.mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=cfg.num_samples,
            max_concurrent_trials=limit,
            trial_dirname_creator=_trial_dirname,
        ),
        run_config=tune.RunConfig(
            name=tune_root.name,
            storage_path=str(tune_root.parent),
            callbacks=list(callbacks or []),
            # Ray Train restarts failed workers inside a trial; a trial that still fails is an error.
            failure_config=tune.FailureConfig(max_failures=0),
        ),
    )


def _collect_rows(tune_root: Path, cfg: SweepConfig, total_steps: int, runs: dict[str, Any]) -> tuple[list[TrialRow], bool]:
    """Rows from the saved experiment state, and whether every trial of the sweep has ended."""
    from ray.tune import ExperimentAnalysis

    analysis = ExperimentAnalysis(str(tune_root))
    rows = []
    ended = 0
    for trial in sorted(analysis.trials, key=lambda t: t.trial_id):
        last = dict(trial.last_result or {})
        step = last.get("step")
        step = int(step) if isinstance(step, (int, float)) else None
        if trial.status == "ERROR":
            status = "error"
        elif trial.status == "TERMINATED":
            status = "completed" if step is not None and step >= total_steps else "early_stopped"
        else:
            status = "unfinished"
        ended += status != "unfinished"
        package = None
        ckpt = last.get("checkpoint_path")
        if status == "completed" and ckpt and (Path(ckpt) / "package").is_dir():
            package = str(Path(ckpt) / "package")
        metrics = {k: float(v) for k, v in last.items() if k.startswith("val/") and isinstance(v, (int, float))}
        params = {k: trial.config.get(k) for k in cfg.params}
        run = runs.get(trial.trial_id)
        rows.append(TrialRow(trial.trial_id, status, step, metrics, params, run.info.run_id if run else None, package))
    complete = ended >= cfg.expected_trials() and ended == len(rows)
    return rows, complete


def _log_results(parent: TrackedRun, cfg: SweepConfig, rows: list[TrialRow], csv_path: Path, plot: Path | None,
                 best: TrialRow | None) -> None:
    parent.log_artifact(csv_path, "results")
    if plot is not None:
        parent.log_artifact(plot, "results")
    counts = {s: sum(r.status == s for r in rows) for s in ("completed", "early_stopped", "error", "unfinished")}
    metrics = {f"trials/{k}": float(v) for k, v in counts.items()}
    # The final metric of every trial in trial order: a curve of the sweep on the parent run,
    # and beside it the held-out part's.
    parent.log_series(f"trial/{cfg.metric}", [(i, r.metrics[cfg.metric]) for i, r in enumerate(rows)
                                              if r.metrics.get(cfg.metric) is not None])
    parent.log_series(f"trial_holdout/{cfg.metric}", [(i, r.holdout) for i, r in enumerate(rows)
                                                      if r.holdout is not None and math.isfinite(r.holdout)])
    if best is not None:
        metrics[f"best/{cfg.metric}"] = best.metrics[cfg.metric]
        if best.holdout is not None and math.isfinite(best.holdout):
            metrics[f"best_holdout/{cfg.metric}"] = best.holdout
        parent.set_tags({"sensorlm.best_trial": best.trial_id, **({"sensorlm.best_run_id": best.run_id} if best.run_id else {})})
    parent.log_metrics(metrics)


def score_holdout(task: SweepTask, rows: list[TrialRow]) -> dict[str, HoldoutScore]:
    """Every completed trial's sweep metric on the held-out part (`TrialRow.holdout`), so the
    results show whether selection ranked models or noise; the best is still picked on the
    selection part alone."""
    from sensorlm.tracking.package import load_model_package

    if task.holdout_key() is None:
        return {}
    scores = {}
    for r in rows:
        if r.status == "completed" and r.package_dir:
            score = task.holdout_score(load_model_package(r.package_dir))
            if score is not None:
                scores[r.trial_id], r.holdout = score, score.value
    return scores


def _register_best(task: SweepTask, cfg: SweepConfig, best: TrialRow, tracking_uri: str, name: str,
                   parent_run_id: str | None = None, best_holdout: HoldoutScore | None = None
                   ) -> tuple[str, str, bool, str]:
    from sensorlm.tracking.history import tracking_client
    from sensorlm.tracking.mlflow_utils import get_alias_version, set_alias, set_version_tags
    from sensorlm.tracking.package import load_model_package
    from sensorlm.tracking.promote import is_permission_denied, mark_candidate, promotion_command

    client = tracking_client(tracking_uri)
    alias = cfg.tracking.alias
    tags = {SPLIT_TAG: task.split_key(), SWEEP_TAG: name, TRIAL_ID_TAG: best.trial_id,
            "sensorlm.sweep_metric": f"{cfg.metric} ({cfg.mode})"}
    if task.holdout_key() is not None:
        # Selection saw the validation data the trials reported on; the champion is decided on
        # data it did not see, against the best version ever registered, not only the holder.
        if best_holdout is None:
            best_holdout = task.holdout_score(load_model_package(best.package_dir))
        gate = decide(task, cfg, best_holdout, client, tracking_uri)
        promote, reason = gate.promote, gate.reason
        tags.update(gate.tags)
    else:
        # Read the holder before registering: the decision is about the version that held it.
        holder = get_alias_version(cfg.registered_name, alias, client=client)
        promote, reason = champion_decision(best.metrics[cfg.metric], cfg.mode, holder, cfg.metric, task.split_key())
    model_uri, version = task.register(best, tracking_uri)
    refused = set_version_tags(client, cfg.registered_name, version, tags)
    if refused:  # a fresh version's tags are the job's to write; say so if the server thinks otherwise
        _say(f"{cfg.registered_name} version {version}: the tracking server refused tags {', '.join(refused)}")
    if promote:
        try:
            set_alias(cfg.registered_name, alias, version, client=client)
        except Exception as e:  # MlflowException: a refused alias move is the promoter's job
            if not is_permission_denied(e):
                raise
            # A job's MLflow login may register but not move aliases: nominate the version and
            # leave the move to the promoter (sensorlm.tracking.promote); the sweep still succeeds.
            command = promotion_command(cfg.registered_name, version, alias)
            mark_candidate(client, cfg.registered_name, version, alias, reason)
            if parent_run_id:
                TrackedRun(tracking_uri, parent_run_id).set_tags({"sensorlm.promotion_pending": command})
            _say(f"{cfg.registered_name} version {version} registered as @{alias} CANDIDATE ({reason}); this MLflow "
                 f"user may not move @{alias}: promote it with the promoter's credentials: {command}")
            return model_uri, version, False, f"{reason}; awaiting promotion (@{alias} needs the promoter): {command}"
        _say(f"{cfg.registered_name} version {version} is now @{alias}: {reason}")
    else:
        _say(f"{cfg.registered_name} version {version} registered WITHOUT @{alias}: {reason}")
    return model_uri, version, promote, reason


def run_sweep(cfg: SweepConfig, *, resume: bool | None = None, callbacks: list | None = None, num_cpus: int | None = None) -> SweepResult:
    """Run (or resume) a sweep end to end and register its winner.

    Args:
        cfg: the validated sweep config.
        resume: None = resume when the sweep folder holds a Tune experiment, else start;
            True = it must exist; False = it must not.
        callbacks: extra Ray Tune callbacks (e.g. a progress hook).
        num_cpus: logical CPUs when this call starts a local Ray.

    Returns:
        A `SweepResult`; ``complete`` is False when the sweep was interrupted (run it again to
        resume; nothing is registered until every trial has ended).
    """
    name, sweep_dir, tune_root, restoring, meta = _locate(cfg, resume)

    from sensorlm.tracking.mlflow_utils import check_tracking_server, resolve_tracking_uri

    task = make_task(cfg)
    tracking_uri = resolve_tracking_uri(cfg.tracking.tracking_uri)
    check_tracking_server(tracking_uri)  # fails in seconds, before Ray starts
    if meta is not None and meta.get("tracking_uri") != redact(tracking_uri):
        raise ConfigError(
            f"sweep {name!r} logged to {meta.get('tracking_uri')}, not {redact(tracking_uri)}; set tracking.tracking_uri to it"
        )
    sweep_dir.mkdir(parents=True, exist_ok=True)
    setup = task.prepare(sweep_dir, tracking_uri)  # raises ConfigError before anything runs

    if meta is None:
        meta = _start(cfg, task, tracking_uri, name, sweep_dir)
    else:
        _say(f"sweep {name}: resuming from {tune_root} (MLflow parent run {meta['parent_run_id']})")
    parent_run_id = meta["parent_run_id"]
    parent = TrackedRun(tracking_uri, parent_run_id)
    parent.reopen()
    setup = {**setup, "parent_run_id": parent_run_id, "sweep_name": name, "tracking_uri": tracking_uri}

    try:
        if not meta.get("finished"):
            _fit(cfg, task, setup, tune_root, restoring, callbacks, num_cpus)
        runs = _child_runs(parent)
        rows, complete = _collect_rows(tune_root, cfg, task.total_steps(), runs)
        best = best_completed(rows, cfg.metric, cfg.mode)
        results_dir = sweep_dir / "results"
        registration = meta.get("registration")
        if registration is not None:  # finished before: report it, log and register nothing again
            result = SweepResult(name, sweep_dir, parent_run_id, tracking_uri, complete, rows, best,
                                 registration.get("model_uri"), registration.get("version"),
                                 bool(registration.get("promoted")), registration["decision"],
                                 results_dir / "trials.csv", results_dir / "metric_vs_params.png")
            _say(f"sweep {name} already finished; nothing to run")
            return _end(parent, result, cfg)
        _finalize_child_runs(tracking_uri, rows, runs)
        holdout = score_holdout(task, rows) if complete else {}
        csv_path = write_results_csv(rows, list(cfg.params), results_dir / "trials.csv", cfg.metric)
        plot = plot_metric_vs_params(rows, cfg, results_dir / "metric_vs_params.png") if rows else None
        result = SweepResult(name, sweep_dir, parent_run_id, tracking_uri, complete, rows, best, results_csv=csv_path, plot=plot)
        if not complete:
            return _interrupted(parent, result, cfg)
        _log_results(parent, cfg, rows, csv_path, plot, best)
        if best is None:
            result.decision = "no trial completed (every trial was stopped early or failed); nothing registered"
        elif not cfg.tracking.register:
            result.decision = f"best trial {best.trial_id}; registration is off (tracking.register=false)"
        else:
            result.model_uri, result.model_version, result.promoted, result.decision = _register_best(
                task, cfg, best, tracking_uri, name, parent_run_id, holdout.get(best.trial_id))
        meta.update(finished=True, registration={"model_uri": result.model_uri, "version": result.model_version,
                                                 "promoted": result.promoted, "decision": result.decision})
        _write_meta(sweep_dir, meta)
        parent.set_tags({"sensorlm.sweep_state": "finished", "sensorlm.registration": result.decision[:5000],
                         **({"sensorlm.registered_version": f"{cfg.registered_name}/{result.model_version}"}
                            if result.model_version else {})})
        return _end(parent, result, cfg)
    except BaseException:
        parent.end("FAILED")
        raise


def _locate(cfg: SweepConfig, resume: bool | None) -> tuple[str, Path, Path, bool, dict[str, Any] | None]:
    """The sweep's name and folder, its Tune folder, whether Tune can restore it and its meta file;
    refuses a resume that `resume` does not allow or a config that differs from the one it began with."""
    from ray import tune

    name = cfg.name or f"{cfg.task}-sweep-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = Path(cfg.storage_path).expanduser()
    sweep_dir = (storage if storage.is_absolute() else Path.cwd() / storage).resolve() / name
    tune_root = sweep_dir / "tune"
    restoring = tune.Tuner.can_restore(str(tune_root))
    meta = _read_meta(sweep_dir)
    if restoring and resume is False:
        raise ConfigError(f"sweep {name!r} already exists at {sweep_dir}; resume it or pick another name")
    if not restoring and resume is True:
        raise ConfigError(f"sweep {name!r}: nothing to resume at {tune_root}")
    if restoring and meta is None:
        raise ConfigError(f"sweep {name!r}: {sweep_dir / META_FILE} is missing; cannot tell which MLflow run it belongs to")
    if meta is not None:
        diff = _config_differences(meta["config"], redact(to_dict(cfg)))
        if diff:
            raise ConfigError(
                f"sweep {name!r} at {sweep_dir} was started with a different config ({', '.join(diff)} differ); "
                "resume it unchanged or pick another name"
            )
    return name, sweep_dir, tune_root, restoring, meta


def _fit(cfg: SweepConfig, task: SweepTask, setup: dict[str, Any], tune_root: Path, restoring: bool,
         callbacks: list | None, num_cpus: int | None) -> None:
    """Run the trials on Ray Tune: a new tuner, or the restored one (finished trials stay finished;
    unfinished and errored ones run again)."""
    from ray import tune

    init_ray(task.worker_env(), num_cpus=num_cpus)
    _check_cluster_fits(cfg)
    trainable = tune.with_resources(tune.with_parameters(task.trainable(), setup=setup), {"CPU": cfg.resources.trial_cpus})
    if restoring:
        tuner = tune.Tuner.restore(str(tune_root), trainable=trainable, resume_unfinished=True, resume_errored=True)
    else:
        tuner = _build_tuner(cfg, trainable, tune_root, task.total_steps(), callbacks)
    tuner.fit()


def _start(cfg: SweepConfig, task: SweepTask, tracking_uri: str, name: str, sweep_dir: Path) -> dict[str, Any]:
    """A new sweep: its MLflow parent run and its meta file (which a resume reads back)."""
    parent_run_id = _open_parent_run(cfg, task, tracking_uri, name, sweep_dir)
    meta = {"name": name, "task": cfg.task, "config": redact(to_dict(cfg)), "parent_run_id": parent_run_id,
            "tracking_uri": redact(tracking_uri), "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "finished": False}
    _write_meta(sweep_dir, meta)
    _say(f"sweep {name}: {cfg.expected_trials()} trials, searcher {cfg.searcher}, metric {cfg.metric} ({cfg.mode}); "
         f"MLflow parent run {parent_run_id}")
    return meta


def _interrupted(parent: TrackedRun, result: SweepResult, cfg: SweepConfig) -> SweepResult:
    done = sum(r.status != "unfinished" for r in result.trials)
    _say(f"sweep {result.name} interrupted: {done} of {cfg.expected_trials()} trials ended; "
         "run the same command again to resume (finished trials are not rerun)")
    parent.set_tags({"sensorlm.sweep_state": "interrupted"})
    parent.end("KILLED")
    return result


def _end(parent: TrackedRun, result: SweepResult, cfg: SweepConfig) -> SweepResult:
    parent.end("FINISHED")
    _print_summary(result, cfg)
    return result


def _check_cluster_fits(cfg: SweepConfig) -> None:
    """Tune reserves only the trial's own CPUs; its Train workers ask for theirs later. Warn
    when the concurrent trials' workers cannot all fit, as they then time out waiting."""
    import ray

    res = cfg.resources
    per_trial = res.trial_cpus + res.num_workers * res.cpus_per_worker
    have = float(ray.cluster_resources().get("CPU", 0.0))
    if per_trial > have:
        raise ConfigError(
            f"resources: one trial needs {per_trial:g} CPUs (trial_cpus + num_workers x cpus_per_worker) "
            f"but the Ray cluster has {have:g}"
        )
    if cfg.max_concurrent_trials * per_trial > have:
        _say(
            f"warning: {cfg.max_concurrent_trials} concurrent trials x {per_trial:g} CPUs exceed the cluster's {have:g}; "
            "trials whose workers cannot start time out (lower max_concurrent_trials)"
        )


def _print_summary(result: SweepResult, cfg: SweepConfig) -> None:
    counts = {s: sum(r.status == s for r in result.trials) for s in ("completed", "early_stopped", "error")}
    _say(f"sweep {result.name}: {counts['completed']} completed, {counts['early_stopped']} stopped early by ASHA, "
         f"{counts['error']} failed")
    if result.best is not None:
        params = ", ".join(f"{k}={v}" for k, v in result.best.params.items())
        held = "" if result.best.holdout is None else f", {result.best.holdout:.6g} on the held-out part"
        _say(f"best trial {result.best.trial_id}: {cfg.metric} {result.best.metrics[cfg.metric]:.6g} on the selection "
             f"part{held} ({params})")
        scored = [r for r in result.trials if r.holdout is not None and r.metrics.get(cfg.metric) is not None]
        if len(scored) > 1:
            _say("completed trials, selection | held out: " + ", ".join(
                f"{r.trial_id} {r.metrics[cfg.metric]:.3g} | {r.holdout:.3g}" for r in scored))
    _say(f"registration: {result.decision}")
    _say(f"results: {result.results_csv}  (MLflow parent run {result.parent_run_id} at {redact(result.tracking_uri)})")
