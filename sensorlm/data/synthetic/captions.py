"""The SYNTHETIC generator's captions: three levels from its one-minute days and its ground truth.

This module belongs to the generator (`synthetic.wearable`), not to the data layer: every user
dataset is captioned by `sensorlm.data.captioner`, which knows channels only by kind. The generator
knows more than any recording says (the workout it simulated, the night's hypnogram), as a user's
label file would, so its semantic level states that ground truth:

* statistical -- numbers over the day ("mean heart rate 71 bpm, peak 156 bpm at 07:42");
* structural  -- shapes in time ("heart rate climbs steeply from 78 bpm at 07:10 to 150 bpm at
  07:16, stays elevated until 07:45, then falls"; the overnight low; the busiest hour; gaps);
* semantic    -- what happened ("a day with running: a 35-minute morning run starting at 07:10;
  7.4 hours of sleep").

It is a client of the captioner: clock times, runs and the stored level format
(`captioner.levels_from_paper`, the eight caption keys) come from there. Every number a caption
states is also returned in `CaptionFacts`, computed from the arrays (and, for sleep, the night's
hypnogram), so tests can check the text against the data. Phrasing varies with the random
generator passed in; activity words come from `ACTIVITY_PHRASES` / `ACTIVITY_NOUNS`, and the
generator's zero-shot prompts (`activity_prompt`) reuse them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from sensorlm.data.captioner import clock, levels_from_paper, runs
from sensorlm.data.synthetic.vocab import (
    ACTIVITIES,
    ACTIVITY_NOUNS,
    ACTIVITY_PHRASES,
    CHANNEL_INDEX,
    MINUTES_PER_DAY,
    NUM_CHANNELS,
    SleepNight,
)

SMOOTH_MIN = 5  # centred moving-average window for the structural (shape) statements
MIN_CLIMB_BPM = 15.0  # smaller rises are not called a climb
MAX_CLIMB_MIN = 30  # a "steep" climb happens within half an hour
MIN_GAP_MIN = 10  # shorter missing runs are not mentioned


@dataclass
class BoutFact:
    label: str
    start_min: int
    end_min: int
    duration_min: int
    time_of_day: str
    mean_hr: float | None
    peak_hr: float | None
    steps: int


@dataclass
class ClimbFact:
    """Steepest heart-rate climb on the smoothed series and what follows it.

    ``ending`` is "falls" (back below half the climb by ``until_min``), "stays" (not before the day
    ends) or "gap" (the data stops at ``until_min`` while still elevated).
    """

    start_min: int
    end_min: int
    hr_start: float
    hr_end: float
    until_min: int | None
    ending: str


@dataclass
class CaptionFacts:
    mean_hr: float | None
    peak_hr: float | None
    peak_hr_min: int | None
    total_steps: int
    wear_minutes: int
    resting_hr: float | None
    mean_hrv: float | None
    mean_spo2: float | None
    mean_skin_temp: float | None
    bouts: list[BoutFact] = field(default_factory=list)
    primary: BoutFact | None = None
    sleep_hours: float | None = None
    sleep_onset_min: int | None = None
    wake_min: int | None = None
    deep_hours: float | None = None
    rem_hours: float | None = None
    climb: ClimbFact | None = None
    overnight_low_hr: float | None = None
    overnight_low_min: int | None = None
    busiest_hour: int | None = None
    busiest_hour_steps: int = 0
    gaps: list[tuple[int, int]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Caption:
    semantic: str
    structural: str
    statistical: str
    facts: CaptionFacts

    @property
    def text(self) -> str:
        """All levels, most abstract first, so truncation to a short text length keeps the activity."""
        return " ".join(part for part in (self.semantic, self.structural, self.statistical) if part)

    def levels(self) -> dict[str, str]:
        return {"semantic": self.semantic, "structural": self.structural, "statistical": self.statistical}

    def stored_levels(self) -> dict[str, str]:
        """The four levels the shards keep (`sensorlm.data.captioner.LEVELS`)."""
        return levels_from_paper(self.semantic, self.structural, self.statistical)


def time_of_day(minute: int) -> str:
    minute = int(minute) % MINUTES_PER_DAY
    if 240 <= minute < 720:
        return "morning"
    if 720 <= minute < 1020:
        return "afternoon"
    if 1020 <= minute < 1260:
        return "evening"
    return "night"


def smoothed_heart_rate(values: np.ndarray, missing: np.ndarray) -> np.ndarray:
    """Centred ``SMOOTH_MIN``-minute mean of observed heart rate; NaN where no minute is observed."""
    hr = values[:, CHANNEL_INDEX["heart_rate"]].astype(np.float64)
    observed = (~missing).astype(np.float64)
    window = np.ones(SMOOTH_MIN)
    num = np.convolve(hr * observed, window, mode="same")
    den = np.convolve(observed, window, mode="same")
    out = np.full(len(hr), np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x, dtype=np.float64)) if x.size else None


def _steepest_climb(sm: np.ndarray) -> ClimbFact | None:
    rises = []
    for lag in range(3, MAX_CLIMB_MIN + 1):
        diff = sm[lag:] - sm[:-lag]
        if np.all(np.isnan(diff)):
            rises.append((-np.inf, 0))
            continue
        i = int(np.nanargmax(diff))
        rises.append((float(diff[i]), i))
    best = max(r for r, _ in rises)
    if not np.isfinite(best) or best < MIN_CLIMB_BPM:
        return None
    # The shortest window that holds most of the rise is the steep part of the climb.
    lag_index = next(k for k, (r, _) in enumerate(rises) if r >= 0.8 * best)
    rise, t1 = rises[lag_index]
    t2 = t1 + lag_index + 3
    threshold = sm[t1] + 0.5 * (sm[t2] - sm[t1])
    after = sm[t2:]
    below = np.flatnonzero(after < threshold)
    gap = np.flatnonzero(np.isnan(after))
    if gap.size and (not below.size or gap[0] < below[0]):
        until, ending = t2 + int(gap[0]), "gap"
    elif below.size:
        until, ending = t2 + int(below[0]), "falls"
    else:
        until, ending = None, "stays"
    return ClimbFact(start_min=t1, end_min=t2, hr_start=float(sm[t1]), hr_end=float(sm[t2]),
                     until_min=until, ending=ending)


def _check_inputs(values, missing, activities, primary_activity) -> tuple[np.ndarray, np.ndarray]:
    values = np.asarray(values)
    missing = np.asarray(missing)
    if values.shape != (MINUTES_PER_DAY, NUM_CHANNELS):
        raise ValueError(f"values must be one-minute data of shape (1440, {NUM_CHANNELS}), got {values.shape}")
    if missing.shape != (MINUTES_PER_DAY,) or missing.dtype != bool:
        raise ValueError(f"missing must be a bool array of shape (1440,), got {missing.dtype} {missing.shape}")
    if primary_activity not in ACTIVITIES:
        raise ValueError(f"primary_activity {primary_activity!r} is not one of {ACTIVITIES}")
    for i, a in enumerate(activities):
        if not isinstance(a, Mapping) or not {"label", "start_min", "end_min"} <= set(a):
            raise ValueError(f"activities[{i}] must be a mapping with label, start_min, end_min; got {a!r}")
        if a["label"] not in ACTIVITIES:
            raise ValueError(f"activities[{i}].label {a['label']!r} is not one of {ACTIVITIES}")
        if not 0 <= a["start_min"] < a["end_min"] <= MINUTES_PER_DAY:
            raise ValueError(f"activities[{i}] span [{a['start_min']}, {a['end_min']}) is not inside the day")
    if not any(a["label"] == primary_activity for a in activities):
        raise ValueError(f"primary_activity {primary_activity!r} has no bout in activities")
    return values, missing


def compute_facts(values: np.ndarray, missing: np.ndarray, activities: Sequence[Mapping],
                  primary_activity: str, night: SleepNight | None = None) -> CaptionFacts:
    """The numbers a caption states, from one-minute data.

    Args:
        values: (1440, 34) one-minute values in `CHANNELS` order (ignored where ``missing``).
        missing: (1440,) bool, True where the device was off the wrist.
        activities: bouts ``{"label", "start_min", "end_min"}``.
        primary_activity: the day's main workout label; its longest bout is the primary bout.
        night: the night that ended this morning (hypnogram), or None to skip sleep facts.
    """
    values, missing = _check_inputs(values, missing, activities, primary_activity)
    observed = ~missing
    col = lambda name: values[:, CHANNEL_INDEX[name]].astype(np.float64)  # noqa: E731
    hr = col("heart_rate")
    steps = col("steps")
    obs_hr = hr[observed]
    peak_min = int(np.flatnonzero(observed)[np.argmax(obs_hr)]) if obs_hr.size else None

    bouts = []
    for a in sorted(activities, key=lambda a: a["start_min"]):
        s, e = int(a["start_min"]), int(a["end_min"])
        seen = observed[s:e]
        bhr = hr[s:e][seen]
        bouts.append(BoutFact(label=a["label"], start_min=s, end_min=e, duration_min=e - s,
                              time_of_day=time_of_day(s), mean_hr=_mean(bhr),
                              peak_hr=float(bhr.max()) if bhr.size else None,
                              steps=int(round(steps[s:e][seen].sum()))))
    primary = max((b for b in bouts if b.label == primary_activity), key=lambda b: b.duration_min)

    sm = smoothed_heart_rate(values, missing)
    stage = np.argmax(values[:, [CHANNEL_INDEX[f"sleep_prob_{s}"] for s in ("awake", "light", "deep", "rem")]], axis=1)
    morning_sleep = observed & (stage > 0) & (np.arange(MINUTES_PER_DAY) < 720) & ~np.isnan(sm)
    low_min = int(np.flatnonzero(morning_sleep)[np.argmin(sm[morning_sleep])]) if morning_sleep.any() else None

    hourly = np.where(observed, steps, 0.0).reshape(24, 60).sum(axis=1)
    busiest = int(np.argmax(hourly)) if hourly.max() > 0 else None

    facts = CaptionFacts(
        mean_hr=_mean(obs_hr), peak_hr=float(obs_hr.max()) if obs_hr.size else None, peak_hr_min=peak_min,
        total_steps=int(round(steps[observed].sum())), wear_minutes=int(observed.sum()),
        resting_hr=_mean(col("resting_hr_estimate")[observed]), mean_hrv=_mean(col("hrv_rmssd")[observed]),
        mean_spo2=_mean(col("spo2")[observed]), mean_skin_temp=_mean(col("skin_temperature")[observed]),
        bouts=bouts, primary=primary, climb=_steepest_climb(sm),
        overnight_low_hr=float(sm[low_min]) if low_min is not None else None, overnight_low_min=low_min,
        busiest_hour=busiest, busiest_hour_steps=int(round(hourly[busiest])) if busiest is not None else 0,
        gaps=[r for r in runs(missing) if r[1] - r[0] >= MIN_GAP_MIN],
    )
    if night is not None:
        facts.sleep_hours = night.asleep_minutes / 60.0
        facts.sleep_onset_min = int(night.onset_min)
        facts.wake_min = int(night.wake_min)
        facts.deep_hours = night.stage_minutes("deep") / 60.0
        facts.rem_hours = night.stage_minutes("rem") / 60.0
    return facts


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _semantic(f: CaptionFacts, primary_activity: str, rng: np.random.Generator) -> str:
    p = f.primary
    phrase, noun = ACTIVITY_PHRASES[primary_activity], ACTIVITY_NOUNS[primary_activity]
    args = dict(phrase=phrase, noun=noun, dur=p.duration_min, tod=p.time_of_day,
                start=clock(p.start_min), end=clock(p.end_min))
    parts = [_pick(rng, [
        "A day with {phrase}: a {dur}-minute {tod} {noun} starting at {start}.",
        "Main workout: {phrase}, a {dur}-minute {tod} {noun} from {start} to {end}.",
        "The day's workout is {phrase}: a {dur}-minute {tod} {noun} at {start}.",
    ]).format(**args)]
    if f.sleep_hours is not None:
        parts.append(_pick(rng, [
            "{h:.1f} hours of sleep, from {on} to {off}.",
            "Slept {h:.1f} hours ({on} to {off}).",
            "{h:.1f} hours asleep last night, {on} to {off}.",
        ]).format(h=f.sleep_hours, on=clock(f.sleep_onset_min), off=clock(f.wake_min)))
    walks = [b for b in f.bouts if b is not p and b.label == "walking"]
    if walks:
        n, total = len(walks), sum(b.duration_min for b in walks)
        word = "walk" if n == 1 else "walks"
        parts.append(_pick(rng, ["Also {n} short {w}, {m} minutes in all.",
                                 "Plus {n} short {w} ({m} minutes)."]).format(n=n, w=word, m=total))
    if f.total_steps >= 10000:
        level = ["An active day overall.", "Overall an active day."]
    elif f.total_steps >= 5000:
        level = ["A moderately active day overall.", "Overall a moderately active day."]
    else:
        level = ["A quiet day overall.", "Overall a quiet day."]
    parts.append(_pick(rng, level))
    return " ".join(parts)


def _structural(f: CaptionFacts, rng: np.random.Generator) -> str:
    parts = []
    c = f.climb
    if c is not None:
        head = _pick(rng, ["Heart rate climbs steeply from {a:.0f} bpm at {t1} to {b:.0f} bpm at {t2}",
                           "Heart rate rises sharply from {a:.0f} bpm at {t1} to {b:.0f} bpm at {t2}"])
        head = head.format(a=c.hr_start, b=c.hr_end, t1=clock(c.start_min), t2=clock(c.end_min))
        if c.ending == "falls" and c.until_min - c.end_min <= 10:
            tail = ", then falls."
        elif c.ending == "falls":
            tail = f", stays elevated until {clock(c.until_min)}, then falls."
        elif c.ending == "gap":
            tail = f", and is still elevated at {clock(c.until_min)} when the data stops."
        else:
            tail = " and stays elevated."
        parts.append(head + tail)
    elif f.mean_hr is not None:
        parts.append("Heart rate shows no sharp climb during the day.")
    if f.overnight_low_min is not None:
        parts.append(_pick(rng, [
            "Overnight, heart rate settles to a low of {x:.0f} bpm at {t}.",
            "During sleep heart rate bottoms out at {x:.0f} bpm at {t}.",
        ]).format(x=f.overnight_low_hr, t=clock(f.overnight_low_min)))
    if f.busiest_hour is not None:
        parts.append(_pick(rng, [
            "Most steps ({n}) come between {a} and {b}.",
            "The busiest hour is {a} to {b} with {n} steps.",
        ]).format(n=f.busiest_hour_steps, a=clock(60 * f.busiest_hour), b=clock(60 * f.busiest_hour + 60)))
    for s, e in f.gaps[:2]:
        parts.append(f"No data from {clock(s)} to {clock(e)} while the watch is off the wrist.")
    return " ".join(parts)


def _statistical(f: CaptionFacts, rng: np.random.Generator) -> str:
    parts = []
    if f.mean_hr is not None:
        parts.append(_pick(rng, [
            "Mean heart rate {m:.0f} bpm, peak {p:.0f} bpm at {t}.",
            "Heart rate averages {m:.0f} bpm and peaks at {p:.0f} bpm at {t}.",
            "Average heart rate {m:.0f} bpm; maximum {p:.0f} bpm at {t}.",
        ]).format(m=f.mean_hr, p=f.peak_hr, t=clock(f.peak_hr_min)))
        parts.append(_pick(rng, ["Resting heart rate about {r:.0f} bpm, HRV {v:.0f} ms.",
                                 "Resting heart rate {r:.0f} bpm; HRV averages {v:.0f} ms."])
                     .format(r=f.resting_hr, v=f.mean_hrv))
        parts.append(f"SpO2 {f.mean_spo2:.0f}%, skin temperature {f.mean_skin_temp:.1f} °C.")
    parts.append(_pick(rng, ["{n} steps in total.", "{n} steps.", "Step count {n}."]).format(n=f.total_steps))
    if f.wear_minutes < MINUTES_PER_DAY:
        parts.append(f"Worn {f.wear_minutes / 60:.1f} of 24 hours.")
    return " ".join(parts)


def make_caption(values: np.ndarray, missing: np.ndarray, activities: Sequence[Mapping], primary_activity: str,
                 night: SleepNight | None = None, rng: np.random.Generator | int | None = None) -> Caption:
    """Caption one day at three levels from its one-minute data.

    Args:
        values: (1440, 34) one-minute values in `CHANNELS` order (ignored where ``missing``).
        missing: (1440,) bool, True where the device was off the wrist.
        activities: bouts ``{"label", "start_min", "end_min"}``.
        primary_activity: the day's main workout (an entry of `ACTIVITIES`).
        night: the night that ended this morning, for the sleep statement (None: no sleep statement).
        rng: generator or seed choosing among phrasings (same rng, same caption).
    """
    facts = compute_facts(values, missing, activities, primary_activity, night)
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    return Caption(semantic=_semantic(facts, primary_activity, rng), structural=_structural(facts, rng),
                   statistical=_statistical(facts, rng), facts=facts)


def activity_prompt(activity: str) -> str:
    """Zero-shot text prompt for an activity, worded like the semantic caption's opening
    ("A day with running: a ... run"), so prompt and caption share their activity words."""
    if activity not in ACTIVITY_PHRASES:
        raise ValueError(f"unknown activity {activity!r} (known: {', '.join(ACTIVITY_PHRASES)})")
    return f"A day with {ACTIVITY_PHRASES[activity]}: a {ACTIVITY_NOUNS[activity]}."
