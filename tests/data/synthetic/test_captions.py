"""Caption facts must agree with the minute data they describe, and the text must state them."""

from __future__ import annotations

import numpy as np
import pytest

from sensorlm.data.synthetic import captions as cap
from sensorlm.data.synthetic import wearable as sw
from sensorlm.data.synthetic.wearable import CHANNEL_INDEX as CI

SEED = 0
SIZE = sw.get_wearable_size("tiny", resolution_min=1, num_subjects=12)


@pytest.fixture(scope="module")
def days() -> list[sw.WearableDay]:
    return list(sw.generate_wearable(SIZE, seed=SEED))


def _stage(values: np.ndarray) -> np.ndarray:
    return np.argmax(values[:, [CI[f"sleep_prob_{s}"] for s in sw.SLEEP_STAGES]], axis=1)


def test_statistical_facts_match_the_arrays(days):
    for day in days:
        f, obs = day.facts, ~day.missing
        hr = day.values[:, CI["heart_rate"]].astype(np.float64)
        assert f.mean_hr == pytest.approx(hr[obs].mean(), rel=1e-9)
        assert f.peak_hr == pytest.approx(hr[obs].max())
        assert hr[f.peak_hr_min] == pytest.approx(f.peak_hr) and obs[f.peak_hr_min]
        assert f.total_steps == round(day.values[obs, CI["steps"]].astype(np.float64).sum())
        assert f.wear_minutes == obs.sum()
        assert f.resting_hr == pytest.approx(day.values[obs, CI["resting_hr_estimate"]].mean(), rel=1e-6)
        text = day.captions["statistical"]
        assert f"{f.mean_hr:.0f} bpm" in text
        assert f"{f.peak_hr:.0f} bpm at {cap.clock(f.peak_hr_min)}" in text
        assert str(f.total_steps) in text
        assert f"{f.mean_spo2:.0f}%" in text


def test_sleep_hours_match_the_arrays_of_two_days(days):
    checked = 0
    for day in days[:12]:
        f = day.facts
        night = day.night
        assert f.sleep_hours == pytest.approx(night.sleep_hours)
        # The night starts the previous evening: rebuild it from both days' stager channels.
        stage_today = _stage(day.values)
        asleep = np.count_nonzero(stage_today[max(night.onset_min, 0):night.wake_min] > 0)
        if night.onset_min < 0:
            yesterday = sw.generate_day(SIZE, SEED, day.subject_index, day.day - 1)
            asleep += np.count_nonzero(_stage(yesterday.values)[1440 + night.onset_min:] > 0)
            checked += 1
        assert asleep == night.asleep_minutes
        assert f.sleep_hours == pytest.approx(asleep / 60)
        assert f"{f.sleep_hours:.1f} hours" in day.captions["semantic"]
        assert f"{cap.clock(f.sleep_onset_min)} to {cap.clock(f.wake_min)}" in day.captions["semantic"]
    assert checked > 0


def test_primary_activity_is_named_with_its_duration(days):
    for day in days:
        f = day.facts
        bout = max((a for a in day.activities if a["label"] == day.primary_activity),
                   key=lambda a: a["end_min"] - a["start_min"])
        duration = bout["end_min"] - bout["start_min"]
        assert (f.primary.start_min, f.primary.end_min, f.primary.duration_min) == (
            bout["start_min"], bout["end_min"], duration)
        phrase = sw.ACTIVITY_PHRASES[day.primary_activity]
        semantic = day.captions["semantic"]
        assert phrase in semantic
        assert f"{duration}-minute {cap.time_of_day(bout['start_min'])} {sw.ACTIVITY_NOUNS[day.primary_activity]}" \
            in semantic
        # The semantic level comes first, so a short text length still names the workout.
        assert day.caption.startswith(semantic)
        assert phrase in day.caption[:120]
        hr = day.values[bout["start_min"]:bout["end_min"], CI["heart_rate"]]
        assert f.primary.mean_hr == pytest.approx(hr[~day.missing[bout["start_min"]:bout["end_min"]]].mean())
        assert f.primary.mean_hr > f.resting_hr


def test_structural_statements_match_the_shapes(days):
    for day in days:
        f = day.facts
        sm = cap.smoothed_heart_rate(day.values, day.missing)
        text = day.captions["structural"]
        c = f.climb
        assert c is not None, day.key
        assert c.hr_end - c.hr_start >= cap.MIN_CLIMB_BPM
        assert c.hr_start == pytest.approx(sm[c.start_min]) and c.hr_end == pytest.approx(sm[c.end_min])
        assert f"from {c.hr_start:.0f} bpm at {cap.clock(c.start_min)} to {c.hr_end:.0f} bpm at " \
               f"{cap.clock(c.end_min)}" in text
        if c.ending == "falls":
            assert sm[c.until_min] < c.hr_start + 0.5 * (c.hr_end - c.hr_start)
            assert "falls" in text
        if day.primary_activity in ("running", "hiit", "rowing", "elliptical", "swimming"):
            # The steepest climb of the day is the start of a hard workout.
            assert f.primary.start_min - 15 <= c.start_min <= f.primary.end_min, day.key
        # Overnight low: the minimum of the smoothed series over this morning's sleep.
        asleep = (_stage(day.values) > 0) & ~day.missing & (np.arange(1440) < 720)
        assert f.overnight_low_hr == pytest.approx(np.nanmin(sm[asleep]))
        assert f"{f.overnight_low_hr:.0f} bpm at {cap.clock(f.overnight_low_min)}" in text
        hourly = np.where(day.missing, 0, day.values[:, CI["steps"]]).astype(np.float64).reshape(24, 60).sum(1)
        assert f.busiest_hour == int(np.argmax(hourly))
        assert f"{f.busiest_hour_steps}" in text
        long_gaps = [(g["start_min"], g["end_min"]) for g in day.off_wrist if g["end_min"] - g["start_min"] >= 10]
        assert f.gaps == long_gaps
        for s, e in long_gaps[:2]:
            assert f"No data from {cap.clock(s)} to {cap.clock(e)}" in text


def test_phrasing_varies_but_is_reproducible(days):
    openings = {d.caption.split(":")[0].split(",")[0] for d in days}
    assert len(openings) >= 3
    day = days[0]
    again = sw.generate_day(SIZE, SEED, day.subject_index, day.day)
    assert again.caption == day.caption
    c1 = cap.make_caption(again_values := again.values, again.missing, again.activities, again.primary_activity,
                          night=again.night, rng=7)
    c2 = cap.make_caption(again_values, again.missing, again.activities, again.primary_activity,
                          night=again.night, rng=7)
    assert c1.text == c2.text
    assert c1.facts == c2.facts
    texts = {cap.make_caption(again.values, again.missing, again.activities, again.primary_activity,
                              night=again.night, rng=r).text for r in range(12)}
    assert len(texts) > 1


def test_caption_without_night_or_heart_rate_data():
    day = sw.generate_day(SIZE, SEED, 1, 0)
    c = cap.make_caption(day.values, day.missing, day.activities, day.primary_activity, night=None, rng=0)
    assert c.facts.sleep_hours is None and "hours of sleep" not in c.text and "Slept" not in c.text
    all_missing = np.ones(1440, bool)
    c = cap.make_caption(np.zeros((1440, 34), np.float32), all_missing, day.activities, day.primary_activity)
    assert c.facts.mean_hr is None and c.facts.climb is None
    assert sw.ACTIVITY_PHRASES[day.primary_activity] in c.semantic
    assert "0 steps" in c.text or "Step count 0" in c.text


def test_bad_inputs_raise_clear_errors():
    day = sw.generate_day(SIZE, SEED, 2, 0)
    args = (day.values, day.missing, day.activities, day.primary_activity)
    with pytest.raises(ValueError, match=r"values must be one-minute data of shape \(1440, 34\)"):
        cap.make_caption(day.values[:144], *args[1:])
    with pytest.raises(ValueError, match="missing must be a bool array"):
        cap.make_caption(day.values, day.missing.astype(np.uint8), *args[2:])
    with pytest.raises(ValueError, match="primary_activity 'sleeping' is not one of"):
        cap.make_caption(*args[:3], "sleeping")
    with pytest.raises(ValueError, match=r"activities\[0\] span \[10, 2000\) is not inside the day"):
        cap.make_caption(day.values, day.missing, [{"label": "running", "start_min": 10, "end_min": 2000}], "running")
    with pytest.raises(ValueError, match=r"activities\[0\] must be a mapping"):
        cap.make_caption(day.values, day.missing, [("running", 1, 2)], "running")
    with pytest.raises(ValueError, match="has no bout"):
        cap.make_caption(day.values, day.missing, [{"label": "yoga", "start_min": 1, "end_min": 20}], "running")


def test_activity_prompt_matches_caption_opening():
    from sensorlm.data.synthetic.captions import activity_prompt
    from sensorlm.data.synthetic.wearable import generate_wearable

    for day in list(generate_wearable("tiny", seed=0))[:8]:
        prompt = activity_prompt(day.primary_activity)
        first_sentence = day.caption.split(".")[0]
        assert sw.ACTIVITY_PHRASES[day.primary_activity] in prompt
        assert sw.ACTIVITY_PHRASES[day.primary_activity] in first_sentence
        assert sw.ACTIVITY_NOUNS[day.primary_activity] in first_sentence
    with pytest.raises(ValueError, match="unknown activity 'sleeping'"):
        activity_prompt("sleeping")
