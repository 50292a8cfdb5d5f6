"""Evaluate a registered model on a held-out split, log the results to MLflow, write the plots.

``evaluate_model(model_uri, data)`` is what ``jobs/evaluate.py`` calls:

1. resolve the model (``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``, a
   bare run id, or a local package / pyfunc directory), download it and rebuild the torch module
   from the model package inside it (safetensors + JSON, nothing unpickled);
2. stream the split once through `make_loader` (no shuffling, file order) and compute the
   family's metrics with `sensorlm.evaluation.metrics`:
   SensorLM: zero-shot activity classification from ``activity_prompt`` texts, sensor <-> caption
   retrieval recall@k, few-shot linear probe on frozen sensor embeddings (shots drawn from the
   ``train`` split); SST: RMSE / bias / correlation in degrees C on held-out, observed and all ocean
   pixels beside the climatology, observed-days-mean and DINEOF baselines; ProjectionCL: recall@k between the
   two projected spaces of a pair of feature files;
3. draw the analysis figures (t-SNE, convergence read back from the training run, confusion
   matrix, ablation of other runs, attention rollout, SST maps) into a local folder;
4. log everything to a new run in the ``<name>-evaluation`` experiment, tagged with the model
   name, version, URI and training run, and tag the model version with ``eval.<metric>``.

Metric names use ``_at_`` for ``@`` (``retrieval/sensor_to_text/recall_at_1``): MLflow refuses
``@`` in metric names and tag keys, and one spelling everywhere (MLflow, metrics.json, the
returned dict) is easier to search.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from sensorlm.typed_config import ConfigError, redact
from sensorlm.evaluation import plots as P
from sensorlm.families import FAMILIES, get_family, resolve

__all__ = [
    "EvaluationResult",
    "ResolvedModel",
    "evaluate_model",
    "format_metrics_table",
    "resolve_compare_runs",
    "resolve_model",
]

from sensorlm.evaluation.common import RUN_ID as _RUN_ID, is_local as _is_local, metric_key, say as _say  # noqa: E402,F401
from sensorlm.tracking.history import (  # noqa: E402
    EVAL_TASK_TAG,
    _convergence_curves,
    _history,
    _run_exists,
    log_evaluation_run,
    resolve_compare_runs,
    run_display_name,
    tracking_client,
)
from sensorlm.tracking.resolve import ResolvedModel, resolve_model  # noqa: E402,F401
from sensorlm.evaluation.runners import (  # noqa: E402
    _check_compatible, _eval_manifest, _fold_manifest, _load_manifest, _resolve_data,
)



# ---------------------------------------------------------------------------------------------
# results


@dataclass
class EvaluationResult:
    """What `evaluate_model` produced.

    Args:
        metrics: flat ``{name: float}`` (NaN where a metric is undefined, e.g. a constant field's
            correlation).
        plots: ``{plot name: local PNG path}``.
        run_id: the MLflow evaluation run, or None with ``log=False``.
        out_dir: local folder holding the PNGs and ``metrics.json``.
        model_name: registered model name (None for a run or a local package without one).
        model_version: registered version (None likewise).
        training_run_id: the run that trained the model, when known.
        family: model family ("sensorlm", "sst", "projection_cl").
        compared: ``{label: run id}`` of the runs in the ablation plots.
        notes: what was skipped and why.
    """

    metrics: dict[str, float]
    plots: dict[str, Path]
    run_id: str | None
    out_dir: Path
    model_name: str | None = None
    model_version: str | None = None
    training_run_id: str | None = None
    family: str = ""
    compared: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# runs to compare


# ---------------------------------------------------------------------------------------------
# output


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def format_metrics_table(metrics: Mapping[str, float], family: str) -> str:
    """The metrics as a plain-text table; a family with `table_columns` (SST) shows the model and
    its baselines side by side, SensorLM the per-class zero-shot scores in a table of their own.

    Args:
        metrics: flat metrics from `evaluate_model`.
        family: model family.
    """

    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"

    lines: list[str] = []
    cols = get_family(family).table_columns
    if cols:
        rows = sorted({k.split("/", 1)[1] for k in metrics if k.split("/", 1)[0] in cols})
        lines.append(f"{'metric':<16}" + "".join(f"{c:>15}" for c in cols))
        for r in rows:
            lines.append(f"{r:<16}" + "".join(f"{fmt(metrics.get(f'{c}/{r}')):>15}" for c in cols))
        other = {k: v for k, v in metrics.items() if k.split("/", 1)[0] not in cols}
    else:
        other = {k: v for k, v in metrics.items() if not k.startswith("zero_shot/per_class/")}
    width = max([len(k) for k in other] + [6])
    if lines:
        lines.append("")
    lines.append(f"{'metric':<{width}}  value")
    lines += [f"{k:<{width}}  {fmt(v)}" for k, v in other.items()]
    per_class = sorted({k.split("/")[2] for k in metrics if k.startswith("zero_shot/per_class/")})
    if per_class:
        cw = max(len(c) for c in per_class + ["class"])
        lines += ["", f"{'class':<{cw}}  precision  recall      f1  support"]
        for c in per_class:
            row = [metrics.get(f"zero_shot/per_class/{c}/{k}", float("nan")) for k in ("precision", "recall", "f1")]
            support = int(metrics.get(f"zero_shot/per_class/{c}/support", 0))
            lines.append(f"{c:<{cw}}  {row[0]:9.3f}  {row[1]:6.3f}  {row[2]:6.3f}  {support:7d}")
    return "\n".join(lines)


def _write_local(
    out_dir: Path, metrics: dict[str, float], figures: dict[str, Any], notes: list[str], table: str | None = None
) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    plots: dict[str, Path] = {}
    for name, make in figures.items():
        plots[name] = P.save_png(make(), out_dir / f"{name}.png")
    (out_dir / "metrics.json").write_text(
        json.dumps({k: _finite_or_none(v) for k, v in metrics.items()}, indent=2, allow_nan=False) + "\n"
    )
    if notes:
        (out_dir / "notes.txt").write_text("\n".join(notes) + "\n")
    if table is not None:
        (out_dir / "metrics_table.txt").write_text(table + "\n")
    return plots


# ---------------------------------------------------------------------------------------------
# the whole evaluation


def evaluate_with(model_uri: str, cfg) -> "EvaluationResult":
    """Evaluate `model_uri` as an `EvalConfig` says (what ``sensorlm evaluate`` builds), passed whole."""
    return _evaluate(model_uri, cfg)


def evaluate_model(model_uri: str, data: str | Path | None = None, split: str = "val",
                   **options: Any) -> EvaluationResult:
    """Evaluate a model on a held-out split; write plots and metrics locally and (by default) to MLflow.

    Args:
        model_uri: see `resolve_model` (``models:/NAME@champion``, ``models:/NAME/3``, a run id...).
        data: dataset directory or URL; default the training run's ``data.path`` param when that
            exists here. Not used by ProjectionCL.
        split: the split to evaluate.
        **options: any other `sensorlm.evaluation.config.EvalConfig` field (``tracking_uri``,
            ``out_dir``, ``compare``, ``log``, ``shots`` ...), checked there; an unknown one is a
            one-line ConfigError.

    Returns:
        An `EvaluationResult`.
    """
    from sensorlm.evaluation.config import EvalConfig

    fields = {f.name for f in dataclasses.fields(EvalConfig)}
    unknown = sorted(set(options) - fields)
    if unknown:
        raise ConfigError(f"unknown evaluation option {unknown[0]!r} (known: {', '.join(sorted(fields))})")
    for key in ("compare", "shots", "ks"):
        if key in options:
            options[key] = list(options[key])
    return evaluate_with(model_uri, EvalConfig(data=data, split=split, **options))


def _evaluate(model_uri: str, cfg) -> EvaluationResult:
    """The evaluation of `model_uri` as `cfg` (an `EvalConfig`) says."""
    from sensorlm.tracking.mlflow_utils import check_tracking_server, resolve_tracking_uri

    data, split, out_dir, compare = cfg.data, cfg.split, cfg.out_dir, cfg.compare
    embeddings_a, embeddings_b = cfg.embeddings_a, cfg.embeddings_b
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))

    uri = resolve_tracking_uri(cfg.tracking_uri)
    if str(model_uri).startswith(("models:/", "runs:/")) or _RUN_ID.fullmatch(str(model_uri)):
        check_tracking_server(uri)
    resolved = resolve_model(model_uri, uri)
    package = resolved.package
    family = package.family
    if family not in FAMILIES or not FAMILIES[family].evaluator:
        raise ValueError(f"model {model_uri!r} is a {family!r} model (preset {package.preset!r}); "
                         f"evaluation supports {[f.name for f in FAMILIES.values() if f.evaluator]}")
    record = FAMILIES[family]
    evaluate = resolve(record.evaluator)
    client = tracking_client(uri)
    compared = resolve_compare_runs(compare, client) if compare else {}

    notes: list[str] = []
    if resolved.training_run_id and not _run_exists(client, resolved.training_run_id):
        # A local pyfunc directory copied from another tracking server names a run this one lacks.
        notes.append(f"training run {resolved.training_run_id} is not in {redact(uri)}: no curves, no default dataset")
        resolved.training_run_id = None
    name, tail = _run_label(resolved.name, resolved.version, resolved.training_run_id, package.preset)
    if out_dir is None:
        out_dir = Path("outputs") / "eval" / f"{name}-{tail}"
    out_dir = Path(out_dir)
    opts = dict(batch_size=cfg.batch_size, max_samples=cfg.max_samples, max_train=cfg.max_train, shots=tuple(cfg.shots),
                ks=tuple(cfg.ks), tsne_max=cfg.tsne_max, rollout_samples=cfg.rollout_samples,
                map_samples=cfg.map_samples, embeddings_a=embeddings_a, embeddings_b=embeddings_b,
                caption_samples=cfg.caption_samples, caption_method=cfg.caption_method,
                caption_max_len=cfg.caption_max_len)

    data_str = manifest = None
    if embeddings_a is None and embeddings_b is None:
        data_str = _resolve_data(data, client, resolved.training_run_id)
        manifest = _load_manifest(data_str, FAMILIES[family])
        manifest = _fold_manifest(manifest, cfg.fold, client, resolved.training_run_id, data_str, notes)
        _check_compatible(package, manifest, data_str, split)
        manifest = _eval_manifest(package, manifest, notes)
        _say(f"evaluating {model_uri} ({package.preset}) on {data_str} split {split!r}")
    else:
        _say(f"evaluating {model_uri} ({package.preset}) on {embeddings_a} / {embeddings_b}")
    metrics, figures = evaluate(package, data_str, split, manifest, opts, device, notes)
    metrics = {metric_key(k): float(v) for k, v in metrics.items()}

    _add_curve_figures(client, resolved.training_run_id, record, compared, name, figures, notes)

    table = format_metrics_table(metrics, family) if record.table_columns else None
    plots = _write_local(out_dir, metrics, figures, notes, table)
    for note in notes:
        _say(note)

    result = EvaluationResult(
        metrics=metrics, plots=plots, run_id=None, out_dir=out_dir, model_name=resolved.name,
        model_version=resolved.version, training_run_id=resolved.training_run_id, family=family,
        compared=compared, notes=notes,
    )
    if cfg.log:
        result.run_id = _log_evaluation(client, uri, cfg, model_uri, result, package.preset, data_str)
    _say(f"wrote {len(plots)} plots and metrics.json to {out_dir}")
    return result


def _run_label(model_name: str | None, version: str | None, training_run_id: str | None, preset: str) -> tuple[str, str]:
    """(name, tail) of the output folder and the evaluation run: ``NAME-vVERSION`` for a registered
    version, else the training run's id (or ``local``)."""
    name = model_name or preset
    return name, f"v{version}" if version else (training_run_id or "local")[:8]


def _add_curve_figures(client, training_run_id: str | None, record, compared: dict[str, str], name: str,
                       figures: dict, notes: list[str]) -> None:
    """Curves read back from MLflow: this model's training run (convergence), and the runs to
    compare with it (one ablation figure per metric any of them has)."""
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    if training_run_id:
        own = _convergence_curves(client, training_run_id)
        if own:
            figures["convergence"] = lambda: P.convergence_plot(own, title=f"Convergence of {name} (run {training_run_id[:8]})")
            curves[f"{run_display_name(client, training_run_id)} (evaluated)"] = own
        else:
            notes.append(f"convergence plot skipped: training run {training_run_id} has no train/val metrics")
    else:
        notes.append("convergence plot skipped: the training run of this model is not known")
    if not compared:
        return
    for label, run_id in compared.items():
        if run_id != training_run_id:
            curves[label] = {k: _history(client, run_id, k) for k in record.metrics}
    made = False
    for key, higher in record.higher_is_better():
        if any(c.get(key) for c in curves.values()):
            figures[f"ablation_{metric_key(key).replace('/', '_')}"] = (
                lambda key=key, higher=higher: P.ablation_plot(curves, key, higher_is_better=higher)
            )
            made = True
    if not made:
        notes.append(f"ablation plot skipped: no compared run has any of {list(record.metrics)}")


def _log_evaluation(client, uri: str, cfg, model_uri: str, result: EvaluationResult, preset: str,
                    data_str: str | None) -> str:
    """The evaluation's MLflow run (tags name the model, version, training run and data) and, for a
    registered version, its ``eval.*`` tags. Returns the run id."""
    from sensorlm.tracking.mlflow_utils import run_tags, set_version_tags

    name, tail = _run_label(result.model_name, result.model_version, result.training_run_id, preset)
    split = cfg.split
    tags = {
        "sensorlm.task": EVAL_TASK_TAG,
        "sensorlm.model_uri": str(model_uri),
        "sensorlm.model_family": result.family,
        "sensorlm.model_preset": preset,
        "sensorlm.eval_split": split if data_str is not None else "features",
    }
    if result.model_name:
        tags["sensorlm.model_name"] = result.model_name
        tags["sensorlm.model_version"] = result.model_version
    if result.training_run_id:
        tags["sensorlm.training_run_id"] = result.training_run_id
    if data_str is not None:
        tags["sensorlm.eval_data"] = data_str
    manifest_path = Path(data_str) / "manifest.json" if data_str and _is_local(data_str) else None
    tags.update(run_tags(manifest_path))
    params = {"model_uri": str(model_uri), "split": split, "batch_size": str(cfg.batch_size),
              "max_samples": str(cfg.max_samples), "shots": ",".join(map(str, cfg.shots)),
              "ks": ",".join(map(str, cfg.ks)), "compare": ",".join(cfg.compare) or "none"}
    if data_str is not None:
        params["data"] = data_str
    params.update({k: str(getattr(cfg, k)) for k in FAMILIES[result.family].eval_params})
    experiment = cfg.experiment or f"{name}-evaluation"
    run_id = log_evaluation_run(client, uri, experiment, f"eval-{name}-{tail}-{split}", tags, params, result.metrics,
                                result.out_dir, result.plots, result.notes)
    if result.model_name:
        version_tags = {f"eval.{k}": repr(v) for k, v in result.metrics.items() if not k.startswith("zero_shot/per_class/")}
        version_tags.update({"eval.run_id": run_id, "eval.split": tags["sensorlm.eval_split"]})
        refused = set_version_tags(client, result.model_name, result.model_version, version_tags)
        if refused:
            _say(f"version {result.model_version} keeps the eval.* tags of an earlier evaluation ({len(refused)} "
                 "refused: changing them needs MANAGE on the model); this evaluation is in its run")
    _say(f"logged evaluation run {run_id} (experiment {experiment!r})")
    return run_id
