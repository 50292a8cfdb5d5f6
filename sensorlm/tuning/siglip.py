"""SensorLM sweeps: the SigLIP loss's temperature and bias, and the learning rate.

A trial is the training job itself: the base training config (``configs/sensorlm_tiny.yaml``
or any other) with the trial's values written into it, run by the trainer's own
`make_torch_trainer` (Ray Train + DeepSpeed, the same worker loop) with a
``TuneReportCallback``. The worker loop reports at every checkpoint; the sweep sets
``checkpoint.every_steps = eval_every`` so that every validation reaches Tune (and ASHA).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

from sensorlm.config import ConfigError, from_dict, to_dict
from sensorlm.training.config import TrainConfig, load_train_config
from sensorlm.tuning.space import SweepConfig
from sensorlm.tuning.sweep import SweepTask, TrialRow, log_trial_params, trial_tags


def apply_trial_params(base: TrainConfig, params: dict[str, Any]) -> TrainConfig:
    """The trial's training config: `base` with the searched values written in.

    Args:
        base: the sweep's base training config.
        params: sampled values by search-parameter name (see `sensorlm.tuning.space`).
    """
    from sensorlm.models import model_config

    data = to_dict(base)
    overrides = data["model"]["overrides"]
    for name, value in params.items():
        if name == "temperature_init":
            if not value > 0:
                raise ConfigError(f"temperature_init must be > 0, got {value!r}")
            overrides["t_prime_init"] = math.log(float(value))  # the model learns log(temperature)
        elif name == "bias_init":
            overrides["bias_init"] = float(value)
        elif name == "learn_temperature":
            overrides["learn_temperature"] = bool(value)
        elif name == "lr":
            data["optim"]["lr"] = float(value)
        else:
            raise ConfigError(f"unknown sensorlm search parameter {name!r}")
    cfg = from_dict(TrainConfig, data)
    try:
        model_config(cfg.model.preset, **cfg.model.overrides)
    except ConfigError as e:
        raise ConfigError(f"model.overrides: {e}") from e
    return cfg


def sensorlm_trial(config: dict[str, Any], setup: dict[str, Any]) -> None:
    """One Tune trial: open the child MLflow run and fit the training job's TorchTrainer.

    Args:
        config: the values Tune sampled for this trial.
        setup: plain data from `SensorLMSweep.prepare` and the driver (parent run, names).
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from sensorlm.training.deepspeed_config import build_deepspeed_config
    from sensorlm.tracking.mlflow_utils import run_failure
    from sensorlm.training.trainer import RunFailed, end_run, make_torch_trainer, open_mlflow_run, run_info

    trial_id = ray.tune.get_context().get_trial_id()
    cfg = apply_trial_params(from_dict(TrainConfig, setup["base"]), config)
    run_name = f"{setup['sweep_name']}-{trial_id}"
    dataset = Path(setup["dataset"])
    manifest = setup["manifest"]
    uri, run_id = open_mlflow_run(
        cfg, run_name, build_deepspeed_config(cfg, cfg.scaling.num_workers), manifest, dataset,
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


class SensorLMSweep(SweepTask):
    """The SensorLM task of the sweep driver."""

    task = "sensorlm"

    def __init__(self, cfg: SweepConfig):
        super().__init__(cfg)
        base = load_train_config(cfg.base_config or "sensorlm_tiny", cfg.base_overrides)
        if base.task != "sensorlm":
            raise ConfigError(f"base_config {cfg.base_config!r} trains task {base.task!r}; a sensorlm sweep needs task sensorlm")
        if base.optim.warmup_steps >= base.steps:
            raise ConfigError(
                f"the trials' optim.warmup_steps ({base.optim.warmup_steps}) is not below their steps ({base.steps}): "
                "every trial would end inside warmup; set base_overrides optim.warmup_steps lower"
            )
        if cfg.asha.max_t is not None and cfg.asha.max_t > base.steps:
            raise ConfigError(f"asha.max_t ({cfg.asha.max_t}) exceeds the trials' steps ({base.steps})")
        if cfg.asha.enabled and cfg.asha.grace_period > base.steps:
            raise ConfigError(f"asha.grace_period ({cfg.asha.grace_period}) exceeds the trials' steps ({base.steps})")
        self.base = base
        self.manifest: dict[str, Any] | None = None
        self.manifest_sha256: str | None = None

    def prepare(self, sweep_dir: Path, tracking_uri: str) -> dict[str, Any]:
        from sensorlm.data.shards import read_manifest
        from sensorlm.tracking.mlflow_utils import sha256_file
        from sensorlm.training.model_from_data import check_validation_split, fit_model_to_data
        from sensorlm.training.trainer import prepare_dataset

        dataset = prepare_dataset(self.base)
        if isinstance(dataset, str):
            raise ConfigError(f"data.path {dataset!r}: a sweep needs a local dataset directory (its manifest is hashed)")
        self.manifest = read_manifest(str(dataset))
        self.base = fit_model_to_data(self.base, self.manifest, f"{dataset}/manifest.json")
        check_validation_split(self.base, self.manifest, f"{dataset}/manifest.json")
        self.manifest_sha256 = sha256_file(Path(dataset) / "manifest.json")
        data = to_dict(self.base)
        data["name"] = None
        data["storage_path"] = str(sweep_dir / "train")
        # Trials validate (and are selected) on the even-numbered val shards; the odd-numbered
        # ones stay unseen until the champion is decided on them.
        data["data"].update(path=str(dataset), synthetic=None, val_part="selection")
        from sensorlm.data.loader import select_shards

        if not select_shards(self.manifest, "val", "odd"):
            raise ConfigError(
                f"data.path {dataset}: the 'val' split has {len(select_shards(self.manifest, 'val'))} shard(s); "
                "a sweep needs 2 or more (selection on one part, the champion on the other): "
                "write smaller shards (--max-count)"
            )
        # Every validation is a report (the worker loop reports at checkpoints): ASHA sees them all.
        data["checkpoint"]["every_steps"] = self.base.eval_every
        res = self.cfg.resources
        data["scaling"].update(num_workers=res.num_workers, cpus_per_worker=res.cpus_per_worker, use_gpu=res.use_gpu)
        data["tracking"].update(
            tracking_uri=tracking_uri,
            experiment=self.cfg.tracking.experiment,
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
        return sensorlm_trial

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

    def holdout_score(self, package) -> float | None:
        """The sweep metric on the odd-numbered val shards, in this process (one rank, CPU)."""
        import torch

        from sensorlm.data.captioner import manifest_prompts
        from sensorlm.data.loader import make_loader
        from sensorlm.training.tasks import SensorLMTask

        text_len = int(package.config["text"]["context_len"])
        loader = make_loader(self.base.data.path, "val", self.base.batch_size, shuffle=False, num_workers=0,
                             text_len=text_len, tokenizer=package.tokenizer, manifest=self.manifest, shard_part="odd")
        task = SensorLMTask(self.manifest.get("activities") or [], manifest_prompts(self.manifest, self.base.data.prompt_template),
                            package.tokenizer, text_len, torch.device("cpu"))
        return task.evaluate(package.model.eval(), loader).get(self.cfg.metric)

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
