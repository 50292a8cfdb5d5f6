"""The champion gate (sensorlm/tuning/gate.py): against the best registered version, on held-out
windows, promoting only an improvement the paired bootstrap is sure of."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from sensorlm.typed_config import ConfigError, from_dict
from sensorlm.tuning.gate import HoldoutScore, best_registered_on_holdout, decide, holdout_decision, paired_decision
from sensorlm.tuning.space import SweepConfig


def _cfg(**promotion):
    return from_dict(SweepConfig, {"task": "sensorlm", "name": "s", "metric": "val/zero_shot_acc", "mode": "max",
                                   "params": {"lr": {"type": "grid", "values": [1e-3]}},
                                   "tracking": {"registered_model_name": "m"}, "promotion": promotion})


class _Version:
    def __init__(self, version, tags=None):
        self.version, self.tags = version, tags or {}


class _Registry:
    def __init__(self, versions):
        self.versions, self.tagged = versions, {}

    def search_model_versions(self, filter_string):
        return self.versions

    def set_model_version_tag(self, name, version, key, value):
        self.tagged[(version, key)] = value


class _HoldoutTask:
    """Scores by package: a float (no per-window outcomes) or a HoldoutScore."""

    def __init__(self, scores, load_version=None):
        self.scores = scores
        self.load_version = load_version or (lambda uri, tracking_uri: uri)
        self.scored = []

    def holdout_key(self):
        return "ds=1;part=holdout"

    def holdout_score(self, package):
        self.scored.append(package)
        score = self.scores[package]
        return score if isinstance(score, HoldoutScore) else HoldoutScore(score)


def _outcomes(correct: np.ndarray) -> HoldoutScore:
    return HoldoutScore(float(correct.mean()), {f"w{i:03d}": float(c) for i, c in enumerate(correct)})


def test_the_bar_is_the_best_registered_version_on_held_out_data():
    """Not only the alias holder: a version that scored better on the held-out data earlier sets
    the bar; versions never scored are scored and tagged now; one that cannot run is skipped."""

    def load(uri, tracking_uri):
        if uri.endswith("/4"):
            raise ValueError("sensor input: expected shape (B, 144, 34), got (16, 120, 7)")
        return uri

    registry = _Registry([
        _Version("1", {"sensorlm.holdout_split": "ds=1;part=holdout", "holdout.val/zero_shot_acc": "0.5"}),  # holder
        _Version("2", {"sensorlm.holdout_split": "ds=0;part=holdout", "holdout.val/zero_shot_acc": "0.99"}),  # other data
        _Version("3"),  # registered by a plain training run: scored now
        _Version("4"),  # another input shape: skipped
    ])
    task = _HoldoutTask({"models:/m/2": 0.3, "models:/m/3": 0.64}, load)
    best = best_registered_on_holdout(task, _cfg(), registry, "sqlite:///x")
    assert best == (0.64, "3")
    assert registry.tagged[("3", "holdout.val/zero_shot_acc")] == "0.64"
    assert registry.tagged[("3", "sensorlm.holdout_split")] == "ds=1;part=holdout"
    promote, reason = holdout_decision(0.6, best, "val/zero_shot_acc", "max")  # beats the holder, not the best
    assert not promote and "does not beat the best registered version's 0.64 (version 3" in reason
    assert holdout_decision(0.7, best, "val/zero_shot_acc", "max")[0]
    assert not holdout_decision(0.64, best, "val/zero_shot_acc", "max")[0]  # a tie is no improvement
    assert not holdout_decision(float("nan"), None, "val/zero_shot_acc", "max")[0]


def test_a_challenger_better_only_by_noise_is_refused_and_a_clearly_better_one_promoted():
    rng = np.random.default_rng(0)
    champion = (rng.random(200) < 0.70).astype(float)
    # noise: right on 26 windows the champion got wrong, wrong on 20 it got right (3 points up)
    noisy = champion.copy()
    noisy[np.flatnonzero(champion == 0)[:26]] = 1.0
    noisy[np.flatnonzero(champion == 1)[:20]] = 0.0
    assert noisy.mean() - champion.mean() == pytest.approx(0.03)
    clearly = champion.copy()
    clearly[np.flatnonzero(clearly == 0)[:30]] = 1.0  # right where the champion was, and on 30 more

    tie = paired_decision(_outcomes(noisy), _outcomes(champion), "3", "val/zero_shot_acc", "max",
                          confidence=0.95, resamples=2000)
    assert not tie.promote and f"is not better than the best registered version's {champion.mean():.6g}" in tie.reason
    assert "a tie keeps the champion" in tie.reason and "95% paired bootstrap interval" in tie.reason
    low, high = eval(tie.tags["holdout.val/zero_shot_acc.difference_ci"])  # noqa: S307 (a list of two floats)
    assert low < 0 < high and tie.tags["holdout.compared_with_version"] == "3"

    win = paired_decision(_outcomes(clearly), _outcomes(champion), "3", "val/zero_shot_acc", "max",
                          confidence=0.95, resamples=2000)
    assert win.promote and "beats the best registered version's" in win.reason
    assert float(win.tags["holdout.val/zero_shot_acc.difference"]) == pytest.approx(0.15)
    low, high = eval(win.tags["holdout.val/zero_shot_acc.difference_ci"])  # noqa: S307
    assert 0 < low < 0.15 < high
    # for a metric where lower is better the sides swap
    assert paired_decision(_outcomes(champion), _outcomes(clearly), "3", "m", "min",
                           confidence=0.95, resamples=500).promote
    with pytest.raises(ValueError, match="held-out windows differ"):
        paired_decision(_outcomes(champion), _outcomes(champion[:100]), "3", "m", "max", confidence=0.95, resamples=500)


def test_decide_rescores_the_bar_pairs_outcomes_and_records_the_interval(capsys):
    rng = np.random.default_rng(1)
    champion = (rng.random(300) < 0.6).astype(float)
    better = champion.copy()
    better[np.flatnonzero(better == 0)[:60]] = 1.0
    registry = _Registry([_Version("1", {"sensorlm.holdout_split": "ds=1;part=holdout",
                                         "holdout.val/zero_shot_acc": str(champion.mean())})])
    task = _HoldoutTask({"models:/m/1": _outcomes(champion)})
    gate = decide(task, _cfg(confidence=0.9, resamples=500), _outcomes(better), registry, "sqlite:///x")
    assert gate.promote and task.scored == ["models:/m/1"]  # the bar's windows scored again
    assert gate.tags["holdout.confidence"] == "0.9" and gate.tags["holdout.val/zero_shot_acc"] == str(better.mean())
    assert "90% paired bootstrap interval" in gate.reason and "over 300 held-out windows" in gate.reason
    # the same model again: a tie
    assert not decide(task, _cfg(), _outcomes(champion), registry, "sqlite:///x").promote
    # a version registered without a held-out score is scored once: for the bar and the pairing
    task = _HoldoutTask({"models:/m/1": _outcomes(champion)})
    gate = decide(task, _cfg(resamples=500), _outcomes(better), _Registry([_Version("1")]), "sqlite:///x")
    assert gate.promote and task.scored == ["models:/m/1"]
    # no per-window outcomes (a loss, an RMSE): point values, and the decision says so
    task = _HoldoutTask({"models:/m/1": 0.5})
    gate = decide(task, _cfg(), HoldoutScore(0.7), registry, "sqlite:///x")
    assert gate.promote and "no per-window outcomes to pair: point values compared" in gate.reason
    # nothing registered yet: the first winner is promoted
    gate = decide(task, _cfg(), _outcomes(better), _Registry([]), "sqlite:///x")
    assert gate.promote and "no registered version scored" in gate.reason
    assert not decide(task, _cfg(), None, registry, "sqlite:///x").promote


def test_the_paired_interval_covers_the_true_difference_at_about_its_level():
    """200 simulated held-out sets where the challenger is truly 3 points better: the 90%
    interval covers 0.03 in roughly 90% of them (the percentile bootstrap runs a little narrow
    at this size, so the band is wide)."""
    from sensorlm.evaluation.metrics import paired_bootstrap_difference

    rng = np.random.default_rng(2)
    covered = 0
    for i in range(200):
        u = rng.random(300)
        old = (u < 0.70).astype(float)
        new = (u < 0.73).astype(float)  # paired: the same hard windows, 3 points better
        flips = rng.random(300) < 0.1  # and some windows the two models see differently
        new[flips] = (rng.random(flips.sum()) < 0.73).astype(float)
        true = 0.73 - 0.70
        _, low, high = paired_bootstrap_difference(new, old, resamples=400, level=0.9, seed=i)
        covered += low <= true <= high
    assert 0.8 <= covered / 200 <= 0.97


def test_bad_gate_settings_and_outcomes_are_one_line():
    from sensorlm.evaluation.metrics import paired_bootstrap_difference

    with pytest.raises(ConfigError, match=r"promotion.confidence must be in \[0.5, 1\), got 1.0"):
        _cfg(confidence=1.0)
    with pytest.raises(ConfigError, match="promotion.resamples must be >= 100, got 10"):
        _cfg(resamples=10)
    with pytest.raises(ValueError, match=r"expected two \(N,\) arrays of one shape, N > 0, got \(3,\) and \(2,\)"):
        paired_bootstrap_difference([1, 0, 1], [1, 0])
    with pytest.raises(ValueError, match=r"got \(0,\) and \(0,\)"):
        paired_bootstrap_difference([], [])
    assert paired_bootstrap_difference([1, 1, 0], [1, 1, 0], resamples=100) == (0.0, 0.0, 0.0)
