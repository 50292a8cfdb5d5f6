"""Parquet schemas: round trip from the generators, and errors that name what is wrong."""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sensorlm.data.schema import SchemaError, ParquetSource, read_parquet, schema_for, write_parquet

T, C = 144, 34


@pytest.fixture(scope="module")
def wearable_file(tmp_path_factory):
    from sensorlm.data.synthetic.wearable import generate_wearable

    path = tmp_path_factory.mktemp("pq") / "w.parquet"
    days = list(generate_wearable("tiny", seed=3, num_subjects=4, days_per_subject=1))
    n = write_parquet(iter(days), path, "wearable", rows_per_group=3)
    assert n == len(days) == 4
    return path, days


def _user_table(n=3, **replace):
    """A wearable table as a user would build it with `schema_for`."""
    schema = schema_for("wearable", seq_len=T, channels=[(f"c{i}", "u") for i in range(C)], activities=["walk", "run"])
    rng = np.random.default_rng(0)
    cols = {
        "key": [f"u{i}_d0" for i in range(n)],
        "subject_id": [f"u{i}" for i in range(n)],
        "day": [0] * n,
        "split": ["train"] * n,
        "sensor": [rng.normal(size=T * C).astype(np.float32) for _ in range(n)],
        "missing": [np.zeros(T, np.uint8) for _ in range(n)],
        "caption": ["walked a lot"] * n,
        "primary_activity": ["walk"] * n,
        "activities": [json.dumps([{"label": "walk", "start_min": 60, "end_min": 90}])] * n,
        "meta": [None] * n,
    }
    cols.update(replace)
    return schema, cols


def _write(tmp_path, schema, cols, name="u.parquet"):
    arrays = []
    for f in schema:
        v = cols[f.name]
        arrays.append(v if isinstance(v, pa.Array) else pa.array(v, type=f.type))
    table = pa.Table.from_arrays(arrays, schema=schema)
    path = tmp_path / name
    pq.write_table(table, path)
    return path


def test_generator_roundtrip(wearable_file):
    path, days = wearable_file
    src = ParquetSource(path, "wearable")
    assert src.info.seq_len == days[0].values.shape[0]
    assert len(src.info.channels) == days[0].values.shape[1]
    assert src.info.extra == {}  # no generator metadata was passed
    samples = list(src)
    assert [s.key for s in samples] == [d.key for d in days]
    for s, d in zip(samples, days):
        assert s.split == d.split and s.text == d.caption
        np.testing.assert_array_equal(s.arrays["sensor"], d.values)
        np.testing.assert_array_equal(s.arrays["missing"], d.missing.astype(np.uint8))
        assert s.meta["primary_activity"] == d.primary_activity
        assert s.meta["activities"] == [dict(a) for a in d.activities]
        assert s.meta["subject_id"] == d.subject_id and s.meta["day"] == d.day
    assert list(src.captions(split=None)) == [d.caption for d in days]


def test_user_file_with_schema_for(tmp_path):
    schema, cols = _user_table()
    samples = list(read_parquet(_write(tmp_path, schema, cols), "wearable"))
    assert len(samples) == 3 and samples[0].arrays["sensor"].shape == (T, C)
    np.testing.assert_array_equal(samples[1].arrays["sensor"].reshape(-1), cols["sensor"][1])


def test_missing_column_named(tmp_path):
    schema, cols = _user_table()
    schema = schema.remove(schema.get_field_index("split"))
    with pytest.raises(SchemaError, match=r"u.parquet: required column 'split' is missing"):
        ParquetSource(_write(tmp_path, schema, cols), "wearable")


@pytest.mark.parametrize("how", ["no column", "null", "empty"])
def test_missing_captions_are_generated_from_the_data(tmp_path, how):
    """The caption column is optional: a row without one gets captions computed from its data, at
    every level (kept in the sample's metadata); rows with a caption keep theirs as written."""
    schema, cols = _user_table()
    if how == "no column":
        schema = schema.remove(schema.get_field_index("caption"))
    else:
        schema = pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)
        cols["caption"] = [None if how == "null" else " ", "walked a lot", "walked a lot"]
    src = ParquetSource(_write(tmp_path, schema, cols), "wearable")
    samples = list(src)
    generated = samples[0]
    assert set(generated.meta["captions"]) == {"low", "middle", "high_summary", "high_all"}
    assert generated.meta["captions"]["high_summary"] == "A day with walk."  # default template, main label
    assert generated.text.startswith("A day with walk.") and "C0: mean" in generated.text
    if how != "no column":
        assert samples[1].text == "walked a lot" and "captions" not in samples[1].meta
    assert list(src.captions("train"))[0] == generated.text  # the tokenizer sees generated captions too


def test_wrong_dtype_named(tmp_path):
    schema, cols = _user_table(sensor=[np.zeros(T * C, np.int64)] * 3)
    schema = schema.set(schema.get_field_index("sensor"), pa.field("sensor", pa.list_(pa.int64())))
    msg = r"column 'sensor' has type list<int64>, expected list<float32> or list<float16>"
    with pytest.raises(SchemaError, match=msg):
        ParquetSource(_write(tmp_path, schema, cols), "wearable")
    schema, cols = _user_table(day=["0"] * 3)
    schema = schema.set(schema.get_field_index("day"), pa.field("day", pa.string()))
    with pytest.raises(SchemaError, match=r"column 'day' has type string, expected an integer type"):
        ParquetSource(_write(tmp_path, schema, cols), "wearable")


def test_wrong_shape_names_row_and_key(tmp_path):
    sensor = [np.zeros(T * C, np.float32), np.zeros(T * C - 34, np.float32), np.zeros(T * C, np.float32)]
    schema, cols = _user_table(sensor=sensor)
    with pytest.raises(SchemaError, match=rf"row 1 \(key u1_d0\): column 'sensor' has {T * C - 34} values, "
                                          rf"expected {T}x{C}={T * C}"):
        list(read_parquet(_write(tmp_path, schema, cols), "wearable"))


def test_missing_metadata_named(tmp_path):
    schema, cols = _user_table()
    meta = dict(schema.metadata)
    del meta[b"sensorlm.seq_len"]
    with pytest.raises(SchemaError, match=r"schema metadata 'sensorlm.seq_len' is missing"):
        ParquetSource(_write(tmp_path, schema.with_metadata(meta), cols), "wearable")
    with pytest.raises(SchemaError, match=r"kind 'wearable', expected 'sst'"):
        ParquetSource(_write(tmp_path, schema, cols, "v.parquet"), "sst")


@pytest.mark.parametrize(
    "column,value,message",
    [
        ("split", "holdout", r"column 'split' = 'holdout', expected one of"),
        ("key", "u0.d0", r"column 'key' may hold only letters"),
        ("activities", "[not json", r"column 'activities' is not valid JSON"),
        ("missing", np.full(T, 2, np.uint8), r"column 'missing' must hold 0/1 flags"),
    ],
)
def test_bad_values_named(tmp_path, column, value, message):
    schema, cols = _user_table()
    # users' files usually have nullable columns: the reader must still catch the null
    schema = pa.schema([f.with_nullable(True) for f in schema], metadata=schema.metadata)
    cols[column] = [value] + list(cols[column][1:])
    with pytest.raises(SchemaError, match=message):
        list(read_parquet(_write(tmp_path, schema, cols), "wearable"))


def test_non_finite_sensor_named(tmp_path):
    bad = np.zeros(T * C, np.float32)
    bad[5] = np.nan
    schema, cols = _user_table()
    cols["sensor"] = [cols["sensor"][0], cols["sensor"][1], bad]
    with pytest.raises(SchemaError, match=r"row 2 \(key u2_d0\): column 'sensor' has 1 NaN/inf"):
        list(read_parquet(_write(tmp_path, schema, cols), "wearable"))


def test_not_parquet_and_missing_file(tmp_path):
    junk = tmp_path / "junk.parquet"
    junk.write_bytes(b"definitely not parquet")
    with pytest.raises(SchemaError, match="junk.parquet: not a readable Parquet file"):
        ParquetSource(junk, "wearable")
    with pytest.raises(FileNotFoundError, match="parquet file not found"):
        ParquetSource(tmp_path / "absent.parquet", "wearable")
    with pytest.raises(ValueError, match="kind must be one of"):
        schema_for("video")


def test_sst_schema_roundtrip_and_errors(tmp_path):
    d, h, w = 64, 4, 5
    schema = schema_for("sst", days=d, height=h, width=w)
    rng = np.random.default_rng(1)
    cols = {
        "key": ["a", "b"], "split": ["train", "val"], "month": [3, 13],
        "daily": [rng.normal(size=d * h * w).astype(np.float32) for _ in range(2)],
        "mask": [np.zeros(d * h * w, np.uint8)] * 2, "padded_days": [np.zeros(d, np.uint8)] * 2,
        "holdout": [np.zeros(h * w, np.uint8)] * 2, "target": [np.ones(h * w, np.float32)] * 2,
        "land": [np.zeros(h * w, np.uint8)] * 2, "clim": [np.ones(h * w, np.float32)] * 2, "meta": [None] * 2,
    }
    path = _write(tmp_path, schema, cols, "sst.parquet")
    it = read_parquet(path, "sst")
    first = next(it)
    assert first.arrays["daily"].shape == (d, h, w) and first.meta["month"] == 3
    np.testing.assert_array_equal(first.arrays["daily"].reshape(-1), cols["daily"][0])
    with pytest.raises(SchemaError, match=r"row 1 \(key b\): column 'month' = 13, expected 1..12"):
        next(it)
    schema2 = schema.set(schema.get_field_index("target"), pa.field("target", pa.list_(pa.float64())))
    with pytest.raises(SchemaError, match=r"column 'target' has type list<float64>, expected list<float32>"):
        ParquetSource(_write(tmp_path, schema2, cols, "sst2.parquet"), "sst")
