"""What a sweep produced: one row per trial, the sweep's result, the results table and plot, and
the MLflow tag names that tie trials, runs and versions to their sweep."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sensorlm.tuning.space import SweepConfig

TRIAL_ID_TAG = "sensorlm.trial_id"
SWEEP_TAG = "sensorlm.sweep"
ROLE_TAG = "sensorlm.sweep_role"
SPLIT_TAG = "sensorlm.val_split"


@dataclass
class TrialRow:
    """One trial as the results table shows it.

    Args:
        status: ``completed`` (reached the last step), ``early_stopped`` (ASHA), ``error``, or
            ``unfinished`` (the sweep was interrupted before it ended).
        step: the last reported optimizer step.
        metrics: the last reported validation metrics.
        params: the trial's sampled search parameters.
        run_id: its MLflow child run.
        package_dir: the model package in its final checkpoint (completed trials).
        holdout: the sweep metric on the held-out part of the validation data (completed
            trials of a task that holds data out): reported beside the selection score, never
            used to pick the best trial.
    """

    trial_id: str
    status: str
    step: int | None
    metrics: dict[str, float]
    params: dict[str, Any]
    run_id: str | None = None
    package_dir: str | None = None
    holdout: float | None = None


@dataclass
class SweepResult:
    """What `run_sweep` returns.

    Args:
        complete: every trial ended (False: interrupted; run again to resume).
        trials: one row per trial (see `TrialRow`).
        best: the best completed trial, or None.
        model_uri / model_version: the registered winner, if any.
        promoted: it took the alias; `decision` says why or why not.
        results_csv / plot: the results table and plot (also on the parent run).
    """

    name: str
    sweep_dir: Path
    parent_run_id: str
    tracking_uri: str
    complete: bool
    trials: list[TrialRow]
    best: TrialRow | None = None
    model_uri: str | None = None
    model_version: str | None = None
    promoted: bool = False
    decision: str = ""
    results_csv: Path | None = None
    plot: Path | None = None


def best_completed(rows: list[TrialRow], metric: str, mode: str) -> TrialRow | None:
    """The best trial that ran to its last step and left a model package."""
    pool = [
        r for r in rows
        if r.status == "completed" and r.package_dir and isinstance(r.metrics.get(metric), (int, float))
        and math.isfinite(r.metrics[metric])
    ]
    if not pool:
        return None
    pick = max if mode == "max" else min
    return pick(pool, key=lambda r: r.metrics[metric])


# ----------------------------------------------------------------------------------------------
# Results table and plot


def write_results_csv(rows: list[TrialRow], param_names: list[str], path: Path, metric: str | None = None) -> Path:
    """One line per trial: id, status, last step, metrics (the selection part's), the sweep
    `metric` on the held-out part beside them (``holdout.<metric>``, where scored), params,
    MLflow run, package."""
    metric_names = sorted({k for r in rows for k in r.metrics})
    held = metric is not None and any(r.holdout is not None for r in rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["trial_id", "status", "step", *metric_names, *([f"holdout.{metric}"] if held else []),
                         *[f"param.{p}" for p in param_names], "run_id", "package_dir"])
        for r in rows:
            writer.writerow([
                r.trial_id, r.status, "" if r.step is None else r.step,
                *["" if r.metrics.get(m) is None else repr(float(r.metrics[m])) for m in metric_names],
                *(["" if r.holdout is None else repr(float(r.holdout))] if held else []),
                *[r.params.get(p, "") for p in param_names],
                r.run_id or "", r.package_dir or "",
            ])
    return path


def plot_metric_vs_params(rows: list[TrialRow], cfg: SweepConfig, path: Path) -> Path:
    """One panel per searched parameter: the last reported metric of each trial against its
    value; trials ASHA stopped are hollow (their value is from an earlier step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sensorlm.evaluation.plots import save_png

    names = list(cfg.params)
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False, layout="constrained")
    styles = {"completed": dict(marker="o", color="C0"), "early_stopped": dict(marker="o", facecolors="none", edgecolors="C1")}
    for ax, name in zip(axes[0], names):
        spec = cfg.params[name]
        values = [r.params.get(name) for r in rows]
        categorical = any(isinstance(v, (bool, str)) for v in values if v is not None)
        if categorical:
            cats = [str(v) for v in (spec.values or sorted({str(v) for v in values}))]
            pos = {c: i for i, c in enumerate(cats)}
            ax.set_xticks(range(len(cats)), cats)
        for status, style in styles.items():
            pts = [
                (pos[str(r.params[name])] if categorical else float(r.params[name]), r.metrics[cfg.metric])
                for r in rows
                if r.status == status and r.params.get(name) is not None and r.metrics.get(cfg.metric) is not None
            ]
            if pts:
                xs, ys = zip(*pts)
                ax.scatter(xs, ys, label=status.replace("_", " "), **style)
        if spec.type == "loguniform" or (
            not categorical and spec.candidates() and min(spec.candidates()) > 0
            and max(spec.candidates()) / min(spec.candidates()) >= 20
        ):
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(cfg.metric)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"{cfg.name}: {cfg.metric} ({cfg.mode} is better)")
    return save_png(fig, path)
