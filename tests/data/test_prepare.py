"""`prepare_dataset`: past a stated size the tokenizer reads a seeded sample of the captions."""

from __future__ import annotations


def test_past_the_stated_size_the_tokenizer_reads_a_seeded_sample(tmp_path, monkeypatch):
    from sensorlm.data import prepare
    from sensorlm.data.schema import ParquetSource

    prepare.prepare_synthetic("wearable", "tiny", tmp_path / "full", seed=0, log=None)
    (parquet,) = (tmp_path / "full" / "parquet").glob("*.parquet")
    source = ParquetSource(parquet, "wearable")
    train = list(source.captions("train"))
    seen: list[list[str]] = []
    real = prepare.train_tokenizer
    monkeypatch.setattr(prepare, "train_tokenizer", lambda caps, vocab, **kw: real(seen.append(list(caps)) or seen[-1], vocab, **kw))
    monkeypatch.setattr(prepare, "TOKENIZER_CAPTIONS", source.num_rows // 4)
    first = prepare.prepare_dataset("wearable", tmp_path / "a", parquet=[parquet], log=None)
    prepare.prepare_dataset("wearable", tmp_path / "b", parquet=[parquet], log=None)
    assert seen[0] == seen[1]  # the same seeded sample on every run
    assert 0 < len(seen[0]) < len(train) / 2 and set(seen[0]) <= set(train)
    assert first["tokenizer_sample"] == {"rate": (source.num_rows // 4) / source.num_rows, "seed": 0, "rows": source.num_rows}
    assert (tmp_path / "a" / "tokenizer.json").read_text() and first["num_samples"] == source.num_rows

    monkeypatch.setattr(prepare, "TOKENIZER_CAPTIONS", 10**9)  # under the size: every training caption
    small = prepare.prepare_dataset("wearable", tmp_path / "c", parquet=[parquet], log=None)
    assert seen[2] == train and "tokenizer_sample" not in small
