"""Caption metrics (sensorlm/evaluation/captions.py): BLEU-4 and ROUGE-L from their libraries, and
the factual score of what a caption states, checked against the reference caption."""

import math

import pytest

from sensorlm.evaluation.captions import caption_metrics, extract_facts, factual_counts, named_label
from sensorlm.models.generation import tidy

LABELS = ["strength_training", "running", "walking"]
REF = ("The day's workout is strength training: a 71-minute evening strength session at 18:10. "
       "6.6 hours asleep last night, 23:12 to 06:35. Average heart rate 67 bpm; maximum 128 bpm at 18:56.")


def test_facts_are_numbers_with_units_clock_times_and_labels():
    facts = extract_facts(REF, LABELS)
    times = sorted(f.value for f in facts if f.kind == "time")
    assert times == [6 * 60 + 35, 18 * 60 + 10, 18 * 60 + 56, 23 * 60 + 12]
    numbers = {(f.value, f.unit) for f in facts if f.kind == "number"}
    assert numbers == {(71.0, "minute"), (6.6, "hour"), (67.0, "bpm"), (128.0, "bpm")}
    assert [f.value for f in facts if f.kind == "label"] == ["strength_training"]
    assert extract_facts("Step count 9423.", LABELS) == []  # a bare number says too little to check


def test_a_fact_is_true_within_tolerance_and_in_its_context():
    assert list(factual_counts(REF, REF, LABELS, "strength_training")) == [9, 9, 9, 9]
    near = "A 70-minute strength training session at 18:00; average heart rate 70 bpm."
    stated, true, ref, covered = factual_counts(near, REF, LABELS, "strength_training")
    assert (stated, true) == (4, 4) and ref == 9 and covered == 4  # 71 +-10%, 18:10 +-15 min, 67 +-10%, the label
    wrong = "Running: average heart rate 128 bpm at 21:00."
    stated, true, _, _ = factual_counts(wrong, REF, LABELS, "strength_training")
    # the maximum's value under "average" is no average; the wrong label and a far time are false
    assert (stated, true) == (3, 0)


def test_tidy_undoes_word_piece_spacing():
    decoded = "the day ' s workout : a 71 - minute session at 18 : 10. 6. 6 hours asleep, spo2 97 %"
    assert tidy(decoded) == "the day's workout: a 71-minute session at 18:10. 6.6 hours asleep, spo2 97%"


def test_caption_metrics_and_the_random_caption_baseline():
    other = "The day's workout is running: a 38-minute morning run at 07:05. 8.1 hours asleep last night."
    m = caption_metrics([REF, other], [REF, REF], ["strength_training"] * 2, LABELS, [other, other])
    assert m["caption/bleu4"] < 1 and 0 < m["caption/rouge_l"] < 1 and m["caption/num_windows"] == 2
    assert m["caption/names_main_label"] == 0.5 and m["caption/baseline/names_main_label"] == 0.0
    assert m["caption/fact_precision"] > m["caption/baseline/fact_precision"]
    assert m["caption/label_prior"] == 1.0
    # per window, generated minus baseline, with a paired bootstrap interval around it
    assert m["caption/names_main_label_vs_baseline"] == 0.5
    assert m["caption/names_main_label_vs_baseline_ci_low"] <= 0.5 <= m["caption/names_main_label_vs_baseline_ci_high"]
    assert m["caption/fact_precision_vs_baseline_ci_low"] <= m["caption/fact_precision_vs_baseline"]
    perfect = caption_metrics([REF], [REF], ["strength_training"], LABELS, [REF])
    assert perfect["caption/bleu4"] == pytest.approx(1.0) and perfect["caption/rouge_l"] == pytest.approx(1.0)
    assert perfect["caption/fact_precision"] == 1.0 and perfect["caption/fact_recall"] == 1.0
    silent = caption_metrics(["a day"], [REF], ["strength_training"], LABELS, [REF])
    assert math.isnan(silent["caption/fact_precision"]) and silent["caption/fact_recall"] == 0.0


def test_bad_input_is_one_line():
    with pytest.raises(ValueError, match="caption metrics: 1 generated, 2 references"):
        caption_metrics(["a"], ["a", "b"], [None], LABELS, ["a"])
    assert named_label("A day of walking and running", LABELS) == "walking"
    assert named_label(None, LABELS) is None
