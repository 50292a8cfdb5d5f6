"""Writers of device files in the formats sensorlm imports, for the tests (no third-party test data):
each writes a small recording whose values and labels the tests know."""

from __future__ import annotations

import csv
import gzip
import sqlite3
import struct
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np

START = datetime(2024, 3, 4, 0, 0, 0)


def activity(n: int, seed: int = 0) -> np.ndarray:
    """Counts with a day/night rhythm: low at night, high in the afternoon."""
    rng = np.random.default_rng(seed)
    minute = np.arange(n) % 1440
    level = 20 + 300 * (np.sin((minute - 420) / 1440 * 2 * np.pi).clip(0, None))
    return rng.poisson(level).astype(int)


def write_acttrust(path: Path, days: int = 3, subject: str = "s01", interval: int = 60) -> np.ndarray:
    n = days * 1440 * 60 // interval
    pim = activity(n)
    lines = ["+-------------------- Condor Instruments Report --------------------+",
             "VERSION : 1.0", "DEVICE_ID : ACT-0001", f"SUBJECT_NAME : {subject}", f"INTERVAL : {interval}",
             "MODE : PIM/TAT/ZCM",
             "+-------------------------------------------------------------------+",
             "DATE/TIME;MS;EVENT;TEMPERATURE;EXT TEMPERATURE;ORIENTATION;PIM;PIMn;TAT;TATn;ZCM;ZCMn;LIGHT;AMB LIGHT;STATE"]
    for i in range(n):
        t = START + timedelta(seconds=i * interval)
        lines.append(f"{t:%d/%m/%Y %H:%M:%S};0;{int(i % 700 == 0)};{31 + (i % 60) / 100:.2f}".replace(".", ",")
                     + f";25,0;0;{pim[i]};0,5;10;0,1;40;0,2;{i % 500},5;10,0;0")
    path.write_text("\n".join(lines) + "\n", encoding="latin-1")
    return pim


def write_awd(path: Path, days: int = 3, code: str = "4", seconds: int = 60, name: str = "s02") -> np.ndarray:
    n = days * 1440 * 60 // seconds
    counts = activity(n, seed=1)
    header = [name, f"{START:%d-%b-%Y}", f"{START:%H:%M}", code, "42", "V12345", "M"]
    body = [f"{c}" + (" M" if i % 1000 == 5 else "") for i, c in enumerate(counts)]
    path.write_text("\n".join(header + body) + "\n")
    return counts


def write_actiware(path: Path, days: int = 3) -> list[tuple[int, int, str]]:
    """Epochs of 60 s; interval status REST-S from 23:00 to 07:00, REST around it, ACTIVE otherwise."""
    n = days * 1440
    counts = activity(n, seed=2)
    status = []
    for i in range(n):
        m = i % 1440
        status.append("REST-S" if m >= 1380 or m < 420 else "REST" if m >= 1350 or m < 450 else "ACTIVE")
    with open(path, "w", newline="") as f:
        w = csv.writer(f, quoting=csv.QUOTE_ALL)
        w.writerow(["Actiware Export File"])
        w.writerow(["Identity:", "s03"])
        w.writerow([])
        w.writerow(["-------------------- Statistics --------------------"])
        w.writerow(["Interval Type", "Start Date"])
        w.writerow([])
        w.writerow(["-------------------- Epoch-by-Epoch Data -------------------"])
        w.writerow(["Epoch Length:", "60"])
        w.writerow([])
        w.writerow(["Line", "Date", "Time", "Off-Wrist Status", "Activity", "Marker", "White Light", "Red Light",
                    "Green Light", "Blue Light", "Sleep/Wake", "Interval Status"])
        for i in range(n):
            t = START + timedelta(minutes=i)
            asleep = status[i] == "REST-S"
            w.writerow([i + 1, f"{t.month}/{t.day}/{t.year}", t.strftime("%I:%M:%S %p"), 0, counts[i], 0,
                        f"{(i % 300) * 1.5:.2f}", "1.0", "1.0", "1.0", 0 if asleep else 1, status[i]])
    return counts, status


def actigraph_header(epoch: str = "00:01:00") -> list[str]:
    return ["------------ Data File Created By ActiGraph GT3X+ ActiLife v6.13.3 Firmware v2.5.0 date format "
            "M/d/yyyy at 30 Hz  Filter Normal -----------",
            "Serial Number: MOS2E22180349", f"Start Time {START:%H:%M:%S}", f"Start Date {START.month}/{START.day}/{START.year}",
            f"Epoch Period (hh:mm:ss) {epoch}", "Download Time 10:37:52", "Download Date 3/8/2024",
            "Current Memory Address: 0", "Current Battery Voltage: 4.07     Mode = 12",
            "--------------------------------------------------"]


def write_actigraph_csv(path: Path, days: int = 3, with_times: bool = True, row_seconds: int = 60) -> np.ndarray:
    n = days * 1440
    axis1 = activity(n, seed=3)
    lines = actigraph_header()
    if with_times:
        lines.append("Date,Time,Axis1,Axis2,Axis3,Steps,Lux,Inclinometer Off,Inclinometer Standing,"
                     "Inclinometer Sitting,Inclinometer Lying,Vector Magnitude")
    for i in range(n):
        t = START + timedelta(seconds=i * row_seconds)
        row = f"{axis1[i]},{axis1[i] // 2},{axis1[i] // 3},{axis1[i] // 40},{i % 200},0,60,0,0,{axis1[i] * 1.2:.2f}"
        lines.append(f"{t.month}/{t.day}/{t.year},{t:%H:%M:%S},{row}" if with_times else row)
    path.write_text("\n".join(lines) + "\n")
    return axis1


def _ticks(t: datetime) -> int:
    return int((t - datetime(1, 1, 1)).total_seconds()) * 10_000_000


def write_agd(path: Path, days: int = 3, epoch: int = 60, skip_at: int | None = None) -> np.ndarray:
    n = days * 1440 * 60 // epoch
    axis1 = activity(n, seed=4)
    db = sqlite3.connect(path)
    db.execute("create table settings (settingID integer primary key, settingName varchar, settingValue varchar)")
    db.executemany("insert into settings (settingName, settingValue) values (?, ?)",
                   [("softwarename", "ActiLife"), ("deviceserial", "MOS0000001"), ("epochlength", str(epoch)),
                    ("startdatetime", str(_ticks(START))), ("subjectname", "s05")])
    db.execute("create table data (dataTimestamp integer not null, axis1 integer, axis2 integer, axis3 integer, "
               "steps integer, lux integer)")
    rows = []
    for i in range(n):
        t = START + timedelta(seconds=i * epoch + (epoch if skip_at is not None and i >= skip_at else 0))
        rows.append((_ticks(t), int(axis1[i]), int(axis1[i]) // 2, int(axis1[i]) // 3, int(axis1[i]) // 40, i % 100))
    db.executemany("insert into data values (?, ?, ?, ?, ?, ?)", rows)
    db.commit()
    db.close()
    return axis1


BIOBANK_CLASSES = ("sleep", "sedentary", "light", "MVPA")


def write_biobank(path: Path, days: int = 3, epoch: int = 30) -> list[str]:
    """30-s epochs in Europe/London (BST from 2024-03-31: a spring date keeps +0000); one-hot classes."""
    n = days * 86400 // epoch
    acc = activity(n, seed=5) / 10
    classes = []
    with gzip.open(path, "wt") as f:
        f.write("time,acc,imputed," + ",".join(BIOBANK_CLASSES) + "\n")
        for i in range(n):
            t = START + timedelta(seconds=i * epoch)
            hour = t.hour
            cls = "sleep" if hour < 7 else "MVPA" if 17 <= hour < 18 else "light" if 12 <= hour < 14 else "sedentary"
            classes.append(cls)
            onehot = ",".join("1" if c == cls else "0" for c in BIOBANK_CLASSES)
            f.write(f"{t:%Y-%m-%d %H:%M:%S}.000000+0000 [Europe/London],{acc[i]:.3f},0,{onehot}\n")
    return classes


# --------------------------------------------------------------------------------------------- FIT

_CRC_TABLE = (0x0000, 0xCC01, 0xD801, 0x1400, 0xF001, 0x3C00, 0x2800, 0xE401,
              0xA001, 0x6C00, 0x7800, 0xB401, 0x5000, 0x9C01, 0x8801, 0x4400)
_FIT_EPOCH = datetime(1989, 12, 31, tzinfo=timezone.utc)
_TYPES = {"enum": (0x00, "B"), "uint8": (0x02, "B"), "uint16": (0x84, "H"), "uint32": (0x86, "I")}


def fit_crc(data: bytes, crc: int = 0) -> int:
    for byte in data:
        for nibble in (byte & 0xF, byte >> 4):
            tmp = _CRC_TABLE[crc & 0xF]
            crc = ((crc >> 4) & 0x0FFF) ^ tmp ^ _CRC_TABLE[nibble]
    return crc


def _fit_time(t: datetime) -> int:
    return int((t - _FIT_EPOCH).total_seconds())


def _definition(local: int, global_num: int, fields: list[tuple[int, str]]) -> bytes:
    out = struct.pack("<BBBHB", 0x40 | local, 0, 0, global_num, len(fields))
    for num, kind in fields:
        base, fmt = _TYPES[kind]
        out += struct.pack("<BBB", num, struct.calcsize(fmt), base)
    return out


def _data(local: int, fields: list[tuple[int, str]], values: list[int]) -> bytes:
    return bytes([local]) + b"".join(struct.pack("<" + _TYPES[k][1], v) for (_, k), v in zip(fields, values))


def write_fit(path: Path, start: datetime, minutes: int = 60, sport: int = 1, local_offset_h: int = 1) -> np.ndarray:
    """One activity: a record a second (heart rate, cadence, speed), one session (sport 1 = running),
    its local time `local_offset_h` hours ahead of UTC. `start` is UTC."""
    start = start.replace(tzinfo=timezone.utc)
    rng = np.random.default_rng(6)
    n = minutes * 60
    hr = (120 + 30 * np.sin(np.arange(n) / 600) + rng.normal(0, 2, n)).astype(int)
    body = b""
    file_id = [(0, "enum"), (1, "uint16"), (4, "uint32")]
    body += _definition(0, 0, file_id) + _data(0, file_id, [4, 1, _fit_time(start)])
    record = [(253, "uint32"), (3, "uint8"), (4, "uint8"), (6, "uint16")]
    body += _definition(1, 20, record)
    for i in range(n):
        body += _data(1, record, [_fit_time(start + timedelta(seconds=i)), int(hr[i]), 85, 3200])
    end = start + timedelta(seconds=n)
    session = [(253, "uint32"), (2, "uint32"), (7, "uint32"), (5, "enum"), (6, "enum")]
    body += _definition(2, 18, session) + _data(2, session, [_fit_time(end), _fit_time(start), n * 1000, sport, 0])
    act = [(253, "uint32"), (5, "uint32")]
    body += _definition(3, 34, act) + _data(3, act, [_fit_time(end), _fit_time(end) + 3600 * local_offset_h])
    header = struct.pack("<BBHI4s", 14, 0x20, 2132, len(body), b".FIT")
    header += struct.pack("<H", fit_crc(header))
    data = header + body
    path.write_bytes(data + struct.pack("<H", fit_crc(data)))
    return hr


# --------------------------------------------------------------------------------------------- Apple Health


def write_apple_health(path: Path, days: int = 3) -> None:
    """Heart rate every 5 minutes, steps per 5 minutes, a run each afternoon, sleep each night;
    local time UTC+01:00."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>', "<!DOCTYPE HealthData [", "<!ELEMENT HealthData ANY>", "]>",
             '<HealthData locale="en_GB">', ' <ExportDate value="2024-03-08 10:00:00 +0100"/>']

    def stamp(t: datetime) -> str:
        return f"{t:%Y-%m-%d %H:%M:%S} +0100"

    for i in range(days * 288):
        t = START + timedelta(minutes=5 * i)
        hr = 150 if 17 <= t.hour < 18 else 55 if t.hour < 7 else 75
        lines.append(f' <Record type="HKQuantityTypeIdentifierHeartRate" sourceName="Watch" unit="count/min" '
                     f'startDate="{stamp(t)}" endDate="{stamp(t)}" value="{hr}"/>')
        lines.append(f' <Record type="HKQuantityTypeIdentifierStepCount" sourceName="Phone" unit="count" '
                     f'startDate="{stamp(t)}" endDate="{stamp(t + timedelta(minutes=5))}" value="{0 if t.hour < 7 else 300}"/>')
    for d in range(days):
        day = START + timedelta(days=d)
        lines.append(f' <Workout workoutActivityType="HKWorkoutActivityTypeRunning" duration="60" durationUnit="min" '
                     f'startDate="{stamp(day + timedelta(hours=17))}" endDate="{stamp(day + timedelta(hours=18))}">'
                     '<WorkoutStatistics type="HKQuantityTypeIdentifierHeartRate"/></Workout>')
        lines.append(f' <Record type="HKCategoryTypeIdentifierSleepAnalysis" sourceName="Watch" '
                     f'startDate="{stamp(day)}" endDate="{stamp(day + timedelta(hours=7))}" '
                     'value="HKCategoryValueSleepAnalysisAsleepCore"/>')
    lines.append("</HealthData>")
    path.write_text("\n".join(lines) + "\n")


# --------------------------------------------------------------------------------------------- GENEActiv BIN

GENEACTIV_GAIN = 25600  # raw 256 = 1 g with offset 0: x = (raw * 100 - offset) / gain


def write_geneactiv(path: Path, hours: float = 50, hz: int = 1, still_hours: tuple[int, int] = (30, 32),
                    samples_per_page: int = 300) -> np.ndarray:
    """A wrist at `hz` samples/s: gravity on z plus movement (swinging by the hour of day), lying
    perfectly still (not worn) for `still_hours`. Returns the per-sample ENMO in mg."""
    n = int(hours * 3600 * hz) // samples_per_page * samples_per_page
    rng = np.random.default_rng(7)
    t = np.arange(n) / hz
    hour = (t / 3600) % 24
    swing = np.where((hour > 8) & (hour < 20), 0.4, 0.05) * np.sin(2 * np.pi * 0.5 * t)
    xyz = np.stack([swing + rng.normal(0, 0.02, n), rng.normal(0, 0.02, n), 1.0 + 0.5 * swing], axis=1)
    still = (t >= still_hours[0] * 3600) & (t < still_hours[1] * 3600)
    xyz[still] = [0.0, 0.0, 1.0]
    raw = np.clip(np.round(xyz * 256), -2048, 2047).astype(np.int64)
    header = ["Device Identity", "Device Unique Serial Code:012345", "Device Type:GENEActiv", "Device Model:1.1",
              "Device Firmware Version:Ver06.17", "Calibration Date:2024-01-01 10:00:00:000", "",
              "Device Capabilities", "Accelerometer Range:-8 to 8", "Accelerometer Resolution:0.0039",
              "Accelerometer Units:g", "Light Meter Range:0 to 2500", "Light Meter Resolution:5",
              "Light Meter Units:lux", "Temperature Sensor Range:0 to 60", "Temperature Sensor Resolution:0.25",
              "Temperature Sensor Units:deg. C", "", "Configuration Info", f"Measurement Frequency:{hz} Hz",
              "Measurement Period:168 Hours", f"Start Time:{START:%Y-%m-%d %H:%M:%S}:000", "Time Zone:GMT +00:00", "",
              "Trial Info", "Study Centre:test", "Study Code:test", "Investigator ID:test", "Exercise Type:none",
              "Config Operator ID:test", "Config Time:2024-03-01 10:00:00:000", "Config Notes:", "Extract Operator ID:",
              "Extract Time:2024-03-08 10:00:00:000", "Extract Notes:", "", "Subject Info", "Device Location Code:left wrist",
              "Subject Code:s07", "Date of Birth:1980-01-01", "Sex:female", "Height:170", "Weight:60",
              "Handedness Code:right", "Subject Notes:", "", "Calibration Data", f"x gain:{GENEACTIV_GAIN}", "x offset:0",
              f"y gain:{GENEACTIV_GAIN}", "y offset:0", f"z gain:{GENEACTIV_GAIN}", "z offset:0", "Volts:300", "Lux:800",
              "", "Memory Status", f"Number of Pages:{n // samples_per_page}", ""]
    assert len(header) == 59
    lines = list(header)
    # 48 bits per sample: x, y, z (12-bit two's complement), light (10), button (1), padding (1)
    packed = ((raw[:, 0] & 0xFFF) << 36) | ((raw[:, 1] & 0xFFF) << 24) | ((raw[:, 2] & 0xFFF) << 12) | (100 << 2)
    for page in range(n // samples_per_page):
        at = START + timedelta(seconds=page * samples_per_page / hz)
        words = packed[page * samples_per_page:(page + 1) * samples_per_page]
        lines += ["Recorded Data", "Device Unique Serial Code:012345", f"Sequence Number:{page}",
                  f"Page Time:{at:%Y-%m-%d %H:%M:%S}:000", "Unassigned:", "Temperature:30.0", "Battery voltage:4.0",
                  "Device Status:Recording", f"Measurement Frequency:{float(hz)}",
                  "".join(f"{int(w):012X}" for w in words)]
    path.write_text("\n".join(lines) + "\n")
    g = raw / 256
    return np.maximum(np.linalg.norm(g, axis=1) - 1, 0) * 1000


# --------------------------------------------------------------------------------------------- Axivity CWA


def _cwa_time(t: datetime) -> int:
    return ((t.year - 2000) << 26) | (t.month << 22) | (t.day << 17) | (t.hour << 12) | (t.minute << 6) | t.second


def write_cwa(path: Path, hours: float = 3, hz: int = 25, still_hours: tuple[int, int] = (1, 2)) -> np.ndarray:
    """An AX3 recording at `hz` (unpacked 3 x int16 samples, 1/256 g, 80 a sector), lying still for
    `still_hours`; returns the per-sample ENMO in mg. Layout: the 1024-byte "MD" header, then
    512-byte "AX" sectors whose 16-bit words sum to zero (OpenMovement's CWA format)."""
    per_sector = 80
    n = int(hours * 3600 * hz) // per_sector * per_sector
    rng = np.random.default_rng(8)
    t = np.arange(n) / hz
    swing = 0.4 * np.sin(2 * np.pi * 0.5 * t)
    xyz = np.stack([swing + rng.normal(0, 0.02, n), rng.normal(0, 0.02, n), 1.0 + 0.5 * swing], axis=1)
    still = (t >= still_hours[0] * 3600) & (t < still_hours[1] * 3600)
    xyz[still] = [0.0, 0.0, 1.0]
    raw = np.clip(np.round(xyz * 256), -32768, 32767).astype("<i2")
    rate_byte = 0x40 | (15 - int(np.log2(3200 / hz)))  # +-8 g, rate = 3200 / 2^(15 - bits)
    header = bytearray(1024)
    header[0:2] = b"MD"
    struct.pack_into("<HBHIHIII", header, 2, 1020, 0x00, 4242, 7, 0, _cwa_time(START), 0, 0)
    header[36] = rate_byte
    sectors = []
    for s in range(n // per_sector):
        block = bytearray(512)
        first = s * per_sector  # its first sample; the timestamp names the sample on a whole second
        second = -(-first // hz)
        at = START + timedelta(seconds=second)
        struct.pack_into("<2sHHIIIHHBBBBhH", block, 0, b"AX", 508, 0, 7, s, _cwa_time(at), 100, 300, 0, 200,
                         rate_byte, 0x32, second * hz - first, per_sector)
        block[30:30 + per_sector * 6] = raw[s * per_sector:(s + 1) * per_sector].tobytes()
        words = np.frombuffer(bytes(block[:510]), "<u2").astype(np.int64).sum()
        struct.pack_into("<H", block, 510, (-int(words)) & 0xFFFF)
        sectors.append(bytes(block))
    path.write_bytes(bytes(header) + b"".join(sectors))
    g = raw.astype(np.float64) / 256
    return np.maximum(np.linalg.norm(g, axis=1) - 1, 0) * 1000
