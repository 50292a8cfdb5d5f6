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


def test_prepare_wearable_tiny_then_load(tmp_path, capsys):
    out = tmp_path / "w"
    assert main(["prepare-data", "wearable", "--size", "tiny", "--out", str(out), "--quiet", "--verify"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["kind"] == "wearable" and m["generator"] == {"preset": "tiny", "seed": 0, "synthetic": True}
    assert m["sample_shape"]["sensor"] == [144, 34] and len(m["channels"]) == 34
    assert m["text_len"] == 48 and m["tokenizer"] == "tokenizer.json" and 4 < m["vocab_size"] <= 1024
    assert (out / "tokenizer.json").is_file() and (out / "parquet" / "wearable-tiny-seed0.parquet").is_file()
    assert len(m["splits"]["val"]["shards"]) >= 2  # enough for 2 ranks
    batch = next(iter(make_loader(out, "val", 4, num_workers=0)))
    assert batch["sensor"].shape == (4, 144, 34) and batch["input_ids"].shape == (4, 48)
    # rerun (with the old name of --size, which says so): everything is kept (resume path), the
    # manifest describes the same shards
    shards = {s["name"]: s["sha256"] for e in m["splits"].values() for s in e["shards"]}
    capsys.readouterr()
    assert main(["prepare-data", "wearable", "--preset", "tiny", "--out", str(out), "--quiet"]) == 0
    assert "--preset is deprecated: it is now --size" in capsys.readouterr().err
    assert main(["prepare-data", "wearable", "--preset", "tiny", "--size", "small", "--out", str(out)]) == 2
    assert "--size small and --preset tiny disagree" in capsys.readouterr().err
    m2 = json.loads((out / "manifest.json").read_text())
    assert {s["name"]: s["sha256"] for e in m2["splits"].values() for s in e["shards"]} == shards
    # other settings into the same directory: refused with a message, exit status 2
    assert main(["prepare-data", "wearable", "--out", str(out), "--max-count", "5", "--quiet"]) == 2


def test_job_script_sst_tiny(tmp_path):
    out = tmp_path / "sst"
    proc = subprocess.run(
        [sys.executable, str(REPO / "jobs" / "prepare_data.py"), "sst", "--size", "tiny", "--out", str(out),
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
    assert "prepare-data" in COMMANDS  # a new subcommand is one module and one entry in this dict
    exe = Path(sys.executable).with_name("sensorlm")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "sensorlm.cli"]
    proc = subprocess.run(cmd + ["prepare-data", "--help"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--max-bytes" in proc.stdout and "--parquet" in proc.stdout
    with pytest.raises(SystemExit):
        main(["prepare-data", "wearable", "--out", "x", "--max-bytes", "12"])


def test_help_imports_only_the_command_asked_for():
    """`sensorlm --help` and `sensorlm train --help` answer at once: neither imports torch, Ray or
    MLflow (the sweep and evaluation commands' modules do, for their own options only)."""
    probe = ("import sys; from sensorlm.cli import main\n"
             "try: main(sys.argv[1:])\n"
             "except SystemExit: pass\n"
             "print(sorted(m for m in ('torch', 'ray', 'mlflow', 'matplotlib') if m in sys.modules))")
    for args in (["--help"], ["train", "--help"], ["prepare-data", "--help"]):
        out = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().splitlines()[-1] == "[]", (args, out.stdout[-300:], out.stderr[-300:])
    out = subprocess.run([sys.executable, "-c", probe, "sweep", "--help"], capture_output=True, text=True, timeout=120)
    assert "usage: sensorlm sweep" in out.stdout  # its own options still build


# --- one command, one-line failures ------------------------------------------------------------


def test_every_subcommand_has_help(capsys):
    assert {"train", "sweep", "evaluate", "prepare-data", "import", "export", "embed", "promote"} <= set(COMMANDS)
    for name in COMMANDS:
        with pytest.raises(SystemExit) as exit_:
            main([name, "--help"])
        assert exit_.value.code == 0, name
        assert f"usage: sensorlm {name}" in capsys.readouterr().out


def test_dry_runs_print_the_resolved_config_and_start_nothing(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    for config in ("sensorlm_tiny", "sst_tiny", "projection_cl_tiny"):
        assert main(["train", "--config", config, "--dry-run", "steps=3"]) == 0
        out = capsys.readouterr().out
        assert "steps: 3" in out and f"preset: {config}" in out
    assert main(["sweep", "--config", "siglip_tiny", "--dry-run", "num_samples=2"]) == 0
    assert "# 2 trials" in capsys.readouterr().out
    assert not ray.is_initialized() and not any(tmp_path.iterdir())


def _one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_failures_a_user_can_cause_are_one_line_with_exit_2(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert main(["train", "data.path=/nonexistent", "data.synthetic=null"]) == 2
    assert _one_error_line(capsys) == ("sensorlm train: error: data.path /nonexistent has no manifest.json and "
                                       "data.synthetic is not set")
    assert main(["train", "optim.lrr=1"]) == 2
    assert _one_error_line(capsys) == "sensorlm train: config error: unknown config key optim.lrr; did you mean 'lr'?"
    assert main(["sweep", "--config", "siglip_tiny", "params.temprature_max={type: grid, values: [5]}"]) == 2
    assert "params.temprature_max: unknown search parameter for task sensorlm" in _one_error_line(capsys)

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert main(["evaluate", "models:/nothing/1", "--tracking-uri", store, "--no-log"]) == 2
    assert _one_error_line(capsys) == (f"sensorlm evaluate: error: model URI 'models:/nothing/1': no registered model "
                                       f"named 'nothing' at {store}")
    import mlflow
    from mlflow.tracking import MlflowClient

    MlflowClient(store).create_registered_model("nothing")
    assert main(["evaluate", "models:/nothing@champion", "--tracking-uri", store, "--no-log"]) == 2
    assert "champion" in _one_error_line(capsys)
    assert not ray.is_initialized()
    del mlflow


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_dead_or_refusing_tracking_server_fails_at_once(tmp_path, capsys, monkeypatch):
    """MLflow's client would retry a dead server for minutes; the job checks once and says so
    (the subprocess timeout only guards against a hang)."""
    import http.server
    import threading

    monkeypatch.chdir(tmp_path)
    port = _closed_port()
    proc = subprocess.run([sys.executable, "-m", "sensorlm.cli", "train", "steps=1"], cwd=tmp_path, timeout=120,
                          capture_output=True, text=True, env={**__import__("os").environ,
                                                               "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"sensorlm train: error: tracking server http://127.0.0.1:{port} is unreachable (connection refused or no "
        "route); start it, or unset MLFLOW_TRACKING_URI to use a local sqlite store"]
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "data").exists()  # nothing started

    class Refuse(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(401)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Refuse)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        uri = f"http://127.0.0.1:{server.server_port}"
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "job")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-this")
        assert main(["train", "steps=1", f"tracking.tracking_uri={uri}"]) == 2
        line = _one_error_line(capsys)
        assert line == f"sensorlm train: error: tracking server {uri} refused user 'job' (HTTP 401)"
        assert "not-this" not in line
    finally:
        server.shutdown()


def test_closing_hint_fits_the_store():
    from sensorlm.tracking.mlflow_utils import ui_hint

    assert ui_hint("sqlite:////tmp/m.db") == "mlflow ui --backend-store-uri sqlite:////tmp/m.db"
    assert ui_hint("http://user:secret@127.0.0.1:5000") == "open http://user:***@127.0.0.1:5000 in a browser"


def test_errors_that_printed_tracebacks_are_one_line(tmp_path, capsys):
    """A path the command may not write, a prompt template with a placeholder the captioner cannot
    fill, and a manifest field of the wrong type: one line each, exit 2 (they were tracebacks)."""
    from sensorlm.data.synthetic.device import write_device_export

    # /sys refuses new entries even to root (PermissionError), so the test holds in CI.
    assert main(["prepare-data", "wearable", "--out", "/sys/sensorlm-test-out", "--quiet"]) == 2
    assert _one_error_line(capsys).startswith("sensorlm prepare-data: error: permission denied: /sys/sensorlm-test-out")

    export = write_device_export(tmp_path / "raw", subjects=1, days=2, epoch_s=60, seed=0)
    assert main(["import", str(export["export"]), "--out", str(tmp_path / "imp"), "--prompt-template", "{label} {x}"]) == 2
    assert _one_error_line(capsys) == ("sensorlm import: error: channel spec: prompt_template '{label} {x}': unknown "
                                       "placeholder {x}; the only one is {label}")
    assert not (tmp_path / "imp").exists()

    data = tmp_path / "wear"
    assert main(["prepare-data", "wearable", "--out", str(data), "--quiet"]) == 0
    capsys.readouterr()
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["sample_shape"]["sensor"] = "144x34"
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert main(["train", f"data.path={data}", "data.synthetic=null"]) == 2
    assert "manifest field sample_shape.sensor must be a list of positive integers, got '144x34'" in _one_error_line(capsys)


def test_a_bug_is_one_line_unless_verbose(capsys, monkeypatch):
    from sensorlm.cli import promote

    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(promote, "add_arguments", lambda p: None)
    monkeypatch.setattr(promote, "run", broken)
    assert main(["promote"]) == 1
    line = _one_error_line(capsys)
    assert line.startswith("sensorlm promote: internal error: TypeError: unsupported operand") and "--verbose" in line
    with pytest.raises(TypeError):
        main(["promote", "--verbose"])


def test_error_lines_carry_no_password(capsys):
    from sensorlm.cli import run_guarded

    def fails():
        raise ValueError("cannot reach http://job:hunter2secret@mlflow:5000 (Bearer abc.def.ghi)")

    assert run_guarded(fails, "sensorlm x") == 2
    line = _one_error_line(capsys)
    assert "hunter2secret" not in line and "abc.def.ghi" not in line and "http://job:***@mlflow:5000" in line


def test_prepare_data_never_deletes_what_it_did_not_write(tmp_path, capsys):
    out = tmp_path / "ds"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "train-000000.tar").write_bytes(b"someone else's shard")
    for extra in ([], ["--overwrite"]):
        assert main(["prepare-data", "wearable", "--out", str(out), "--quiet", *extra]) == 2
        assert _one_error_line(capsys) == (f"sensorlm prepare-data: error: --out {out}: holds 'notes.txt', which "
                                           "prepare-data did not write; prepare into a new directory (nothing was changed)")
        assert (out / "notes.txt").read_text() == "mine"
        assert (out / "train-000000.tar").read_bytes() == b"someone else's shard"
    (out / "notes.txt").unlink()
    # shards without a record of the run that wrote them: only --overwrite replaces them
    assert main(["prepare-data", "wearable", "--out", str(out), "--quiet"]) == 2
    assert "no record of the run that wrote them; rerun with --overwrite" in _one_error_line(capsys)
    assert (out / "train-000000.tar").read_bytes() == b"someone else's shard"

    assert main(["prepare-data", "wearable", "--out", str(out), "--quiet", "--overwrite"]) == 0
    first = json.loads((out / "manifest.json").read_text())
    # the same command again resumes (keeps every shard); other settings need --overwrite
    assert main(["prepare-data", "wearable", "--out", str(out), "--quiet"]) == 0
    assert json.loads((out / "manifest.json").read_text())["splits"] == first["splits"]
    assert main(["prepare-data", "wearable", "--out", str(out), "--quiet", "--max-count", "8"]) == 2
    assert "holds shards written with other inputs or settings" in _one_error_line(capsys)
    assert main(["prepare-data", "wearable", "--out", str(out), "--quiet", "--max-count", "8", "--overwrite"]) == 0
    assert all(s["samples"] <= 8 for s in json.loads((out / "manifest.json").read_text())["splits"]["train"]["shards"])
