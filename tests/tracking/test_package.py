"""Model package round trips and the errors of bad packages (sensorlm/tracking/package.py)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from sensorlm.data.tokenizer import train_tokenizer
from sensorlm.models import create_model, model_config
from sensorlm.tracking.package import (
    CONFIG_FILE,
    DATA_STATS_FILE,
    TOKENIZER_FILE,
    WEIGHTS_FILE,
    load_model_package,
    model_family,
    save_model_package,
)

CAPTIONS = [
    "a brisk morning walk in the park",
    "running for an hour after work",
    "a long night of deep sleep",
    "cycling to the office and back",
    "a calm day with little activity",
]
CHANNELS = 34


@pytest.fixture(scope="module")
def tokenizer_file(tmp_path_factory) -> Path:
    tok = train_tokenizer(CAPTIONS * 4, vocab_size=200)
    return tok.save(tmp_path_factory.mktemp("tok") / "tokenizer.json")


def sensor_stats(channels: int = CHANNELS) -> dict:
    return {
        "stats": {
            "sensor": {
                "mean": np.linspace(40.0, 90.0, channels).tolist(),
                "std": np.linspace(0.5, 6.0, channels).tolist(),
                "count": [100] * channels,
            }
        },
        "sample_shape": {"sensor": [144, channels], "missing": [144]},
    }


SST_STATS = {"stats": {"sst": {"mean": 18.5, "std": 4.25, "count": 1000, "unit": "degC"}}}


def _state_equal(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_sensorlm_round_trip(tmp_path, tokenizer_file):
    torch.manual_seed(0)
    model = create_model("sensorlm_tiny")
    stats = sensor_stats()
    out = save_model_package(
        model, "sensorlm_tiny", model_config("sensorlm_tiny"), tmp_path / "pkg",
        tokenizer_path=tokenizer_file, data_stats=stats,
    )
    assert sorted(p.name for p in out.iterdir()) == sorted([WEIGHTS_FILE, CONFIG_FILE, TOKENIZER_FILE, DATA_STATS_FILE])
    meta = json.loads((out / CONFIG_FILE).read_text())
    assert meta["preset"] == "sensorlm_tiny" and meta["family"] == "sensorlm"
    assert meta["config"]["sensor"]["input_len"] == 144

    pkg = load_model_package(out)
    assert not pkg.model.training
    assert pkg.preset == "sensorlm_tiny" and pkg.family == "sensorlm"
    assert pkg.config == meta["config"]
    assert pkg.data_stats == stats
    _state_equal(model, pkg.model)
    ids, mask = pkg.tokenizer.encode(CAPTIONS[:2], 48)
    assert ids.shape == (2, 48) and mask[:, 0].tolist() == [1, 1]


def test_sst_round_trip_without_tokenizer(tmp_path):
    torch.manual_seed(1)
    model = create_model("sst_tiny")
    out = save_model_package(model, "sst_tiny", model_config("sst_tiny"), tmp_path / "pkg", data_stats=SST_STATS)
    assert not (out / TOKENIZER_FILE).exists()
    pkg = load_model_package(out)
    assert pkg.family == "sst" and pkg.tokenizer is None and pkg.data_stats == SST_STATS
    _state_equal(model, pkg.model)


def test_sst_package_from_before_the_input_skip_loads(tmp_path):
    model = create_model("sst_tiny", input_skip=False)
    out = save_model_package(model, "sst_tiny", model.config, tmp_path / "pkg", data_stats=SST_STATS)
    meta = json.loads((out / CONFIG_FILE).read_text())
    del meta["config"]["input_skip"]  # as written before the field existed
    (out / CONFIG_FILE).write_text(json.dumps(meta))
    pkg = load_model_package(out)
    assert pkg.model.config.input_skip is False
    _state_equal(model, pkg.model)


def test_config_may_be_a_dict_and_stats_optional(tmp_path):
    model = create_model("sst_tiny", depth=2)
    save_model_package(model, "sst_tiny", {"depth": 2}, tmp_path / "pkg")
    pkg = load_model_package(tmp_path / "pkg")
    assert pkg.config["depth"] == 2 and pkg.data_stats is None
    assert pkg.config == json.loads((tmp_path / "pkg" / CONFIG_FILE).read_text())["config"]
    _state_equal(model, pkg.model)


def test_shared_tensors_are_saved_as_copies(tmp_path):
    # safetensors refuses tensors sharing storage; tied parameters must still save and load.
    model = create_model("sensorlm_tiny")
    model.bias = model.t_prime  # tie two (1,) parameters
    assert model.state_dict()["bias"].data_ptr() == model.state_dict()["t_prime"].data_ptr()
    save_model_package(model, "sensorlm_tiny", model_config("sensorlm_tiny"), tmp_path / "pkg")
    state = load_file(str(tmp_path / "pkg" / WEIGHTS_FILE))
    assert torch.equal(state["bias"], state["t_prime"])
    assert torch.equal(load_model_package(tmp_path / "pkg").model.bias, model.t_prime.detach())


def test_loading_never_unpickles(tmp_path, tokenizer_file, monkeypatch):
    model = create_model("sensorlm_tiny")
    save_model_package(model, "sensorlm_tiny", {}, tmp_path / "pkg", tokenizer_path=tokenizer_file,
                       data_stats=sensor_stats())

    def refuse(*args, **kwargs):
        raise AssertionError("a model package must load without unpickling")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, refuse)
    monkeypatch.setattr(torch, "load", refuse)
    _state_equal(model, load_model_package(tmp_path / "pkg").model)
    assert {p.suffix for p in (tmp_path / "pkg").iterdir()} == {".safetensors", ".json"}


@pytest.fixture
def sst_package(tmp_path) -> Path:
    return save_model_package(create_model("sst_tiny"), "sst_tiny", {}, tmp_path / "pkg", data_stats=SST_STATS)


@pytest.mark.parametrize("missing", [WEIGHTS_FILE, CONFIG_FILE])
def test_missing_file_is_named(sst_package, missing):
    (sst_package / missing).unlink()
    with pytest.raises(FileNotFoundError, match=missing.replace(".", r"\.")):
        load_model_package(sst_package)


def test_missing_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model_package(tmp_path / "nowhere")


def test_shape_mismatch_names_key_and_shapes(sst_package):
    state = load_file(str(sst_package / WEIGHTS_FILE))
    key = "decoder.bias" if "decoder.bias" in state else sorted(state)[0]
    good = tuple(state[key].shape)
    state[key] = torch.zeros(good[0] + 3 if good else 3)
    save_file(state, str(sst_package / WEIGHTS_FILE))
    with pytest.raises(ValueError) as info:
        load_model_package(sst_package)
    msg = str(info.value)
    assert key in msg and str(tuple(state[key].shape)) in msg and str(good) in msg


def test_missing_and_unexpected_keys_are_named(sst_package):
    state = load_file(str(sst_package / WEIGHTS_FILE))
    dropped = sorted(state)[-1]
    del state[dropped]
    save_file(state, str(sst_package / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=f"missing key '{dropped}'"):
        load_model_package(sst_package)

    state = load_file(str(sst_package / WEIGHTS_FILE))
    state[dropped] = create_model("sst_tiny").state_dict()[dropped]
    state["extra.weight"] = torch.zeros(2, 2)
    save_file(state, str(sst_package / WEIGHTS_FILE))
    with pytest.raises(ValueError, match=r"unexpected key 'extra\.weight' \(shape \(2, 2\)\)"):
        load_model_package(sst_package)


def test_bad_model_config_json(sst_package):
    (sst_package / CONFIG_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="model_config.json: invalid JSON"):
        load_model_package(sst_package)
    (sst_package / CONFIG_FILE).write_text(json.dumps({"preset": "sst_tiny"}))
    with pytest.raises(ValueError, match="'config'"):
        load_model_package(sst_package)
    (sst_package / CONFIG_FILE).write_text(json.dumps({"preset": "sst_tiny", "config": {"depthh": 2}}))
    with pytest.raises(ValueError, match="depthh"):
        load_model_package(sst_package)


def test_bad_data_stats_rejected_when_saving(tmp_path, tokenizer_file):
    model = create_model("sensorlm_tiny")
    with pytest.raises(ValueError, match=r"34"):
        save_model_package(model, "sensorlm_tiny", {}, tmp_path / "a", data_stats=sensor_stats(channels=3))
    # the manifest keys without its "stats" entry cannot normalise anything
    with pytest.raises(ValueError, match=r"stats\.sensor"):
        save_model_package(model, "sensorlm_tiny", {}, tmp_path / "b", data_stats={"sample_shape": {}, "channels": []})
    bad_std = sensor_stats()
    bad_std["stats"]["sensor"]["std"][5] = 0.0
    with pytest.raises(ValueError, match="channel 5"):
        save_model_package(model, "sensorlm_tiny", {}, tmp_path / "c", data_stats=bad_std)
    with pytest.raises(ValueError, match=r"stats\.sst\.std"):
        save_model_package(create_model("sst_tiny"), "sst_tiny", {}, tmp_path / "d",
                           data_stats={"stats": {"sst": {"mean": 1.0, "std": -1.0}}})
    with pytest.raises(FileNotFoundError, match="no_tokenizer.json"):
        save_model_package(model, "sensorlm_tiny", {}, tmp_path / "e", tokenizer_path=tmp_path / "no_tokenizer.json")


def test_bad_data_stats_file_rejected_when_loading(sst_package):
    (sst_package / DATA_STATS_FILE).write_text(json.dumps({"stats": {"sst": {"mean": "warm", "std": 1.0}}}))
    with pytest.raises(ValueError, match=r"stats\.sst\.mean"):
        load_model_package(sst_package)


def test_tokenizer_larger_than_model_vocab(tmp_path, tokenizer_file):
    with pytest.raises(ValueError, match="vocab_size"):
        save_model_package(create_model("sensorlm_tiny", text={"vocab_size": 16, "context_len": 48,
                                                               "width": 64, "depth": 2, "num_heads": 4,
                                                               "embed_dim": 64}),
                           "sensorlm_tiny",
                           {"text": {"vocab_size": 16, "context_len": 48, "width": 64, "depth": 2,
                                     "num_heads": 4, "embed_dim": 64}},
                           tmp_path / "pkg", tokenizer_path=tokenizer_file)


def test_model_family():
    from sensorlm.models import model_config

    assert model_family(model_config("sensorlm_hvt_tiny")) == "sensorlm"
    assert model_family(model_config("sst_base")) == "sst"
    assert model_family(model_config("projection_cl_tiny")) == "projection_cl"
