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

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sensorlm.config import redact
from sensorlm.evaluation import plots as P
from sensorlm.training.families import FAMILIES, get_family, resolve
from sensorlm.tracking.package import (
    CONFIG_FILE,
    ModelPackage,
    load_model_package,
    sst_normalisation,
)

__all__ = [
    "EvaluationResult",
    "ResolvedModel",
    "evaluate_model",
    "format_metrics_table",
    "main",
    "resolve_compare_runs",
    "resolve_model",
]

# Training-run metrics compared across runs by --compare: (key, higher is better).
ABLATION_METRICS = {
    "sensorlm": (("val/zero_shot_acc", True), ("val/loss", False)),
    "sst": (("val/rmse_holdout_c", False), ("val/rmse_ocean_c", False)),
    "projection_cl": (("val/loss", False),),
}
EVAL_TASK_TAG = "evaluation"  # value of `sensorlm.task` on evaluation runs
_RUN_ID = re.compile(r"[0-9a-f]{32}")
# MLflow accepts these characters in metric names and tag keys (mlflow.utils.validation).
_MLFLOW_BAD_CHARS = re.compile(r"[^\w.\- :/]")


def _say(msg: str) -> None:
    print(f"[sensorlm.evaluate] {msg}", flush=True)


def metric_key(name: str) -> str:
    """A metric name MLflow accepts: ``@`` -> ``_at_``, other refused characters -> ``_``."""
    return _MLFLOW_BAD_CHARS.sub("_", name.replace("@", "_at_"))


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


@dataclass
class ResolvedModel:
    """A model found in MLflow (or on disk) and loaded.

    Args:
        uri: the URI as given.
        package: the loaded model package (torch module, tokenizer, data stats).
        name: registered model name, if the model is a registered version.
        version: registered version, likewise.
        training_run_id: the run that logged the model (its metrics are the training curves).
    """

    uri: str
    package: ModelPackage
    name: str | None
    version: str | None
    training_run_id: str | None


# ---------------------------------------------------------------------------------------------
# model resolution

_ACCEPTED = (
    "models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/model, a 32-character run id, "
    "or a local model package directory"
)


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def _registered_version(client, name: str, alias: str | None, version: str | None, uri: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        registered = client.get_registered_model(name)
    except MlflowException as e:
        if _not_found(e):
            raise ValueError(f"model URI {uri!r}: no registered model named {name!r} at {redact(tracking_uri)}") from None
        raise
    if alias is not None:
        aliases = dict(registered.aliases or {})
        if alias not in aliases:
            have = ", ".join(f"@{a} -> v{v}" for a, v in sorted(aliases.items())) or "none"
            raise ValueError(f"model URI {uri!r}: model {name!r} has no alias {alias!r} (aliases: {have})")
        version = str(aliases[alias])
    try:
        return client.get_model_version(name, str(version))
    except MlflowException as e:
        if _not_found(e):
            versions = sorted(int(v.version) for v in client.search_model_versions(f"name = '{name}'"))
            raise ValueError(
                f"model URI {uri!r}: model {name!r} has no version {version} (versions: {versions or 'none'})"
            ) from None
        raise


def _check_run(client, run_id: str, uri: str, tracking_uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(run_id)
    except MlflowException as e:
        if _not_found(e):
            raise ValueError(f"model URI {uri!r}: no MLflow run with id {run_id} at {redact(tracking_uri)}") from None
        raise


def _version_of_run(client, run_id: str):
    """The newest registered version logged by `run_id`, or None."""
    versions = client.search_model_versions(f"run_id = '{run_id}'")
    if not versions:
        return None
    return max(versions, key=lambda v: (int(v.version), v.name))


def _read_mlmodel(root: Path) -> dict[str, Any] | None:
    import yaml

    path = root / "MLmodel"
    if not path.is_file():
        return None
    meta = yaml.safe_load(path.read_text())
    return meta if isinstance(meta, dict) else None


def find_package_dir(root: str | Path, what: str) -> Path:
    """The model package inside a downloaded model: `root` itself, or the pyfunc's "package" artifact.

    Args:
        root: a package directory or a logged pyfunc model directory (holding ``MLmodel``).
        what: the model's URI, for messages.
    """
    root = Path(root)
    if (root / CONFIG_FILE).is_file():
        return root
    meta = _read_mlmodel(root)
    if meta is not None:
        artifacts = (meta.get("flavors", {}).get("python_function", {}) or {}).get("artifacts") or {}
        rel = (artifacts.get("package") or {}).get("path")
        if rel and (root / rel / CONFIG_FILE).is_file():
            return root / rel
    # A package logged as a plain artifact one level down (e.g. runs:/ID/outputs).
    hits = sorted(p.parent for p in root.glob(f"*/{CONFIG_FILE}")) + sorted(
        p.parent for p in root.glob(f"artifacts/*/{CONFIG_FILE}")
    )
    if len(hits) == 1:
        return hits[0]
    raise FileNotFoundError(
        f"{what}: no model package found in {root} (expected {CONFIG_FILE}, or an MLmodel whose "
        f"pyfunc artifact 'package' holds one)"
    )


def _download_and_load(artifact_uri: str, uri: str) -> tuple[ModelPackage, str | None]:
    import mlflow
    from mlflow.exceptions import MlflowException

    with tempfile.TemporaryDirectory(prefix="sensorlm-eval-") as tmp:
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=artifact_uri, dst_path=tmp)
        except MlflowException as e:
            raise ValueError(f"model URI {uri!r}: cannot download {artifact_uri}: {e.message}") from None
        root = Path(local)
        package = load_model_package(find_package_dir(root, uri))
        meta = _read_mlmodel(root) or {}
        return package, meta.get("run_id")


def resolve_model(model_uri: str, tracking_uri: str | None = None) -> ResolvedModel:
    """Find a model in the registry (or a run, or on disk), download it and load its package.

    Args:
        model_uri: ``models:/NAME@ALIAS``, ``models:/NAME/VERSION``, ``runs:/RUN_ID/PATH``, a bare
            32-character run id (``runs:/RUN_ID/model``), or a local directory holding a model
            package or a logged pyfunc model.
        tracking_uri: MLflow tracking URI (default: `resolve_tracking_uri`'s choice).

    Raises:
        ValueError: naming the URI and what is missing (model, alias, version, run).
    """
    import mlflow
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import resolve_tracking_uri

    if not isinstance(model_uri, str) or not model_uri.strip():
        raise ValueError(f"model URI must be a non-empty string ({_ACCEPTED}), got {model_uri!r}")
    uri = model_uri.strip()
    local = Path(uri).expanduser()
    if "://" not in uri and not uri.startswith(("models:", "runs:")) and local.is_dir():
        package_dir = find_package_dir(local, uri)
        meta = _read_mlmodel(local) or {}
        return ResolvedModel(uri, load_model_package(package_dir), None, None, meta.get("run_id"))

    tracking_uri = resolve_tracking_uri(tracking_uri)
    # download_artifacts resolves models:/ and runs:/ through the global tracking URI.
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)

    if uri.startswith("models:/"):
        rest = uri[len("models:/") :]
        m_alias = re.fullmatch(r"([^/@]+)@([^/@]+)", rest)
        m_version = re.fullmatch(r"([^/@]+)/(\d+)", rest)
        if m_alias:
            mv = _registered_version(client, m_alias[1], m_alias[2], None, uri, tracking_uri)
        elif m_version:
            mv = _registered_version(client, m_version[1], None, m_version[2], uri, tracking_uri)
        else:
            raise ValueError(f"model URI {uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
        package, logged_run = _download_and_load(f"models:/{mv.name}/{mv.version}", uri)
        return ResolvedModel(uri, package, mv.name, str(mv.version), mv.run_id or logged_run)

    if uri.startswith("runs:/"):
        run_id, _, path = uri[len("runs:/") :].partition("/")
        path = path.strip("/") or "model"
    elif _RUN_ID.fullmatch(uri):
        run_id, path = uri, "model"
    else:
        raise ValueError(f"unknown model URI {uri!r}: expected {_ACCEPTED}")
    _check_run(client, run_id, uri, tracking_uri)
    package, _ = _download_and_load(f"runs:/{run_id}/{path}", uri)
    mv = _version_of_run(client, run_id)
    if mv is None:
        return ResolvedModel(uri, package, None, None, run_id)
    return ResolvedModel(uri, package, mv.name, str(mv.version), run_id)


# ---------------------------------------------------------------------------------------------
# runs to compare


def _quoted(value: str, what: str) -> str:
    if "'" in value or "`" in value:
        raise ValueError(f"--compare {what!r}: quotes are not supported in run names or tag filters")
    return value


def _search_all(client, filter_string: str) -> list:
    from mlflow.entities import ViewType

    ids = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ACTIVE_ONLY)]
    if not ids:
        return []
    runs = client.search_runs(ids, filter_string=filter_string, max_results=200)
    # Evaluation runs carry the same names and tags as what they evaluate; only training runs have curves.
    return [r for r in runs if r.data.tags.get("sensorlm.task") != EVAL_TASK_TAG]


def resolve_compare_runs(specs: Sequence[str], client) -> dict[str, str]:
    """Runs named by ``--compare`` entries -> ``{label: run id}``.

    Args:
        specs: each an MLflow run id, ``tag:KEY=VALUE`` (every run with that tag), or a run name
            (every run with that name).
        client: an MlflowClient.

    Raises:
        ValueError: naming an entry that matches no run.
    """
    from mlflow.exceptions import MlflowException

    found: list = []
    for spec in specs:
        spec = str(spec).strip()
        runs: list = []
        if spec.startswith("tag:"):
            key, sep, value = spec[len("tag:") :].partition("=")
            if not sep or not key:
                raise ValueError(f"--compare {spec!r}: expected tag:KEY=VALUE")
            runs = _search_all(client, f"tags.`{_quoted(key, spec)}` = '{_quoted(value, spec)}'")
        else:
            if _RUN_ID.fullmatch(spec):
                try:
                    runs = [client.get_run(spec)]
                except MlflowException as e:
                    if not _not_found(e):
                        raise
            if not runs:
                runs = _search_all(client, f"attributes.run_name = '{_quoted(spec, spec)}'")
        if not runs:
            raise ValueError(f"--compare {spec!r}: no MLflow run with that id, name or tag:KEY=VALUE")
        found.extend(runs)
    labels: dict[str, str] = {}
    seen: set[str] = set()
    for run in found:
        run_id = run.info.run_id
        if run_id in seen:
            continue
        seen.add(run_id)
        label = run.info.run_name or run_id[:8]
        if label in labels:
            label = f"{label} ({run_id[:8]})"
        labels[label] = run_id
    return labels


def _run_exists(client, run_id: str) -> bool:
    from mlflow.exceptions import MlflowException

    try:
        client.get_run(run_id)
    except MlflowException as e:
        if _not_found(e):
            return False
        raise
    return True


def _history(client, run_id: str, key: str) -> list[tuple[float, float]]:
    return sorted((float(m.step), float(m.value)) for m in client.get_metric_history(run_id, key))


def _convergence_curves(client, run_id: str) -> dict[str, list[tuple[float, float]]]:
    """train/loss and every val/* metric of a training run (val/samples is a count, not a curve)."""
    keys = sorted(client.get_run(run_id).data.metrics)
    wanted = [k for k in keys if k == "train/loss" or (k.startswith("val/") and k != "val/samples")]
    curves = {k: _history(client, run_id, k) for k in wanted}
    return {k: v for k, v in curves.items() if v}


# ---------------------------------------------------------------------------------------------
# data


def _is_local(data: str) -> bool:
    return "://" not in data and not data.startswith("pipe:")


def _resolve_data(data: str | Path | None, client, training_run_id: str | None) -> str:
    if data is not None:
        return str(data)
    if client is not None and training_run_id:
        path = client.get_run(training_run_id).data.params.get("data.path")
        if path:
            if not _is_local(path):
                return path
            if (Path(path).expanduser() / "manifest.json").is_file():
                return str(Path(path).expanduser())
            raise FileNotFoundError(
                f"the training run {training_run_id} used data.path {path!r}, which has no manifest.json here; "
                "pass the dataset with --data"
            )
    raise ValueError("no dataset given (--data) and none recorded in the training run's params (data.path)")


def _load_manifest(data: str, family) -> dict[str, Any]:
    if _is_local(data):
        path = Path(data).expanduser()
        if not path.is_dir():
            raise FileNotFoundError(f"dataset {data}: directory does not exist")
        if not (path / "manifest.json").is_file():
            raise FileNotFoundError(f"dataset {data}: no manifest.json in {path} (is it a prepared dataset?)")
    return family.read_manifest(data)


def _check_compatible(package: ModelPackage, manifest: Mapping[str, Any], data: str, split: str) -> None:
    family, kind = package.family, manifest.get("kind")
    want = get_family(family).data_kind
    if kind != want:
        raise ValueError(
            f"model {package.preset!r} is a {family} model, which is evaluated on {want!r} data, "
            f"but dataset {data} holds {kind!r} data"
        )
    if split not in manifest["splits"]:
        raise ValueError(f"dataset {data}: no split {split!r} (has {sorted(manifest['splits'])})")
    cfg = package.config
    if "dims" in manifest:  # paired embeddings
        if tuple(manifest["dims"]) != tuple(cfg["modality_dims"]):
            raise ValueError(f"dataset {data}: embeddings are {manifest['dims']} wide, but model {package.preset!r} "
                             f"takes {list(cfg['modality_dims'])}")
        return
    shapes = {k: tuple(v) for k, v in manifest["sample_shape"].items()}
    if family == "sensorlm":
        want_shape = (int(cfg["sensor"]["input_len"]), int(cfg["sensor"]["num_channels"]))
        have = shapes.get("sensor")
        name = "sensor"
    else:
        want_shape = (int(cfg["months"]) * int(cfg["days_per_month"]), int(cfg["height"]), int(cfg["width"]))
        have = shapes.get("daily")
        name = "daily"
    if have != want_shape:
        raise ValueError(
            f"dataset {data}: samples' {name} shape is {have}, but model {package.preset!r} takes {want_shape}"
        )


def _eval_manifest(package: ModelPackage, manifest: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """The dataset manifest with the model's normalisation statistics: inputs must be scaled the
    way the model saw them in training, even if this dataset's own statistics differ."""
    if "stats" not in manifest:  # nothing to normalise (paired embeddings)
        return manifest
    if package.data_stats is None or "stats" not in package.data_stats:
        notes.append("model package has no data_stats.json: normalising with the dataset's own statistics")
        return manifest
    return {**manifest, "stats": package.data_stats["stats"]}


def _loader(data: str, split: str, manifest: dict[str, Any], batch_size: int, **kw):
    from sensorlm.data.loader import make_loader

    return make_loader(
        data, split, batch_size, shuffle=False, resampled=False, num_workers=0, pin_memory=False,
        manifest=manifest, **kw,
    )


def _report_skips(loader, split: str, notes: list[str]) -> float:
    total = loader.report.total
    if total:
        notes.append(f"{split}: {total} bad samples skipped\n{loader.report.summary()}")
    return float(total)


# ---------------------------------------------------------------------------------------------
# SensorLM


@torch.no_grad()
def _embed_wearable(model, loader, device, max_samples: int | None, keep: int) -> dict[str, Any]:
    sensor, text, labels, raw_x, raw_m = [], [], [], [], []
    n = 0
    for batch in loader:
        x, miss = batch["sensor"].to(device), batch["missing"].to(device)
        sensor.append(model.encode_sensor(x, miss).float().cpu().numpy())
        if "input_ids" in batch:
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            text.append(model.encode_text(ids, mask).float().cpu().numpy())
        labels.append(batch["label"].numpy())
        if n < keep:
            raw_x.append(batch["sensor"][: keep - n])
            raw_m.append(batch["missing"][: keep - n])
        n += x.shape[0]
        if max_samples is not None and n >= max_samples:
            break
    if n == 0:
        return {"n": 0}
    limit = n if max_samples is None else min(n, max_samples)
    out = {
        "n": limit,
        "sensor": np.concatenate(sensor)[:limit],
        "labels": np.concatenate(labels)[:limit],
        "text": np.concatenate(text)[:limit] if text else None,
    }
    if raw_x:
        out["raw_sensor"] = torch.cat(raw_x)
        out["raw_missing"] = torch.cat(raw_m)
    return out


def evaluate_sensorlm(package, data, split, manifest, opts, device, notes) -> tuple[dict, dict]:
    from sensorlm.evaluation.metrics import bidirectional_retrieval, linear_probe_few_shot, zero_shot_classification
    from sensorlm.evaluation.rollout import attention_rollout

    model = package.model.to(device).eval()
    if package.tokenizer is None:
        raise FileNotFoundError(
            f"model {package.preset!r}: its package has no tokenizer.json (needed for the text prompts)"
        )
    activities = list(manifest.get("activities") or [])
    if len(activities) < 2:
        raise ValueError(f"dataset {data}: manifest lists {len(activities)} activities; zero-shot needs at least 2")
    text_len = int(package.config["text"]["context_len"])
    kw = dict(tokenizer=package.tokenizer, text_len=text_len)
    metrics: dict[str, float] = {}
    figures: dict[str, Any] = {}

    loader = _loader(data, split, manifest, opts["batch_size"], **kw)
    ev = _embed_wearable(model, loader, device, opts["max_samples"], keep=opts["rollout_samples"])
    metrics["data/skipped_total"] = _report_skips(loader, split, notes)
    if ev["n"] < 2:
        raise ValueError(f"dataset {data}: split {split!r} gave {ev['n']} readable samples; need at least 2")
    metrics["eval/num_samples"] = float(ev["n"])

    # Zero-shot: the class "captions" are the dataset's prompts, one per label; unlabelled samples
    # (label -1) take part in retrieval only.
    from sensorlm.data.captioner import manifest_prompts

    ids, mask = package.tokenizer.encode(manifest_prompts(manifest, opts.get("prompt_template")), text_len)
    with torch.no_grad():
        class_emb = model.encode_text(torch.as_tensor(ids, device=device), torch.as_tensor(mask, device=device))
    class_emb = class_emb.float().cpu().numpy()
    sensor_all, labels_all = ev["sensor"], ev["labels"]
    labelled = labels_all >= 0
    if not labelled.any():
        raise ValueError(f"dataset {data}: split {split!r} has no labelled sample for zero-shot classification")
    metrics["eval/num_labelled_samples"] = float(labelled.sum())
    ev = {**ev, "sensor": sensor_all[labelled], "labels": labels_all[labelled], "n": int(labelled.sum())}
    zs = zero_shot_classification(ev["sensor"], class_emb, ev["labels"], activities)
    metrics["zero_shot/accuracy"] = zs["accuracy"]
    metrics["zero_shot/macro_f1"] = zs["macro_f1"]
    for name, row in zs["per_class"].items():
        for k, v in row.items():
            metrics[f"zero_shot/per_class/{name}/{k}"] = float(v)

    if ev["text"] is not None:
        for k, v in bidirectional_retrieval(sensor_all, ev["text"], ("sensor", "text"), opts["ks"]).items():
            metrics[f"retrieval/{k}"] = v

    if opts["shots"]:
        if "train" not in manifest["splits"]:
            notes.append(f"few-shot probe skipped: dataset {data} has no 'train' split to draw shots from")
        else:
            tr_loader = _loader(data, "train", manifest, opts["batch_size"], **kw)
            tr = _embed_wearable(model, tr_loader, device, opts["max_train"], keep=0)
            if tr["n"]:
                keep = tr["labels"] >= 0
                tr = {**tr, "sensor": tr["sensor"][keep], "labels": tr["labels"][keep], "n": int(keep.sum())}
            metrics["probe/num_train_samples"] = float(tr["n"])
            n_classes = len(np.unique(tr["labels"])) if tr["n"] else 0
            if n_classes < 2:
                notes.append(f"few-shot probe skipped: the train split has {n_classes} activity classes (need 2)")
            else:
                probe = linear_probe_few_shot(
                    tr["sensor"], tr["labels"], ev["sensor"], ev["labels"], shots=opts["shots"],
                    class_names=activities,
                )
                metrics.update({f"probe/{k}": v for k, v in probe.items()})

    # Figures
    if ev["n"] >= 3:
        idx = np.arange(ev["n"])
        if ev["n"] > opts["tsne_max"]:
            idx = np.sort(np.random.default_rng(0).choice(ev["n"], opts["tsne_max"], replace=False))
        figures["tsne"] = lambda: P.tsne_plot(
            ev["sensor"][idx], ev["labels"][idx], activities, title=f"t-SNE of sensor embeddings ({split})"
        )
    else:
        notes.append("t-SNE skipped: fewer than 3 samples")
    figures["confusion_matrix"] = lambda: P.confusion_matrix_plot(
        zs["confusion"], activities, title=f"Zero-shot confusion ({split}, accuracy {zs['accuracy']:.3f})"
    )
    n_roll = min(opts["rollout_samples"], len(ev.get("raw_sensor", [])))
    if n_roll:
        if package.config.get("sensor_tower", "vit") != "vit":
            notes.append(
                "attention rollout skipped: the HVT sensor tower merges patches between stages, so "
                "its token grid changes and rollout (same tokens in every layer) does not apply"
            )
        else:
            x = ev["raw_sensor"][:n_roll]
            rel = attention_rollout(model.sensor_encoder, x.to(device), ev["raw_missing"][:n_roll].to(device))
            channels = [c["name"] if isinstance(c, Mapping) else str(c) for c in manifest.get("channels") or []]
            _, T, C = x.shape
            for i in range(n_roll):
                # The input is drawn normalised: the plot z-scores each channel anyway.
                figures[f"attention_rollout_{i}"] = (lambda i=i: P.attention_rollout_plot(
                    rel[i].cpu().numpy(), x[i].numpy(), channel_names=channels if len(channels) == C else None,
                    minutes_per_step=1440.0 / T, title=f"Attention rollout, {split} sample {i}",
                ))
    return metrics, figures


# ---------------------------------------------------------------------------------------------
# SST


@torch.no_grad()
def evaluate_sst(package, data, split, manifest, opts, device, notes) -> tuple[dict, dict]:
    from sensorlm.evaluation.dineof import dineof_monthly_mean
    from sensorlm.evaluation.metrics import climatology_baseline, observed_mean_baseline, sst_skill
    from sensorlm.models.sst import month_of_year_from_last

    model = package.model.to(device).eval()
    mean, std = sst_normalisation(manifest)  # the model's statistics (see _eval_manifest)
    cfg = package.config
    months, dpm = int(cfg["months"]), int(cfg["days_per_month"])

    def celsius(t: torch.Tensor) -> np.ndarray:
        return t.float().cpu().numpy().astype(np.float64) * std + mean

    keys = ("pred", "target", "clim", "obs", "dineof", "land", "holdout")
    maps: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    shown: list[dict[str, np.ndarray]] = []
    loader = _loader(data, split, manifest, opts["batch_size"])
    n = 0
    for batch in loader:
        if opts["max_samples"] is not None and n >= opts["max_samples"]:
            break
        b = {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        moy = month_of_year_from_last(b["month"].long().view(-1), months)
        pred = model(b["daily"].unsqueeze(1), b["mask"].unsqueeze(1), b["padded_days"].bool(), b["land"].bool(), moy)
        daily, mask, padded = celsius(batch["daily"]), batch["mask"].numpy() > 0, batch["padded_days"].numpy()
        clim = celsius(batch["clim"])
        maps["pred"].append(celsius(pred[:, 0]))
        maps["target"].append(celsius(batch["target"]))
        maps["clim"].append(clim)
        maps["obs"].append(observed_mean_baseline(daily, mask, padded, clim, dpm).astype(np.float64))
        maps["dineof"].append(dineof_monthly_mean(daily, mask, padded, batch["land"].numpy(), dpm))
        maps["land"].append(batch["land"].numpy())
        maps["holdout"].append(batch["holdout"].numpy())
        for i in range(min(opts["map_samples"] - len(shown), daily.shape[0])):
            # What the model saw of the target month: the mean of its observed days, blank elsewhere.
            seen = observed_mean_baseline(daily[i], mask[i], padded[i], np.full(clim.shape[1:], np.nan), dpm)
            shown.append({"truth": maps["target"][-1][i], "input": seen, "pred": maps["pred"][-1][i],
                          "land": maps["land"][-1][i], "key": batch["key"][i],
                          "baselines": {"climatology": clim[i], "observed mean": maps["obs"][-1][i],
                                        "DINEOF": maps["dineof"][-1][i]}})
        n += daily.shape[0]
    skipped = _report_skips(loader, split, notes)
    if n == 0:
        raise ValueError(f"dataset {data}: split {split!r} gave no readable samples")
    cat = {k: np.concatenate(v) for k, v in maps.items()}
    if opts["max_samples"] is not None:
        cat = {k: v[: opts["max_samples"]] for k, v in cat.items()}
    ocean = ~cat["land"].astype(bool)
    metrics: dict[str, float] = {"eval/num_samples": float(cat["pred"].shape[0]), "data/skipped_total": skipped}
    for prefix, skill in (
        ("model", sst_skill(cat["pred"], cat["target"], ocean, cat["holdout"])),
        ("climatology", climatology_baseline(cat["clim"], cat["target"], ocean, cat["holdout"])),
        ("observed_mean", sst_skill(cat["obs"], cat["target"], ocean, cat["holdout"])),
        ("dineof", sst_skill(cat["dineof"], cat["target"], ocean, cat["holdout"])),
    ):
        metrics.update({f"{prefix}/{k}": v for k, v in skill.items()})

    figures: dict[str, Any] = {}
    for i, s in enumerate(shown):
        figures[f"sst_maps_{i}"] = (lambda s=s: P.sst_maps_plot(
            s["truth"], s["input"], s["pred"], land_mask=s["land"], title=f"SST reconstruction, {split} {s['key']}",
            baselines=s["baselines"],
        ))
    return metrics, figures


# ---------------------------------------------------------------------------------------------
# ProjectionCL


def _load_features(path: str | Path | None, flag: str, width: int) -> np.ndarray:
    if path is None:
        raise ValueError(f"a ProjectionCL model is evaluated on paired feature files: pass {flag}")
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag} {p}: file does not exist")
    try:
        arr = np.load(p, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"{flag} {p}: not a plain .npy array ({e})") from None
    if arr.ndim != 2 or arr.shape[1] != width:
        raise ValueError(f"{flag} {p}: expected shape (N, {width}), got {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or not np.all(np.isfinite(arr)):
        raise ValueError(f"{flag} {p}: expected finite numbers, got dtype {arr.dtype} with NaN/inf or non-numbers")
    return arr.astype(np.float32)


@torch.no_grad()
def evaluate_projection_cl(package, data, split, manifest, opts, device, notes) -> tuple[dict, dict]:
    """Retrieval both ways on a paired-embedding dataset's split, or on two feature files."""
    from sensorlm.evaluation.metrics import bidirectional_retrieval

    model = package.model.to(device).eval()
    dim_a, dim_b = (int(d) for d in package.config["modality_dims"])
    if data is not None:
        entry = manifest["splits"][split]
        a = _load_features(Path(data) / entry["a"], f"dataset {data} split {split} A", dim_a)
        b = _load_features(Path(data) / entry["b"], f"dataset {data} split {split} B", dim_b)
    else:
        a = _load_features(opts["embeddings_a"], "--embeddings-a", dim_a)
        b = _load_features(opts["embeddings_b"], "--embeddings-b", dim_b)
    if a.shape[0] != b.shape[0]:
        raise ValueError(
            f"--embeddings-a has {a.shape[0]} rows and --embeddings-b {b.shape[0]}: rows must be pairs (same N)"
        )
    if a.shape[0] < 2:
        raise ValueError(f"need at least 2 feature pairs, got {a.shape[0]}")
    za = model.encode_a(torch.from_numpy(a).to(device)).float().cpu().numpy()
    zb = model.encode_b(torch.from_numpy(b).to(device)).float().cpu().numpy()
    metrics = {"eval/num_samples": float(a.shape[0])}
    metrics.update({f"retrieval/{k}": v for k, v in bidirectional_retrieval(za, zb, ("a", "b"), opts["ks"]).items()})
    return metrics, {}


# ---------------------------------------------------------------------------------------------
# output


def _finite_or_none(v: float) -> float | None:
    return v if math.isfinite(v) else None


def format_metrics_table(metrics: Mapping[str, float], family: str) -> str:
    """The metrics as a plain-text table; SST shows the model and the baselines side by side,
    SensorLM the per-class zero-shot scores in a table of their own.

    Args:
        metrics: flat metrics from `evaluate_model`.
        family: model family.
    """

    def fmt(v: float | None) -> str:
        if v is None:
            return "-"
        return "nan" if isinstance(v, float) and math.isnan(v) else f"{v:.4f}"

    lines: list[str] = []
    if family == "sst":
        cols = ("model", "climatology", "observed_mean", "dineof")
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


def _log_run(
    client, tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, str],
    metrics: dict[str, float], out_dir: Path, plots: dict[str, Path], notes: list[str],
) -> str:
    from sensorlm.tracking.run import TrackedRun

    with TrackedRun.open(tracking_uri, experiment, f"{run_name}-{time.time_ns()}", tags=tags,
                         display_name=run_name, resume=False) as run:
        run.log_metrics(metrics)
        run.log_params(params)
        for path in plots.values():
            run.log_artifact(path, "plots")
        for extra in ("metrics.json", "metrics_table.txt", "notes.txt"):
            if (out_dir / extra).is_file():
                run.log_artifact(out_dir / extra)
        run.end("FINISHED")
    return run.run_id


# ---------------------------------------------------------------------------------------------
# the whole evaluation


def evaluate_model(
    model_uri: str,
    data: str | Path | None = None,
    split: str = "val",
    *,
    tracking_uri: str | None = None,
    out_dir: str | Path | None = None,
    experiment: str | None = None,
    compare: Sequence[str] = (),
    rollout_samples: int = 2,
    map_samples: int = 2,
    log: bool = True,
    batch_size: int = 64,
    max_samples: int | None = None,
    max_train: int = 2000,
    shots: Sequence[int] = (1, 5, 10),
    ks: Sequence[int] = (1, 5, 10),
    tsne_max: int = 2000,
    embeddings_a: str | Path | None = None,
    embeddings_b: str | Path | None = None,
    device: str | None = None,
) -> EvaluationResult:
    """Evaluate a model on a held-out split; write plots and metrics locally and (by default) to MLflow.

    Args:
        model_uri: see `resolve_model` (``models:/NAME@champion``, ``models:/NAME/3``, a run id...).
        data: dataset directory or URL; default the training run's ``data.path`` param when that
            exists here. Not used by ProjectionCL.
        split: the split to evaluate.
        tracking_uri: MLflow tracking URI (default ``$MLFLOW_TRACKING_URI``, else ./mlflow.db).
        out_dir: local folder for PNGs and metrics.json (default
            ``outputs/eval/<name>-v<version>``).
        experiment: MLflow experiment of the evaluation run (default ``<name>-evaluation``).
        compare: runs for the ablation plots: run ids, run names, or ``tag:KEY=VALUE``; the
            model's own training run is added to them.
        rollout_samples: samples with an attention-rollout figure (SensorLM, ViT tower).
        map_samples: samples with SST map figures.
        log: log an MLflow evaluation run and tag the model version; False = local files only.
        batch_size: evaluation batch size.
        max_samples: evaluate at most this many samples of `split` (None = all).
        max_train: at most this many train-split samples feed the few-shot probe.
        shots: examples per class of the few-shot probe (empty = no probe).
        ks: recall@k cut-offs.
        tsne_max: at most this many points in the t-SNE (a fixed random subset).
        embeddings_a: ProjectionCL: (N, modality_dims[0]) .npy features of modality A.
        embeddings_b: ProjectionCL: (N, modality_dims[1]) .npy features, row i paired with A's row i.
        device: torch device (default CUDA when available, else CPU).

    Returns:
        An `EvaluationResult`.
    """
    from mlflow.tracking import MlflowClient

    from sensorlm.tracking.mlflow_utils import check_tracking_server, resolve_tracking_uri, run_tags

    for name, value, low in (("batch_size", batch_size, 1), ("max_train", max_train, 1), ("tsne_max", tsne_max, 3),
                             ("rollout_samples", rollout_samples, 0), ("map_samples", map_samples, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    if max_samples is not None and (
        isinstance(max_samples, bool) or not isinstance(max_samples, int) or max_samples < 2
    ):
        raise ValueError(f"max_samples must be an integer >= 2 or None, got {max_samples!r}")
    shots, ks = tuple(int(s) for s in shots), tuple(int(k) for k in ks)
    if any(s < 1 for s in shots) or not ks or any(k < 1 for k in ks):
        raise ValueError(f"shots and ks must be positive integers (ks non-empty), got shots={shots} ks={ks}")
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))

    uri = resolve_tracking_uri(tracking_uri)
    if str(model_uri).startswith(("models:/", "runs:/")) or _RUN_ID.fullmatch(str(model_uri)):
        check_tracking_server(uri)
    resolved = resolve_model(model_uri, uri)
    package = resolved.package
    family = package.family
    if family not in FAMILIES or not FAMILIES[family].evaluator:
        raise ValueError(f"model {model_uri!r} is a {family!r} model (preset {package.preset!r}); "
                         f"evaluation supports {[f.name for f in FAMILIES.values() if f.evaluator]}")
    evaluate = resolve(FAMILIES[family].evaluator)
    client = MlflowClient(uri)
    compared = resolve_compare_runs(compare, client) if compare else {}

    notes: list[str] = []
    if resolved.training_run_id and not _run_exists(client, resolved.training_run_id):
        # A local pyfunc directory copied from another tracking server names a run this one lacks.
        notes.append(f"training run {resolved.training_run_id} is not in {redact(uri)}: no curves, no default dataset")
        resolved.training_run_id = None
    name = resolved.name or package.preset
    tail = f"v{resolved.version}" if resolved.version else (resolved.training_run_id or "local")[:8]
    if out_dir is None:
        out_dir = Path("outputs") / "eval" / f"{name}-{tail}"
    out_dir = Path(out_dir)
    opts = dict(batch_size=batch_size, max_samples=max_samples, max_train=max_train, shots=shots, ks=ks,
                tsne_max=tsne_max, rollout_samples=rollout_samples, map_samples=map_samples,
                embeddings_a=embeddings_a, embeddings_b=embeddings_b)

    data_str = manifest = None
    if embeddings_a is None and embeddings_b is None:
        data_str = _resolve_data(data, client, resolved.training_run_id)
        manifest = _load_manifest(data_str, FAMILIES[family])
        _check_compatible(package, manifest, data_str, split)
        manifest = _eval_manifest(package, manifest, notes)
        _say(f"evaluating {model_uri} ({package.preset}) on {data_str} split {split!r}")
    else:
        _say(f"evaluating {model_uri} ({package.preset}) on {embeddings_a} / {embeddings_b}")
    metrics, figures = evaluate(package, data_str, split, manifest, opts, device, notes)
    metrics = {metric_key(k): float(v) for k, v in metrics.items()}

    # Curves read back from MLflow: this model's training run, and the runs to compare with it.
    curves: dict[str, dict[str, list[tuple[float, float]]]] = {}
    if resolved.training_run_id:
        own = _convergence_curves(client, resolved.training_run_id)
        if own:
            figures["convergence"] = lambda: P.convergence_plot(
                own, title=f"Convergence of {name} (run {resolved.training_run_id[:8]})"
            )
            run_name = client.get_run(resolved.training_run_id).info.run_name or resolved.training_run_id[:8]
            curves[f"{run_name} (evaluated)"] = own
        else:
            notes.append(f"convergence plot skipped: training run {resolved.training_run_id} has no train/val metrics")
    else:
        notes.append("convergence plot skipped: the training run of this model is not known")
    if compared:
        for label, run_id in compared.items():
            if run_id != resolved.training_run_id:
                curves[label] = {k: _history(client, run_id, k) for k, _ in ABLATION_METRICS[family]}
        made = False
        for key, higher in ABLATION_METRICS[family]:
            if any(c.get(key) for c in curves.values()):
                figures[f"ablation_{metric_key(key).replace('/', '_')}"] = (
                    lambda key=key, higher=higher: P.ablation_plot(curves, key, higher_is_better=higher)
                )
                made = True
        if not made:
            wanted = [k for k, _ in ABLATION_METRICS[family]]
            notes.append(f"ablation plot skipped: no compared run has any of {wanted}")

    table = format_metrics_table(metrics, family) if family == "sst" else None
    plots = _write_local(out_dir, metrics, figures, notes, table)
    for note in notes:
        _say(note)

    run_id = None
    if log:
        tags = {
            "sensorlm.task": EVAL_TASK_TAG,
            "sensorlm.model_uri": str(model_uri),
            "sensorlm.model_family": family,
            "sensorlm.model_preset": package.preset,
            "sensorlm.eval_split": split if data_str is not None else "features",
        }
        if resolved.name:
            tags["sensorlm.model_name"] = resolved.name
            tags["sensorlm.model_version"] = resolved.version
        if resolved.training_run_id:
            tags["sensorlm.training_run_id"] = resolved.training_run_id
        if data_str is not None:
            tags["sensorlm.eval_data"] = data_str
        manifest_path = Path(data_str) / "manifest.json" if data_str and _is_local(data_str) else None
        tags.update(run_tags(manifest_path))
        params = {"model_uri": str(model_uri), "split": split, "batch_size": str(batch_size),
                  "max_samples": str(max_samples), "shots": ",".join(map(str, shots)),
                  "ks": ",".join(map(str, ks)), "compare": ",".join(compare) or "none"}
        if data_str is not None:
            params["data"] = data_str
        if family == "sensorlm":
            params["max_train"] = str(max_train)
        if family == "projection_cl":
            params.update(embeddings_a=str(embeddings_a), embeddings_b=str(embeddings_b))
        run_id = _log_run(client, uri, experiment or f"{name}-evaluation", f"eval-{name}-{tail}-{split}", tags,
                          params, metrics, out_dir, plots, notes)
        if resolved.name:
            for k, v in metrics.items():
                if not k.startswith("zero_shot/per_class/"):
                    client.set_model_version_tag(resolved.name, resolved.version, f"eval.{k}", repr(v))
            client.set_model_version_tag(resolved.name, resolved.version, "eval.run_id", run_id)
            client.set_model_version_tag(resolved.name, resolved.version, "eval.split", tags["sensorlm.eval_split"])
        _say(f"logged evaluation run {run_id} (experiment {experiment or f'{name}-evaluation'!r})")
    _say(f"wrote {len(plots)} plots and metrics.json to {out_dir}")
    return EvaluationResult(
        metrics=metrics, plots=plots, run_id=run_id, out_dir=out_dir, model_name=resolved.name,
        model_version=resolved.version, training_run_id=resolved.training_run_id, family=family,
        compared=compared, notes=notes,
    )


# ---------------------------------------------------------------------------------------------
# command line


def add_evaluate_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", help=f"the model: {_ACCEPTED}")
    parser.add_argument("--data", help="dataset directory or URL (default: the training run's data.path)")
    parser.add_argument("--split", default="val", help="split to evaluate (default val)")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default $MLFLOW_TRACKING_URI, else ./mlflow.db)")
    parser.add_argument("--experiment", help="experiment of the evaluation run (default NAME-evaluation)")
    parser.add_argument("--out", help="local output folder (default outputs/eval/NAME-vVERSION)")
    parser.add_argument("--compare", nargs="*", default=[], metavar="RUN",
                        help="runs for the ablation plot: run ids, run names or tag:KEY=VALUE")
    parser.add_argument("--rollout-samples", type=int, default=2, help="attention-rollout figures (ViT tower)")
    parser.add_argument("--map-samples", type=int, default=2, help="SST map figures")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--max-samples", type=int, help="evaluate at most this many samples")
    parser.add_argument("--max-train", type=int, default=2000, help="train samples for the few-shot probe")
    parser.add_argument("--shots", type=int, nargs="*", default=[1, 5, 10], help="few-shot probe shots per class")
    parser.add_argument("--embeddings-a", help="ProjectionCL: .npy features of modality A (N, dim_a)")
    parser.add_argument("--embeddings-b", help="ProjectionCL: .npy features of modality B (N, dim_b), paired rows")
    parser.add_argument("--device", help="torch device (default cuda if available, else cpu)")
    parser.add_argument("--no-log", action="store_true", help="write local files only; no MLflow run or tags")


def run_evaluate(args: argparse.Namespace) -> int:
    """``sensorlm evaluate MODEL_URI [--data DIR] ...``: prints the metrics table."""
    # One progress bar per downloaded file would drown the table in a terminal log.
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    result = evaluate_model(
        args.model_uri, args.data, args.split, tracking_uri=args.tracking_uri, out_dir=args.out,
        experiment=args.experiment, compare=args.compare, rollout_samples=args.rollout_samples,
        map_samples=args.map_samples, log=not args.no_log, batch_size=args.batch_size,
        max_samples=args.max_samples, max_train=args.max_train, shots=args.shots,
        embeddings_a=args.embeddings_a, embeddings_b=args.embeddings_b, device=args.device,
    )
    print()
    print(format_metrics_table(result.metrics, result.family))
    print()
    for name, path in result.plots.items():
        print(f"plot {name}: {path}")
    if result.run_id:
        print(f"MLflow evaluation run {result.run_id}")
    return 0



def main(argv: Sequence[str] | None = None) -> int:
    """``python jobs/evaluate.py MODEL_URI [--data DIR] ...``: the same as ``sensorlm evaluate``."""
    from sensorlm.cli import run_guarded

    parser = argparse.ArgumentParser(
        description="Evaluate a registered sensorlm model on a held-out split; log to MLflow and write plots.",
    )
    add_evaluate_args(parser)
    args = parser.parse_args(argv)
    return run_guarded(lambda: run_evaluate(args), "sensorlm evaluate")