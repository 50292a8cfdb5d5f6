"""The model-family record and its registry: what differs between the families the one trainer
knows (torchtitan's train specs), looked up by a run's ``task`` or a model config's type.

A record says everything that differs between families: the model config type, the data it
reads (synthetic generator, manifest reader, loader), the task (batch -> loss, validation), the
metrics a sweep may select on and the search parameters it may move, the pyfunc input handler
and the evaluator. The records register themselves (`sensorlm.families.records`, imported by
this package's face, as timm's model modules register their presets); adding a family is adding
one record. This module imports no layer above `sensorlm.typed_config`, so every layer may use it.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sensorlm.typed_config import ConfigError


@dataclass(frozen=True)
class SearchParam:
    """A sweep parameter: what its values must be (``positive``, ``nonnegative``, ``finite``, ``bool``) and the
    training-config fields it writes (dotted paths) and how (``set`` or ``log``: the model holds
    the log of the value)."""

    kind: str
    path: str
    transform: str = "set"

    def apply(self, cfg_dict: dict, value: Any) -> None:
        if self.transform == "log":
            if not float(value) > 0:
                raise ConfigError(f"{self.path.rsplit('.', 1)[-1]} must be > 0, got {value!r}")
            value = math.log(float(value))
        elif self.kind == "bool":
            value = bool(value)
        else:
            value = float(value)
        node = cfg_dict
        *parents, leaf = self.path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value


@dataclass(frozen=True)
class Family:
    """One model family of the trainer.

    Args:
        name: the run config's ``task`` and the default registered-model name.
        config_type: the model config class of its presets.
        data_kind: the dataset kind it reads (``wearable``, ``sst``, ``embedding_pairs``).
        make_synthetic: ``(size, out_dir, seed)`` -> writes the demo dataset of that size.
        read_manifest: dataset location -> its checked manifest.
        loader: ``(cfg, dataset, manifest, split, where, tokenizer=None)`` -> batches; ``where`` is a
            `sensorlm.data.loader.LoaderSpec` with the batch size, rank, world size, seed, text length and
            validation shard part set (the family chooses the rest).
        task: ``(cfg, manifest, device, model_cfg, tokenizer)`` -> the loss/validation task.
        fit_to_data: ``(cfg, manifest, origin)`` -> cfg with the model's input read from the data.
        check_split: ``(cfg, manifest, origin)`` -> raises ConfigError if validation cannot run.
        metrics: validation metrics and their better direction; the first is the default.
        search: sweep parameters by name.
        scale_bounds: the search parameters that bound the family's scale, (low, high).
        serving: ``module:Class`` of its pyfunc input handler.
        evaluator: ``module:function`` that evaluates a package of the family.
        contrastive: the loss needs at least two samples per batch.
        embeds: its packages embed sensor windows (``sensorlm embed``, ``sensorlm export``).
        input_array: ``model config dict -> (sample array name, shape)`` its packages take from a
            dataset (None: it reads no sample arrays, e.g. paired embeddings).
        stats_check: ``module:function(stats, config dict)`` that checks a package's data_stats.
        table_columns: predictors of its metrics table, ``<predictor>/<metric>`` keys side by
            side (e.g. the model against its baselines); empty = one column.
        eval_params: evaluation options recorded as params of its evaluation runs.
        legacy_config: config fields (and values) that packages written before them lacked.
    """

    name: str
    config_type: type
    data_kind: str
    make_synthetic: Callable[..., Any]
    read_manifest: Callable[[str], dict]
    loader: Callable[..., Iterable[dict]]
    task: Callable[..., Any]
    fit_to_data: Callable[..., Any]
    check_split: Callable[..., None]
    metrics: dict[str, str]
    search: dict[str, SearchParam] = field(default_factory=dict)
    scale_bounds: tuple[str, str] | None = None
    serving: str = ""
    evaluator: str = ""
    contrastive: bool = False
    embeds: bool = False
    input_array: Callable[[dict], tuple[str, tuple[int, ...]]] | None = None
    stats_check: str = ""
    table_columns: tuple[str, ...] = ()
    eval_params: tuple[str, ...] = ()
    legacy_config: dict[str, Any] = field(default_factory=dict)

    @property
    def default_metric(self) -> str:
        return next(iter(self.metrics))

    def higher_is_better(self) -> list[tuple[str, bool]]:
        """Its validation metrics with their direction, as the ablation plots compare them."""
        return [(key, mode == "max") for key, mode in self.metrics.items()]

    def text_len(self, model_cfg) -> int | None:
        text = getattr(model_cfg, "text", None)
        return text.context_len if text is not None else None


def resolve(ref: str) -> Any:
    """The object named by ``module:attribute`` (imported on first use: evaluation pulls in plotting)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    return family


def _load_all() -> None:
    # Importing the package's face registers every record (sensorlm.families.records).
    import sensorlm.families  # noqa: F401


def get_family(name: str) -> Family:
    """The family of a run's ``task``; ConfigError naming the known ones."""
    _load_all()
    if name not in FAMILIES:
        raise ConfigError(f"task {name!r} is not a model family (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def embeds(name: str) -> bool:
    """Whether packages of family `name` embed sensor windows (False for an unknown name)."""
    _load_all()
    return name in FAMILIES and FAMILIES[name].embeds


def family_of_config(model_cfg: Any) -> Family | None:
    """The family whose presets have this config type, or None (e.g. a bare HVT tower)."""
    _load_all()
    exact = [f for f in FAMILIES.values() if type(model_cfg) is f.config_type]  # a CoCa config is a SensorLM one too
    return exact[0] if exact else next((f for f in FAMILIES.values() if isinstance(model_cfg, f.config_type)), None)
