"""A sweep's trials: the training job itself, for any model family.

A trial is the base training config (``configs/<task>_tiny.yaml`` or any other) with the trial's
values written in by the family's search parameters (`sensorlm.families`), run by the
trainer's own `make_torch_trainer` (Ray Train + DeepSpeed, the one worker loop) with a
``TuneReportCallback``. The worker loop reports at every checkpoint; the sweep sets
``checkpoint.every_steps = eval_every`` so that every validation reaches Tune (and ASHA).

Trials validate (and are selected) on one part of the validation split (``data.val_part =
selection``); the other part (``holdout``) stays unseen until the champion is decided on it.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable

from sensorlm.typed_config import ConfigError, from_dict, to_dict
from sensorlm.training.config import TrainConfig, load_train_config
from sensorlm.families import get_family
from sensorlm.tuning.gate import HoldoutScore
from sensorlm.tuning.results import ROLE_TAG, SWEEP_TAG, TRIAL_ID_TAG, TrialRow
from sensorlm.tuning.space import SweepConfig, check_bound_candidates


class SweepTask(ABC):
    """What the trainer plugs into the sweep driver (`sensorlm.tuning.trials.TrainSweep`).

    Subclasses set `task` and implement the abstract methods; `prepare` runs in the driver
    before any trial and must raise `ConfigError` for anything the search space and the base
    training config cannot do together.
    """

    task: str = ""

    def __init__(self, cfg: SweepConfig):
        self.cfg = cfg

    @abstractmethod
    def prepare(self, sweep_dir: Path, tracking_uri: str) -> dict[str, Any]:
        """Ready the data, validate, and return the plain-data setup every trial receives."""

    @abstractmethod
    def total_steps(self) -> int:
        """Optimizer steps of a trial that runs to the end."""

    @abstractmethod
    def trainable(self) -> Callable[[dict, dict], None]:
        """A module-level function ``fn(config, setup)``: one trial."""

    @abstractmethod
    def split_key(self) -> str:
        """Identifies the validation data and protocol; champions compare only on equal keys."""

    @abstractmethod
    def base_config(self) -> dict[str, Any]:
        """The resolved base training config (logged on the parent run)."""

    def run_tags(self) -> dict[str, str]:
        """Extra tags of the parent run (e.g. the dataset manifest's hash)."""
        return {}

    def worker_env(self) -> dict[str, str]:
        """Environment of every Ray process of the sweep."""
        return {}

    @abstractmethod
    def register(self, row: TrialRow, tracking_uri: str) -> tuple[str, str]:
        """Register `row`'s package as a new version of ``cfg.registered_name`` (no alias)."""

    def holdout_key(self) -> str | None:
        """Identifies data that model selection did not see and its protocol; None when the task
        has none (its champions then compare on the selection metric)."""
        return None

    def holdout_score(self, package: Any) -> HoldoutScore | None:
        """The sweep metric of a loaded model package on the held-out data (see `holdout_key`),
        with its per-window outcomes where the metric is their mean (`sensorlm.tuning.gate`)."""
        return None

    def load_version(self, model_uri: str, tracking_uri: str) -> Any:
        """A registered version's model package (``models:/NAME/VERSION``)."""
        from sensorlm.tracking.resolve import resolve_model

        return resolve_model(model_uri, tracking_uri).package


def trial_tags(setup: dict[str, Any], trial_id: str) -> dict[str, str]:
    """Tags that make a run the child of the sweep's parent run."""
    return {
        "mlflow.parentRunId": setup["parent_run_id"],
        SWEEP_TAG: setup["sweep_name"],
        ROLE_TAG: "trial",
        TRIAL_ID_TAG: trial_id,
    }


def log_trial_params(tracking_uri: str, run_id: str, config: dict[str, Any]) -> None:
    """The trial's sampled values as ``sweep.<name>`` params (the raw values, before mapping)."""
    from sensorlm.tracking.run import TrackedRun

    TrackedRun(tracking_uri, run_id).log_params({f"sweep.{k}": str(v) for k, v in sorted(config.items())})


def apply_trial_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The trial's training config: `base` with the searched values written in (validated).

    Args:
        base: the sweep's base training config.
        params: sampled values by search-parameter name (the family's `search`).
    """
    from sensorlm.models import model_config

    family = get_family(base.task)
    data = to_dict(base)
    for name, value in params.items():
        if name not in family.search:
            raise ConfigError(f"unknown {base.task} search parameter {name!r}")
        family.search[name].apply(data, value)
    cfg = from_dict(TrainConfig, data)
    try:
        model_config(cfg.model.preset, **cfg.model.overrides)
    except (ConfigError, ValueError) as e:
        raise ConfigError(f"model.overrides: {e}") from e
    return cfg


def train_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: open the child MLflow run and fit the training job's TorchTrainer.

    Args:
        config: the values Tune sampled for this trial.
        setup: plain data from `TrainSweep.prepare` and the driver (parent run, names).
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from sensorlm.tracking.mlflow_utils import run_failure
    from sensorlm.training.deepspeed_config import build_deepspeed_config
    from sensorlm.training.trainer import RunFailed, end_run, make_torch_trainer, open_mlflow_run, run_info

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = apply_trial_params(from_dict(TrainConfig, setup["base"]), config)
    run_name = f"{setup['sweep_name']}-{trial_id}"
    dataset = Path(setup["dataset"])
    manifest = setup["manifest"]
    uri, run_id = open_mlflow_run(
        cfg, run_name, build_deepspeed_config(cfg, cfg.scaling.max_workers), manifest, dataset,
        extra_tags=trial_tags(setup, trial_id),
    )
    log_trial_params(uri, run_id, config)
    trainer = make_torch_trainer(
        cfg, run_info(cfg, dataset, manifest, run_name, run_id, uri), run_name, callbacks=[TuneReportCallback()]
    )
    try:
        trainer.fit()
        failure = run_failure(uri, run_id)
        if failure:  # e.g. a non-finite loss: the trial is an error, never a champion
            raise RunFailed(failure)
    except BaseException:
        end_run(uri, run_id, "FAILED")
        raise
    end_run(uri, run_id, "FINISHED")


class TrainSweep(SweepTask):
    """The sweep driver's view of the trainer: any family, by its record."""

    def __init__(self, cfg: SweepConfig):
        super().__init__(cfg)
        self.task = cfg.task
        self.family = get_family(cfg.task)
        base = load_train_config(cfg.base_config or f"{cfg.task}_tiny", cfg.base_overrides)
        if base.task != cfg.task:
            raise ConfigError(f"base_config {cfg.base_config!r} trains task {base.task!r}; this sweep is over {cfg.task!r}")
        if base.optim.warmup_steps >= base.steps:
            raise ConfigError(
                f"the trials' optim.warmup_steps ({base.optim.warmup_steps}) is not below their steps ({base.steps}): "
                "every trial would end inside warmup; set base_overrides optim.warmup_steps lower"
            )
        if cfg.asha.max_t is not None and cfg.asha.max_t > base.steps:
            raise ConfigError(f"asha.max_t ({cfg.asha.max_t}) exceeds the trials' steps ({base.steps})")
        if cfg.asha.enabled and cfg.asha.grace_period > base.steps:
            raise ConfigError(f"asha.grace_period ({cfg.asha.grace_period}) exceeds the trials' steps ({base.steps})")
        self._check_bounds(base)
        self.base = base
        self.manifest: dict[str, Any] | None = None
        self.manifest_sha256: str | None = None

    def _check_bounds(self, base: TrainConfig) -> None:
        """A scale bound the sweep does not search is the base config's: the pair must still fit
        for every trial (checked here, before anything starts)."""
        from sensorlm.models import model_config

        if not self.family.scale_bounds or not any(p in self.cfg.params for p in self.family.scale_bounds):
            return
        low, high = self.family.scale_bounds
        mcfg = model_config(base.model.preset, **base.model.overrides)
        sides, fixed = [], ""
        for name in (low, high):
            if name in self.cfg.params:
                sides.append(self.cfg.params[name].candidates())
            else:
                value = getattr(mcfg, name)
                sides.append([value] if value is not None else [])
                fixed = f" ({name} is fixed at {value} by the base config)"
        if sides[0] and sides[1]:
            check_bound_candidates(sides[0], sides[1], low, high, fixed)

    def prepare(self, sweep_dir: Path, tracking_uri: str) -> dict[str, Any]:
        from sensorlm.tracking.mlflow_utils import sha256_file
        from sensorlm.training.trainer import data_decides_model, prepare_dataset

        dataset = prepare_dataset(self.base)
        if isinstance(dataset, str):
            raise ConfigError(f"data.path {dataset!r}: a sweep needs a local dataset directory (its manifest is hashed)")
        data = to_dict(self.base)
        data["data"].update(path=str(dataset), synthetic=None, val_part="selection")
        self.base, self.manifest = data_decides_model(from_dict(TrainConfig, data), dataset)
        # the champion's score is computed in one process: one rank's worth of held-out data will do
        holdout = dataclasses.replace(self.base, data=dataclasses.replace(self.base.data, val_part="holdout"),
                                      scaling=dataclasses.replace(self.base.scaling, num_workers=1))
        try:
            self.family.check_split(holdout, self.manifest, f"{dataset}/manifest.json")
        except ConfigError as e:
            raise ConfigError(f"{e} (a sweep selects on one part of the validation split and decides the champion "
                              "on the other: hold out more data or write smaller shards)") from None
        self.manifest_sha256 = sha256_file(Path(dataset) / "manifest.json")
        data = to_dict(self.base)
        data["name"] = None
        data["storage_path"] = str(sweep_dir / "train")
        # Every validation is a report (the worker loop reports at checkpoints): ASHA sees them all.
        data["checkpoint"]["every_steps"] = self.base.eval_every
        res = self.cfg.resources
        data["scaling"].update(num_workers=res.num_workers, cpus_per_worker=res.cpus_per_worker, use_gpu=res.use_gpu)
        data["tracking"].update(
            tracking_uri=tracking_uri,
            experiment=self.cfg.tracking.experiment,
            artifact_location=self.cfg.tracking.artifact_location,
            run_name=None,
            register=False,  # the driver registers the winner
            registered_model_name=self.cfg.registered_name,
        )
        self.base = from_dict(TrainConfig, data)
        # Every value a trial may get must make a valid training config (checked one by one).
        for name, spec in self.cfg.params.items():
            for value in spec.candidates():
                apply_trial_params(self.base, {name: value})
        return {"base": to_dict(self.base), "dataset": str(dataset), "manifest": self.manifest}

    def total_steps(self) -> int:
        return self.base.steps

    def trainable(self) -> Callable[[dict, dict], None]:
        return train_trial

    def split_key(self) -> str:
        b = self.base
        samples = "all" if b.data.val_batches == 0 else str(b.data.val_batches * b.batch_size * b.scaling.num_workers)
        return (
            f"dataset_manifest_sha256={self.manifest_sha256};split=val;part={b.data.val_part};samples={samples};"
            f"batch={b.batch_size}x{b.scaling.num_workers}"
        )

    def holdout_key(self) -> str | None:
        prompts = self.base.data.prompt_template or "dataset"
        return f"dataset_manifest_sha256={self.manifest_sha256};split=val;part=holdout;prompts={prompts}"

    def holdout_score(self, package) -> HoldoutScore | None:
        """The sweep metric on the held-out part of the validation split, in this process (one
        rank, CPU), through the family's own loader and task, with its per-window outcomes where
        the task gives them."""
        import torch

        from sensorlm.data.loader import LoaderSpec
        from sensorlm.models import model_config

        cfg = self.base
        mcfg = model_config(package.preset, **package.config)
        device = torch.device("cpu")
        task = self.family.task(cfg, self.manifest, device, mcfg, package.tokenizer)
        where = LoaderSpec(batch_size=cfg.batch_size, seed=cfg.data.seed, text_len=self.family.text_len(mcfg),
                           shard_part="odd")
        batches = self.family.loader(cfg, cfg.data.path, self.manifest, "val", where, tokenizer=package.tokenizer)
        per_window: dict[str, dict[str, float]] = {}
        value = task.evaluate(package.model.eval(), batches, per_window=per_window).get(self.cfg.metric)
        return None if value is None else HoldoutScore(float(value), per_window.get(self.cfg.metric))

    def base_config(self) -> dict[str, Any]:
        return to_dict(self.base)

    def run_tags(self) -> dict[str, str]:
        return {"dataset_manifest_sha256": self.manifest_sha256} if self.manifest_sha256 else {}

    def worker_env(self) -> dict[str, str]:
        from sensorlm.training.trainer import worker_env

        return worker_env(self.base)

    def register(self, row: TrialRow, tracking_uri: str) -> tuple[str, str]:
        from sensorlm.training.trainer import register_package

        cfg = apply_trial_params(self.base, row.params)
        metrics = {"step": row.step, **row.metrics}
        return register_package(cfg, tracking_uri, row.run_id, row.package_dir, metrics)
