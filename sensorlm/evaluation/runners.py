"""The evaluation of each model family (`sensorlm.families` names them): the data it
reads, the metrics and the figures it returns as data (nothing logged here)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sensorlm.evaluation import plots as P
from sensorlm.data.loader import OBJECT_STORE_SCHEMES, is_data_only_location
from sensorlm.evaluation.common import is_local as _is_local
from sensorlm.families import get_family
from sensorlm.tracking.package import ModelPackage, sst_normalisation

# ---------------------------------------------------------------------------------------------
# data


def _resolve_data(data: str | Path | None, client, training_run_id: str | None) -> str:
    if data is not None:
        return str(data)
    if client is not None and training_run_id:
        path = client.get_run(training_run_id).data.params.get("data.path")
        if path:
            # Anyone who may write to the experiment may write this param: a location read from
            # tracking is data, never a command (a pipe: source runs in a shell).
            if not is_data_only_location(path):
                raise ValueError(
                    f"the training run {training_run_id} recorded data.path {path!r}, which is not a plain path or "
                    f"object-store URL ({', '.join(OBJECT_STORE_SCHEMES)}); it is not opened: pass the dataset with --data"
                )
            if not _is_local(path):
                return path
            if (Path(path).expanduser() / "manifest.json").is_file():
                return str(Path(path).expanduser())
            raise FileNotFoundError(
                f"the training run {training_run_id} used data.path {path!r}, which has no manifest.json here; "
                "pass the dataset with --data"
            )
    raise ValueError("no dataset given (--data) and none recorded in the training run's params (data.path)")


def _fold_manifest(manifest: dict[str, Any], fold: str | None, client, training_run_id: str | None, data: str,
                   notes: list[str]) -> dict[str, Any]:
    """The manifest as fold k of a k-fold dataset sees it (`sensorlm.data.folds`): `fold`, else
    the training run's ``data.fold``; a dataset without folds is returned as it is."""
    from sensorlm.data.folds import fold_view

    if fold is None and manifest.get("folds") and client is not None and training_run_id:
        recorded = client.get_run(training_run_id).data.params.get("data.fold")
        if recorded not in (None, "", "None"):
            fold = recorded
            notes.append(f"fold {fold}: the training run's data.fold")
    if manifest.get("folds") and not fold:
        k = manifest["folds"]
        raise ValueError(f"{data}: the dataset is {k} folds (fold0..fold{k - 1}), no train/val split: choose the "
                         f"validation fold with --fold k/{k}")
    return fold_view(manifest, fold, f"{data}/manifest.json") if fold else manifest


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
    record = get_family(family)
    if record.input_array is None:
        return
    name, want_shape = record.input_array(cfg)
    have = tuple(manifest["sample_shape"].get(name) or ()) or None
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
    sensor, text, labels, keys, raw_x, raw_m = [], [], [], [], [], []
    n = 0
    for batch in loader:
        keys.extend(batch.get("key") or [""] * batch["sensor"].shape[0])
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
        "keys": keys[:limit],
        "text": np.concatenate(text)[:limit] if text else None,
    }
    if raw_x:
        out["raw_sensor"] = torch.cat(raw_x)
        out["raw_missing"] = torch.cat(raw_m)
    return out


def _scores_with_intervals(prefix: str, labels, predictions, scores, num_classes: int, keys: list[str],
                           notes: list[str]) -> dict[str, float]:
    """Accuracy beside the majority-class share, balanced accuracy, macro-F1 and macro AUROC, each
    with a 95% bootstrap interval (``<metric>_ci_low`` / ``_ci_high``) over subjects when there are
    at least 5 (a key's part before its last "_": sensorlm's importers and generators name keys
    so), else over windows."""
    from sensorlm.evaluation.metrics import bootstrap_intervals, classification_scores

    subjects = [k.rsplit("_", 1)[0] for k in keys]
    groups = subjects if len(set(subjects)) >= 5 and all(subjects) else None
    notes.append(f"{prefix}: 95% bootstrap intervals over {'subjects' if groups else 'windows'} "
                 f"({len(set(subjects)) if groups else len(labels)}), 1000 resamples")
    out = {f"{prefix}/{k}": v for k, v in classification_scores(labels, predictions, scores, num_classes).items()}
    for k, (low, high) in bootstrap_intervals(labels, predictions, scores, num_classes, groups=groups).items():
        out[f"{prefix}/{k}_ci_low"], out[f"{prefix}/{k}_ci_high"] = low, high
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
    keys = [k for k, keep in zip(ev["keys"], labelled) if keep]
    ev = {**ev, "sensor": sensor_all[labelled], "labels": labels_all[labelled], "n": int(labelled.sum())}
    zs = zero_shot_classification(ev["sensor"], class_emb, ev["labels"], activities)
    for name, row in zs["per_class"].items():
        for k, v in row.items():
            metrics[f"zero_shot/per_class/{name}/{k}"] = float(v)
    metrics.update(_scores_with_intervals("zero_shot", ev["labels"], zs["predictions"], zs["scores"],
                                          len(activities), keys, notes))

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


