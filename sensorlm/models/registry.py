"""Model registry: named presets -> (config, builder), in the style of timm's `create_model`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from sensorlm.typed_config import ConfigError, replace


@dataclass(frozen=True)
class Preset:
    name: str
    config: Any  # a dataclass config instance
    build: Callable[[Any], nn.Module]  # config -> module


_PRESETS: dict[str, Preset] = {}


def register_preset(name: str, config: Any, build: Callable[[Any], nn.Module]) -> None:
    """Register a named preset. `build(config)` must return the model."""
    if name in _PRESETS:
        raise ValueError(f"model preset {name!r} registered twice")
    _PRESETS[name] = Preset(name, config, build)


def list_models() -> list[str]:
    _load_all()
    return sorted(_PRESETS)


def get_preset(name: str) -> Preset:
    _load_all()
    if name not in _PRESETS:
        raise ConfigError(f"unknown model preset {name!r} (known: {', '.join(sorted(_PRESETS))})")
    return _PRESETS[name]


def model_config(name: str, **overrides: Any) -> Any:
    """The preset's config with `overrides` applied and validated."""
    return replace(get_preset(name).config, **overrides) if overrides else get_preset(name).config


def create_model(name: str, **overrides: Any) -> nn.Module:
    """Build the model of preset `name`, with config fields overridden by keyword.

    Args:
        name: a registered preset, e.g. ``sensorlm_tiny`` or ``sst_base``.
        **overrides: config fields to change; unknown fields raise ConfigError naming them.
    """
    preset = get_preset(name)
    return preset.build(model_config(name, **overrides))


def build_from_config(config: Any) -> nn.Module:
    """Build a model from a resolved config instance (its type picks the builder)."""
    _load_all()
    for p in _PRESETS.values():
        if type(p.config) is type(config):
            return p.build(config)
    raise ConfigError(f"no model builder for config type {type(config).__name__}")


def _load_all() -> None:
    # Importing the family modules registers their presets.
    import sensorlm.models  # noqa: F401
