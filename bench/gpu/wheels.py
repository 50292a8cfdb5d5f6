"""The Python 3.12 wheels the GPU machine lacks, in chunks that each fit one device call (issue 31).

    python bench/gpu/wheels.py download .whl        # here (PyPI reachable): wheels + chunks
    python bench/gpu/wheels.py join .whl            # there: the chunks back into .whl/wheels/

The GPU machine's python3 (3.12) has torch 2.11 with CUDA and a long list of packages
(`/work/.library/device/KINDS.md`, `IN_IMAGE` below), but no Ray, MLflow, DeepSpeed or webdataset,
and nothing can be fetched there; a call carries at most 64 MiB with the working tree. So:

- ``download`` walks sensorlm's runtime requirements (with Ray's ``default,train,tune`` extras)
  through the metadata of this environment, keeps every distribution the image lacks at the version
  installed here (the versions the tests ran), and downloads each as a cp312 manylinux wheel
  (``pip download --no-deps``); DeepSpeed publishes only a source archive, so its pure-Python
  wheel is built here (``pip wheel --no-build-isolation``). torch stays the image's (2.11: the
  project's range admits it).
- The wheels are packed into ``chunk-1``, ``chunk-2``, ... of at most `CHUNK_BYTES`; a wheel larger
  than a chunk (Ray's, about 70 MB) is cut into parts across chunks. Every chunk holds
  ``manifest.json``: each wheel's size, SHA-256 and parts.
- ``join`` reassembles the wheels from the chunks the calls left, checks sizes and digests, and
  names the chunk that is missing, if any.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as md
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

CHUNK_BYTES = 56 * 2**20  # a call carries 64 MiB with the working tree (about 3 MiB)
PY_VERSION = "3.12"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_34_x86_64", "manylinux_2_31_x86_64")
# In the GPU machine's image already (KINDS.md, read 2026-11-17), or torch's own: not carried.
IN_IMAGE = set("""
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs certifi charset-normalizer
click cloudpickle cmake colorama contourpy cycler cython einops filelock flatbuffers fonttools frozenlist fsspec
grpcio h11 h5py hf-xet httpcore httpx huggingface-hub idna imageio iniconfig jinja2 joblib kiwisolver lxml
markdown markdown-it-py markupsafe matplotlib mdurl ml-dtypes mpmath msgpack multidict networkx ninja numpy
nvidia-ml-py opt-einsum packaging pandas pathspec pillow pip pluggy prometheus-client propcache protobuf psutil
py-cpuinfo pyarrow pybind11 pygments pyparsing python-dateutil pytz pyyaml regex requests rich safetensors
scikit-learn scipy sentencepiece setuptools shellingham simplejson six sortedcontainers sympy tabulate
threadpoolctl tokenizers toolz torch tqdm triton typer typing-extensions urllib3 werkzeug wheel wrapt xxhash yarl
zipp tzdata
""".split())
ROOT_REQUIREMENTS = ("sensorlm",)
EXTRAS = {"ray": {"default", "train", "tune"}}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def runtime_closure() -> dict[str, str]:
    """{distribution: installed version} of sensorlm's runtime requirements, transitively, as this
    environment resolved them; markers evaluated for Linux x86-64 and CPython `PY_VERSION`."""
    from packaging.requirements import Requirement

    env = {"python_version": PY_VERSION, "python_full_version": f"{PY_VERSION}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix"}
    seen: dict[str, str] = {}
    todo: list[tuple[str, set[str]]] = [(name, set()) for name in ROOT_REQUIREMENTS]
    while todo:
        name, extras = todo.pop()
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            continue
        key = _norm(dist.metadata["Name"])
        if key in seen and not extras:
            continue
        seen[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""})):
                continue
            todo.append((req.name, set(req.extras) | EXTRAS.get(_norm(req.name), set())))
    seen.pop("sensorlm", None)
    return seen


def download(out: Path) -> None:
    wheels = out / "wheels"
    if out.exists():
        shutil.rmtree(out)
    wheels.mkdir(parents=True)
    carried = {n: v for n, v in sorted(runtime_closure().items()) if n not in IN_IMAGE and not n.startswith("nvidia-")}
    print(f"{len(carried)} distributions to carry: " + ", ".join(f"{n}=={v}" for n, v in carried.items()), flush=True)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    for name, version in carried.items():
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
               PY_VERSION, "--implementation", "cp", *platform_args, "-d", str(wheels), f"{name}=={version}"]
        if subprocess.run(cmd).returncode != 0:  # a source-only release (DeepSpeed): a wheel built here
            build = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels),
                     f"{name}=={version}"]
            if subprocess.run(build).returncode != 0:
                raise SystemExit(f"no cp{PY_VERSION.replace('.', '')} wheel of {name}=={version}, and building one failed")
            built = next(wheels.glob(f"{name.replace('-', '_')}-{version}-*.whl"), None)
            if built is None or not built.name.endswith("-none-any.whl"):
                raise SystemExit(f"{name}=={version}: the wheel built here is not pure Python ({built})")
    pack(wheels, out)


def pack(wheels: Path, out: Path, chunk_bytes: int = CHUNK_BYTES) -> list[Path]:
    """Pack the wheels of `wheels` into chunk folders of at most `chunk_bytes`; returns them."""
    entries, pieces = {}, []
    for whl in sorted(wheels.glob("*.whl"), key=lambda p: -p.stat().st_size):
        data = whl.read_bytes()
        parts = [data[i:i + chunk_bytes] for i in range(0, len(data), chunk_bytes)]
        entries[whl.name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(), "parts": len(parts)}
        pieces += [(f"{whl.name}.part-{i:02d}", part) for i, part in enumerate(parts)]
    chunks: list[list[tuple[str, bytes]]] = []
    for name, part in pieces:  # first fit, largest first
        for chunk in chunks:
            if sum(len(p) for _, p in chunk) + len(part) <= chunk_bytes:
                chunk.append((name, part))
                break
        else:
            chunks.append([(name, part)])
    folders = []
    manifest = json.dumps({"chunks": len(chunks), "wheels": entries}, indent=1)
    for i, chunk in enumerate(chunks, start=1):
        folder = out / f"chunk-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, part in chunk:
            (folder / name).write_bytes(part)
        (folder / "manifest.json").write_text(manifest)
        folders.append(folder)
        print(f"{folder}: {sum(len(p) for _, p in chunk) / 2**20:.1f} MiB, {len(chunk)} parts", flush=True)
    shutil.rmtree(wheels)
    return folders


def join(out: Path) -> Path:
    """Reassemble the wheels from the chunk folders of `out` into ``out/wheels``; checked."""
    chunks = sorted(out.glob("chunk-*"))
    if not chunks:
        raise SystemExit(f"{out}: no chunk-* folders (carry them, one call each)")
    manifest = json.loads((chunks[0] / "manifest.json").read_text())
    have = {p.name for p in chunks}
    missing = [f"chunk-{i}" for i in range(1, manifest["chunks"] + 1) if f"chunk-{i}" not in have]
    if missing:
        raise SystemExit(f"{out}: {', '.join(missing)} not here (the machine keeps earlier calls' chunks only "
                         "while it stays warm: carry them again, back to back)")
    wheels = out / "wheels"
    wheels.mkdir(exist_ok=True)
    for name, entry in manifest["wheels"].items():
        parts = [next(out.glob(f"chunk-*/{name}.part-{i:02d}"), None) for i in range(entry["parts"])]
        if None in parts:
            raise SystemExit(f"{out}: part {parts.index(None)} of {name} is in no chunk")
        data = b"".join(p.read_bytes() for p in parts)
        if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise SystemExit(f"{out}: {name} does not match its manifest after joining (size or SHA-256)")
        (wheels / name).write_bytes(data)
    print(f"{len(manifest['wheels'])} wheels in {wheels}", flush=True)
    return wheels


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("download", "join", "list"))
    p.add_argument("out", type=Path, nargs="?", default=Path(".whl"))
    args = p.parse_args(argv)
    if args.action == "download":
        download(args.out)
    elif args.action == "join":
        join(args.out)
    else:
        for name, version in sorted(runtime_closure().items()):
            print(f"{name}=={version}{'  (in the image)' if name in IN_IMAGE else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
