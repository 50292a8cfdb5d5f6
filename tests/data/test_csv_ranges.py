"""A large CSV cut into byte ranges (`sensorlm.data.csv_ranges`): ranges end at line ends, rows
are counted as pandas counts them, files whose line ends are not row ends stay whole, and a range
reads and fails as the file's rows in that place."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from sensorlm.data import csv_ranges
from sensorlm.data.csv_ranges import CsvRange, plan_ranges, scan_range
from sensorlm.data.device_import import _cut_large_files
from sensorlm.data.device_reading import long_header_channels, read_long_chunks
from sensorlm.data.formats import LONG
from sensorlm.data.import_spec import DeviceImportError, ImportSpec
from sensorlm.data.import_units import FileUnit

HEADER = b"subject,time,HR[bpm],steps[count]\n"


def _rows(n: int, newline: bytes = b"\n") -> bytes:
    return b"".join(b"S%d,2024-01-01T%02d:%02d:00,%d,%d%s" % (i % 3, (i // 60) % 24, i % 60, 60 + i % 40, i % 7, newline)
                    for i in range(n))


def _spec() -> ImportSpec:
    return ImportSpec(time_column="time", subject_column="subject")


def _spans(path: Path) -> list[CsvRange]:
    units = _cut_large_files([FileUnit(0, str(path), LONG)], 1, lambda m: None)
    return [u.span for u in units]


@pytest.mark.parametrize("size", [1, 37, 100, 999, 10**6])
def test_ranges_cover_the_rows_and_end_at_line_ends(tmp_path, size):
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + _rows(300))
    data = path.read_bytes()
    ranges = plan_ranges(path, size)
    assert ranges[0][0] == len(HEADER) and ranges[-1][1] == len(data)
    assert all(a < b and b == c for (a, b), (c, _) in zip(ranges, ranges[1:]))  # contiguous, never empty
    assert all(data[b - 1: b] == b"\n" for _, b in ranges)
    assert sum(scan_range(path, a, b)["rows"] for a, b in ranges) == 300
    if size < len(data):
        assert len(ranges) > 1


@pytest.mark.parametrize("body, problem", [
    (b"S1,2024-01-01T00:00:00,60,1\n\n   \nS1,2024-01-01T00:01:00,61,2\n \t\r\n", None),  # blank lines are not rows
    (b"S1,2024-01-01T00:00:00,60,1\r\nS1,2024-01-01T00:01:00,61,2\r\n", None),
    (b"\nS1,2024-01-01T00:00:00,60,1\nS1,2024-01-01T00:01:00,61,2\n \t", None),
    (b'"S1",2024-01-01T00:00:00,60,1\nS1,"2024-01-01T00:01:00",61,2', None),  # quotes on one line; no final newline
    (b'"S1\nS2",2024-01-01T00:00:00,60,1\nS1,2024-01-01T00:01:00,61,2\n', "a quoted field spans lines"),
    (b"S1,2024-01-01T00:00:00,60,1\rS1,2024-01-01T00:01:00,61,2\r", "a carriage return ends a line"),
])
def test_rows_are_counted_as_pandas_counts_them(tmp_path, body, problem):
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + body)
    scan = scan_range(path, len(HEADER), path.stat().st_size)
    assert scan["problem"] == problem
    if problem is None:
        assert scan["rows"] == len(pd.read_csv(path, dtype=str, skipinitialspace=True))


def test_a_file_cut_in_ranges_reads_as_the_whole_file(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + _rows(1000) + b"\n  \n" + _rows(500))
    monkeypatch.setattr(csv_ranges, "RANGE_BYTES", 2000)
    spans = _spans(path)
    assert len(spans) > 10 and spans[0].row0 == 0 and spans[0].lines_before == 1
    channels = long_header_channels(path, _spec())
    whole = pd.concat(list(read_long_chunks(path, _spec(), channels, rows=128)), ignore_index=True)
    parts = pd.concat([c for s in spans for c in read_long_chunks(path, _spec(), channels, rows=128, span=s)],
                      ignore_index=True)
    pd.testing.assert_frame_equal(parts, whole)
    assert len(whole) == 1500


def _failure(path: Path, span: CsvRange | None) -> str:
    channels = long_header_channels(path, _spec())
    with pytest.raises(DeviceImportError) as err:
        list(read_long_chunks(path, _spec(), channels, rows=64, span=span))
    return str(err.value)


@pytest.mark.parametrize("bad_line, expected", [
    (b"S1,2024-01-01T09:00:00,n/a?,3\n", "row 702: column 'HR[bpm]' = 'n/a?' is not a number"),
    (b"S1,2024-01-01T09:00:00,70,3,4\n", "Expected 4 fields in line 705, saw 5"),
])
def test_a_bad_row_in_a_later_range_is_named_as_in_the_file(tmp_path, monkeypatch, bad_line, expected):
    """Row numbers skip the header and blank lines; pandas' line numbers count both."""
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + _rows(500) + b"\n\n" + _rows(201) + bad_line + _rows(100))
    monkeypatch.setattr(csv_ranges, "RANGE_BYTES", 3000)
    spans = _spans(path)
    holder = next(s for s, after in zip(spans, spans[1:]) if s.row0 <= 701 < after.row0)
    assert holder.row0 > 0 and holder.lines_before > holder.row0 + 1  # past the blank lines
    whole = _failure(path, None)
    assert expected in whole
    assert _failure(path, holder) == whole


def test_a_file_whose_line_ends_are_not_row_ends_stays_whole(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_bytes(HEADER + _rows(400) + b'"S1\nS2",2024-01-01T00:00:00,60,1\n' + _rows(400))
    monkeypatch.setattr(csv_ranges, "RANGE_BYTES", 2000)
    said: list[str] = []
    units = _cut_large_files([FileUnit(0, str(path), LONG), FileUnit(1, str(path), LONG)], 1, said.append)
    assert [(u.index, u.span) for u in units] == [(0, None), (1, None)]
    assert [m for m in said if not m.startswith("scan ranges:")] == ["a.csv: read by one task (a quoted field spans lines)"] * 2


def test_a_header_that_opens_a_quoted_field_keeps_the_file_whole(tmp_path, monkeypatch):
    path = tmp_path / "a.csv"
    path.write_bytes(b'"subject,time,HR[bpm],steps[count]\n' + _rows(400))
    monkeypatch.setattr(csv_ranges, "RANGE_BYTES", 2000)
    said: list[str] = []
    assert [u.span for u in _cut_large_files([FileUnit(0, str(path), LONG)], 1, said.append)] == [None]
    assert said == ["a.csv: read by one task (a quoted field spans lines in its header)"]
