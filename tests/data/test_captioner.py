"""Captions for any channel set: every number stated is recomputed here from the array."""

import re

import numpy as np
import pytest

from sensorlm.data.captioner import (
    CAPTION_KEYS,
    ChannelInfo,
    caption_window,
    clock,
    compose,
    fmt,
    infer_kind,
    manifest_prompts,
    normalize_levels,
)

STEP = 1.0
T = 240  # four hours of one-minute data starting 06:00
START = 360


def _window(seed=0, with_hr=True):
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    hr = 60 + 3 * rng.normal(size=T)
    hr[120:170] += 70  # a workout
    steps = rng.poisson(2, size=T).astype(float)
    steps[120:170] = rng.poisson(150, size=50)
    temp = 33 + 0.002 * t + 0.05 * rng.normal(size=T)
    sleep = (t < 40).astype(float)
    chans = [ChannelInfo("steps", "count", "count"), ChannelInfo("skin_temperature", "degC", "temperature"),
             ChannelInfo("asleep", "", "sleep")]
    cols = [steps, temp, sleep]
    if with_hr:
        chans.insert(0, ChannelInfo("heart_rate", "bpm", "heart_rate"))
        cols.insert(0, hr)
    values = np.stack(cols, axis=1)
    missing = np.zeros(T, bool)
    missing[200:215] = True  # a 15-minute gap
    values[missing] = 0.0
    return values, missing, chans


def _at(i):
    return clock(START + i * STEP)


def test_every_stated_number_is_recomputed_from_the_array():
    values, missing, chans = _window()
    labels = [{"label": "high_activity", "start_min": 120, "end_min": 170}]
    cap = caption_window(values, missing, chans, step_min=STEP, start_minute=START, labels=labels,
                         main_label="high_activity")
    text = cap.text
    seen = ~missing
    # low: per channel mean / min / max with clock times / SD, counts as totals
    hr = values[:, 0][seen]
    idx = np.flatnonzero(seen)
    assert (f"Heart rate: mean {fmt(hr.mean())} bpm, min {fmt(hr.min())} bpm at {_at(idx[hr.argmin()])}, "
            f"max {fmt(hr.max())} bpm at {_at(idx[hr.argmax()])}, SD {fmt(hr.std())} bpm.") in cap.low
    steps = values[:, 1][seen]
    assert f"Steps: {fmt(steps.sum())} count in total, at most {fmt(steps.max())} at {_at(idx[steps.argmax()])}." in cap.low
    # middle: the segment fit with the largest change (six equal segments, least squares)
    temp = values[:, 2].astype(float).copy()
    temp[missing] = np.nan
    seg = T // 6
    changes = []
    for k in range(6):
        x = np.arange(k * seg, (k + 1) * seg)
        y = temp[x]
        ok = ~np.isnan(y)
        changes.append((np.polyfit(x[ok], y[ok], 1)[0] * seg, k))
    change, k = max(changes, key=lambda c: abs(c[0]))
    assert abs(change) >= 0.5 * np.nanstd(temp)  # large enough to be stated
    word = "rises" if change > 0 else "falls"
    assert f"Skin temperature {word} by {fmt(abs(change))} degC from {_at(k * seg)} to {_at((k + 1) * seg)}." in cap.middle
    # most and least active hour by step totals over hours mostly observed
    hours = np.where(missing, np.nan, values[:, 1]).reshape(4, 60)
    sums = np.nansum(hours, axis=1)
    busiest = int(np.argmax(sums))
    assert f"Most active hour {_at(busiest * 60)} to {_at(busiest * 60 + 60)} ({fmt(sums[busiest])} count of steps)" in cap.middle
    assert f"No data from {_at(200)} to {_at(215)}." in cap.middle
    # high: the label worded by the prompt template, its interval, sleep and resting heart rate
    assert cap.high_summary == "A day with high activity."
    assert "High activity from 08:00 to 08:50 (50 min)." in cap.high_all
    assert f"Asleep from {_at(0)} to {_at(40)}." in cap.high_all
    hr_nan = np.where(missing, np.nan, values[:, 0])
    windows = [np.mean(hr_nan[i:i + 30]) for i in range(T - 29) if not np.isnan(hr_nan[i:i + 30]).any()]
    assert f"Resting heart rate {fmt(min(windows))} bpm." in cap.high_all
    assert "Elevated heart rate from 08:00 to 08:50." in cap.high_all
    # and every clock time stated lies inside the window
    for hh, mm in re.findall(r"(\d\d):(\d\d)", text):
        assert START <= int(hh) * 60 + int(mm) <= START + T


def test_no_heart_rate_still_gets_statistical_and_structural_captions():
    values, missing, chans = _window(with_hr=False)
    cap = caption_window(values, missing, chans, step_min=STEP, start_minute=START)
    assert "heart" not in cap.text.lower()
    assert cap.low.startswith("Steps:") and "Skin temperature: mean" in cap.low
    assert "Most active hour" in cap.middle and "No data from" in cap.middle
    assert cap.high_summary == "" and cap.high_all.startswith("Asleep from")  # unlabelled: no summary


def test_eight_caption_keys_compose_the_stored_levels():
    values, missing, chans = _window()
    cap = caption_window(values, missing, chans, step_min=STEP, start_minute=START, main_label="gym")
    levels = cap.levels()
    texts = {k: compose(levels, k) for k in CAPTION_KEYS}
    assert len(CAPTION_KEYS) == 8 and len(set(texts.values())) == 8
    assert texts["all"] == cap.text == " ".join([levels["high_all"], levels["middle"], levels["low"]])
    assert texts["low_middle"] == f"{levels['middle']} {levels['low']}"
    assert texts["high_summary"] == "A day with gym."
    with pytest.raises(ValueError, match="unknown caption key 'medium'"):
        compose(levels, "medium")
    # the paper's three level names (the synthetic generator's) map onto the same four levels
    paper = normalize_levels({"semantic": "A day with running: a run. Slept 7 hours.", "structural": "S.",
                              "statistical": "L."})
    assert paper == {"low": "L.", "middle": "S.", "high_summary": "A day with running: a run.",
                     "high_all": "A day with running: a run. Slept 7 hours."}


def test_prompts_come_from_the_dataset_or_a_template():
    manifest = {"activities": ["desk_work", "sleep"], "prompts": {"sleep": "Asleep all day."}}
    assert manifest_prompts(manifest) == ["A day with desk work.", "Asleep all day."]
    assert manifest_prompts(manifest, "Two hours of {label}.") == ["Two hours of desk work.", "Two hours of sleep."]
    assert manifest_prompts({**manifest, "prompt_template": "Mostly {label}."})[0] == "Mostly desk work."


def test_unknown_kind_and_bad_shape_named():
    with pytest.raises(ValueError, match="channel 'x': unknown kind 'pulse'"):
        ChannelInfo("x", "", "pulse")
    values, missing, chans = _window()
    with pytest.raises(ValueError, match=r"values must be \(T, 4\)"):
        caption_window(values[:, :3], missing, chans)


def test_infer_kind():
    assert infer_kind("HR", "bpm") == "heart_rate" and infer_kind("step_count") == "count"
    assert infer_kind("ENMO", "mg") == "accel" and infer_kind("ambient temp", "degC") == "temperature"
    assert infer_kind("light", "lux") == "light" and infer_kind("battery") == "level"
