"""Stage 3 of `sensorlm import`: the dataset written by parallel writers.

After stage 2 every subject's windows lie in a file of their own, and the driver has chosen the
splits. The windows are cut into parts, runs of whole subjects of about the same number of
windows (`part_rows`), in subject order; one unit per part writes its Parquet file (``parquet/import-%05d.parquet``, the
windows with their splits and the dataset's metadata) and the part's shards
(`sensorlm.data.shards.write_shard_part`). The driver then trains the tokenizer on the parts'
captions and merges the parts in order (`merge_shard_parts`): shards numbered per split, keys
checked unique, statistics merged. Parts do not depend on the number of workers, so neither do
the shards, their keys and splits, nor the statistics; a shard never spans two parts.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

# Windows per part (one task's Parquet file and shards): the dataset's windows / PARTS_WANTED,
# within [MIN_PART_ROWS, PART_ROWS]. It follows the data, never the worker count, so the output
# does not depend on how many workers ran; a small dataset still gets a few parts to spread.
PART_ROWS, MIN_PART_ROWS, PARTS_WANTED = 4096, 256, 32


@dataclasses.dataclass(frozen=True)
class PartUnit:
    """Stage 3: consecutive subjects' window files (stage 2) and the split of each of their windows."""

    index: int
    windows: tuple[str, ...]
    splits: tuple[str, ...]


def part_rows(windows: int) -> int:
    """Windows per part for a dataset of `windows` windows."""
    return min(PART_ROWS, max(MIN_PART_ROWS, -(-windows // PARTS_WANTED)))


def plan_parts(windowed: list[dict[str, Any]], splits: list[str]) -> list[PartUnit]:
    """Whole subjects, in order, into parts of about `part_rows` windows (a part closes at the
    first subject boundary past it; `splits`: one per window of `windowed`, in order)."""
    size = part_rows(len(splits))
    parts: list[PartUnit] = []
    paths: list[str] = []
    start = at = 0
    for w in windowed:
        if not w["path"]:
            continue
        if paths and at - start >= size:
            parts.append(PartUnit(len(parts), tuple(paths), tuple(splits[start:at])))
            paths, start = [], at
        paths.append(w["path"])
        at += len(w["windows"])
    if paths:
        parts.append(PartUnit(len(parts), tuple(paths), tuple(splits[start:at])))
    return parts


def write_part(unit: PartUnit, schema, out: Path, shard_args: dict[str, Any]) -> dict[str, Any]:
    """One part's Parquet file (its windows with their splits and `schema`'s metadata) and shards
    (`shard_args`: `shard_settings`' max_count, max_bytes, dtype, fingerprint)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from sensorlm.data.schema import ParquetSource
    from sensorlm.data.shards import shard_settings, write_shard_part

    path = out / "parquet" / f"import-{unit.index:05d}.parquet"
    at = 0
    with pq.ParquetWriter(path, schema) as writer:
        for window_file in unit.windows:  # one subject's table in memory at a time
            table = pq.read_table(window_file)
            split = pa.array(unit.splits[at: at + table.num_rows], pa.string())
            at += table.num_rows
            table = table.set_column(table.schema.get_field_index("split"), "split", split)
            writer.write_table(table.replace_schema_metadata(schema.metadata).cast(schema))
    source = ParquetSource(path, "wearable")
    settings = shard_settings(source.info, **shard_args)
    result = write_shard_part(iter(source), out, source.info, settings, part=f"part{unit.index:05d}")
    return {**result, "parquet": str(path), "settings": settings}
