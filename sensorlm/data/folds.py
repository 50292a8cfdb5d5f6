"""K-fold cross-validation for data too small for one held-out split.

``sensorlm import --folds K`` deals the split units (subjects, or subject-days) into K folds,
stratified by label, and writes each fold as its own split (``fold0`` ... ``fold{K-1}``; the
manifest records ``folds: K``). ``data.fold=k/K`` (training) or ``--fold k/K`` (evaluation) then
reads the dataset as fold k for validation and the other K-1 folds for training, through a view of
the manifest (`fold_view`); nothing is copied. K runs, one per fold, score every window once.

The per-channel statistics and the tokenizer of a fold dataset come from all folds (there is no
one training split): they hold channel means, spreads and caption words, never labels.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

FOLD_SPLIT = re.compile(r"^fold(\d+)\Z")
_FOLD_ARG = re.compile(r"^(\d+)/(\d+)\Z")


def fold_split(k: int) -> str:
    return f"fold{k}"


def parse_fold(value: str, where: str = "data.fold") -> tuple[int, int]:
    """``"k/K"`` -> (k, K), with 0 <= k < K and K >= 2; anything else is one line naming it."""
    m = _FOLD_ARG.match(str(value).strip())
    if not m:
        raise ValueError(f"{where}={value!r}: expected k/K, the validation fold k of K folds (e.g. 0/5)")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 2 or k >= n:
        raise ValueError(f"{where}={value!r}: need K >= 2 folds and 0 <= k < K")
    return k, n


def assign_folds(units: list, seed: int, folds: int, unit_labels: dict | None = None) -> dict:
    """Each unit's fold, seeded and stratified by label: units are dealt rarest label first, each
    to the fold holding the fewest units of its label (then the fewest units), so every label
    found in K or more units appears in every fold and the folds differ in size by at most a few."""
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if len(units) < folds:
        raise ValueError(f"{len(units)} units cannot fill {folds} folds")
    order = sorted(units)
    np.random.default_rng(seed).shuffle(order)
    labels_of = {u: sorted((unit_labels or {}).get(u, ())) for u in order}
    holders: dict[Any, int] = {}
    for u in order:
        for lab in labels_of[u]:
            holders[lab] = holders.get(lab, 0) + 1
    rarest = {u: min(((holders[lab], lab) for lab in labels_of[u]), default=(len(order) + 1, "")) for u in order}
    order.sort(key=lambda u: rarest[u])  # stable: the seeded order within a label
    size = [0] * folds
    per_label = [dict() for _ in range(folds)]
    assign = {}
    for u in order:
        lab = rarest[u][1]
        k = min(range(folds), key=lambda f: (per_label[f].get(lab, 0), size[f], f))
        assign[u] = k
        size[k] += 1
        for label in labels_of[u]:
            per_label[k][label] = per_label[k].get(label, 0) + 1
    return assign


def fold_view(manifest: dict[str, Any], fold: str, origin: str = "manifest") -> dict[str, Any]:
    """The manifest as fold k of K sees it: ``val`` = split ``fold{k}``, ``train`` = the other folds'
    shards (in fold order). One line names a dataset without folds or with another K."""
    k, n = parse_fold(fold)
    have = manifest.get("folds")
    if not have:
        raise ValueError(f"{origin}: data.fold={fold} but the dataset has no folds (import it with --folds {n})")
    if have != n:
        raise ValueError(f"{origin}: data.fold={fold} but the dataset has {have} folds (use k/{have})")
    splits = manifest["splits"]
    missing = [fold_split(i) for i in range(n) if fold_split(i) not in splits]
    if missing:
        raise ValueError(f"{origin}: folds: {n} but the splits lack {', '.join(missing)}")
    train = [sh for i in range(n) if i != k for sh in splits[fold_split(i)]["shards"]]
    return {**manifest, "fold": f"{k}/{n}", "splits": {
        "train": {"num_samples": sum(int(sh["samples"]) for sh in train), "shards": train},
        "val": splits[fold_split(k)],
    }}
