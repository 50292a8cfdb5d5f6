"""The data decides the model's input: shape and vocabulary read from the manifest on the driver.

A preset names an architecture (widths, depths, patch size); the dataset says what goes in. Before
Ray starts, `fit_model_to_data` sets the sensor tower's ``input_len`` and ``num_channels`` from the
manifest's ``sample_shape``, picks a patch that divides the new shape (`fit_patch`), and widens the
text vocabulary to the tokenizer's. A field the user set explicitly in ``model.overrides`` is kept,
and if it contradicts the data the run stops with one line naming both values.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from sensorlm.typed_config import ConfigError, to_dict
from sensorlm.training.config import TrainConfig


def _largest_divisor_at_most(n: int, limit: int) -> int:
    return max(d for d in range(1, max(1, min(n, limit)) + 1) if n % d == 0)


def fit_patch(patch: tuple[int, int], preset_shape: tuple[int, int], shape: tuple[int, int]) -> tuple[int, int]:
    """A patch for `shape` in the spirit of the preset's.

    The time patch is kept if it divides the new length, else the largest divisor below it. A patch
    spanning all of the preset's channels spans all of the data's; otherwise the channel patch is
    kept if it divides the channel count, else the largest divisor below it.

    Args:
        patch: the preset's (time, channels) patch.
        preset_shape: the preset's (input_len, num_channels).
        shape: the data's (input_len, num_channels).
    """
    (pt, pc), (_, c0), (t, c) = patch, preset_shape, shape
    pt = pt if t % pt == 0 else _largest_divisor_at_most(t, pt)
    pc = c if pc == c0 else (pc if c % pc == 0 else _largest_divisor_at_most(c, pc))
    return pt, pc


def _fit_tower(named: Mapping[str, Any], current, shape: tuple[int, int], patch_field: str, where: str,
               origin: str) -> dict[str, Any]:
    """Override dict that puts `current` (a tower config) on `shape`, respecting fields in `named`."""
    data_values = {"input_len": shape[0], "num_channels": shape[1]}
    for name, value in data_values.items():
        if name in named and named[name] != value:
            raise ConfigError(
                f"{where}.{name}={named[name]} but the data has {name} {value} ({origin}); drop the override "
                "or use matching data"
            )
    fit: dict[str, Any] = {k: v for k, v in data_values.items() if getattr(current, k) != v}
    preset_shape = (current.input_len, current.num_channels)
    patch = tuple(getattr(current, patch_field))
    if patch_field in named:
        if shape[0] % patch[0] or shape[1] % patch[1]:
            raise ConfigError(f"{where}.{patch_field}={list(patch)} does not divide the data's shape {shape} ({origin})")
    else:
        new = fit_patch(patch, preset_shape, shape)
        if new != patch:
            fit[patch_field] = new
    return fit


def fit_model_to_data(cfg: TrainConfig, manifest: Mapping[str, Any], origin: str = "manifest",
                      log=print) -> TrainConfig:
    """`cfg` with the model's input shape and vocabulary taken from the dataset's manifest.

    Args:
        cfg: the validated run config.
        manifest: the dataset's manifest.
        origin: where the manifest came from, for messages.
        log: printer of the one line that says what changed (None: silent).

    Raises:
        ConfigError naming the override and the data's value when they disagree.
    """
    from sensorlm.models import model_config

    if not manifest.get("activities") and cfg.checkpoint.best_metric == "val/zero_shot_acc":
        # Unlabelled recordings are what SensorLM pretrains on: the README's command just works,
        # ranking checkpoints by what validation does report.
        cfg = dataclasses.replace(cfg, checkpoint=dataclasses.replace(cfg.checkpoint, best_metric="val/loss",
                                                                       best_mode="min"))
        if log:
            log(f"[sensorlm] {origin}: the dataset has no labels, so checkpoints are ranked by val/loss "
                "(lower is better) instead of val/zero_shot_acc")
    shape_list = (manifest.get("sample_shape") or {}).get("sensor")
    if not shape_list or len(shape_list) != 2:
        raise ConfigError(f"{origin}: sample_shape has no 2-D 'sensor' entry; is this a wearable dataset?")
    shape = (int(shape_list[0]), int(shape_list[1]))
    origin = f"{origin}: sensor {shape[0]}x{shape[1]}"
    overrides = to_dict(cfg.model.overrides)
    current = model_config(cfg.model.preset, **overrides)
    fit: dict[str, Any] = {}
    sensor = _fit_tower(overrides.get("sensor") or {}, current.sensor, shape, "patch", "model.overrides.sensor", origin)
    if sensor:
        fit["sensor"] = sensor
    if current.sensor_tower == "hvt" and current.hvt is not None:
        hvt = _fit_tower(overrides.get("hvt") or {}, current.hvt, shape, "patch_size", "model.overrides.hvt", origin)
        if hvt:
            fit["hvt"] = hvt
    vocab = manifest.get("vocab_size")
    if vocab and int(vocab) > current.text.vocab_size:
        named = (overrides.get("text") or {}).get("vocab_size")
        if named is not None:
            raise ConfigError(
                f"model.overrides.text.vocab_size={named} is smaller than the dataset tokenizer's {vocab} ids ({origin})"
            )
        fit["text"] = {"vocab_size": int(vocab)}
    if not fit:
        return cfg
    merged = dict(overrides)
    for section, fields in fit.items():
        merged[section] = {**(merged.get(section) or {}), **fields}
    try:
        new_model = model_config(cfg.model.preset, **merged)
    except ConfigError as e:
        raise ConfigError(f"model {cfg.model.preset!r} on this data ({origin}): {e}") from None
    if log:
        s = new_model.sensor
        log(f"[sensorlm] model input follows the data: {cfg.model.preset} sensor ({s.input_len}, {s.num_channels}) "
            f"patch {tuple(s.patch)}, text vocab {new_model.text.vocab_size} "
            f"(preset: ({current.sensor.input_len}, {current.sensor.num_channels}) patch {tuple(current.sensor.patch)})")
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, overrides=merged))


def check_validation_split(cfg: TrainConfig, manifest: Mapping[str, Any], origin: str = "manifest") -> None:
    """Validation needs a 'val' split with a sample for every worker (an empty one would report a
    perfect loss of 0, which a best-checkpoint rule or a sweep would pick)."""
    from sensorlm.data.loader import select_shards

    part = cfg.data.val_shards
    shards = select_shards(manifest, "val", part) if "val" in (manifest.get("splits") or {}) else []
    n = sum(int(s.get("samples", 0)) for s in shards)
    workers = cfg.scaling.max_workers  # an elastic run may grow to them
    what = "the 'val' split" + (f" ({part}-numbered shards: data.val_part={cfg.data.val_part})" if part else "")
    if manifest.get("folds") and not manifest.get("fold"):
        k = manifest["folds"]
        raise ConfigError(f"{origin}: the dataset is {k} folds (fold0..fold{k - 1}), no train/val split: "
                          f"choose the validation fold with data.fold=k/{k} (0 <= k < {k})")
    if n < workers:
        raise ConfigError(
            f"{origin}: {what} has {n} samples, fewer than the {workers} "
            f"{'worker' if workers == 1 else 'workers'} (each validates at least one); hold out more data, "
            "write smaller shards or use fewer workers"
        )


def fit_projection_to_data(cfg: TrainConfig, manifest: Mapping[str, Any], origin: str = "manifest",
                           log=print) -> TrainConfig:
    """`cfg` with ProjectionCL's ``modality_dims`` taken from the paired embeddings' ``dims``.

    Raises:
        ConfigError when ``model.overrides.modality_dims`` names other widths than the data's.
    """
    from sensorlm.models import model_config

    dims = tuple(int(d) for d in manifest["dims"])
    overrides = to_dict(cfg.model.overrides)
    named = overrides.get("modality_dims")
    if named is not None and tuple(named) != dims:
        raise ConfigError(f"model.overrides.modality_dims={list(named)} but the data's embeddings are {list(dims)} "
                          f"wide ({origin}); drop the override or use matching data")
    current = model_config(cfg.model.preset, **overrides)
    if tuple(current.modality_dims) == dims:
        return cfg
    if log:
        log(f"[sensorlm] model input follows the data: {cfg.model.preset} modality_dims {list(dims)} "
            f"(preset: {list(current.modality_dims)})")
    merged = {**overrides, "modality_dims": list(dims)}
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, overrides=merged))


def check_pairs_split(cfg: TrainConfig, manifest: Mapping[str, Any], origin: str = "manifest") -> None:
    """Paired embeddings: the validation part a run reads needs 2 pairs (recall ranks against the rest),
    and every rank needs training pairs."""
    from sensorlm.data.embedding_pairs import validation_rows

    n_val = int(manifest["splits"]["val"]["num_samples"])
    rows = validation_rows(n_val, cfg.data.val_shards).size
    if rows < 2:
        raise ConfigError(f"{origin}: the 'val' split has {rows} pair(s) in part {cfg.data.val_part!r}; need 2 or more")
    n_train = int(manifest["splits"]["train"]["num_samples"])
    if n_train < cfg.scaling.max_workers:
        raise ConfigError(f"{origin}: {n_train} training pairs for {cfg.scaling.max_workers} workers")
