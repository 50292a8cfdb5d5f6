import math

import pytest

from sensorlm.typed_config import ConfigError
from sensorlm.training.config import load_train_config
from sensorlm.training.early_stopping import EarlyStopping


def test_stops_after_patience_validations_without_improvement():
    es = EarlyStopping("val/loss", "min", patience=2)
    assert [es.update(v, s) for s, v in [(10, 4.0), (20, 3.5), (30, 3.6), (40, 3.4), (50, 3.5), (60, 3.9)]] == \
        [False, False, False, False, False, True]
    assert (es.best, es.best_step, es.stale) == (3.4, 40, 2)
    assert "val/loss has not improved on its best, 3.4000 at step 40 for 2 validations" in es.reason(60)


def test_max_mode_and_min_delta():
    es = EarlyStopping("val/zero_shot_acc", "max", patience=1, min_delta=0.05)
    assert not es.update(0.50, 1)
    assert es.update(0.54, 2)  # +0.04 is below min_delta: no improvement
    es = EarlyStopping("val/zero_shot_acc", "max", patience=1, min_delta=0.05)
    es.update(0.50, 1)
    assert not es.update(0.56, 2) and es.best == 0.56


def test_non_finite_value_never_improves():
    es = EarlyStopping("val/loss", "min", patience=2)
    assert not es.update(math.nan, 1)
    assert es.update(math.inf, 2)
    assert es.best is None and "no finite value" in es.reason(2)


def test_patience_zero_never_stops():
    es = EarlyStopping("val/loss", "min", patience=0)
    assert not any(es.update(5.0, s) for s in range(1, 20))


def test_state_round_trip_resumes_the_count():
    es = EarlyStopping("val/loss", "min", patience=3)
    for s, v in [(1, 2.0), (2, 2.5), (3, 2.6)]:
        es.update(v, s)
    resumed = EarlyStopping("val/loss", "min", patience=3)
    resumed.load_state_dict(es.state_dict())
    assert resumed.update(2.7, 4)  # the third stale validation, counted across the restart


@pytest.mark.parametrize("overrides, message", [
    (["checkpoint.early_stop_patience=2", "checkpoint.best_metric=null"], "early_stop_patience needs checkpoint.best_metric"),
    (["checkpoint.early_stop_patience=-1"], "early_stop_patience must be >= 0"),
    (["checkpoint.early_stop_min_delta=-0.1"], "early_stop_min_delta must be a finite number >= 0, got -0.1"),
    (["checkpoint.early_stop_min_delta=nan"], "early_stop_min_delta must be a finite number >= 0, got nan"),
])
def test_bad_early_stopping_config_is_one_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_train_config("sensorlm_tiny", overrides)
