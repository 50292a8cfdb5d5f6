"""SYNTHETIC wearable sensor days for SensorLM-style sensor-language pretraining.

Nothing in this module is measured from a person. Every minute is drawn from a hand-written model
of a wrist-worn device (heart rate, motion, skin temperature, electrodermal activity, SpO2, sleep
staging, ...), built so that a model has real structure to learn and a person looking at a plot can
recognise a day:

* each subject has a fixed profile (resting heart rate, maximum heart rate, fitness, chronotype,
  heart-rate variability, preferred workouts), so subjects differ and each is stable across days;
* each night is a hypnogram of ~90-minute cycles (deep sleep early, REM late, brief awakenings)
  with heart rate dipping below resting;
* each day has exactly one main workout (its label, see `ACTIVITIES`) with the physiological
  signature of that sport, a few short incidental walks, and off-wrist gaps (shower, charging)
  whose minutes are missing (values 0, ``missing=True``).

Generation is deterministic and order-independent: the random stream of every (seed, subject, day)
comes from its own `numpy.random.SeedSequence`, so any day can be regenerated alone. Days are
simulated at one-minute resolution (1440 x 34), captioned from those minutes (see `synthetic.captions`), then
averaged into ``resolution_min``-minute bins. Activity and sleep spans are always given in minutes
since local midnight of the day, whatever the resolution.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from sensorlm.data.synthetic.captions import CaptionFacts, make_caption
from sensorlm.data.synthetic.sizes import pick_size
from sensorlm.data.synthetic.vocab import (  # noqa: F401 (the generator's vocabulary, re-exported)
    MINUTES_PER_DAY,
    Channel,
    CHANNELS,
    CHANNEL_NAMES,
    CHANNEL_INDEX,
    NUM_CHANNELS,
    ACTIVITIES,
    ACTIVITY_PHRASES,
    ACTIVITY_NOUNS,
    SLEEP_STAGES,
    SleepNight,
)



@dataclass(frozen=True)
class _Signature:
    """Physiological signature of one activity (efforts are fractions of heart-rate reserve)."""

    effort: tuple[float, float]
    pattern: str  # steady | intervals | sets | laps | climb | flow
    steps: tuple[float, float]  # steps/min while moving
    accel_dyn: float  # mean |a| above 1 g
    accel_std: float
    gyro: float
    duration: tuple[int, int]  # minutes, as a primary workout
    outdoor: bool
    speed: float = 0.0  # m/min not counted from steps (wheels, water, ergometer)
    hrv_factor: float = 1.0
    orientation: tuple[float, float, float] = (0.2, -0.2, -0.95)


_S = _Signature
_SIGNATURES: dict[str, _Signature] = {
    # effort, pattern, steps/min, accel_dyn, accel_std, gyro, duration (min), outdoor, ...
    "walking": _S((0.28, 0.38), "steady", (100, 122), 0.12, 0.25, 60, (30, 90), True,
                  orientation=(0.3, -0.2, -0.9)),
    "running": _S((0.68, 0.85), "steady", (155, 182), 0.45, 0.65, 140, (20, 75), True,
                  orientation=(0.6, -0.3, -0.7)),
    "cycling": _S((0.52, 0.72), "steady", (0, 3), 0.04, 0.10, 15, (30, 120), True,
                  speed=380, orientation=(0.1, 0.9, -0.4)),
    "swimming": _S((0.55, 0.75), "laps", (0, 0), 0.30, 0.55, 170, (20, 60), False,
                   speed=42, orientation=(0.5, 0.5, -0.5)),
    "strength_training": _S((0.35, 0.65), "sets", (0, 8), 0.18, 0.35, 70, (30, 75), False),
    "yoga": _S((0.12, 0.24), "flow", (0, 3), 0.02, 0.06, 18, (30, 75), False, hrv_factor=1.3),
    "hiking": _S((0.42, 0.60), "climb", (85, 110), 0.15, 0.30, 55, (90, 240), True,
                 orientation=(0.3, -0.3, -0.85)),
    "elliptical": _S((0.58, 0.72), "steady", (125, 150), 0.20, 0.30, 45, (20, 50), False,
                     orientation=(0.2, 0.6, -0.7)),
    "rowing": _S((0.62, 0.80), "steady", (0, 4), 0.35, 0.50, 95, (15, 45), False,
                 speed=250, orientation=(0.1, 0.8, -0.5)),
    "hiit": _S((0.45, 0.92), "intervals", (60, 120), 0.40, 0.70, 120, (15, 40), False),
}
_INCIDENTAL_WALK = "walking"

# Stream tags for SeedSequence keys: each part of the generator has its own random stream.
_TAG_SUBJECT, _TAG_SCHEDULE, _TAG_NIGHT, _TAG_DAY, _TAG_CAPTION, _TAG_SPLIT = range(1, 7)
_DAY_OFFSET = 1 << 20  # days may be negative (the night before day 0); SeedSequence keys may not


def _rng(seed: int, tag: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), tag, *(int(k) for k in keys)]))


def _check_seed(seed: int) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _check_day(day: int) -> int:
    if isinstance(day, bool) or not isinstance(day, (int, np.integer)) or abs(day) >= _DAY_OFFSET - 2:
        raise ValueError(f"day must be an integer with |day| < {_DAY_OFFSET - 2}, got {day!r}")
    return int(day)


# --------------------------------------------------------------------------------------- sizes


@dataclass(frozen=True)
class WearableSize:
    """Size of a synthetic wearable dataset.

    Args:
        name: size name.
        num_subjects: number of people.
        days_per_subject: days generated per person (day indices 0..days_per_subject-1).
        resolution_min: minutes averaged into one time step; T = 1440 / resolution_min.
        val_fraction: fraction of subjects held out as the "val" split (split by subject).
    """

    name: str
    num_subjects: int
    days_per_subject: int
    resolution_min: int = 1
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        for name in ("num_subjects", "days_per_subject", "resolution_min"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"WearableSize.{name} must be a positive integer, got {value!r}")
        if MINUTES_PER_DAY % self.resolution_min:
            raise ValueError(
                f"WearableSize.resolution_min must divide {MINUTES_PER_DAY}, got {self.resolution_min}")
        if not 0.0 <= float(self.val_fraction) < 1.0:
            raise ValueError(f"WearableSize.val_fraction must be in [0, 1), got {self.val_fraction!r}")

    @property
    def num_steps(self) -> int:
        """T, the number of time steps per day."""
        return MINUTES_PER_DAY // self.resolution_min

    @property
    def num_days(self) -> int:
        return self.num_subjects * self.days_per_subject

    @property
    def num_val_subjects(self) -> int:
        if self.val_fraction <= 0 or self.num_subjects < 2:
            return 0
        return min(self.num_subjects - 1, max(1, round(self.val_fraction * self.num_subjects)))


WEARABLE_SIZES: dict[str, WearableSize] = {
    # 128 days at 10-minute resolution (T=144): builds in seconds, for tests and smoke runs.
    "tiny": WearableSize("tiny", num_subjects=32, days_per_subject=4, resolution_min=10, val_fraction=0.25),
    # The README's main run: tiny sizes, enough held-out subjects to measure zero-shot accuracy.
    "demo": WearableSize("demo", num_subjects=320, days_per_subject=4, resolution_min=10, val_fraction=0.2),
    "small": WearableSize("small", num_subjects=200, days_per_subject=7, resolution_min=1, val_fraction=0.2),
    # Paper-shaped days (1440 x 34) in seconds: throughput runs of the paper size (bench/gpu/run.sh).
    "bench": WearableSize("bench", num_subjects=20, days_per_subject=4, resolution_min=1, val_fraction=0.2),
    # The SensorLM paper's scale (~103k people, ~59.7M hours); sizes only, never built in tests.
    "paper": WearableSize("paper", num_subjects=103_643, days_per_subject=24, resolution_min=1, val_fraction=0.1),
}


def get_wearable_size(size: str | WearableSize = "tiny", **overrides) -> WearableSize:
    """Look up a size by name (or take one) and apply field overrides.

    Args:
        size: a name in `WEARABLE_SIZES` or a `WearableSize`.
        **overrides: fields to replace (``num_subjects=8``); ``None`` values are ignored.
    """
    return pick_size(WEARABLE_SIZES, WearableSize, "wearable", size, overrides)


# ----------------------------------------------------------------------------------- data types


@dataclass(frozen=True)
class SubjectProfile:
    """Fixed traits of one synthetic person."""

    subject_index: int
    age: float
    fitness: float  # 0..1
    resting_hr: float  # bpm
    max_hr: float  # bpm
    hrv_base: float  # ms, resting RMSSD
    chronotype_min: float  # minutes later than an average sleeper
    sleep_need_h: float
    skin_temp_base: float  # degC
    eda_base: float  # uS
    weight_kg: float
    stride_m: float
    home_altitude_m: float
    stress_base: float  # 0..1
    morning_workout_prob: float
    charging_prob: float
    activity_probs: tuple[float, ...]  # over ACTIVITIES

    @property
    def subject_id(self) -> str:
        return subject_id(self.subject_index)


@dataclass
class WearableDay:
    """One SYNTHETIC subject-day.

    Fields:
        subject_id: ``"subj00012"``.
        day: day index of this subject.
        values: float32 (T, 34) in `CHANNELS` order; 0 where ``missing``.
        missing: bool (T,), True where the device was off the wrist for the whole time step.
        activities: bouts ``{"label", "start_min", "end_min"}`` (minutes since midnight, end
            exclusive), sorted by start; the main workout plus short incidental walks.
        primary_activity: label of the main workout (an entry of `ACTIVITIES`).
        sleep: in-bed spans ``{"start_min", "end_min"}`` inside this day (morning part of last
            night, evening part of the coming night).
        caption: the three caption levels joined, most abstract first (semantic, structural,
            statistical) so a short text length keeps the activity.
        split: "train" or "val" (split by subject).
        captions: each level alone: {"semantic", "structural", "statistical"}.
        off_wrist: spans ``{"start_min", "end_min"}`` when the device was not worn.
        resolution_min: minutes per time step.
        subject_index: integer subject number.
        night: the night that ended this morning (full hypnogram, partly before midnight).
        facts: numbers the caption states, computed from the one-minute data (see `synthetic.captions`).
    """

    subject_id: str
    day: int
    values: np.ndarray
    missing: np.ndarray
    activities: list[dict]
    primary_activity: str
    sleep: list[dict]
    caption: str
    split: str
    captions: dict[str, str] = field(default_factory=dict)
    off_wrist: list[dict] = field(default_factory=list)
    resolution_min: int = 1
    subject_index: int = -1
    night: SleepNight | None = None
    facts: CaptionFacts | None = None

    @property
    def key(self) -> str:
        """Unique sample key, ``subj00012_d003``."""
        return f"{self.subject_id}_d{self.day:03d}"

    @property
    def label(self) -> int:
        """Index of ``primary_activity`` in `ACTIVITIES`."""
        return ACTIVITIES.index(self.primary_activity)

    @property
    def num_steps(self) -> int:
        return int(self.values.shape[0])

    def metadata(self) -> dict:
        """JSON-serialisable description of the day (everything but the arrays)."""
        return {
            "key": self.key, "subject_id": self.subject_id, "subject_index": self.subject_index,
            "day": self.day, "split": self.split, "resolution_min": self.resolution_min,
            "primary_activity": self.primary_activity, "label": self.label,
            "activities": [dict(a) for a in self.activities], "sleep": [dict(s) for s in self.sleep],
            "off_wrist": [dict(s) for s in self.off_wrist], "caption": self.caption,
            "captions": dict(self.captions), "synthetic": True,
            "night": None if self.night is None else {
                "onset_min": self.night.onset_min, "wake_min": self.night.wake_min,
                "sleep_hours": round(self.night.sleep_hours, 3)},
            "facts": None if self.facts is None else self.facts.to_dict(),
        }


def subject_id(subject_index: int) -> str:
    return f"subj{int(subject_index):05d}"


# ------------------------------------------------------------------------------ signal helpers


def _exp_kernel(tau: float) -> np.ndarray:
    a = 1.0 - math.exp(-1.0 / tau)
    kernel = a * (1.0 - a) ** np.arange(int(math.ceil(8 * tau)) + 1)
    return kernel / kernel.sum()


def _ema(x: np.ndarray, tau: float) -> np.ndarray:
    """Causal first-order low-pass (time constant ``tau`` minutes), starting at rest at x[0]."""
    if tau <= 0:
        return np.asarray(x, np.float64).copy()
    kernel = _exp_kernel(tau)
    padded = np.concatenate([np.full(len(kernel) - 1, x[0]), x])
    return np.convolve(padded, kernel, mode="valid")


def _ar1(rng: np.random.Generator, n: int, tau: float) -> np.ndarray:
    """Unit-variance red noise with correlation time ``tau`` minutes."""
    kernel = _exp_kernel(tau)
    white = rng.standard_normal(n + len(kernel) - 1)
    return np.convolve(white, kernel, mode="valid") / np.sqrt(np.sum(kernel**2))


# ------------------------------------------------------------------------------- subject / sleep


@functools.lru_cache(maxsize=4096)
def subject_profile(seed: int, subject_index: int) -> SubjectProfile:
    """The fixed traits of subject ``subject_index`` under ``seed``.

    Args:
        seed: dataset seed (non-negative).
        subject_index: non-negative subject number.
    """
    seed = _check_seed(seed)
    if isinstance(subject_index, bool) or not isinstance(subject_index, (int, np.integer)) or subject_index < 0:
        raise ValueError(f"subject_index must be a non-negative integer, got {subject_index!r}")
    rng = _rng(seed, _TAG_SUBJECT, subject_index)
    age = rng.uniform(20, 68)
    fitness = rng.beta(2.0, 2.0)
    resting_hr = float(np.clip(rng.normal(64, 6) - 12 * (fitness - 0.5), 44, 86))
    max_hr = float(208 - 0.7 * age + rng.normal(0, 4))
    hrv_base = float(np.clip(78 - 0.8 * (age - 20) + 25 * (fitness - 0.5) + rng.normal(0, 8), 15, 130))
    preferred = rng.dirichlet(np.full(len(ACTIVITIES), 0.6))
    # Mix with uniform so every subject does every sport sometimes: held-out subjects still show all labels.
    activity_probs = 0.55 * preferred + 0.45 / len(ACTIVITIES)
    altitude = rng.uniform(0, 300) if rng.random() < 0.8 else rng.uniform(800, 1800)
    return SubjectProfile(
        subject_index=int(subject_index), age=float(age), fitness=float(fitness), resting_hr=resting_hr,
        max_hr=max_hr, hrv_base=hrv_base, chronotype_min=float(rng.normal(0, 40)),
        sleep_need_h=float(np.clip(rng.normal(7.4, 0.5), 6.2, 8.8)),
        skin_temp_base=float(rng.normal(33.3, 0.4)), eda_base=float(rng.lognormal(math.log(2.0), 0.5)),
        weight_kg=float(np.clip(rng.normal(74, 12), 45, 130)),
        stride_m=float(np.clip(rng.normal(0.74, 0.05), 0.6, 0.9)),
        home_altitude_m=float(altitude), stress_base=float(rng.beta(2, 4)),
        morning_workout_prob=float(rng.beta(2, 2)), charging_prob=float(rng.uniform(0.2, 0.6)),
        activity_probs=tuple(float(p) for p in activity_probs / activity_probs.sum()),
    )


def _schedule(seed: int, profile: SubjectProfile, day: int) -> tuple[int, int]:
    """(wake minute, bedtime minute) of ``day``; bedtime may exceed 1440 (after midnight)."""
    rng = _rng(seed, _TAG_SCHEDULE, profile.subject_index, day + _DAY_OFFSET)
    weekend = day % 7 >= 5
    next_weekend = (day + 1) % 7 >= 5
    wake = 405 + profile.chronotype_min + (55 if weekend else 0) + rng.normal(0, 20)
    # Bedtime is set by the sleep need before the next (nominal) wake-up.
    bed = 1440 + 405 + profile.chronotype_min + (55 if next_weekend else 0) - 60 * profile.sleep_need_h - 12
    bed += rng.normal(0, 30)
    return int(np.clip(round(wake), 270, 660)), int(np.clip(round(bed), 1230, 1560))


def sleep_night(seed: int, profile: SubjectProfile, night: int) -> SleepNight:
    """The hypnogram of the night ending on the morning of day ``night``.

    Args:
        seed: dataset seed.
        profile: the subject.
        night: day index on whose morning the night ends.
    """
    seed, night = _check_seed(seed), _check_day(night)
    onset = _schedule(seed, profile, night - 1)[1] - MINUTES_PER_DAY
    wake = _schedule(seed, profile, night)[0]
    length = wake - onset
    rng = _rng(seed, _TAG_NIGHT, profile.subject_index, night + _DAY_OFFSET)
    stages = np.ones(length, np.int8)
    latency = int(rng.integers(4, 25))
    stages[:latency] = 0
    t, cycle = latency, 0
    while t < length:
        cycle_len = int(np.clip(rng.normal(92, 12), 65, 125))
        # Deep sleep dominates early cycles, REM grows towards morning.
        n_deep = int(round(cycle_len * max(0.0, 0.36 - 0.1 * cycle) * rng.uniform(0.7, 1.2)))
        n_rem = int(round(cycle_len * min(0.1 + 0.08 * cycle, 0.42) * rng.uniform(0.8, 1.2)))
        n_light = max(cycle_len - n_deep - n_rem, 2)
        first = n_light // 2
        seq = np.concatenate([np.full(first, 1), np.full(n_deep, 2), np.full(n_light - first, 1), np.full(n_rem, 3)])
        stages[t:t + len(seq)] = seq[: length - t]
        t += len(seq)
        cycle += 1
    for _ in range(rng.poisson(length / 110)):  # brief awakenings
        pos = int(rng.integers(latency, max(latency + 1, length - 5)))
        stages[pos:pos + int(rng.integers(1, 6))] = 0
    stages[length - int(rng.integers(1, 8)):] = 0  # lying awake before getting up
    return SleepNight(night=night, onset_min=onset, wake_min=wake, stages=stages)


# -------------------------------------------------------------------------------- activities


def _bout_profile(rng: np.random.Generator, label: str, n: int, profile: SubjectProfile) -> dict[str, np.ndarray]:
    """Per-minute signature of an ``n``-minute bout of ``label``."""
    sig = _SIGNATURES[label]
    lo, hi = sig.effort
    level = rng.uniform(lo, hi)
    effort = np.full(n, level)
    moving = np.ones(n)  # fraction of the minute spent moving
    alt = np.zeros(n)
    swim = np.zeros(n)
    bike = np.zeros(n)
    if sig.pattern == "steady":
        effort *= 1.0 + 0.04 * _ar1(rng, n, 5)
        warm = min(5, max(1, n // 4))
        ramp = np.ones(n)
        ramp[:warm] = np.linspace(0.45, 1.0, warm)
        ramp[-3:] = np.minimum(ramp[-3:], np.linspace(0.9, 0.6, min(3, n)))
        effort *= ramp
        moving = ramp
        if label == "cycling":
            coast = rng.random(n) < 0.1
            bike = np.where(coast, rng.uniform(0, 30, n), rng.normal(rng.uniform(76, 92), 5, n))
            effort = np.where(coast, effort * 0.6, effort)
            alt = 35 * np.sin(np.linspace(0, rng.uniform(2, 6) * np.pi, n)) * rng.uniform(0.3, 1.0)
        elif label == "running":
            alt = 10 * np.sin(np.linspace(0, rng.uniform(1, 4) * np.pi, n))
    elif sig.pattern == "intervals":
        work_len, rest_len = int(rng.integers(1, 3)), 1
        cycle = np.arange(n) % (work_len + rest_len) < work_len
        effort = np.where(cycle, hi * rng.uniform(0.93, 1.0), lo + 0.08)
        effort[: min(4, n)] = lo  # warm-up
        moving = np.where(cycle, 1.0, 0.2)
    elif sig.pattern == "sets":
        pieces, total = [], 0
        while total < n:
            work, rest = int(rng.integers(1, 3)), int(rng.integers(1, 4))
            pieces += [np.full(work, rng.uniform(0.5, hi)), np.full(rest, lo)]
            total += work + rest
        effort = np.concatenate(pieces)[:n]
        moving = np.where(effort > lo, 1.0, 0.3)
    elif sig.pattern == "laps":
        moving = np.where(rng.random(n) < 0.8, 1.0, rng.uniform(0.3, 0.6, n))
        effort = level * (0.8 + 0.2 * moving)
        swim = rng.uniform(24, 34) * moving + rng.normal(0, 1.5, n)
    elif sig.pattern == "climb":
        gain = rng.uniform(250, 900)
        top = max(1, int(n * rng.uniform(0.45, 0.6)))
        alt = np.concatenate([np.linspace(0, gain, top), np.linspace(gain, 0, n - top)])[:n]
        slope = np.gradient(alt) / max(gain / top, 1e-6)  # +1 climbing, about -1 descending
        effort = level + 0.22 * np.clip(slope, -0.4, 1.0) + 0.03 * _ar1(rng, n, 5)
        moving = np.clip(1.0 - 0.1 * np.clip(slope, 0, 1), 0, 1)
    elif sig.pattern == "flow":
        flows = rng.random(n) < 0.12  # sun salutations
        effort = level + 0.12 * flows + 0.02 * _ar1(rng, n, 4)
        moving = 0.3 + 0.5 * flows
    else:  # unreachable: patterns are fixed above
        raise ValueError(f"unknown activity pattern {sig.pattern!r}")
    effort = np.clip(effort, 0.05, 1.0)
    s_lo, s_hi = sig.steps
    if label == "running":  # fitter runners have a higher cadence
        s_lo, s_hi = s_lo + 8 * profile.fitness, s_hi + 5 * profile.fitness
    steps = rng.uniform(s_lo, s_hi) * moving + (rng.normal(0, 3, n) if s_hi > 20 else 0.0)
    if label == "strength_training":
        steps = np.where(moving < 1, rng.uniform(0, 15, n), rng.uniform(0, 8, n))
    if label == "hiit":
        steps = np.where(moving >= 1, steps, rng.uniform(0, 12, n))
    ratio = effort / max(level, 1e-3)
    return {
        "effort": effort,
        "steps": np.clip(steps, 0, None),
        "speed": sig.speed * moving * (0.85 + 0.3 * profile.fitness) * (1 if sig.speed else 0),
        "accel_dyn": sig.accel_dyn * (0.6 + 0.4 * np.clip(ratio, 0, 1.5)) * rng.lognormal(0, 0.1, n),
        "accel_std": sig.accel_std * (0.6 + 0.4 * np.clip(ratio, 0, 1.5)) * rng.lognormal(0, 0.1, n),
        "gyro": sig.gyro * (0.7 + 0.3 * moving) * rng.lognormal(0, 0.12, n),
        "swim": np.clip(swim, 0, None),
        "bike": np.clip(bike, 0, None),
        "alt": alt,
    }


def _place_bouts(rng, wake: int, awake_end: int, profile: SubjectProfile, day: int) -> tuple[str, list[dict]]:
    """Choose the main workout and incidental walks: (primary label, sorted bouts)."""
    label = ACTIVITIES[int(rng.choice(len(ACTIVITIES), p=np.asarray(profile.activity_probs)))]
    sig = _SIGNATURES[label]
    duration = int(rng.integers(sig.duration[0], sig.duration[1] + 1))
    u = rng.random()
    if label == "hiking":
        start = int(rng.integers(480, 660))
    elif u < profile.morning_workout_prob:
        start = wake + int(rng.integers(20, 100))
    elif u < profile.morning_workout_prob + 0.15:
        start = int(rng.integers(690, 780))
    else:
        start = int(rng.integers(1000, 1170))
    lo, hi = wake + 15, awake_end - 45 - duration
    if hi < lo:
        duration = max(15, awake_end - 45 - lo)
        hi = lo
    start = int(np.clip(start, lo, hi))
    bouts = [{"label": label, "start_min": start, "end_min": start + duration}]

    weekday = day % 7 < 5
    candidates = [
        (weekday and rng.random() < 0.65, int(rng.integers(470, 540)), int(rng.integers(8, 21))),  # commute
        (rng.random() < 0.5, int(rng.integers(720, 800)), int(rng.integers(6, 21))),  # lunch
        (weekday and rng.random() < 0.6, int(rng.integers(1010, 1100)), int(rng.integers(8, 21))),  # commute home
        (rng.random() < 0.3, int(rng.integers(1140, 1260)), int(rng.integers(10, 26))),  # evening stroll
    ]
    for keep, s, d in candidates:
        e = s + d
        if not keep or s < wake + 5 or e > awake_end - 10:
            continue
        if any(s < b["end_min"] + 10 and e > b["start_min"] - 10 for b in bouts):
            continue
        bouts.append({"label": _INCIDENTAL_WALK, "start_min": s, "end_min": e})
    bouts.sort(key=lambda b: b["start_min"])
    return label, bouts


def _place_off_wrist(rng, occupied: np.ndarray, wake: int, awake_end: int, profile: SubjectProfile,
                     workout_end: int) -> list[dict]:
    """Off-wrist gaps (forgot the watch, shower, charging) in free awake time."""
    gaps: list[dict] = []

    def try_add(start: int, length: int) -> None:
        end = start + length
        if start < wake or end > awake_end or occupied[start:end].any():
            return
        gaps.append({"start_min": int(start), "end_min": int(end)})
        occupied[max(0, start - 2):end + 2] = True

    forgot, forgot_len = rng.random() < 0.06, int(rng.integers(30, 150))
    shower, shower_delay, shower_len = rng.random() < 0.6, int(rng.integers(5, 40)), int(rng.integers(8, 20))
    charge = rng.random() < profile.charging_prob
    charge_tries = [(int(rng.integers(wake, max(wake + 1, awake_end - 100))), int(rng.integers(25, 100)))
                    for _ in range(8)]
    if forgot:
        try_add(wake, forgot_len)
    if shower:
        try_add(workout_end + shower_delay, shower_len)
    if charge:
        for start, length in charge_tries:
            before = len(gaps)
            try_add(start, length)
            if len(gaps) > before:
                break
    gaps.sort(key=lambda g: g["start_min"])
    return gaps


# --------------------------------------------------------------------------------- simulation


@dataclass
class _MinuteDay:
    values: np.ndarray  # float32 (1440, 34), 0 where missing
    missing: np.ndarray  # bool (1440,)
    primary: str
    activities: list[dict]
    off_wrist: list[dict]
    sleep: list[dict]
    night: SleepNight


def _simulate_minutes(seed: int, profile: SubjectProfile, day: int) -> _MinuteDay:
    T = MINUTES_PER_DAY
    minute = np.arange(T)
    rng = _rng(seed, _TAG_DAY, profile.subject_index, day + _DAY_OFFSET)

    # --- sleep: morning part of last night, evening part of the coming night
    night = sleep_night(seed, profile, day)
    coming = sleep_night(seed, profile, day + 1)
    stage = np.full(T, -1, np.int8)  # -1 = up and about
    progress = np.zeros(T)  # fraction of the night elapsed (HR falls through the night)
    a0 = max(night.onset_min, 0)
    stage[a0:night.wake_min] = night.stages[a0 - night.onset_min:]
    progress[a0:night.wake_min] = (np.arange(a0, night.wake_min) - night.onset_min) / len(night.stages)
    bed = coming.onset_min + T
    if bed < T:
        stage[bed:] = coming.stages[: T - bed]
        progress[bed:] = (np.arange(bed, T) - bed) / len(coming.stages)
    sleep_spans = [{"start_min": int(a0), "end_min": int(night.wake_min)}]
    if bed < T:
        sleep_spans.append({"start_min": int(bed), "end_min": T})
    in_bed = stage >= 0
    awake = ~in_bed
    wake, awake_end = night.wake_min, min(bed, T)

    # --- activities and off-wrist gaps
    primary, bouts = _place_bouts(rng, wake, awake_end, profile, day)
    workout = max((b for b in bouts if b["label"] == primary), key=lambda b: b["end_min"] - b["start_min"])
    occupied = in_bed.copy()
    for b in bouts:
        occupied[max(0, b["start_min"] - 3):b["end_min"] + 3] = True
    gaps = _place_off_wrist(rng, occupied, wake, awake_end, profile, workout["end_min"])
    missing = np.zeros(T, bool)
    for g in gaps:
        missing[g["start_min"]:g["end_min"]] = True

    # --- baseline day: light fidgeting and short unlogged moves between bouts
    effort = np.where(awake, np.clip(0.07 + 0.03 * _ar1(rng, T, 20), 0.0, 0.16), 0.0)
    steps = np.where(awake & (rng.random(T) < 0.3), rng.poisson(2.0, T), 0).astype(np.float64)
    accel_dyn = np.where(awake, 0.02 + 0.01 * np.abs(_ar1(rng, T, 10)), 0.003)
    accel_std = np.where(awake, 0.04 + 0.015 * np.abs(_ar1(rng, T, 10)), 0.005)
    gyro = np.where(awake, 8 * rng.lognormal(0, 0.3, T), 1.0 * rng.lognormal(0, 0.3, T))
    micro = awake & (rng.random(T) < 0.04)
    micro |= np.roll(micro, 1) & (rng.random(T) < 0.5) & awake
    effort = np.where(micro, 0.2, effort)
    steps = np.where(micro, rng.uniform(40, 100, T), steps)
    accel_dyn = np.where(micro, 0.08, accel_dyn)
    accel_std = np.where(micro, 0.18, accel_std)
    gyro = np.where(micro, 45.0, gyro)
    speed = np.zeros(T)
    swim = np.zeros(T)
    bike = np.zeros(T)
    alt_delta = np.zeros(T)
    outdoor = np.zeros(T, bool)
    water = np.zeros(T, bool)
    hrv_factor = np.ones(T)
    in_bout = np.zeros(T, bool)
    drift = np.zeros(T)  # cardiac drift: HR creeps up over a long steady effort
    orientation_override = np.full((T, 3), np.nan)
    for b in bouts:
        s, e, label = b["start_min"], b["end_min"], b["label"]
        sig = _SIGNATURES[label]
        p = _bout_profile(rng, label, e - s, profile)
        if b is not workout:  # incidental walks are easy strolls
            p["effort"] = np.clip(p["effort"] * 0.85, 0.05, 1.0)
        effort[s:e], steps[s:e], speed[s:e] = p["effort"], p["steps"], p["speed"]
        accel_dyn[s:e], accel_std[s:e], gyro[s:e] = p["accel_dyn"], p["accel_std"], p["gyro"]
        swim[s:e], bike[s:e], alt_delta[s:e] = p["swim"], p["bike"], p["alt"]
        outdoor[s:e] = sig.outdoor
        water[s:e] = label == "swimming"
        hrv_factor[s:e] = sig.hrv_factor
        in_bout[s:e] = True
        drift[s:e] = 0.05 * np.arange(e - s) * p["effort"]
        orientation_override[s:e] = np.asarray(sig.orientation) + rng.normal(0, 0.1, (e - s, 3))

    # --- heart rate: effort moves HR across the reserve; fit people need less of it
    day_rhr = profile.resting_hr + rng.normal(0, 1.2)
    stress = np.where(awake, profile.stress_base + 0.12 * _ar1(rng, T, 60), 0.0)
    if day % 7 < 5:
        stress += np.where(awake & (minute >= 540) & (minute < 1020), 0.2, 0.0)
    for _ in range(rng.poisson(1.5)):  # stressful episodes
        s = int(rng.integers(wake, max(wake + 1, awake_end - 30)))
        stress[s:s + int(rng.integers(20, 60))] += 0.35
    stress = np.clip(np.where(in_bout | in_bed, 0.0, stress), 0.0, 1.0)
    fit_scale = 1.15 - 0.3 * profile.fitness
    hr_effort = np.clip(effort * fit_scale, 0.0, 0.97)
    hr_reserve = profile.max_hr - day_rhr
    circadian = 3.0 * np.sin(2 * np.pi * (minute - 660) / T)
    stage_offset = np.array([3.0, -4.0, -8.0, -1.5])[np.clip(stage, 0, 3)]
    sleep_hr = day_rhr + stage_offset - 3.0 * progress
    awake_hr = day_rhr + 3.0 + circadian + hr_effort * hr_reserve + 6.0 * stress
    target_hr = np.where(in_bed, sleep_hr, awake_hr)
    # Fast rise and a slow tail in recovery, plus cardiac drift during long efforts.
    hr = 0.7 * _ema(target_hr, 1.0) + 0.3 * _ema(target_hr, 8.0)
    hr += drift
    hr += np.where(in_bed, 0.8, 1.5) * _ar1(rng, T, 3) + rng.normal(0, 0.8, T)
    hr += np.where(water, rng.normal(0, 4.0, T), 0.0)  # optical HR is poor under water
    hr = np.clip(hr, 35, 215)

    # --- heart-rate variability, respiration, SpO2
    stage_hrv = np.array([1.0, 1.15, 1.4, 0.95])[np.clip(stage, 0, 3)]
    hrv = profile.hrv_base * np.exp(-2.4 * hr_effort) * np.where(in_bed, stage_hrv, 1.0) * hrv_factor
    hrv *= np.exp(-0.35 * stress) * np.exp(0.12 * _ar1(rng, T, 5))
    resp_sleep = (np.array([15.0, 14.0, 13.0, 15.5])[np.clip(stage, 0, 3)]
                  + np.where(stage == 3, 1.5, 0.6) * rng.standard_normal(T))
    respiration = np.where(in_bed, resp_sleep, 15.0 + 24.0 * hr_effort + 0.8 * rng.standard_normal(T))
    altitude = profile.home_altitude_m + alt_delta + 3.0 * _ar1(rng, T, 120)
    spo2 = np.where(in_bed, 96.0 + 0.7 * rng.standard_normal(T), 97.6 + 0.5 * rng.standard_normal(T))
    spo2 -= np.where((stage == 3) & (rng.random(T) < 0.05), rng.uniform(1, 4, T), 0.0)
    spo2 -= 0.0015 * np.clip(altitude - 1000, 0, None)
    spo2 += np.where(water, rng.normal(0, 1.5, T), 0.0)
    spo2 = np.clip(spo2, 85, 100)

    # --- energy expenditure
    met = np.where(in_bed, 0.95, 1.0 + 11.0 * effort**1.2)
    calories = met * 3.5 * profile.weight_kg / 200.0

    # --- temperatures and light
    season = np.sin(2 * np.pi * (day % 365 - 100) / 365.0)
    outdoor_temp = 13 + 9 * season + rng.normal(0, 3) + 4 * np.sin(2 * np.pi * (minute - 540) / T)
    indoor_temp = 21.5 + rng.normal(0, 0.7)
    ambient_target = np.where(in_bed, indoor_temp - 2.0, indoor_temp)
    ambient_target = np.where(outdoor, outdoor_temp, ambient_target)
    ambient_target = np.where(water, 28.0, ambient_target)
    ambient = _ema(ambient_target, 6.0) + 0.2 * rng.standard_normal(T)
    sweat = _ema(np.clip(effort - 0.2, 0, None), 15.0)
    skin_target = (profile.skin_temp_base + 0.9 * in_bed + 0.12 * (ambient - 22.0)
                   - 0.6 * _ema(effort, 3.0) + 1.6 * sweat)
    skin_target = np.where(water, 0.5 * skin_target + 0.5 * 28.0, skin_target)
    skin_temp = _ema(skin_target, 10.0) + 0.08 * rng.standard_normal(T)
    sunset = 1170 + 75 * season
    daylight = (minute > 360 - 60 * season) & (minute < sunset)
    light = np.where(in_bed, 0.05, np.where(minute > sunset, 1.9, 2.4))
    light = np.where(outdoor, np.where(daylight, rng.uniform(3.6, 4.5), 1.0), light)
    light = np.where(water, 2.8, light)
    light = np.clip(light + 0.15 * rng.standard_normal(T) * awake, 0, 5)

    # --- electrodermal activity: sweat, stress, and the "storms" of deep sleep
    storms = (stage == 2) & (rng.random(T) < 0.25)
    eda = profile.eda_base * np.exp(1.2 * np.clip(sweat, 0, 1) + 0.5 * stress + 0.8 * _ema(storms.astype(float), 5.0))
    eda *= np.exp(0.08 * _ar1(rng, T, 10))
    eda = np.where(water, 0.2 + 0.05 * rng.random(T), eda)
    eda_peaks = rng.poisson(0.3 + 3.0 * sweat + 2.0 * stress + 3.0 * storms).astype(np.float64)

    # --- motion: gravity orientation changes with posture, bouts have their own arm position
    change = rng.random(T) < np.where(awake, 1 / 8, 1 / 45)
    segment = np.cumsum(change)
    directions = rng.normal(0, 1, (segment[-1] + 1, 3)) + np.array([0.0, 0.0, -1.2])
    orient = directions[segment]
    orient = np.where(np.isnan(orientation_override), orient, orientation_override)
    orient /= np.linalg.norm(orient, axis=1, keepdims=True)
    accel_std = np.where(in_bed & change, 0.05, accel_std)
    gyro = np.where(in_bed & change, 20.0, gyro)
    accel_xyz = orient * (1.0 + accel_dyn)[:, None] * 0.98 + 0.02 * rng.standard_normal((T, 3))
    accel_mag = 1.0 + accel_dyn + 0.005 * rng.standard_normal(T)

    # --- device scores
    hr_pct = hr / profile.max_hr
    zone = np.digitize(hr_pct, [0.5, 0.6, 0.7, 0.8, 0.9]).astype(np.float64)
    intensity = np.where(hr_pct >= 0.77, 2.0, np.where(hr_pct >= 0.64, 1.0, 0.0))
    stress_score = np.where(
        in_bout, 0.0,
        np.where(in_bed, 6.0 + 10.0 * (stage == 0) + 2.0 * rng.random(T),
                 100 * (0.12 + 0.45 * stress + 0.35 * np.clip(1 - hrv / profile.hrv_base, 0, 1))))
    stress_score = np.clip(stress_score + np.where(in_bout, 0, 2.0 * rng.standard_normal(T)), 0, 100)
    charge = np.array([0.05, 0.12, 0.25, 0.08])[np.clip(stage, 0, 3)]
    drain = 0.022 + 0.25 * effort + 0.04 * stress
    energy = np.clip(rng.uniform(15, 35) + np.cumsum(np.where(in_bed, charge, -drain)), 5, 100)
    ppg = np.clip(0.97 - 0.55 * accel_std - 0.35 * water + 0.03 * rng.standard_normal(T), 0.05, 1.0)
    resting_est = day_rhr + 0.2 * rng.standard_normal(T)

    # --- sleep stager output: soft probabilities whose argmax is the true stage
    probs = np.zeros((T, 4))
    codes = np.where(in_bed, stage, 0).astype(int)
    confidence = np.where(in_bed, 0.55 + 0.4 * rng.random(T), 0.97 + 0.03 * rng.random(T))
    rest = rng.dirichlet(np.ones(4), T) * (1.0 - confidence)[:, None]
    probs[:] = rest
    probs[minute, codes] += confidence

    distance = steps * profile.stride_m * np.where(effort > 0.6, 1.5, 1.0) + speed
    elevation_gain = np.clip(np.diff(alt_delta, prepend=alt_delta[0]), 0, None)

    columns = {
        "heart_rate": hr, "hrv_rmssd": hrv, "resting_hr_estimate": resting_est, "steps": steps,
        "distance": distance, "accel_x": accel_xyz[:, 0], "accel_y": accel_xyz[:, 1], "accel_z": accel_xyz[:, 2],
        "accel_magnitude_mean": accel_mag, "accel_magnitude_std": accel_std, "gyro_magnitude": gyro,
        "skin_temperature": skin_temp, "ambient_temperature": ambient, "eda_tonic": eda,
        "eda_phasic_peaks": eda_peaks, "spo2": spo2, "respiration_rate": respiration, "calories": calories,
        "met": met, "altitude": altitude, "elevation_gain": elevation_gain, "swim_strokes": swim,
        "cycling_cadence": bike, "stress_score": stress_score, "energy_score": energy,
        "sleep_prob_awake": probs[:, 0], "sleep_prob_light": probs[:, 1], "sleep_prob_deep": probs[:, 2],
        "sleep_prob_rem": probs[:, 3], "on_wrist": np.ones(T), "light_exposure": light, "hr_zone": zone,
        "intensity_minutes": intensity, "ppg_signal_quality": ppg,
    }
    values = np.stack([columns[name] for name in CHANNEL_NAMES], axis=1).astype(np.float32)
    values[missing] = 0.0
    return _MinuteDay(values=values, missing=missing, primary=primary, activities=bouts,
                      off_wrist=gaps, sleep=sleep_spans, night=night)


# ------------------------------------------------------------------------------ public API


def resample(values: np.ndarray, missing: np.ndarray, resolution_min: int) -> tuple[np.ndarray, np.ndarray]:
    """Average one-minute data into ``resolution_min``-minute bins, using observed minutes only.

    A bin is missing when all of its minutes are; its values are then 0. The ``on_wrist`` channel
    becomes the fraction of observed minutes in the bin.

    Args:
        values: (1440, C) minute values.
        missing: (1440,) bool.
        resolution_min: bin width in minutes, a divisor of 1440.
    """
    values = np.asarray(values)
    missing = np.asarray(missing, bool)
    if values.ndim != 2 or values.shape[0] != MINUTES_PER_DAY:
        raise ValueError(f"values must have shape (1440, C), got {values.shape}")
    if missing.shape != (MINUTES_PER_DAY,):
        raise ValueError(f"missing must have shape (1440,), got {missing.shape}")
    if isinstance(resolution_min, bool) or not isinstance(resolution_min, (int, np.integer)) \
            or resolution_min < 1 or MINUTES_PER_DAY % resolution_min:
        raise ValueError(f"resolution_min must be a positive divisor of 1440, got {resolution_min!r}")
    if resolution_min == 1:
        return values.astype(np.float32, copy=True), missing.copy()
    n = MINUTES_PER_DAY // resolution_min
    observed = (~missing).reshape(n, resolution_min).astype(np.float64)
    count = observed.sum(axis=1)
    sums = (values.astype(np.float64).reshape(n, resolution_min, -1) * observed[:, :, None]).sum(axis=1)
    out = np.where(count[:, None] > 0, sums / np.maximum(count, 1)[:, None], 0.0)
    if values.shape[1] == NUM_CHANNELS:
        out[:, CHANNEL_INDEX["on_wrist"]] = count / resolution_min
    return out.astype(np.float32), count == 0


@functools.lru_cache(maxsize=64)
def _val_subjects(seed: int, num_subjects: int, num_val: int) -> frozenset[int]:
    order = _rng(seed, _TAG_SPLIT, num_subjects).permutation(num_subjects)
    return frozenset(int(i) for i in order[:num_val])


def subject_split(size: str | WearableSize, seed: int, subject_index: int) -> str:
    """"train" or "val" for a subject: a seeded permutation of subjects, the first ones held out.

    Args:
        size: size name or `WearableSize` (sets the subject count and val fraction).
        seed: dataset seed.
        subject_index: subject number in [0, num_subjects).
    """
    size = get_wearable_size(size)
    seed = _check_seed(seed)
    if not 0 <= subject_index < size.num_subjects:
        raise ValueError(f"subject_index must be in [0, {size.num_subjects}), got {subject_index!r}")
    val = _val_subjects(seed, size.num_subjects, size.num_val_subjects)
    return "val" if subject_index in val else "train"


def generate_day(size: str | WearableSize, seed: int, subject_index: int, day: int) -> WearableDay:
    """Generate one subject-day alone (deterministic in (seed, subject_index, day)).

    Args:
        size: size name or `WearableSize` (resolution and split come from it).
        seed: dataset seed (non-negative).
        subject_index: subject number in [0, size.num_subjects).
        day: day index (any integer; the size's days are 0..days_per_subject-1).
    """
    size = get_wearable_size(size)
    seed, day = _check_seed(seed), _check_day(day)
    split = subject_split(size, seed, subject_index)
    profile = subject_profile(seed, subject_index)
    sim = _simulate_minutes(seed, profile, day)
    caption = make_caption(sim.values, sim.missing, sim.activities, sim.primary, night=sim.night,
                           rng=_rng(seed, _TAG_CAPTION, subject_index, day + _DAY_OFFSET))
    values, missing = resample(sim.values, sim.missing, size.resolution_min)
    return WearableDay(
        subject_id=subject_id(subject_index), day=day, values=values, missing=missing,
        activities=sim.activities, primary_activity=sim.primary, sleep=sim.sleep, caption=caption.text,
        split=split, captions=caption.levels(), off_wrist=sim.off_wrist, resolution_min=size.resolution_min,
        subject_index=int(subject_index), night=sim.night, facts=caption.facts,
    )


def generate_wearable(
    size: str | WearableSize = "tiny",
    seed: int = 0,
    split: str | None = None,
    *,
    num_subjects: int | None = None,
    days_per_subject: int | None = None,
    resolution_min: int | None = None,
    val_fraction: float | None = None,
    subjects: Sequence[int] | None = None,
) -> Iterator[WearableDay]:
    """Yield SYNTHETIC subject-days, subject by subject, day by day.

    Args:
        size: size name ("tiny", "small", "paper") or a `WearableSize`.
        seed: dataset seed (non-negative); same seed, same data.
        split: "train", "val", or None for both.
        num_subjects, days_per_subject, resolution_min, val_fraction: override the size's fields.
        subjects: only these subject indices (e.g. one worker's share); default all.
    """
    size = get_wearable_size(size, num_subjects=num_subjects, days_per_subject=days_per_subject,
                                 resolution_min=resolution_min, val_fraction=val_fraction)
    seed = _check_seed(seed)
    if split not in (None, "train", "val"):
        raise ValueError(f"split must be 'train', 'val' or None, got {split!r}")
    indices = range(size.num_subjects) if subjects is None else list(subjects)
    for s in indices:
        if isinstance(s, bool) or not isinstance(s, (int, np.integer)) or not 0 <= s < size.num_subjects:
            raise ValueError(f"subjects: {s!r} is not a subject index in [0, {size.num_subjects})")
    for s in indices:
        if split is not None and subject_split(size, seed, s) != split:
            continue
        for day in range(size.days_per_subject):
            yield generate_day(size, seed, int(s), day)
