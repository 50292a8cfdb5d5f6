"""A sweep's typed configuration: the search space, the searcher, ASHA, resources, tracking.

A sweep config is a YAML file (see ``configs/sweeps/``) plus ``key=value`` overrides. Everything
is checked here, before Ray starts: an unknown key, a parameter the task cannot sweep, a
non-positive scale, ``min_logit_scale`` above ``max_logit_scale`` or a searcher that cannot
handle a parameter type is a one-line `ConfigError` naming the key.

Search parameters come from each model family's record (`sensorlm.families`): what
values they take and which training-config field they set. For example:

sensorlm
    temperature_init   > 0   model.overrides.t_prime_init = log(temperature_init)
    temperature_min    > 0   model.overrides.temperature_min (bound on t = exp(t_prime))
    temperature_max    > 0   model.overrides.temperature_max
    bias_init          any   model.overrides.bias_init
    learn_temperature  bool  model.overrides.learn_temperature
    lr                 > 0   optim.lr
projection_cl
    logit_scale_init   > 0   model.overrides.logit_scale_init
    min_logit_scale    > 0   model.overrides.min_logit_scale
    max_logit_scale    > 0   model.overrides.max_logit_scale
    lr                 > 0   optim.lr
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from sensorlm.typed_config import ConfigError, deep_update, from_dict, load_yaml, merge_overrides, to_dict
from sensorlm.families import get_family

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs" / "sweeps"
PARAM_TYPES = ("grid", "choice", "uniform", "loguniform")
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")


@dataclass
class ParamSpec:
    """One searched parameter.

    Args:
        type: ``grid`` (every value, in order), ``choice`` (sampled from values), ``uniform`` or
            ``loguniform`` (sampled from [low, high]).
        values: the values of ``grid`` / ``choice``.
        low, high: the bounds of ``uniform`` / ``loguniform``.
    """

    type: Literal["grid", "choice", "uniform", "loguniform"]
    values: list[Any] | None = None
    low: float | None = None
    high: float | None = None

    def __post_init__(self):
        if self.type in ("grid", "choice"):
            if not self.values:
                raise ConfigError(f"type {self.type} needs a non-empty 'values' list")
            if self.low is not None or self.high is not None:
                raise ConfigError(f"type {self.type} takes 'values', not 'low'/'high'")
        else:
            if self.values is not None:
                raise ConfigError(f"type {self.type} takes 'low' and 'high', not 'values'")
            if self.low is None or self.high is None:
                raise ConfigError(f"type {self.type} needs both 'low' and 'high'")
            if not (math.isfinite(self.low) and math.isfinite(self.high)) or not self.low < self.high:
                raise ConfigError(f"type {self.type} needs finite low < high, got low={self.low}, high={self.high}")
            if self.type == "loguniform" and self.low <= 0:
                raise ConfigError(f"type loguniform needs low > 0, got {self.low}")

    def candidates(self) -> list[Any]:
        """Every value a trial may get (grid/choice) or the two bounds (uniform/loguniform)."""
        return list(self.values) if self.values is not None else [self.low, self.high]

    def tune_domain(self):
        """The Ray Tune search-space object of this parameter."""
        from ray import tune

        if self.type == "grid":
            return tune.grid_search(list(self.values))
        if self.type == "choice":
            return tune.choice(list(self.values))
        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        return tune.loguniform(self.low, self.high)


@dataclass
class AshaSection:
    """ASHA early stopping on the sweep's metric, counted in optimizer steps.

    Args:
        enabled: off = every trial runs to the end (FIFO).
        grace_period: steps a trial runs before it can be stopped.
        reduction_factor: 1/reduction_factor of the trials go on at each rung.
        max_t: the last rung, in steps (None = the trial's total steps).
    """

    enabled: bool = True
    grace_period: int = 1
    reduction_factor: float = 2.0
    max_t: int | None = None

    def __post_init__(self):
        if self.grace_period < 1:
            raise ConfigError(f"asha.grace_period must be >= 1 step, got {self.grace_period}")
        if not self.reduction_factor > 1:
            raise ConfigError(f"asha.reduction_factor must be > 1, got {self.reduction_factor}")
        if self.max_t is not None and self.max_t < self.grace_period:
            raise ConfigError(f"asha.max_t ({self.max_t}) must be >= asha.grace_period ({self.grace_period})")


@dataclass
class ResourcesSection:
    """Per-trial resources: the Tune trial (which only drives) and its Ray Train workers.

    Args:
        num_workers: Ray Train workers per trial.
        cpus_per_worker: logical CPUs per worker (0.5 lets 2 workers share one core).
        trial_cpus: logical CPUs of the Tune trial process that launches the TorchTrainer.
        use_gpu: one GPU per worker.
    """

    num_workers: int = 2
    cpus_per_worker: float = 0.5
    trial_cpus: float = 0.5
    use_gpu: bool = False

    def __post_init__(self):
        if self.num_workers < 1:
            raise ConfigError(f"resources.num_workers must be >= 1, got {self.num_workers}")
        if not self.cpus_per_worker > 0:
            raise ConfigError(f"resources.cpus_per_worker must be > 0, got {self.cpus_per_worker}")
        if not self.trial_cpus > 0:  # Ray Tune cannot place a trial that asks for nothing
            raise ConfigError(f"resources.trial_cpus must be > 0, got {self.trial_cpus}")


@dataclass
class PromotionSection:
    """How sure the champion gate must be (`sensorlm.tuning.gate`).

    Args:
        confidence: the paired bootstrap interval's coverage: the winner takes the alias only
            when this interval of its held-out improvement over the best registered version
            excludes zero.
        resamples: bootstrap resamples.
        seed: the resampling seed (the same models and data give the same decision).
    """

    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0

    def __post_init__(self):
        if not 0.5 <= self.confidence < 1:
            raise ConfigError(f"promotion.confidence must be in [0.5, 1), got {self.confidence}")
        if self.resamples < 100:
            raise ConfigError(f"promotion.resamples must be >= 100, got {self.resamples}")


@dataclass
class SweepTracking:
    """MLflow for the sweep: one parent run, one child run per trial, the winner registered.

    Args:
        tracking_uri: None = $MLFLOW_TRACKING_URI or ./mlflow.db.
        experiment: MLflow experiment of the parent and child runs.
        artifact_location: artifact root of a new experiment (e.g. ``s3://bucket/mlflow``).
        registered_model_name: None = the task's name (``sensorlm``, ``projection_cl`` ...).
        register: register the best completed trial at the end.
        alias: the alias the winner takes when it beats the version holding it.
    """

    tracking_uri: str | None = None
    experiment: str = "sensorlm-sweeps"
    artifact_location: str | None = None
    registered_model_name: str | None = None
    register: bool = True
    alias: str = "champion"


@dataclass
class SweepConfig:
    """A whole sweep.

    Args:
        task: the model family to sweep (``sensorlm``: SigLIP temperature, its bounds and bias;
            ``projection_cl``: logit scale and its bounds; see `sensorlm.families`).
        name: the sweep's name; its folder ``storage_path/name`` holds the Tune experiment, and
            running a sweep with the same name resumes it. None = ``<task>-<timestamp>``.
        base_config: the training config every trial starts from: a name in ``configs/`` or a
            YAML path (None: ``configs/<task>_tiny.yaml``).
        base_overrides: ``key=value`` overrides applied to the base config.
        searcher: ``grid`` (every combination of grid values), ``random`` or ``optuna`` (TPE).
        num_samples: trials to sample (random / optuna); repeats of the whole grid (grid).
        max_concurrent_trials: trials running at once.
        metric / mode: what ASHA and the winner are judged on (None = the task's default
            metric and its natural direction).
        seed: seed of the searcher.
        storage_path: folder of sweep folders.
        asha / resources / tracking: see their sections.
        promotion: how sure the champion gate must be (`PromotionSection`).
        params: parameter name -> `ParamSpec` (see the module docstring for the names).
    """

    task: str = "sensorlm"
    name: str | None = None
    base_config: str | None = None
    base_overrides: list[str] = field(default_factory=list)
    searcher: Literal["grid", "random", "optuna"] = "random"
    num_samples: int = 1
    max_concurrent_trials: int = 1
    metric: str | None = None
    mode: Literal["min", "max"] | None = None
    seed: int = 0
    storage_path: str = "outputs/sweeps"
    asha: AshaSection = field(default_factory=AshaSection)
    resources: ResourcesSection = field(default_factory=ResourcesSection)
    tracking: SweepTracking = field(default_factory=SweepTracking)
    promotion: PromotionSection = field(default_factory=PromotionSection)
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        if self.name is not None and not _NAME_RE.match(self.name):
            raise ConfigError(f"name {self.name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
        if self.num_samples < 1:
            raise ConfigError(f"num_samples must be >= 1, got {self.num_samples}")
        if self.max_concurrent_trials < 1:
            raise ConfigError(f"max_concurrent_trials must be >= 1, got {self.max_concurrent_trials}")
        family = get_family(self.task)
        if self.metric is None:
            self.metric = family.default_metric
        if self.metric not in family.metrics:
            raise ConfigError(f"metric {self.metric!r} is not reported by task {self.task} "
                              f"(one of {sorted(family.metrics)})")
        if self.mode is None:
            self.mode = family.metrics[self.metric]
        self.params = _parse_params(self.params, self.task)
        _check_searcher(self.searcher, self.params)
        if family.scale_bounds and all(name in self.params for name in family.scale_bounds):
            low, high = family.scale_bounds
            check_bound_candidates(self.params[low].candidates(), self.params[high].candidates(), low, high)

    @property
    def registered_name(self) -> str:
        return self.tracking.registered_model_name or self.task

    def expected_trials(self) -> int:
        """How many trials the whole sweep runs (Tune multiplies grid values by num_samples)."""
        grid = 1
        for spec in self.params.values():
            if spec.type == "grid":
                grid *= len(spec.values)
        return grid * self.num_samples if self.searcher != "optuna" else self.num_samples

    def param_space(self) -> dict[str, Any]:
        """The Tune ``param_space``: one search-space object per parameter."""
        return {name: spec.tune_domain() for name, spec in self.params.items()}


def _parse_params(raw: dict[str, Any], task: str) -> dict[str, ParamSpec]:
    if not isinstance(raw, dict) or not raw:
        raise ConfigError("params: give at least one parameter to search (e.g. params.lr: {type: loguniform, ...})")
    known = {name: p.kind for name, p in get_family(task).search.items()}
    out: dict[str, ParamSpec] = {}
    for name, spec in raw.items():
        if name not in known:
            raise ConfigError(f"params.{name}: unknown search parameter for task {task} (known: {', '.join(sorted(known))})")
        if isinstance(spec, ParamSpec):
            parsed = spec
        else:
            try:
                parsed = from_dict(ParamSpec, spec, f"params.{name}")
            except ConfigError as e:
                msg = str(e)  # from_dict names the key path; __post_init__ messages do not
                raise ConfigError(msg if f"params.{name}" in msg else f"params.{name}: {msg}") from None
        if known[name] != "bool" and parsed.values is not None:
            # YAML 1.1 reads 1e-3 (no dot) as a string; numbers are meant.
            parsed.values = [_number(v) for v in parsed.values]
        _check_values(name, known[name], parsed)
        out[name] = parsed
    return out


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_values(name: str, kind: str, spec: ParamSpec) -> None:
    values = spec.candidates()
    if kind == "bool":
        if spec.type not in ("grid", "choice"):
            raise ConfigError(f"params.{name}: a true/false parameter takes type grid or choice, not {spec.type}")
        bad = [v for v in values if not isinstance(v, bool)]
        if bad:
            raise ConfigError(f"params.{name}: values must be true or false, got {bad[0]!r}")
        return
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(f"params.{name}: values must be finite numbers, got {v!r}")
        if kind == "positive" and v <= 0:
            what = "a learning rate" if name == "lr" else "a scale"
            raise ConfigError(f"params.{name}: must be > 0 ({what}), got {v!r}")
        if kind == "nonnegative" and v < 0:
            raise ConfigError(f"params.{name}: must be >= 0 (a weight), got {v!r}")


def _check_searcher(searcher: str, params: dict[str, ParamSpec]) -> None:
    for name, spec in params.items():
        if searcher == "grid" and spec.type != "grid":
            raise ConfigError(
                f"params.{name}: searcher grid needs type grid for every parameter, got {spec.type} "
                "(use searcher random to mix grid values with sampled ones)"
            )
        if searcher == "optuna" and spec.type == "grid":
            raise ConfigError(f"params.{name}: searcher optuna cannot take type grid; use type choice")


def check_bound_candidates(min_values: list[float], max_values: list[float], low: str, high: str, fixed: str = "") -> None:
    """Reject a space in which some trial could get its scale's lower bound above its upper bound.

    Args:
        min_values / max_values: the values (or sampling bounds) each side can take.
        low / high: the two parameters' names, for the message.
        fixed: text naming where a non-searched side's single value comes from.
    """
    lo_max, hi_min = min(max_values), max(min_values)
    if hi_min > lo_max:
        raise ConfigError(
            f"params.{low}: values up to {hi_min} exceed {high} values as low as {lo_max}{fixed}; "
            f"every trial needs {low} <= {high}"
        )


def load_sweep_config(config: str, overrides: list[str] | None = None) -> SweepConfig:
    """Load a sweep config from a YAML path or a name in ``configs/sweeps/`` with overrides.

    Args:
        config: ``configs/sweeps/siglip_tiny.yaml``, any YAML path, or a bare name (``siglip_tiny``).
        overrides: ``key=value`` strings on the sweep config (``num_samples=8``,
            ``params.lr={type: loguniform, low: 1e-4, high: 1e-2}``); ``base.KEY=VALUE`` is
            appended to ``base_overrides`` (an override of the trials' training config).
    """
    path = Path(config)
    if not path.suffix:
        path = CONFIG_DIR / f"{config}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.yaml"))
        raise ConfigError(f"sweep config {config!r} is neither a YAML file nor a known sweep ({', '.join(known)})")
    data = load_yaml(path)
    task = data.get("task", "sensorlm")
    try:
        get_family(task)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    base_extra = []
    sweep_overrides = []
    for text in overrides or []:
        if text.startswith("base."):
            base_extra.append(text[len("base.") :])
        else:
            sweep_overrides.append(text)
    merged = _defaults(task)
    deep_update(merged, data, str(path), leaf_keys=("params",))
    merged = merge_overrides(merged, sweep_overrides, free_sections=("params",))
    merged["base_overrides"] = list(merged.get("base_overrides") or []) + base_extra
    return from_dict(SweepConfig, merged)


def _defaults(task: str) -> dict[str, Any]:
    """SweepConfig's defaults as a nested dict (params empty: a sweep must name its own)."""
    import dataclasses

    out: dict[str, Any] = {}
    for f in dataclasses.fields(SweepConfig):
        value = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        out[f.name] = to_dict(value) if dataclasses.is_dataclass(value) else value
    out["task"] = task
    return out
