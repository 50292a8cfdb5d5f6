"""Caption tokenizer: a WordPiece tokenizer trained offline on the caption corpus.

The tokenizer is trained with the Hugging Face `tokenizers` library on the training captions,
saved as ``tokenizer.json`` beside the shards, and loaded from that file with no network access.
Every encoded caption is ``[CLS] tokens... [SEP]`` padded (``[PAD]`` = id 0) or truncated to a fixed
length, with an attention mask (1 = real token). Truncation keeps the closing ``[SEP]`` so that both
first-token and last-token pooling see a special token.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
SPECIAL_TOKENS = [PAD, UNK, CLS, SEP]  # ids 0..3 in this order
TOKENIZER_FILE = "tokenizer.json"


class SensorTokenizer:
    """Thin wrapper over a `tokenizers.Tokenizer` with fixed-length numpy encoding.

    Args:
        tokenizer: a trained `tokenizers.Tokenizer` whose vocabulary holds the special tokens
            ``[PAD] [UNK] [CLS] [SEP]``.
    """

    def __init__(self, tokenizer: Tokenizer):
        for token in SPECIAL_TOKENS:
            if tokenizer.token_to_id(token) is None:
                raise ValueError(f"tokenizer has no special token {token!r} (needs {SPECIAL_TOKENS})")
        self._tok = tokenizer
        self._tok.no_padding()
        self._tok.no_truncation()
        self.pad_id = tokenizer.token_to_id(PAD)
        self.unk_id = tokenizer.token_to_id(UNK)
        self.cls_id = tokenizer.token_to_id(CLS)
        self.sep_id = tokenizer.token_to_id(SEP)
        self._configured_len: int | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can emit (the model's text vocab must be at least this)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def hf_tokenizer(self) -> Tokenizer:
        return self._tok

    def _configure(self, max_len: int) -> None:
        if self._configured_len != max_len:
            self._tok.enable_truncation(max_length=max_len)
            self._tok.enable_padding(length=max_len, pad_id=self.pad_id, pad_token=PAD)
            self._configured_len = max_len

    def encode(self, texts: str | Iterable[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
        """Encode captions to fixed-length ids.

        Args:
            texts: one caption or a sequence of captions.
            max_len: output length L (>= 2: room for [CLS] and [SEP]).

        Returns:
            (input_ids, attention_mask), both int64 of shape (N, L) (N = 1 for a single string).
        """
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 2:
            raise ValueError(f"max_len must be an integer >= 2, got {max_len!r}")
        if isinstance(texts, str):
            texts = [texts]
        texts = list(texts)
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise ValueError(f"texts[{i}] must be a str, got {type(text).__name__}")
        self._configure(max_len)
        encodings = self._tok.encode_batch(texts) if texts else []
        ids = np.zeros((len(texts), max_len), dtype=np.int64)
        mask = np.zeros((len(texts), max_len), dtype=np.int64)
        for i, enc in enumerate(encodings):
            ids[i] = enc.ids
            mask[i] = enc.attention_mask
        return ids, mask

    def decode(self, ids: Iterable[int]) -> str:
        """Ids back to text (special tokens dropped); for inspection and tests."""
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=True)

    def to_str(self) -> str:
        """The tokenizer as the JSON text of ``tokenizer.json``."""
        return self._tok.to_str()

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``tokenizer.json`` atomically (temporary name, then rename).

        Args:
            path: a file path, or a directory (then ``<dir>/tokenizer.json``).
        """
        path = Path(path)
        if path.is_dir():
            path = path / TOKENIZER_FILE
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_str(), encoding="utf-8")
        os.replace(tmp, path)
        return path

    def __getstate__(self):
        # Loader workers may be spawned: carry the JSON text, never a pickled Rust object.
        return {"json": self.to_str()}

    def __setstate__(self, state):
        self.__init__(Tokenizer.from_str(state["json"]))


def _new_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.WordPiece(unk_token=UNK, max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, lowercase=True, strip_accents=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    return tok


def train_tokenizer(captions: Iterable[str], vocab_size: int, *, min_frequency: int = 2) -> SensorTokenizer:
    """Train a WordPiece tokenizer on captions (fully offline).

    Args:
        captions: iterable of caption strings (streamed; the train split only, to avoid leakage).
        vocab_size: maximum vocabulary size including the 4 special tokens (32000 for the paper
            preset). A small corpus may yield fewer ids; `SensorTokenizer.vocab_size` is the true count.
        min_frequency: minimum pair frequency for a merge.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < len(SPECIAL_TOKENS) + 1:
        raise ValueError(f"vocab_size must be an integer > {len(SPECIAL_TOKENS)}, got {vocab_size!r}")
    count = 0

    def _texts():
        nonlocal count
        for text in captions:
            if not isinstance(text, str):
                raise ValueError(f"caption {count} is {type(text).__name__}, expected str")
            count += 1
            yield text

    tok = _new_tokenizer()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
    tok.train_from_iterator(_texts(), trainer=trainer)
    if count == 0:
        raise ValueError("cannot train a tokenizer on an empty caption corpus")
    for i, token in enumerate(SPECIAL_TOKENS):
        if tok.token_to_id(token) != i:
            raise RuntimeError(f"special token {token} got id {tok.token_to_id(token)}, expected {i}")
    tok.post_processor = processors.TemplateProcessing(
        single=f"{CLS} $A {SEP}", special_tokens=[(CLS, tok.token_to_id(CLS)), (SEP, tok.token_to_id(SEP))]
    )
    return SensorTokenizer(tok)


def tokenizer_from_str(text: str, origin: str = "<string>") -> SensorTokenizer:
    """Build a tokenizer from the JSON text of a ``tokenizer.json``.

    Args:
        text: the JSON text.
        origin: where it came from, for error messages.
    """
    try:
        tok = Tokenizer.from_str(text)
    except Exception as exc:  # the Rust side raises a bare Exception on bad JSON
        raise ValueError(f"{origin}: not a valid tokenizer.json ({exc})") from exc
    try:
        return SensorTokenizer(tok)
    except ValueError as exc:
        raise ValueError(f"{origin}: {exc}") from exc


def load_tokenizer(path: str | os.PathLike) -> SensorTokenizer:
    """Load a saved tokenizer offline.

    Args:
        path: ``tokenizer.json`` or the dataset directory holding it.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TOKENIZER_FILE
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer file not found: {path}")
    with io.open(path, encoding="utf-8") as f:
        return tokenizer_from_str(f.read(), origin=str(path))
