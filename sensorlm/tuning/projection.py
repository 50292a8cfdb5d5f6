"""ProjectionCL training and sweeps: align two sets of precomputed embeddings.

ProjectionCL trains two projection heads (and a clamped logit scale) on paired embeddings,
e.g. the sensor and caption embeddings a trained SensorLM gives for the same days
(`export_sensorlm_embeddings`). It needs no DeepSpeed: a trial fits a Ray Train
`TorchTrainer` whose workers wrap the model in DDP (``ray.train.torch.prepare_model``), each
drawing batches from its own share of the training pairs, and report validation metrics and a
checkpoint every ``eval_every`` steps, exactly as the SensorLM worker loop does.

Validation (whole validation set, on every rank, no collectives): ``val/loss`` (symmetric
InfoNCE over all validation pairs at once), ``val/recall_at_1`` (A -> B: the true partner is
the nearest of all validation B's) and ``val/recall_at_1_b2a``.

Registered models: ProjectionCL has no MLflow pyfunc (`sensorlm.tracking.pyfunc` serves the
SensorLM and SST families), so the winner's package directory (``model.safetensors`` +
``model_config.json``) is logged as the artifact ``package`` of its trial's run and registered
as a model version whose source is that directory. Load it with `load_registered_projection`.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch

from sensorlm.config import ConfigError, deep_update, from_dict, load_yaml, merge_overrides, to_dict
from sensorlm.training.config import ModelSection, TrackingSection
from sensorlm.tuning.space import SweepConfig, check_scale_bounds
from sensorlm.tuning.sweep import SweepTask, TrialRow, log_trial_params, open_child_run, trial_tags

ARRAY_KEYS = ("train_a", "train_b", "val_a", "val_b")
WEIGHTS = "model.safetensors"
OPTIMIZER = "optimizer.pt"
STATE = "train_state.json"


# ----------------------------------------------------------------------------------------------
# Config


@dataclass
class SyntheticPairs:
    """Made-up paired embeddings with a learnable link: a shared latent z ~ N(0, I), then
    ``a = z @ W_a + noise`` and ``b = z @ W_b + noise`` with fixed random maps W_a, W_b.

    Args:
        num_train / num_val: pairs in each split.
        latent_dim: width of the shared latent.
        noise: standard deviation of the per-modality noise (relative to the signal's ~1).
        seed: seed of the maps, latents and noise.
    """

    num_train: int = 1024
    num_val: int = 256
    latent_dim: int = 16
    noise: float = 0.1
    seed: int = 0

    def __post_init__(self):
        for name in ("num_train", "num_val", "latent_dim"):
            if getattr(self, name) < 2:
                raise ConfigError(f"data.synthetic.{name} must be >= 2, got {getattr(self, name)}")
        if self.noise < 0:
            raise ConfigError(f"data.synthetic.noise must be >= 0, got {self.noise}")


@dataclass
class EmbeddingData:
    """The paired embeddings: four ``.npy`` files, (N, dim_a) / (N, dim_b) float arrays with
    row i of A paired with row i of B, or ``synthetic`` pairs generated once per sweep."""

    train_a: str | None = None
    train_b: str | None = None
    val_a: str | None = None
    val_b: str | None = None
    synthetic: SyntheticPairs | None = None

    def __post_init__(self):
        given = [k for k in ARRAY_KEYS if getattr(self, k)]
        if self.synthetic is not None and given:
            raise ConfigError(f"data: give either the four arrays or data.synthetic, not both (got {', '.join(given)})")
        if self.synthetic is None and len(given) != 4:
            missing = [k for k in ARRAY_KEYS if not getattr(self, k)]
            raise ConfigError(f"data: missing {', '.join('data.' + k for k in missing)} (or set data.synthetic)")


@dataclass
class ProjectionOptim:
    """AdamW with linear warmup then cosine decay to ``lr * min_lr_ratio``."""

    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup_steps: int = 0
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self):
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"optim.lr must be a positive number, got {self.lr}")
        if self.weight_decay < 0:
            raise ConfigError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if self.warmup_steps < 0:
            raise ConfigError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ConfigError(f"optim.min_lr_ratio must lie in [0, 1], got {self.min_lr_ratio}")
        if self.grad_clip < 0:
            raise ConfigError(f"optim.grad_clip must be >= 0 (0 = off), got {self.grad_clip}")


@dataclass
class ProjectionScaling:
    """Ray Train workers (DDP over gloo on CPU, NCCL on GPU)."""

    num_workers: int = 2
    cpus_per_worker: float = 1.0
    use_gpu: bool = False
    threads_per_worker: int = 1

    def __post_init__(self):
        if self.num_workers < 1:
            raise ConfigError(f"scaling.num_workers must be >= 1, got {self.num_workers}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"scaling.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if self.threads_per_worker < 1:
            raise ConfigError(f"scaling.threads_per_worker must be >= 1, got {self.threads_per_worker}")


def _projection_model() -> ModelSection:
    return ModelSection(preset="projection_cl_tiny")


def _projection_tracking() -> TrackingSection:
    return TrackingSection(experiment="projection_cl")


@dataclass
class ProjectionTrainConfig:
    """A ProjectionCL training run.

    Args:
        model: a ``projection_cl*`` preset and constructor overrides (``min_logit_scale`` ...).
        data: the paired embeddings.
        steps / batch_size: optimizer steps; pairs per worker per step.
        log_every / eval_every: steps between train-metric logs / validations (each validation
            is also a checkpoint and a report).
        keep_checkpoints / max_failures: Ray Train checkpoint retention and worker restarts.
        val_rows: which validation pairs a run reads: ``all``, ``even`` (what sweep trials are
            selected on) or ``odd`` (held out for the champion decision).
    """

    name: str | None = None
    model: ModelSection = field(default_factory=_projection_model)
    data: EmbeddingData = field(default_factory=lambda: EmbeddingData(synthetic=SyntheticPairs()))
    steps: int = 200
    batch_size: int = 64
    log_every: int = 10
    eval_every: int = 20
    seed: int = 0
    storage_path: str = "outputs/ray_results"
    optim: ProjectionOptim = field(default_factory=ProjectionOptim)
    scaling: ProjectionScaling = field(default_factory=ProjectionScaling)
    keep_checkpoints: int = 2
    max_failures: int = 1
    val_rows: Literal["all", "even", "odd"] = "all"
    tracking: TrackingSection = field(default_factory=_projection_tracking)

    def __post_init__(self):
        if self.steps < 1:
            raise ConfigError(f"steps must be >= 1, got {self.steps}")
        if self.batch_size < 2:
            raise ConfigError(f"batch_size must be >= 2 for the contrastive loss, got {self.batch_size}")
        if self.log_every < 1:
            raise ConfigError(f"log_every must be >= 1, got {self.log_every}")
        if self.eval_every < 1:
            raise ConfigError(f"eval_every must be >= 1, got {self.eval_every}")
        if self.keep_checkpoints < 1:
            raise ConfigError(f"keep_checkpoints must be >= 1, got {self.keep_checkpoints}")

    def model_config(self):
        """The resolved ProjectionCLConfig (raises ConfigError naming a bad override)."""
        from sensorlm.models import get_preset, model_config
        from sensorlm.models.projection_cl import ProjectionCLConfig

        preset = get_preset(self.model.preset)
        if not isinstance(preset.config, ProjectionCLConfig):
            raise ConfigError(f"model.preset {self.model.preset!r} is a {type(preset.config).__name__}, not a ProjectionCLConfig")
        try:
            return model_config(self.model.preset, **self.model.overrides)
        except (ConfigError, ValueError, TypeError) as e:
            raise ConfigError(f"model.overrides: {e}") from e


def load_projection_config(config: str | None = None, overrides: list[str] | None = None) -> ProjectionTrainConfig:
    """Load a ProjectionCL run config (YAML path or None for the defaults) plus overrides.

    Args:
        config: a YAML file with `ProjectionTrainConfig` keys, or None.
        overrides: ``key=value`` strings, e.g. ``model.overrides.max_logit_scale=50``.
    """
    data = to_dict(ProjectionTrainConfig())
    if config:
        deep_update(data, load_yaml(config), str(config))
    data = merge_overrides(data, list(overrides or []), free_sections=("model.overrides",))
    cfg = from_dict(ProjectionTrainConfig, data)
    cfg.model_config()
    return cfg


def apply_projection_params(base: ProjectionTrainConfig, params: dict[str, Any]) -> ProjectionTrainConfig:
    """The trial's config: `base` with the searched values written in (validated).

    Args:
        base: the sweep's base ProjectionCL config.
        params: sampled values by search-parameter name.
    """
    data = to_dict(base)
    for name, value in params.items():
        if name in ("logit_scale_init", "min_logit_scale", "max_logit_scale"):
            data["model"]["overrides"][name] = float(value)
        elif name == "lr":
            data["optim"]["lr"] = float(value)
        else:
            raise ConfigError(f"unknown projection_cl search parameter {name!r}")
    cfg = from_dict(ProjectionTrainConfig, data)
    cfg.model_config()
    return cfg


# ----------------------------------------------------------------------------------------------
# Data


def make_synthetic_pairs(spec: SyntheticPairs, dims: tuple[int, int], out_dir: str | Path) -> dict[str, str]:
    """Write synthetic paired embeddings (see `SyntheticPairs`) as four ``.npy`` files.

    Args:
        spec: sizes, noise and seed.
        dims: (dim_a, dim_b), the model's ``modality_dims``.
        out_dir: folder for ``{train,val}_{a,b}.npy``.

    Returns:
        Paths by key (``train_a`` ...).
    """
    rng = np.random.default_rng(spec.seed)
    maps = [rng.normal(size=(spec.latent_dim, d)) / math.sqrt(spec.latent_dim) for d in dims]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split, n in (("train", spec.num_train), ("val", spec.num_val)):
        z = rng.normal(size=(n, spec.latent_dim))
        for side, w in zip("ab", maps):
            x = z @ w + spec.noise * rng.normal(size=(n, w.shape[1]))
            path = out / f"{split}_{side}.npy"
            np.save(path, x.astype(np.float32), allow_pickle=False)
            paths[f"{split}_{side}"] = str(path)
    return paths


def check_arrays(paths: dict[str, str], dims: tuple[int, int]) -> dict[str, tuple[int, ...]]:
    """Check the four arrays: 2-D floats of the model's widths, A and B of a split paired.

    Args:
        paths: ``train_a`` / ``train_b`` / ``val_a`` / ``val_b`` -> ``.npy`` path.
        dims: the model's (dim_a, dim_b).

    Returns:
        Shapes by key.
    """
    shapes = {}
    for key in ARRAY_KEYS:
        path = Path(paths[key])
        if not path.is_file():
            raise ConfigError(f"data.{key}: {path} does not exist")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except ValueError as e:
            raise ConfigError(f"data.{key}: {path} is not a plain .npy array: {e}") from e
        want = dims[0] if key.endswith("_a") else dims[1]
        if arr.ndim != 2 or arr.shape[1] != want:
            raise ConfigError(f"data.{key}: {path} has shape {arr.shape}; the model needs (N, {want})")
        if not np.issubdtype(arr.dtype, np.floating):
            raise ConfigError(f"data.{key}: {path} has dtype {arr.dtype}; expected floats")
        shapes[key] = tuple(arr.shape)
    for split in ("train", "val"):
        na, nb = shapes[f"{split}_a"][0], shapes[f"{split}_b"][0]
        if na != nb:
            raise ConfigError(f"data.{split}_a has {na} rows but data.{split}_b has {nb}; rows must be paired")
        if na < 2:
            raise ConfigError(f"data.{split}_a: need at least 2 pairs, got {na}")
    return shapes


def export_sensorlm_embeddings(
    model: str | Path,
    dataset: str | Path,
    out_dir: str | Path,
    *,
    splits: tuple[str, ...] = ("train", "val"),
    batch_size: int = 64,
    tracking_uri: str | None = None,
) -> dict[str, str]:
    """Sensor and caption embeddings of a dataset from a trained SensorLM, as ProjectionCL input.

    Writes ``{split}_sensor.npy`` and ``{split}_text.npy`` (row i of both = sample i). Samples
    are normalised by the dataset's own statistics, as in training.

    Args:
        model: a model package directory, or an MLflow model URI (``models:/sensorlm@champion``).
        dataset: the dataset directory (shards + manifest + tokenizer).
        out_dir: output folder.
        splits: dataset splits to export.
        batch_size: samples per forward pass.
        tracking_uri: MLflow tracking URI for a model URI (None = the configured one).

    Returns:
        Paths by key ``{split}_sensor`` / ``{split}_text``.
    """
    from sensorlm.data.loader import make_loader
    from sensorlm.tracking.package import load_model_package

    package_dir = _package_dir(model, tracking_uri)
    package = load_model_package(package_dir)
    if package.family != "sensorlm":
        raise ValueError(f"model {model}: a {package.family} package; exporting embeddings needs a SensorLM")
    text_len = int(package.config["text"]["context_len"])
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for split in splits:
        loader = make_loader(
            str(dataset), split, batch_size, rank=0, world_size=1, num_workers=0,
            shuffle=False, shuffle_buffer=0, resampled=False, drop_last=False, text_len=text_len,
        )
        sensor, text = [], []
        with torch.no_grad():
            for batch in loader:
                sensor.append(package.model.encode_sensor(batch["sensor"], batch["missing"]).float().numpy())
                text.append(package.model.encode_text(batch["input_ids"], batch["attention_mask"]).float().numpy())
        if not sensor:
            raise ValueError(f"dataset {dataset}: split {split!r} has no samples")
        for key, rows in ((f"{split}_sensor", sensor), (f"{split}_text", text)):
            path = out / f"{key}.npy"
            np.save(path, np.concatenate(rows).astype(np.float32), allow_pickle=False)
            paths[key] = str(path)
    return paths


def _package_dir(model: str | Path, tracking_uri: str | None) -> Path:
    """A package directory from a path or an MLflow model URI (its "package" artifact)."""
    path = Path(model)
    if path.is_dir():
        return path
    import mlflow

    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    mlflow.set_tracking_uri(resolve_tracking_uri(tracking_uri))
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(model)))
    found = sorted(p.parent for p in local.rglob("model_config.json"))
    if not found:
        raise FileNotFoundError(f"model {model}: no model package (model_config.json) in its artifacts at {local}")
    return found[0]


def load_registered_projection(model_uri: str, tracking_uri: str | None = None):
    """Load a registered ProjectionCL (``models:/projection_cl@champion``) as a `ModelPackage`.

    Args:
        model_uri: a ``models:/`` URI (or a package directory).
        tracking_uri: MLflow tracking URI (None = the configured one).
    """
    from sensorlm.tracking.package import load_model_package

    return load_model_package(_package_dir(model_uri, tracking_uri))


# ----------------------------------------------------------------------------------------------
# The worker loop


@torch.no_grad()
def validation_rows(array: np.ndarray, rows: str) -> np.ndarray:
    """All, the even or the odd rows of a validation array, as a writable float32 copy."""
    step = {"all": slice(None), "even": slice(0, None, 2), "odd": slice(1, None, 2)}[rows]
    return np.array(array[step], np.float32)  # a copy: torch wants writable memory, a memory map is not


def retrieval_metrics(model, a: torch.Tensor, b: torch.Tensor, chunk: int = 1024) -> dict[str, float]:
    """Symmetric InfoNCE over all pairs and top-1 retrieval both ways, in row chunks.

    Args:
        model: a ProjectionCL (not DDP-wrapped).
        a / b: (N, dim_a) / (N, dim_b) paired features.
        chunk: rows of the N x N similarity computed at once.
    """
    za = torch.nn.functional.normalize(model.encode_a(a), dim=-1)
    zb = torch.nn.functional.normalize(model.encode_b(b), dim=-1)
    scale = torch.tensor(model.current_logit_scale(), device=za.device)  # the clamped value the loss uses
    n = za.shape[0]
    loss_sum, hits = [0.0, 0.0], [0, 0]
    for side, (q, k) in enumerate(((za, zb), (zb, za))):
        for start in range(0, n, chunk):
            logits = scale * q[start : start + chunk] @ k.T
            target = torch.arange(start, start + logits.shape[0])
            loss_sum[side] += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            hits[side] += int((logits.argmax(dim=1) == target).sum())
    return {
        "val/loss": 0.5 * (loss_sum[0] + loss_sum[1]) / n,
        "val/recall_at_1": hits[0] / n,
        "val/recall_at_1_b2a": hits[1] / n,
        "val/logit_scale": float(scale.item()),
    }


def projection_train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point. ``loop_config`` = {"train": ProjectionTrainConfig as dict,
    "run": {"arrays": paths by key, "mlflow_run_id", "tracking_uri"}}."""
    import ray.train
    import ray.train.torch
    from safetensors.torch import load_file, save_file

    from sensorlm.models import create_model
    from sensorlm.tracking.package import save_model_package
    from sensorlm.training.optim import build_optimizer, build_scheduler

    cfg = from_dict(ProjectionTrainConfig, loop_config["train"])
    run = loop_config["run"]
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg.scaling.threads_per_worker)

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    mcfg = cfg.model_config()
    model = create_model(cfg.model.preset, **cfg.model.overrides)
    optimizer = build_optimizer(model, cfg.optim.lr, cfg.optim.weight_decay, (0.9, 0.999), 1e-8, fused=False)
    scheduler = build_scheduler(optimizer, cfg.steps, cfg.optim.warmup_steps, cfg.optim.min_lr_ratio)
    step, data_seed = 0, 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            model.load_state_dict(load_file(str(Path(d) / WEIGHTS)))
            states = torch.load(Path(d) / OPTIMIZER, weights_only=True)
            optimizer.load_state_dict(states["optimizer"])
            scheduler.load_state_dict(states["scheduler"])
            state = json.loads((Path(d) / STATE).read_text())
        step, data_seed = int(state["step"]), int(state["data_seed"]) + 1  # new batches after a resume
    ddp = ray.train.torch.prepare_model(model)
    device = next(model.parameters()).device

    arrays = {k: np.load(run["arrays"][k], mmap_mode="r", allow_pickle=False) for k in ARRAY_KEYS}
    # np.array copies: torch wants writable memory, and a memory map is read-only.
    val_a, val_b = (torch.as_tensor(validation_rows(arrays[k], cfg.val_rows), device=device) for k in ("val_a", "val_b"))
    shard = np.arange(rank, arrays["train_a"].shape[0], world)  # disjoint pairs per rank
    rng = np.random.default_rng([cfg.seed, rank, data_seed])
    client = None
    if rank == 0 and run.get("mlflow_run_id") and run.get("tracking_uri"):
        from mlflow.tracking import MlflowClient

        client = MlflowClient(run["tracking_uri"])

    def log(metrics: dict[str, float], at: int) -> None:
        if client is not None:
            from mlflow.entities import Metric

            ts = int(time.time() * 1000)
            client.log_batch(run["mlflow_run_id"], metrics=[Metric(k, float(v), ts, at) for k, v in metrics.items()])

    loss_sum, window = 0.0, 0
    ddp.train()
    while step < cfg.steps:
        idx = np.sort(rng.choice(shard, cfg.batch_size, replace=len(shard) < cfg.batch_size))
        a = torch.as_tensor(np.asarray(arrays["train_a"][idx], np.float32), device=device)
        b = torch.as_tensor(np.asarray(arrays["train_b"][idx], np.float32), device=device)
        _, _, loss = ddp(a, b, return_loss=True)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.optim.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.optim.grad_clip)
        optimizer.step()
        scheduler.step()
        step += 1
        loss_sum, window = loss_sum + loss.item(), window + 1
        if rank == 0 and (step % cfg.log_every == 0 or step == cfg.steps):
            log({"train/loss": loss_sum / window, "train/lr": scheduler.get_last_lr()[0],
                 "train/logit_scale": model.current_logit_scale()}, step)
            loss_sum, window = 0.0, 0
        if step % cfg.eval_every == 0 or step == cfg.steps:
            model.eval()
            val = retrieval_metrics(model, val_a, val_b)
            model.train()
            if rank == 0:
                print(f"[sensorlm.projection] step {step}/{cfg.steps} " + " ".join(f"{k} {v:.4f}" for k, v in val.items()), flush=True)
                log(val, step)
            with tempfile.TemporaryDirectory(prefix="projection-ckpt-") as tmp:
                if rank == 0:  # the weights are the same on every rank (DDP)
                    save_file({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, str(Path(tmp) / WEIGHTS))
                    torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}, Path(tmp) / OPTIMIZER)
                    (Path(tmp) / STATE).write_text(json.dumps({"step": step, "data_seed": data_seed}))
                    if step == cfg.steps:
                        save_model_package(model, cfg.model.preset, mcfg, Path(tmp) / "package")
                ckpt = ray.train.Checkpoint.from_directory(tmp) if rank == 0 else None
                ray.train.report({"step": step, **val}, checkpoint=ckpt)


def make_projection_trainer(cfg: ProjectionTrainConfig, run: dict[str, Any], run_name: str, callbacks: list | None = None):
    """The Ray Train `TorchTrainer` of a ProjectionCL run (what a sweep trial fits).

    Args:
        cfg: the run config (``storage_path`` must be absolute inside a sweep).
        run: {"arrays": {key: .npy path}, "mlflow_run_id", "tracking_uri"}.
        run_name: the Ray Train run name; the same name resumes from its latest checkpoint.
        callbacks: Ray Train callbacks (a sweep passes ``TuneReportCallback()``).
    """
    from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    env = {"OMP_NUM_THREADS": str(cfg.scaling.threads_per_worker), "PYTHONUNBUFFERED": "1",
           "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}  # as the trainer: no doubled progress lines
    return TorchTrainer(
        projection_train_loop_per_worker,
        train_loop_config={"train": to_dict(cfg), "run": run},
        scaling_config=ScalingConfig(
            num_workers=cfg.scaling.num_workers,
            use_gpu=cfg.scaling.use_gpu,
            resources_per_worker={"CPU": cfg.scaling.cpus_per_worker},
        ),
        run_config=RunConfig(
            name=run_name,
            storage_path=cfg.storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=cfg.keep_checkpoints),
            failure_config=FailureConfig(max_failures=cfg.max_failures),
            worker_runtime_env={"env_vars": env},
            callbacks=callbacks,
        ),
    )


# ----------------------------------------------------------------------------------------------
# The sweep task


def projection_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: the child MLflow run, then the ProjectionCL TorchTrainer.

    Args:
        config: the values Tune sampled for this trial.
        setup: plain data from `ProjectionSweep.prepare` and the driver.
    """
    import ray.tune
    from mlflow.tracking import MlflowClient
    from ray.tune.integration.ray_train import TuneReportCallback

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = apply_projection_params(from_dict(ProjectionTrainConfig, setup["base"]), config)
    run_name = f"{setup['sweep_name']}-{trial_id}"
    uri = setup["tracking_uri"]
    run_id = open_child_run(uri, cfg.tracking.experiment, run_name, to_dict(cfg), trial_tags(setup, trial_id))
    log_trial_params(uri, run_id, config)
    run = {"arrays": setup["arrays"], "mlflow_run_id": run_id, "tracking_uri": uri}
    trainer = make_projection_trainer(cfg, run, run_name, callbacks=[TuneReportCallback()])
    try:
        trainer.fit()
    except BaseException:
        MlflowClient(uri).set_terminated(run_id, status="FAILED")
        raise
    MlflowClient(uri).set_terminated(run_id, status="FINISHED")


def register_projection_package(
    tracking_uri: str, run_id: str, package_dir: str, name: str, metrics: dict[str, Any]
) -> tuple[str, str]:
    """Log a ProjectionCL package as the artifact ``package`` of `run_id` and register it.

    Args:
        tracking_uri: MLflow tracking URI.
        run_id: the trial's run.
        package_dir: the package directory (``model.safetensors`` + ``model_config.json``).
        name: registered model name.
        metrics: stored as version tags ``metric.<key>`` (as `register_version` does).

    Returns:
        (``models:/<name>/<version>``, version).
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import METRIC_TAG_PREFIX

    client = MlflowClient(tracking_uri)
    client.log_artifacts(run_id, package_dir, "package")
    source = f"{client.get_run(run_id).info.artifact_uri.rstrip('/')}/package"
    try:
        client.create_registered_model(name, description="ProjectionCL packages (safetensors + model_config.json)")
    except MlflowException as e:
        if e.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    tags = {f"{METRIC_TAG_PREFIX}{k}": repr(float(v)) for k, v in metrics.items() if isinstance(v, (int, float))}
    mv = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    print(f"[sensorlm] registered model {name} version {mv.version}", flush=True)
    return f"models:/{name}/{mv.version}", str(mv.version)


class ProjectionSweep(SweepTask):
    """The ProjectionCL task of the sweep driver."""

    task = "projection_cl"

    def __init__(self, cfg: SweepConfig):
        super().__init__(cfg)
        base = load_projection_config(cfg.base_config, cfg.base_overrides)
        if cfg.asha.max_t is not None and cfg.asha.max_t > base.steps:
            raise ConfigError(f"asha.max_t ({cfg.asha.max_t}) exceeds the trials' steps ({base.steps})")
        if cfg.asha.enabled and cfg.asha.grace_period > base.steps:
            raise ConfigError(f"asha.grace_period ({cfg.asha.grace_period}) exceeds the trials' steps ({base.steps})")
        mcfg = base.model_config()
        # A bound the sweep does not search is the base config's: check the pair still fits.
        if "min_logit_scale" in cfg.params or "max_logit_scale" in cfg.params:
            mins = cfg.params["min_logit_scale"].candidates() if "min_logit_scale" in cfg.params else (
                [mcfg.min_logit_scale] if mcfg.min_logit_scale is not None else [])
            maxs = cfg.params["max_logit_scale"].candidates() if "max_logit_scale" in cfg.params else [mcfg.max_logit_scale]
            fixed = ""
            if "max_logit_scale" not in cfg.params:
                fixed = f" (max_logit_scale is fixed at {mcfg.max_logit_scale} by the base config)"
            elif "min_logit_scale" not in cfg.params:
                fixed = f" (min_logit_scale is fixed at {mcfg.min_logit_scale} by the base config)"
            if mins:
                check_scale_bounds(mins, maxs, fixed)
        self.base = base
        self.arrays: dict[str, str] = {}
        self._split: str | None = None

    def prepare(self, sweep_dir: Path, tracking_uri: str) -> dict[str, Any]:
        from sensorlm.tracking.mlflow_utils import sha256_file

        dims = tuple(self.base.model_config().modality_dims)
        if self.base.data.synthetic is not None:
            self.arrays = make_synthetic_pairs(self.base.data.synthetic, dims, sweep_dir / "data")
        else:
            self.arrays = {k: str(Path(getattr(self.base.data, k)).expanduser().resolve()) for k in ARRAY_KEYS}
        check_arrays(self.arrays, dims)
        self._split = f"val_a_sha256={sha256_file(self.arrays['val_a'])};val_b_sha256={sha256_file(self.arrays['val_b'])}"
        data = to_dict(self.base)
        data["name"] = None
        data["storage_path"] = str(sweep_dir / "train")
        data["val_rows"] = "even"  # trials are selected on the even validation pairs; the odd ones decide the champion
        res = self.cfg.resources
        data["scaling"].update(num_workers=res.num_workers, cpus_per_worker=res.cpus_per_worker, use_gpu=res.use_gpu)
        data["tracking"].update(tracking_uri=tracking_uri, experiment=self.cfg.tracking.experiment, register=False,
                                registered_model_name=self.cfg.registered_name)
        self.base = from_dict(ProjectionTrainConfig, data)
        for name, spec in self.cfg.params.items():
            for value in spec.candidates():
                apply_projection_params(self.base, {name: value})
        return {"base": to_dict(self.base), "arrays": self.arrays}

    def total_steps(self) -> int:
        return self.base.steps

    def trainable(self) -> Callable[[dict, dict], None]:
        return projection_trial

    def split_key(self) -> str:
        return f"{self._split};rows=even" if self._split else ""

    def holdout_key(self) -> str | None:
        return f"{self._split};rows=odd" if self._split else None

    def holdout_score(self, package) -> float | None:
        """The sweep metric on the odd validation pairs, in this process."""
        a, b = (torch.as_tensor(validation_rows(np.load(self.arrays[k], mmap_mode="r", allow_pickle=False), "odd"))
                for k in ("val_a", "val_b"))
        return retrieval_metrics(package.model.eval(), a, b).get(self.cfg.metric)

    def load_version(self, model_uri: str, tracking_uri: str):
        return load_registered_projection(model_uri, tracking_uri)

    def base_config(self) -> dict[str, Any]:
        return to_dict(self.base)

    def worker_env(self) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(self.base.scaling.threads_per_worker), "RAY_TRAIN_ENABLE_PRINT_PATCH": "0"}

    def register(self, row: TrialRow, tracking_uri: str) -> tuple[str, str]:
        if not row.run_id:
            raise RuntimeError(f"trial {row.trial_id} has no MLflow run to log its package to")
        return register_projection_package(
            tracking_uri, row.run_id, row.package_dir, self.cfg.registered_name, {"step": row.step, **row.metrics}
        )
