"""Bounded scale parameters: a temperature or logit scale kept inside [min, max].

A model names its bounded parameters in raw (log) space with ``parameter_bounds()``; whoever
runs the optimizer clamps them in place after every step (`clamp_parameters_` here for a plain
loop; `sensorlm.training.bounds` under DeepSpeed). Clamping the parameter, not the value used in
the forward, is what open_clip does: a functional clamp gives the parameter a zero gradient once
it passes the bound, and it never comes back.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from sensorlm.typed_config import ConfigError

Bounds = dict[str, tuple[float | None, float | None]]


def check_scale_bounds(low: float | None, high: float | None, low_name: str, high_name: str) -> None:
    """Raise ConfigError unless each given bound is a finite number > 0 and low <= high."""
    for name, value in ((low_name, low), (high_name, high)):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{name}: expected a finite number > 0 (or null), got {value!r}")
    if low is not None and high is not None and low > high:
        raise ConfigError(f"{low_name} ({low}) is above {high_name} ({high})")


def clamp_init(value: float, low: float | None, high: float | None, name: str, low_name: str, high_name: str) -> float:
    """`value` (a scale's initial value) clamped into [low, high], with a warning naming both when it
    was outside: a model never runs a forward at a scale its bounds exclude (a sweep may draw an
    initial value and bounds that disagree; the trainer's clamp would only act after step 1)."""
    clamped = value
    if low is not None and clamped < low:
        clamped = low
    if high is not None and clamped > high:
        clamped = high
    if clamped != value:
        import warnings

        bound = low_name if clamped == low else high_name
        warnings.warn(f"{name} {value:g} is outside [{low_name}={low}, {high_name}={high}]: the model starts at "
                      f"{bound} {clamped:g}", stacklevel=3)
    return clamped


def log_bounds(param: str, low: float | None, high: float | None) -> Bounds:
    """{param: (log low, log high)} for a parameter that holds the log of a scale; {} if unbounded."""
    if low is None and high is None:
        return {}
    return {param: (None if low is None else math.log(low), None if high is None else math.log(high))}


@torch.no_grad()
def clamp_parameters_(model: nn.Module) -> None:
    """Clamp a plain module's bounded parameters in place (a loop without DeepSpeed)."""
    bounds = model.parameter_bounds() if hasattr(model, "parameter_bounds") else {}
    for name, (low, high) in bounds.items():
        model.get_parameter(name).clamp_(low, high)
