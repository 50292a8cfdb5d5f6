"""Typed configuration: dataclasses built from dicts/YAML with strict validation.

Every config in sensorlm is a (possibly nested) dataclass. `from_dict` builds one from a plain
mapping and rejects unknown keys and wrongly typed values with a message naming the full key
path (``train.lr: expected float, got 'abc'``). `merge_overrides` takes ``key=value`` strings
as typed on a command line.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from pathlib import Path
from typing import Any, Mapping, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value or key is invalid; the message names the key path."""


def did_you_mean(key: str, valid) -> str:
    """``; did you mean 'lr'?`` for the closest valid key, or "" when none is close."""
    import difflib

    close = difflib.get_close_matches(str(key), [str(k) for k in valid], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Check/convert `value` to annotation `tp`, raising ConfigError naming `path`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path)
            except ConfigError as e:
                # a list fails as the list arm says (wrong length, bad item), a scalar as a scalar arm
                if (typing.get_origin(arg) in (tuple, list)) == isinstance(value, (list, tuple)):
                    errors.append(str(e))
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"{path}: {value!r} matches none of {[_type_name(a) for a in args]}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{path}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, path)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} items, got {len(value)}")
            return tuple(_coerce(v, a, f"{path}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        item = args[0] if args else Any
        items = [_coerce(v, item, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{path}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                return float(value)
            except ValueError:
                raise ConfigError(f"{path}: expected a number, got {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], path: str = "") -> T:
    """Build dataclass `cls` from `data`, rejecting unknown keys and bad types.

    Args:
        cls: the dataclass type.
        data: a mapping of field names to values (nested mappings for nested configs).
        path: key prefix used in error messages.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        raise ConfigError(
            f"unknown config key {where}{unknown[0]!s}{did_you_mean(str(unknown[0]), fields)} "
            f"(valid keys: {', '.join(sorted(fields))})"
        )
    kwargs = {k: _coerce(v, hints[k], f"{path}.{k}" if path else k) for k, v in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{path or cls.__name__}: {e}") from e


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain nested dict of a dataclass config (tuples become lists, YAML-friendly)."""

    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, dict):
            return {k: convert(x) for k, x in v.items()}
        return v

    return convert(cfg)


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten nested dicts to dotted keys (for MLflow params)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if isinstance(v, Mapping):
            out.update(flatten(v, key))
        else:
            out[key] = v
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """Parse ``a.b.c=value`` into (['a','b','c'], value) with YAML typing of the value."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {key}: cannot parse value {raw!r}: {e}") from e
    return key.split("."), value


def merge_overrides(
    data: dict[str, Any], overrides: list[str], free_sections: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Return a copy of nested dict `data` with ``key=value`` overrides applied.

    Args:
        data: nested dict (e.g. ``to_dict(config)``).
        overrides: ``a.b=value`` strings; values are parsed as YAML.
        free_sections: dotted paths of dict-valued fields that accept new keys (validated later).
    """
    import copy

    out = copy.deepcopy(data)

    def free(path: list[str]) -> bool:  # inside a free-form section, at any depth
        dotted = ".".join(path)
        return any(dotted == f or dotted.startswith(f + ".") for f in free_sections)

    for text in overrides:
        keys, value = parse_override(text)
        node = out
        for i, k in enumerate(keys[:-1]):
            here = ".".join(keys[: i + 1])
            if k not in node and free(keys[:i]):
                node[k] = {}
            nxt = node.get(k)
            if not isinstance(nxt, dict):
                if k not in node:
                    raise ConfigError(f"unknown config key {here}{did_you_mean(k, node)}")
                raise ConfigError(f"{here} is not a section; cannot set {'.'.join(keys)}")
            node = nxt
        if keys[-1] not in node and not free(keys[:-1]):
            raise ConfigError(f"unknown config key {'.'.join(keys)}{did_you_mean(keys[-1], node)}")
        node[keys[-1]] = value
    return out


def deep_update(dst: dict, src: Mapping[str, Any], where: str, leaf_keys: tuple[str, ...] = ("overrides",),
                prefix: str = "") -> None:
    """Write the YAML mapping `src` into the defaults `dst` in place; a key `dst` lacks is an error
    naming the file (`where`), the key path and the valid keys. Dicts under `leaf_keys` are
    replaced whole, not merged (free-form sections checked later)."""
    for k, v in src.items():
        key = f"{prefix}{k}"
        if k not in dst:
            raise ConfigError(f"{where}: unknown config key {key}{did_you_mean(k, dst)} "
                              f"(valid keys: {', '.join(sorted(map(str, dst)))})")
        if isinstance(dst[k], dict) and isinstance(v, dict) and k not in leaf_keys:
            deep_update(dst[k], v, where, leaf_keys, key + ".")
        else:
            dst[k] = v


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with errors naming the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {p}: invalid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p}: top level must be a mapping, got {type(data).__name__}")
    return data


def replace(cfg: T, **overrides: Any) -> T:
    """`dataclasses.replace` that validates through `from_dict` (unknown keys named). A mapping given
    for a field that holds a config changes only the fields it names (``sensor={"input_len": 120}``
    keeps the preset's other sensor fields)."""
    data = to_dict(cfg)
    for k, v in overrides.items():
        if k not in data:
            raise ConfigError(
                f"unknown config key {k} for {type(cfg).__name__} (valid keys: {', '.join(sorted(data))})"
            )
        if isinstance(v, Mapping) and isinstance(data[k], dict) and dataclasses.is_dataclass(getattr(cfg, k)):
            deep_update(data[k], v, k, leaf_keys=(), prefix=f"{k}.")
            continue
        data[k] = to_dict(v) if dataclasses.is_dataclass(v) else v
    return from_dict(type(cfg), data)


# ---------------------------------------------------------------------------------------------
# secrets never leave in logs: params, config artifacts, sweep metadata, prints

REDACTED = "***"
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|api_key|apikey|access_key|credential)", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/@\s]*:)(?P<pw>[^@/\s]+)(?=@)")
_QUERY_SECRET = re.compile(r"(?P<k>[?&;](?:[A-Za-z_-]*(?:password|secret|token|key|signature)[A-Za-z_-]*|sig)=)[^&;\s]+",
                           re.IGNORECASE)
_AWS_KEY = re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b")
# "Authorization: Bearer <token>", and NAME=value assignments of secret-named variables at the
# start of a word (a pipe: command such as "pipe:AWS_SECRET_ACCESS_KEY=... aws s3 cp ...").
_BEARER = re.compile(r"(?P<k>\bBearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE)
_ENV_SECRET = re.compile(r"(?P<k>(?<![\w?&;-])[A-Za-z_][A-Za-z0-9_]*(?:PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIAL|SIG)"
                         r"[A-Za-z0-9_]*=)(?P<v>'[^']*'|\"[^\"]*\"|[^\s&;]+)", re.IGNORECASE)


def redact(value: Any) -> Any:
    """`value` with credentials replaced by ``***``: passwords in URLs (``http://u:***@host``),
    secret query parameters (Azure's ``sig=`` too), bearer tokens, ``KEY=value`` assignments of
    secret-named variables (``pipe:`` commands), AWS access key ids, and every value under a key that names a secret
    (password, token, secret, api_key, access_key, credential), recursively through dicts and lists."""
    if isinstance(value, str):
        text = _URL_PASSWORD.sub(lambda m: m.group("head") + REDACTED, value)
        text = _QUERY_SECRET.sub(lambda m: m.group("k") + REDACTED, text)
        text = _BEARER.sub(lambda m: m.group("k") + REDACTED, text)
        text = _ENV_SECRET.sub(lambda m: m.group("k") + REDACTED, text)
        return _AWS_KEY.sub(REDACTED, text)
    if isinstance(value, Mapping):
        return {k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v not in (None, "")
                    else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact(v) for v in value)
    return value
