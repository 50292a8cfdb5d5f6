"""Tests for the SYNTHETIC wearable generator: shapes, physiology, gaps, sleep, splits, determinism."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from sensorlm.data.synthetic import wearable as sw
from sensorlm.data.synthetic.wearable import CHANNEL_INDEX as CI

SEED = 0


@pytest.fixture(scope="module")
def tiny_days() -> list[sw.WearableDay]:
    return list(sw.generate_wearable("tiny", seed=SEED))


@pytest.fixture(scope="module")
def minute_days() -> list[sw.WearableDay]:
    """The tiny dataset at one-minute resolution (same data, not averaged)."""
    return list(sw.generate_wearable("tiny", seed=SEED, resolution_min=1))


def _span_mask(spans, n=sw.MINUTES_PER_DAY) -> np.ndarray:
    mask = np.zeros(n, bool)
    for s in spans:
        mask[s["start_min"]:s["end_min"]] = True
    return mask


def _primary_bout(day: sw.WearableDay) -> dict:
    return max((a for a in day.activities if a["label"] == day.primary_activity),
               key=lambda a: a["end_min"] - a["start_min"])


def test_channels_and_activities_are_named():
    assert len(sw.CHANNELS) == 34
    names = [c.name for c in sw.CHANNELS]
    assert len(set(names)) == 34
    assert all(c.unit and c.description for c in sw.CHANNELS)
    for name in ("heart_rate", "steps", "accel_magnitude_mean", "skin_temperature", "eda_tonic", "spo2",
                 "sleep_prob_awake", "sleep_prob_light", "sleep_prob_deep", "sleep_prob_rem", "on_wrist"):
        assert name in CI
    assert len(set(sw.ACTIVITIES)) == len(sw.ACTIVITIES) >= 10
    for required in ("walking", "running", "cycling", "swimming", "strength_training", "yoga"):
        assert required in sw.ACTIVITIES
    assert set(sw.ACTIVITY_PHRASES) == set(sw.ACTIVITIES) == set(sw.ACTIVITY_NOUNS)


def test_tiny_size_dimensions_and_types(tiny_days):
    size = sw.WEARABLE_SIZES["tiny"]
    assert size.num_steps == 144
    assert len(tiny_days) == size.num_subjects * size.days_per_subject
    assert sw.WEARABLE_SIZES["paper"].num_steps == 1440
    for day in tiny_days:
        assert day.values.dtype == np.float32 and day.values.shape == (144, 34)
        assert day.missing.dtype == bool and day.missing.shape == (144,)
        assert np.isfinite(day.values).all()
        assert (day.values[day.missing] == 0).all()
        assert day.split in ("train", "val")
        assert day.primary_activity in sw.ACTIVITIES
        assert day.label == sw.ACTIVITIES.index(day.primary_activity)
        assert day.resolution_min == 10
        starts = [a["start_min"] for a in day.activities]
        assert starts == sorted(starts)
        for a in day.activities:
            assert set(a) == {"label", "start_min", "end_min"}
            assert 0 <= a["start_min"] < a["end_min"] <= 1440
        assert any(a["label"] == day.primary_activity for a in day.activities)
        json.dumps(day.metadata())  # everything but the arrays is JSON
    keys = [d.key for d in tiny_days]
    assert len(set(keys)) == len(keys)
    # Several different workouts appear, so a classifier has something to separate.
    assert len({d.primary_activity for d in tiny_days}) >= 8


def test_heart_rate_higher_in_workouts_than_in_sleep(minute_days):
    by_label = defaultdict(list)
    sleep_hr = []
    for day in minute_days:
        hr, obs = day.values[:, CI["heart_rate"]], ~day.missing
        bout = _primary_bout(day)
        seen = obs[bout["start_min"]:bout["end_min"]]
        by_label[day.primary_activity].append(hr[bout["start_min"]:bout["end_min"]][seen].mean())
        asleep = _span_mask(day.sleep) & obs
        sleep_hr.append(hr[asleep].mean())
        # Within every day: the main workout raises heart rate well above that night's sleep.
        assert by_label[day.primary_activity][-1] > hr[asleep].mean() + 10, day.key
    sleep_mean = float(np.mean(sleep_hr))
    assert np.mean(by_label["running"]) > sleep_mean + 60
    assert np.mean(by_label["running"]) > np.mean(by_label["walking"]) + 25
    assert np.mean(by_label["yoga"]) < np.mean(by_label["running"]) - 30
    assert 45 < sleep_mean < 75


def test_activity_signatures(minute_days):
    seen = set()
    for day in minute_days:
        v, obs = day.values, ~day.missing
        sleep = _span_mask(day.sleep) & obs
        assert v[sleep, CI["steps"]].max() == 0  # no steps in bed
        b = _primary_bout(day)
        sl = slice(b["start_min"], b["end_min"])
        bout = {name: v[sl, CI[name]][obs[sl]] for name in CI}
        label = day.primary_activity
        seen.add(label)
        if label == "swimming":
            assert bout["steps"].mean() < 1
            assert bout["swim_strokes"].mean() > 15
        else:
            assert bout["swim_strokes"].max() == 0
        if label == "cycling":
            assert bout["steps"].mean() < 5
            assert bout["cycling_cadence"].mean() > 50
        else:
            assert bout["cycling_cadence"].max() == 0
        if label == "running":
            assert bout["steps"].mean() > 140
            assert bout["accel_magnitude_std"].mean() > 0.4
        if label == "hiking":
            assert np.ptp(bout["altitude"]) > 150
            assert bout["elevation_gain"].sum() > 150
        if label == "yoga":
            assert bout["accel_magnitude_std"].mean() < 0.15
    assert {"swimming", "cycling", "running"} <= seen


def test_missing_minutes_match_off_wrist_spans(minute_days, tiny_days):
    assert sum(len(d.off_wrist) for d in minute_days) > 10
    by_key = {d.key: d for d in tiny_days}
    for day in minute_days:
        off = _span_mask(day.off_wrist)
        np.testing.assert_array_equal(day.missing, off)
        assert not (off & _span_mask(day.sleep)).any()
        assert not (off & _span_mask(day.activities)).any()
        assert (day.values[day.missing] == 0).all()
        # At 10 minutes a bin is missing only when all its minutes are; on_wrist is the worn fraction.
        coarse = by_key[day.key]
        per_bin = off.reshape(144, 10)
        np.testing.assert_array_equal(coarse.missing, per_bin.all(axis=1))
        np.testing.assert_allclose(coarse.values[:, CI["on_wrist"]], 1 - per_bin.mean(axis=1), atol=1e-6)


def test_resting_heart_rate_differs_by_subject_and_is_stable(minute_days):
    per_subject = defaultdict(list)
    for day in minute_days:
        hr = day.values[:, CI["heart_rate"]]
        morning_sleep = _span_mask(day.sleep[:1]) & ~day.missing
        per_subject[day.subject_id].append(np.percentile(hr[morning_sleep], 10))
    within = np.mean([np.std(v) for v in per_subject.values()])
    between = np.std([np.mean(v) for v in per_subject.values()])
    assert within < 3.0
    assert between > 2 * within
    profiles = [sw.subject_profile(SEED, i).resting_hr for i in range(32)]
    assert np.std(profiles) > 4


def test_sleep_structure(minute_days):
    deep_first = deep_second = rem_first = rem_second = 0
    for day in minute_days:
        probs = day.values[:, [CI[f"sleep_prob_{s}"] for s in sw.SLEEP_STAGES]]
        stage = np.argmax(probs, axis=1)
        np.testing.assert_allclose(probs.sum(axis=1)[~day.missing], 1.0, atol=1e-4)
        in_bed = _span_mask(day.sleep)
        assert (stage[~in_bed & ~day.missing] == 0).all()  # awake outside bed
        night = day.night
        assert night.onset_min < night.wake_min == day.sleep[0]["end_min"]
        assert 5.0 < night.sleep_hours < 10.0
        a0 = max(night.onset_min, 0)
        np.testing.assert_array_equal(stage[a0:night.wake_min], night.stages[a0 - night.onset_min:])
        half = len(night.stages) // 2
        deep_first += np.sum(night.stages[:half] == 2)
        deep_second += np.sum(night.stages[half:] == 2)
        rem_first += np.sum(night.stages[:half] == 3)
        rem_second += np.sum(night.stages[half:] == 3)
        assert (night.stages == 2).any() and (night.stages == 3).any()
    # Deep sleep early in the night, REM late, as in real hypnograms.
    assert deep_first > 2 * deep_second
    assert rem_second > 1.5 * rem_first


def test_consecutive_days_share_the_night():
    size = sw.get_wearable_size("tiny", resolution_min=1)
    today = sw.generate_day(size, SEED, 5, 1)
    tomorrow = sw.generate_day(size, SEED, 5, 2)
    onset_in_today = tomorrow.night.onset_min + 1440
    if onset_in_today < 1440:
        assert today.sleep[-1] == {"start_min": onset_in_today, "end_min": 1440}
        stage = np.argmax(today.values[onset_in_today:, [CI[f"sleep_prob_{s}"] for s in sw.SLEEP_STAGES]], axis=1)
        np.testing.assert_array_equal(stage, tomorrow.night.stages[: 1440 - onset_in_today])
    else:
        assert len(today.sleep) == 1


def test_split_by_subject_is_disjoint_and_deterministic(tiny_days):
    train = {d.subject_id for d in tiny_days if d.split == "train"}
    val = {d.subject_id for d in tiny_days if d.split == "val"}
    assert not train & val
    assert len(val) == sw.WEARABLE_SIZES["tiny"].num_val_subjects == 8
    assert len(train) == 24
    only_val = list(sw.generate_wearable("tiny", seed=SEED, split="val"))
    assert {d.subject_id for d in only_val} == val
    assert len(only_val) == 8 * 4
    again = [sw.subject_split("tiny", SEED, i) for i in range(32)]
    assert again == [sw.subject_split("tiny", SEED, i) for i in range(32)]
    other_seed = {sw.subject_id(i) for i in range(32) if sw.subject_split("tiny", SEED + 1, i) == "val"}
    assert other_seed != val


def test_generation_is_deterministic_and_order_independent(tiny_days):
    day = tiny_days[13]
    alone = sw.generate_day("tiny", SEED, day.subject_index, day.day)
    np.testing.assert_array_equal(alone.values, day.values)
    np.testing.assert_array_equal(alone.missing, day.missing)
    assert alone.caption == day.caption and alone.activities == day.activities
    subset = list(sw.generate_wearable("tiny", seed=SEED, subjects=[day.subject_index]))
    np.testing.assert_array_equal(subset[day.day].values, day.values)
    other = sw.generate_day("tiny", SEED + 1, day.subject_index, day.day)
    assert not np.array_equal(other.values, day.values)


def test_coarse_day_is_resampled_minute_day(minute_days, tiny_days):
    for fine, coarse in zip(minute_days[:6], tiny_days[:6]):
        assert fine.key == coarse.key and fine.caption == coarse.caption
        values, missing = sw.resample(fine.values, fine.missing, 10)
        np.testing.assert_allclose(coarse.values, values, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(coarse.missing, missing)


def test_resample_averages_observed_minutes_only():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(1440, 3)).astype(np.float32)
    missing = np.zeros(1440, bool)
    missing[0:30] = True  # three whole bins
    missing[35:38] = True  # part of a bin
    out, out_missing = sw.resample(values, missing, 10)
    assert out.shape == (144, 3) and out_missing.shape == (144,)
    assert out_missing[:3].all() and not out_missing[3:].any()
    assert (out[:3] == 0).all()
    np.testing.assert_allclose(out[3], values[[30, 31, 32, 33, 34, 38, 39]].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(out[10], values[100:110].mean(axis=0), rtol=1e-5)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown wearable size 'huge'"):
        sw.get_wearable_size("huge")
    with pytest.raises(ValueError, match="resolution_min must divide 1440"):
        sw.get_wearable_size("tiny", resolution_min=7)
    with pytest.raises(ValueError, match="num_subjects"):
        sw.WearableSize("x", num_subjects=0, days_per_subject=1)
    with pytest.raises(ValueError, match="val_fraction"):
        sw.WearableSize("x", num_subjects=4, days_per_subject=1, val_fraction=1.5)
    with pytest.raises(ValueError, match="unknown WearableSize field"):
        sw.get_wearable_size("tiny", subjects=3)
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        next(sw.generate_wearable("tiny", seed=-1))
    with pytest.raises(ValueError, match="split must be"):
        next(sw.generate_wearable("tiny", split="test"))
    with pytest.raises(ValueError, match="subjects: 99"):
        next(sw.generate_wearable("tiny", subjects=[99]))
    with pytest.raises(ValueError, match="subject_index must be in"):
        sw.generate_day("tiny", 0, 32, 0)
    with pytest.raises(ValueError, match=r"values must have shape \(1440, C\)"):
        sw.resample(np.zeros((100, 34)), np.zeros(100, bool), 10)
    with pytest.raises(ValueError, match="missing must have shape"):
        sw.resample(np.zeros((1440, 34)), np.zeros(10, bool), 10)
    with pytest.raises(ValueError, match="resolution_min must be a positive divisor"):
        sw.resample(np.zeros((1440, 34)), np.zeros(1440, bool), 7)
