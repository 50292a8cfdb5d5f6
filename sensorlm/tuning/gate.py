"""The champion gate: a sweep's winner takes the alias only when it is better on held-out data than
the best version ever registered, by more than the noise of which windows were held out.

Selection saw the validation part the trials reported on, so the decision is made on the other
part (`SweepTask.holdout_score`). Where the sweep metric is a mean of per-window outcomes
(zero-shot accuracy, recall@1) both models are scored on the same windows and a paired bootstrap
gives an interval for the difference: the challenger is promoted only when the whole interval,
at ``promotion.confidence``, lies on the better side. A challenger better only by noise is a tie,
and a tie keeps the champion. Other metrics (a batch loss, an RMSE over pixels) are compared on
their point values, and the decision says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

HOLDOUT_TAG = "sensorlm.holdout_split"  # with "holdout.<metric>": a version's score on held-out data


def _say(msg: str) -> None:
    print(f"[sensorlm.sweep] {msg}", flush=True)


@dataclass
class HoldoutScore:
    """A model's sweep metric on the held-out data.

    Args:
        value: the metric.
        per_window: each held-out window's outcome by sample key (the metric is their mean), or
            None where the metric is no mean of per-window outcomes.
    """

    value: float
    per_window: dict[str, float] | None = None


@dataclass
class GateDecision:
    """Whether the challenger takes the alias, why, and the evidence recorded on its version."""

    promote: bool
    reason: str
    tags: dict[str, str]


def better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def best_registered_on_holdout(task, cfg, client, tracking_uri: str,
                               scored_now: dict[str, HoldoutScore] | None = None) -> tuple[float, str] | None:
    """(score, version) of the best registered version of the sweep's model on the held-out data.
    A version scored before carries the score in tags; any other is loaded from MLflow, scored
    and tagged now (its `HoldoutScore` kept in `scored_now` by version, so it is not scored
    twice); one that cannot run on this data (another input shape, ...) is skipped."""
    from sensorlm.tracking.mlflow_utils import set_version_tags

    key, score_tag = task.holdout_key(), f"holdout.{cfg.metric}"
    best: tuple[float, str] | None = None
    for v in client.search_model_versions(f"name = '{cfg.registered_name}'"):
        tags = v.tags or {}
        if tags.get(HOLDOUT_TAG) == key and score_tag in tags:
            score = float(tags[score_tag])
        else:
            try:
                scored = task.holdout_score(task.load_version(f"models:/{cfg.registered_name}/{v.version}", tracking_uri))
            except (ValueError, FileNotFoundError, KeyError) as e:
                _say(f"version {v.version} not compared on the held-out data: {' '.join(str(e).split())[:200]}")
                continue
            if scored is None or not math.isfinite(scored.value):
                continue
            score = scored.value
            if scored_now is not None:
                scored_now[str(v.version)] = scored
            # write-once for a job's login (infra/mlflow_auth): a refused cache costs a rescore next time
            set_version_tags(client, cfg.registered_name, v.version, {HOLDOUT_TAG: key, score_tag: str(score)})
        if math.isfinite(score) and (best is None or better(score, best[0], cfg.mode)):
            best = (score, str(v.version))
    return best


def holdout_decision(new_score: float, best: tuple[float, str] | None, metric: str, mode: str) -> tuple[bool, str]:
    """On point values: promote only on a real improvement over every registered version."""
    if not math.isfinite(new_score):
        return False, f"held-out {metric} is {new_score}"
    if best is None:
        return True, f"held-out {metric} {new_score:.6g}; no registered version scored on the held-out data"
    score, version = best
    if better(new_score, score, mode):
        return True, f"held-out {metric} {new_score:.6g} beats the best registered version's {score:.6g} (version {version})"
    return False, (f"held-out {metric} {new_score:.6g} does not beat the best registered version's {score:.6g} "
                   f"(version {version}, {mode} is better)")


def paired_decision(new: HoldoutScore, old: HoldoutScore, version: str, metric: str, mode: str, *,
                    confidence: float, resamples: int, seed: int = 0) -> GateDecision:
    """Promote `new` over registered `version` (scored `old`) only when a paired bootstrap over
    the same held-out windows puts the whole interval of the difference on the better side."""
    from sensorlm.evaluation.metrics import paired_bootstrap_difference

    keys = sorted(new.per_window)
    if set(keys) != set(old.per_window):
        raise ValueError(f"held-out windows differ: the challenger was scored on {len(keys)}, version {version} "
                         f"on {len(old.per_window)}")
    diff, low, high = paired_bootstrap_difference([new.per_window[k] for k in keys], [old.per_window[k] for k in keys],
                                                  resamples=resamples, level=confidence, seed=seed)
    sure = low > 0 if mode == "max" else high < 0
    pct = f"{confidence:.0%}"
    evidence = (f"difference {diff:+.4g}, {pct} paired bootstrap interval [{low:+.4g}, {high:+.4g}] over "
                f"{len(keys)} held-out windows")
    tags = {"holdout.compared_with_version": version, f"holdout.{metric}.difference": repr(diff),
            f"holdout.{metric}.difference_ci": f"[{low!r}, {high!r}]", "holdout.confidence": repr(confidence)}
    if sure:
        return GateDecision(True, f"held-out {metric} {new.value:.6g} beats the best registered version's "
                                  f"{old.value:.6g} (version {version}): {evidence}", tags)
    return GateDecision(False, f"held-out {metric} {new.value:.6g} is not better than the best registered version's "
                               f"{old.value:.6g} (version {version}) with {pct} confidence ({evidence}); a tie keeps "
                               "the champion", tags)


def decide(task, cfg, new: HoldoutScore | None, client, tracking_uri: str) -> GateDecision:
    """The gate: `new` (the sweep winner's held-out score) against the best registered version."""
    metric, mode = cfg.metric, cfg.mode
    if new is None or not math.isfinite(new.value):
        return GateDecision(False, f"held-out {metric} is {None if new is None else new.value}", {})
    tags = {HOLDOUT_TAG: task.holdout_key(), f"holdout.{metric}": str(new.value)}
    scored_now: dict[str, HoldoutScore] = {}
    best = best_registered_on_holdout(task, cfg, client, tracking_uri, scored_now)
    if best is not None and new.per_window:
        # Per-window outcomes are not cached in tags: score the bar on the same windows, unless
        # it was scored just now.
        old = scored_now.get(best[1]) or task.holdout_score(
            task.load_version(f"models:/{cfg.registered_name}/{best[1]}", tracking_uri))
        if old is not None and old.per_window:
            gate = cfg.promotion
            try:
                decision = paired_decision(new, old, best[1], metric, mode, confidence=gate.confidence,
                                           resamples=gate.resamples, seed=gate.seed)
            except ValueError as e:
                _say(f"no paired comparison ({e}); comparing point values")
            else:
                decision.tags = {**tags, **decision.tags}
                return decision
    promote, reason = holdout_decision(new.value, best, metric, mode)
    if best is not None and not new.per_window:
        reason += f" ({metric} has no per-window outcomes to pair: point values compared)"
    return GateDecision(promote, reason, tags)
