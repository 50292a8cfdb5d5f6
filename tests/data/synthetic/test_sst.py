"""Tests for the SYNTHETIC SST generator: geography, seasons, eddies, clouds, holdout, target."""

from __future__ import annotations

import calendar

import numpy as np
import pytest

from sensorlm.data.synthetic import sst as ss

SEED = 0


@pytest.fixture(scope="module")
def samples() -> list[ss.SSTSample]:
    return list(ss.generate_sst("tiny", 14, "train", SEED, return_truth=True))


def _real_days(s: ss.SSTSample) -> np.ndarray:
    return np.flatnonzero(~s.padded_days)


def _last_month_days(s: ss.SSTSample) -> np.ndarray:
    days = _real_days(s)
    return days[days >= (len(s.months) - 1) * ss.DAYS_PER_SLOT]


def test_shapes_types_and_calendar(samples):
    size = ss.SST_SIZES["tiny"]
    assert (size.height, size.width, size.months) == (32, 32, 2)
    assert (ss.SST_SIZES["base"].height, ss.SST_SIZES["base"].months) == (128, 3)
    for i, s in enumerate(samples):
        assert s.daily.dtype == np.float32 and s.daily.shape == (64, 32, 32)
        assert s.mask.dtype == np.uint8 and s.mask.shape == (64, 32, 32)
        assert s.padded_days.dtype == bool and s.padded_days.shape == (64,)
        for arr, dtype in ((s.holdout, np.uint8), (s.target, np.float32), (s.land, np.uint8),
                           (s.climatology, np.float32)):
            assert arr.dtype == dtype and arr.shape == (32, 32)
        assert s.month == i % 12 + 1 and s.months[-1] == s.month and s.split == "train"
        assert s.key == f"sst_train_{i:06d}"
        assert set(np.unique(s.mask)) <= {0, 1} and set(np.unique(s.holdout)) <= {0, 1}
        # Each month slot holds its real days first, then padding, which is fully masked.
        prev_year = s.year if s.months[0] <= s.month else s.year - 1
        for j, (year, month) in enumerate([(prev_year, s.months[0]), (s.year, s.month)]):
            n = calendar.monthrange(year, month)[1]
            slot = s.padded_days[j * 32:(j + 1) * 32]
            assert not slot[:n].any() and slot[n:].all()
        assert (s.mask[s.padded_days] == 1).all() and (s.daily[s.padded_days] == 0).all()
        assert (s.daily[s.mask == 1] == 0).all()
        assert s.day_of_month.tolist() == list(range(1, 33)) * 2
        assert s.metadata()["synthetic"] is True


def test_land_is_masked_everywhere(samples):
    land = samples[0].land.astype(bool)
    assert 0.05 < land.mean() < 0.5
    for s in samples:
        np.testing.assert_array_equal(s.land, samples[0].land)  # one region per seed
        assert (s.mask[:, land] == 1).all()
        assert (s.target[land] == 0).all() and (s.climatology[land] == 0).all()
        assert (s.holdout[land] == 0).all()
    other = next(ss.generate_sst("tiny", 1, "train", SEED + 1))
    assert not np.array_equal(other.land, samples[0].land)


def test_latitude_gradient_and_seasonal_cycle(samples):
    s = samples[0]
    ocean = s.land == 0
    assert s.lat[0] > s.lat[-1]  # row 0 is the northern edge
    rows = np.array([s.climatology[r][ocean[r]].mean() if ocean[r].any() else np.nan for r in range(32)])
    ok = ~np.isnan(rows)
    assert np.corrcoef(s.lat[ok], rows[ok])[0, 1] < -0.9  # warmer towards the equator
    target_rows = np.array([s.target[r][ocean[r]].mean() if ocean[r].any() else np.nan for r in range(32)])
    assert np.corrcoef(s.lat[ok], target_rows[ok])[0, 1] < -0.7
    feb = ss.sst_climatology("tiny", SEED, 2001, 2)
    aug = ss.sst_climatology("tiny", SEED, 2001, 8)
    seasonal = (aug - feb)[ocean]
    assert 3.0 < seasonal.mean() < 10.0 and (seasonal > 0).all()
    by_month = {x.month: x.target[ocean].mean() for x in samples}
    assert by_month[8] - by_month[2] > 2.0


def test_eddies_drift_from_day_to_day(samples):
    s = samples[3]
    days = _real_days(s)
    e0, e1, e10 = s.eddies[days[0]], s.eddies[days[1]], s.eddies[days[10]]
    assert np.abs(e0).max() > 0.3
    corr = lambda a, b: np.corrcoef(a.ravel(), b.ravel())[0, 1]  # noqa: E731
    assert corr(e0, e1) > 0.9  # eddies persist
    assert corr(e0, e10) < corr(e0, e1)
    # Ten days later the pattern matches best after moving it west: the cores drift.
    shifts = {(dy, dx): corr(e0[4:-4, 4:-4], np.roll(e10, (dy, dx), axis=(0, 1))[4:-4, 4:-4])
              for dy in range(-3, 4) for dx in range(-1, 7)}
    best = max(shifts, key=shifts.get)
    assert best != (0, 0) and best[1] > 0  # rolled east = the field moved west
    assert shifts[best] > shifts[(0, 0)] + 0.05


def test_clouds_cover_30_to_80_percent_and_are_spatially_correlated(samples):
    for s in samples[:4]:
        ocean = s.land == 0
        first_month = _real_days(s)[_real_days(s) < 32]  # no holdout there: mask = clouds + land
        for d in first_month:
            cloud = s.mask[d].astype(bool)
            fraction = cloud[ocean].mean()
            assert 0.28 <= fraction <= 0.82
            both = ocean[:, 1:] & ocean[:, :-1]
            agree = (cloud[:, 1:] == cloud[:, :-1])[both].mean()
            independent = fraction**2 + (1 - fraction) ** 2
            assert agree > independent + 0.2


def test_holdout_hides_ocean_pixels_on_every_day_of_the_last_month(samples):
    for s in samples:
        hold = s.holdout.astype(bool)
        ocean = s.land == 0
        assert 0.08 < hold[ocean].mean() < 0.25
        assert not (hold & ~ocean).any()
        assert (s.mask[_last_month_days(s)][:, hold] == 1).all()
        assert (s.daily[_last_month_days(s)][:, hold] == 0).all()
        # Earlier months still see those pixels when there is no cloud.
        first = _real_days(s)[_real_days(s) < 32]
        assert (s.mask[first][:, hold] == 0).any()


def test_target_is_the_monthly_mean_of_truth_and_observations_are_noisy_truth(samples):
    for s in samples:
        last = _last_month_days(s)
        ocean = s.land == 0
        np.testing.assert_allclose(s.target[ocean], s.truth[last].mean(axis=0)[ocean], rtol=1e-5, atol=1e-4)
        seen = s.mask == 0
        err = (s.daily - s.truth)[seen]
        assert np.abs(err).max() < 0.7 and 0.05 < err.std() < 0.2


def test_climatology_is_an_honest_but_imperfect_baseline(samples):
    rmses = []
    for s in samples:
        ocean = s.land == 0
        rmse = float(np.sqrt(np.mean((s.climatology - s.target)[ocean] ** 2)))
        rmses.append(rmse)
        year = s.year
        np.testing.assert_allclose(s.climatology, ss.sst_climatology("tiny", SEED, year, s.month), rtol=1e-6)
        assert rmse < 3.0
    assert np.mean(rmses) > 0.15
    assert np.mean(rmses) < np.mean([np.std(s.target[s.land == 0]) for s in samples])


def test_splits_are_by_year_and_generation_is_deterministic(samples):
    train_years = {ss.split_year("train", n) for n in range(20)}
    val_years = {ss.split_year("val", n) for n in range(5)}
    assert not train_years & val_years and all(y % 5 == 4 for y in val_years)
    val = list(ss.generate_sst("tiny", 2, "val", SEED))
    assert [v.year for v in val] == [2004, 2004] and [v.key for v in val] == ["sst_val_000000", "sst_val_000001"]
    again = ss.generate_sst_sample("tiny", SEED, "train", 5, return_truth=True)
    for name in ("daily", "mask", "holdout", "target", "climatology", "truth"):
        np.testing.assert_array_equal(getattr(again, name), getattr(samples[5], name))
    shifted = next(ss.generate_sst("tiny", 1, "train", SEED, start=5))
    np.testing.assert_array_equal(shifted.daily, samples[5].daily)
    assert not np.array_equal(samples[4].daily, samples[5].daily)
    both = list(ss.generate_sst(ss.get_sst_size("tiny", num_train=2, num_val=1), seed=SEED))
    assert [b.split for b in both] == ["train", "train", "val"]


def test_base_size_generates_its_shape():
    size = ss.get_sst_size("base", height=48, width=40)  # base texture on a smaller grid
    s = ss.generate_sst_sample(size, SEED, "val", 0)
    assert s.daily.shape == (96, 48, 40) and s.target.shape == (48, 40) and s.padded_days.shape == (96,)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown SST size 'huge'"):
        ss.get_sst_size("huge")
    with pytest.raises(ValueError, match="SSTSize.height must be an integer >= 8"):
        ss.get_sst_size("tiny", height=4)
    with pytest.raises(ValueError, match="holdout_fraction"):
        ss.get_sst_size("tiny", holdout_fraction=0.7)
    with pytest.raises(ValueError, match="cloud_coverage"):
        ss.get_sst_size("tiny", cloud_coverage=(0.5, 0.2))
    with pytest.raises(ValueError, match="unknown SSTSize field"):
        ss.get_sst_size("tiny", depth=3)
    with pytest.raises(ValueError, match="split must be one of"):
        next(ss.generate_sst("tiny", 1, "test"))
    with pytest.raises(ValueError, match="num_samples must be"):
        next(ss.generate_sst("tiny", -1, "train"))
    with pytest.raises(ValueError, match="seed must be a non-negative integer"):
        next(ss.generate_sst("tiny", 1, "train", -3))
    with pytest.raises(ValueError, match="index must be a non-negative integer"):
        ss.generate_sst_sample("tiny", 0, "train", -1)
    with pytest.raises(ValueError, match="month must be in 1..12"):
        ss.sst_climatology("tiny", 0, 2001, 13)
    with pytest.raises(ValueError, match="sigma has 1 entries"):
        ss.smooth_noise(np.random.default_rng(0), (4, 4), (1.0,))
