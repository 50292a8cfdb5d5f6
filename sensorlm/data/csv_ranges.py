"""A large CSV export read by several tasks: byte ranges cut at line ends, their rows counted
first so that every error still names the file's own row.

The driver cuts a local, uncompressed CSV past `RANGE_BYTES` into ranges of about that size,
each moved to the next line end (`plan_ranges`: a few seeks). One task per range counts its rows
as pandas will (blank and whitespace-only lines are not rows) and checks that line ends are line
ends (`scan_range`): a line with an odd number of quote characters opens a quoted field across
lines, and a carriage return alone ends a line for pandas; either makes the file one unit, read
in order, as any file that is not cut. The counts give each range its first row, and a range is
then parsed like the file's rows in that place (`read_range`, with the file's header names).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

RANGE_BYTES = 32 << 20  # bytes of CSV per task when a file is cut (about 200,000 rows of a 7-channel export)

_PARSER_LINE = re.compile(r"(line )(\d+)")
_BLANK_START = re.compile(rb"\n[\n\r\t ]")  # a line that may hold nothing but white space


@dataclasses.dataclass(frozen=True)
class CsvRange:
    """Bytes [start, end) of a CSV, the 0-based number of its first row, and the file's lines before it."""

    start: int
    end: int
    row0: int
    lines_before: int


def can_cut(location: str) -> bool:
    """A file `plan_ranges` may cut: local (a URL is fetched whole by its one task) and plain CSV."""
    return "://" not in location and location.lower().endswith((".csv", ".txt")) and Path(location).is_file()


def plan_ranges(path: str | Path, size: int | None = None) -> list[tuple[int, int]]:
    """[start, end) byte ranges after the header line, each ending at a line end; one range for a
    file under `size` (default `RANGE_BYTES`)."""
    size = size or RANGE_BYTES
    total = Path(path).stat().st_size
    with open(path, "rb") as f:
        f.readline()
        cuts = [f.tell()]
        while cuts[-1] + size < total:
            f.seek(cuts[-1] + size - 1)
            f.readline()  # to the end of the line the cut falls in (or just after, if the cut is a line end)
            if f.tell() >= total:
                break
            cuts.append(f.tell())
    return list(zip(cuts, cuts[1:] + [total]))


def read_range(path: str | Path, start: int, end: int) -> bytes:
    with open(path, "rb") as f:
        f.seek(start)
        return f.read(end - start)


def scan_range(path: str | Path, start: int, end: int) -> dict:
    """Rows (non-blank lines) and lines of one range, and why the file cannot be cut there, if so."""
    data = read_range(path, start, end)
    problem = None
    if b"\r" in data and data.count(b"\r") != data.count(b"\r\n"):
        problem = "a carriage return ends a line"
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    # One pass of byte searches settles most ranges (about 50 ms for 32 MiB); lines are split
    # only where a blank line or a quote may be.
    maybe_blank = data[:1] in (b"\n", b" ", b"\t", b"\r") or _BLANK_START.search(data) is not None
    if not (maybe_blank or b'"' in data) or problem:
        return {"rows": lines, "lines": lines, "problem": problem}
    split = data.split(b"\n")
    if split and not split[-1]:
        split.pop()
    if b'"' in data and any(line.count(b'"') % 2 for line in split):
        problem = "a quoted field spans lines"
    return {"rows": sum(1 for line in split if line.strip(b" \t\r")), "lines": lines, "problem": problem}


def global_parser_line(message: str, lines_before: int) -> str:
    """A pandas parser message's line numbers, counted in the range, as the file's (header included)."""
    return _PARSER_LINE.sub(lambda m: f"{m.group(1)}{int(m.group(2)) + lines_before}", message)
