"""The records of the three model families: SensorLM (SigLIP dual encoder on wearable windows),
SST (monthly sea-surface temperature reconstruction) and ProjectionCL (contrastive projection of
paired embeddings). Each names its pieces; heavy ones are imported when first called.
"""

from __future__ import annotations

import dataclasses

from typing import Any, Callable

from sensorlm.typed_config import ConfigError
from sensorlm.families.registry import FAMILIES, Family, SearchParam, register_family
from sensorlm.models.coca import SensorCoCaConfig
from sensorlm.models.projection_cl import ProjectionCLConfig
from sensorlm.models.sensorlm import SensorLMConfig
from sensorlm.models.sst import SSTConfig


# ---------------------------------------------------------------------------------------------
# The pieces the records name


def _synthetic_shards(kind: str) -> Callable[..., Any]:
    def make(size: str, out_dir, seed: int = 0):
        from sensorlm.data.prepare import prepare_synthetic

        return prepare_synthetic(kind, size, out_dir, seed=seed)

    return make


def _synthetic_pairs(size: str, out_dir, seed: int = 0):
    from sensorlm.data.embedding_pairs import make_synthetic_pairs

    return make_synthetic_pairs(size, out_dir, seed=seed)


def _shard_manifest(dataset) -> dict:
    from sensorlm.data.loader import load_dataset_manifest

    return load_dataset_manifest(str(dataset))


def _pairs_manifest(dataset) -> dict:
    from sensorlm.data.embedding_pairs import read_pairs_manifest

    if "://" in str(dataset):
        raise ConfigError(f"data.path {dataset!r}: embedding pairs are read from a local folder")
    return read_pairs_manifest(dataset)


def _shard_loader(cfg, dataset, manifest, split, where, tokenizer=None):
    from sensorlm.data.augment import Augment
    from sensorlm.data.loader import make_loader

    train = split == "train"
    aug = cfg.data.augment
    spec = dataclasses.replace(
        where, num_workers=cfg.data.num_workers, shuffle=train, shuffle_buffer=cfg.data.shuffle_buffer if train else 0,
        resampled=train,  # step-based training draws shards forever; validation reads each once
        drop_last=train,  # the all-gathered contrastive loss needs equal batches on every rank
        strict=cfg.data.strict,
        split_samples=not train,  # validation: equal shares per rank even from one or uneven shards
        shard_part=None if train else where.shard_part,
    )
    augment = Augment(cfg.data.caption_mix, aug.crop_min_fraction, aug.channel_dropout) if train else None
    return make_loader(str(dataset), split, spec=spec, manifest=manifest, tokenizer=tokenizer, augment=augment)


def _pair_loader(cfg, dataset, manifest, split, where, tokenizer=None):
    from sensorlm.data.embedding_pairs import pair_loader

    return pair_loader(dataset, split, where.batch_size, rank=where.rank, world_size=where.world_size, seed=where.seed,
                       part=where.shard_part)


def _sensorlm_task(cfg, manifest, device, model_cfg, tokenizer):
    from sensorlm.training.tasks import SensorLMTask

    return _caption_task(SensorLMTask, cfg, manifest, device, model_cfg, tokenizer)


def _coca_task(cfg, manifest, device, model_cfg, tokenizer):
    from sensorlm.training.tasks import CoCaTask

    return _caption_task(CoCaTask, cfg, manifest, device, model_cfg, tokenizer,
                         caption_loss_weight=model_cfg.caption_loss_weight, contrastive_loss=model_cfg.contrastive_loss)


def _caption_task(task_type, cfg, manifest, device, model_cfg, tokenizer, **extra):
    """A task trained on the dataset's captions, validated zero-shot on its label prompts."""
    from sensorlm.data.captioner import manifest_prompts

    if tokenizer is None:
        raise ConfigError("the dataset has no tokenizer; a SensorLM trains on captions (see sensorlm prepare-data)")
    prompts = manifest_prompts(manifest, cfg.data.prompt_template)
    return task_type(manifest.get("activities") or [], prompts, tokenizer, model_cfg.text.context_len, device,
                     exchange=cfg.scaling.loss_exchange, **extra)


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


def _sensor_array(cfg: dict) -> tuple[str, tuple[int, ...]]:
    return "sensor", (int(cfg["sensor"]["input_len"]), int(cfg["sensor"]["num_channels"]))


def _sst_array(cfg: dict) -> tuple[str, tuple[int, ...]]:
    return "daily", (int(cfg["months"]) * int(cfg["days_per_month"]), int(cfg["height"]), int(cfg["width"]))


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
    embeds=True,
    input_array=_sensor_array,
    stats_check="sensorlm.tracking.package:check_sensor_stats",
    eval_params=("max_train",),
))

# The CoCa variant: the dual encoder's record (data, contrastive side, serving, evaluation) with the
# captioning decoder's config, task and search space.
register_family(dataclasses.replace(
    FAMILIES["sensorlm"],
    name="sensorlm_coca",
    config_type=SensorCoCaConfig,
    task=_coca_task,
    serving="sensorlm.tracking.serving:CoCaServing",
    evaluator="sensorlm.evaluation.captions:evaluate_coca",
    eval_params=("max_train", "caption_samples", "caption_method", "caption_max_len"),
    metrics={"val/caption_loss": "min", "val/caption_token_acc": "max", "val/zero_shot_acc": "max", "val/loss": "min"},
    search={**FAMILIES["sensorlm"].search,
            "caption_loss_weight": SearchParam("nonnegative", "model.overrides.caption_loss_weight")},
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
    input_array=_sst_array,
    stats_check="sensorlm.tracking.package:check_sst_stats",
    table_columns=("model", "climatology", "observed_mean", "dineof"),
    legacy_config={"input_skip": False},  # packages written before the SST input skip
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
    eval_params=("embeddings_a", "embeddings_b"),
))
