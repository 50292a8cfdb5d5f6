"""Evaluation metrics on frozen embeddings and SST maps (numpy in, plain dicts out).

Nothing here imports MLflow: every function returns a dict whose scalar values can be passed to
`mlflow.log_metrics` as they are (arrays such as the confusion matrix are returned beside them).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np

__all__ = [
    "zero_shot_classification",
    "retrieval_recall",
    "bidirectional_retrieval",
    "linear_probe_few_shot",
    "sst_skill",
    "climatology_baseline",
    "observed_mean_baseline",
    "sst_baseline_skills",
    "paired_bootstrap_difference",
]


# --------------------------------------------------------------------------- input checks


def _as_2d(name: str, a) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N, D), got shape {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {a.shape}")
    if not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"{name} must be numeric, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} (shape {a.shape}) contains NaN or inf")
    return a


def _as_labels(name: str, labels, n: int, num_classes: int | None = None) -> np.ndarray:
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ValueError(f"{name} must be 1-D (N,), got shape {y.shape}")
    if y.shape[0] != n:
        raise ValueError(f"{name} has shape {y.shape} but the embeddings have N={n} rows")
    if y.size and not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{name} must hold integer class indices, got dtype {y.dtype}")
    y = y.astype(np.int64, copy=False)
    if num_classes is not None and y.size and (y.min() < 0 or y.max() >= num_classes):
        raise ValueError(f"{name} values must lie in [0, {num_classes}), got min {y.min()} max {y.max()}")
    return y


def _check_same_width(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[1] != b.shape[1]:
        raise ValueError(
            f"embedding widths differ: {name_a} has shape {a.shape}, {name_b} has shape {b.shape}"
        )


def _l2n(a: np.ndarray) -> np.ndarray:
    # Cosine similarity is what SigLIP/CLIP logits are built on (up to scale and bias, which do
    # not change rankings); a zero vector stays zero instead of becoming NaN.
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.maximum(norm, 1e-12)


# --------------------------------------------------------------------------- zero-shot


def zero_shot_classification(sensor_emb, class_text_emb, labels, class_names: Sequence[str]) -> dict:
    """Classify each sensor embedding as the class whose text embedding is most cosine-similar.

    Args:
        sensor_emb: (N, D) sensor embeddings.
        class_text_emb: (K, D) one text embedding per class (e.g. of a prompt naming the class).
        labels: (N,) integer true class indices in [0, K).
        class_names: K names, in the order of `class_text_emb`.

    Returns:
        dict with ``accuracy``, ``macro_f1`` (mean F1 over the classes present in `labels`, so a
        class absent from the evaluation set does not count as a zero), ``per_class``
        ``{name: {precision, recall, f1, support}}`` (all K classes), ``confusion`` (K, K) int
        array with rows = true class, columns = predicted class, and ``predictions`` (N,).
    """
    from sklearn.metrics import precision_recall_fscore_support

    s = _as_2d("sensor_emb", sensor_emb)
    t = _as_2d("class_text_emb", class_text_emb)
    _check_same_width("sensor_emb", s, "class_text_emb", t)
    k = t.shape[0]
    names = list(class_names)
    if len(names) != k:
        raise ValueError(
            f"class_names has {len(names)} entries but class_text_emb has shape {t.shape} (K={k})"
        )
    y = _as_labels("labels", labels, s.shape[0], k)

    scores = _l2n(s) @ _l2n(t).T
    pred = np.argmax(scores, axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (y, pred), 1)

    prec, rec, f1, sup = precision_recall_fscore_support(
        y, pred, labels=np.arange(k), average=None, zero_division=0
    )
    present = sup > 0
    return {
        "accuracy": float(np.mean(pred == y)),
        "macro_f1": float(np.mean(f1[present])),
        "per_class": {
            name: {"precision": float(prec[i]), "recall": float(rec[i]), "f1": float(f1[i]), "support": int(sup[i])}
            for i, name in enumerate(names)
        },
        "confusion": confusion,
        "predictions": pred,
        "scores": scores,
    }


def classification_scores(labels, predictions, scores, num_classes: int) -> dict[str, float]:
    """Accuracy beside its baselines and the class-balanced views of it.

    Args:
        labels: (N,) true class indices in [0, K).
        predictions: (N,) predicted class indices.
        scores: (N, K) class scores (for zero-shot: the cosine similarity to each class prompt).
        num_classes: K.

    Returns:
        ``accuracy``; ``majority_share`` (the accuracy of always answering the most frequent true
        class: the baseline to beat); ``balanced_accuracy`` (mean recall over the classes present);
        ``macro_f1`` (mean F1 over the classes present); ``macro_auroc`` (one-vs-rest AUROC of each
        class's score column, averaged over the classes with both positives and negatives: the
        SensorLM paper's zero-shot protocol; NaN with fewer than two such classes).
    """
    from scipy.stats import rankdata

    y, p = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    sc = np.asarray(scores, dtype=np.float64)
    k = num_classes
    confusion = np.bincount(y * k + p, minlength=k * k).reshape(k, k)  # rows: true, columns: predicted
    support, predicted, tp = confusion.sum(1), confusion.sum(0), np.diag(confusion)
    present = support > 0
    f1 = np.divide(2 * tp, support + predicted, out=np.zeros(k), where=(support + predicted) > 0)
    aurocs = []
    for c in np.flatnonzero(present & (support < len(y))):  # one-vs-rest, by the rank-sum (ties averaged)
        ranks = rankdata(sc[:, c])
        pos = y == c
        n_pos, n_neg = pos.sum(), (~pos).sum()
        aurocs.append((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return {
        "accuracy": float(tp.sum() / len(y)),
        "majority_share": float(support.max() / len(y)),
        "balanced_accuracy": float(np.mean(tp[present] / support[present])),
        "macro_f1": float(np.mean(f1[present])),
        "macro_auroc": float(np.mean(aurocs)) if len(aurocs) >= 2 else float("nan"),
    }


def bootstrap_intervals(labels, predictions, scores, num_classes: int, *, groups=None, resamples: int = 1000,
                        level: float = 0.95, seed: int = 0) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap intervals of every `classification_scores` metric.

    Args:
        labels, predictions, scores, num_classes: as `classification_scores`.
        groups: (N,) a group per sample (e.g. the subject): whole groups are resampled, so windows of
            one person move together; None resamples windows.
        resamples: bootstrap resamples.
        level: the interval's coverage, e.g. 0.95.
        seed: the resampling seed (the same windows and seed give the same interval).

    Returns:
        ``{metric: (low, high)}``; a metric undefined in a resample (one class drawn) is left out
        of that resample's values.
    """
    y, p, sc = np.asarray(labels), np.asarray(predictions), np.asarray(scores)
    rng = np.random.default_rng(seed)
    if groups is None:
        units = [np.array([i]) for i in range(len(y))]
    else:
        g = np.asarray(groups)
        units = [np.flatnonzero(g == u) for u in np.unique(g)]
    draws: dict[str, list[float]] = {}
    for _ in range(resamples):
        idx = np.concatenate([units[i] for i in rng.integers(0, len(units), len(units))])
        for k, v in classification_scores(y[idx], p[idx], sc[idx], num_classes).items():
            if np.isfinite(v):
                draws.setdefault(k, []).append(v)
    tail = (1 - level) / 2 * 100
    return {k: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for k, v in draws.items()}


def paired_bootstrap_difference(new, old, *, resamples: int = 2000, level: float = 0.95,
                                seed: int = 0) -> tuple[float, float, float]:
    """The difference of two models' mean per-window outcomes on the same windows, with a paired
    percentile bootstrap interval: each resample draws windows once and scores both models on
    them, so what the windows share (easy or hard ones) cancels out of the difference.

    Args:
        new, old: (N,) outcomes of one window each (e.g. 1.0 = classified correctly), row i of
            both on the same window.
        resamples: bootstrap resamples.
        level: the interval's coverage, e.g. 0.95.
        seed: the resampling seed (the same outcomes and seed give the same interval).

    Returns:
        ``(difference, low, high)`` of mean(new) - mean(old).
    """
    a, b = np.asarray(new, dtype=np.float64), np.asarray(old, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(f"paired outcomes: expected two (N,) arrays of one shape, N > 0, got {a.shape} and {b.shape}")
    diff = a - b
    rng = np.random.default_rng(seed)
    chunk = max(1, 2**22 // diff.size)  # resamples drawn at once: index memory stays ~32 MB
    draws = np.concatenate([diff[rng.integers(0, diff.size, (min(chunk, resamples - i), diff.size))].mean(axis=1)
                            for i in range(0, resamples, chunk)])
    tail = (1 - level) / 2 * 100
    return float(diff.mean()), float(np.percentile(draws, tail)), float(np.percentile(draws, 100 - tail))


# --------------------------------------------------------------------------- retrieval


def retrieval_recall(query_emb, gallery_emb, ks: Sequence[int] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k of paired retrieval: query i's only match is gallery item i.

    Similarity is cosine. A gallery item that ties with the true match counts as ranked above it,
    so collapsed (constant) embeddings score chance or worse, never perfectly. When N < k, k is
    clipped to N (recall is then 1); the key keeps the requested k.

    Args:
        query_emb: (N, D) queries.
        gallery_emb: (N, D) gallery, row i paired with query row i.
        ks: cut-offs.

    Returns:
        ``{"recall@k": fraction of queries whose match is within the top k}``.
    """
    q = _as_2d("query_emb", query_emb)
    g = _as_2d("gallery_emb", gallery_emb)
    if q.shape[0] != g.shape[0]:
        raise ValueError(
            f"query_emb shape {q.shape} and gallery_emb shape {g.shape} must have the same N (pairs)"
        )
    _check_same_width("query_emb", q, "gallery_emb", g)
    ks = [int(k) for k in ks]
    if not ks or any(k < 1 for k in ks):
        raise ValueError(f"ks must be non-empty positive integers, got {ks}")

    sim = _l2n(q) @ _l2n(g).T
    match = np.diag(sim)[:, None]
    # 0-based rank of the true match, ties counted against it (the diagonal ties with itself).
    rank = np.sum(sim >= match, axis=1) - 1
    n = q.shape[0]
    return {f"recall@{k}": float(np.mean(rank < min(k, n))) for k in ks}


def bidirectional_retrieval(
    a_emb, b_emb, names: tuple[str, str] = ("sensor", "text"), ks: Sequence[int] = (1, 5, 10)
) -> dict[str, float]:
    """Recall@k in both directions for paired embeddings (row i of `a_emb` pairs row i of `b_emb`).

    Args:
        a_emb: (N, D) first modality.
        b_emb: (N, D) second modality.
        names: names of the two modalities, used in the keys.
        ks: cut-offs.

    Returns:
        ``{"{a}_to_{b}/recall@k": ..., "{b}_to_{a}/recall@k": ...}``.
    """
    if len(names) != 2:
        raise ValueError(f"names must be two strings, got {names!r}")
    a_name, b_name = names
    out = {}
    for key, value in retrieval_recall(a_emb, b_emb, ks).items():
        out[f"{a_name}_to_{b_name}/{key}"] = value
    for key, value in retrieval_recall(b_emb, a_emb, ks).items():
        out[f"{b_name}_to_{a_name}/{key}"] = value
    return out


# --------------------------------------------------------------------------- few-shot probe


def linear_probe_few_shot(
    train_emb,
    train_labels,
    test_emb,
    test_labels,
    shots: Sequence[int] = (1, 5, 10),
    seeds: Sequence[int] = (0, 1, 2),
    C: float = 1.0,
    max_iter: int = 1000,
    class_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Few-shot linear probe: logistic regression on frozen embeddings, k examples per class.

    For each shot count k and seed, k training examples per class are drawn without replacement
    (a class with fewer than k examples contributes all it has; this is counted in
    ``{k}shot/classes_short`` and warned about), a multinomial logistic regression is fitted and
    scored on the whole test set.

    Args:
        train_emb: (N, D) pool to draw the shots from.
        train_labels: (N,) integer classes of `train_emb`.
        test_emb: (M, D) evaluation embeddings.
        test_labels: (M,) integer classes of `test_emb`.
        shots: examples per class.
        seeds: one draw and fit per seed; mean and std over seeds are reported.
        C: inverse L2 regularisation strength of the logistic regression.
        max_iter: lbfgs iterations.
        class_names: optional names used in the warning about short classes.

    Returns:
        ``{"{k}shot/accuracy": mean, "{k}shot/accuracy_std": std over seeds,
        "{k}shot/classes_short": number of classes with fewer than k training examples}``.
    """
    from sklearn.linear_model import LogisticRegression

    xtr = _as_2d("train_emb", train_emb)
    xte = _as_2d("test_emb", test_emb)
    _check_same_width("train_emb", xtr, "test_emb", xte)
    ytr = _as_labels("train_labels", train_labels, xtr.shape[0])
    yte = _as_labels("test_labels", test_labels, xte.shape[0])
    shots = [int(k) for k in shots]
    seeds = [int(s) for s in seeds]
    if not shots or any(k < 1 for k in shots):
        raise ValueError(f"shots must be non-empty positive integers, got {shots}")
    if not seeds:
        raise ValueError("seeds must not be empty")

    classes, counts = np.unique(ytr, return_counts=True)
    if classes.size < 2:
        raise ValueError(f"train_labels must hold at least 2 classes for a probe, got {classes.tolist()}")
    by_class = {c: np.flatnonzero(ytr == c) for c in classes}

    out: dict[str, float] = {}
    for k in shots:
        short = classes[counts < k]
        if short.size:
            named = [class_names[c] if class_names is not None and c < len(class_names) else str(c) for c in short]
            warnings.warn(
                f"{k}-shot probe: classes {named} have fewer than {k} training examples; using all of them",
                stacklevel=2,
            )
        accs = []
        for seed in seeds:
            rng = np.random.default_rng(seed)
            idx = np.concatenate(
                [rng.choice(ix, size=min(k, ix.size), replace=False) for ix in by_class.values()]
            )
            clf = LogisticRegression(C=C, max_iter=max_iter)
            clf.fit(xtr[idx], ytr[idx])
            accs.append(float(np.mean(clf.predict(xte) == yte)))
        out[f"{k}shot/accuracy"] = float(np.mean(accs))
        out[f"{k}shot/accuracy_std"] = float(np.std(accs))
        out[f"{k}shot/classes_short"] = float(short.size)
    return out


# --------------------------------------------------------------------------- SST


def _as_field(name: str, a, shape: tuple[int, ...] | None = None) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim not in (2, 3):
        raise ValueError(f"{name} must be (H, W) or (B, H, W), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty: shape {a.shape}")
    if shape is not None and a.shape != shape:
        raise ValueError(f"{name} has shape {a.shape}, expected {shape} (the shape of pred)")
    return a


def _region_skill(pred: np.ndarray, target: np.ndarray) -> tuple[float, float, float]:
    if pred.size == 0:
        return float("nan"), float("nan"), float("nan")
    err = pred - target
    rmse = float(np.sqrt(np.mean(err**2)))
    bias = float(np.mean(err))
    if pred.size < 2 or np.std(pred) == 0 or np.std(target) == 0:
        corr = float("nan")  # undefined for a constant field
    else:
        corr = float(np.corrcoef(pred, target)[0, 1])
    return rmse, bias, corr


def sst_skill(pred, target, ocean_mask, holdout_mask) -> dict[str, float]:
    """RMSE, bias (pred - target) and Pearson correlation of a monthly SST map.

    Pixels of all maps in a batch are pooled. Units are those of the inputs (pass °C to get °C:
    denormalise model outputs first).

    Args:
        pred: (H, W) or (B, H, W) predicted monthly mean.
        target: same shape, monthly mean truth.
        ocean_mask: same shape, True (or 1) on ocean pixels.
        holdout_mask: same shape, True (or 1) on the held-out ocean pixels (hidden on every day);
            only its ocean pixels are scored.

    Returns:
        ``{rmse_<region>, bias_<region>, corr_<region>, n_<region>}`` for the regions
        ``holdout`` (hidden cloud pixels), ``observed`` (ocean pixels not held out) and
        ``ocean`` (both); an empty region gives NaN metrics, a constant field NaN correlation.
    """
    pred = _as_field("pred", pred).astype(np.float64)
    target = _as_field("target", target, pred.shape).astype(np.float64)
    ocean = _as_field("ocean_mask", ocean_mask, pred.shape).astype(bool)
    hold = _as_field("holdout_mask", holdout_mask, pred.shape).astype(bool) & ocean
    if not ocean.any():
        raise ValueError(f"ocean_mask (shape {ocean.shape}) selects no pixels")
    for name, a in (("pred", pred), ("target", target)):
        bad = int(np.sum(~np.isfinite(a[ocean])))
        if bad:
            raise ValueError(f"{name} (shape {a.shape}) has {bad} NaN/inf values on ocean pixels")
    out = {}
    for region, m in (("holdout", hold), ("observed", ocean & ~hold), ("ocean", ocean)):
        rmse, bias, corr = _region_skill(pred[m], target[m])
        out[f"rmse_{region}"] = rmse
        out[f"bias_{region}"] = bias
        out[f"corr_{region}"] = corr
        out[f"n_{region}"] = float(m.sum())
    return out


def climatology_baseline(clim, target, ocean_mask, holdout_mask) -> dict[str, float]:
    """Skill of predicting the climatology of the month (same metrics as `sst_skill`).

    Args:
        clim: (H, W) or (B, H, W) climatological monthly mean.
        target, ocean_mask, holdout_mask: as in `sst_skill`.
    """
    return sst_skill(clim, target, ocean_mask, holdout_mask)


def check_daily_inputs(daily, daily_mask, padded_days, per_pixel, name: str, days_per_month: int):
    """The arrays of an SST sample (or batch) as numpy, shapes checked against `daily`'s; a
    mismatch is a ValueError naming the array and both shapes.

    Args:
        daily: (S, H, W) or (B, S, H, W) daily values.
        daily_mask: same shape.
        padded_days: (S,) or (B, S).
        per_pixel: (H, W) or (B, H, W), called `name` in messages (``fill``, ``land``).
        days_per_month: day slots per month (must fit in S).
    """
    daily, mask, padded, per_pixel = (np.asarray(a) for a in (daily, daily_mask, padded_days, per_pixel))
    if daily.ndim not in (3, 4) or daily.size == 0:
        raise ValueError(f"daily must be (S, H, W) or (B, S, H, W) and non-empty, got shape {daily.shape}")
    if mask.shape != daily.shape:
        raise ValueError(f"daily_mask has shape {mask.shape}, expected {daily.shape} (the shape of daily)")
    if padded.shape != daily.shape[:-2]:
        raise ValueError(f"padded_days has shape {padded.shape}, expected {daily.shape[:-2]} (daily is {daily.shape})")
    expected = daily.shape[:-3] + daily.shape[-2:]
    if per_pixel.shape != expected:
        raise ValueError(f"{name} has shape {per_pixel.shape}, expected {expected} (daily is {daily.shape})")
    s = daily.shape[-3]
    if isinstance(days_per_month, bool) or days_per_month < 1 or s < days_per_month:
        raise ValueError(f"days_per_month={days_per_month} does not fit daily's {s} day slots (shape {daily.shape})")
    return daily, mask, padded, per_pixel


def observed_mean_baseline(daily, daily_mask, padded_days, fill, days_per_month: int = 32) -> np.ndarray:
    """Per-pixel mean of the observed days of the last month.

    A pixel never observed in the last month (always cloudy, land, or a held-out pixel) takes
    the value of `fill` there; pass the climatology so that the baseline falls back on it.

    Args:
        daily: (S, H, W) or (B, S, H, W) daily values, S = months * days_per_month.
        daily_mask: same shape, 1/True = missing (cloud, land, padded day, holdout).
        padded_days: (S,) or (B, S) bool, True = padding slot (month shorter than the slot).
        fill: (H, W) or (B, H, W) values for never-observed pixels (the climatology).
        days_per_month: day slots per month; the last month is the last `days_per_month` slots.

    Returns:
        (H, W) or (B, H, W) float32 baseline map.
    """
    daily, mask, padded, fill = check_daily_inputs(daily, daily_mask, padded_days, fill, "fill", days_per_month)
    s = daily.shape[-3]

    last = slice(s - days_per_month, s)
    vals = daily[..., last, :, :].astype(np.float64)
    observed = ~mask[..., last, :, :].astype(bool) & ~padded[..., last, None, None].astype(bool)
    n_obs = observed.sum(axis=-3)
    total = np.where(observed, vals, 0.0).sum(axis=-3)
    mean = np.divide(total, n_obs, out=np.zeros_like(total), where=n_obs > 0)
    return np.where(n_obs > 0, mean, fill).astype(np.float32)


def sst_baseline_skills(
    daily, daily_mask, padded_days, clim, target, ocean_mask, holdout_mask, days_per_month: int = 32
) -> dict[str, float]:
    """Skill of both baselines, scored with `sst_skill`.

    Args:
        daily, daily_mask, padded_days: as in `observed_mean_baseline`.
        clim: climatology, the first baseline and the fill of the second.
        target, ocean_mask, holdout_mask: as in `sst_skill`.

    Returns:
        ``{"climatology/<metric>": ..., "observed_mean/<metric>": ...}``.
    """
    out = {f"climatology/{k}": v for k, v in climatology_baseline(clim, target, ocean_mask, holdout_mask).items()}
    obs = observed_mean_baseline(daily, daily_mask, padded_days, clim, days_per_month)
    out.update({f"observed_mean/{k}": v for k, v in sst_skill(obs, target, ocean_mask, holdout_mask).items()})
    return out
