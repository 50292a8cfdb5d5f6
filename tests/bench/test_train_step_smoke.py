"""Smoke test of the plain loop of bench/train_step.py: it trains, and it counts what it times."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[2] / "bench" / "train_step.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _synthetic_batches(preset: str, batch: int, seed: int = 0):
    from sensorlm.models import model_config

    m = model_config(preset)
    g = torch.Generator().manual_seed(seed)
    lengths = [m.text.context_len // 2, m.text.context_len]
    while True:
        mask = torch.zeros(batch, m.text.context_len, dtype=torch.long)
        for i in range(batch):
            mask[i, : lengths[i % 2]] = 1
        yield {
            "sensor": torch.randn(batch, m.sensor.input_len, m.sensor.num_channels, generator=g),
            "missing": torch.rand(batch, m.sensor.input_len, generator=g) < 0.1,
            "input_ids": torch.randint(1, m.text.vocab_size, (batch, m.text.context_len), generator=g) * mask,
            "attention_mask": mask,
        }


def test_plain_loop_three_steps_on_tiny_preset(bench, tmp_path):
    cfg = bench.bench_config(tmp_path / "unused-data", steps=3, log_every=1, work=tmp_path, name="smoke")
    assert cfg.model.preset == "sensorlm_tiny"
    threads = torch.get_num_threads()
    try:
        res = bench.run_plain(cfg, threads=1, batches=_synthetic_batches(cfg.model.preset, batch=8))
    finally:
        torch.set_num_threads(threads)
    windows = res["windows"]
    assert [w["step"] for w in windows] == [1, 2, 3]
    assert [w["samples"] for w in windows] == [8, 8, 8]
    assert all(math.isfinite(w["loss"]) and w["loss"] > 0 for w in windows)
    assert all(w["seconds"] > 0 and w["samples_per_s"] == pytest.approx(8 / w["seconds"]) for w in windows)
    assert all(0 <= w["data_wait_frac"] <= 1 for w in windows)
    assert res["rates"] == [w["samples_per_s"] for w in windows]
    assert res["wall_s"] >= sum(w["seconds"] for w in windows)


def test_plain_train_updates_weights_and_windows_cover_all_steps(bench):
    from sensorlm.models import create_model
    from sensorlm.training.optim import build_optimizer, build_scheduler

    torch.manual_seed(0)
    model = create_model("sensorlm_tiny")
    before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    opt = build_optimizer(model, 1e-3, 1e-4, (0.9, 0.999), 1e-8, fused=False)
    sched = build_scheduler(opt, 3, 1, 0.1)
    batches = _synthetic_batches("sensorlm_tiny", batch=4)
    windows = bench.plain_train(model, opt, sched, batches, steps=3, log_every=2, grad_clip=1.0)
    # 3 steps with windows of 2: one full window and the last partial one, as the trainer logs.
    assert [(w["step"], w["steps"], w["samples"]) for w in windows] == [(2, 2, 8), (3, 1, 4)]
    changed = [k for k, v in model.state_dict().items() if not torch.equal(v, before[k])]
    assert "t_prime" in changed and len(changed) > len(before) // 2


def test_steady_rate_drops_warmup_windows_and_refuses_empty(bench):
    # Equal-size windows: total samples / total time = harmonic mean of the kept rates.
    assert bench.steady_rate([10.0, 100.0, 200.0], drop=1) == pytest.approx(2 / (1 / 100 + 1 / 200))
    with pytest.raises(ValueError, match="no steady-state windows: 2 windows, dropping the first 2"):
        bench.steady_rate([1.0, 2.0], drop=2)
