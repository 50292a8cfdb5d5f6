"""bench/gpu (issue 31): the wheels travel in chunks and come back whole, and the GPU run's own
script runs its steps on the CPU (--dry-run) so it cannot rot before a GPU comes."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheels():
    spec = importlib.util.spec_from_file_location("bench_gpu_wheels", REPO / "bench" / "gpu" / "wheels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_wheels_are_cut_into_chunks_and_joined_back(wheels, tmp_path):
    src = tmp_path / "wheels"
    src.mkdir()
    blobs = {"ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl": os.urandom(2500),  # larger than a chunk
             "mlflow-3.17.2-py3-none-any.whl": os.urandom(700), "webdataset-1.0.2-py3-none-any.whl": os.urandom(300)}
    for name, data in blobs.items():
        (src / name).write_bytes(data)
    out = tmp_path / ".whl"
    folders = wheels.pack(src, out, chunk_bytes=1000)
    assert all(sum(p.stat().st_size for p in f.iterdir() if p.name != "manifest.json") <= 1000 for f in folders)
    assert len(folders) >= 4 and not src.exists()
    joined = wheels.join(out)
    assert {p.name: hashlib.sha256(p.read_bytes()).digest() for p in joined.iterdir()} == {
        name: hashlib.sha256(data).digest() for name, data in blobs.items()}

    missing = folders[-1]
    missing.rename(tmp_path / "elsewhere")
    with pytest.raises(SystemExit, match=rf"{missing.name} not here"):
        wheels.join(out)
    (tmp_path / "elsewhere").rename(missing)
    part = next(out.glob("chunk-*/ray-*.part-01"))
    part.write_bytes(b"x" + part.read_bytes()[1:])
    with pytest.raises(SystemExit, match="ray-2.60.0-cp312-cp312-manylinux2014_x86_64.whl does not match its manifest"):
        wheels.join(out)


def test_the_carried_set_is_what_the_gpu_image_lacks(wheels):
    carried = wheels.runtime_closure()
    for needed in ("ray", "deepspeed", "mlflow", "webdataset", "fitdecode", "actfast"):
        assert needed in carried, needed
    assert "torch" in carried and "torch" in wheels.IN_IMAGE, "torch stays the image's own (2.11 with CUDA)"
    assert {"numpy", "pandas", "pyarrow", "scipy"} <= wheels.IN_IMAGE


@pytest.mark.slow
def test_gpu_script_dry_run_on_the_cpu(tmp_path):
    """The one command a GPU machine runs, on the CPU with the tiny preset: the ZeRO-2 run at the
    largest batch that fits and embed with the registered version (the separate smoke run is
    skipped on a dry run, where the ZeRO stages are the same tiny preset)."""
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out)}
    # one ZeRO stage here (CI time); stage 3 is the same code with another scaling.zero_stage
    done = subprocess.run(["bash", str(REPO / "bench" / "gpu" / "run.sh"), "--dry-run", "--batches", "16", "8",
                           "--stages", "2"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    report = json.loads((out / "gpu_run.json").read_text())
    assert report["mode"] == "dry-run (CPU)" and "skipped" in report["smoke_tiny"]
    assert "paper-zero3" not in report
    for stage in ("paper-zero2",):
        run = report[stage]
        assert run["status"] == "FINISHED" and run["per_gpu_batch"] == 16, run
        assert run["steady_samples_per_s"] > 0 and len(run["windows_samples_per_s"]) == 4
    assert report["embed"]["exit"] == 0 and report["embed"]["rows"] > 0
    assert "[bench.gpu] paper-zero2: batch 16" in done.stdout
