"""Device files as devices and their desktop software write them (sensorlm import --format).

Each format is one record in `FORMATS`, registered by its reader module (`actigraphy`: epoch-level
actigraphy exports; `consumer`: Garmin/ANT FIT files and Apple Health exports); `detect` picks one
from a file's content first and its extension second. See `sensorlm.data.formats.base` for the
`Recording` a reader returns.
"""

from __future__ import annotations

from pathlib import Path

from sensorlm.data.formats import actigraphy, consumer  # noqa: F401  (each registers its formats)
from sensorlm.data.formats.base import (
    FORMATS,
    LONG,
    Channel,
    DeviceFormat,
    DeviceFormatError,
    Recording,
    head_bytes,
)


def known_formats() -> list[str]:
    return [LONG, *FORMATS]


def detect(path: str | Path) -> str:
    """The name of the format of `path`: by content, else by extension, else `LONG` for CSV and
    Parquet. Raises DeviceFormatError naming the known formats for anything else."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"device export not found: {path}")
    head = head_bytes(path)
    for fmt in FORMATS.values():
        if fmt.sniff is not None and fmt.sniff(head):
            return fmt.name
    name = path.name.lower()
    for fmt in FORMATS.values():
        if fmt.sniff is None and name.endswith(fmt.extensions):
            return fmt.name
    if name.endswith((".csv", ".parquet", ".csv.gz", ".txt")):
        return LONG
    raise DeviceFormatError(f"{path}: not a format sensorlm knows (by content or extension); known formats: "
                            f"{', '.join(known_formats())} (docs/data.md, 'Device formats')")


def get_format(name: str) -> DeviceFormat:
    if name not in FORMATS:
        raise DeviceFormatError(f"unknown format {name!r}; known formats: {', '.join(known_formats())}")
    return FORMATS[name]


__all__ = ["Channel", "DeviceFormat", "DeviceFormatError", "FORMATS", "LONG", "Recording", "detect", "get_format",
           "known_formats"]
