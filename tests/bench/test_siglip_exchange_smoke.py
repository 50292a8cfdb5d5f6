"""Smoke test of bench/siglip_exchange.py at 2 gloo ranks (no timing asserts)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture(scope="module")
def bench():
    # A plain import from bench/ (not a spec loaded under another name): the spawned ranks
    # unpickle the worker by its module name, and inherit sys.path from this process.
    sys.path.insert(0, str(BENCH_DIR))
    try:
        import siglip_exchange

        yield siglip_exchange
    finally:
        sys.path.remove(str(BENCH_DIR))


def test_both_forms_at_two_ranks(bench):
    rows = [bench.measure(exchange, world=2, batch=8, dim=4, steps=1) for exchange in ("gather", "ring")]
    assert rows[0]["loss"] == pytest.approx(rows[1]["loss"], rel=1e-5)
    for row in rows:
        assert row["loss_spread"] == 0.0  # every rank returns the global loss
        assert row["tensor_peak_bytes"] > 0 and row["step_s"] > 0
        assert row["global_batch"] == 16
    assert [r["logit_matrix_bytes"] for r in rows] == [4 * 16**2, 4 * 8**2]
    table = bench.table(rows)
    assert table.count("\n") == 3 and "| ring | 2 | 16 |" in table


def test_extrapolation_recovers_the_fitted_laws(bench):
    b = 4
    rows = [
        {"exchange": "gather", "world": w, "batch": b, "tensor_peak_bytes": 3 * 4 * (w * b) ** 2 + 1000} for w in (2, 4)
    ] + [{"exchange": "ring", "world": w, "batch": b, "tensor_peak_bytes": 5000} for w in (2, 4)]
    gather, ring = bench.extrapolate(rows, 256)
    assert f"-> {(3 * 4 * (256 * b) ** 2 + 1000) / 2**30:.3f} GiB" in gather
    assert ring.startswith("ring:") and "+ 0.000 MiB per rank added" in ring
