"""Shard writing: manifest counts and hashes, size limits, statistics, atomic and resumable writes."""

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from sensorlm.data.shards import (
    MANIFEST,
    PROGRESS,
    ShardError,
    merge_shard_parts,
    sha256_file,
    shard_settings,
    verify_manifest,
    write_shard_part,
    write_shards,
)

# the shared tiny-dataset helpers, loaded by path (pytest runs with --import-mode=importlib)
_spec = importlib.util.spec_from_file_location("pipeline_fixtures", Path(__file__).with_name("pipeline_fixtures.py"))
_fx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_fx)
ACTS = _fx.ACTS
C = _fx.C
T = _fx.T
sst_samples = _fx.sst_samples
wearable_info = _fx.wearable_info
wearable_samples = _fx.wearable_samples
write_sst = _fx.write_sst
write_wearable = _fx.write_wearable


def test_manifest_counts_hashes_and_members(tmp_path):
    m = write_wearable(tmp_path, n=22, max_count=4, val_every=5)
    assert m["num_samples"] == 22
    assert m["splits"]["val"]["num_samples"] == 5 and m["splits"]["train"]["num_samples"] == 17
    assert [s["samples"] for s in m["splits"]["train"]["shards"]] == [4, 4, 4, 4, 1]
    for split, entry in m["splits"].items():
        for i, shard in enumerate(entry["shards"]):
            path = tmp_path / shard["name"]
            assert shard["name"] == f"{split}-{i:06d}.tar"
            assert sha256_file(path) == shard["sha256"] and path.stat().st_size == shard["bytes"]
            with tarfile.open(path) as tar:
                names = tar.getnames()
            assert len(names) == 4 * shard["samples"]
            assert names[:4] == [f"{shard['first_key']}.{x}" for x in ("sensor.npy", "missing.npy", "json", "txt")]
    assert m["sample_shape"] == {"sensor": [T, C], "missing": [T]}
    assert m["activities"] == ACTS and len(m["channels"]) == C
    assert json.loads((tmp_path / MANIFEST).read_text()) == m
    assert not (tmp_path / PROGRESS).exists()
    assert verify_manifest(tmp_path) == m


def test_verify_detects_changed_and_missing_shards(tmp_path):
    write_wearable(tmp_path, n=12, max_count=4)
    p = tmp_path / "train-000001.tar"
    data = bytearray(p.read_bytes())
    data[600] ^= 0xFF
    p.write_bytes(bytes(data))
    (tmp_path / "train-000002.tar").unlink()
    with pytest.raises(ShardError) as e:
        verify_manifest(tmp_path)
    assert "train-000001.tar: sha256 differs" in str(e.value)
    assert "train-000002.tar: missing" in str(e.value)


def test_stats_match_numpy_over_train_present_minutes(tmp_path):
    m = write_wearable(tmp_path, n=20, max_count=8, val_every=4)
    train = [s for s in wearable_samples(20, val_every=4) if s.split == "train"]
    x = np.concatenate([s.arrays["sensor"][s.arrays["missing"] == 0] for s in train]).astype(np.float64)
    st = m["stats"]["sensor"]
    np.testing.assert_allclose(st["mean"], x.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(st["std"], x.std(0, ddof=1), rtol=1e-9)
    assert st["count"] == [len(x)] * C


def test_max_bytes_and_float16(tmp_path):
    # a float16 sample takes 5632 tar bytes (4 members: 512-byte headers, data in 512-byte blocks)
    m = write_wearable(tmp_path, n=7, max_count=100, max_bytes=12_000, dtype="float16")
    counts = [s["samples"] for s in m["splits"]["train"]["shards"]]
    assert counts == [2, 2, 2, 1]
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        arr = np.load(io.BytesIO(tar.extractfile("s0000.sensor.npy").read()), allow_pickle=False)
        flags = np.load(io.BytesIO(tar.extractfile("s0000.missing.npy").read()), allow_pickle=False)
    assert arr.dtype == np.float16 and flags.dtype == np.uint8
    assert m["dtype"] == "float16"


def test_float16_overflow_and_bad_samples_named(tmp_path):
    big = list(wearable_samples(3))
    big[1].arrays["sensor"][0, 0] = 1e6
    with pytest.raises(ShardError, match=r"sample s0001: 'sensor' holds 1e\+06, beyond float16"):
        write_shards(iter(big), tmp_path / "a", wearable_info(), dtype="float16")
    dup = list(wearable_samples(2)) + list(wearable_samples(1))
    with pytest.raises(ShardError, match="duplicate sample key 's0000'"):
        write_shards(iter(dup), tmp_path / "b", wearable_info())
    wrong = list(wearable_samples(2))
    wrong[1].arrays["sensor"] = wrong[1].arrays["sensor"][:, :3]
    with pytest.raises(ShardError, match=r"sample s0001: 'sensor' has shape \(144, 3\), expected \(144, 6\)"):
        write_shards(iter(wrong), tmp_path / "c", wearable_info())
    with pytest.raises(ValueError, match="max_count"):
        write_shards(iter([]), tmp_path / "d", wearable_info(), max_count=0)


class Interrupted(RuntimeError):
    pass


def _interrupt_after(samples, n):
    for i, s in enumerate(samples):
        if i == n:
            raise Interrupted(f"killed after {n} samples")
        yield s


def test_interrupted_run_leaves_no_truncated_shard_and_resumes(tmp_path):
    ref = write_wearable(tmp_path / "ref", n=26, max_count=4, val_every=6)

    out = tmp_path / "out"
    out.mkdir()
    (out / ".train-000009.tar.tmp").write_bytes(b"stale half shard")  # from an earlier crash
    with pytest.raises(Interrupted):
        write_shards(_interrupt_after(wearable_samples(26, val_every=6), 15), out, wearable_info(), max_count=4,
                     activities=ACTS, extra={"tokenizer": "tokenizer.json"})
    assert not (out / MANIFEST).exists()
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))
    progress = json.loads((out / PROGRESS).read_text())
    done = {s["name"]: s for e in progress["splits"].values() for s in e["shards"]}
    # every file under a final name is complete: recorded with its hash, readable to the end
    finals = sorted(p.name for p in out.glob("*.tar"))
    assert finals == sorted(done) and len(finals) >= 2
    for name in finals:
        assert sha256_file(out / name) == done[name]["sha256"]
        with tarfile.open(out / name) as tar:
            assert len(tar.getnames()) == 4 * done[name]["samples"]
    kept = {name: (out / name).stat().st_mtime_ns for name in finals}

    logs = []
    m = write_shards(wearable_samples(26, val_every=6), out, wearable_info(), max_count=4, activities=ACTS,
                     extra={"tokenizer": "tokenizer.json"}, log=logs.append)
    assert any("resume: keeping" in line for line in logs)
    # completed shards were kept as they were, and the result equals an uninterrupted run
    assert all((out / n).stat().st_mtime_ns == t for n, t in kept.items())
    for split in ("train", "val"):
        assert [s["sha256"] for s in m["splits"][split]["shards"]] == [
            s["sha256"] for s in ref["splits"][split]["shards"]
        ]
    assert m["stats"] == ref["stats"] and m["num_samples"] == 26
    verify_manifest(out)


def test_resume_rewrites_a_damaged_shard_and_refuses_other_settings(tmp_path):
    m1 = write_wearable(tmp_path, n=12, max_count=4)
    (tmp_path / "train-000001.tar").write_bytes(b"damaged")
    m2 = write_wearable(tmp_path, n=12, max_count=4)
    assert [s["sha256"] for s in m2["splits"]["train"]["shards"]] == [
        s["sha256"] for s in m1["splits"]["train"]["shards"]
    ]
    verify_manifest(tmp_path)
    with pytest.raises(ShardError, match="other inputs or settings"):
        write_wearable(tmp_path, n=12, max_count=3)
    # changed input under the same settings is detected by key, not silently mixed
    changed = (s for s in wearable_samples(12) if s.key != "s0000")
    with pytest.raises(ShardError, match="input changed since the interrupted run"):
        write_shards(changed, tmp_path, wearable_info(), max_count=4, activities=ACTS,
                     extra={"tokenizer": "tokenizer.json"})


def test_sst_manifest_has_degc_stats(tmp_path):
    m = write_sst(tmp_path, n=6, max_count=4)
    obs = np.concatenate([s.arrays["daily"][s.arrays["mask"] == 0] for s in sst_samples(6)]).astype(np.float64)
    assert m["sst_mean"] == pytest.approx(obs.mean()) and m["sst_std"] == pytest.approx(obs.std(ddof=1))
    assert m["stats"]["sst"]["unit"] == "degC"
    assert m["sample_shape"]["daily"] == [64, 8, 8]
    with tarfile.open(tmp_path / "train-000000.tar") as tar:
        assert sorted(n.split(".", 1)[1] for n in tar.getnames()[:8]) == sorted(
            ["daily.npy", "mask.npy", "padded_days.npy", "holdout.npy", "target.npy", "land.npy", "clim.npy", "json"]
        )


def test_manifest_names_and_field_types_are_checked(tmp_path):
    from sensorlm.data.shards import ShardError, parse_manifest

    good = {"schema_version": 1, "kind": "wearable", "sample_shape": {"sensor": [144, 34]}, "stats": {},
            "splits": {"train": {"num_samples": 1, "shards": [{"name": "train-000000.tar", "samples": 1}]}},
            "activities": ["walking"], "prompt_template": "A day with {label}."}
    assert parse_manifest(json.dumps(good))["kind"] == "wearable"

    def refused(edit, message):
        bad = json.loads(json.dumps(good))
        edit(bad)
        with pytest.raises(ShardError, match=message):
            parse_manifest(json.dumps(bad), "ds/manifest.json")

    # "$" would have let a trailing newline through into a path or a pipe: command
    refused(lambda m: m["splits"]["train"]["shards"][0].update(name="train-000000.tar\n"), "is not a plain file name")
    refused(lambda m: m.update(tokenizer="tok.json\n"), "tokenizer = 'tok.json\\\\n' is not a plain file name")
    refused(lambda m: m["splits"]["train"].update(num_samples="1"), r"splits.train.num_samples must be a count, got '1'")
    refused(lambda m: m["sample_shape"].update(sensor=[144, "34"]), r"sample_shape.sensor must be a list of positive")
    refused(lambda m: m["splits"]["train"]["shards"][0].update(samples=-1), r"shards\[0\].samples must be a count")
    refused(lambda m: m.update(splits=[]), "splits must be an object")
    refused(lambda m: m.update(activities="walking"), "activities must be a list of label strings")
    refused(lambda m: m.update(prompt_template="{label.__class__}"), r"prompt_template .*unknown placeholder")


def test_tar_files_reads_what_tarfile_reads_and_refuses_damage(tmp_path):
    """The shard reader `sensorlm embed` uses: the same members as `tarfile`, and a one-line
    ShardError for a bad checksum, a truncated member, a link, or a file too short to be a tar."""
    from sensorlm.data.shards import ShardError, tar_files

    path = tmp_path / "s.tar"
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, payload in (("a.sensor.npy", b"x" * 700), ("a.json", b"{}"), ("dir/b.txt", b"hello")):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
        info = tarfile.TarInfo("sub")
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        expected = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    assert [(n, bytes(v)) for n, v in tar_files(data, "s.tar")] == expected

    damaged = bytearray(data)
    damaged[10] ^= 0x01  # a byte of the first member's name: its header checksum no longer holds
    with pytest.raises(ShardError, match=r"s.tar: tar header at byte 0 fails its checksum"):
        tar_files(bytes(damaged), "s.tar")
    with pytest.raises(ShardError, match=r"s.tar: truncated: member at byte 0 needs 700 bytes"):
        tar_files(data[:1100], "s.tar")
    with pytest.raises(ShardError, match=r"s.tar: 100 bytes, not a tar archive"):
        tar_files(data[:100], "s.tar")
    link = tmp_path / "l.tar"
    with tarfile.open(link, "w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("x")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(ShardError, match=r"tar member kind '2' at byte 0 \(not a plain file\)"):
        tar_files(link.read_bytes(), "l.tar")


def test_parts_written_apart_merge_into_one_dataset(tmp_path):
    """Parallel writers (`sensorlm import`): each part writes its own shards; the merge numbers
    them per split in part order and its statistics equal one writer's to float rounding."""
    whole = write_wearable(tmp_path / "whole", n=30, max_count=4, val_every=5)
    out = tmp_path / "parts"
    out.mkdir()
    settings = shard_settings(wearable_info(), 4, 1 << 20, "float32")
    samples = list(wearable_samples(30, val_every=5))
    parts = [write_shard_part(iter(samples[a:b]), out, wearable_info(), settings, f"part{k:05d}")
             for k, (a, b) in enumerate([(0, 13), (13, 30)])]
    assert {p.name for p in out.glob("*.tar")} >= {"part00000-train-000000.tar", "part00001-val-000000.tar"}
    merged = merge_shard_parts(parts, out, wearable_info(), settings, activities=ACTS, extra={"text_len": 16})
    assert sorted(p.name for p in out.glob("*.tar")) == sorted(
        sh["name"] for entry in merged["splits"].values() for sh in entry["shards"])
    assert [sh["name"] for sh in merged["splits"]["train"]["shards"]] == [f"train-{i:06d}.tar" for i in range(7)]
    # a shard never spans parts: part 0's 10 training samples end in a shard of 2, part 1 has 14
    assert [sh["samples"] for sh in merged["splits"]["train"]["shards"]] == [4, 4, 2, 4, 4, 4, 2]
    assert merged["num_samples"] == whole["num_samples"] == 30 and merged["activities"] == whole["activities"]
    for key in ("mean", "std"):
        np.testing.assert_allclose(merged["stats"]["sensor"][key], whole["stats"]["sensor"][key], rtol=1e-12)
    assert merged["stats"]["sensor"]["count"] == whole["stats"]["sensor"]["count"]
    assert verify_manifest(out) == merged


def test_a_failed_part_leaves_no_shard_and_a_key_in_two_parts_is_refused(tmp_path):
    settings = shard_settings(wearable_info(), 4, 1 << 20, "float32")
    samples = list(wearable_samples(12))
    with pytest.raises(Interrupted):
        write_shard_part(_interrupt_after(iter(samples), 9), tmp_path, wearable_info(), settings, "part00000")
    assert not list(tmp_path.iterdir())
    parts = [write_shard_part(iter(samples[a:b]), tmp_path, wearable_info(), settings, f"part{k:05d}")
             for k, (a, b) in enumerate([(0, 6), (5, 12)])]
    with pytest.raises(ShardError, match="duplicate sample key 's0005'"):
        merge_shard_parts(parts, tmp_path, wearable_info(), settings)
    assert not (tmp_path / MANIFEST).exists()
