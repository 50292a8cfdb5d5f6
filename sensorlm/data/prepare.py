"""Dataset preparation: (generate ->) Parquet -> tokenizer + webdataset shards + manifest.

Users' Parquet files and the project's synthetic data go the same way: the synthetic generators
first write Parquet into ``<out>/parquet/``, then the same validated reader turns it into shards.
Entry points: ``python jobs/prepare_data.py`` and ``sensorlm prepare-data`` (`sensorlm.cli`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from sensorlm.data.schema import ParquetSource, ShardSample, write_parquet
from sensorlm.data.shards import MANIFEST, PROGRESS, ShardError, write_shards
from sensorlm.data.tokenizer import TOKENIZER_FILE, train_tokenizer

# per generator size: tokenizer vocab, samples per shard, caption length in tokens
SIZE_DEFAULTS: dict[str, dict[str, dict[str, int | None]]] = {
    "wearable": {
        "tiny": {"vocab_size": 1024, "max_count": 16, "text_len": 48},
        "demo": {"vocab_size": 1024, "max_count": 64, "text_len": 48},
        "small": {"vocab_size": 8000, "max_count": 100, "text_len": 64},
        "bench": {"vocab_size": 8000, "max_count": 16, "text_len": 64},
        "paper": {"vocab_size": 32000, "max_count": 1000, "text_len": 64},
    },
    "sst": {
        "tiny": {"vocab_size": None, "max_count": 4, "text_len": None},
        "demo": {"vocab_size": None, "max_count": 16, "text_len": None},
        "base": {"vocab_size": None, "max_count": 16, "text_len": None},
    },
}
DEFAULT_VOCAB = 32000
DEFAULT_MAX_COUNT = 1000
DEFAULT_TEXT_LEN = 64
DEFAULT_MAX_BYTES = 256 << 20
# Past this many rows the tokenizer reads a seeded sample of about this many captions (a WordPiece
# vocabulary of 32,000 is settled long before the paper's 2.5M person-days).
TOKENIZER_CAPTIONS = 1_000_000


def _generate_parquet(kind: str, size: str, seed: int, out: Path, log: Callable[[str], None]) -> Path:
    path = out / "parquet" / f"{kind}-{size}-seed{seed}.parquet"
    if path.is_file():  # written atomically, so an existing file is complete
        log(f"reusing {path}")
        return path
    log(f"generating SYNTHETIC {kind} data, size {size!r}, seed {seed} -> {path}")
    gen_meta = {"generator": {"kind": kind, "preset": size, "seed": seed, "synthetic": True}}
    if kind == "wearable":
        from sensorlm.data.synthetic import wearable as sw

        from sensorlm.data.synthetic.captions import activity_prompt

        # the generator's own zero-shot prompts, worded like its captions; it is one client of
        # the data layer, which knows no activity vocabulary of its own
        gen_meta.update(prompts={a: activity_prompt(a) for a in sw.ACTIVITIES},
                        step_minutes=sw.get_wearable_size(size).resolution_min)
        write_parquet(sw.generate_wearable(size, seed=seed), path, "wearable", extra_metadata=gen_meta)
    else:
        from sensorlm.data.synthetic import sst as ss

        write_parquet(ss.generate_sst(size, seed=seed), path, "sst", extra_metadata=gen_meta)
    return path


# What prepare-data writes into its folder; anything else there is someone else's.
_OWN_FILES = {MANIFEST, PROGRESS, TOKENIZER_FILE}
_OWN_NAME = re.compile(r"[a-z]+-\d{6}\.tar|\..+\.tmp")
_OWN_PARQUET = re.compile(r"(wearable|sst)-[A-Za-z0-9_]+-seed\d+\.parquet|\..+\.tmp")


def _own(path: Path) -> bool:
    if path.name == "parquet" and path.is_dir():  # the generated demo data
        return all(_OWN_PARQUET.fullmatch(p.name) and p.is_file() for p in path.iterdir())
    return path.is_file() and (path.name in _OWN_FILES or bool(_OWN_NAME.fullmatch(path.name)))


def claim_output_dir(out: Path, overwrite: bool, log: Callable[[str], None]) -> None:
    """Check `out` before anything is written: it may be new, empty, or hold an earlier run of
    prepare-data (resumed; with `overwrite` removed first). A folder holding anything else is
    refused whole, with or without `overwrite`: nothing of the user's is ever deleted.

    Args:
        out: the output directory.
        overwrite: remove an earlier prepare-data dataset there (any settings) first.
        log: progress printer.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise NotADirectoryError(f"--out {out}: is a file, not a directory")
    entries = sorted(out.iterdir())
    foreign = [p.name for p in entries if not _own(p)]
    if foreign:
        shown = ", ".join(repr(n) for n in foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise FileExistsError(f"--out {out}: holds {shown}, which prepare-data did not write; prepare into a new "
                              "directory (nothing was changed)")
    if not entries:
        return
    if overwrite:
        for path in entries:
            shutil.rmtree(path) if path.is_dir() else path.unlink()
        log(f"--overwrite: removed the earlier dataset in {out} ({len(entries)} entries)")
    elif not ((out / PROGRESS).is_file() or (out / MANIFEST).is_file()):
        raise FileExistsError(f"--out {out}: holds dataset files but no record of the run that wrote them; "
                              "rerun with --overwrite to replace them, or use a new directory")


def prepare_dataset(
    kind: str,
    out_dir: str | os.PathLike,
    *,
    size: str | None = "tiny",
    parquet: Sequence[str | os.PathLike] | None = None,
    seed: int = 0,
    max_count: int | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    dtype: str = "float32",
    vocab_size: int | None = None,
    text_len: int | None = None,
    log: Callable[[str], None] | None = print,
    overwrite: bool = False,
    staging: bool = False,
) -> dict[str, Any]:
    """Build a dataset directory: ``tokenizer.json`` (wearable), shards and ``manifest.json``.

    Rerunning after an interruption resumes (completed shards are kept); a folder holding anything
    else is refused before anything is written (see `claim_output_dir`).

    Args:
        kind: ``wearable`` or ``sst``.
        out_dir: output directory.
        size: generator size used when no ``parquet`` is given (wearable: tiny/small/paper,
            sst: tiny/base); also picks the default vocab size, shard size and text length.
        parquet: the user's Parquet files (schema in `sensorlm.data.schema`); None = generate the
            project's synthetic data into ``out_dir/parquet/`` first.
        seed: generator seed.
        max_count: samples per shard (default by size, else 1000).
        max_bytes: maximum bytes per shard.
        dtype: float storage, ``float32`` or ``float16``.
        vocab_size: tokenizer vocabulary (default by size, else 32000).
        text_len: caption length recorded in the manifest as the loader's default (by size, else 64).
        log: progress printer, or None for silence.
        overwrite: replace an earlier dataset in `out_dir` written with other inputs or settings.
        staging: `out_dir` is a caller's private staging folder holding this dataset's inputs
            (``sensorlm import`` builds one, then renames it): its contents are not checked.

    Returns:
        the manifest.
    """
    if kind not in SIZE_DEFAULTS:
        raise ValueError(f"kind must be one of {sorted(SIZE_DEFAULTS)}, got {kind!r}")
    log = log or (lambda msg: None)
    out = Path(out_dir)
    if not parquet and size not in SIZE_DEFAULTS[kind]:
        raise ValueError(f"unknown {kind} size {size!r}; choose one of {sorted(SIZE_DEFAULTS[kind])}")
    if not staging:
        claim_output_dir(out, overwrite, log)
    out.mkdir(parents=True, exist_ok=True)
    if parquet:
        paths = [Path(p) for p in parquet]
        generator = None
        defaults = SIZE_DEFAULTS[kind].get(size or "", {})
    else:
        defaults = SIZE_DEFAULTS[kind][size]
        paths = [_generate_parquet(kind, size, seed, out, log)]
        generator = {"preset": size, "seed": seed, "synthetic": True}
    sources = [ParquetSource(p, kind) for p in paths]
    info = sources[0].info
    for src in sources[1:]:
        if not src.info.same_shape(info):
            raise ShardError(
                f"{src.path}: shapes {src.info.shapes()} or channels differ from {sources[0].path} ({info.shapes()})"
            )
    extra = dataset_extra(kind, sources, out, defaults, vocab_size, text_len, generator, log)

    def all_samples() -> Iterator[ShardSample]:
        for src in sources:
            yield from src

    fingerprint = {"files": [[p.name, p.stat().st_size] for p in paths]}
    return write_shards(
        all_samples(),
        out,
        info,
        max_count=max_count or defaults.get("max_count") or DEFAULT_MAX_COUNT,
        max_bytes=max_bytes,
        dtype=dtype,
        activities=info.activities,
        extra=extra,
        fingerprint=fingerprint,
        log=log,
    )


def dataset_extra(kind: str, sources: Sequence[ParquetSource], out: Path, defaults: dict[str, Any],
                  vocab_size: int | None, text_len: int | None, generator: dict[str, Any] | None,
                  log: Callable[[str], None]) -> dict[str, Any]:
    """The manifest's fields beyond the shards: the sources, what their Parquet metadata says, and
    for wearable data the tokenizer, trained on the training split's captions and saved in `out`."""
    info = sources[0].info
    extra: dict[str, Any] = {"sources": [Path(s.path).name for s in sources], "generator": generator}
    extra.update({k: v for k, v in info.extra.items() if k != "generator"})
    if kind == "wearable":
        vocab = vocab_size or defaults.get("vocab_size") or DEFAULT_VOCAB
        # a k-fold dataset has no one training split: its tokenizer reads every fold's captions
        corpus = None if extra.get("folds") else "train"
        rows = sum(s.num_rows for s in sources)
        rate = min(1.0, TOKENIZER_CAPTIONS / max(rows, 1))
        tok = train_tokenizer(_sampled((c for s in sources for c in s.captions(corpus)), rate), vocab)
        tok.save(out / TOKENIZER_FILE)
        sample = "" if rate == 1.0 else f", trained on a seeded sample of about {rate:.1%} of {rows} captions"
        log(f"tokenizer: {tok.vocab_size} ids (asked for at most {vocab}){sample} -> {out / TOKENIZER_FILE}")
        if rate < 1.0:
            extra["tokenizer_sample"] = {"rate": rate, "seed": 0, "rows": rows}
        extra.update(
            tokenizer=TOKENIZER_FILE,
            vocab_size=tok.vocab_size,
            requested_vocab_size=vocab,
            text_len=text_len or defaults.get("text_len") or DEFAULT_TEXT_LEN,
        )
    return extra


def _sampled(captions: Iterator[str], rate: float, seed: int = 0) -> Iterator[str]:
    """Each caption kept with probability `rate`, by a seeded stream: the same captions in the same
    order give the same sample, whichever process reads them."""
    if rate >= 1.0:
        yield from captions
        return
    import numpy as np

    draws = np.random.default_rng(seed)
    for caption in captions:
        if draws.random() < rate:
            yield caption


def prepare_synthetic(kind: str, size: str, out_dir: str | os.PathLike, *, seed: int = 0, **kwargs: Any):
    """Generate the project's synthetic dataset of ``kind`` at ``size`` into ``out_dir``.

    Args:
        kind: ``wearable`` or ``sst``.
        size: generator size.
        out_dir: output directory.
        seed: generator seed.
        **kwargs: more `prepare_dataset` arguments.
    """
    return prepare_dataset(kind, out_dir, size=size, seed=seed, **kwargs)
