"""Model package: the directory a trainer hands to MLflow (and anyone else) to rebuild a model.

Layout (nothing in it is pickled, so loading a package never executes code from it)::

    model.safetensors   plain CPU state dict (safetensors.torch)
    model_config.json   {"preset": str, "family": str, "config": {...}}; rebuild with
                        ``create_model(preset, **config)``; from the trainer also "training":
                        {"precision", "weights" (bf16 runs: DeepSpeed's fp32 masters), "zero_stage"}
    tokenizer.json      the caption tokenizer (SensorLM family; read by
                        ``sensorlm.data.tokenizer.load_tokenizer``)
    data_stats.json     the dataset manifest's normalisation entries, as the trainer copies them:
                        SensorLM: {"stats": {"sensor": {"mean": [C], "std": [C]}}, ...}
                        SST:      {"stats": {"sst": {"mean": float, "std": float}}, ...} (degrees C)
                        Other manifest keys ("channels", "sample_shape", "activities") are kept.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from sensorlm.typed_config import to_dict

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
TOKENIZER_FILE = "tokenizer.json"
DATA_STATS_FILE = "data_stats.json"

@dataclass
class ModelPackage:
    """A loaded model package.

    Args:
        model: the rebuilt module, in eval mode, on CPU.
        preset: the registry preset it was built from.
        config: the resolved config dict (as written to model_config.json).
        family: model family ("sensorlm", "sst", ...).
        tokenizer: the packaged caption tokenizer (``SensorTokenizer``), or None.
        data_stats: the parsed data_stats.json, or None.
    """

    model: nn.Module
    preset: str
    config: dict[str, Any]
    family: str
    tokenizer: Any
    data_stats: dict[str, Any] | None


def model_family(config: Any) -> str:
    """The family of a model config: its record in `sensorlm.families`, else the config
    class name without a trailing "Config", lower-cased (a bare tower such as HVT).

    Args:
        config: a resolved model config instance.
    """
    from sensorlm.families import family_of_config

    family = family_of_config(config)
    if family is not None:
        return family.name
    name = type(config).__name__
    return (name[: -len("Config")] if name.endswith("Config") else name).lower()


def _plain_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies of every tensor; safetensors refuses tensors that share storage
    (tied weights), so each entry gets its own clone."""
    out: dict[str, torch.Tensor] = {}
    own = model.state_dict()
    if state is not None:
        if set(state) != set(own) or any(tuple(state[k].shape) != tuple(own[k].shape) for k in own):
            raise ValueError("state_dict does not match the model's keys and shapes")
        own = state
    for key, value in own.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")
        out[key] = value.detach().to("cpu").contiguous().clone()
    return out


def _check_json_number(value: Any, where: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"data_stats {where}: expected a finite number, got {value!r}")


def _stats_entry(stats: Mapping[str, Any], kind: str) -> Mapping[str, Any]:
    entry = stats.get("stats")
    if not isinstance(entry, Mapping) or not isinstance(entry.get(kind), Mapping):
        raise ValueError(
            f"data_stats: missing 'stats.{kind}' (the dataset manifest's \"stats\" entry, "
            f'e.g. {{"stats": {{"{kind}": {{"mean": ..., "std": ...}}}}}}); has keys {sorted(stats)}'
        )
    return entry[kind]


def sensor_normalisation(stats: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """Per-channel (mean, std) of a SensorLM package's data_stats, validated.

    Args:
        stats: the data_stats mapping (``stats.sensor.mean`` / ``stats.sensor.std``, C values each).
    """
    entry = _stats_entry(stats, "sensor")
    values = {}
    for name in ("mean", "std"):
        seq = entry.get(name)
        if not isinstance(seq, (list, tuple)) or not seq:
            raise ValueError(f"data_stats stats.sensor.{name}: expected a list of per-channel values, got {seq!r}")
        for i, v in enumerate(seq):
            _check_json_number(v, f"stats.sensor.{name}[{i}]")
        values[name] = [float(v) for v in seq]
    if len(values["mean"]) != len(values["std"]):
        raise ValueError(
            f"data_stats stats.sensor: mean has {len(values['mean'])} channels, std has {len(values['std'])}"
        )
    bad = [i for i, v in enumerate(values["std"]) if v <= 0]
    if bad:
        raise ValueError(f"data_stats stats.sensor.std: channel {bad[0]} has std {values['std'][bad[0]]} (must be > 0)")
    return values["mean"], values["std"]


def sst_normalisation(stats: Mapping[str, Any]) -> tuple[float, float]:
    """(mean, std) in degrees C of an SST package's data_stats, validated.

    Args:
        stats: the data_stats mapping (``stats.sst.mean`` / ``stats.sst.std``).
    """
    entry = _stats_entry(stats, "sst")
    for name in ("mean", "std"):
        _check_json_number(entry.get(name), f"stats.sst.{name}")
    if entry["std"] <= 0:
        raise ValueError(f"data_stats stats.sst.std: must be > 0, got {entry['std']!r}")
    return float(entry["mean"]), float(entry["std"])


def check_sensor_stats(stats: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    """A sensor package's per-channel statistics: one per channel of its sensor tower."""
    mean, _ = sensor_normalisation(stats)
    channels = config.get("sensor", {}).get("num_channels")
    if channels is not None and len(mean) != channels:
        raise ValueError(
            f"data_stats stats.sensor: {len(mean)} channels, but the model config has "
            f"sensor.num_channels = {channels}"
        )


def check_sst_stats(stats: Mapping[str, Any], config: Mapping[str, Any]) -> None:
    sst_normalisation(stats)


def _validate_data_stats(stats: Mapping[str, Any], family: str, config: Mapping[str, Any]) -> None:
    """Check the entries the pyfunc needs, so a bad package fails when written, not when served
    (by the family record's `stats_check`)."""
    from sensorlm.families import FAMILIES, resolve

    if not isinstance(stats, Mapping):
        raise ValueError(f"data_stats: expected a mapping, got {type(stats).__name__}")
    record = FAMILIES.get(family)
    if record is not None and record.stats_check:
        resolve(record.stats_check)(stats, config)


def save_model_package(
    model: nn.Module,
    preset: str,
    config: Any,
    out_dir: str | Path,
    *,
    tokenizer_path: str | Path | None = None,
    tokenizer_json: str | None = None,
    data_stats: Mapping[str, Any] | None = None,
    state_dict: Mapping[str, torch.Tensor] | None = None,
    training: Mapping[str, Any] | None = None,
) -> Path:
    """Write a model package directory (see the module docstring for the layout).

    Args:
        model: the trained module (any device; weights are copied to CPU).
        preset: registry preset the model was built from (``create_model(preset, **config)``).
        config: the resolved config, a dataclass instance or its ``to_dict`` mapping.
        out_dir: directory to write (created; existing package files are overwritten).
        tokenizer_path: tokenizer.json to copy in (needed by SensorLM text inference).
        tokenizer_json: the tokenizer's JSON text instead (a dataset read through a URL or a
            ``pipe:`` template has no local file).
        data_stats: normalisation statistics (see module docstring); validated for the family.
        state_dict: the weights to write instead of ``model.state_dict()`` (e.g. fp32 master
            weights of a bf16 run); same keys and shapes.
        training: how the weights were trained (precision, ...), kept in model_config.json.

    Returns:
        The package directory.
    """
    from sensorlm.models import model_config

    config_dict = to_dict(config) if dataclasses.is_dataclass(config) else dict(config)
    # Fail now, not at load time, if the preset cannot take this config.
    resolved = model_config(preset, **config_dict)
    family = model_family(resolved)
    if data_stats is not None:
        _validate_data_stats(data_stats, family, to_dict(resolved))
    if tokenizer_path is not None and tokenizer_json is not None:
        raise ValueError("give tokenizer_path or tokenizer_json, not both")
    if tokenizer_path is not None:
        if not Path(tokenizer_path).is_file():
            raise FileNotFoundError(f"tokenizer file {tokenizer_path} does not exist")
        tokenizer_json = Path(tokenizer_path).read_text(encoding="utf-8")
    if tokenizer_json is not None:
        from sensorlm.data.tokenizer import tokenizer_from_str

        vocab = tokenizer_from_str(tokenizer_json, str(tokenizer_path or "tokenizer_json")).vocab_size
        model_vocab = to_dict(resolved).get("text", {}).get("vocab_size")
        if model_vocab is not None and vocab > model_vocab:
            raise ValueError(
                f"tokenizer {tokenizer_path or ''} has {vocab} ids but the model's text.vocab_size is {model_vocab}"
            )

    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = _plain_state_dict(model, state_dict)
    save_file(weights, str(out / WEIGHTS_FILE), metadata={"preset": preset})
    meta = {"preset": preset, "family": family, "config": to_dict(resolved)}
    if training:
        meta["training"] = dict(training)
    (out / CONFIG_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    if tokenizer_json is not None:
        (out / TOKENIZER_FILE).write_text(tokenizer_json, encoding="utf-8")
    if data_stats is not None:
        (out / DATA_STATS_FILE).write_text(json.dumps(dict(data_stats), indent=2, sort_keys=True) + "\n")
    return out


def read_package_meta(package_dir: str | Path) -> dict[str, Any]:
    """Parse and check ``model_config.json`` of a package.

    Args:
        package_dir: the package directory.
    """
    path = Path(package_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"model package {package_dir}: missing {CONFIG_FILE} ({path})")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: invalid JSON: {e}") from e
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(meta).__name__}")
    for key, kind in (("preset", str), ("config", dict)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{path}: key {key!r} must be a {kind.__name__}, got {meta.get(key)!r}")
    if "family" not in meta:
        from sensorlm.models import model_config

        meta["family"] = model_family(model_config(meta["preset"], **meta["config"]))
    return meta


def load_state_dict_strict(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Copy `state` into `model`, raising ValueError naming the first key that does not fit.

    Args:
        model: the freshly built module.
        state: tensors by key.
        source: file name used in the messages.
    """
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing:
        raise ValueError(
            f"{source}: missing key {missing[0]!r} (expected shape {tuple(expected[missing[0]].shape)}); "
            f"{len(missing)} missing in all"
        )
    if unexpected:
        raise ValueError(
            f"{source}: unexpected key {unexpected[0]!r} (shape {tuple(state[unexpected[0]].shape)}); "
            f"{len(unexpected)} unexpected in all"
        )
    for key, value in expected.items():
        if tuple(state[key].shape) != tuple(value.shape):
            raise ValueError(
                f"{source}: shape mismatch for {key!r}: file has {tuple(state[key].shape)}, "
                f"model expects {tuple(value.shape)}"
            )
    model.load_state_dict(dict(state), strict=True)


def load_model_package(package_dir: str | Path) -> ModelPackage:
    """Rebuild the model of a package directory (no pickle involved).

    Args:
        package_dir: directory written by :func:`save_model_package`.

    Raises:
        FileNotFoundError: naming the missing file.
        ValueError: naming the bad key / shape.
    """
    from safetensors.torch import load_file

    from sensorlm.families import FAMILIES
    from sensorlm.models import create_model

    root = Path(package_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"model package directory {root} does not exist")
    meta = read_package_meta(root)
    weights = root / WEIGHTS_FILE
    if not weights.is_file():
        raise FileNotFoundError(f"model package {root}: missing {WEIGHTS_FILE} ({weights})")
    try:
        config = dict(meta["config"])
        record = FAMILIES.get(meta.get("family"))
        for key, value in (record.legacy_config if record else {}).items():
            config.setdefault(key, value)  # a field packages written before it lack
        model = create_model(meta["preset"], **config)
    except ValueError as e:  # ConfigError: unknown preset or config key, named in the message
        raise ValueError(f"model package {root}: {CONFIG_FILE} does not rebuild a model: {e}") from e
    load_state_dict_strict(model, load_file(str(weights), device="cpu"), WEIGHTS_FILE)
    model.eval()

    data_stats = None
    stats_path = root / DATA_STATS_FILE
    if stats_path.is_file():
        try:
            data_stats = json.loads(stats_path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{stats_path}: invalid JSON: {e}") from e
        _validate_data_stats(data_stats, meta["family"], meta["config"])
    tokenizer = None
    if (root / TOKENIZER_FILE).is_file():
        from sensorlm.data.tokenizer import load_tokenizer

        tokenizer = load_tokenizer(root / TOKENIZER_FILE)
    return ModelPackage(
        model=model,
        preset=meta["preset"],
        config=meta["config"],
        family=meta["family"],
        tokenizer=tokenizer,
        data_stats=data_stats,
    )


def read_mlmodel(root: Path) -> dict[str, Any] | None:
    """The parsed MLmodel file of a logged model directory, or None."""
    import yaml

    path = root / "MLmodel"
    if not path.is_file():
        return None
    meta = yaml.safe_load(path.read_text())
    return meta if isinstance(meta, dict) else None


def find_package_dir(root: str | Path, what: str) -> Path:
    """The model package inside a downloaded model: `root` itself, or the pyfunc's "package" artifact.

    Args:
        root: a package directory or a logged pyfunc model directory (holding ``MLmodel``).
        what: the model's URI, for messages.
    """
    root = Path(root)
    if (root / CONFIG_FILE).is_file():
        return root
    meta = read_mlmodel(root)
    if meta is not None:
        artifacts = (meta.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
        rel = (artifacts.get("package") or {}).get("path")
        if rel and (root / rel / CONFIG_FILE).is_file():
            return root / rel
    # A package logged as a plain artifact one level down (e.g. runs:/ID/outputs).
    hits = sorted(p.parent for p in root.glob(f"*/{CONFIG_FILE}")) + sorted(
        p.parent for p in root.glob(f"artifacts/*/{CONFIG_FILE}")
    )
    if len(hits) == 1:
        return hits[0]
    raise FileNotFoundError(
        f"{what}: no model package found in {root} (expected {CONFIG_FILE}, or an MLmodel whose "
        f"pyfunc artifact 'package' holds one)"
    )
