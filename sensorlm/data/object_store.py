"""Datasets at an fsspec URL (``s3://bucket/ds``, ``gs://...``, ``memory://...``).

A dataset is built in a local folder and then published: every file is uploaded, ``manifest.json``
last. An object store has no rename, so the manifest is the mark of a complete dataset (the loader
and `verify_manifest` need it); a failed upload removes what it wrote, and a destination that
already holds anything is refused before anything is written. Device exports at a URL are read
from a local copy, one file at a time (`local_copy`).
"""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterator

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

    def remote(path: Path) -> str:
        return f"{root.rstrip('/')}/{path.relative_to(local).as_posix()}"

    try:
        fs.put([str(p) for p in files], [remote(p) for p in files])  # fsspec batches (s3fs: concurrently)
        fs.put_file(str(local / MANIFEST), remote(local / MANIFEST))
    except BaseException:
        try:
            fs.rm(root, recursive=True)
        except FileNotFoundError:
            pass
        raise
    log(f"published {len(files) + 1} files to {url} ({MANIFEST} last)")


@contextlib.contextmanager
def local_copy(location: str, folder: Path, head: int | None = None) -> Iterator[Path]:
    """A local path for `location`: itself if local, else a copy of the object (its first `head`
    bytes only, if given) under `folder`, removed afterwards. Device readers need real files."""
    if not is_url(location):
        yield Path(location.removeprefix("file://"))
        return
    fs, path = _fs(location)
    name = path.rstrip("/").rsplit("/", 1)[-1]
    folder.mkdir(parents=True, exist_ok=True)
    local = Path(tempfile.mkdtemp(dir=folder)) / name
    try:
        try:
            if head is None:
                fs.get_file(path, str(local))
            else:
                with fs.open(path, "rb") as src:
                    local.write_bytes(src.read(head))
        except FileNotFoundError:
            raise FileNotFoundError(f"device export not found: {location}") from None
        yield local
    finally:
        shutil.rmtree(local.parent, ignore_errors=True)
