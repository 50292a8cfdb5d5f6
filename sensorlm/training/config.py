"""The training run's typed configuration: one validated object per run.

A run config is a YAML file or the name of one in ``configs/``, plus ``key=value`` overrides,
validated here before Ray starts so a typo is a one-line error naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sensorlm.typed_config import ConfigError, deep_update, from_dict, load_yaml, merge_overrides, to_dict

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@dataclass
class ModelSection:
    """Which registered model preset to build, and field overrides applied to its config."""

    preset: str = "sensorlm_tiny"
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class AugmentSection:
    """Training-time changes to wearable windows (`sensorlm.data.augment`); off by default.

    Args:
        crop_min_fraction: a random crop in time keeps a contiguous span of at least this
            fraction of the window and marks the rest missing; 1 = no crop.
        channel_dropout: each channel is set to its mean (0 after normalisation) with this
            probability, never all of them; 0 = none.
    """

    crop_min_fraction: float = 1.0
    channel_dropout: float = 0.0

    def __post_init__(self):
        if isinstance(self.crop_min_fraction, bool) or not 0 < self.crop_min_fraction <= 1:
            raise ConfigError(f"data.augment.crop_min_fraction must lie in (0, 1], got {self.crop_min_fraction!r}")
        if isinstance(self.channel_dropout, bool) or not 0 <= self.channel_dropout < 1:
            raise ConfigError(f"data.augment.channel_dropout must lie in [0, 1), got {self.channel_dropout!r}")


@dataclass
class DataSection:
    """Where the webdataset shards are and how to stream them.

    Args:
        path: dataset directory or URL prefix holding ``manifest.json`` and ``{split}-%06d.tar``.
        synthetic: the size of the generated demo data (``tiny``, ``small``); when set and ``path`` has no
            manifest, the project's own synthetic data is generated there first.
        num_workers: DataLoader worker processes per training worker.
        shuffle_buffer: samples held in the shuffle buffer.
        strict: raise on the first bad sample instead of skipping and counting it.
        val_batches: validation batches per rank at each evaluation (0 = the whole split).
        caption_mix: caption key -> weight (keys: `sensorlm.data.captioner.CAPTION_KEYS`, e.g.
            ``{all: 0.5, high_summary: 0.25, low_middle: 0.25}``): each training sample's caption
            is drawn from its stored levels by these weights; empty = the full caption. Validation
            always uses the full caption.
        prompt_template: zero-shot prompt for every label, ``{label}`` placeholder (None: the
            dataset's own prompts, else ``A day with {label}.``).
        resume: ``exact``: a resumed run reads the same sample stream (fast-forwarded past the
            checkpoint's step: costs the data time of those steps) and restores every rank's RNG
            states, so it ends with the weights of the uninterrupted run; ``fresh``: a new stream
            from the checkpoint on (no fast-forward; for very long runs).
        val_part: which validation shards a run reads: ``all``; ``selection`` (even-numbered) is
            what sweep trials validate on, so ``holdout`` (odd-numbered) stays unseen by model
            selection and decides champions.
        fold: ``k/K`` on a dataset imported with ``--folds K``: validate on fold k, train on the
            other folds (`sensorlm.data.folds`); None = the dataset's train/val split.
        augment: random crops in time and channel dropout of training windows (`AugmentSection`).
    """

    path: str = "data/wearable_tiny"
    synthetic: str | None = "tiny"
    num_workers: int = 1
    shuffle_buffer: int = 256
    strict: bool = False
    val_batches: int = 0
    seed: int = 0
    caption_mix: dict[str, float] = field(default_factory=dict)
    prompt_template: str | None = None
    resume: Literal["exact", "fresh"] = "exact"
    val_part: Literal["all", "selection", "holdout"] = "all"
    fold: str | None = None
    augment: AugmentSection = field(default_factory=AugmentSection)

    def __post_init__(self):
        from sensorlm.data.captioner import CAPTION_KEYS
        from sensorlm.data.folds import parse_fold

        if self.fold is not None:
            try:
                parse_fold(self.fold)
            except ValueError as e:
                raise ConfigError(str(e)) from None

        for key, weight in self.caption_mix.items():
            if key not in CAPTION_KEYS:
                raise ConfigError(f"data.caption_mix: unknown caption key {key!r} (known: {', '.join(CAPTION_KEYS)})")
            if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not weight >= 0:
                raise ConfigError(f"data.caption_mix.{key} must be a weight >= 0, got {weight!r}")
        if self.caption_mix and not sum(self.caption_mix.values()) > 0:
            raise ConfigError("data.caption_mix: the weights sum to 0")
        if self.num_workers < 0:
            raise ConfigError(f"data.num_workers must be >= 0, got {self.num_workers}")
        if self.shuffle_buffer < 0:
            raise ConfigError(f"data.shuffle_buffer must be >= 0, got {self.shuffle_buffer}")
        if self.prompt_template is not None:
            from sensorlm.data.captioner import check_prompt_template

            check_prompt_template(self.prompt_template, "data.prompt_template", ConfigError)

    @property
    def val_shards(self) -> str | None:
        """The loader's shard part for `val_part`: None (all), ``even`` or ``odd``."""
        return {"all": None, "selection": "even", "holdout": "odd"}[self.val_part]


@dataclass
class OptimSection:
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio``.

    ``on_non_finite``: a non-finite loss or gradient norm is seen at the next log interval (no host
    sync per step); ``stop`` ends the run FAILED naming the step, registering nothing; ``skip``
    leaves such steps out on every rank (one small all-reduce per step) and counts them.
    """

    lr: float = 1e-3
    weight_decay: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    warmup_steps: int = 10
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    grad_accum: int = 1
    on_non_finite: Literal["stop", "skip"] = "stop"

    def __post_init__(self):
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"optim.lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if not all(0 <= b < 1 for b in self.betas):
            raise ConfigError(f"optim.betas must lie in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")
        if self.grad_accum < 1:
            raise ConfigError(f"optim.grad_accum must be >= 1, got {self.grad_accum}")


@dataclass
class ScalingSection:
    """Ray workers and the DeepSpeed engine inside each.

    Args:
        num_workers: Ray Train workers (one process per GPU on a cluster), or ``[min, max]``: an
            elastic worker group (Ray Train starts with what the cluster has, at least ``min``,
            and grows toward ``max`` as nodes come; a run that loses a node goes on with fewer,
            resuming its checkpoint at the new world size).
        resize_check_s: how often an elastic run looks for room to grow (seconds).
        start_timeout_s: how long Ray Train waits for a worker group's resources before it tries
            again with what the cluster has (``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S``; None:
            Ray's 60 s). An elastic run that loses a node goes on with fewer workers after about
            this long: Ray's first restart still counts the lost node's CPUs.
        use_gpu: one GPU per worker, bf16 and NCCL; otherwise CPU, fp32 and gloo.
        cpus_per_worker: logical CPUs reserved per worker.
        zero_stage: DeepSpeed ZeRO stage 0-3.
        precision: ``auto`` = bf16 on GPU, fp32 on CPU.
        deepspeed_config: optional JSON/YAML file whose keys override the generated DeepSpeed config.
        activation_checkpointing: recompute transformer blocks in backward to save memory.
        compile: ``torch.compile`` the model through the DeepSpeed engine.
        threads_per_worker: torch intra-op threads per worker (CPU runs).
        loss_exchange: how ranks share embeddings for the exact global contrastive loss:
            ``gather`` (every rank builds the global N x N logits: memory grows with N^2) or
            ``ring`` (chunks passed between neighbours: (local batch)^2 per rank at any scale).
    """

    num_workers: int | tuple[int, int] = 2
    resize_check_s: float = 60.0
    start_timeout_s: float | None = None
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    zero_stage: int = 2
    precision: Literal["auto", "bf16", "fp32"] = "auto"
    deepspeed_config: str | None = None
    activation_checkpointing: bool = False
    compile: bool = False
    threads_per_worker: int = 1
    loss_exchange: Literal["gather", "ring"] = "gather"

    def __post_init__(self):
        if isinstance(self.num_workers, (tuple, list)):
            low, high = self.num_workers
            if not 1 <= low <= high:
                raise ConfigError(f"scaling.num_workers [min, max] needs 1 <= min <= max, got [{low}, {high}]")
            self.num_workers = (low, high)
        elif self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers must be >= 1, got {self.num_workers}")
        if self.resize_check_s <= 0:
            raise ConfigError(f"scaling.resize_check_s must be > 0, got {self.resize_check_s}")
        if self.start_timeout_s is not None and self.start_timeout_s <= 0:
            raise ConfigError(f"scaling.start_timeout_s must be > 0, got {self.start_timeout_s}")
        if self.zero_stage not in (0, 1, 2, 3):
            raise ConfigError(f"scaling.zero_stage must be 0, 1, 2 or 3, got {self.zero_stage}")
        if self.cpus_per_worker <= 0:
            raise ConfigError(f"scaling.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.threads_per_worker < 1:
            raise ConfigError(f"scaling.threads_per_worker must be >= 1, got {self.threads_per_worker}")


    @property
    def elastic(self) -> bool:
        return isinstance(self.num_workers, tuple)

    @property
    def max_workers(self) -> int:
        """The most workers the run may have (the worker count of a fixed-size run)."""
        return self.num_workers[1] if isinstance(self.num_workers, tuple) else self.num_workers

    def grad_accum_at(self, world: int, grad_accum: int) -> int:
        """Micro-steps per optimizer step on `world` workers: `grad_accum` (``optim.grad_accum``),
        and in an elastic run as many more as keep the global batch at the full group's
        (``batch_size x grad_accum x max``); the nearest count when ``max`` is not a multiple of
        `world` (the loop logs the global batch it gets)."""
        if not self.elastic:
            return grad_accum
        return max(1, round(grad_accum * self.max_workers / world))


@dataclass
class CheckpointSection:
    """Checkpoint every ``every_steps`` (and at the end).

    Without ``best_metric`` Ray keeps the last ``keep_last``; with it, the ``keep_last`` best by
    that reported metric (e.g. ``val/zero_shot_acc``, ``best_mode: max``) and always the latest,
    which resuming needs. ``early_stop_patience`` > 0 ends the run once ``best_metric`` has not
    improved by more than ``early_stop_min_delta`` for that many validations in a row; the best
    checkpoint is then registered as usual.
    """

    every_steps: int = 50
    keep_last: int = 2
    max_failures: int = 1
    best_metric: str | None = None
    best_mode: Literal["max", "min"] = "max"
    early_stop_patience: int = 0  # 0 = train all steps
    early_stop_min_delta: float = 0.0

    def __post_init__(self):
        if self.early_stop_patience < 0:
            raise ConfigError(f"checkpoint.early_stop_patience must be >= 0 (0 = off), got {self.early_stop_patience}")
        if not (self.early_stop_min_delta >= 0 and math.isfinite(self.early_stop_min_delta)):
            raise ConfigError(f"checkpoint.early_stop_min_delta must be a finite number >= 0, got {self.early_stop_min_delta}")
        if self.early_stop_patience and not self.best_metric:
            raise ConfigError("checkpoint.early_stop_patience needs checkpoint.best_metric, the metric it watches "
                              "(e.g. checkpoint.best_metric=val/loss checkpoint.best_mode=min)")
        if self.every_steps < 1:
            raise ConfigError(f"checkpoint.every_steps must be >= 1, got {self.every_steps}")
        if self.keep_last < 1:
            raise ConfigError(f"checkpoint.keep_last must be >= 1, got {self.keep_last}")
        if self.max_failures < -1:
            raise ConfigError(f"checkpoint.max_failures must be >= -1 (-1 = unlimited), got {self.max_failures}")


@dataclass
class TrackingSection:
    """MLflow: tracking URI (None = $MLFLOW_TRACKING_URI or a local sqlite store), names, and
    ``artifact_location``: where a new experiment keeps its artifacts and registered packages
    (None: the server's default, or ``mlruns`` beside a sqlite store; ``s3://bucket/mlflow`` puts
    them in a bucket). An existing experiment keeps its own."""

    tracking_uri: str | None = None
    experiment: str = "sensorlm"
    artifact_location: str | None = None
    run_name: str | None = None
    registered_model_name: str | None = None  # None = the task's default ("sensorlm" / "sst")
    register: bool = True
    system_metrics: bool = True


@dataclass
class FaultInjection:
    """Test hooks: one worker dies once at a step (Ray restarts it), or raises an error that
    would recur at a step (the run ends without a retry)."""

    fail_once_at_step: int = 0  # 0 = off
    raise_at_step: int = 0  # 0 = off
    rank: int = 0


@dataclass
class TrainConfig:
    """A whole training run.

    Args:
        task: the model family (`sensorlm.families`): ``sensorlm`` (SigLIP dual encoder),
            ``sst`` (monthly SST reconstruction) or ``projection_cl`` (paired-embedding projector).
        name: run name; the Ray storage folder ``storage_path/name`` holds its checkpoints, and
            rerunning with the same name resumes from the latest one.
        steps: optimizer steps in total.
        batch_size: micro-batch per worker.
        log_every / eval_every: steps between metric logs / validations.
    """

    task: str = "sensorlm"
    name: str | None = None
    steps: int = 200
    batch_size: int = 32
    log_every: int = 10
    eval_every: int = 50
    seed: int = 0
    storage_path: str = "outputs/ray_results"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    scaling: ScalingSection = field(default_factory=ScalingSection)
    checkpoint: CheckpointSection = field(default_factory=CheckpointSection)
    tracking: TrackingSection = field(default_factory=TrackingSection)
    fault_injection: FaultInjection = field(default_factory=FaultInjection)

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        from sensorlm.families.registry import get_family

        if get_family(self.task).contrastive and self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 for the contrastive loss of task {self.task!r}")
        # A checkpoint carries the validation metrics of its own step or none; ranked by one, it
        # must be saved where a validation ran (the last step always validates and checkpoints).
        if self.checkpoint.best_metric and self.checkpoint.every_steps % self.eval_every:
            raise ConfigError(
                f"checkpoint.every_steps ({self.checkpoint.every_steps}) must be a multiple of eval_every "
                f"({self.eval_every}) when checkpoints are ranked by checkpoint.best_metric "
                f"({self.checkpoint.best_metric}); or set checkpoint.best_metric=null"
            )

    @property
    def registered_name(self) -> str:
        return self.tracking.registered_model_name or self.task


def _validate_model(cfg: TrainConfig) -> None:
    """Resolve the model preset + overrides now, so a bad model field fails before Ray starts."""
    from sensorlm.models import get_preset, model_config
    from sensorlm.families.registry import get_family

    preset = get_preset(cfg.model.preset)
    want = get_family(cfg.task).config_type
    if type(preset.config) is not want:  # exactly: a CoCa config is also a SensorLM one
        raise ConfigError(f"model.preset {cfg.model.preset!r} is a {type(preset.config).__name__}, but task "
                          f"{cfg.task!r} needs a {want.__name__}")
    try:
        model_config(cfg.model.preset, **cfg.model.overrides)
    except ConfigError as e:
        raise ConfigError(f"model.overrides: {e}") from e


def load_train_config(config: str, overrides: list[str] | None = None) -> TrainConfig:
    """Load a run config from a YAML path or a name in ``configs/`` and apply ``key=value`` overrides.

    Args:
        config: ``configs/sensorlm_tiny.yaml``, any YAML path, or a bare name like ``sensorlm_tiny``.
        overrides: strings such as ``optim.lr=3e-4`` or ``scaling.zero_stage=3``.
    """
    path = Path(config)
    if not path.suffix:
        path = CONFIG_DIR / f"{config}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"config {config!r} is neither a YAML file nor a config in configs/ ({', '.join(known)})")
    data = to_dict(TrainConfig())
    base = load_yaml(path)
    deep_update(data, base, str(path), leaf_keys=("overrides", "caption_mix"))
    data = merge_overrides(data, list(overrides or []), free_sections=("model.overrides", "data.caption_mix"))
    cfg = from_dict(TrainConfig, data)
    _validate_model(cfg)
    return cfg
