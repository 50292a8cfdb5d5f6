"""Reading runs back for evaluation, and writing its run: the runs ``--compare`` names, metric
curves of a training run, and the evaluation run with its metrics, params and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from sensorlm.tracking.resolve import RUN_ID as _RUN_ID, _not_found

EVAL_TASK_TAG = "evaluation"  # value of `sensorlm.task` on evaluation runs


def tracking_client(uri: str):
    """An MlflowClient of `uri` (registry on the same store)."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def run_display_name(client, run_id: str) -> str:
    return client.get_run(run_id).info.run_name or run_id[:8]


def _quoted(value: str, what: str) -> str:
    if "'" in value or "`" in value:
        raise ValueError(f"--compare {what!r}: quotes are not supported in run names or tag filters")
    return value


def _search_all(client, filter_string: str) -> list:
    from mlflow.entities import ViewType

    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not ids:
        return []
    runs = client.search_runs(ids, filter_string=filter_string, max_results=200)
    # Evaluation runs carry the same names and tags as what they evaluate; only training runs have curves.
    return [r for r in runs if r.data.tags.get("sensorlm.task") != EVAL_TASK_TAG]


def resolve_compare_runs(specs: Sequence[str], client) -> dict[str, str]:
    """Runs named by ``--compare`` entries -> ``{label: run id}``.

    Args:
        specs: each an MLflow run id, ``tag:KEY=VALUE`` (every run with that tag), or a run name
            (every run with that name).
        client: an MlflowClient.

    Raises:
        ValueError: naming an entry that matches no run.
    """
    from mlflow.exceptions import MlflowException

    found: list = []
    for spec in specs:
        spec = str(spec).strip()
        runs: list = []
        if spec.startswith("tag:"):
            key, sep, value = spec[len("tag:") :].partition("=")
            if not sep or not key:
                raise ValueError(f"--compare {spec!r}: expected tag:KEY=VALUE")
            runs = _search_all(client, f"tags.`{_quoted(key, spec)}` = '{_quoted(value, spec)}'")
        else:
            if _RUN_ID.fullmatch(spec):
                try:
                    runs = [client.get_run(spec)]
                except MlflowException as e:
                    if not _not_found(e):
                        raise
            if not runs:
                runs = _search_all(client, f"attributes.run_name = '{_quoted(spec, spec)}'")
        if not runs:
            raise ValueError(f"--compare {spec!r}: no MLflow run with that id, name or tag:KEY=VALUE")
        found.extend(runs)
    labels: dict[str, str] = {}
    seen: set[str] = set()
    for run in found:
        run_id = run.info.run_id
        if run_id in seen:
            continue
        seen.add(run_id)
        label = run.info.run_name or run_id[:8]
        if label in labels:
            label = f"{label} ({run_id[:8]})"
        labels[label] = run_id
    return labels


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as e:
        if _not_found(e):
            return False
        raise
    return True


def _history(client, run_id: str, key: str) -> list[tuple[float, float]]:
    return sorted((float(m.step), float(m.value)) for m in client.get_metric_history(run_id, key))


# Counts and baselines of the validation split, not curves of the model.
_NOT_CURVES = ("val/samples", "val/labelled_samples", "val/majority_share")


def _convergence_curves(client, run_id: str) -> dict[str, list[tuple[float, float]]]:
    """train/loss and the val/* metrics of a training run that describe the model (no counts, no
    baselines) and change over the run: a constant line is no curve."""
    keys = sorted(client.get_run(run_id).data.metrics)
    wanted = [k for k in keys if k == "train/loss" or (k.startswith("val/") and k not in _NOT_CURVES)]
    curves = {k: _history(client, run_id, k) for k in wanted}
    return {k: v for k, v in curves.items() if v and len({value for _, value in v}) > 1}


def log_evaluation_run(
    client, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, str],
    metrics: dict[str, float], out_dir: Path, plots: dict[str, Path], notes: list[str],
) -> str:
    from sensorlm.tracking.run import TrackedRun

    with TrackedRun.open(tracking_uri, experiment, run_name, tags=tags, resume=False) as run:
        run.log_metrics(metrics)
        run.log_params(params)
        for path in plots.values():
            run.log_artifact(path, "plots")
        for extra in ("metrics.json", "metrics_table.txt", "notes.txt"):
            if (out_dir / extra).is_file():
                run.log_artifact(out_dir / extra)
        run.end("FINISHED")
    return run.run_id
