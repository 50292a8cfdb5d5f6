"""What `sensorlm import` reads: the channel spec (channels, units, kinds, time and subject
columns, grid, windows, split) and the one error every bad input becomes.

A spec is YAML or JSON with every field optional (`ImportSpec`); docs/data.md shows one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from sensorlm.data.captioner import CHANNEL_KINDS, DEFAULT_PROMPT_TEMPLATE, check_prompt_template, infer_kind
from sensorlm.typed_config import ConfigError, from_dict, load_yaml, to_dict

HEADER = re.compile(r"^\s*(?P<name>[^\[\]]+?)\s*\[(?P<unit>[^\[\]]*)\]\s*$")
_NAME_OK = re.compile(r"^[A-Za-z0-9_ .-]+\Z")

class DeviceImportError(ValueError):
    """A device export, channel spec or label file cannot be imported; the message names the file,
    the row or time and the column."""



@dataclass
class ChannelSpec:
    """One channel: its name in the dataset, unit, kind (`CHANNEL_KINDS`), source column, aggregation.

    Args:
        name: channel name in the dataset (letters, digits, ``_ .-``).
        unit: unit as the device reports it.
        kind: what it measures; decides the resampling and which captions it feeds.
        column: the export's column (default: ``name``, or ``name[unit]``).
        agg: ``mean``, ``sum``, ``max``, ``min`` or ``last`` (default: by kind).
    """

    name: str
    unit: str = ""
    kind: str = "level"
    column: str | None = None
    agg: str | None = None

    def __post_init__(self):
        if not _NAME_OK.match(self.name):
            raise ConfigError(f"channel {self.name!r}: names may hold letters, digits, '_', ' ', '.', '-'")
        if self.kind not in CHANNEL_KINDS:
            raise ConfigError(f"channel {self.name!r}: unknown kind {self.kind!r} (known: {', '.join(CHANNEL_KINDS)})")
        if self.agg is not None and self.agg not in ("mean", "sum", "max", "min", "last"):
            raise ConfigError(f"channel {self.name!r}: agg {self.agg!r} is not one of mean, sum, max, min, last")

    @property
    def aggregation(self) -> str:
        return self.agg or CHANNEL_KINDS[self.kind]


@dataclass
class SplitSpec:
    """How windows are split into train and val: by ``subject``, by ``day`` (subject-day), or
    ``auto`` (by subject with 5 or more subjects, else by day). ``folds`` >= 2 deals the units
    into that many folds instead (`sensorlm.data.folds`; ``val_fraction`` is then unused)."""

    by: Literal["auto", "subject", "day"] = "auto"
    val_fraction: float = 0.2
    seed: int = 0
    folds: int = 0

    def __post_init__(self):
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"split.val_fraction must lie in (0, 1), got {self.val_fraction}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"split.folds must be 0 (one train/val split) or >= 2, got {self.folds}")


@dataclass
class ImportSpec:
    """How to read one kind of device export (a YAML or JSON file; every field has a default).

    Args:
        time_column: the timestamp column.
        subject_column: the subject column (None: one subject per file, named by ``subject`` or the file stem).
        subject: subject name when there is no subject column.
        time_format: strftime format of the timestamps (None: ISO 8601).
        timezone: zone that tz-aware timestamps are converted to before the offset is dropped
            (None: their own offset); naive timestamps are taken as local time.
        grid_seconds: resampling grid.
        window_minutes / stride_minutes: window length and stride; windows start at local midnight.
        min_coverage: windows with a smaller fraction of grid points holding data are dropped.
        main_label_min_fraction: the most-covering label becomes the window's main label only if
            it covers at least this fraction of the window.
        prompt_template: zero-shot prompt (and the captions' summary sentence), ``{label}`` placeholder.
        channels: the channels to import; empty = every ``name[unit]`` column of the export.
    """

    time_column: str = "time"
    subject_column: str | None = "subject"
    subject: str | None = None
    time_format: str | None = None
    timezone: str | None = None
    grid_seconds: int = 60
    window_minutes: int = 1440
    stride_minutes: int | None = None
    min_coverage: float = 0.5
    main_label_min_fraction: float = 0.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    split: SplitSpec = field(default_factory=SplitSpec)
    channels: list[ChannelSpec] = field(default_factory=list)

    def __post_init__(self):
        if self.grid_seconds < 1:
            raise ConfigError(f"grid_seconds must be >= 1, got {self.grid_seconds}")
        if self.window_minutes * 60 % self.grid_seconds:
            raise ConfigError(f"window_minutes {self.window_minutes} is not a whole number of {self.grid_seconds}-s grid steps")
        stride = self.stride_minutes or self.window_minutes
        if stride < 1 or stride * 60 % self.grid_seconds:
            raise ConfigError(f"stride_minutes {stride} must be a positive whole number of grid steps")
        if not 0 <= self.min_coverage <= 1:
            raise ConfigError(f"min_coverage must lie in [0, 1], got {self.min_coverage}")
        check_prompt_template(self.prompt_template, "prompt_template", ConfigError)
        names = [c.name for c in self.channels]
        if len(set(names)) != len(names):
            raise ConfigError(f"channels: duplicate names in {names}")

    @property
    def seq_len(self) -> int:
        return self.window_minutes * 60 // self.grid_seconds

    @property
    def step_min(self) -> float:
        return self.grid_seconds / 60.0


def load_import_spec(path: str | Path | None = None, **overrides: Any) -> ImportSpec:
    """Read a channel spec (YAML/JSON; JSON is YAML) and apply keyword overrides (None = unset)."""
    data = to_dict(ImportSpec())
    if path is not None:
        raw = load_yaml(path)
        chans = raw.get("channels")
        if isinstance(chans, dict):  # {name: {unit, kind, ...}} is accepted too
            raw["channels"] = [{"name": k, **(v or {})} for k, v in chans.items()]
        unknown = set(raw) - set(data)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {sorted(unknown)} (valid keys: {', '.join(sorted(data))})")
        data.update(raw)
    for k, v in overrides.items():
        if v is not None:
            data[k] = v
    return from_dict(ImportSpec, data, "")


def channels_from_header(columns: Sequence[str], skip: Sequence[str]) -> list[ChannelSpec]:
    """Channels from ``name[unit]`` column headers, kinds inferred from name and unit."""
    out = []
    for col in columns:
        if col in skip:
            continue
        m = HEADER.match(str(col))
        if m:
            name, unit = m.group("name"), m.group("unit").strip()
            out.append(ChannelSpec(name=name, unit=unit, kind=infer_kind(name, unit), column=col))
    return out


__all__ = ["ChannelSpec", "DeviceImportError", "HEADER", "ImportSpec", "SplitSpec", "channels_from_header",
           "load_import_spec"]
