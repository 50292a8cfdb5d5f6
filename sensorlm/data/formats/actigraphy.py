"""Epoch-level actigraphy exports: Condor ActTrust reports, Philips Actiwatch AWD, Philips
Actiware (Respironics) CSV, ActiGraph epoch CSV and AGD, biobankAccelerometerAnalysis / stepcount
time series. Small parsers of plain text (and SQLite, through the standard library)."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
from pathlib import Path

from sensorlm.data.formats.base import (
    Channel,
    DeviceFormat,
    DeviceFormatError,
    Recording,
    check_epochs,
    epoch_labels,
    frame_from,
    head_bytes,
    register,
)


def _text_lines(path: Path) -> list[str]:
    data = head_bytes(path, size=-1)
    for encoding in ("utf-8-sig", "latin-1"):
        try:
            return data.decode(encoding).splitlines()
        except UnicodeDecodeError:
            continue
    raise DeviceFormatError(f"{path}: not a text file")  # pragma: no cover - latin-1 decodes anything


def _add(columns: dict, channels: list, channel: Channel, values) -> None:
    columns[channel.name] = values
    channels.append(channel)


def _times(path: Path, text, fmt: str, what: str, first_row: int):
    import numpy as np
    import pandas as pd

    times = pd.to_datetime(pd.Series(text).str.strip(), format=fmt, errors="coerce")
    bad = np.flatnonzero(times.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise DeviceFormatError(f"{path}: row {i + first_row}: {what} {text[i]!r} is not a time in the format {fmt!r}")
    return times


# ---------------------------------------------------------------------------------------------
# Condor Instruments ActTrust (.txt): "KEY : value" report header, then a ';' table

_ACTTRUST_COLUMNS = {  # column -> channel; other numeric columns keep their lower-cased name
    "PIM": Channel("pim", "counts", "count"), "TAT": Channel("tat", "s", "count"),
    "ZCM": Channel("zcm", "counts", "count"), "EVENT": Channel("event", "presses", "count"),
    "TEMPERATURE": Channel("temperature", "degC", "temperature"),
    "EXT TEMPERATURE": Channel("ext_temperature", "degC", "temperature"),
    "LIGHT": Channel("light", "lux", "light"), "AMB LIGHT": Channel("amb_light", "lux", "light"),
    "STATE": Channel("state", "code", "state"),
}
_ACTTRUST_SKIP = {"DATE/TIME", "MS", "PIMn", "TATn", "ZCMn", "ORIENTATION"}


def _read_acttrust(path: Path, subject: str | None) -> Recording:
    import pandas as pd

    lines = _text_lines(path)
    header: dict[str, str] = {}
    table_at = None
    for i, line in enumerate(lines[1:], start=1):
        if line.startswith("+-"):
            table_at = i + 1
            break
        key, sep, value = line.partition(" : ")
        if sep:
            header[key.strip()] = value.strip()
    if table_at is None or table_at >= len(lines) or not lines[table_at].startswith("DATE/TIME"):
        raise DeviceFormatError(f"{path}: the report header has no end line '+---...' followed by the DATE/TIME table")
    table = pd.read_csv(io.StringIO("\n".join(lines[table_at:])), sep=";", dtype=str)
    if table.empty:
        raise DeviceFormatError(f"{path}: the report has a header but no data rows (line {table_at + 1} is the last)")
    first = table_at + 2  # 1-based line of the first data row
    times = _times(path, table["DATE/TIME"].tolist(), "%d/%m/%Y %H:%M:%S", "DATE/TIME", first)
    if header.get("INTERVAL", "").isdigit():
        check_epochs(path, times, pd.Timedelta(seconds=int(header["INTERVAL"])), "the header's INTERVAL", first)
    columns, channels = {}, []
    for col in table.columns:
        if col in _ACTTRUST_SKIP or col.strip() == "":
            continue
        values = pd.to_numeric(table[col].str.replace(",", ".", regex=False), errors="coerce")
        if values.notna().sum() == 0:
            continue
        ch = _ACTTRUST_COLUMNS.get(col) or Channel(re.sub(r"\W+", "_", col.strip().lower()), "", "light" if "LIGHT" in col else "level")
        _add(columns, channels, ch, values)
    who = subject or header.get("SUBJECT_NAME") or path.stem
    return Recording(frame_from(times, who, columns), channels,
                     notes=[f"ActTrust {header.get('DEVICE_ID', '?')}, {header.get('INTERVAL', '?')} s epochs"])


register(DeviceFormat(
    "acttrust", "Condor Instruments ActTrust report (.txt)", (".txt",),
    lambda head: b"Condor Instruments" in head[:400] and head.startswith(b"+"), _read_acttrust))


# ---------------------------------------------------------------------------------------------
# Philips (CamNtech) Actiwatch .AWD: 7 header lines, then one count per line, " M" for a marker

AWD_EPOCH_CODES = {"1": 15, "2": 30, "4": 60, "8": 120, "20": 300, "81": 2, "C1": 5, "C2": 10}  # code -> seconds


def _read_awd(path: Path, subject: str | None) -> Recording:
    import pandas as pd

    lines = _text_lines(path)
    if len(lines) < 7:
        raise DeviceFormatError(f"{path}: {len(lines)} lines; an AWD file starts with a 7-line header")
    name, date, clock, code = (x.strip() for x in lines[:4])
    if code not in AWD_EPOCH_CODES:
        raise DeviceFormatError(f"{path}: line 4: epoch code {code!r} is not one of {', '.join(AWD_EPOCH_CODES)}")
    try:
        start = pd.to_datetime(f"{date} {clock}", format="%d-%b-%Y %H:%M")
    except ValueError:
        raise DeviceFormatError(f"{path}: lines 2-3: start {date!r} {clock!r} is not 'dd-Mon-yyyy' and 'HH:MM'") from None
    counts, light, marker = [], [], []
    for i, line in enumerate(lines[7:], start=8):
        tokens = line.replace(",", " ").split()
        if not tokens:
            continue
        numbers = [t for t in tokens if t.upper() != "M"]
        try:
            values = [float(t) for t in numbers]
        except ValueError:
            raise DeviceFormatError(f"{path}: line {i}: {line.strip()!r} is not a count (and an optional M marker)") from None
        if not values or len(values) > 2:
            raise DeviceFormatError(f"{path}: line {i}: {line.strip()!r} is not a count (and an optional M marker)")
        counts.append(values[0])
        light.append(values[1] if len(values) > 1 else float("nan"))
        marker.append(float(any(t.upper() == "M" for t in tokens)))
    if not counts:
        raise DeviceFormatError(f"{path}: a header but no epochs after line 7")
    epoch = pd.Timedelta(seconds=AWD_EPOCH_CODES[code])
    times = pd.Series(pd.date_range(start, periods=len(counts), freq=epoch))
    columns = {"activity": counts, "marker": marker}
    channels = [Channel("activity", "counts", "count"), Channel("marker", "presses", "count")]
    if any(v == v for v in light):
        columns["light"] = light
        channels.append(Channel("light", "lux", "light"))
    return Recording(frame_from(times, subject or name or path.stem, columns), channels,
                     notes=[f"Actiwatch {lines[5].strip()}, epoch code {code} = {epoch.total_seconds():g} s"])


register(DeviceFormat("awd", "Philips/CamNtech Actiwatch (.awd)", (".awd",), None, _read_awd))


# ---------------------------------------------------------------------------------------------
# Philips Actiware / Respironics CSV export: the "Epoch-by-Epoch Data" section

_ACTIWARE_TIME_FORMATS = ("%m/%d/%Y %I:%M:%S %p", "%m/%d/%Y %H:%M:%S", "%d/%m/%Y %H:%M:%S", "%Y-%m-%d %H:%M:%S")
_ACTIWARE_COLUMNS = {
    "Activity": Channel("activity", "counts", "count"), "Marker": Channel("marker", "presses", "count"),
    "White Light": Channel("white_light", "lux", "light"), "Red Light": Channel("red_light", "uW/cm2", "light"),
    "Green Light": Channel("green_light", "uW/cm2", "light"), "Blue Light": Channel("blue_light", "uW/cm2", "light"),
    "Off-Wrist Status": Channel("off_wrist", "flag", "state"),
}
ACTIWARE_INTERVALS = {"ACTIVE": "active", "REST": "rest", "REST-S": "rest_sleep"}  # EXCLUDED: no label


def _read_actiware(path: Path, subject: str | None) -> Recording:
    import pandas as pd

    lines = _text_lines(path)
    section = next((i for i, line in enumerate(lines) if "epoch-by-epoch data" in line.lower()), None)
    if section is None:
        raise DeviceFormatError(f"{path}: no 'Epoch-by-Epoch Data' section")
    head_at = next((i for i in range(section + 1, len(lines))
                    if {"Date", "Time", "Activity"} <= {c.strip() for c in next(csv.reader([lines[i]]))}), None)
    if head_at is None:
        raise DeviceFormatError(f"{path}: line {section + 1}: the Epoch-by-Epoch section has no Date,Time,Activity header")
    rows = [r for r in csv.reader(lines[head_at:]) if any(c.strip() for c in r)]
    names = [c.strip() for c in rows[0]]
    body = [r + [""] * (len(names) - len(r)) for r in rows[1:]]
    if not body:
        raise DeviceFormatError(f"{path}: line {head_at + 1}: the Epoch-by-Epoch section has a header but no epochs")
    table = pd.DataFrame([r[: len(names)] for r in body], columns=names)
    stamp = (table["Date"].str.strip() + " " + table["Time"].str.strip()).tolist()
    first = head_at + 2
    for fmt in _ACTIWARE_TIME_FORMATS:
        times = pd.to_datetime(pd.Series(stamp), format=fmt, errors="coerce")
        if times.notna().all():
            break
    else:
        raise DeviceFormatError(f"{path}: row {first}: date and time {stamp[0]!r} fit none of "
                                f"{', '.join(_ACTIWARE_TIME_FORMATS)}")
    if len(times) > 1:
        check_epochs(path, times, times.iloc[1] - times.iloc[0], "its first two epochs", first)
    columns, channels = {}, []
    for col, ch in _ACTIWARE_COLUMNS.items():
        if col in table:
            values = pd.to_numeric(table[col].str.strip().replace({"NaN": None}), errors="coerce")
            if values.notna().any():
                _add(columns, channels, ch, values)
    if "Sleep/Wake" in table:  # Actiware: 1 = wake, 0 = sleep; the captioner's sleep kind is 1 = asleep
        wake = pd.to_numeric(table["Sleep/Wake"], errors="coerce")
        _add(columns, channels, Channel("asleep", "flag", "sleep"), 1.0 - wake)
    who = subject or path.stem
    labels = None
    if "Interval Status" in table:
        status = table["Interval Status"].str.strip().str.upper().map(ACTIWARE_INTERVALS)
        epoch = times.iloc[1] - times.iloc[0] if len(times) > 1 else pd.Timedelta(seconds=60)
        labels = epoch_labels(who, times, status.tolist(), epoch)
    return Recording(frame_from(times, who, columns), channels, labels, notes=["Actiware epoch-by-epoch section"])


register(DeviceFormat(
    "actiware", "Philips Actiware / Respironics CSV export (epoch-by-epoch section)", (".csv",),
    lambda head: b"epoch-by-epoch data" in head.lower() and b"actiware" in head.lower(), _read_actiware))


# ---------------------------------------------------------------------------------------------
# ActiGraph epoch CSV (ActiLife): a 10-line header, then counts with or without Date,Time columns

_ACTIGRAPH_NO_HEADER = ("Axis1", "Axis2", "Axis3", "Steps", "Lux", "Inclinometer Off", "Inclinometer Standing",
                        "Inclinometer Sitting", "Inclinometer Lying")


def _actigraph_channel(col: str) -> Channel | None:
    key = col.strip().lower()
    if key in ("axis1", "axis2", "axis3", "vector magnitude", "vm"):
        return Channel(key.replace(" ", "_"), "counts", "count")
    if key == "steps":
        return Channel("steps", "steps", "count")
    if key == "lux":
        return Channel("lux", "lux", "light")
    if key.startswith("inclinometer"):
        return Channel(key.replace(" ", "_"), "s", "state")
    if key in ("hr", "heart rate"):
        return Channel("heart_rate", "bpm", "heart_rate")
    return None


def _java_date_format(text: str) -> str:
    """ActiLife states its date format as Java's ``M/d/yyyy``; the strptime equivalent."""
    out = text
    for java, c in (("yyyy", "%Y"), ("MM", "%m"), ("dd", "%d"), ("M", "%m"), ("d", "%d")):
        out = re.sub(rf"(?<![%A-Za-z]){java}(?![A-Za-z])", c, out)
    return out


def _read_actigraph_csv(path: Path, subject: str | None) -> Recording:
    import pandas as pd

    lines = _text_lines(path)
    if len(lines) < 10:
        raise DeviceFormatError(f"{path}: {len(lines)} lines; an ActiGraph CSV starts with a 10-line header")
    fields = {m.group(1).strip(): m.group(2).strip() for line in lines[1:9]
              if (m := re.match(r"([A-Za-z ()/:]+?)[: ]+(\d[\d/:.\- ]*)$", line.strip()))}
    date_fmt = _java_date_format(m.group(1)) if (m := re.search(r"date format (\S+)", lines[0])) else "%m/%d/%Y"
    epoch_text = next((v for k, v in fields.items() if k.startswith("Epoch Period")), None)
    if epoch_text is None or not re.fullmatch(r"\d\d:\d\d:\d\d", epoch_text):
        raise DeviceFormatError(f"{path}: lines 2-9: no 'Epoch Period (hh:mm:ss)' in the header")
    epoch = pd.Timedelta(epoch_text)
    body = [r for r in csv.reader(lines[10:]) if any(c.strip() for c in r)]
    if not body:
        raise DeviceFormatError(f"{path}: a header but no epochs after line 10")
    has_names = not re.fullmatch(r"-?[\d.]+", body[0][0].strip())
    names = [c.strip() for c in body[0]] if has_names else list(_ACTIGRAPH_NO_HEADER[: len(body[0])])
    rows = body[1:] if has_names else body
    first = 12 if has_names else 11
    table = pd.DataFrame([r[: len(names)] + [""] * (len(names) - len(r)) for r in rows], columns=names)
    if {"Date", "Time"} <= set(names):
        times = _times(path, (table["Date"].str.strip() + " " + table["Time"].str.strip()).tolist(),
                       f"{date_fmt} %H:%M:%S", "Date Time", first)
        check_epochs(path, times, epoch, "the header's Epoch Period", first)
    else:
        start_date, start_time = fields.get("Start Date"), fields.get("Start Time")
        try:
            start = pd.to_datetime(f"{start_date} {start_time}", format=f"{date_fmt} %H:%M:%S")
        except (ValueError, TypeError):
            raise DeviceFormatError(f"{path}: lines 3-4: Start Date {start_date!r} / Start Time {start_time!r} do not "
                                    f"match {date_fmt} %H:%M:%S") from None
        times = pd.Series(pd.date_range(start, periods=len(table), freq=epoch))
    columns, channels = {}, []
    for col in names:
        ch = _actigraph_channel(col)
        if ch is not None:
            _add(columns, channels, ch, pd.to_numeric(table[col].str.strip(), errors="coerce"))
    serial = fields.get("Serial Number", "")
    return Recording(frame_from(times, subject or path.stem, columns), channels,
                     notes=[f"ActiGraph {serial}, {epoch.total_seconds():g} s epochs"])


register(DeviceFormat(
    "actigraph_csv", "ActiGraph ActiLife epoch CSV", (".csv",),
    lambda head: head.lstrip(b"\xef\xbb\xbf").startswith(b"------------ Data File Created By ActiGraph"),
    _read_actigraph_csv))


# ---------------------------------------------------------------------------------------------
# ActiGraph AGD: SQLite, tables settings(settingName, settingValue) and data(dataTimestamp, axis1, ...)

_TICKS_PER_SECOND = 10_000_000  # .NET ticks: 100 ns since 0001-01-01


def _from_ticks(ticks: int):
    import pandas as pd

    return pd.Timestamp("0001-01-01") + pd.Timedelta(microseconds=int(ticks) // 10)


def _read_agd(path: Path, subject: str | None) -> Recording:
    import pandas as pd

    try:
        db = sqlite3.connect(f"file:{path.resolve()}?mode=ro", uri=True)
    except sqlite3.Error as exc:  # pragma: no cover - read-only open of an existing file
        raise DeviceFormatError(f"{path}: cannot open as SQLite ({exc})") from None
    try:
        tables = {r[0] for r in db.execute("select name from sqlite_master where type = 'table'")}
        for table in ("settings", "data"):
            if table not in tables:
                raise DeviceFormatError(f"{path}: an AGD file has a table {table!r}; this one has {sorted(tables)}")
        settings = {str(k).lower(): v for k, v in db.execute("select settingName, settingValue from settings")}
        data = pd.read_sql_query("select * from data order by dataTimestamp", db)
    except sqlite3.DatabaseError as exc:
        raise DeviceFormatError(f"{path}: not a readable AGD (SQLite) file: {exc}") from None
    finally:
        db.close()
    if data.empty:
        raise DeviceFormatError(f"{path}: table 'data' holds no epochs")
    times = pd.Series([_from_ticks(t) for t in data["dataTimestamp"]])
    epoch_s = settings.get("epochlength")
    if epoch_s is None or not str(epoch_s).isdigit():
        raise DeviceFormatError(f"{path}: settings: no numeric 'epochlength' (got {epoch_s!r})")
    check_epochs(path, times, pd.Timedelta(seconds=int(epoch_s)), "the settings' epochlength")
    columns, channels = {}, []
    for col in data.columns:
        ch = _actigraph_channel({"vm": "vector magnitude"}.get(col.lower(), col))
        if ch is not None and col != "dataTimestamp":
            _add(columns, channels, ch, data[col])
    who = subject or str(settings.get("subjectname") or "") or path.stem
    return Recording(frame_from(times, who, columns), channels,
                     notes=[f"ActiGraph AGD {settings.get('deviceserial', '?')}, {epoch_s} s epochs"])


register(DeviceFormat("agd", "ActiGraph AGD (SQLite)", (".agd",),
                      lambda head: head.startswith(b"SQLite format 3\x00") and b"dataTimestamp" in head, _read_agd))


# ---------------------------------------------------------------------------------------------
# biobankAccelerometerAnalysis / stepcount time series (.csv.gz): the bracketed zone is the zone

_BIOBANK_TIME = re.compile(r"^(?P<stamp>.+?[+-]\d{4})\s*\[(?P<zone>[^\]]+)\]$")
_BIOBANK_CHANNELS = {"acc": Channel("acc", "mg", "accel"), "enmo": Channel("enmo", "mg", "accel"),
                     "steps": Channel("steps", "steps", "count"), "imputed": Channel("imputed", "flag", "state"),
                     "met": Channel("met", "MET", "level")}


def _read_biobank(path: Path, subject: str | None) -> Recording:
    import numpy as np
    import pandas as pd

    try:
        table = pd.read_csv(path, dtype=str)
    except (ValueError, OSError, EOFError) as exc:
        raise DeviceFormatError(f"{path}: cannot read ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    if table.empty:
        raise DeviceFormatError(f"{path}: a header but no epochs")
    raw = table["time"].str.strip()
    parts = raw.str.extract(_BIOBANK_TIME)
    bad = np.flatnonzero(parts["stamp"].isna().to_numpy())
    if bad.size:
        raise DeviceFormatError(f"{path}: row {int(bad[0]) + 2}: time {raw.iloc[int(bad[0])]!r} is not "
                                "'YYYY-mm-dd HH:MM:SS.ffffff+HHMM [Zone]'")
    zone = parts["zone"].iloc[0]
    try:
        times = pd.to_datetime(parts["stamp"], format="%Y-%m-%d %H:%M:%S.%f%z", utc=True).dt.tz_convert(zone)
    except Exception as exc:  # ValueError, an unknown zone
        raise DeviceFormatError(f"{path}: times in zone {zone!r}: {str(exc).splitlines()[0]}") from None
    times = times.dt.tz_localize(None)
    numeric = {c: pd.to_numeric(table[c], errors="coerce") for c in table.columns if c != "time"}
    columns, channels, classes = {}, [], []
    for col, values in numeric.items():
        ch = _BIOBANK_CHANNELS.get(col.lower())
        if ch is not None:
            _add(columns, channels, ch, values)
        elif values.notna().any() and values.dropna().between(0, 1).all():
            classes.append(col)  # one column per class, 1 (or the class probability) where it holds
    if not channels:
        raise DeviceFormatError(f"{path}: no acceleration or step column (columns: {list(table.columns)})")
    who = subject or path.name.split(".")[0]
    labels = None
    if classes:
        scores = pd.DataFrame({c: numeric[c] for c in classes})
        best = scores.idxmax(axis=1).where(scores.max(axis=1) > 0.5)
        epoch = (times.iloc[1] - times.iloc[0]) if len(times) > 1 else pd.Timedelta(seconds=30)
        labels = epoch_labels(who, times, best.tolist(), epoch)
    return Recording(frame_from(times, who, columns), channels, labels,
                     notes=[f"biobank time series in {zone}; classes {', '.join(classes) or 'none'}"])


register(DeviceFormat(
    "biobank", "biobankAccelerometerAnalysis / stepcount time series (.csv.gz)", (".csv.gz", ".csv"),
    lambda head: head.startswith(b"time,") and bool(re.search(rb"\n[^,\n]+[+-]\d{4} \[[^\]]+\],", head[:4096])),
    _read_biobank))


# ---------------------------------------------------------------------------------------------
# Raw accelerometry at sample rate (ActiGraph GT3X, Axivity CWA, GENEActiv BIN), read by actfast
# and reduced to minutes: ENMO and a non-wear flag, the features the captioner knows

NONWEAR_BLOCK_MIN = 30  # van Hees et al. 2011: a block is non-wear when 2+ axes stay still
NONWEAR_SD_G, NONWEAR_RANGE_G = 0.013, 0.050


def _read_raw(path: Path, subject: str | None) -> Recording:
    import actfast
    import numpy as np
    import pandas as pd

    try:
        data = actfast.read(str(path))
    except (ValueError, OSError) as exc:
        raise DeviceFormatError(f"{path}: not a readable raw accelerometer file: {exc}") from None
    tables = data["timeseries"]
    table = next((t for t in tables.values() if "acceleration" in t), None)
    if table is None or not len(table["datetime"]):
        raise DeviceFormatError(f"{path}: no acceleration samples ({data['format']})")
    times = pd.to_datetime(np.asarray(table["datetime"]), unit="ns")
    acc = np.asarray(table["acceleration"], dtype=np.float64).reshape(-1, 3)
    minute = times.floor("min")
    frame = pd.DataFrame({"minute": minute, "enmo": np.maximum(np.linalg.norm(acc, axis=1) - 1.0, 0.0) * 1000.0})
    columns = {"enmo": frame.groupby("minute")["enmo"].mean()}
    channels = [Channel("enmo", "mg", "accel")]
    if "light" in table:
        frame["light"] = np.asarray(table["light"], dtype=np.float64)
        columns["light"] = frame.groupby("minute")["light"].mean()
        channels.append(Channel("light", "lux", "light"))
    # non-wear per block: at least two axes with SD < 13 mg or range < 50 mg
    block = times.floor(f"{NONWEAR_BLOCK_MIN}min")
    axes = pd.DataFrame(acc, columns=["x", "y", "z"]).assign(block=block)
    grouped = axes.groupby("block")
    still = ((grouped.std() < NONWEAR_SD_G) | ((grouped.max() - grouped.min()) < NONWEAR_RANGE_G)).sum(axis=1) >= 2
    index = columns["enmo"].index
    columns["nonwear"] = pd.Series(still.reindex(index.floor(f"{NONWEAR_BLOCK_MIN}min")).to_numpy(float), index=index)
    channels.append(Channel("nonwear", "flag", "state"))
    rate = len(times) / max((times[-1] - times[0]).total_seconds(), 1.0)
    who = subject or path.stem
    return Recording(frame_from(pd.Series(index), who, {k: v.to_numpy() for k, v in columns.items()}), channels,
                     notes=[f"{data['format']}, {len(times)} samples at ~{rate:.3g} Hz -> minute ENMO and non-wear"])


register(DeviceFormat("gt3x", "ActiGraph GT3X raw accelerometry (actfast)", (".gt3x",),
                      lambda head: head.startswith(b"PK") and b"log.bin" in head[:4096], _read_raw))
register(DeviceFormat("cwa", "Axivity AX3/AX6 CWA raw accelerometry (actfast)", (".cwa",),
                      lambda head: head[:2] == b"MD" and (len(head) <= 1024 or head[1024:1026] == b"AX"),
                      _read_raw))
register(DeviceFormat("geneactiv", "GENEActiv BIN raw accelerometry (actfast)", (".bin",),
                      lambda head: head.startswith(b"Device Identity") and b"GENEActiv" in head[:2048], _read_raw))
