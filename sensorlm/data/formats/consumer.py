"""Consumer devices: Garmin/ANT FIT files (fitdecode) and Apple Health ``export.xml`` (lxml's
streaming parser: such exports reach gigabytes, and are never loaded whole)."""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

from sensorlm.data.formats.base import Channel, DeviceFormat, DeviceFormatError, Recording, register

# ---------------------------------------------------------------------------------------------
# FIT: record messages -> channels; session and lap messages -> activity labels

_FIT_FIELDS = {  # record field -> channel (the first present of a group wins)
    "heart_rate": Channel("heart_rate", "bpm", "heart_rate"),
    "cadence": Channel("cadence", "rpm", "level"),
    "enhanced_speed": Channel("speed", "m/s", "level"), "speed": Channel("speed", "m/s", "level"),
    "enhanced_altitude": Channel("altitude", "m", "level"), "altitude": Channel("altitude", "m", "level"),
    "power": Channel("power", "W", "level"),
    "temperature": Channel("temperature", "degC", "temperature"),
}


def _sport(frame) -> str | None:
    sport = frame.get_value("sport", fallback=None)
    sub = frame.get_value("sub_sport", fallback=None)
    if sport is None:
        return None
    label = str(sport)
    if sub not in (None, "generic", "all") and not str(sub).isdigit():
        label = f"{sub}" if str(sub).endswith(label) else f"{label}_{sub}"
    return label.lower()


def _read_fit(path: Path, subject: str | None) -> Recording:
    import fitdecode
    import pandas as pd

    rows: dict = defaultdict(dict)
    intervals = []  # (kind, start, elapsed seconds, label)
    offset = None  # local time - UTC, from the activity message
    try:
        with fitdecode.FitReader(str(path), check_crc=fitdecode.CrcCheck.RAISE) as fit:
            for frame in fit:
                if frame.frame_type != fitdecode.FIT_FRAME_DATA:
                    continue
                if frame.name == "record":
                    stamp = frame.get_value("timestamp", fallback=None)
                    if stamp is None:
                        continue
                    for field, ch in _FIT_FIELDS.items():
                        value = frame.get_value(field, fallback=None)
                        if value is not None and ch.name not in rows[stamp]:
                            rows[stamp][ch.name] = float(value)
                elif frame.name in ("session", "lap"):
                    start = frame.get_value("start_time", fallback=None)
                    elapsed = frame.get_value("total_elapsed_time", fallback=None)
                    label = _sport(frame)
                    if start is not None and elapsed and label:
                        intervals.append((frame.name, start, float(elapsed), label))
                elif frame.name == "activity":
                    stamp, local = frame.get_value("timestamp", fallback=None), frame.get_value("local_timestamp", fallback=None)
                    if stamp is not None and local is not None:
                        offset = pd.Timestamp(local).tz_localize(None) - pd.Timestamp(stamp).tz_localize(None)
    except fitdecode.FitError as exc:  # bad CRC, truncated file, bad header
        raise DeviceFormatError(f"{path}: not a readable FIT file: {exc}") from None
    if not rows:
        raise DeviceFormatError(f"{path}: no record messages with a timestamp (nothing measured)")
    offset = offset if offset is not None else pd.Timedelta(0)
    times = sorted(rows)
    names = [ch.name for ch in dict.fromkeys(_FIT_FIELDS.values())]
    present = [n for n in names if any(n in rows[t] for t in times)]
    frame = pd.DataFrame({"time": [pd.Timestamp(t).tz_localize(None) + offset for t in times]})
    who = subject or path.stem
    frame["subject"] = who
    for name in present:
        frame[name] = [rows[t].get(name, float("nan")) for t in times]
    channels = [next(ch for ch in _FIT_FIELDS.values() if ch.name == n) for n in present]
    # sessions name the activity; laps add the sport of a multisport session's parts
    sessions = [i for i in intervals if i[0] == "session"] or [i for i in intervals if i[0] == "lap"]
    labels = pd.DataFrame(
        [(who, pd.Timestamp(s).tz_localize(None) + offset, pd.Timestamp(s).tz_localize(None) + offset
          + pd.Timedelta(seconds=e), lab) for _, s, e, lab in sessions],
        columns=["subject", "start", "end", "label"]) if sessions else None
    return Recording(frame, channels, labels, notes=[f"FIT, {len(times)} records, {len(sessions)} activity intervals, "
                                                     f"local time = UTC {offset}"])


register(DeviceFormat("fit", "Garmin / ANT FIT activity file (.fit)", (".fit",),
                      lambda head: len(head) >= 12 and head[8:12] == b".FIT", _read_fit))


# ---------------------------------------------------------------------------------------------
# Apple Health export.xml: Record elements -> channels, Workout and sleep analysis -> labels

APPLE_QUANTITIES = {  # HKQuantityTypeIdentifier... -> (channel, scale to its unit)
    "HeartRate": (Channel("heart_rate", "bpm", "heart_rate"), 1.0),
    "RestingHeartRate": (Channel("resting_heart_rate", "bpm", "heart_rate"), 1.0),
    "StepCount": (Channel("steps", "steps", "count"), 1.0),
    "ActiveEnergyBurned": (Channel("active_energy", "kcal", "count"), 1.0),
    "BasalEnergyBurned": (Channel("basal_energy", "kcal", "count"), 1.0),
    "DistanceWalkingRunning": (Channel("distance", "km", "count"), 1.0),
    "FlightsClimbed": (Channel("flights", "count", "count"), 1.0),
    "OxygenSaturation": (Channel("spo2", "%", "spo2"), 100.0),
    "RespiratoryRate": (Channel("respiration", "breaths/min", "respiration"), 1.0),
    "HeartRateVariabilitySDNN": (Channel("hrv_sdnn", "ms", "level"), 1.0),
}
_APPLE_TIME = "%Y-%m-%d %H:%M:%S %z"
_SLEEP = "HKCategoryTypeIdentifierSleepAnalysis"


def _apple_label(kind: str, value: str) -> str | None:
    if kind == "workout":
        words = re.sub(r"(?<!^)(?=[A-Z])", "_", value.removeprefix("HKWorkoutActivityType")).lower()
        return words or None
    if "Asleep" in value:
        return "sleep"
    if value.endswith("InBed"):
        return "in_bed"
    return None  # awake


def _local(text: str):
    """Apple writes local time with its UTC offset: the local wall-clock time is what it says."""
    import pandas as pd

    return pd.to_datetime(text, format=_APPLE_TIME).tz_localize(None)


def _read_apple_health(path: Path, subject: str | None) -> Recording:
    import pandas as pd
    from lxml import etree

    points: dict = defaultdict(lambda: defaultdict(float))  # (time, channel) -> value; counts summed
    seen: dict = defaultdict(lambda: defaultdict(int))
    spans = []
    line = 0
    try:
        # no entity expansion, no network: the file is data
        context = etree.iterparse(str(path), events=("end",), tag=("Record", "Workout"), resolve_entities=False,
                                  no_network=True, huge_tree=True)
        for _, elem in context:
            line = elem.sourceline or line
            kind = elem.get("type") or ""
            if elem.tag == "Workout" or kind == _SLEEP:
                label = _apple_label("workout" if elem.tag == "Workout" else "sleep",
                                     elem.get("workoutActivityType") or elem.get("value") or "")
                if label:
                    spans.append((_local(elem.get("startDate")), _local(elem.get("endDate")), label))
            elif kind.startswith("HKQuantityTypeIdentifier"):
                quantity = APPLE_QUANTITIES.get(kind.removeprefix("HKQuantityTypeIdentifier"))
                value = elem.get("value")
                if quantity is not None and value not in (None, ""):
                    ch, scale = quantity
                    stamp = _local(elem.get("startDate"))
                    points[stamp][ch] += float(value) * scale
                    seen[stamp][ch] += 1
            elem.clear(keep_tail=True)  # bounded memory: drop what was read
            while elem.getprevious() is not None:
                del elem.getparent()[0]
    except etree.XMLSyntaxError as exc:
        raise DeviceFormatError(f"{path}: line {exc.lineno}: not well-formed XML ({exc.msg})") from None
    except (ValueError, TypeError) as exc:
        raise DeviceFormatError(f"{path}: line {line}: a Record or Workout with a bad date or value ({exc})") from None
    if not points:
        raise DeviceFormatError(f"{path}: no Record of a known quantity ({', '.join(APPLE_QUANTITIES)})")
    channels = list(dict.fromkeys(ch for by in points.values() for ch in by))
    times = sorted(points)
    frame = pd.DataFrame({"time": times})
    who = subject or "me"
    frame["subject"] = who
    for ch in channels:  # levels averaged, counts summed where records share a start time
        frame[ch.name] = [(points[t][ch] / (seen[t][ch] if ch.kind != "count" else 1)) if ch in points[t]
                          else float("nan") for t in times]
    labels = pd.DataFrame([(who, s, e, lab) for s, e, lab in spans if e > s],
                          columns=["subject", "start", "end", "label"]) if spans else None
    return Recording(frame, channels, labels,
                     notes=[f"Apple Health: {len(times)} time points, {len(spans)} workouts and sleep intervals"])


register(DeviceFormat("apple_health", "Apple Health export (export.xml)", (".xml",),
                      lambda head: b"<HealthData" in head, _read_apple_health))
