"""Analysis figures: t-SNE, convergence, confusion matrix, ablations, attention rollout, SST maps.

Every function returns a matplotlib Figure (Agg backend, no display needed); `save_png` writes
one. Logging the files (e.g. to MLflow) is left to the caller.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: workers and CI have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

__all__ = [
    "save_png",
    "tsne_plot",
    "convergence_plot",
    "confusion_matrix_plot",
    "ablation_plot",
    "attention_rollout_plot",
    "sst_maps_plot",
]

DPI = 120


def save_png(fig: Figure, path: str | Path, dpi: int = DPI, close: bool = True) -> Path:
    """Write `fig` as a PNG (parent directories are created).

    Args:
        fig: the figure.
        path: output file; ``.png`` is appended if it has another suffix.
        dpi: resolution.
        close: close the figure afterwards, freeing its memory.

    Returns:
        The path written.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_name(path.name + ".png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=dpi)
    if close:
        plt.close(fig)
    return path


def _figure(width: float, height: float, **kwargs):
    # pyplot (not Figure()) so that plt.close works; constrained layout keeps labels inside.
    return plt.subplots(figsize=(width, height), dpi=DPI, layout="constrained", **kwargs)


# --------------------------------------------------------------------------- t-SNE


def tsne_plot(
    emb,
    labels,
    class_names: Sequence[str],
    perplexity: float = 30.0,
    seed: int = 0,
    title: str = "t-SNE of embeddings",
) -> Figure:
    """2-D t-SNE of embeddings coloured by class.

    Args:
        emb: (N, D) embeddings, N >= 3.
        labels: (N,) integer class indices into `class_names`.
        class_names: names of the classes.
        perplexity: t-SNE perplexity, clipped to N - 1.
        seed: t-SNE random state (the layout is reproducible).
        title: axes title.
    """
    from sklearn.manifold import TSNE

    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    if emb.ndim != 2 or emb.shape[0] < 3 or emb.shape[1] < 1:
        raise ValueError(f"emb must be (N, D) with N >= 3, got shape {emb.shape}")
    if labels.shape != (emb.shape[0],):
        raise ValueError(f"labels has shape {labels.shape}, expected ({emb.shape[0]},) to match emb {emb.shape}")
    if labels.min() < 0 or labels.max() >= len(class_names):
        raise ValueError(
            f"labels must lie in [0, {len(class_names)}) (len(class_names)), got {labels.min()}..{labels.max()}"
        )

    n = emb.shape[0]
    tsne = TSNE(
        n_components=2,
        perplexity=float(min(perplexity, n - 1)),
        init="pca" if emb.shape[1] >= 2 else "random",
        random_state=seed,
    )
    xy = tsne.fit_transform(emb)

    fig, ax = _figure(8, 6.5)
    present = np.unique(labels)
    cmap = plt.get_cmap("tab20" if len(class_names) > 10 else "tab10")
    for c in present:
        m = labels == c
        ax.scatter(xy[m, 0], xy[m, 1], s=14, alpha=0.8, color=cmap(int(c) % cmap.N), label=class_names[c])
    ax.set_title(title)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.legend(fontsize=7, markerscale=1.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    return fig


# --------------------------------------------------------------------------- convergence


def _check_curve(name: str, curve) -> np.ndarray:
    arr = np.asarray(curve, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"curve {name!r} must be a list of (step, value) pairs, got an array of shape {arr.shape}")
    return arr


def convergence_plot(curves: Mapping[str, Sequence[tuple[float, float]]], title: str = "Convergence") -> Figure:
    """Training and validation curves, one axis per metric name.

    Keys are ``"{split}/{metric}"`` (e.g. ``train/loss``, ``val/loss``, ``val/zero_shot_acc``):
    curves sharing the metric name share an axis, so train and val loss overlay.

    Args:
        curves: key -> list of (step, value).
        title: figure title.
    """
    if not curves:
        raise ValueError("curves is empty: nothing to plot")
    groups: dict[str, list[tuple[str, np.ndarray]]] = {}
    for key, curve in curves.items():
        split, _, metric = key.rpartition("/")
        groups.setdefault(metric, []).append((split or key, _check_curve(key, curve)))

    ncols, nrows = min(len(groups), 2), (len(groups) + 1) // 2
    fig, axes = _figure(5.0 * ncols, 4.2 * nrows, nrows=nrows, ncols=ncols, squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (metric, members) in zip(axes.flat, groups.items()):
        for split, arr in members:
            style = "--" if split.startswith(("val", "test", "eval")) else "-"
            ax.plot(arr[:, 0], arr[:, 1], style, marker="o" if len(arr) <= 30 else None, ms=3, label=split)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- confusion matrix


def confusion_matrix_plot(
    confusion, class_names: Sequence[str], normalize: bool = True, title: str = "Confusion matrix"
) -> Figure:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted).

    Args:
        confusion: (K, K) counts.
        class_names: K names.
        normalize: divide each row by its total (rows with no samples stay 0).
        title: axes title.
    """
    cm = np.asarray(confusion, dtype=np.float64)
    k = len(class_names)
    if cm.ndim != 2 or cm.shape != (k, k):
        raise ValueError(f"confusion has shape {cm.shape}, expected ({k}, {k}) for {k} class_names")
    if normalize:
        rows = cm.sum(axis=1, keepdims=True)
        cm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)

    side = float(np.clip(3.0 + 0.4 * k, 6.0, 10.0))
    fig, ax = _figure(side, side * 0.9)
    im = ax.imshow(cm, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax, shrink=0.8, label="fraction of true class" if normalize else "count")
    ax.set_xticks(range(k), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(k), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if k <= 20:  # cell labels become unreadable beyond that
        thresh = cm.max() / 2 if cm.max() > 0 else 0.5
        for i in range(k):
            for j in range(k):
                text = f"{cm[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
                color = "white" if cm[i, j] > thresh else "black"
                ax.text(j, i, text, ha="center", va="center", fontsize=7, color=color)
    return fig


# --------------------------------------------------------------------------- ablations


def ablation_plot(
    runs: Mapping[str, Mapping[str, Sequence[tuple[float, float]]]],
    metric: str,
    higher_is_better: bool | None = None,
) -> Figure:
    """Curves of one metric for several runs, and a bar chart of each run's final value.

    Args:
        runs: run label -> {metric name -> list of (step, value)}.
        metric: the metric to compare; runs without it are left out (at least one must have it).
        higher_is_better: if given, the best bar is outlined.
    """
    have = {
        label: _check_curve(f"{label}:{metric}", m[metric])
        for label, m in runs.items()
        if metric in m and len(m[metric])
    }
    if not have:
        raise ValueError(f"no run has metric {metric!r} (runs: {sorted(runs)})")

    fig, (ax_c, ax_b) = _figure(11, 4.5, ncols=2, gridspec_kw={"width_ratios": [3, 2]})
    cmap = plt.get_cmap("tab10")
    finals = []
    for i, (label, arr) in enumerate(have.items()):
        ax_c.plot(arr[:, 0], arr[:, 1], color=cmap(i % 10), label=label)
        finals.append(arr[-1, 1])
    ax_c.set_xlabel("step")
    ax_c.set_ylabel(metric)
    ax_c.set_title(f"{metric} during training")
    ax_c.grid(alpha=0.3)
    ax_c.legend(fontsize=8)

    labels = list(have)
    bars = ax_b.bar(range(len(labels)), finals, color=[cmap(i % 10) for i in range(len(labels))])
    ax_b.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax_b.set_title(f"final {metric}")
    ax_b.bar_label(bars, fmt="%.3g", fontsize=8)
    if higher_is_better is not None:
        best = int(np.argmax(finals) if higher_is_better else np.argmin(finals))
        bars[best].set_edgecolor("black")
        bars[best].set_linewidth(2)
    missing = sorted(set(runs) - set(have))
    if missing:
        ax_b.set_xlabel(f"without {metric}: {', '.join(missing)}", fontsize=7)
    return fig


# --------------------------------------------------------------------------- attention rollout


def attention_rollout_plot(
    rollout,
    sensor,
    channel_names: Sequence[str] | None = None,
    minutes_per_step: float | None = None,
    title: str = "Attention rollout",
) -> Figure:
    """The input (time x channel) beside the rollout relevance of each patch, on the same axes.

    Args:
        rollout: (grid_t, grid_c) relevance of each patch (from `attention_rollout`, one sample).
        sensor: (T, C) input, T divisible by grid_t and C by grid_c.
        channel_names: C names for the channel axis (optional).
        minutes_per_step: if given, the time axis is labelled in hours.
        title: figure title.
    """
    rel = np.asarray(rollout, dtype=np.float64)
    x = np.asarray(sensor, dtype=np.float64)
    if rel.ndim != 2:
        raise ValueError(f"rollout must be (grid_t, grid_c), got shape {rel.shape}")
    if x.ndim != 2:
        raise ValueError(f"sensor must be (T, C), got shape {x.shape}")
    (gt, gc), (t, c) = rel.shape, x.shape
    if gt == 0 or gc == 0 or t % gt or c % gc:
        raise ValueError(f"rollout grid {rel.shape} does not tile sensor {x.shape} (T and C must be multiples)")
    if channel_names is not None and len(channel_names) != c:
        raise ValueError(f"channel_names has {len(channel_names)} entries but sensor has shape {x.shape} (C={c})")

    # Per-channel z-score so channels of very different units share one colour scale.
    mu = np.nanmean(x, axis=0, keepdims=True)
    sd = np.nanstd(x, axis=0, keepdims=True)
    z = np.clip((x - mu) / np.where(sd > 0, sd, 1.0), -3, 3)
    rel_full = np.kron(rel, np.ones((t // gt, c // gc)))  # each patch covers a (pt, pc) block

    scale = minutes_per_step / 60.0 if minutes_per_step else 1.0
    extent = (0, t * scale, c - 0.5, -0.5)
    fig, axes = _figure(10, 8, nrows=3, sharex=True, gridspec_kw={"height_ratios": [3, 3, 1.2]})
    im0 = axes[0].imshow(z.T, aspect="auto", cmap="viridis", extent=extent, interpolation="nearest")
    axes[0].set_title("input (per-channel z-score)")
    fig.colorbar(im0, ax=axes[0], pad=0.01)
    im1 = axes[1].imshow(rel_full.T, aspect="auto", cmap="magma", extent=extent, interpolation="nearest")
    axes[1].set_title("rollout relevance per patch")
    fig.colorbar(im1, ax=axes[1], pad=0.01)
    for ax in axes[:2]:
        if channel_names is not None:
            step = max(1, c // 20)
            ax.set_yticks(range(0, c, step), [channel_names[i] for i in range(0, c, step)], fontsize=6)
        else:
            ax.set_ylabel("channel")
    times = (np.arange(gt) + 0.5) * (t // gt) * scale
    axes[2].plot(times, rel.sum(axis=1), color="black")
    axes[2].set_ylabel("relevance\nover channels", fontsize=8)
    axes[2].set_xlabel("hour" if minutes_per_step else "time step")
    axes[2].grid(alpha=0.3)
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- SST maps


def sst_maps_plot(
    truth, input_with_clouds, reconstruction, land_mask=None, units: str = "°C", title: str = "SST reconstruction",
    baselines: Mapping[str, Any] | None = None,
) -> Figure:
    """Truth, cloudy input, reconstruction and its error; with `baselines`, each baseline's map
    and error beside the model's (same colour scales).

    Without baselines: a 2 x 2 grid (truth, input, reconstruction, error). With N baselines: two
    rows of 3 + N panels, the maps (truth, input, model, baselines) on top and the errors
    (prediction - truth) of the model and of each baseline under their maps.

    Args:
        truth: (H, W) monthly mean truth.
        input_with_clouds: (H, W) what the model saw (e.g. the mean of observed days), NaN where
            nothing was observed.
        reconstruction: (H, W) model output.
        land_mask: (H, W) True/1 on land (drawn grey; NaN ocean pixels are white), or None.
        units: colour bar label.
        title: figure title.
        baselines: name -> (H, W) map of a baseline (e.g. climatology, observed mean, DINEOF).
    """
    maps = {"truth": truth, "input_with_clouds": input_with_clouds, "reconstruction": reconstruction}
    maps.update({str(k): v for k, v in (baselines or {}).items()})
    arrs = {}
    for name, a in maps.items():
        a = np.asarray(a, dtype=np.float64)
        if a.ndim != 2 or a.size == 0:
            raise ValueError(f"{name} must be a non-empty (H, W) map, got shape {a.shape}")
        arrs[name] = a
    shape = arrs["truth"].shape
    for name, a in arrs.items():
        if a.shape != shape:
            raise ValueError(f"{name} has shape {a.shape}, expected {shape} (the shape of truth)")
    land = np.zeros(shape, bool) if land_mask is None else np.asarray(land_mask).astype(bool)
    if land.shape != shape:
        raise ValueError(f"land_mask has shape {land.shape}, expected {shape} (the shape of truth)")

    def ocean_only(a: np.ndarray) -> np.ma.MaskedArray:
        return np.ma.masked_where(land | ~np.isfinite(a), a)

    predictors = ["reconstruction"] + [k for k in arrs if k not in ("truth", "input_with_clouds", "reconstruction")]
    tr, inp = ocean_only(arrs["truth"]), ocean_only(arrs["input_with_clouds"])
    errs = {k: ocean_only(arrs[k] - arrs["truth"]) for k in predictors}
    # One colour scale for the SST maps, from the truth (ignoring land); one for all errors.
    vals = tr.compressed()
    vmin, vmax = (float(vals.min()), float(vals.max())) if vals.size else (0.0, 1.0)
    all_err = np.concatenate([e.compressed() for e in errs.values()])
    emax = float(np.abs(all_err).max()) if all_err.size else 1.0
    emax = emax if emax > 0 else 1.0

    land_layer = np.ma.masked_where(~land, np.ones(shape))
    land_cmap = ListedColormap(["dimgrey"])
    if len(predictors) == 1:
        fig, axes = _figure(10, 8.5, nrows=2, ncols=2)
        panels = [
            (axes.flat[0], tr, "truth", "viridis", vmin, vmax),
            (axes.flat[1], inp, "input (clouds blank)", "viridis", vmin, vmax),
            (axes.flat[2], ocean_only(arrs["reconstruction"]), "reconstruction", "viridis", vmin, vmax),
            (axes.flat[3], errs["reconstruction"], "error (reconstruction - truth)", "RdBu_r", -emax, emax),
        ]
    else:
        ncols = 2 + len(predictors)
        fig, axes = _figure(3.4 * ncols, 6.2, nrows=2, ncols=ncols)
        panels = [(axes[0, 0], tr, "truth", "viridis", vmin, vmax),
                  (axes[0, 1], inp, "input (clouds blank)", "viridis", vmin, vmax)]
        for j, k in enumerate(predictors):
            label = "model" if k == "reconstruction" else k
            panels.append((axes[0, 2 + j], ocean_only(arrs[k]), label, "viridis", vmin, vmax))
            panels.append((axes[1, 2 + j], errs[k], f"{label} - truth", "RdBu_r", -emax, emax))
        for ax in axes[1, :2]:
            ax.axis("off")
    for ax, a, name, cmap_name, lo, hi in panels:
        # Missing (cloudy) pixels white; land is drawn over them in grey.
        cmap = plt.get_cmap(cmap_name).with_extremes(bad="white")
        im = ax.imshow(a, cmap=cmap, vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
        if land.any():
            ax.imshow(land_layer, cmap=land_cmap, origin="lower", interpolation="nearest")
        ax.set_title(name)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.85, label=units)
    fig.suptitle(title)
    return fig
