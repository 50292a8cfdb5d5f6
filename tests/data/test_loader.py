"""Streaming loader: batches, node/worker split, determinism, URLs, and bad data never silent."""

import importlib.util
import io
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from sensorlm.data.augment import Augment
from sensorlm.data.loader import DataError, LoaderSpec, SkipReport, make_loader
from sensorlm.data.shards import MANIFEST, encode_npy, encode_sample, load_manifest
from sensorlm.data.tokenizer import load_tokenizer

# the shared tiny-dataset helpers, loaded by path (pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location("pipeline_fixtures", Path(__file__).with_name("pipeline_fixtures.py"))
_fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fx)
ACTS = _fx.ACTS
C = _fx.C
T = _fx.T
sst_samples = _fx.sst_samples
wearable_samples = _fx.wearable_samples
write_sst = _fx.write_sst
write_wearable = _fx.write_wearable


@pytest.fixture(scope="module")
def wearable_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("wearable")
    write_wearable(d, n=32, max_count=4, val_every=0)  # 8 train shards of 4
    return d


def _keys(loader):
    return [k for batch in loader for k in batch["key"]]


def test_wearable_batch_contents_and_normalisation(wearable_dir):
    loader = make_loader(wearable_dir, "train", 5, num_workers=0, shuffle=False)
    batch = next(iter(loader))
    assert batch["sensor"].shape == (5, T, C) and batch["sensor"].dtype == torch.float32
    assert batch["missing"].shape == (5, T) and batch["missing"].dtype == torch.bool
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (5, 16)  # manifest text_len
    assert batch["input_ids"].dtype == batch["attention_mask"].dtype == torch.int64
    assert batch["label"].dtype == torch.int64 and batch["skipped"]["total"] == 0
    # shuffle=False: file order, so the first batch is s0000..s0004
    assert batch["key"] == [f"s{i:04d}" for i in range(5)]
    raw = {s.key: s for s in wearable_samples(5)}
    st = load_manifest(wearable_dir)["stats"]["sensor"]
    for i, key in enumerate(batch["key"]):
        s = raw[key]
        want = (s.arrays["sensor"] - np.float32(st["mean"])) / np.float32(st["std"])
        want[s.arrays["missing"] == 1] = 0
        np.testing.assert_allclose(batch["sensor"][i].numpy(), want, rtol=1e-5, atol=1e-5)
        assert batch["missing"][i].numpy().tolist() == (s.arrays["missing"] == 1).tolist()
        assert batch["label"][i].item() == ACTS.index(s.meta["primary_activity"])
        ids, mask = load_tokenizer(wearable_dir).encode(s.text, 16)
        assert batch["input_ids"][i].tolist() == ids[0].tolist()
        assert batch["attention_mask"][i].tolist() == mask[0].tolist()
    assert batch["caption"][0] == raw["s0000"].text


def test_every_sample_exactly_once_across_2_nodes_x_2_workers(wearable_dir):
    per_rank = []
    for rank in range(2):
        loader = make_loader(wearable_dir, "train", 3, rank=rank, world_size=2, num_workers=2, seed=7,
                             equalize=False)
        per_rank.append(_keys(loader))
    everything = per_rank[0] + per_rank[1]
    assert len(everything) == 32 and set(everything) == {f"s{i:04d}" for i in range(32)}
    assert not set(per_rank[0]) & set(per_rank[1])
    assert len(per_rank[0]) == len(per_rank[1]) == 16  # 4 shards of 4 per rank


def test_same_seed_and_epoch_same_order(wearable_dir):
    def order(seed, epoch):
        loader = make_loader(wearable_dir, "train", 4, num_workers=2, seed=seed, epoch=epoch)
        return _keys(loader)

    a = order(1, 0)
    assert a == order(1, 0)
    assert sorted(a) == sorted(order(1, 1)) and a != order(1, 1)
    assert a != order(2, 0)
    # set_epoch on one loader gives what a loader built at that epoch gives
    loader = make_loader(wearable_dir, "train", 4, num_workers=2, seed=1)
    loader.set_epoch(1)
    assert _keys(loader) == order(1, 1)


@pytest.mark.parametrize("workers", [0, 2])
def test_equalized_ranks_take_the_same_number_of_batches(tmp_path, workers):
    write_wearable(tmp_path, n=10, max_count=4)  # shards of 4, 4, 2: ranks get 2 and 1 shards
    def loaders(**kw):
        return [make_loader(tmp_path, "train", 3, rank=r, world_size=2, num_workers=workers, seed=0, **kw)
                for r in range(2)]

    free = [sum(1 for _ in ld) for ld in loaders(equalize=False)]
    # every rank predicts every rank's count, also where the ranks run different worker counts
    assert loaders()[0].batches_per_rank() == loaders()[1].batches_per_rank() == free
    equal = [sum(1 for _ in ld) for ld in loaders()]
    assert equal[0] == equal[1] == min(free) == len(loaders()[1])


def test_resampled_step_based(wearable_dir):
    def run():
        loader = make_loader(wearable_dir, "train", 4, num_workers=2, resampled=True, batches_per_epoch=12, seed=3)
        return _keys(loader)

    keys = run()
    assert len(keys) == 48  # more than one pass over 32 samples: resampling does not stop
    assert keys == run()


def test_resampled_ranks_draw_from_disjoint_shards(wearable_dir):
    """Step-based training resamples forever; each rank still reads only its own share of shards."""
    names = [s["name"] for s in load_manifest(wearable_dir)["splits"]["train"]["shards"]]
    read = []
    for rank in range(2):
        loader = make_loader(wearable_dir, "train", 4, rank=rank, world_size=2, num_workers=2, seed=5,
                             resampled=True, batches_per_epoch=16)
        batches = list(loader)
        # batch["shard"] names each sample's shard; the keys confirm it (4 samples per shard, in order)
        for batch in batches:
            for key, shard in zip(batch["key"], batch["shard"]):
                assert names.index(shard) == int(key[1:]) // 4, (key, shard)
        read.append({shard for batch in batches for shard in batch["shard"]})
    assert read[0] and read[1] and not read[0] & read[1]
    assert read[0] | read[1] <= set(names) and len(read[0] | read[1]) > len(names) // 2


def test_resampled_with_fewer_shards_than_ranks_draws_from_all(tmp_path):
    write_wearable(tmp_path, n=8, max_count=4, val_every=0)  # 2 shards, 3 ranks: nobody may starve
    for rank in range(3):
        loader = make_loader(tmp_path, "train", 2, rank=rank, world_size=3, num_workers=0, seed=1,
                             resampled=True, batches_per_epoch=12)
        assert {shard for batch in loader for shard in batch["shard"]} == {"train-000000.tar", "train-000001.tar"}


def test_sst_batch(tmp_path):
    m = write_sst(tmp_path, n=5, max_count=2)
    batch = next(iter(make_loader(tmp_path, "train", 5, num_workers=0, shuffle=False)))
    assert batch["daily"].shape == batch["mask"].shape == (5, 64, 8, 8)
    assert batch["daily"].dtype == batch["mask"].dtype == torch.float32
    assert batch["padded_days"].shape == (5, 64) and batch["padded_days"].dtype == torch.bool
    assert batch["land"].shape == batch["holdout"].shape == (5, 8, 8) and batch["land"].dtype == torch.bool
    assert batch["target"].shape == batch["clim"].shape == (5, 8, 8)
    assert batch["month"].tolist() == [1, 2, 3, 4, 5]
    raw = list(sst_samples(5))
    target = batch["target"].numpy() * m["sst_std"] + m["sst_mean"]  # back to degC
    for i, s in enumerate(raw):
        ocean = s.arrays["land"] == 0
        np.testing.assert_allclose(target[i][ocean], s.arrays["target"][ocean], rtol=1e-5, atol=1e-4)
        assert (batch["target"][i].numpy()[~ocean] == 0).all()
        assert (batch["daily"][i].numpy()[s.arrays["mask"] == 1] == 0).all()
        assert batch["mask"][i].numpy().tolist() == s.arrays["mask"].astype(np.float32).tolist()


def test_pipe_and_fsspec_sources(wearable_dir):
    want = _keys(make_loader(wearable_dir, "train", 8, num_workers=0, shuffle=False))
    piped = make_loader(f"pipe:cat {wearable_dir}/{{name}}", "train", 8, num_workers=2, shuffle=False)
    assert sorted(_keys(piped)) == sorted(want)
    assert _keys(make_loader(f"file://{wearable_dir}", "train", 8, num_workers=0, shuffle=False)) == want

    import fsspec

    fs = fsspec.filesystem("memory")
    for p in wearable_dir.iterdir():
        fs.pipe(f"/ds/{p.name}", p.read_bytes())
    assert _keys(make_loader("memory://ds", "train", 8, num_workers=0, shuffle=False)) == want
    with pytest.raises(ValueError, match=r"needs a \{name\} placeholder"):
        make_loader(f"pipe:cat {wearable_dir}", "train", 8)
    with pytest.raises(FileNotFoundError, match="manifest.json: not found"):
        make_loader(wearable_dir / "nowhere", "train", 8)


def test_bad_arguments_named(wearable_dir):
    with pytest.raises(ValueError, match="no split 'test'"):
        make_loader(wearable_dir, "test", 4)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        make_loader(wearable_dir, "train", 0)
    with pytest.raises(ValueError, match="rank 2 must be < world_size 2"):
        make_loader(wearable_dir, "train", 4, rank=2, world_size=2)
    with pytest.raises(ValueError, match="make_loader: unknown option 'worldsize'"):
        make_loader(wearable_dir, "train", 4, worldsize=2)
    with pytest.raises(ValueError, match="shard part must be one of"):
        LoaderSpec(shard_part="third")


def test_a_spec_and_options_on_top_of_it(wearable_dir):
    """`LoaderSpec` carries the options whole; keyword options and the batch size apply on top."""
    spec = LoaderSpec(batch_size=3, rank=1, world_size=2, shuffle=False, num_workers=0)
    loader = make_loader(wearable_dir, "train", spec=spec, text_len=8)
    assert loader.spec == LoaderSpec(batch_size=3, rank=1, world_size=2, shuffle=False, num_workers=0, text_len=8)
    assert (loader.batch_size, loader.rank, loader.world_size) == (3, 1, 2)
    batch = next(iter(loader))
    assert batch["input_ids"].shape == (3, 8)
    assert make_loader(wearable_dir, "train", 5, spec).batch_size == 5 and spec.batch_size == 3


@pytest.mark.parametrize("num_workers", [0, 2])
def test_fewer_shards_than_ranks_splits_samples(tmp_path, num_workers):
    """One validation shard (or two), three ranks: every rank gets a disjoint share, together all,
    and `len` says what each rank yields (validation used to fail here)."""
    d = tmp_path / "ds"
    write_wearable(d, n=20, max_count=12, val_every=2)  # val: 10 samples in 1 shard
    world = 3
    per_rank, lens = [], []
    for rank in range(world):
        loader = make_loader(d, "val", 2, rank=rank, world_size=world, shuffle=False, num_workers=num_workers,
                             equalize=False)
        per_rank.append(_keys(loader))
        lens.append(len(loader))
    flat = [k for keys in per_rank for k in keys]
    assert len(flat) == len(set(flat)) == 10
    assert sorted(len(k) for k in per_rank) == [3, 3, 4]
    assert lens == [2, 2, 2]  # 4, 3 and 3 samples in batches of 2


def test_split_samples_balances_uneven_shards(tmp_path):
    """Shards of 8 and 2 samples on 2 ranks: by shard one rank gets 8 and the other 2; by sample
    (what training validation asks for) 5 each."""
    d = tmp_path / "ds"
    write_wearable(d, n=10, max_count=8)
    by_shard = [_keys(make_loader(d, "train", 4, rank=r, world_size=2, shuffle=False, num_workers=0,
                                  equalize=False)) for r in range(2)]
    by_sample = [_keys(make_loader(d, "train", 4, rank=r, world_size=2, shuffle=False, num_workers=0,
                                   split_samples=True)) for r in range(2)]
    assert sorted(map(len, by_shard)) == [2, 8]
    assert list(map(len, by_sample)) == [5, 5] and not set(by_sample[0]) & set(by_sample[1])
    assert by_sample[0] + by_sample[1] == [f"s{i:04d}" for i in range(10)]  # contiguous spans, in order


def test_validation_split_by_sample_opens_only_each_ranks_shards(tmp_path):
    """Issue 26: a rank reads the shards its span of the split overlaps, not all of them; the
    ranks' batches together are one process's batches when a span holds whole batches."""
    from sensorlm.data.loader import sample_spans

    d = tmp_path / "ds"
    write_wearable(d, n=48, max_count=6)  # 8 shards of 6
    assert sample_spans([6] * 8, 0, 2) == [(0, 0, 6), (1, 0, 6), (2, 0, 6), (3, 0, 6)]
    assert sample_spans([8, 2], 1, 2) == [(0, 5, 8), (1, 0, 2)]
    assert sample_spans([3], 2, 3) == [(0, 2, 3)]
    opened, in_order = [], {}
    for world in (1, 2, 4):
        for workers in (0, 2):
            per_rank = []
            for r in range(world):
                loader = make_loader(d, "train", 4, rank=r, world_size=world, shuffle=False, num_workers=workers,
                                     split_samples=True)
                batches = list(loader)
                assert len(batches) == loader.batches_per_rank()[r]
                per_rank.append([b["key"] for b in batches])
                opened.append((world, r, loader._source.rank_urls()))
            assert sorted(k for rank in per_rank for batch in rank for k in batch) == [f"s{i:04d}" for i in range(48)]
            if workers == 0:
                in_order[world] = [batch for rank in per_rank for batch in rank]
    assert in_order[1] == in_order[2] == in_order[4]  # the same batches as one process
    assert {len(urls) for world, _, urls in opened if world == 2} == {4}  # half the 8 shards each
    assert {len(urls) for world, _, urls in opened if world == 4} == {2}


def test_unlabelled_samples_get_label_minus_one(tmp_path):
    d = tmp_path / "ds"
    samples = list(wearable_samples(8))
    for s in samples[:3]:
        s.meta["primary_activity"] = ""
    samples[3].meta["primary_activity"] = "unknown_sport"
    _fx.write_wearable_samples(d, samples)
    loader = make_loader(d, "train", 8, shuffle=False, num_workers=0)
    batch = next(iter(loader))
    assert batch["label"][:3].tolist() == [-1, -1, -1]
    # a label the listed ones lack is appended to the manifest's labels, not dropped
    assert loader.manifest["activities"] == ACTS + ["unknown_sport"]
    assert batch["label"][3:].tolist() == [4] + [ACTS.index(s.meta["primary_activity"]) for s in samples[4:]]
    assert loader.report.total == 0


def test_caption_mix_draws_stored_levels(tmp_path):
    from sensorlm.data.captioner import compose

    d = tmp_path / "ds"
    samples = list(wearable_samples(16))
    levels = {"low": "LOW numbers.", "middle": "MIDDLE shapes.", "high_summary": "HIGH label.",
              "high_all": "HIGH label. More."}
    for s in samples:
        s.meta["captions"] = levels
    _fx.write_wearable_samples(d, samples)
    mixed = make_loader(d, "train", 16, shuffle=False, num_workers=0, seed=3,
                        augment=Augment({"low": 1, "high_summary": 1, "all": 2}))
    got = next(iter(mixed))["caption"]
    allowed = {compose(levels, k).lower() for k in ("low", "high_summary", "all")}
    assert set(c.lower() for c in got) <= allowed and len(set(got)) == 3
    plain = next(iter(make_loader(d, "train", 16, shuffle=False, num_workers=0)))["caption"]
    assert plain == [s.text for s in samples]  # no mix: the full caption as written
    again = next(iter(make_loader(d, "train", 16, shuffle=False, num_workers=0, seed=3,
                                  augment=Augment({"low": 1, "high_summary": 1, "all": 2}))))["caption"]
    assert again == got  # same seed, same draws


def test_crops_in_time_and_channel_dropout_change_training_windows_only(tmp_path):
    d = tmp_path / "ds"
    samples = list(wearable_samples(32))
    for s in samples:
        s.arrays["missing"][:] = 0  # every step observed: what is missing below is the crop's
    _fx.write_wearable_samples(d, samples)
    plain = next(iter(make_loader(d, "train", 32, shuffle=False, num_workers=0)))
    aug = Augment(crop_min_fraction=0.5, channel_dropout=0.3)
    batch = next(iter(make_loader(d, "train", 32, shuffle=False, num_workers=0, seed=5, augment=aug)))
    t, c = batch["sensor"].shape[1:]
    kept = (~batch["missing"]).sum(dim=1)
    assert kept.min() >= t // 2 and kept.max() <= t and (kept < t).any()
    for i in range(32):
        observed = torch.nonzero(~batch["missing"][i]).flatten()
        assert (observed.diff() == 1).all()  # one contiguous span
        assert (batch["sensor"][i][batch["missing"][i]] == 0).all()
        span = batch["sensor"][i][observed]
        dropped = (span == 0).all(dim=0)
        assert dropped.sum() < c  # never every channel
        same = torch.isclose(span[:, ~dropped], plain["sensor"][i][observed][:, ~dropped])
        assert same.all()  # the rest is the stored window
    assert 0.1 < float(((batch["sensor"] == 0).all(dim=1)).float().mean()) < 0.5  # about 30% of channels
    again = next(iter(make_loader(d, "train", 32, shuffle=False, num_workers=0, seed=5, augment=aug)))
    assert torch.equal(again["sensor"], batch["sensor"]) and torch.equal(again["missing"], batch["missing"])
    with pytest.raises(ValueError, match=r"crop_min_fraction must lie in \(0, 1\], got 0"):
        Augment(crop_min_fraction=0)
    with pytest.raises(ValueError, match=r"channel_dropout must lie in \[0, 1\), got 1"):
        Augment(channel_dropout=1)


def test_a_crop_never_leaves_a_window_without_data():
    import random

    x = np.ones((10, 2), np.float32)
    missing = np.ones(10, bool)
    missing[0] = False  # one observed step, at the start
    aug = Augment(crop_min_fraction=0.1)
    for seed in range(50):
        m, a = missing.copy(), x.copy()
        aug.sensor(a, m, random.Random(seed))
        assert not m.all() and a[0].tolist() == [1.0, 1.0]


# ------------------------------------------------------------------------------------------- bad data


class _WritesMarker:
    """Unpickling this object would create a file: proof of code execution if it ever appears."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _tar(path, members):
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _npy(arr):
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=arr.dtype.hasobject)
    return buf.getvalue()


def _members(sample, **replace):
    out = []
    for name, data in encode_sample(sample):
        ext = name.split(".", 1)[1]
        if ext in replace:
            if replace[ext] is None:
                continue
            data = replace[ext]
        out.append((name, data))
    return out


@pytest.fixture
def bad_dir(tmp_path):
    """4 good shards (s0000..s0015) + one shard of bad samples + a truncated and a non-tar shard."""
    d = tmp_path / "bad"
    write_wearable(d, n=16, max_count=4)
    marker = tmp_path / "PWNED"
    extra = list(wearable_samples(24))[16:]
    good = extra[0]
    nan = extra[1].arrays["sensor"].copy()
    nan[3, 2] = np.nan
    evil = np.empty(1, dtype=object)
    evil[0] = _WritesMarker(marker)
    bad_members = (
        _members(extra[1], **{"sensor.npy": _npy(nan)})  # NaN
        + _members(extra[2], **{"sensor.npy": encode_npy(np.zeros((T, C + 1), np.float32))})  # wrong shape
        + _members(extra[3], **{"sensor.npy": encode_npy(np.zeros((T, C), np.float64))})  # wrong dtype
        + _members(extra[4], txt=None)  # missing caption
        + _members(extra[5], **{"sensor.npy": _npy(evil)})  # pickle payload inside .npy
        + _members(extra[6]) + [(f"{extra[6].key}.pickle", pickle.dumps(_WritesMarker(marker)))]  # extra member
        + _members(good)
    )
    _tar(d / "train-000004.tar", bad_members)
    whole = (d / "train-000001.tar").read_bytes()
    (d / "train-000005.tar").write_bytes(whole[: len(whole) // 2 + 100])  # truncated copy of shard 1
    (d / "train-000006.tar").write_bytes(b"this is not a tar file at all" * 20)
    m = json.loads((d / MANIFEST).read_text())
    shards = m["splits"]["train"]["shards"]
    for i, n in ((4, 7), (5, 4), (6, 1)):
        shards.append({"name": f"train-{i:06d}.tar", "samples": n, "bytes": 0, "sha256": "", "first_key": "",
                       "last_key": ""})
    (d / MANIFEST).write_text(json.dumps(m))
    # the truncated shard repeats keys s0004.. under another shard name: the loader reads by shard
    return d, marker, good.key


@pytest.mark.parametrize("num_workers", [0, 2])
def test_bad_data_skipped_and_counted_with_shard_and_key(bad_dir, num_workers):
    d, marker, good_key = bad_dir
    loader = make_loader(d, "train", 4, num_workers=num_workers, shuffle=False)
    keys = _keys(loader)
    assert not marker.exists(), "a pickle payload was executed"
    good = {f"s{i:04d}" for i in range(16)} | {good_key}
    assert good <= set(keys)
    # only samples of the truncated copy (same keys as shard 1) may repeat; nothing bad got through
    assert set(keys) == good
    counts = loader.report.counts
    assert counts["non_finite"] == 1 and counts["wrong_shape"] == 1 and counts["wrong_dtype"] == 1
    assert counts["missing_caption"] == 1 and counts["bad_npy"] == 1 and counts["unexpected_member"] == 1
    assert counts["corrupt_shard"] == 2  # truncated + not a tar, each counted once
    by_reason = {}
    for ev in loader.report.events:
        by_reason.setdefault(ev["reason"], []).append(ev)
    assert by_reason["non_finite"][0]["key"] == "s0017"
    assert by_reason["non_finite"][0]["shard"].endswith("train-000004.tar")
    assert by_reason["bad_npy"][0]["key"] == "s0021" and "allow_pickle" in by_reason["bad_npy"][0]["detail"]
    assert by_reason["unexpected_member"][0]["key"] == "s0022"
    assert {ev["shard"].rsplit("/", 1)[-1] for ev in by_reason["corrupt_shard"]} == {
        "train-000005.tar", "train-000006.tar"}
    metrics = loader.report.as_metrics()
    assert metrics["data/skipped_total"] == loader.report.total >= 8
    assert metrics["data/skipped/corrupt_shard"] == 2
    assert "s0017" in loader.report.summary()


def test_skip_report_sums_batch_records():
    report = SkipReport()
    report.update({"skipped": {"total": 2, "non_finite": 2, "events": [{"reason": "non_finite", "shard": "a",
                                                                         "key": "k", "detail": ""}]}})
    report.update({"skipped": {"total": 1, "corrupt_shard": 1, "events": []}})
    report.update({"key": ["x"]})  # a batch without a record
    assert report.total == 3 and report.as_metrics()["data/skipped/non_finite"] == 2


@pytest.mark.parametrize(
    "shard,match,workers",
    [
        # in a worker process: the error crosses into the trainer's process with its message
        ("train-000004.tar", r"train-000004.tar: sample s0017: non_finite", 1),
        ("train-000006.tar", r"train-000006.tar: corrupt or unreadable shard", 0),
        ("train-000005.tar", r"train-000005.tar: (corrupt or unreadable shard|sample s0007: missing_member)", 0),
    ],
)
def test_strict_raises_naming_shard_and_key(bad_dir, shard, match, workers):
    d, marker, _ = bad_dir
    m = json.loads((d / MANIFEST).read_text())
    m["splits"]["train"]["shards"] = [s for s in m["splits"]["train"]["shards"] if s["name"] == shard]
    with pytest.raises(Exception, match=match) as e:
        _keys(make_loader(d, "train", 4, num_workers=workers, strict=True, shuffle=False, manifest=m))
    assert isinstance(e.value, DataError)  # re-raised in the main process with the worker's message
    assert "\n" not in str(e.value) and "BufferedReader" not in str(e.value)  # one line, no tuple repr
    assert not marker.exists()


def test_strict_pickle_payload_raises_without_executing(bad_dir):
    d, marker, _ = bad_dir
    m = json.loads((d / MANIFEST).read_text())
    tar = d / "train-000004.tar"
    with tarfile.open(tar) as t:
        members = [(n, t.extractfile(n).read()) for n in t.getnames() if n.startswith("s0021.")]
    _tar(tar, members)
    m["splits"]["train"]["shards"] = [s for s in m["splits"]["train"]["shards"] if s["name"] == tar.name]
    with pytest.raises(DataError, match=r"train-000004.tar: sample s0021: bad_npy: sensor.npy: .*allow_pickle"):
        _keys(make_loader(d, "train", 4, num_workers=0, strict=True, manifest=m))
    assert not marker.exists()


@pytest.mark.parametrize("bad", ["../outside.tar", "/etc/passwd", "x.tar;rm -rf ~", "a/../../b.tar", "..", ".hidden"])
def test_manifest_names_are_plain_file_names(tmp_path, bad):
    """A shard or tokenizer name from a manifest is a path and, with a pipe: source, part of a shell
    command: anything but a plain file name is one line naming the manifest field, and nothing
    outside the dataset is opened."""
    from sensorlm.data.shards import ShardError, parse_manifest

    d = tmp_path / "ds"
    write_wearable(d, n=8, max_count=4)
    m = json.loads((d / MANIFEST).read_text())
    m["splits"]["train"]["shards"][1]["name"] = bad
    with pytest.raises(ShardError, match=r"splits.train.shards\[1\].name = .* is not a plain file name") as e:
        parse_manifest(json.dumps(m), "ds/manifest.json")
    assert "\n" not in str(e.value)
    m = json.loads((d / MANIFEST).read_text())
    m["tokenizer"] = bad
    with pytest.raises(ShardError, match=r"ds/manifest.json: tokenizer = .* is not a plain file name"):
        parse_manifest(json.dumps(m), "ds/manifest.json")
    (d / MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ShardError, match="tokenizer"):
        make_loader(d, "train", 4)
    marker = tmp_path / "pwned"
    with pytest.raises(DataError, match="is not a plain file name"):
        from sensorlm.data.loader import DatasetLocation

        DatasetLocation(f"pipe:cat {d}/{{name}}").url(f"x.tar; touch {marker}")
    assert not marker.exists()


def test_pipe_template_quotes_names(tmp_path):
    from sensorlm.data.loader import DatasetLocation

    assert DatasetLocation("pipe:cat /data/{name}").url("train-000000.tar") == "pipe:cat /data/train-000000.tar"


@pytest.mark.parametrize("arr", [np.arange(144 * 34, dtype=np.float32).reshape(144, 34), np.arange(6, dtype=np.uint8),
                                 np.asfortranarray(np.arange(12.0).reshape(3, 4)), np.ones((2, 3, 4), np.float16),
                                 np.array(5.0)], ids=["float32", "uint8", "fortran", "float16", "scalar"])
def test_npy_members_decode_like_numpy_and_are_writable(arr):
    from sensorlm.data.loader import _load_npy

    buf = io.BytesIO()
    np.save(buf, arr)
    for version in (None, (2, 0)):
        data = buf.getvalue()
        if version is not None:
            out = io.BytesIO()
            np.lib.format.write_array(out, arr, version=version)
            data = out.getvalue()
        for _ in range(2):  # the second read takes the cached header
            got = _load_npy(data)
            assert got.dtype == arr.dtype and got.shape == arr.shape and np.array_equal(got, arr)
            got[...] = 0  # a copy of its own, never a view of the shard


def test_npy_members_refuse_objects_and_truncation():
    from sensorlm.data.loader import _load_npy

    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="allow_pickle=False"):
        _load_npy(buf.getvalue())
    buf = io.BytesIO()
    np.save(buf, np.zeros(10, np.float32))
    with pytest.raises(ValueError, match=r"truncated .npy: 36 data bytes for shape \(10,\) float32"):
        _load_npy(buf.getvalue()[:-4])
    with pytest.raises(ValueError, match="bad magic"):
        _load_npy(b"PK\x03\x04" + bytes(100))
