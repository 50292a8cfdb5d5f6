"""Tests for sensorlm/evaluation/metrics.py: known answers on hand-made embeddings and fields."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sensorlm.evaluation.metrics import (
    bidirectional_retrieval,
    climatology_baseline,
    linear_probe_few_shot,
    observed_mean_baseline,
    retrieval_recall,
    sst_baseline_skills,
    sst_skill,
    zero_shot_classification,
)

K, D = 8, 32
NAMES = [f"class{i}" for i in range(K)]


def prototypes(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    p = rng.normal(size=(K, D))
    return p / np.linalg.norm(p, axis=1, keepdims=True)


def clustered(n: int, noise: float, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    protos = prototypes()
    labels = rng.integers(0, K, size=n)
    return protos[labels] + noise * rng.normal(size=(n, D)), labels, protos


# --------------------------------------------------------------------------- zero-shot


def test_zero_shot_perfect_embeddings():
    emb, labels, protos = clustered(400, 1e-3, seed=1)
    out = zero_shot_classification(emb, protos, labels, NAMES)
    assert out["accuracy"] == 1.0
    assert out["macro_f1"] == 1.0
    np.testing.assert_array_equal(out["predictions"], labels)
    assert out["confusion"].shape == (K, K)
    np.testing.assert_array_equal(out["confusion"], np.diag(np.bincount(labels, minlength=K)))
    assert set(out["per_class"]) == set(NAMES)
    for i, name in enumerate(NAMES):
        pc = out["per_class"][name]
        assert pc == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": int(np.sum(labels == i))}


def test_zero_shot_random_embeddings_near_chance():
    rng = np.random.default_rng(2)
    n = 20000
    out = zero_shot_classification(rng.normal(size=(n, D)), prototypes(), rng.integers(0, K, size=n), NAMES)
    # Binomial(n, 1/K): std of the accuracy is sqrt(p(1-p)/n) ~ 0.0023; 0.015 is > 6 std.
    assert abs(out["accuracy"] - 1 / K) < 0.015
    assert out["confusion"].sum() == n


def test_zero_shot_hand_made_confusion():
    text = np.eye(3)
    sensor = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0.1, 0]])
    labels = np.array([0, 1, 2, 1])  # the last one is predicted 0
    out = zero_shot_classification(sensor, text, labels, ["a", "b", "c"])
    assert out["accuracy"] == 0.75
    np.testing.assert_array_equal(out["confusion"], [[1, 0, 0], [1, 1, 0], [0, 0, 1]])
    assert out["per_class"]["a"]["precision"] == 0.5
    assert out["per_class"]["b"]["recall"] == 0.5
    f1_a, f1_b = 2 * 0.5 / 1.5, 2 * 0.5 / 1.5
    assert out["macro_f1"] == pytest.approx((f1_a + f1_b + 1.0) / 3)


def test_zero_shot_macro_f1_ignores_absent_class():
    text = np.eye(3)
    sensor = np.array([[1.0, 0, 0], [0, 1, 0]])
    out = zero_shot_classification(sensor, text, np.array([0, 1]), ["a", "b", "c"])
    assert out["macro_f1"] == 1.0
    assert out["per_class"]["c"]["support"] == 0


@pytest.mark.parametrize(
    "sensor_shape, text_shape, labels_shape, n_names, match",
    [
        ((10, 4), (3, 5), (10,), 3, r"sensor_emb has shape \(10, 4\).*class_text_emb has shape \(3, 5\)"),
        ((10, 4), (3, 4), (9,), 3, r"labels has shape \(9,\).*N=10"),
        ((10, 4), (3, 4), (10,), 4, r"class_names has 4 entries.*\(3, 4\)"),
        ((10,), (3, 4), (10,), 3, r"sensor_emb must be 2-D.*\(10,\)"),
        ((0, 4), (3, 4), (0,), 3, r"sensor_emb is empty.*\(0, 4\)"),
    ],
)
def test_zero_shot_bad_shapes(sensor_shape, text_shape, labels_shape, n_names, match):
    with pytest.raises(ValueError, match=match):
        zero_shot_classification(
            np.ones(sensor_shape), np.ones(text_shape), np.zeros(labels_shape, dtype=int), [str(i) for i in range(n_names)]
        )


def test_zero_shot_label_out_of_range():
    with pytest.raises(ValueError, match=r"labels values must lie in \[0, 3\)"):
        zero_shot_classification(np.ones((2, 3)), np.eye(3), np.array([0, 3]), ["a", "b", "c"])


# --------------------------------------------------------------------------- retrieval


def test_retrieval_hand_made_3x3():
    # Cosine similarities wanted (rows = queries, columns = gallery items):
    #   q0: g0 0.6 | q1: g0 0.5 > g1 0.3 | q2: g0 0.4 > g1 0.35 > g2 0.1
    # so the true match has rank 0, 1 and 2. Queries are unit axes e0..e2; each gallery item is
    # unit norm thanks to a 4th coordinate no query uses.
    sim = np.array([[0.6, 0.0, 0.0], [0.5, 0.3, 0.0], [0.4, 0.35, 0.1]])
    gallery = np.zeros((3, 4))
    gallery[:, :3] = sim.T
    gallery[:, 3] = np.sqrt(1.0 - (sim.T**2).sum(axis=1))
    queries = np.hstack([np.eye(3), np.zeros((3, 1))])
    out = retrieval_recall(queries, gallery, ks=(1, 2, 3))
    assert out == {"recall@1": pytest.approx(1 / 3), "recall@2": pytest.approx(2 / 3), "recall@3": 1.0}


def test_retrieval_clips_k_and_ties_count_against():
    e = np.eye(3)
    assert retrieval_recall(e, e, ks=(1, 10)) == {"recall@1": 1.0, "recall@10": 1.0}
    same = np.ones((3, 2))  # collapsed embeddings: every gallery item ties with the match
    assert retrieval_recall(same, same, ks=(1, 2, 3)) == {"recall@1": 0.0, "recall@2": 0.0, "recall@3": 1.0}


def test_retrieval_perfect_and_random():
    emb, _, _ = clustered(300, 0.0, seed=3)
    rng = np.random.default_rng(4)
    distinct = rng.normal(size=(300, D))
    paired = distinct + 1e-3 * rng.normal(size=(300, D))
    out = bidirectional_retrieval(distinct, paired)
    assert out["sensor_to_text/recall@1"] == 1.0 and out["text_to_sensor/recall@1"] == 1.0
    assert set(out) == {f"{d}/recall@{k}" for d in ("sensor_to_text", "text_to_sensor") for k in (1, 5, 10)}

    n = 2000
    a, b = rng.normal(size=(n, D)), rng.normal(size=(n, D))
    rand = bidirectional_retrieval(a, b, names=("x", "y"), ks=(10,))
    # recall@10 of a random ranking is 10/n = 0.005; std ~ 0.0016, so 0.012 is > 4 std.
    assert rand["x_to_y/recall@10"] < 0.012 and rand["y_to_x/recall@10"] < 0.012


def test_retrieval_bad_shapes():
    with pytest.raises(ValueError, match=r"query_emb shape \(3, 4\).*gallery_emb shape \(2, 4\)"):
        retrieval_recall(np.ones((3, 4)), np.ones((2, 4)))
    with pytest.raises(ValueError, match=r"query_emb has shape \(3, 4\).*gallery_emb has shape \(3, 5\)"):
        retrieval_recall(np.ones((3, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match="ks must be"):
        retrieval_recall(np.ones((3, 4)), np.ones((3, 4)), ks=(0,))


# --------------------------------------------------------------------------- few-shot probe


def test_few_shot_probe_separable_clusters():
    tr, ytr, _ = clustered(240, 0.05, seed=5)
    te, yte, _ = clustered(200, 0.05, seed=6)
    out = linear_probe_few_shot(tr, ytr, te, yte, shots=(1, 5, 10), seeds=(0, 1, 2))
    assert set(out) == {f"{k}shot/{m}" for k in (1, 5, 10) for m in ("accuracy", "accuracy_std", "classes_short")}
    for k in (1, 5, 10):
        assert out[f"{k}shot/accuracy"] > 0.95
        assert out[f"{k}shot/accuracy_std"] >= 0.0
        assert out[f"{k}shot/classes_short"] == 0.0


def test_few_shot_short_class_reported():
    tr, ytr, _ = clustered(200, 0.05, seed=7)
    # Leave class 0 with only 2 examples.
    keep = np.flatnonzero(ytr != 0)
    keep = np.concatenate([keep, np.flatnonzero(ytr == 0)[:2]])
    te, yte, _ = clustered(100, 0.05, seed=8)
    with pytest.warns(UserWarning, match=r"5-shot probe: classes \['class0'\] have fewer than 5"):
        out = linear_probe_few_shot(tr[keep], ytr[keep], te, yte, shots=(1, 5), seeds=(0,), class_names=NAMES)
    assert out["1shot/classes_short"] == 0.0
    assert out["5shot/classes_short"] == 1.0
    assert out["5shot/accuracy"] > 0.95


def test_few_shot_bad_inputs():
    with pytest.raises(ValueError, match=r"train_emb has shape \(4, 3\).*test_emb has shape \(4, 2\)"):
        linear_probe_few_shot(np.ones((4, 3)), [0, 1, 0, 1], np.ones((4, 2)), [0, 1, 0, 1])
    with pytest.raises(ValueError, match=r"test_labels has shape \(3,\).*N=4"):
        linear_probe_few_shot(np.ones((4, 3)), [0, 1, 0, 1], np.ones((4, 3)), [0, 1, 0])
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe_few_shot(np.ones((4, 3)), [0, 0, 0, 0], np.ones((4, 3)), [0, 0, 0, 0])


# --------------------------------------------------------------------------- SST


def test_sst_skill_hand_made():
    target = np.array([[10.0, 12.0], [14.0, 0.0]])  # bottom-right is land
    pred = np.array([[11.0, 11.0], [16.0, 99.0]])
    ocean = np.array([[1, 1], [1, 0]], dtype=np.uint8)
    hold = np.array([[0, 1], [1, 0]], dtype=np.uint8)
    out = sst_skill(pred, target, ocean, hold)
    # ocean errors: +1, -1, +2 -> rmse sqrt(6/3), bias 2/3
    assert out["rmse_ocean"] == pytest.approx(math.sqrt(2.0))
    assert out["bias_ocean"] == pytest.approx(2 / 3)
    # corr of (11, 11, 16) with (10, 12, 14): centred (-5, -5, 10)/3 and (-2, 0, 2):
    # dot 30/3 = 10, norms sqrt(150)/3 and sqrt(8) -> 30 / sqrt(1200) = sqrt(3)/2
    assert out["corr_ocean"] == pytest.approx(math.sqrt(3) / 2)
    # holdout errors: -1, +2 -> rmse sqrt(5/2), bias 0.5; (11, 16) vs (12, 14) is perfectly correlated
    assert out["rmse_holdout"] == pytest.approx(math.sqrt(2.5))
    assert out["bias_holdout"] == pytest.approx(0.5)
    assert out["corr_holdout"] == pytest.approx(1.0)
    assert out["n_ocean"] == 3 and out["n_holdout"] == 2


def test_sst_skill_batched_pools_pixels_and_empty_holdout_is_nan():
    target = np.arange(8, dtype=float).reshape(2, 2, 2)
    pred = target + 1.0
    ocean = np.ones((2, 2, 2), bool)
    out = sst_skill(pred, target, ocean, np.zeros((2, 2, 2), bool))
    assert out["rmse_ocean"] == pytest.approx(1.0) and out["bias_ocean"] == pytest.approx(1.0)
    assert out["corr_ocean"] == pytest.approx(1.0)
    assert math.isnan(out["rmse_holdout"]) and out["n_holdout"] == 0


def test_sst_skill_bad_inputs():
    with pytest.raises(ValueError, match=r"target has shape \(3, 2\), expected \(2, 2\)"):
        sst_skill(np.zeros((2, 2)), np.zeros((3, 2)), np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"ocean_mask \(shape \(2, 2\)\) selects no pixels"):
        sst_skill(np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)))
    bad = np.zeros((2, 2))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"pred \(shape \(2, 2\)\) has 1 NaN"):
        sst_skill(bad, np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2)))


def two_day_field():
    """One month of 2 day slots, 1 x 3 pixels: pixel 0 seen on both days, pixel 1 on day 0 only
    (cloud on day 1), pixel 2 never (held out)."""
    daily = np.array([[[20.0, 22.0, 0.0]], [[24.0, 99.0, 0.0]]], dtype=np.float32)  # (S=2, H=1, W=3)
    mask = np.array([[[0, 0, 1]], [[0, 1, 1]]], dtype=np.uint8)
    padded = np.array([False, False])
    clim = np.array([[21.0, 21.0, 19.0]], dtype=np.float32)
    return daily, mask, padded, clim


def test_observed_mean_baseline_hand_made():
    daily, mask, padded, clim = two_day_field()
    base = observed_mean_baseline(daily, mask, padded, clim, days_per_month=2)
    np.testing.assert_allclose(base, [[22.0, 22.0, 19.0]])
    # A padded day is ignored even if its mask says observed.
    padded2 = np.array([False, True])
    mask2 = mask.copy()
    mask2[1] = 0
    np.testing.assert_allclose(observed_mean_baseline(daily, mask2, padded2, clim, days_per_month=2), [[20.0, 22.0, 19.0]])
    # Only the last month counts: prepend an earlier month of wild values.
    early = np.full((2, 1, 3), 50.0, np.float32)
    two_months = observed_mean_baseline(
        np.concatenate([early, daily]),
        np.concatenate([np.zeros_like(mask), mask]),
        np.zeros(4, bool),
        clim,
        days_per_month=2,
    )
    np.testing.assert_allclose(two_months, [[22.0, 22.0, 19.0]])


def test_baseline_skills_hand_made():
    daily, mask, padded, clim = two_day_field()
    target = np.array([[23.0, 21.0, 20.0]])
    ocean = np.ones((1, 3), bool)
    hold = np.array([[False, False, True]])
    clim_skill = climatology_baseline(clim, target, ocean, hold)
    # climatology errors: -2, 0, -1
    assert clim_skill["rmse_ocean"] == pytest.approx(math.sqrt(5 / 3))
    assert clim_skill["bias_ocean"] == pytest.approx(-1.0)
    assert clim_skill["rmse_holdout"] == pytest.approx(1.0)
    both = sst_baseline_skills(daily, mask, padded, clim, target, ocean, hold, days_per_month=2)
    # observed mean (22, 22, 19): errors -1, +1, -1
    assert both["observed_mean/rmse_ocean"] == pytest.approx(1.0)
    assert both["observed_mean/bias_ocean"] == pytest.approx(-1 / 3)
    assert both["observed_mean/bias_holdout"] == pytest.approx(-1.0)
    assert both["climatology/rmse_ocean"] == clim_skill["rmse_ocean"]


def test_observed_mean_batched_and_bad_shapes():
    daily, mask, padded, clim = two_day_field()
    b = observed_mean_baseline(np.stack([daily, daily]), np.stack([mask, mask]), np.stack([padded, padded]), np.stack([clim, clim]), 2)
    assert b.shape == (2, 1, 3)
    np.testing.assert_allclose(b[1], [[22.0, 22.0, 19.0]])
    with pytest.raises(ValueError, match=r"daily_mask has shape \(2, 1, 2\), expected \(2, 1, 3\)"):
        observed_mean_baseline(daily, mask[..., :2], padded, clim, 2)
    with pytest.raises(ValueError, match=r"padded_days has shape \(3,\), expected \(2,\)"):
        observed_mean_baseline(daily, mask, np.zeros(3, bool), clim, 2)
    with pytest.raises(ValueError, match=r"fill has shape \(1, 2\), expected \(1, 3\)"):
        observed_mean_baseline(daily, mask, padded, clim[:, :2], 2)
    with pytest.raises(ValueError, match=r"days_per_month=32 does not fit daily's 2 day slots"):
        observed_mean_baseline(daily, mask, padded, clim)


def test_classification_scores_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, f1_score, roc_auc_score

    from sensorlm.evaluation.metrics import classification_scores

    rng = np.random.default_rng(3)
    n, k = 400, 6
    y = rng.choice(k, n, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    scores = rng.normal(size=(n, k))
    scores[np.arange(n), y] += 0.8
    scores[:5] = 0.0  # ties, averaged as scikit-learn does
    pred = scores.argmax(1)
    m = classification_scores(y, pred, scores, k)
    assert m["accuracy"] == pytest.approx(np.mean(pred == y))
    assert m["majority_share"] == pytest.approx(np.mean(y == 0))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["macro_auroc"] == pytest.approx(np.mean([roc_auc_score(y == c, scores[:, c]) for c in range(k)]))
    # a class absent from the labels counts in none of the class averages
    m2 = classification_scores(np.where(y == 5, 0, y), pred, scores, k)
    assert m2["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(np.where(y == 5, 0, y), pred))


def test_bootstrap_interval_covers_the_truth_at_about_its_level():
    """Samples of 200 windows from a population whose accuracy is 0.7: the 90% interval holds 0.7 in
    about 90% of 60 trials (the binomial spread allows 44 to 59)."""
    from sensorlm.evaluation.metrics import bootstrap_intervals

    rng = np.random.default_rng(11)
    hits = 0
    for trial in range(60):
        y = rng.integers(0, 2, 200)
        right = rng.random(200) < 0.7
        pred = np.where(right, y, 1 - y)
        scores = np.eye(2)[pred] + rng.normal(0, 0.1, (200, 2))
        low, high = bootstrap_intervals(y, pred, scores, 2, resamples=300, level=0.9, seed=trial)["accuracy"]
        hits += low <= 0.7 <= high
    assert 44 <= hits <= 59, hits


def test_bootstrap_over_groups_moves_whole_subjects():
    from sensorlm.evaluation.metrics import bootstrap_intervals

    y = np.array([0, 0, 1, 1, 0, 1, 0, 1])
    pred = np.array([0, 0, 1, 1, 1, 0, 1, 0])  # subject a all right, subject b all wrong
    groups = np.array(["a"] * 4 + ["b"] * 4)
    ci = bootstrap_intervals(y, pred, np.eye(2)[pred], 2, groups=groups, resamples=200)
    assert ci["accuracy"] == (0.0, 1.0)  # resamples of two subjects: a+a, a+b, b+b
