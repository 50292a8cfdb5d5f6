"""Validation in the family tasks (sensorlm/training/tasks.py): per-window outcomes for the
champion gate's paired comparison agree with the metrics they are the windows of."""

from __future__ import annotations

import numpy as np
import pytest
import torch


class _OneHotTokenizer:
    """Prompt i encodes as token i: with `_Engine` the text embedding of label i is e_i."""

    def encode(self, texts, length):
        ids = np.zeros((len(texts), length), dtype=np.int64)
        ids[:, 0] = np.arange(len(texts))
        return ids, np.ones_like(ids)


class _Engine:
    """A stand-in dual encoder: the sensor embedding is the first time step, the text embedding
    the one-hot of the first token; SigLIP's temperature and bias are fixed."""

    def __call__(self, sensor, ids, mask, missing=None, validate=False):
        k = sensor.shape[-1]
        return {"sensor_emb": torch.nn.functional.normalize(sensor[:, 0].float(), dim=1),
                "text_emb": torch.nn.functional.one_hot(ids[:, 0].long(), k).float(),
                "t_prime": torch.tensor(np.log(10.0)), "bias": torch.tensor(-10.0)}


def _batch(keys, scores, labels):
    scores = torch.tensor(scores, dtype=torch.float32)
    n, k = scores.shape
    ids = torch.zeros(n, 4, dtype=torch.long)
    ids[:, 0] = torch.tensor([max(label, 0) for label in labels])
    return {"key": keys, "sensor": scores[:, None, :].expand(n, 3, k).contiguous(), "input_ids": ids,
            "attention_mask": torch.ones_like(ids), "label": torch.tensor(labels)}


def test_sensorlm_per_window_outcomes_are_the_zero_shot_windows():
    from sensorlm.training.tasks import SensorLMTask

    task = SensorLMTask(["walk", "run", "rest"], ["a walk", "a run", "a rest"], _OneHotTokenizer(), 4,
                        torch.device("cpu"))
    batches = [
        _batch(["s1/a", "s1/b", "s1/c"], [[1, 0, 0], [0, 1, 0], [1, 0, 0]], [0, 1, 2]),  # right, right, wrong
        _batch(["s2/a", "s2/b"], [[0, 0, 1], [0, 1, 0]], [2, -1]),  # right, unlabelled (loss only)
    ]
    per_window: dict = {}
    metrics = task.evaluate(_Engine(), batches, per_window=per_window)
    assert per_window == {"val/zero_shot_acc": {"s1/a": 1.0, "s1/b": 1.0, "s1/c": 0.0, "s2/a": 1.0}}
    assert metrics["val/zero_shot_acc"] == pytest.approx(np.mean(list(per_window["val/zero_shot_acc"].values())))
    assert metrics["val/labelled_samples"] == 4 and metrics["val/samples"] == 5
    assert task.evaluate(_Engine(), batches) == pytest.approx(metrics)  # without the dict: the same metrics


def test_projection_per_window_hits_are_the_recall_rows():
    from sensorlm.models import create_model
    from sensorlm.training.tasks import ProjectionTask

    torch.manual_seed(0)
    model = create_model("projection_cl_tiny", modality_dims=[8, 8], embed_dim=8).eval()
    with torch.no_grad():  # identity projections: a pair that is close in input is close in embedding
        model.proj_a[0].weight.copy_(torch.eye(8))
        model.proj_b[0].weight.copy_(torch.eye(8))
    a = torch.randn(12, 8)
    b = torch.cat([a[:6] + 0.01 * torch.randn(6, 8), torch.randn(6, 8)])  # 6 true partners, 6 strangers
    per_window: dict = {}
    metrics = ProjectionTask(torch.device("cpu")).evaluate(model, [{"a": a, "b": b}], per_window=per_window)
    assert set(per_window) == {"val/recall_at_1", "val/recall_at_1_b2a"}
    for name, hits in per_window.items():
        assert sorted(hits, key=int) == [str(i) for i in range(12)]
        assert np.mean(list(hits.values())) == pytest.approx(metrics[name])
    assert all(per_window["val/recall_at_1"][str(i)] == 1.0 for i in range(6))
