"""The model families the one trainer knows: one record each (torchtitan's train specs).

A record says everything that differs between families: the model config type, the data it
reads (synthetic generator, manifest reader, loader), the task (batch -> loss, validation), the
metrics a sweep may select on and the search parameters it may move, the pyfunc input handler
and the evaluator. The trainer, the sweeps, tracking and evaluation look a family up here by the
run's ``task`` or by a model config's type; adding a family is adding one record.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from sensorlm.config import ConfigError
from sensorlm.models.projection_cl import ProjectionCLConfig
from sensorlm.models.sensorlm import SensorLMConfig
from sensorlm.models.sst import SSTConfig


@dataclass(frozen=True)
class SearchParam:
    """A sweep parameter: what its values must be (``positive``, ``finite``, ``bool``) and the
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
        make_synthetic: ``(preset, out_dir, seed)`` -> writes the demo dataset.
        read_manifest: dataset location -> its checked manifest.
        loader: ``(cfg, dataset, manifest, split, rank, world, seed, text_len, part)`` -> batches.
        task: ``(cfg, manifest, device, model_cfg, tokenizer)`` -> the loss/validation task.
        fit_to_data: ``(cfg, manifest, origin)`` -> cfg with the model's input read from the data.
        check_split: ``(cfg, manifest, origin)`` -> raises ConfigError if validation cannot run.
        metrics: validation metrics and their better direction; the first is the default.
        search: sweep parameters by name.
        scale_bounds: the search parameters that bound the family's scale, (low, high).
        serving: ``module:Class`` of its pyfunc input handler.
        evaluator: ``module:function`` that evaluates a package of the family.
        contrastive: the loss needs at least two samples per batch.
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

    @property
    def default_metric(self) -> str:
        return next(iter(self.metrics))

    def text_len(self, model_cfg) -> int | None:
        text = getattr(model_cfg, "text", None)
        return text.context_len if text is not None else None


def resolve(ref: str) -> Any:
    """The object named by ``module:attribute`` (imported on first use: evaluation pulls in plotting)."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


# ---------------------------------------------------------------------------------------------
# The pieces the records name


def _synthetic_shards(kind: str) -> Callable[..., Any]:
    def make(preset: str, out_dir, seed: int = 0):
        from sensorlm.data.prepare import prepare_synthetic

        return prepare_synthetic(kind, preset, out_dir, seed=seed)

    return make


def _synthetic_pairs(preset: str, out_dir, seed: int = 0):
    from sensorlm.data.embedding_pairs import make_synthetic_pairs

    return make_synthetic_pairs(preset, out_dir, seed=seed)


def _shard_manifest(dataset) -> dict:
    from sensorlm.data.shards import read_manifest

    return read_manifest(str(dataset))


def _pairs_manifest(dataset) -> dict:
    from sensorlm.data.embedding_pairs import read_pairs_manifest

    if "://" in str(dataset):
        raise ConfigError(f"data.path {dataset!r}: embedding pairs are read from a local folder")
    return read_pairs_manifest(dataset)


def _shard_loader(cfg, dataset, manifest, split, rank, world, seed, text_len, part, tokenizer=None):
    from sensorlm.data.augment import Augment
    from sensorlm.data.loader import make_loader

    train = split == "train"
    aug = cfg.data.augment
    return make_loader(
        str(dataset), split, cfg.batch_size, rank=rank, world_size=world, num_workers=cfg.data.num_workers,
        seed=seed, shuffle=train, shuffle_buffer=cfg.data.shuffle_buffer if train else 0,
        resampled=train,  # step-based training draws shards forever; validation reads each once
        drop_last=train,  # the all-gathered contrastive loss needs equal batches on every rank
        text_len=text_len, strict=cfg.data.strict, manifest=manifest, tokenizer=tokenizer,
        augment=Augment(cfg.data.caption_mix, aug.crop_min_fraction, aug.channel_dropout) if train else None,
        split_samples=not train,  # validation: equal shares per rank even from one or uneven shards
        shard_part=None if train else part,
    )


def _pair_loader(cfg, dataset, manifest, split, rank, world, seed, text_len, part, tokenizer=None):
    from sensorlm.data.embedding_pairs import pair_loader

    return pair_loader(dataset, split, cfg.batch_size, rank=rank, world_size=world, seed=seed, part=part)


def _sensorlm_task(cfg, manifest, device, model_cfg, tokenizer):
    from sensorlm.data.captioner import manifest_prompts
    from sensorlm.training.tasks import SensorLMTask

    if tokenizer is None:
        raise ConfigError("the dataset has no tokenizer; a SensorLM trains on captions (see sensorlm prepare-data)")
    prompts = manifest_prompts(manifest, cfg.data.prompt_template)
    return SensorLMTask(manifest.get("activities") or [], prompts, tokenizer, model_cfg.text.context_len, device,
                        exchange=cfg.scaling.loss_exchange)


def _sst_task(cfg, manifest, device, model_cfg, tokenizer):
    from sensorlm.training.tasks import SSTTask

    return SSTTask(manifest["stats"]["sst"]["std"], model_cfg.months, device)


def _projection_task(cfg, manifest, device, model_cfg, tokenizer):
    from sensorlm.training.tasks import ProjectionTask

    return ProjectionTask(device)


def _from_data(name: str) -> Callable[..., Any]:
    """`sensorlm.training.model_from_data.<name>`, imported when first called."""
    def call(cfg, manifest, origin):
        from sensorlm.training import model_from_data

        return getattr(model_from_data, name)(cfg, manifest, origin)

    return call


FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    if family.name in FAMILIES:
        raise ValueError(f"model family {family.name!r} registered twice")
    FAMILIES[family.name] = family
    return family


register_family(Family(
    name="sensorlm",
    config_type=SensorLMConfig,
    data_kind="wearable",
    make_synthetic=_synthetic_shards("wearable"),
    read_manifest=_shard_manifest,
    loader=_shard_loader,
    task=_sensorlm_task,
    fit_to_data=_from_data("fit_model_to_data"),
    check_split=_from_data("check_validation_split"),
    metrics={"val/zero_shot_acc": "max", "val/loss": "min"},
    search={
        "temperature_init": SearchParam("positive", "model.overrides.t_prime_init", "log"),
        "temperature_min": SearchParam("positive", "model.overrides.temperature_min"),
        "temperature_max": SearchParam("positive", "model.overrides.temperature_max"),
        "bias_init": SearchParam("finite", "model.overrides.bias_init"),
        "learn_temperature": SearchParam("bool", "model.overrides.learn_temperature"),
        "lr": SearchParam("positive", "optim.lr"),
    },
    scale_bounds=("temperature_min", "temperature_max"),
    serving="sensorlm.tracking.serving:SensorLMServing",
    evaluator="sensorlm.evaluation.runners:evaluate_sensorlm",
    contrastive=True,
))

register_family(Family(
    name="sst",
    config_type=SSTConfig,
    data_kind="sst",
    make_synthetic=_synthetic_shards("sst"),
    read_manifest=_shard_manifest,
    loader=_shard_loader,
    task=_sst_task,
    fit_to_data=lambda cfg, manifest, origin: cfg,
    check_split=_from_data("check_validation_split"),
    metrics={"val/rmse_holdout_c": "min", "val/rmse_ocean_c": "min"},
    search={"lr": SearchParam("positive", "optim.lr")},
    serving="sensorlm.tracking.serving:SSTServing",
    evaluator="sensorlm.evaluation.runners:evaluate_sst",
))

register_family(Family(
    name="projection_cl",
    config_type=ProjectionCLConfig,
    data_kind="embedding_pairs",
    make_synthetic=_synthetic_pairs,
    read_manifest=_pairs_manifest,
    loader=_pair_loader,
    task=_projection_task,
    fit_to_data=_from_data("fit_projection_to_data"),
    check_split=_from_data("check_pairs_split"),
    metrics={"val/recall_at_1": "max", "val/recall_at_1_b2a": "max", "val/loss": "min"},
    search={
        "logit_scale_init": SearchParam("positive", "model.overrides.logit_scale_init"),
        "min_logit_scale": SearchParam("positive", "model.overrides.min_logit_scale"),
        "max_logit_scale": SearchParam("positive", "model.overrides.max_logit_scale"),
        "lr": SearchParam("positive", "optim.lr"),
    },
    scale_bounds=("min_logit_scale", "max_logit_scale"),
    serving="sensorlm.tracking.serving:ProjectionServing",
    evaluator="sensorlm.evaluation.runners:evaluate_projection_cl",
    contrastive=True,
))


def get_family(name: str) -> Family:
    """The family of a run's ``task``; ConfigError naming the known ones."""
    if name not in FAMILIES:
        raise ConfigError(f"task {name!r} is not a model family (known: {', '.join(FAMILIES)})")
    return FAMILIES[name]


def family_of_config(model_cfg: Any) -> Family | None:
    """The family whose presets have this config type, or None (e.g. a bare HVT tower)."""
    for family in FAMILIES.values():
        if isinstance(model_cfg, family.config_type):
            return family
    return None
