"""Tests for sensorlm/evaluation/plots.py: every figure is written as a real PNG of sensible size."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.figure import Figure

from sensorlm.evaluation.plots import (
    ablation_plot,
    attention_rollout_plot,
    confusion_matrix_plot,
    convergence_plot,
    save_png,
    sst_maps_plot,
    tsne_plot,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def check_png(fig: Figure, path: Path) -> np.ndarray:
    assert isinstance(fig, Figure)
    written = save_png(fig, path)
    assert written == path and path.is_file()
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    h, w = img.shape[:2]
    assert 400 <= h <= 3000 and 400 <= w <= 3000, (h, w)
    # Not a blank canvas: something was drawn.
    assert img[..., :3].std() > 0.01
    return img


def test_save_png_adds_suffix_makes_dirs_and_closes(tmp_path):
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    ax.plot([0, 1], [0, 1])
    n_before = len(plt.get_fignums())
    out = save_png(fig, tmp_path / "deep" / "dir" / "curve")
    assert out == tmp_path / "deep" / "dir" / "curve.png"
    assert out.read_bytes()[:8] == PNG_SIGNATURE
    assert len(plt.get_fignums()) == n_before - 1


def test_tsne_plot(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(4, 16)) * 5
    labels = np.repeat(np.arange(4), 10)
    emb = centers[labels] + rng.normal(size=(40, 16))
    check_png(tsne_plot(emb, labels, ["walk", "run", "bike", "swim"]), tmp_path / "tsne.png")


def test_tsne_plot_clips_perplexity_for_tiny_n(tmp_path):
    emb = np.random.default_rng(1).normal(size=(5, 8))
    check_png(tsne_plot(emb, np.array([0, 1, 0, 1, 0]), ["a", "b"], perplexity=30), tmp_path / "tsne_small.png")


def test_tsne_plot_bad_inputs():
    with pytest.raises(ValueError, match=r"labels has shape \(9,\), expected \(10,\)"):
        tsne_plot(np.ones((10, 4)), np.zeros(9, int), ["a"])
    with pytest.raises(ValueError, match=r"emb must be \(N, D\) with N >= 3, got shape \(2, 4\)"):
        tsne_plot(np.ones((2, 4)), np.zeros(2, int), ["a"])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        tsne_plot(np.ones((4, 4)), np.array([0, 1, 0, 1]), ["a"])


def test_convergence_plot(tmp_path):
    steps = np.arange(0, 200, 10)
    curves = {
        "train/loss": list(zip(steps, 2.0 * np.exp(-steps / 80) + 0.1)),
        "val/loss": list(zip(steps[::4], 2.1 * np.exp(-steps[::4] / 80) + 0.2)),
        "val/zero_shot_acc": list(zip(steps[::4], 1 - np.exp(-steps[::4] / 60))),
    }
    fig = convergence_plot(curves)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 2  # loss (train + val) and zero_shot_acc
    assert len(visible[0].get_lines()) == 2
    check_png(fig, tmp_path / "convergence.png")


def test_convergence_plot_bad_inputs():
    with pytest.raises(ValueError, match="curves is empty"):
        convergence_plot({})
    with pytest.raises(ValueError, match=r"curve 'train/loss' must be a list of \(step, value\) pairs.*\(3,\)"):
        convergence_plot({"train/loss": [1.0, 2.0, 3.0]})


def test_confusion_matrix_plot(tmp_path):
    cm = np.array([[8, 2, 0], [1, 9, 0], [0, 0, 0]])  # last class has no samples: row stays 0
    fig = confusion_matrix_plot(cm, ["sleep", "walk", "run"])
    im = fig.axes[0].get_images()[0].get_array()
    np.testing.assert_allclose(im[0], [0.8, 0.2, 0.0])
    np.testing.assert_allclose(im[2], [0.0, 0.0, 0.0])
    check_png(fig, tmp_path / "confusion.png")
    check_png(confusion_matrix_plot(np.eye(25, dtype=int) * 3, [f"c{i}" for i in range(25)], normalize=False), tmp_path / "cm25.png")


def test_confusion_matrix_plot_bad_shape():
    with pytest.raises(ValueError, match=r"confusion has shape \(3, 2\), expected \(3, 3\)"):
        confusion_matrix_plot(np.ones((3, 2)), ["a", "b", "c"])


def test_ablation_plot(tmp_path):
    steps = np.arange(0, 100, 10)
    runs = {
        "map_pool": {"val/loss": list(zip(steps, 1.0 / (1 + steps / 20)))},
        "mean_pool": {"val/loss": list(zip(steps, 1.2 / (1 + steps / 25)))},
        "no_aug": {"val/loss": list(zip(steps, 1.5 / (1 + steps / 30)))},
        "crashed": {"train/loss": [(0, 3.0)]},
    }
    fig = ablation_plot(runs, "val/loss", higher_is_better=False)
    ax_curves, ax_bars = fig.axes[:2]
    assert len(ax_curves.get_lines()) == 3
    heights = [p.get_height() for p in ax_bars.patches]
    np.testing.assert_allclose(heights, [1.0 / (1 + 90 / 20), 1.2 / (1 + 90 / 25), 1.5 / (1 + 90 / 30)])
    assert "crashed" in ax_bars.get_xlabel()
    check_png(fig, tmp_path / "ablation.png")
    with pytest.raises(ValueError, match=r"no run has metric 'val/acc'"):
        ablation_plot(runs, "val/acc")


def test_attention_rollout_plot(tmp_path):
    rng = np.random.default_rng(2)
    sensor = rng.normal(size=(144, 34))
    rel = rng.random((12, 17))
    rel /= rel.sum()
    fig = attention_rollout_plot(rel, sensor, [f"ch{i}" for i in range(34)], minutes_per_step=10)
    shown = fig.axes[1].get_images()[0].get_array()
    assert shown.shape == (34, 144)  # the patch grid upsampled to the input, channels on y
    assert shown[0, 0] == pytest.approx(rel[0, 0]) and shown[33, 143] == pytest.approx(rel[11, 16])
    check_png(fig, tmp_path / "rollout.png")


def test_attention_rollout_plot_bad_shapes():
    with pytest.raises(ValueError, match=r"rollout grid \(5, 17\) does not tile sensor \(144, 34\)"):
        attention_rollout_plot(np.ones((5, 17)), np.ones((144, 34)))
    with pytest.raises(ValueError, match=r"channel_names has 3 entries but sensor has shape \(144, 34\)"):
        attention_rollout_plot(np.ones((12, 17)), np.ones((144, 34)), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"sensor must be \(T, C\), got shape \(2, 144, 34\)"):
        attention_rollout_plot(np.ones((12, 17)), np.ones((2, 144, 34)))


def test_sst_maps_plot(tmp_path):
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:32, 0:32]
    truth = 15 + 10 * np.sin(yy / 10) + 0.5 * np.cos(xx / 5)
    land = (xx - 5) ** 2 + (yy - 25) ** 2 < 30
    cloudy = truth.copy()
    cloudy[rng.random(truth.shape) < 0.4] = np.nan
    recon = truth + rng.normal(scale=0.3, size=truth.shape)
    fig = sst_maps_plot(truth, cloudy, recon, land)
    assert len([ax for ax in fig.axes if ax.get_title()]) == 4
    err_img = fig.axes[3].get_images()[0]
    lo, hi = err_img.get_clim()
    assert lo == pytest.approx(-hi)  # diverging scale centred at 0
    check_png(fig, tmp_path / "sst.png")


def test_sst_maps_plot_bad_shapes():
    with pytest.raises(ValueError, match=r"reconstruction has shape \(8, 9\), expected \(8, 8\)"):
        sst_maps_plot(np.ones((8, 8)), np.ones((8, 8)), np.ones((8, 9)), None)
    with pytest.raises(ValueError, match=r"land_mask has shape \(4, 4\), expected \(8, 8\)"):
        sst_maps_plot(np.ones((8, 8)), np.ones((8, 8)), np.ones((8, 8)), np.ones((4, 4)))


def test_sst_maps_plot_with_baselines(tmp_path):
    yy, xx = np.mgrid[0:16, 0:16]
    truth = 15 + np.sin(yy / 4.0)
    base = {"climatology": truth + 0.5, "observed mean": truth - 0.2, "DINEOF": truth + 0.1}
    fig = sst_maps_plot(truth, truth, truth + 0.3, xx < 2, baselines=base)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["truth", "input (clouds blank)", "model", "climatology", "observed mean", "DINEOF",
                      "model - truth", "climatology - truth", "observed mean - truth", "DINEOF - truth"]
    check_png(fig, tmp_path / "sst_baselines.png")
    with pytest.raises(ValueError, match=r"DINEOF has shape \(8, 8\), expected \(16, 16\)"):
        sst_maps_plot(truth, truth, truth, None, baselines={"DINEOF": np.ones((8, 8))})
