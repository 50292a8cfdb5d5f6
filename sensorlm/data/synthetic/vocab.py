"""The synthetic generator's vocabulary: its 34 channels, its 10 activities and the words captions
use for them, and the sleep nights it simulates. Shared by the generator (`synthetic.wearable`)
and its captions (`synthetic.captions`); nothing outside the demo data depends on it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MINUTES_PER_DAY = 1440


@dataclass(frozen=True)
class Channel:
    """One sensor channel: name, unit, and what it measures."""

    name: str
    unit: str
    description: str


CHANNELS: list[Channel] = [
    Channel("heart_rate", "bpm", "optical heart rate"),
    Channel("hrv_rmssd", "ms", "heart-rate variability, RMSSD of beat intervals"),
    Channel("resting_hr_estimate", "bpm", "device's running estimate of resting heart rate"),
    Channel("steps", "steps/min", "step count"),
    Channel("distance", "m/min", "distance covered (steps x stride, or GPS/pool/erg for wheeled and water sports)"),
    Channel("accel_x", "g", "mean acceleration along the watch x axis (gravity orientation)"),
    Channel("accel_y", "g", "mean acceleration along the watch y axis (gravity orientation)"),
    Channel("accel_z", "g", "mean acceleration along the watch z axis (gravity orientation)"),
    Channel("accel_magnitude_mean", "g", "mean acceleration magnitude"),
    Channel("accel_magnitude_std", "g", "standard deviation of acceleration magnitude"),
    Channel("gyro_magnitude", "deg/s", "mean angular speed"),
    Channel("skin_temperature", "degC", "wrist skin temperature"),
    Channel("ambient_temperature", "degC", "temperature next to the device"),
    Channel("eda_tonic", "uS", "skin conductance level (tonic electrodermal activity)"),
    Channel("eda_phasic_peaks", "peaks/min", "skin conductance responses (phasic electrodermal activity)"),
    Channel("spo2", "%", "blood oxygen saturation"),
    Channel("respiration_rate", "breaths/min", "breathing rate"),
    Channel("calories", "kcal/min", "energy expenditure"),
    Channel("met", "MET", "metabolic equivalent of task"),
    Channel("altitude", "m", "barometric altitude"),
    Channel("elevation_gain", "m/min", "ascent"),
    Channel("swim_strokes", "strokes/min", "swimming stroke count"),
    Channel("cycling_cadence", "rpm", "pedalling cadence"),
    Channel("stress_score", "0-100", "stress score from heart-rate variability (0 during workouts)"),
    Channel("energy_score", "0-100", "body energy reserve: charges in sleep, drains with activity and stress"),
    Channel("sleep_prob_awake", "probability", "sleep stager: awake"),
    Channel("sleep_prob_light", "probability", "sleep stager: light sleep"),
    Channel("sleep_prob_deep", "probability", "sleep stager: deep sleep"),
    Channel("sleep_prob_rem", "probability", "sleep stager: REM sleep"),
    Channel("on_wrist", "fraction", "fraction of the interval the device was worn"),
    Channel("light_exposure", "log10 lux", "ambient light"),
    Channel("hr_zone", "0-5", "heart-rate zone from percent of maximum heart rate"),
    Channel("intensity_minutes", "min/min", "moderate (1) or vigorous (2) intensity credit"),
    Channel("ppg_signal_quality", "0-1", "optical heart-rate signal quality"),
]
CHANNEL_NAMES: list[str] = [c.name for c in CHANNELS]
CHANNEL_INDEX: dict[str, int] = {c.name: i for i, c in enumerate(CHANNELS)}
NUM_CHANNELS = len(CHANNELS)
assert NUM_CHANNELS == 34, NUM_CHANNELS

# The day's main workout; a day's label is its index here.
ACTIVITIES: list[str] = [
    "walking", "running", "cycling", "swimming", "strength_training",
    "yoga", "hiking", "elliptical", "rowing", "hiit",
]
# Words used for an activity in captions; zero-shot prompts should use the same words.
ACTIVITY_PHRASES: dict[str, str] = {
    "walking": "walking", "running": "running", "cycling": "cycling", "swimming": "swimming",
    "strength_training": "strength training", "yoga": "yoga", "hiking": "hiking",
    "elliptical": "elliptical", "rowing": "rowing", "hiit": "hiit",
}
ACTIVITY_NOUNS: dict[str, str] = {
    "walking": "walk", "running": "run", "cycling": "ride", "swimming": "swim",
    "strength_training": "strength session", "yoga": "yoga session", "hiking": "hike",
    "elliptical": "elliptical session", "rowing": "rowing session", "hiit": "hiit session",
}
SLEEP_STAGES = ("awake", "light", "deep", "rem")  # codes 0..3, same order as the sleep_prob_* channels


@dataclass(frozen=True)
class SleepNight:
    """The night that ends on the morning of day ``night``.

    ``onset_min`` and ``wake_min`` are minutes since midnight of that day (onset is negative when
    bedtime was the previous evening). ``stages`` holds one code per minute in bed (0 awake,
    1 light, 2 deep, 3 rem; see `SLEEP_STAGES`).
    """

    night: int
    onset_min: int
    wake_min: int
    stages: np.ndarray

    @property
    def asleep_minutes(self) -> int:
        return int(np.count_nonzero(self.stages > 0))

    @property
    def sleep_hours(self) -> float:
        return self.asleep_minutes / 60.0

    def stage_minutes(self, stage: str) -> int:
        return int(np.count_nonzero(self.stages == SLEEP_STAGES.index(stage)))
