"""Paired-embedding datasets (sensorlm/data/embedding_pairs.py): what ProjectionCL trains on."""

import json

import numpy as np
import pytest
import torch

from sensorlm.data.embedding_pairs import (
    export_sensorlm_pairs,
    make_synthetic_pairs,
    pair_loader,
    read_pairs_manifest,
    validation_rows,
    write_pairs,
)
from sensorlm.data.loader import DataError


def test_synthetic_pairs_are_seeded_and_described_by_their_manifest(tmp_path):
    make_synthetic_pairs("tiny", tmp_path / "a", seed=3)
    make_synthetic_pairs("tiny", tmp_path / "b", seed=3)
    manifest = read_pairs_manifest(tmp_path / "a")
    assert manifest["dims"] == [64, 48] and manifest["splits"]["train"]["num_samples"] == 1024
    np.testing.assert_array_equal(np.load(tmp_path / "a" / "val_b.npy"), np.load(tmp_path / "b" / "val_b.npy"))
    with pytest.raises(FileExistsError):
        make_synthetic_pairs("tiny", tmp_path / "a")
    with pytest.raises(ValueError, match="unknown synthetic embedding-pairs size 'huge'"):
        make_synthetic_pairs("huge", tmp_path / "c")


def _arrays(n=10, da=4, db=3):
    rng = np.random.default_rng(0)
    return {f"{s}_{m}": rng.normal(size=(n, d)) for s in ("train", "val") for m, d in (("a", da), ("b", db))}


def test_bad_datasets_are_one_line_errors_naming_the_file(tmp_path):
    root = write_pairs(tmp_path / "ok", _arrays())
    manifest = json.loads((root / "manifest.json").read_text())

    def broken(name, **change):
        d = tmp_path / name
        d.mkdir()
        for f in root.iterdir():
            (d / f.name).write_bytes(f.read_bytes())
        m = json.loads(json.dumps(manifest))
        for key, value in change.items():
            m["splits"]["val"][key] = value
        (d / "manifest.json").write_text(json.dumps(m))
        return d

    with pytest.raises(DataError, match=r"splits\.val\.a = '\.\./ok/train_a\.npy' is not a plain file name"):
        read_pairs_manifest(broken("escape", a="../ok/train_a.npy"))
    with pytest.raises(DataError, match=r"splits\.val\.b = '/etc/passwd' is not a plain file name"):
        read_pairs_manifest(broken("absolute", b="/etc/passwd"))
    with pytest.raises(DataError, match=r"train_b\.npy: float32 array of shape \(10, 3\), expected floats \(N, 4\)"):
        read_pairs_manifest(broken("narrow", a="train_b.npy"))
    with pytest.raises(DataError, match=r"split 'val' has 10 A rows and 10 B rows, manifest says 7"):
        read_pairs_manifest(broken("count", num_samples=7))
    d = broken("pickled")
    np.save(d / "val_a.npy", np.array([{"x": 1}] * 10, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"val_a\.npy: not a readable \.npy array"):
        read_pairs_manifest(d)
    with pytest.raises(DataError, match=r"no manifest"):
        read_pairs_manifest(tmp_path)
    with pytest.raises(ValueError, match=r"val arrays must be \(N, dim\) with equal N, got \(10, 4\) and \(9, 3\)"):
        write_pairs(tmp_path / "uneven", {**_arrays(), "val_b": np.zeros((9, 3))})
    assert not (tmp_path / "uneven").exists()


def test_loader_gives_ranks_disjoint_rows_replays_a_seed_and_splits_validation(tmp_path):
    root = write_pairs(tmp_path / "d", _arrays(n=10))
    train_a = np.load(root / "train_a.npy")
    first = [next(pair_loader(root, "train", 4, rank=r, world_size=2, seed=5)) for r in (0, 1)]
    again = next(pair_loader(root, "train", 4, rank=0, world_size=2, seed=5))
    torch.testing.assert_close(first[0]["a"], again["a"])  # same seed, same stream (exact resume)
    rows = [{int(np.where((train_a == row.numpy()).all(axis=1))[0][0]) for row in f["a"].double()} for f in first]
    assert all(i % 2 == 0 for i in rows[0]) and all(i % 2 == 1 for i in rows[1])
    (val,) = list(pair_loader(root, "val", 4, part="odd"))
    assert val["a"].shape == (5, 4) and val["b"].shape == (5, 3)
    assert validation_rows(5, "even").tolist() == [0, 2, 4] and validation_rows(3, None).tolist() == [0, 1, 2]


def test_export_pairs_a_sensorlm_s_sensor_and_caption_rows(tmp_path):
    import importlib.util
    from pathlib import Path

    from sensorlm.data.loader import load_dataset_manifest as read_manifest
    from sensorlm.models import create_model, model_config
    from sensorlm.tracking.package import load_model_package, save_model_package

    spec = importlib.util.spec_from_file_location("pipeline_fixtures", Path(__file__).parent / "pipeline_fixtures.py")
    fx = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(fx)
    data = tmp_path / "wearable"
    fx.write_wearable(data, n=16, val_every=4)
    manifest = read_manifest(str(data))
    torch.manual_seed(0)
    shape = manifest["sample_shape"]["sensor"]
    overrides = {"sensor": {"input_len": shape[0], "num_channels": shape[1], "patch": [shape[0] // 4, shape[1]]},
                 "text": {"vocab_size": int(manifest.get("vocab_size") or 1024)}}
    model = create_model("sensorlm_tiny", **overrides)
    pkg = save_model_package(model, "sensorlm_tiny", model_config("sensorlm_tiny", **overrides), tmp_path / "pkg",
                             tokenizer_path=data / manifest["tokenizer"],
                             data_stats={k: manifest[k] for k in ("stats", "channels", "sample_shape") if k in manifest})
    out = export_sensorlm_pairs(load_model_package(pkg), data, tmp_path / "pairs", batch_size=4)
    pairs = read_pairs_manifest(out)
    assert pairs["modalities"] == ["sensor", "text"] and pairs["dims"] == [model.embed_dim, model.embed_dim]
    assert pairs["splits"]["train"]["num_samples"] + pairs["splits"]["val"]["num_samples"] == 16
    np.testing.assert_allclose(np.linalg.norm(np.load(out / "val_a.npy"), axis=1), 1.0, atol=1e-4)
