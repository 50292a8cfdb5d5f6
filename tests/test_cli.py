"""The `sensorlm` command and jobs/prepare_data.py: generate -> Parquet -> shards, and bad input."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sensorlm.cli import COMMANDS, main
from sensorlm.data.loader import make_loader
from sensorlm.data.schema import schema_for
from sensorlm.data.shards import verify_manifest

REPO = Path(__file__).resolve().parents[1]


def test_prepare_wearable_tiny_then_load(tmp_path):
    out = tmp_path / "w"
    assert main(["prepare-data", "wearable", "--preset", "tiny", "--out", str(out), "--quiet", "--verify"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "wearable" and m["generator"] == {"preset": "tiny", "seed": 0, "synthetic": True}
    assert m["sample_shape"]["sensor"] == [144, 34] and len(m["channels"]) == 34
    assert m["text_len"] == 48 and m["tokenizer"] == "tokenizer.json" and 4 < m["vocab_size"] <= 1024
    assert (out / "tokenizer.json").is_file() and (out / "parquet" / "wearable-tiny-seed0.parquet").is_file()
    assert len(m["splits"]["val"]["shards"]) >= 2  # enough for 2 ranks
    batch = next(iter(make_loader(out, "val", 4, num_workers=0)))
    assert batch["sensor"].shape == (4, 144, 34) and batch["input_ids"].shape == (4, 48)
    # rerun: everything is kept (resume path), the manifest describes the same shards
    shards = {s["name"]: s["sha256"] for e in m["splits"].values() for s in e["shards"]}
    assert main(["prepare-data", "wearable", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    m2 = json.loads((out / "manifest.json").read_text())
    assert {s["name"]: s["sha256"] for e in m2["splits"].values() for s in e["shards"]} == shards
    # other settings into the same directory: refused with a message, exit status 2
    assert main(["prepare-data", "wearable", "--out", str(out), "--max-count", "5", "--quiet"]) == 2


def test_job_script_sst_tiny(tmp_path):
    out = tmp_path / "sst"
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "prepare_data.py"), "sst", "--preset", "tiny", "--out", str(out),
         "--dtype", "float16"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr
    assert "[prepare-data] done" in proc.stdout
    m = verify_manifest(out)
    assert m["kind"] == "sst" and m["dtype"] == "float16" and m["sst_std"] > 0
    assert m["splits"]["train"]["num_samples"] == 24 and m["splits"]["val"]["num_samples"] == 8
    batch = next(iter(make_loader(out, "train", 2, num_workers=0)))
    assert batch["daily"].shape == (2, 64, 32, 32) and str(batch["daily"].dtype) == "torch.float32"


def _user_parquet(path, sensor_type=pa.float32()):
    t, c = 12, 3
    schema = schema_for("wearable", seq_len=t, channels=[("hr", "bpm"), ("steps", "1/min"), ("temp", "degC")])
    schema = schema.set(schema.get_field_index("sensor"), pa.field("sensor", pa.list_(sensor_type)))
    n = 6
    rng = np.random.default_rng(0)
    cols = {
        "key": [f"p{i}" for i in range(n)], "subject_id": [f"p{i // 2}" for i in range(n)],
        "day": [i % 2 for i in range(n)],
        "split": ["train"] * 4 + ["val"] * 2, "sensor": [rng.normal(size=t * c) for _ in range(n)],
        "missing": [np.zeros(t, np.uint8)] * n, "caption": [f"walked {i} km" for i in range(n)],
        "primary_activity": ["walking", "running"] * 3, "activities": [None] * n, "meta": [None] * n,
    }
    table = pa.Table.from_arrays([pa.array(cols[f.name], type=f.type) for f in schema], schema=schema)
    pq.write_table(table, path)
    return path


def test_user_parquet_and_schema_error(tmp_path, capsys):
    good = _user_parquet(tmp_path / "mine.parquet")
    out = tmp_path / "ds"
    assert main(["prepare-data", "wearable", "--parquet", str(good), "--out", str(out), "--vocab-size", "64",
                 "--max-count", "2", "--quiet"]) == 0
    m = verify_manifest(out)
    assert m["activities"] == ["running", "walking"]  # no list in the file: the labels seen, sorted
    assert m["channels"][1] == {"name": "steps", "unit": "1/min"} and m["generator"] is None
    assert m["splits"]["train"]["num_samples"] == 4 and len(m["splits"]["train"]["shards"]) == 2

    bad = _user_parquet(tmp_path / "bad.parquet", sensor_type=pa.float64())
    assert main(["prepare-data", "wearable", "--parquet", str(bad), "--out", str(tmp_path / "x"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "bad.parquet: column 'sensor' has type list<float64>, expected list<float32> or list<float16>" in err


def test_console_script_and_command_table():
    assert "prepare-data" in COMMANDS  # a new subcommand is one entry in this dict
    exe = Path(sys.executable).with_name("sensorlm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sensorlm.cli"]
    proc = subprocess.run(cmd + ["prepare-data", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--max-bytes" in proc.stdout and "--parquet" in proc.stdout
    with pytest.raises(SystemExit):
        main(["prepare-data", "wearable", "--out", "x", "--max-bytes", "12"])
