"""Tiny synthetic datasets for the shard/loader tests (no generator needed, T=144)."""

from __future__ import annotations

import numpy as np

from sensorlm.data.schema import DatasetInfo, ShardSample
from sensorlm.data.shards import write_shards
from sensorlm.data.tokenizer import TOKENIZER_FILE, train_tokenizer

T, C = 144, 6
ACTS = ["rest", "walk", "run", "bike"]
SST_D, SST_H, SST_W = 64, 8, 8


def wearable_info() -> DatasetInfo:
    return DatasetInfo(kind="wearable", seq_len=T, channels=[(f"ch{i}", "u") for i in range(C)], activities=ACTS)


def wearable_samples(n: int, seed: int = 0, val_every: int = 0):
    """n samples with keys s0000..; every `val_every`-th goes to val (0: all train)."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        sensor = (rng.normal(size=(T, C)) * (np.arange(C) + 1) + 10 * np.arange(C)).astype(np.float32)
        missing = (rng.random(T) < 0.1).astype(np.uint8)
        sensor[missing == 1] = 0.0
        act = ACTS[i % len(ACTS)]
        split = "val" if val_every and i % val_every == 0 else "train"
        caption = f"the user did {act} for {10 + i % 50} minutes and slept {6 + i % 3} hours"
        meta = {"key": f"s{i:04d}", "primary_activity": act, "split": split}
        yield ShardSample(f"s{i:04d}", split, {"sensor": sensor, "missing": missing}, meta, caption)


def write_wearable(out, n: int = 32, max_count: int = 4, val_every: int = 0, **kw):
    """Shards + tokenizer.json + manifest.json in `out`; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer((s.text for s in wearable_samples(n, val_every=val_every)), 200, min_frequency=1)
    tok.save(out / TOKENIZER_FILE)
    extra = {"tokenizer": TOKENIZER_FILE, "vocab_size": tok.vocab_size, "text_len": 16}
    return write_shards(wearable_samples(n, val_every=val_every), out, wearable_info(), max_count=max_count,
                        activities=ACTS, extra=extra, **kw)


def write_wearable_samples(out, samples, max_count: int = 64):
    """Given samples (e.g. edited `wearable_samples`) as shards + tokenizer in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer((s.text for s in samples), 200, min_frequency=1)
    tok.save(out / TOKENIZER_FILE)
    extra = {"tokenizer": TOKENIZER_FILE, "vocab_size": tok.vocab_size, "text_len": 16}
    return write_shards(iter(samples), out, wearable_info(), max_count=max_count, activities=ACTS, extra=extra)


def sst_info() -> DatasetInfo:
    return DatasetInfo(kind="sst", days=SST_D, height=SST_H, width=SST_W)


def sst_samples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    land = np.zeros((SST_H, SST_W), np.uint8)
    land[:2, :3] = 1
    for i in range(n):
        daily = (20 + 3 * rng.normal(size=(SST_D, SST_H, SST_W))).astype(np.float32)
        mask = (rng.random((SST_D, SST_H, SST_W)) < 0.3).astype(np.uint8)
        mask[:, land == 1] = 1
        padded = np.zeros(SST_D, np.uint8)
        padded[31:32] = 1
        padded[62:] = 1
        mask[padded == 1] = 1
        daily[mask == 1] = 0
        target = np.where(land == 1, 0, 20 + rng.normal(size=(SST_H, SST_W))).astype(np.float32)
        holdout = (rng.random((SST_H, SST_W)) < 0.1).astype(np.uint8)
        arrays = {"daily": daily, "mask": mask, "padded_days": padded, "holdout": holdout,
                  "target": target, "land": land, "clim": np.full((SST_H, SST_W), 20, np.float32)}
        yield ShardSample(f"sst_{i:06d}", "train", arrays, {"key": f"sst_{i:06d}", "month": 1 + i % 12}, None)


def write_sst(out, n: int = 8, max_count: int = 2, **kw):
    return write_shards(sst_samples(n), out, sst_info(), max_count=max_count, **kw)
