"""Paired embeddings: what ProjectionCL trains on (row i of A belongs with row i of B).

A dataset is a folder of plain ``.npy`` arrays and a ``manifest.json``::

    {"kind": "embedding_pairs", "dims": [dim_a, dim_b], "modalities": ["sensor", "text"],
     "splits": {"train": {"a": "train_a.npy", "b": "train_b.npy", "num_samples": N}, "val": {...}}}

written by `write_pairs` (from arrays), `make_synthetic_pairs` (demo and tests) or
`export_sensorlm_pairs` (a trained SensorLM's sensor and caption embeddings of a wearable
dataset). Arrays are read with ``allow_pickle=False`` and memory-mapped.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from sensorlm.data.loader import DataError
from sensorlm.data.shards import check_file_name

KIND = "embedding_pairs"
MANIFEST = "manifest.json"
SPLITS = ("train", "val")


@dataclass(frozen=True)
class SyntheticPairs:
    """Made-up pairs with a learnable link: a shared latent z ~ N(0, I), then ``a = z @ W_a + noise``
    and ``b = z @ W_b + noise`` with fixed random maps.

    Args:
        num_train / num_val: pairs per split.
        dims: (dim_a, dim_b).
        latent_dim: width of the shared latent.
        noise: standard deviation of the per-modality noise (the signal's is about 1).
    """

    num_train: int = 1024
    num_val: int = 256
    dims: tuple[int, int] = (64, 48)
    latent_dim: int = 16
    noise: float = 0.5


SYNTHETIC_SIZES = {"tiny": SyntheticPairs(), "small": SyntheticPairs(num_train=8192, num_val=1024, noise=0.3)}


def write_pairs(out_dir: str | os.PathLike, arrays: dict[str, np.ndarray], modalities: tuple[str, str] = ("a", "b"),
                meta: dict[str, Any] | None = None) -> Path:
    """Write a paired-embedding dataset; built in a hidden folder and renamed when complete.

    Args:
        out_dir: the dataset folder (must not exist yet).
        arrays: ``train_a``, ``train_b``, ``val_a``, ``val_b`` -> (N, dim) float arrays.
        modalities: names of A and B (e.g. ``("sensor", "text")``), for people reading the manifest.
        meta: more manifest keys (e.g. where the embeddings came from).
    """
    out = Path(out_dir)
    if out.exists():
        raise FileExistsError(f"{out} exists; embedding pairs are written into a new folder")
    for key in ("train_a", "train_b", "val_a", "val_b"):
        if key not in arrays:
            raise ValueError(f"embedding pairs: missing array {key!r}")
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    splits = {}
    for split in SPLITS:
        a, b = np.asarray(arrays[f"{split}_a"], np.float32), np.asarray(arrays[f"{split}_b"], np.float32)
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[0]:
            raise ValueError(f"embedding pairs: {split} arrays must be (N, dim) with equal N, got {a.shape} and {b.shape}")
        for side, arr in (("a", a), ("b", b)):
            np.save(tmp / f"{split}_{side}.npy", arr, allow_pickle=False)
        splits[split] = {"a": f"{split}_a.npy", "b": f"{split}_b.npy", "num_samples": int(a.shape[0])}
    dims = [int(arrays["train_a"].shape[1]), int(arrays["train_b"].shape[1])]
    manifest = {"kind": KIND, "dims": dims, "modalities": list(modalities), "splits": splits, **(meta or {})}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, out)
    return out


def make_synthetic_pairs(size: str, out_dir: str | os.PathLike, *, seed: int = 0) -> Path:
    """Write synthetic pairs (see `SyntheticPairs`) of a named size (``tiny``, ``small``)."""
    if size not in SYNTHETIC_SIZES:
        raise ValueError(f"unknown synthetic embedding-pairs size {size!r} (known: {', '.join(SYNTHETIC_SIZES)})")
    spec = SYNTHETIC_SIZES[size]
    rng = np.random.default_rng(seed)
    maps = [rng.normal(size=(spec.latent_dim, d)) / math.sqrt(spec.latent_dim) for d in spec.dims]
    arrays = {}
    for split, n in (("train", spec.num_train), ("val", spec.num_val)):
        z = rng.normal(size=(n, spec.latent_dim))
        for side, w in zip("ab", maps):
            arrays[f"{split}_{side}"] = z @ w + spec.noise * rng.normal(size=(n, w.shape[1]))
    meta = {"generator": {"kind": KIND, "preset": size, "seed": seed, "synthetic": True}}
    return write_pairs(out_dir, arrays, meta=meta)


def read_pairs_manifest(dataset: str | os.PathLike) -> dict[str, Any]:
    """The manifest of a paired-embedding folder, checked: kind, file names, array shapes and dtypes.

    Raises:
        DataError naming the file and field.
    """
    root = Path(dataset)
    path = root / MANIFEST
    if not path.is_file():
        raise DataError(f"{path}: no manifest (a paired-embedding dataset needs one; see sensorlm.data.embedding_pairs)")
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e})") from None
    if manifest.get("kind") != KIND:
        raise DataError(f"{path}: kind is {manifest.get('kind')!r}, expected {KIND!r}")
    dims = manifest.get("dims")
    if not (isinstance(dims, list) and len(dims) == 2 and all(isinstance(d, int) and d > 0 for d in dims)):
        raise DataError(f"{path}: dims = {dims!r}, expected [dim_a, dim_b]")
    for split in SPLITS:
        entry = (manifest.get("splits") or {}).get(split)
        if not isinstance(entry, dict):
            raise DataError(f"{path}: no {split!r} split")
        rows = []
        for side, dim in zip("ab", dims):
            name = check_file_name(entry.get(side), f"{path}: splits.{split}.{side}", DataError)
            try:
                arr = np.load(root / name, mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise DataError(f"{root / name}: not a readable .npy array ({e})") from None
            if arr.ndim != 2 or arr.shape[1] != dim or not np.issubdtype(arr.dtype, np.floating):
                raise DataError(f"{root / name}: {arr.dtype} array of shape {arr.shape}, expected floats (N, {dim})")
            rows.append(arr.shape[0])
        if rows[0] != rows[1] or rows[0] != entry.get("num_samples"):
            raise DataError(f"{path}: split {split!r} has {rows[0]} A rows and {rows[1]} B rows, "
                            f"manifest says {entry.get('num_samples')}; rows must be paired")
    return manifest


def validation_rows(n: int, part: str | None) -> np.ndarray:
    """Row indices of a validation part: all (None), ``even`` (what sweep trials are selected on)
    or ``odd`` (held out for the champion decision)."""
    start = {None: 0, "even": 0, "odd": 1}[part]
    return np.arange(start, n, 1 if part is None else 2)


def pair_loader(dataset: str | os.PathLike, split: str, batch_size: int, *, rank: int = 0, world_size: int = 1,
                seed: int = 0, part: str | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Batches of pairs.

    ``train``: endless random batches of `batch_size` pairs from this rank's rows (rows
    ``rank::world_size``), drawn by a generator seeded with ``(seed, rank)`` so a resumed run can
    replay the same stream. ``val``: this rank's contiguous slice of the validation part as one
    batch (the slices of ranks 0..W-1 in order make up the part; validation ranks each slice
    against every rank's embeddings).
    """
    manifest = read_pairs_manifest(dataset)
    entry = manifest["splits"][split]
    a = np.load(Path(dataset) / entry["a"], mmap_mode="r", allow_pickle=False)
    b = np.load(Path(dataset) / entry["b"], mmap_mode="r", allow_pickle=False)
    if split != "train":
        rows = np.array_split(validation_rows(a.shape[0], part), world_size)[rank]
        yield {"a": torch.from_numpy(np.asarray(a[rows], np.float32)), "b": torch.from_numpy(np.asarray(b[rows], np.float32))}
        return
    mine = np.arange(rank, a.shape[0], world_size)
    if mine.size == 0:
        raise DataError(f"{dataset}: {a.shape[0]} training pairs for {world_size} ranks; rank {rank} has none")
    rng = np.random.default_rng([seed, rank])
    while True:
        idx = np.sort(rng.choice(mine, batch_size, replace=mine.size < batch_size))
        # np.asarray copies out of the memory map: torch wants writable memory
        yield {"a": torch.from_numpy(np.asarray(a[idx], np.float32)), "b": torch.from_numpy(np.asarray(b[idx], np.float32))}


def export_sensorlm_pairs(package, dataset: str | os.PathLike, out_dir: str | os.PathLike, *,
                          batch_size: int = 64) -> Path:
    """A trained SensorLM's sensor (A) and caption (B) embeddings of a wearable dataset, as pairs.

    Args:
        package: a loaded SensorLM `ModelPackage`.
        dataset: the wearable dataset (shards + manifest + tokenizer).
        out_dir: the new paired-embedding folder.
        batch_size: samples per forward pass.
    """
    from sensorlm.data.loader import make_loader

    from sensorlm.families.registry import embeds

    if not embeds(package.family):
        raise ValueError(f"a {package.family} model: exporting sensor/caption pairs needs a SensorLM")
    text_len = int(package.config["text"]["context_len"])
    arrays = {}
    for split in SPLITS:
        loader = make_loader(str(dataset), split, batch_size, num_workers=0, shuffle=False, shuffle_buffer=0,
                             resampled=False, drop_last=False, text_len=text_len)
        sensor, text = [], []
        with torch.no_grad():
            for batch in loader:
                sensor.append(package.model.encode_sensor(batch["sensor"], batch["missing"]).float().numpy())
                text.append(package.model.encode_text(batch["input_ids"], batch["attention_mask"]).float().numpy())
        if not sensor:
            raise DataError(f"{dataset}: split {split!r} has no samples")
        arrays[f"{split}_a"], arrays[f"{split}_b"] = np.concatenate(sensor), np.concatenate(text)
    return write_pairs(out_dir, arrays, ("sensor", "text"),
                       meta={"source": {"model_preset": package.preset, "dataset": str(dataset)}})
