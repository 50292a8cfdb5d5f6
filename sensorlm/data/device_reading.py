"""Reading device exports and label files: checked timestamps and numbers, long-format tables in
chunks (memory bounded by a chunk, not the file), vendor formats' recordings, label intervals.

Every bad value is a `DeviceImportError` naming the file, the row (1-based, the header not
counted) and the column.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from sensorlm.data.csv_ranges import CsvRange, global_parser_line, read_range
from sensorlm.data.import_spec import HEADER, ChannelSpec, DeviceImportError, ImportSpec, channels_from_header

CHUNK_ROWS = 200_000  # rows of a long-format file parsed at once


def _read_error(path: Path, exc: Exception, span: CsvRange | None = None) -> DeviceImportError:
    message = str(exc).splitlines()[0] if str(exc) else ""
    if span:  # pandas counted the range's lines
        message = global_parser_line(message, span.lines_before)
    return DeviceImportError(f"{path}: cannot read ({type(exc).__name__}: {message})")


def _check_suffix(path: Path) -> str:
    if not path.is_file():
        raise FileNotFoundError(f"device export not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".csv", ".txt", ".gz"):
        raise DeviceImportError(f"{path}: unknown file type {suffix!r} (expected .csv or .parquet)")
    return suffix


def read_table(path: Path):
    """A whole CSV (as strings, so a bad cell can be named; pandas' NA tokens are missing) or Parquet table."""
    import pandas as pd

    suffix = _check_suffix(path)
    try:
        if suffix == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, dtype=str, skipinitialspace=True)
    except (ValueError, OSError) as exc:
        raise _read_error(path, exc) from None


def table_columns(path: Path) -> list[str]:
    """The column names of a CSV or Parquet table, reading only its header or schema."""
    import pandas as pd
    import pyarrow.parquet as pq

    suffix = _check_suffix(path)
    try:
        if suffix == ".parquet":
            return list(pq.read_schema(path).names)
        return [str(c) for c in pd.read_csv(path, dtype=str, skipinitialspace=True, nrows=0).columns]
    except (ValueError, OSError) as exc:
        raise _read_error(path, exc) from None


def table_chunks(path: Path, rows: int = CHUNK_ROWS, text: Sequence[str] = (),
                 span: CsvRange | None = None) -> Iterator[tuple[int, "object"]]:
    """(first row's 0-based number, DataFrame) for consecutive chunks of at most `rows` rows, of
    the whole file or of one byte range of a CSV (`sensorlm.data.csv_ranges`), numbered as the file's.

    CSV columns in `text` stay strings; the others are parsed by pandas' C parser (much faster
    than parsing strings afterwards), and a column holding anything but numbers comes back as
    strings, for `parse_numbers` to name the bad cell."""
    import pandas as pd
    import pyarrow.parquet as pq

    suffix = _check_suffix(path)
    row0 = span.row0 if span else 0
    try:
        if suffix == ".parquet":
            chunks = (b.to_pandas() for b in pq.ParquetFile(path).iter_batches(batch_size=rows))
        elif span:
            chunks = pd.read_csv(io.BytesIO(read_range(path, span.start, span.end)), header=None, names=table_columns(path),
                                 dtype=dict.fromkeys(text, str), skipinitialspace=True, chunksize=rows)
        else:
            chunks = pd.read_csv(path, dtype=dict.fromkeys(text, str), skipinitialspace=True, chunksize=rows)
        for chunk in chunks:
            yield row0, chunk
            row0 += len(chunk)
    except (ValueError, OSError) as exc:
        if isinstance(exc, DeviceImportError):
            raise
        raise _read_error(path, exc, span) from None


def parse_times(raw, path: Path, column: str, time_format: str | None, timezone: str | None, row0: int = 0):
    """Timestamps as naive local times; an unparseable or mixed-format value is an error naming its row."""
    import pandas as pd

    if pd.api.types.is_datetime64_any_dtype(raw):
        times = raw
    else:
        text = raw.astype("string").str.strip()
        try:
            times = pd.to_datetime(text, format=time_format or "ISO8601", errors="coerce")
        except (ValueError, TypeError) as exc:  # e.g. tz-aware and naive values mixed
            raise DeviceImportError(f"{path}: column '{column}': mixed timestamp kinds ({str(exc).splitlines()[0]})") from None
        bad = times.isna() & text.notna()
        if bad.any() or text.isna().any():
            i = int(np.flatnonzero((bad | text.isna()).to_numpy())[0])
            how = f"format {time_format!r}" if time_format else "ISO 8601 (set time_format for other layouts)"
            raise DeviceImportError(
                f"{path}: row {row0 + i + 1}: column '{column}' = {raw.iloc[i]!r} is not a timestamp in {how}"
            )
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert(timezone) if timezone else times
        times = times.dt.tz_localize(None)
    return times


def parse_numbers(raw, path: Path, column: str, row0: int = 0):
    """Floats, non-finite values missing; a cell that is not a number is an error naming its row."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(raw):
        out = raw.astype("float64")
    else:
        text = raw.astype("string").str.strip()
        out = pd.to_numeric(text, errors="coerce").astype("float64")
        bad = out.isna() & text.notna() & (text != "")
        if bad.any():
            i = int(np.flatnonzero(bad.to_numpy())[0])
            raise DeviceImportError(f"{path}: row {row0 + i + 1}: column '{column}' = {raw.iloc[i]!r} is not a number")
    out[~np.isfinite(out.to_numpy())] = np.nan
    return out


def long_header_channels(path: Path, spec: ImportSpec) -> list[ChannelSpec]:
    """The channels of a long-format file's ``name[unit]`` headers (the file's header only)."""
    columns = table_columns(path)
    if spec.time_column not in columns:
        raise DeviceImportError(f"{path}: no time column '{spec.time_column}' (columns: {columns}); a device "
                                "file of another layout needs --format (docs/data.md, 'Device formats')")
    channels = channels_from_header(columns, [spec.time_column, spec.subject_column or ""])
    if not channels:
        raise DeviceImportError(f"{path}: no channel spec given and no 'name[unit]' column headers to read channels from")
    return channels


def _channel_column(ch: ChannelSpec, columns) -> str | None:
    if ch.column:
        return ch.column if ch.column in columns else None
    return next((c for c in columns if c == ch.name or (HEADER.match(str(c)) and HEADER.match(str(c)).group("name") == ch.name)),
                None)


def read_long_chunks(p: Path, spec: ImportSpec, channels: Sequence[ChannelSpec], rows: int = CHUNK_ROWS,
                     span: CsvRange | None = None):
    """A long-format CSV/Parquet file (or a byte range of a CSV) as DataFrames (subject, time,
    channels) of at most `rows` rows."""
    import pandas as pd

    for row0, df in table_chunks(p, rows, text=[c for c in (spec.time_column, spec.subject_column) if c], span=span):
        if spec.time_column not in df.columns:
            raise DeviceImportError(f"{p}: no time column '{spec.time_column}' (columns: {list(df.columns)}); a device "
                                    "file of another layout needs --format (docs/data.md, 'Device formats')")
        out = pd.DataFrame({"time": parse_times(df[spec.time_column], p, spec.time_column, spec.time_format,
                                                spec.timezone, row0)})
        if spec.subject_column and spec.subject_column in df.columns:
            subj = df[spec.subject_column].astype("string").str.strip()
            if subj.isna().any():
                i = int(np.flatnonzero(subj.isna().to_numpy())[0])
                raise DeviceImportError(f"{p}: row {row0 + i + 1}: column '{spec.subject_column}' is empty")
            out["subject"] = subj.to_numpy()
        else:
            out["subject"] = spec.subject or p.stem
        for ch in channels:
            col = _channel_column(ch, df.columns)
            if col is None:
                raise DeviceImportError(
                    f"{p}: the channel spec names column '{ch.column or ch.name}' (channel {ch.name!r}), "
                    f"which the export lacks (columns: {list(df.columns)})"
                )
            out[ch.name] = parse_numbers(df[col], p, col, row0).to_numpy()
        yield out


def recording_frame(p: Path, recording, spec: ImportSpec):
    """A device format's recording as (subject, time, channels) and its channels: the spec's
    channels (by ``column``, else name) if it names any, else every channel the format read."""
    frame = recording.frame
    if not spec.channels:
        return frame, [ChannelSpec(c.name, c.unit, c.kind) for c in recording.channels]
    out = frame[["time", "subject"]].copy()
    for ch in spec.channels:
        col = ch.column or ch.name
        if col not in frame.columns:
            raise DeviceImportError(f"{p}: the channel spec names {col!r} (channel {ch.name!r}); this file's "
                                    f"channels are {[c.name for c in recording.channels]}")
        out[ch.name] = frame[col].to_numpy()
    return out, list(spec.channels)


def read_labels(path: str | Path, spec: ImportSpec, subjects: Sequence[str]):
    """Label intervals (``start, end, label`` or ``date, label``; ``subject`` optional) as a DataFrame."""
    import pandas as pd

    p = Path(path)
    df = read_table(p)
    if "label" not in df.columns:
        raise DeviceImportError(f"{p}: no 'label' column (columns: {list(df.columns)})")
    if {"start", "end"} <= set(df.columns):
        start = parse_times(df["start"], p, "start", spec.time_format, spec.timezone)
        end = parse_times(df["end"], p, "end", spec.time_format, spec.timezone)
    elif "date" in df.columns:
        start = parse_times(df["date"], p, "date", None, spec.timezone).dt.normalize()
        end = start + pd.Timedelta(days=1)
    else:
        raise DeviceImportError(f"{p}: needs columns start, end, label (intervals) or date, label (day labels)")
    labels = df["label"].astype("string").str.strip()
    for i in range(len(df)):
        if pd.isna(labels.iloc[i]) or not labels.iloc[i]:
            raise DeviceImportError(f"{p}: row {i + 1}: column 'label' is empty")
        if not end.iloc[i] > start.iloc[i]:
            raise DeviceImportError(f"{p}: row {i + 1}: end {end.iloc[i]} is not after start {start.iloc[i]}")
    if "subject" in df.columns:
        subject = df["subject"].astype("string").str.strip().to_numpy()
    elif len(subjects) == 1:
        subject = np.full(len(df), subjects[0], dtype=object)
    else:
        raise DeviceImportError(f"{p}: no 'subject' column, but the export has {len(subjects)} subjects")
    return pd.DataFrame({"subject": subject, "start": start.to_numpy(), "end": end.to_numpy(),
                         "label": labels.to_numpy()})
