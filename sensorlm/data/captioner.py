"""Captions for any channel set, computed from the window of data they describe.

SensorLM's idea: captions come from the recordings, at three levels, for whatever a device
measures. This module knows channels only by the *kind* a channel spec declares (`CHANNEL_KINDS`),
never by a fixed channel list:

* low (statistical)    -- per channel: mean, min and max with clock times, spread (SD), in units;
                          counts as totals;
* middle (structural)  -- trends from windowed linear fits, the most prominent peak and valley,
                          gaps, the most and least active hours;
* high (semantic)      -- the window's main label (worded by the zero-shot prompt template, so
                          prompts and captions share words), the label intervals, sleep periods
                          (``sleep`` channels), resting and elevated heart rate (``heart_rate``).

The levels are kept apart (`CaptionLevels`); `compose` joins them into one of the eight caption
keys (`CAPTION_KEYS`) that training samples per sample, as the SensorLM reference does. Every
number a caption states is also in the returned facts, so tests can recompute it from the array.
"""

from __future__ import annotations

import re
import string
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

DEFAULT_PROMPT_TEMPLATE = "A day with {label}."

# kind -> resampling aggregation (rates and levels are averaged, counts summed)
CHANNEL_KINDS: dict[str, str] = {
    "heart_rate": "mean",
    "count": "sum",  # steps, activity counts
    "accel": "mean",  # acceleration magnitude, movement intensity
    "temperature": "mean",
    "light": "mean",
    "spo2": "mean",
    "respiration": "mean",
    "sleep": "mean",  # 1 = asleep (a sleep flag or probability)
    "state": "mean",  # device state, wear flag
    "level": "mean",  # anything else measured as a level
}
def infer_kind(name: str, unit: str = "") -> str:
    """A channel kind from a column's name and unit (``heart_rate[bpm]`` -> ``heart_rate``)."""
    n, u = name.lower(), unit.lower()
    rules = (
        ("heart_rate", ("heart", "hr", "pulse"), ("bpm",)),
        ("spo2", ("spo2", "oxygen", "sao2"), ()),
        ("sleep", ("sleep",), ()),
        ("count", ("step", "count"), ("count", "counts", "steps")),
        ("accel", ("acc", "enmo", "movement", "motion"), ("g", "mg")),
        ("temperature", ("temp",), ("degc", "°c", "c", "degf", "°f")),
        ("light", ("light", "lux"), ("lux", "lx")),
        ("respiration", ("resp", "breath"), ()),
        ("state", ("state", "wear", "wrist"), ()),
    )
    tokens = set(re.split(r"[^a-z0-9]+", n))
    for kind, words, units in rules:
        if any(w in tokens or (len(w) > 3 and w in n) for w in words) or (u and u in units):
            return kind
    return "level"


ACTIVITY_KINDS = ("count", "accel")  # the most/least active hours use the first of these
TREND_KINDS = ("heart_rate", "count", "accel", "temperature", "spo2", "respiration", "light", "level")

# the eight caption keys: the levels alone and their combinations, most abstract first
CAPTION_KEYS: dict[str, tuple[str, ...]] = {
    "low": ("low",),
    "middle": ("middle",),
    "high_summary": ("high_summary",),
    "high_all": ("high_all",),
    "low_middle": ("middle", "low"),
    "high_low": ("high_all", "low"),
    "high_middle": ("high_all", "middle"),
    "all": ("high_all", "middle", "low"),
}
LEVELS = ("low", "middle", "high_summary", "high_all")

MIN_GAP_MIN = 10  # shorter missing runs are not mentioned
MIN_SLEEP_MIN = 30  # shorter runs of a sleep channel above 0.5 are not a sleep period
MIN_ELEVATED_MIN = 10  # heart rate above resting + ELEVATED_BPM this long is an elevated period
ELEVATED_BPM = 30.0
RESTING_WINDOW_MIN = 30  # resting heart rate: lowest mean over this many minutes of data
TREND_SEGMENTS = 6  # linear fits over this many equal segments of the window
MAX_TREND_CHANNELS = 3


@dataclass(frozen=True)
class ChannelInfo:
    """A channel as the captioner sees it: a name, a unit and a kind from `CHANNEL_KINDS`."""

    name: str
    unit: str = ""
    kind: str = "level"

    def __post_init__(self):
        if self.kind not in CHANNEL_KINDS:
            raise ValueError(
                f"channel {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(CHANNEL_KINDS)})"
            )


@dataclass
class CaptionLevels:
    """The four stored caption levels of one window, and the numbers they state."""

    low: str
    middle: str
    high_summary: str
    high_all: str
    facts: dict[str, Any] = field(default_factory=dict)

    def levels(self) -> dict[str, str]:
        return {name: getattr(self, name) for name in LEVELS}

    @property
    def text(self) -> str:
        return compose(self.levels(), "all")


def fmt(x: float) -> str:
    """A number as captions print it: about three significant figures, no trailing noise."""
    ax = abs(float(x))
    if float(x).is_integer() and ax < 1e7:
        return f"{int(x)}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def label_phrase(label: str) -> str:
    """A label as words: ``high_activity`` -> ``high activity``."""
    return str(label).replace("_", " ").strip()


def check_prompt_template(template: Any, where: str = "prompt_template", error: type[Exception] = ValueError) -> str:
    """`template` if its only placeholder is a plain ``{label}`` (at least once; ``{{`` and ``}}``
    for braces), else raise `error` naming `where`. Templates come from configs and manifests:
    ``{x}`` would fail later, and ``{label.__class__}`` would read attributes."""
    if not isinstance(template, str):
        raise error(f"{where} must be a string with a {{label}} placeholder, got {template!r}")
    try:
        fields = [(name, conv, spec) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:  # a lone "{" or "}"
        raise error(f"{where} {template!r}: {e} (write {{{{ and }}}} for literal braces)") from None
    for name, conv, spec in fields:
        if name != "label" or conv or spec:
            shown = "{" + name + (f"!{conv}" if conv else "") + (f":{spec}" if spec else "") + "}"
            raise error(f"{where} {template!r}: unknown placeholder {shown}; the only one is {{label}}")
    if not fields:
        raise error(f"{where} {template!r} has no {{label}} placeholder")
    return template


def prompt_for(label: str, template: str = DEFAULT_PROMPT_TEMPLATE) -> str:
    """The zero-shot prompt of a label, e.g. ``A day with high activity.``"""
    return check_prompt_template(template).format(label=label_phrase(label))


def zero_shot_prompts(labels: Sequence[str], prompts: Mapping[str, str] | None = None,
                      template: str | None = None) -> list[str]:
    """One prompt per label: the label's entry in `prompts`, else `template` (default
    ``A day with {label}.``) filled with the label's words."""
    prompts = dict(prompts or {})
    return [prompts.get(lab) or prompt_for(lab, template or DEFAULT_PROMPT_TEMPLATE) for lab in labels]


def manifest_prompts(manifest: Mapping[str, Any], template: str | None = None) -> list[str]:
    """The zero-shot prompts of a dataset's labels (manifest ``activities``), in label order.

    Args:
        manifest: the dataset manifest (its ``prompts`` and ``prompt_template``, if any, are used).
        template: a template that overrides the dataset's prompts (config ``data.prompt_template``).
    """
    labels = manifest.get("activities") or []
    if template:
        return zero_shot_prompts(labels, None, template)
    return zero_shot_prompts(labels, manifest.get("prompts"), manifest.get("prompt_template"))


def compose(levels: Mapping[str, str], key: str) -> str:
    """Join the stored levels into caption `key` (one of `CAPTION_KEYS`)."""
    if key not in CAPTION_KEYS:
        raise ValueError(f"unknown caption key {key!r} (known: {', '.join(CAPTION_KEYS)})")
    return " ".join(levels[p] for p in CAPTION_KEYS[key] if levels.get(p))


def levels_from_paper(semantic: str, structural: str, statistical: str) -> dict[str, str]:
    """The stored levels from three paper-level texts (high_summary = the semantic first sentence)."""
    first = semantic.split(". ")[0].rstrip(".") + "." if semantic else ""
    return {"low": statistical, "middle": structural, "high_summary": first, "high_all": semantic}


def normalize_levels(captions: Mapping[str, str] | None) -> dict[str, str] | None:
    """Stored levels from a sample's ``captions`` metadata in either naming (ours or the paper's)."""
    if not isinstance(captions, Mapping):
        return None
    if all(k in captions for k in LEVELS):
        return {k: str(captions[k] or "") for k in LEVELS}
    if {"semantic", "structural", "statistical"} <= set(captions):
        return levels_from_paper(*(str(captions[k] or "") for k in ("semantic", "structural", "statistical")))
    return None


# ---------------------------------------------------------------------------------------------
# facts


def clock(minute: float) -> str:
    m = int(round(minute)) % 1440
    return f"{m // 60:02d}:{m % 60:02d}"


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index runs of True."""
    padded = np.concatenate([[False], np.asarray(mask, bool), [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(s), int(e)) for s, e in zip(edges[::2], edges[1::2])]


def channel_series(values: np.ndarray, missing: np.ndarray, c: int) -> np.ndarray:
    """Channel `c` as float64 with NaN where the grid point is missing or the value is not finite."""
    x = np.asarray(values[:, c], np.float64).copy()
    x[np.asarray(missing, bool) | ~np.isfinite(x)] = np.nan
    return x


def _channel_stats(x: np.ndarray, kind: str) -> dict[str, Any] | None:
    seen = np.flatnonzero(~np.isnan(x))
    if not seen.size:
        return None
    v = x[seen]
    out = {"n": int(seen.size), "mean": float(v.mean()), "min": float(v.min()), "max": float(v.max()),
           "min_idx": int(seen[np.argmin(v)]), "max_idx": int(seen[np.argmax(v)]), "sd": float(v.std())}
    if CHANNEL_KINDS[kind] == "sum":
        out["total"] = float(v.sum())
    return out


def _trend(x: np.ndarray, step_min: float) -> dict[str, Any] | None:
    """The segment whose least-squares line changes most; change = slope x segment length."""
    n = len(x)
    seg = n // TREND_SEGMENTS
    if seg < 3:
        return None
    best = None
    for i in range(TREND_SEGMENTS):
        lo, hi = i * seg, (i + 1) * seg
        t = np.arange(lo, hi, dtype=np.float64)
        ok = ~np.isnan(x[lo:hi])
        if ok.sum() < max(3, seg // 2):
            continue
        slope = np.polyfit(t[ok], x[lo:hi][ok], 1)[0]
        change = float(slope * seg)
        if best is None or abs(change) > abs(best["change"]):
            best = {"start_idx": lo, "end_idx": hi, "change": change}
    return best


def _peaks(x: np.ndarray, sd: float) -> dict[str, Any]:
    """Most prominent peak and valley (prominence at least one SD) on the gap-interpolated series."""
    from scipy.signal import find_peaks

    ok = ~np.isnan(x)
    if ok.sum() < 5 or sd <= 0:
        return {}
    idx = np.arange(len(x))
    filled = np.interp(idx, idx[ok], x[ok])
    out = {}
    for name, sign in (("peak", 1.0), ("valley", -1.0)):
        found, props = find_peaks(sign * filled, prominence=sd)
        found = [(i, p) for i, p in zip(found, props["prominences"]) if ok[i]]
        if found:
            i, p = max(found, key=lambda ip: ip[1])
            out[name] = {"idx": int(i), "value": float(x[i]), "prominence": float(p)}
    return out


def _hourly_activity(x: np.ndarray, step_min: float) -> dict[str, Any] | None:
    per_hour = int(round(60 / step_min))
    hours = len(x) // per_hour if per_hour >= 1 else 0
    if hours < 2:
        return None
    block = x[: hours * per_hour].reshape(hours, per_hour)
    covered = (~np.isnan(block)).mean(axis=1) >= 0.5  # an hour mostly off-wrist is not "quiet"
    if covered.sum() < 2:
        return None
    sums = np.nansum(block, axis=1)
    cand = np.flatnonzero(covered)
    busiest, quietest = int(cand[np.argmax(sums[cand])]), int(cand[np.argmin(sums[cand])])
    return {"busiest_hour": busiest, "busiest_sum": float(sums[busiest]),
            "quietest_hour": quietest, "quietest_sum": float(sums[quietest]), "per_hour": per_hour}


def _resting_hr(hr: np.ndarray, step_min: float) -> float | None:
    w = max(1, int(round(RESTING_WINDOW_MIN / step_min)))
    ok = ~np.isnan(hr)
    if ok.sum() < w:
        return None
    num = np.convolve(np.where(ok, hr, 0.0), np.ones(w), mode="valid")
    den = np.convolve(ok.astype(np.float64), np.ones(w), mode="valid")
    full = den >= w  # windows with data at every point
    return float((num[full] / den[full]).min()) if full.any() else None


def compute_facts(values, missing, channels: Sequence[ChannelInfo], *, step_min: float = 1.0,
                  labels: Sequence[Mapping] = ()) -> dict[str, Any]:
    """Everything a caption may state, from the window's arrays.

    Args:
        values: (T, C) values on a regular grid of `step_min` minutes.
        missing: (T,) bool, True where the grid point has no data.
        channels: C channel descriptions in column order.
        step_min: grid step in minutes.
        labels: intervals ``{"label", "start_min", "end_min"}`` in minutes since the window start.
    """
    values = np.asarray(values)
    missing = np.asarray(missing, bool)
    if values.ndim != 2 or values.shape[1] != len(channels) or missing.shape != (values.shape[0],):
        raise ValueError(
            f"values must be (T, {len(channels)}) and missing (T,), got {values.shape} and {missing.shape}"
        )
    facts: dict[str, Any] = {"channels": {}, "gaps": [], "labels": [dict(a) for a in labels]}
    series = {}
    shaped = 0  # trends and peaks only for the channels the middle level states
    for c, ch in enumerate(channels):
        x = channel_series(values, missing, c)
        series[ch.name] = x
        stats = _channel_stats(x, ch.kind)
        if stats is None:
            continue
        if ch.kind in TREND_KINDS and shaped < MAX_TREND_CHANNELS:
            stats["trend"] = _trend(x, step_min)
            stats["extrema"] = _peaks(x, stats["sd"])
            shaped += stats["trend"] is not None
        facts["channels"][ch.name] = stats
    min_gap = max(1, int(np.ceil(MIN_GAP_MIN / step_min)))
    facts["gaps"] = [r for r in runs(missing) if r[1] - r[0] >= min_gap]
    facts["observed_fraction"] = float((~missing).mean()) if len(missing) else 0.0
    active = next((ch for kind in ACTIVITY_KINDS for ch in channels
                   if ch.kind == kind and ch.name in facts["channels"]), None)
    if active is not None:
        facts["activity"] = _hourly_activity(series[active.name], step_min)
        if facts["activity"]:
            facts["activity"]["channel"] = active.name
    hr = next((ch for ch in channels if ch.kind == "heart_rate" and ch.name in facts["channels"]), None)
    if hr is not None:
        rest = _resting_hr(series[hr.name], step_min)
        facts["resting_hr"] = rest
        if rest is not None:
            high = np.nan_to_num(series[hr.name], nan=-np.inf) >= rest + ELEVATED_BPM
            min_len = max(1, int(np.ceil(MIN_ELEVATED_MIN / step_min)))
            facts["elevated_hr"] = [r for r in runs(high) if r[1] - r[0] >= min_len]
    sleep = next((ch for ch in channels if ch.kind == "sleep" and ch.name in facts["channels"]), None)
    if sleep is not None:
        asleep = np.nan_to_num(series[sleep.name], nan=0.0) > 0.5
        min_len = max(1, int(np.ceil(MIN_SLEEP_MIN / step_min)))
        facts["sleep"] = [r for r in runs(asleep) if r[1] - r[0] >= min_len]
    return facts


# ---------------------------------------------------------------------------------------------
# text


def _name(ch: ChannelInfo) -> str:
    return label_phrase(ch.name)


def _unit(ch: ChannelInfo) -> str:
    return f" {ch.unit}" if ch.unit else ""


def _low(facts, channels, at) -> str:
    parts = []
    for ch in channels:
        s = facts["channels"].get(ch.name)
        if s is None:
            parts.append(f"No {_name(ch)} data.")
        elif "total" in s:
            parts.append(f"{_name(ch).capitalize()}: {fmt(s['total'])}{_unit(ch)} in total, at most "
                         f"{fmt(s['max'])} at {at(s['max_idx'])}.")
        else:
            u = _unit(ch)
            parts.append(f"{_name(ch).capitalize()}: mean {fmt(s['mean'])}{u}, min {fmt(s['min'])}{u} at "
                         f"{at(s['min_idx'])}, max {fmt(s['max'])}{u} at {at(s['max_idx'])}, SD {fmt(s['sd'])}{u}.")
    return " ".join(parts)


def _middle(facts, channels, at) -> str:
    parts = []
    trended = [ch for ch in channels if facts["channels"].get(ch.name, {}).get("trend")]
    for ch in trended:
        s = facts["channels"][ch.name]
        t = s["trend"]
        if abs(t["change"]) >= 0.5 * s["sd"] and s["sd"] > 0:
            word = "rises" if t["change"] > 0 else "falls"
            parts.append(f"{_name(ch).capitalize()} {word} by {fmt(abs(t['change']))}{_unit(ch)} "
                         f"from {at(t['start_idx'])} to {at(t['end_idx'])}.")
        ex = s.get("extrema", {})
        if "peak" in ex:
            parts.append(f"{_name(ch).capitalize()} peaks at {fmt(ex['peak']['value'])}{_unit(ch)} at "
                         f"{at(ex['peak']['idx'])}.")
        if "valley" in ex:
            parts.append(f"Its lowest dip is {fmt(ex['valley']['value'])}{_unit(ch)} at {at(ex['valley']['idx'])}.")
    act = facts.get("activity")
    if act and act["busiest_sum"] > act["quietest_sum"]:
        ch = next(c for c in channels if c.name == act["channel"])
        parts.append(f"Most active hour {at(act['busiest_hour'] * act['per_hour'])} to "
                     f"{at((act['busiest_hour'] + 1) * act['per_hour'])} ({fmt(act['busiest_sum'])}{_unit(ch)} "
                     f"of {_name(ch)}); least active {at(act['quietest_hour'] * act['per_hour'])} to "
                     f"{at((act['quietest_hour'] + 1) * act['per_hour'])}.")
    for s, e in facts["gaps"][:3]:
        parts.append(f"No data from {at(s)} to {at(e)}.")
    return " ".join(parts)


def _high(facts, main_label, template, at_min, at) -> tuple[str, str]:
    summary = prompt_for(main_label, template) if main_label else ""
    parts = [summary] if summary else []
    for a in sorted(facts["labels"], key=lambda a: a["start_min"])[:4]:
        parts.append(f"{label_phrase(a['label']).capitalize()} from {at_min(a['start_min'])} to "
                     f"{at_min(a['end_min'])} ({int(a['end_min'] - a['start_min'])} min).")
    for s, e in facts.get("sleep", [])[:2]:
        parts.append(f"Asleep from {at(s)} to {at(e)}.")
    if facts.get("resting_hr") is not None:
        parts.append(f"Resting heart rate {fmt(facts['resting_hr'])} bpm.")
    for s, e in facts.get("elevated_hr", [])[:2]:
        parts.append(f"Elevated heart rate from {at(s)} to {at(e)}.")
    return summary, " ".join(parts)


def caption_window(values, missing, channels: Sequence[ChannelInfo], *, step_min: float = 1.0,
                   start_minute: float = 0.0, labels: Sequence[Mapping] = (), main_label: str | None = None,
                   prompt_template: str = DEFAULT_PROMPT_TEMPLATE) -> CaptionLevels:
    """Caption one window at every level from its data.

    Args:
        values: (T, C) values on a regular grid (ignored where `missing`).
        missing: (T,) bool, True where the grid point has no data.
        channels: the C channels (name, unit, kind).
        step_min: grid step in minutes.
        start_minute: clock minute of the first grid point (0 = midnight), for the times stated.
        labels: label intervals ``{"label", "start_min", "end_min"}`` (minutes since the window start).
        main_label: the window's main label (None: unlabelled).
        prompt_template: how the main label is worded (the zero-shot prompt, ``{label}`` placeholder).
    """
    facts = compute_facts(values, missing, channels, step_min=step_min, labels=labels)
    facts["main_label"] = main_label

    def at_min(m: float) -> str:
        return clock(start_minute + m)

    def at(i: int) -> str:
        return at_min(i * step_min)

    summary, high = _high(facts, main_label, prompt_template, at_min, at)
    return CaptionLevels(low=_low(facts, channels, at), middle=_middle(facts, channels, at),
                         high_summary=summary, high_all=high, facts=facts)


__all__ = [
    "CAPTION_KEYS", "CHANNEL_KINDS", "DEFAULT_PROMPT_TEMPLATE", "LEVELS", "CaptionLevels", "ChannelInfo",
    "caption_window", "compose", "compute_facts", "fmt", "infer_kind", "label_phrase", "levels_from_paper",
    "manifest_prompts", "normalize_levels", "prompt_for", "zero_shot_prompts",
]
