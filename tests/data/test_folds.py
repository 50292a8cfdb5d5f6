"""K-fold validation (sensorlm/data/folds.py): import deals units into stratified folds, training
and evaluation read fold k as validation and the rest as training, bad fold settings are one line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from sensorlm.cli import main as cli_main
from sensorlm.typed_config import ConfigError
from sensorlm.data.folds import assign_folds, fold_view, parse_fold


def test_assign_folds_is_stratified_seeded_and_balanced():
    units = [f"d{i:02d}" for i in range(20)]
    labels = {u: {"rest"} for u in units}
    for u in ("d03", "d11", "d17"):
        labels[u] = {"exercise"}  # 3 units: one in each of 3 folds
    for u in ("d01", "d05", "d08", "d13", "d19", "d07"):
        labels[u] = {"travel"}
    for seed in range(5):
        folds = assign_folds(units, seed, 3, labels)
        assert set(folds) == set(units) and set(folds.values()) == {0, 1, 2}
        for label, n in (("exercise", 3), ("travel", 6)):
            per_fold = np.bincount([folds[u] for u in units if label in labels[u]], minlength=3)
            assert per_fold.tolist() == [n // 3] * 3, (label, seed, per_fold)
        sizes = np.bincount(list(folds.values()), minlength=3)
        assert sizes.max() - sizes.min() <= 1
    assert assign_folds(units, 0, 3, labels) == assign_folds(list(reversed(units)), 0, 3, labels)
    assert assign_folds(units, 0, 3, labels) != assign_folds(units, 1, 3, labels)
    with pytest.raises(ValueError, match="2 units cannot fill 3 folds"):
        assign_folds(units[:2], 0, 3)


@pytest.mark.parametrize("value, message", [
    ("2", "expected k/K"), ("a/5", "expected k/K"), ("5/5", "need K >= 2 folds and 0 <= k < K"),
    ("0/1", "need K >= 2"),
])
def test_bad_fold_arguments_are_one_line(value, message):
    from sensorlm.training.config import load_train_config

    with pytest.raises(ValueError, match=message):
        parse_fold(value)
    # "2" reaches the typed config as the number 2 (YAML): refused as not a string
    with pytest.raises(ConfigError, match=rf"data.fold={value!r}: .*{message}" if "/" in value else "data.fold: expected a string, got 2"):
        load_train_config("sensorlm_tiny", [f"data.fold={value}"])
    assert parse_fold(" 2/5 ") == (2, 5)


@pytest.fixture(scope="module")
def folded(tmp_path_factory):
    """A generated export (3 subjects x 5 days) imported as 3 folds of subject-days."""
    from sensorlm.data.synthetic.device import write_device_export

    root = tmp_path_factory.mktemp("folds")
    raw = write_device_export(root / "raw")
    out = root / "ds"
    assert cli_main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--labels", str(raw["labels"]),
                     "--out", str(out), "--window-minutes", "120", "--stride-minutes", "60",
                     "--main-label-min-fraction", "0.5", "--folds", "3", "--max-count", "16", "--quiet"]) == 0
    return out


def test_import_with_folds_writes_one_split_per_fold(folded):
    from sensorlm.data.loader import load_dataset_manifest as read_manifest

    manifest = read_manifest(str(folded))
    report = json.loads((folded / "import_report.json").read_text())
    assert manifest["folds"] == 3 and sorted(manifest["splits"]) == ["fold0", "fold1", "fold2"]
    assert report["split_by"] == "day" and sorted(report["splits"]) == ["fold0", "fold1", "fold2"]
    assert sum(report["splits"].values()) == manifest["num_samples"] == report["windows_kept"]
    assert manifest["stats_split"] == "all"  # no one training split: statistics over every fold
    # every label found on 3 or more subject-days is in every fold
    rows = pd.read_parquet(folded / "parquet", columns=["subject_id", "day", "primary_activity"])
    assert len(rows) == manifest["num_samples"]
    labelled = rows[rows["primary_activity"] != ""]
    units_per_label = labelled.groupby("primary_activity")[["subject_id", "day"]].apply(lambda f: len(f.drop_duplicates()))
    assert (units_per_label >= 3).any()
    for label in units_per_label[units_per_label >= 3].index:
        assert all(report["label_counts"][f"fold{k}"].get(label, 0) > 0 for k in range(3)), (label, report["label_counts"])
    keys = [set() for _ in range(3)]
    for k in range(3):
        view = fold_view(manifest, f"{k}/3")
        assert view["splits"]["val"] == manifest["splits"][f"fold{k}"]
        assert view["splits"]["train"]["num_samples"] + view["splits"]["val"]["num_samples"] == manifest["num_samples"]
        keys[k] = {sh["name"] for sh in view["splits"]["val"]["shards"]}
        assert not keys[k] & {sh["name"] for sh in view["splits"]["train"]["shards"]}
    assert keys[0] | keys[1] | keys[2] == {sh["name"] for s in manifest["splits"].values() for sh in s["shards"]}


def test_training_reads_fold_k_as_validation_and_refuses_bad_folds(folded):
    from sensorlm.training.config import load_train_config
    from sensorlm.training.trainer import data_decides_model

    base = ["data.synthetic=null", f"data.path={folded}"]
    cfg, manifest = data_decides_model(load_train_config("sensorlm_tiny", [*base, "data.fold=1/3"]), folded)
    assert manifest["fold"] == "1/3" and manifest["splits"]["val"]["num_samples"] > 0
    with pytest.raises(ConfigError, match=r"the dataset is 3 folds \(fold0..fold2\), no train/val split: choose the "
                                          r"validation fold with data.fold=k/3"):
        data_decides_model(load_train_config("sensorlm_tiny", base), folded)
    with pytest.raises(ConfigError, match=r"data.fold=1/5 but the dataset has 3 folds \(use k/3\)"):
        data_decides_model(load_train_config("sensorlm_tiny", [*base, "data.fold=1/5"]), folded)


def test_a_dataset_without_folds_refuses_a_fold(tmp_path):
    manifest = {"splits": {"train": {"shards": []}, "val": {"shards": []}}}
    with pytest.raises(ValueError, match=r"ds/manifest.json: data.fold=0/5 but the dataset has no folds \(import it "
                                         r"with --folds 5\)"):
        fold_view(manifest, "0/5", "ds/manifest.json")
    with pytest.raises(ValueError, match="folds: 2 but the splits lack fold1"):
        fold_view({"folds": 2, "splits": {"fold0": {"shards": []}}}, "0/2")


def test_evaluation_takes_the_training_runs_fold(folded):
    from types import SimpleNamespace

    from sensorlm.data.loader import load_dataset_manifest as read_manifest
    from sensorlm.evaluation.runners import _fold_manifest

    manifest = read_manifest(str(folded))
    client = SimpleNamespace(get_run=lambda run_id: SimpleNamespace(data=SimpleNamespace(params={"data.fold": "2/3"})))
    notes: list[str] = []
    view = _fold_manifest(manifest, None, client, "run1", str(folded), notes)
    assert view["splits"]["val"] == manifest["splits"]["fold2"] and notes == ["fold 2/3: the training run's data.fold"]
    assert _fold_manifest(manifest, "0/3", client, "run1", str(folded), [])["splits"]["val"] == manifest["splits"]["fold0"]
    with pytest.raises(ValueError, match=r"the dataset is 3 folds .* choose the validation fold with --fold k/3"):
        _fold_manifest(manifest, None, None, None, str(folded), [])
    plain = {"splits": {"val": {}}}
    assert _fold_manifest(plain, None, client, "run1", "x", []) is plain


def test_cli_refuses_a_single_fold(tmp_path, capsys):
    from sensorlm.data.synthetic.device import write_device_export

    raw = write_device_export(tmp_path / "raw", subjects=1, days=4)
    assert cli_main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--out", str(tmp_path / "a"),
                     "--folds", "1", "--quiet"]) != 0
    assert "split.folds must be 0 (one train/val split) or >= 2, got 1" in capsys.readouterr().err
    assert cli_main(["import", str(raw["export"]), "--spec", str(raw["spec"]), "--out", str(tmp_path / "b"),
                     "--folds", "5", "--quiet"]) != 0
    err = capsys.readouterr().err
    assert re.search(r"cannot deal 5 folds by day: the export has [234] day\(s\) with kept windows", err), err
    assert not (tmp_path / "b").exists() or not any((tmp_path / "b").iterdir())
