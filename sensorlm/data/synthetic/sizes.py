"""Named sizes of the demo generators: one lookup for every generator."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, TypeVar

T = TypeVar("T")


def pick_size(sizes: Mapping[str, T], size_type: type[T], kind: str, size: str | T, overrides: dict[str, Any]) -> T:
    """The size named `size` in `sizes` (or `size` itself) with `overrides` applied (``None``
    values are ignored); a bad name or field is one ValueError naming the known ones."""
    if isinstance(size, str):
        if size not in sizes:
            raise ValueError(f"unknown {kind} size {size!r}; choose one of {sorted(sizes)}")
        size = sizes[size]
    elif not isinstance(size, size_type):
        raise ValueError(f"size must be a size name or {size_type.__name__}, got {type(size).__name__}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    names = {f.name for f in dataclasses.fields(size_type)}
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise ValueError(f"unknown {size_type.__name__} field(s) {unknown}; fields are {sorted(names)}")
    return dataclasses.replace(size, **overrides) if overrides else size
