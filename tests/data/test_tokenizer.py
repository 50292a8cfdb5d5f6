"""Caption tokenizer: offline training, fixed-length encoding with masks, save/load."""

import copy

import numpy as np
import pytest

from sensorlm.data.tokenizer import (
    SPECIAL_TOKENS,
    TOKENIZER_FILE,
    load_tokenizer,
    tokenizer_from_str,
    train_tokenizer,
)

CORPUS = [
    "Main workout: running, a 35-minute morning run from 07:10 to 07:45.",
    "Slept 7.5 hours (23:10 to 06:40). A moderately active day overall.",
    "Main workout: yoga, a 50-minute evening session. Heart rate stayed low.",
    "Plus 2 short walks (12 minutes). Resting heart rate 58 bpm.",
] * 5


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(CORPUS, vocab_size=300, min_frequency=1)


def test_special_ids_and_vocab_bound(tok):
    assert [tok.hf_tokenizer.token_to_id(t) for t in SPECIAL_TOKENS] == [0, 1, 2, 3]
    assert tok.pad_id == 0
    assert len(SPECIAL_TOKENS) < tok.vocab_size <= 300


def test_padding_truncation_and_mask(tok):
    ids, mask = tok.encode([CORPUS[0], "run"], max_len=8)
    assert ids.dtype == np.int64 and mask.dtype == np.int64
    assert ids.shape == mask.shape == (2, 8)
    # long caption: truncated, every position real, still closed by [SEP]
    assert mask[0].tolist() == [1] * 8
    assert ids[0, 0] == tok.cls_id and ids[0, -1] == tok.sep_id
    # short caption: [CLS] run [SEP] then padding with mask 0
    n = int(mask[1].sum())
    assert n >= 3 and ids[1, n - 1] == tok.sep_id
    assert (ids[1, n:] == tok.pad_id).all() and (mask[1, n:] == 0).all()
    assert tok.decode(ids[1]) == "run"
    # a different length in the next call is honoured (padding is reconfigured)
    ids64, mask64 = tok.encode(CORPUS[0], max_len=64)
    assert ids64.shape == (1, 64) and 8 < mask64.sum() < 64


def test_unknown_text_maps_to_unk_not_error(tok):
    ids, _ = tok.encode(["ζζζ"], max_len=6)
    assert tok.unk_id in ids[0].tolist()


def test_save_load_roundtrip_offline(tok, tmp_path):
    tok.save(tmp_path)
    assert (tmp_path / TOKENIZER_FILE).is_file()
    assert not list(tmp_path.glob("*.tmp"))
    loaded = load_tokenizer(tmp_path)  # directory or file both work
    same = load_tokenizer(tmp_path / TOKENIZER_FILE)
    a = tok.encode(CORPUS[:3], 16)
    for other in (loaded, same, copy.deepcopy(tok)):
        b = other.encode(CORPUS[:3], 16)
        assert (a[0] == b[0]).all() and (a[1] == b[1]).all()
        assert other.vocab_size == tok.vocab_size


def test_bad_inputs(tok, tmp_path):
    with pytest.raises(ValueError, match="max_len"):
        tok.encode("x", max_len=1)
    with pytest.raises(ValueError, match=r"texts\[1\]"):
        tok.encode(["ok", 3], max_len=8)
    with pytest.raises(ValueError, match="empty caption corpus"):
        train_tokenizer([], vocab_size=100)
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(CORPUS, vocab_size=3)
    with pytest.raises(FileNotFoundError, match="tokenizer file not found"):
        load_tokenizer(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json: not a valid tokenizer.json"):
        load_tokenizer(bad)
    # a valid tokenizer without our special tokens is refused by name
    from tokenizers import Tokenizer, models

    plain = Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
    with pytest.raises(ValueError, match=r"\[PAD\]"):
        tokenizer_from_str(plain.to_str(), "plain.json")
