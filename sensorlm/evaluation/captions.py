"""Caption evaluation for the CoCa family: overlap with the reference captions (BLEU-4 by sacrebleu,
ROUGE-L by Google's rouge-score) and a factual score of what a generated caption states.

Facts. A caption states numbers with a unit (``67 bpm``, ``6.6 hours``, ``71-minute``, ``97%``),
clock times (``18:10``) and labels (the dataset's label names). The reference caption is what the
captioner computed from the same window (its means, extremes, times and main label), so it is the
record the generated facts are checked against:

- a number is true when the reference states a number with the same unit, whose few preceding
  words share a word with the generated one's (``maximum 128 bpm`` is not checked against
  ``average 67 bpm``), within ``NUMBER_TOLERANCE`` (relative) or ``NUMBER_ABS_TOLERANCE``;
- a clock time is true when the reference states one within ``TIME_TOLERANCE_MINUTES``;
- a label is true when it is the window's main label.

``fact_precision`` is the share of stated facts (over all captions) that are true,
``fact_recall`` the share of the references' facts a generated caption states truly. The same
scores of a random training window's reference caption, checked against this window's, are the
baseline a captioner must beat: fluent captions that ignore the recording score that much.
``<score>_vs_baseline`` (with a 95% paired bootstrap interval over the windows) is the difference
of the per-window scores, generated minus baseline, for the fact precision and the label.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

NUMBER_TOLERANCE = 0.10  # relative
NUMBER_ABS_TOLERANCE = 0.5  # for small values (0 or 1 of a count)
TIME_TOLERANCE_MINUTES = 15
CONTEXT_WORDS = 3

_TIME = re.compile(r"\b([01]?\d|2[0-3]):([0-5]\d)\b")
_NUMBER = re.compile(r"(?<![\w.:])(\d+(?:\.\d+)?)\s*(?:-\s*)?(%|°\s?c\b|[a-zµ]+)?", re.IGNORECASE)
_WORD = re.compile(r"[a-z]+")
_CLAUSE = re.compile(r"[.;:,()]\s")
_STOP = frozenset("a an the at of to and with in on for from by is was".split())  # English, not a vocabulary


@dataclass(frozen=True)
class Fact:
    kind: str  # "number", "time" or "label"
    value: float | str
    unit: str = ""
    context: frozenset = frozenset()


def _unit(raw: str | None) -> str:
    unit = (raw or "").lower().replace(" ", "")
    return unit[:-1] if len(unit) > 3 and unit.endswith("s") and not unit.endswith("ss") else unit


def extract_facts(caption: str, labels: Sequence[str] = ()) -> list[Fact]:
    """The numbers (with unit and context words), clock times and labels `caption` states."""
    text = caption.lower()
    facts = [Fact("time", int(h) * 60 + int(m)) for h, m in _TIME.findall(text)]
    masked = _TIME.sub(" ", text)
    for m in _NUMBER.finditer(masked):
        unit = _unit(m.group(2))
        if not unit:
            continue  # a bare number (a count of short walks...) says too little to check
        clause = _CLAUSE.split(masked[:m.start()])[-1]
        context = frozenset(w for w in _WORD.findall(clause)[-CONTEXT_WORDS:] if w not in _STOP)
        facts.append(Fact("number", float(m.group(1)), unit, context))
    facts += [Fact("label", label) for _, label in _labels_named(text, labels)]
    return facts


def _labels_named(text: str, labels: Sequence[str]) -> list[tuple[int, str]]:
    """(position, label) of every label whose words (``_`` read as a space) `text` contains."""
    found = []
    for label in labels:
        m = re.search(rf"\b{re.escape(label.replace('_', ' ').lower())}\b", text.lower())
        if m:
            found.append((m.start(), label))
    return found


def _true(fact: Fact, reference: list[Fact], main_label: str | None) -> bool:
    if fact.kind == "label":
        return fact.value == main_label
    if fact.kind == "time":
        return any(r.kind == "time" and abs(r.value - fact.value) <= TIME_TOLERANCE_MINUTES for r in reference)
    return any(
        r.kind == "number" and r.unit == fact.unit
        and (not fact.context or not r.context or fact.context & r.context)
        and abs(r.value - fact.value) <= max(NUMBER_TOLERANCE * abs(r.value), NUMBER_ABS_TOLERANCE)
        for r in reference
    )


def factual_counts(generated: str, reference: str, labels: Sequence[str], main_label: str | None) -> np.ndarray:
    """(stated, stated and true, reference facts, reference facts stated truly) for one caption."""
    stated = extract_facts(generated, labels)
    ref = [f for f in extract_facts(reference, labels) if f.kind != "label" or f.value == main_label]
    true = [f for f in stated if _true(f, ref, main_label)]
    covered = sum(any(g.kind == r.kind and (g.value == r.value if r.kind == "label" else _true(g, [r], main_label))
                      for g in true) for r in ref)
    return np.array([len(stated), len(true), len(ref), covered], dtype=np.float64)


def named_label(caption: str | None, labels: Sequence[str]) -> str | None:
    """The label whose words come first in `caption` (whole words; None if none appears)."""
    found = _labels_named(caption or "", labels)
    return min(found)[1] if found else None


def caption_metrics(generated: Sequence[str], references: Sequence[str], main_labels: Sequence[str | None],
                    labels: Sequence[str], baseline: Sequence[str]) -> dict[str, float]:
    """The ``caption/`` metrics of generated captions against their references.

    Args:
        generated: one generated caption per window.
        references: the window's reference caption (the captioner's).
        main_labels: the window's main label, or None (unlabelled).
        labels: the dataset's label names.
        baseline: per window, the reference caption of a random training window.
    """
    import sacrebleu
    from rouge_score import rouge_scorer

    from sensorlm.evaluation.metrics import paired_bootstrap_difference

    if not (len(generated) == len(references) == len(main_labels) == len(baseline)) or not generated:
        raise ValueError(f"caption metrics: {len(generated)} generated, {len(references)} references, "
                         f"{len(main_labels)} labels, {len(baseline)} baseline captions (need equal, non-zero counts)")
    scorer = rouge_scorer.RougeScorer(["rougeL"])
    out = {
        "caption/bleu4": sacrebleu.corpus_bleu(list(generated), [list(references)]).score / 100.0,
        "caption/rouge_l": float(np.mean([scorer.score(r, g)["rougeL"].fmeasure for g, r in zip(generated, references)])),
        "caption/num_windows": float(len(generated)),
    }
    per_window = {}
    for prefix, texts in (("caption/", generated), ("caption/baseline/", baseline)):
        counts = np.stack([factual_counts(g, r, labels, y) for g, r, y in zip(texts, references, main_labels)])
        total = counts.sum(axis=0)
        out[f"{prefix}fact_precision"] = float(total[1] / total[0]) if total[0] else float("nan")
        out[f"{prefix}fact_recall"] = float(total[3] / total[2]) if total[2] else float("nan")
        out[f"{prefix}facts_stated"] = float(total[0] / len(texts))
        # per window: the share of its stated facts that are true (nothing stated: none true)
        per_window[prefix] = {"fact_precision": np.divide(counts[:, 1], counts[:, 0], out=np.zeros(len(texts)),
                                                          where=counts[:, 0] > 0)}
        labelled = [i for i, y in enumerate(main_labels) if y]
        if labelled and labels:
            hits = np.array([named_label(texts[i], labels) == main_labels[i] for i in labelled], dtype=np.float64)
            out[f"{prefix}names_main_label"] = float(hits.mean())
            per_window[prefix]["names_main_label"] = hits
    # the captioner against the baseline on the same windows: a paired bootstrap interval (95%)
    for name in per_window["caption/"]:
        diff, low, high = paired_bootstrap_difference(per_window["caption/"][name], per_window["caption/baseline/"][name])
        out[f"caption/{name}_vs_baseline"], out[f"caption/{name}_vs_baseline_ci_low"] = diff, low
        out[f"caption/{name}_vs_baseline_ci_high"] = high
    labelled = [y for y in main_labels if y]
    if labelled:
        out["caption/label_prior"] = float(np.unique(labelled, return_counts=True)[1].max() / len(labelled))
    return out


# ---------------------------------------------------------------------------------------------
# the CoCa family's evaluation runner


def evaluate_coca(package, data, split, manifest, opts, device, notes) -> tuple[dict, dict]:
    """The dual encoder's evaluation (zero-shot, retrieval, probe, plots) on the contrastive side,
    then up to ``caption_samples`` windows of `split` captioned and scored against their reference
    captions (as the text tower saw them: their first ``context_len`` tokens), beside the
    random-training-caption baseline; a figure of a few windows with both captions."""
    from sensorlm.evaluation.runners import _loader, evaluate_sensorlm

    metrics, figures = evaluate_sensorlm(package, data, split, manifest, opts, device, notes)
    n = int(opts.get("caption_samples") or 0)
    if n == 0:
        return metrics, figures
    activities = list(manifest.get("activities") or [])
    context_len = int(package.config["text"]["context_len"])
    kw = dict(tokenizer=package.tokenizer, text_len=context_len)
    windows = _caption_windows(package, _loader(data, split, manifest, opts["batch_size"], **kw), device, n,
                               opts, activities)
    rng = np.random.default_rng(0)
    pool: list[str] = []  # at most max_train training captions (a big split is not read whole for them)
    for batch in _loader(data, "train", manifest, opts["batch_size"], **kw):
        pool += batch["caption"]
        if len(pool) >= int(opts.get("max_train") or 2000):
            break
    if not pool:
        raise ValueError(f"dataset {data}: no train captions for the random-caption baseline")
    baseline = [pool[i] for i in rng.integers(0, len(pool), len(windows["generated"]))]
    seen = _as_seen(package.tokenizer, windows["reference"] + baseline, context_len)
    references, baseline = seen[:len(windows["reference"])], seen[len(windows["reference"]):]
    metrics.update(caption_metrics(windows["generated"], references, windows["label"], activities, baseline))
    shown = windows["examples"]
    figures["captions"] = lambda: caption_figure(shown, windows["generated"], references, windows["label"])
    return metrics, figures


def _as_seen(tokenizer, texts: list[str], context_len: int) -> list[str]:
    from sensorlm.models.generation import tidy

    ids, _ = tokenizer.encode(texts, context_len)
    return [tidy(tokenizer.decode(row)) for row in ids]


def _caption_windows(package, loader, device, n: int, opts: dict, activities: list[str]) -> dict:
    import torch

    from sensorlm.models.generation import Decoding, Tokens, captions_text, generate

    model, tok = package.model.to(device).eval(), package.tokenizer
    decoding = Decoding(method=opts.get("caption_method", "greedy"),
                        max_len=min(int(opts.get("caption_max_len", 48)), int(package.config["text"]["context_len"])))
    out: dict = {"generated": [], "reference": [], "label": [], "examples": []}
    for batch in loader:
        take = min(n - len(out["generated"]), batch["sensor"].shape[0])
        sensor, missing = batch["sensor"][:take].to(device), batch["missing"][:take].to(device)
        with torch.no_grad():
            ids = generate(model, sensor, missing, Tokens.of(tok), decoding,
                           torch.Generator(device=device).manual_seed(len(out["generated"])))
        out["generated"] += captions_text(ids.cpu(), tok)
        out["reference"] += list(batch["caption"][:take])
        out["label"] += [activities[i] if 0 <= i < len(activities) else None for i in batch["label"][:take].tolist()]
        if len(out["examples"]) < 4:
            out["examples"] += [x.numpy() for x in batch["sensor"][:4 - len(out["examples"])]]
        if len(out["generated"]) >= n:
            break
    if not out["generated"]:
        raise ValueError("no readable window to caption")
    return out


def caption_figure(sensors: list, generated: list[str], references: list[str], labels: list[str | None]):
    """A few windows: the normalised channels as an image (time across), the generated caption and
    the reference caption under it."""
    import textwrap

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = len(sensors)
    fig, axes = plt.subplots(k, 1, figsize=(10, 3.2 * k), squeeze=False)
    for i, ax in enumerate(axes[:, 0]):
        ax.imshow(np.clip(sensors[i].T, -3, 3), aspect="auto", cmap="RdBu_r", interpolation="nearest")
        ax.set_ylabel("channel")
        ax.set_xlabel("time step")
        ax.set_title(f"window {i}: main label {labels[i] or 'none'}", fontsize=10, loc="left")
        wrap = lambda t: "\n".join(textwrap.wrap(t, 130)[:3])  # noqa: E731
        ax.text(0, -0.35, f"generated: {wrap(generated[i])}\nreference: {wrap(references[i])}",
                transform=ax.transAxes, fontsize=8, va="top", family="monospace")
    fig.tight_layout(h_pad=6)
    return fig
