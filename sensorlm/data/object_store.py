"""Datasets at an fsspec URL (``s3://bucket/ds``, ``gs://...``, ``memory://...``).

A dataset is built in a local folder and then published: every file is uploaded, ``manifest.json``
last. An object store has no rename, so the manifest is the mark of a complete dataset (the loader
and `verify_manifest` need it); a failed upload removes what it wrote, and a destination that
already holds anything is refused before anything is written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from sensorlm.data.shards import MANIFEST


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a local path is not a URL)."""
    text = str(location)
    return "://" in text and not text.startswith("file://")


def _fs(url: str):
    import fsspec

    try:
        return fsspec.core.url_to_fs(url)
    except (ImportError, ValueError) as exc:  # e.g. s3:// without s3fs installed
        raise ValueError(f"{url}: cannot open ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None


def check_empty(url: str) -> None:
    """Refuse a destination that already holds files (nothing is ever overwritten there)."""
    fs, root = _fs(url)
    if fs.exists(root) and fs.find(root):
        raise FileExistsError(f"{url}: exists and is not empty; import into a new location")


def publish(local: Path, url: str, log: Callable[[str], None]) -> None:
    """Upload the finished dataset in `local` to `url`, ``manifest.json`` last."""
    fs, root = _fs(url)
    check_empty(url)
    files = sorted(p for p in local.rglob("*") if p.is_file() and p.name != MANIFEST)
    files.append(local / MANIFEST)
    try:
        for i, path in enumerate(files, 1):
            fs.put_file(str(path), f"{root.rstrip('/')}/{path.relative_to(local).as_posix()}")
            if i % 100 == 0:
                log(f"uploaded {i}/{len(files)} files to {url}")
    except BaseException:
        try:
            fs.rm(root, recursive=True)
        except FileNotFoundError:
            pass
        raise
    log(f"published {len(files)} files to {url} ({MANIFEST} last)")
