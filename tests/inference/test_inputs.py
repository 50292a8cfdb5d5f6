"""How `sensorlm embed` reads a shard (sensorlm/inference/inputs.py): the block decode of a shard's
samples gives what one-by-one decoding gives, bad samples are skipped and named, and float16
shards come back as float32 (no Ray needed)."""

from __future__ import annotations

import importlib.util
import io
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sensorlm.data.shards import encode_sample
from sensorlm.inference.embed import all_busy_rate
from sensorlm.inference.inputs import _decode_shard_sample, dataset_units, read_samples

_spec = importlib.util.spec_from_file_location(
    "pipeline_fixtures", Path(__file__).resolve().parents[1] / "data" / "pipeline_fixtures.py")
_fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fx)


def _one_by_one(unit):
    """The reference: every sample decoded on its own, as before the block decode."""
    with tarfile.open(unit["input"]) as tar:
        members: dict[str, dict] = {}
        for m in tar:
            key, _, ext = m.name.partition(".")
            members.setdefault(key, {})[ext] = tar.extractfile(m).read()
    out = [_decode_shard_sample(k, v, tuple(unit["shape"]), unit["split"], lambda *a: None) for k, v in members.items()]
    return [s for s in out if s is not None]


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_block_decode_equals_one_by_one(tmp_path, dtype):
    _fx.write_wearable(tmp_path / "ds", n=12, max_count=12, dtype=dtype)
    units, _ = dataset_units(str(tmp_path / "ds"), None)
    for unit in units:
        got, want = read_samples(unit, lambda *a: None), _one_by_one(unit)
        assert [s.key for s in got] == [s.key for s in want] and got
        for a, b in zip(got, want):
            assert a.raw.dtype == np.float32 and a.raw.shape == b.raw.shape
            np.testing.assert_array_equal(a.raw, b.raw)  # NaN in the same places, the same values
            assert (a.split, a.subject_id, a.day, a.label) == (b.split, b.subject_id, b.day, b.label)
        assert any(np.isnan(s.raw).any() for s in got), "the fixture has missing minutes"


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the writer's statistics over the planted inf
def test_bad_samples_in_a_block_are_skipped_and_named(tmp_path):
    samples = list(_fx.wearable_samples(6))
    samples[1].arrays["sensor"][2, 3] = np.inf
    out = tmp_path / "ds"
    _fx.write_wearable_samples(out, samples[:4], max_count=64)
    with tarfile.open(out / "train-000000.tar", "a") as tar:  # one sample without its json member
        for name, member in encode_sample(samples[4]):
            if not name.endswith(".json"):
                info = tarfile.TarInfo(name)
                info.size = len(member)
                tar.addfile(info, io.BytesIO(member))
    bad = []
    units, _ = dataset_units(str(out), None)
    got = [s.key for u in units for s in read_samples(u, lambda *a: bad.append(a[:2]))]
    assert got == ["s0000", "s0002", "s0003"]
    assert sorted(bad) == [("missing_member", "s0004"), ("non_finite", "s0001")]


def test_all_busy_rate_counts_only_the_window_every_actor_worked():
    # actor 1 works 0-10 s (two units of 100 rows), actor 2 starts late (4 s) and ends at 12 s
    spans = [(1, 0.0, 5.0, 100), (1, 5.0, 10.0, 100), (2, 4.0, 8.0, 80), (2, 8.0, 12.0, 80)]
    # window 4..10 s: 20 + 100 rows of actor 1, 80 + 40 rows of actor 2
    assert all_busy_rate(spans) == pytest.approx((20 + 100 + 80 + 40) / 6.0)
    assert all_busy_rate([]) is None
    assert all_busy_rate([(1, 0.0, 1.0, 10), (2, 2.0, 3.0, 10)]) is None  # never both at work
