"""The data decides the model's input: shape and vocabulary from the manifest, checked before Ray."""

import pytest
import torch

from sensorlm.typed_config import ConfigError
from sensorlm.models import create_model, model_config
from sensorlm.training.config import load_train_config
from sensorlm.training.model_from_data import fit_model_to_data, fit_patch


def _manifest(t=120, c=7, vocab=617, labels=("sleep", "gym")):
    return {"sample_shape": {"sensor": [t, c], "missing": [t]}, "vocab_size": vocab, "activities": list(labels)}


def test_tiny_preset_follows_the_data_and_builds():
    cfg = fit_model_to_data(load_train_config("sensorlm_tiny"), _manifest(), log=None)
    assert cfg.model.overrides == {"sensor": {"input_len": 120, "num_channels": 7, "patch": (6, 7)}}
    mcfg = model_config(cfg.model.preset, **cfg.model.overrides)
    assert (mcfg.sensor.width, mcfg.sensor.depth, mcfg.text.vocab_size) == (64, 2, 1024)  # the tiny tower stays
    model = create_model(cfg.model.preset, **cfg.model.overrides)
    out = model(torch.randn(2, 120, 7), torch.ones(2, 5, dtype=torch.long), torch.ones(2, 5, dtype=torch.long))
    assert out["sensor_emb"].shape == (2, 64)


def test_same_shape_changes_nothing():
    cfg = load_train_config("sensorlm_tiny")
    assert fit_model_to_data(cfg, _manifest(144, 34, 1000), log=None) is cfg


def test_patch_rule():
    assert fit_patch((10, 2), (1440, 34), (1440, 7)) == (10, 1)  # paper patch on a 7-channel device
    assert fit_patch((6, 34), (144, 34), (96, 5)) == (6, 5)  # all-channel patches stay all-channel
    assert fit_patch((10, 2), (1440, 34), (2880, 8)) == (10, 2)
    assert fit_patch((7, 2), (1440, 34), (1440, 6)) == (6, 2)


def test_partial_override_changes_only_named_fields():
    """Dotted and mapping forms both keep the preset's other tower fields (the mapping form used
    to swap in the paper's 92M-parameter tower)."""
    dotted = load_train_config("sensorlm_tiny", ["model.overrides.sensor.depth=1"])
    mapping = load_train_config("sensorlm_tiny", ["model.overrides.sensor={depth: 1}"])
    for cfg in (dotted, mapping):
        m = model_config(cfg.model.preset, **cfg.model.overrides)
        assert (m.sensor.depth, m.sensor.width, m.sensor.input_len, m.sensor.patch) == (1, 64, 144, (6, 34))
    with pytest.raises(ConfigError, match="unknown config key sensor.widht"):
        load_train_config("sensorlm_tiny", ["model.overrides.sensor.widht=3"])


def test_override_against_the_data_is_one_line():
    cfg = load_train_config("sensorlm_tiny", ["model.overrides.sensor.input_len=144"])
    with pytest.raises(ConfigError, match=r"model.overrides.sensor.input_len=144 but the data has input_len 120 "
                                          r"\(data/x/manifest.json: sensor 120x7\)"):
        fit_model_to_data(cfg, _manifest(), "data/x/manifest.json", log=None)
    cfg = load_train_config("sensorlm_tiny", ["model.overrides.sensor.patch=[6,34]"])
    with pytest.raises(ConfigError, match=r"patch=\[6, 34\] does not divide the data's shape \(120, 7\)"):
        fit_model_to_data(cfg, _manifest(), log=None)
    cfg = load_train_config("sensorlm_tiny", ["model.overrides.text.vocab_size=512"])
    with pytest.raises(ConfigError, match="vocab_size=512 is smaller than the dataset tokenizer's 2000 ids"):
        fit_model_to_data(cfg, _manifest(vocab=2000), log=None)


def test_unlabelled_data_ranks_checkpoints_by_validation_loss():
    """The README's config (best metric val/zero_shot_acc) on unlabelled recordings: one line, and
    checkpoints ranked by val/loss instead of a refusal."""
    said = []
    cfg = load_train_config("sensorlm_tiny", ["checkpoint.best_metric=val/zero_shot_acc"])
    fitted = fit_model_to_data(cfg, _manifest(labels=()), log=said.append)
    assert (fitted.checkpoint.best_metric, fitted.checkpoint.best_mode) == ("val/loss", "min")
    assert any("the dataset has no labels, so checkpoints are ranked by val/loss" in line for line in said)
    labelled = fit_model_to_data(cfg, _manifest(), log=None)  # labels: the rule stays
    assert (labelled.checkpoint.best_metric, labelled.checkpoint.best_mode) == ("val/zero_shot_acc", "max")
    cfg = load_train_config("sensorlm_tiny", ["checkpoint.best_metric=val/loss", "checkpoint.best_mode=min"])
    assert fit_model_to_data(cfg, _manifest(labels=()), log=None).model.overrides


def test_vocabulary_widens_to_the_tokenizer():
    cfg = fit_model_to_data(load_train_config("sensorlm_tiny"), _manifest(144, 34, vocab=4000), log=None)
    assert cfg.model.overrides == {"text": {"vocab_size": 4000}}


def test_hvt_tower_follows_too():
    cfg = fit_model_to_data(load_train_config("sensorlm_tiny", ["model.preset=sensorlm_hvt_tiny"]), _manifest(),
                            log=None)
    m = model_config(cfg.model.preset, **cfg.model.overrides)
    assert (m.hvt.input_len, m.hvt.num_channels) == (120, 7) and 120 % m.hvt.patch_size[0] == 0


def test_mismatch_fails_before_ray_starts(tmp_path, monkeypatch):
    import ray

    from sensorlm.data.prepare import prepare_synthetic
    from sensorlm.training.trainer import train

    data = tmp_path / "w"
    prepare_synthetic("wearable", "tiny", data, seed=0, log=None)
    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    cfg = load_train_config("sensorlm_tiny", [f"data.path={data}", "model.overrides.sensor.num_channels=7",
                                              "model.overrides.sensor.patch=[6,7]",
                                              f"tracking.tracking_uri=sqlite:///{tmp_path / 'm.db'}"])
    with pytest.raises(ConfigError, match=r"num_channels=7 but the data has num_channels 34"):
        train(cfg)
