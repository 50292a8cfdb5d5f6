"""The pieces every device-format reader uses: the format record, the recording it returns, errors,
and helpers for epochs and labels (`sensorlm.data.formats` registers the readers).

Device files as devices and their desktop software write them, read into one recording layout.

Each format is one record in `FORMATS` (name, extensions, a content sniffer, a reader); a reader
returns a `Recording`: a frame of ``time`` (naive local time), ``subject`` and one float column
per channel, the channels' default spec (name, unit, kind), and the labels the file carries as
intervals (``subject, start, end, label``). `sensorlm.data.device_import` takes it from there
exactly as for a long-format CSV (``--format long``, the format of everything else).

``detect`` picks a format from the file's content first and its extension second, and names the
formats it knows when none fits. Bad files are one `DeviceFormatError` naming the file and the
line, row or record.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    import pandas as pd


class DeviceFormatError(ValueError):
    """A device file of a known format that is truncated or inconsistent; names file and place."""


@dataclass(frozen=True)
class Channel:
    """A channel a format reads: its name in the dataset, unit and kind (`CHANNEL_KINDS`)."""

    name: str
    unit: str
    kind: str


@dataclass
class Recording:
    """What a device file holds.

    Args:
        frame: ``time`` (datetime64, naive local time), ``subject`` (str), one float column per channel.
        channels: the channels in `frame`, with units and kinds (the default channel spec).
        labels: label intervals (``subject, start, end, label``) the file carries, or None.
        notes: what the reader decided (for the import log).
    """

    frame: "pd.DataFrame"
    channels: list[Channel]
    labels: "pd.DataFrame | None" = None
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DeviceFormat:
    """One file format.

    Args:
        name: what ``--format`` takes.
        description: what it is, for the log and the docs.
        extensions: file name endings it is written with (lower case).
        sniff: True if a file's first bytes are of this format (None: by extension only).
        read: ``read(path, subject) -> Recording``; ``subject`` overrides the name the file carries.
        extra: the pip extra its reader needs, if any.
    """

    name: str
    description: str
    extensions: tuple[str, ...]
    sniff: Callable[[bytes], bool] | None
    read: Callable[[Path, str | None], Recording]
    extra: str | None = None


FORMATS: dict[str, DeviceFormat] = {}
LONG = "long"  # sensorlm's own long-format CSV / Parquet (device_import reads it)


def register(fmt: DeviceFormat) -> DeviceFormat:
    FORMATS[fmt.name] = fmt
    return fmt


def head_bytes(path: Path, size: int = 65536) -> bytes:
    """The first `size` bytes of a file (-1: all of it; of its decompressed content for ``.gz``)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            return f.read(size)
    except (OSError, EOFError) as exc:
        raise DeviceFormatError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None


def epoch_labels(subject: str, times: "pd.Series", labels: Sequence[Any], epoch: "pd.Timedelta") -> "pd.DataFrame":
    """Per-epoch labels as intervals: each run of one label is one interval (None/'' = no label).

    Args:
        subject: the subject.
        times: epoch start times, ascending.
        labels: one label per epoch.
        epoch: the epoch length (an interval ends one epoch after its last epoch starts).
    """
    import pandas as pd

    t = pd.Series(pd.to_datetime(list(times)))
    lab = pd.Series(list(labels), dtype=object).map(lambda x: None if x is None or x != x or x == "" else str(x))
    # a run ends where the label changes or an epoch is missing; unlabelled runs are dropped
    run = ((lab.fillna("\0") != lab.fillna("\0").shift()) | (t.diff() > epoch)).cumsum()
    runs = pd.DataFrame({"start": t, "last": t, "label": lab}).groupby(run, sort=False).agg(
        {"start": "first", "last": "last", "label": "first"})
    runs = runs[runs["label"].notna()]
    return pd.DataFrame({"subject": subject, "start": runs["start"].to_numpy(),
                         "end": (runs["last"] + epoch).to_numpy(), "label": runs["label"].to_numpy()},
                        columns=["subject", "start", "end", "label"])


def check_epochs(path: Path, times: "pd.Series", epoch: "pd.Timedelta", what: str, first_row: int = 1) -> None:
    """Rows must be `epoch` apart (the header's epoch and the timestamps agree); names the first row that is not."""
    import numpy as np

    if len(times) < 2:
        return
    steps = np.diff(times.to_numpy().astype("datetime64[ns]").astype(np.int64))
    bad = np.flatnonzero(steps != epoch.value)
    if bad.size:
        i = int(bad[0]) + 1
        got = steps[bad[0]] / 1e9
        raise DeviceFormatError(f"{path}: row {i + first_row}: {times.iloc[i]} is {got:g} s after the row before, but "
                                f"{what} says epochs of {epoch.total_seconds():g} s")


def frame_from(times: "pd.Series", subject: str, columns: dict[str, Any]) -> "pd.DataFrame":
    import pandas as pd

    frame = pd.DataFrame({"time": pd.to_datetime(times).reset_index(drop=True)})
    frame["subject"] = subject
    for name, values in columns.items():
        frame[name] = pd.to_numeric(pd.Series(values).reset_index(drop=True), errors="coerce").astype("float64")
    return frame
