"""The evaluation's typed configuration: what `evaluate_model` and ``sensorlm evaluate`` take.

A YAML file (``--config``) and ``key=value`` overrides on top of these defaults, validated here
before any model is loaded: an unknown key names the nearest valid one, a bad value names the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sensorlm.typed_config import ConfigError, deep_update, from_dict, load_yaml, merge_overrides, to_dict


@dataclass
class EvalConfig:
    """How to evaluate a model.

    Args:
        data: dataset directory or URL (None: the training run's ``data.path`` when it exists here).
        split: the split to evaluate.
        fold: ``k/K`` on a dataset imported with ``--folds K``: fold k is ``val``, the other folds
            ``train`` (None: the training run's ``data.fold`` when it has one).
        tracking_uri: MLflow tracking URI (None: ``$MLFLOW_TRACKING_URI``, else ./mlflow.db).
        experiment: MLflow experiment of the evaluation run (None: ``<name>-evaluation``).
        out_dir: local folder for PNGs and metrics.json (None: ``outputs/eval/<name>-v<version>``).
        compare: runs for the ablation plots: run ids, run names, or ``tag:KEY=VALUE``.
        rollout_samples / map_samples: samples with attention-rollout / SST map figures.
        log: an MLflow evaluation run and version tags; False = local files only.
        batch_size: evaluation batch size.
        max_samples: at most this many samples of `split` (None = all).
        max_train: at most this many train-split samples feed the few-shot probe.
        shots: examples per class of the few-shot probe (empty = no probe).
        ks: recall@k cut-offs.
        tsne_max: at most this many points in the t-SNE.
        embeddings_a / embeddings_b: ProjectionCL on two paired .npy feature files instead of a dataset.
        device: torch device (None: CUDA when available, else CPU).
        caption_samples: windows a captioning model captions (``caption/`` metrics; 0 = none).
        caption_method: ``greedy``, ``beam`` or ``top_p`` (`sensorlm.models.generation`).
        caption_max_len: caption length limit in tokens.
    """

    data: str | None = None
    split: str = "val"
    fold: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    out_dir: str | None = None
    compare: list[str] = field(default_factory=list)
    rollout_samples: int = 2
    map_samples: int = 2
    log: bool = True
    batch_size: int = 64
    max_samples: int | None = None
    max_train: int = 2000
    shots: list[int] = field(default_factory=lambda: [1, 5, 10])
    ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    tsne_max: int = 2000
    embeddings_a: str | None = None
    embeddings_b: str | None = None
    device: str | None = None
    caption_samples: int = 256
    caption_method: str = "greedy"
    caption_max_len: int = 48

    def __post_init__(self):
        if self.fold is not None:
            from sensorlm.data.folds import parse_fold

            try:
                parse_fold(self.fold, "fold")
            except ValueError as e:
                raise ConfigError(str(e)) from None
        for name, low in (("batch_size", 1), ("max_train", 1), ("tsne_max", 3), ("rollout_samples", 0),
                          ("map_samples", 0), ("caption_samples", 0), ("caption_max_len", 2)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an integer >= {low}, got {value!r}")
        if self.max_samples is not None and (
            isinstance(self.max_samples, bool) or not isinstance(self.max_samples, int) or self.max_samples < 2
        ):
            raise ConfigError(f"max_samples must be an integer >= 2 or None, got {self.max_samples!r}")
        if self.caption_method not in ("greedy", "beam", "top_p"):
            raise ConfigError(f"caption_method must be greedy, beam or top_p, got {self.caption_method!r}")
        self.shots, self.ks = [int(s) for s in self.shots], [int(k) for k in self.ks]
        if any(s < 1 for s in self.shots) or not self.ks or any(k < 1 for k in self.ks):
            raise ConfigError(f"shots and ks must be positive integers (ks non-empty), got shots={self.shots} "
                              f"ks={self.ks}")
        for name in ("data", "out_dir", "embeddings_a", "embeddings_b"):
            value = getattr(self, name)
            if isinstance(value, Path):
                setattr(self, name, str(value))


def load_eval_config(config: str | None = None, overrides: list[str] | None = None,
                     **given: Any) -> EvalConfig:
    """Defaults, then a YAML file, then keyword values (e.g. from command-line flags), then
    ``key=value`` overrides.

    Args:
        config: a YAML file of `EvalConfig` keys, or None.
        overrides: ``key=value`` strings, e.g. ``batch_size=128 shots=[1,5]``.
        **given: values set by the caller (None means not given).
    """
    data = to_dict(EvalConfig())
    if config:
        deep_update(data, load_yaml(Path(config)), str(config))
    for key, value in given.items():
        if key not in data:
            raise ConfigError(f"unknown evaluation option {key!r}")
        if value is not None:
            data[key] = [str(v) for v in value] if key == "compare" else (str(value) if isinstance(value, Path) else value)
    data = merge_overrides(data, list(overrides or []))
    return from_dict(EvalConfig, data)
