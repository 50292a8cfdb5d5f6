"""Caption generation for the CoCa family: greedy, beam search and top-p sampling, batched.

Every method starts each caption with ``bos_id`` (the tokenizer's [CLS], which begins every
training caption), stops a caption at ``eos_id`` ([SEP]) or at ``max_len`` tokens, and pads the
rest with ``pad_id``; the other special ids are never generated. The sensor tower runs once per
batch; each step reruns the text layers over the prefix (captions are tens of tokens).
Greedy and beam search are deterministic; sampling draws from a ``torch.Generator``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

METHODS = ("greedy", "beam", "top_p")


@dataclass(frozen=True)
class Tokens:
    """The tokenizer's ids generation needs: each caption starts with ``bos_id`` (the tokenizer's
    [CLS]), ends at ``eos_id`` ([SEP]) and is padded with ``pad_id``; ``banned_ids`` (and the
    start and pad ids) are never generated."""

    bos_id: int
    eos_id: int
    pad_id: int = 0
    banned_ids: tuple[int, ...] = ()

    @classmethod
    def of(cls, tokenizer) -> "Tokens":
        """The ids of a `sensorlm.data.tokenizer.SensorTokenizer`."""
        return cls(tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id, (tokenizer.unk_id,))

    def banned(self) -> list[int]:
        return sorted({self.pad_id, self.bos_id, *self.banned_ids} - {self.eos_id})


@dataclass(frozen=True)
class Decoding:
    """How to decode: ``greedy``, ``beam`` (``num_beams`` beams, scores normalised by length) or
    ``top_p`` (nucleus sampling at ``temperature``); at most ``max_len`` tokens, the start token
    included. A bad value is one ``ValueError`` naming it."""

    method: Literal["greedy", "beam", "top_p"] = "greedy"
    max_len: int = 48
    num_beams: int = 4
    top_p: float = 0.9
    temperature: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method {self.method!r}: expected one of {list(METHODS)}")
        for name, low in (("max_len", 2), ("num_beams", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (0.0 < self.top_p <= 1.0 and self.temperature > 0):
            raise ValueError(f"top_p must be in (0, 1] and temperature > 0, got top_p={self.top_p!r}, "
                             f"temperature={self.temperature!r}")


@torch.no_grad()
def generate(model, sensor: torch.Tensor, missing: torch.Tensor | None, tokens: Tokens,
             decoding: Decoding = Decoding(), generator: torch.Generator | None = None) -> torch.Tensor:
    """Captions of a sensor batch.

    Args:
        model: a `SensorCoCa` (anything with ``sensor_tokens`` and ``caption_logits``).
        sensor: (B, T, C) sensor values, normalised as in training.
        missing: optional (B, T) bool, True = minute missing.
        tokens: the tokenizer's special ids (`Tokens.of(tokenizer)`).
        decoding: the method and its limits.
        generator: the random generator of ``top_p`` (default: torch's global one).

    Returns:
        (B, max_len) int64 token ids.
    """
    if not hasattr(model, "caption_logits"):
        raise ValueError(f"{type(model).__name__} has no captioning decoder: generation needs a sensorlm_coca model")
    _, memory, memory_mask = model.sensor_tokens(sensor, missing)
    if decoding.method == "beam":
        return _beam(model, memory, memory_mask, tokens, decoding)
    sampling = None if decoding.method == "greedy" else (decoding.top_p, decoding.temperature, generator)
    return _greedy_or_sample(model, memory, memory_mask, tokens, decoding.max_len, sampling)


def _next_logits(model, ids: torch.Tensor, memory, memory_mask, banned: list[int]) -> torch.Tensor:
    logits = model.caption_logits(ids, memory, memory_mask)[:, -1].float()
    logits[:, banned] = float("-inf")
    return logits


def _greedy_or_sample(model, memory, memory_mask, tokens: Tokens, max_len: int, sampling) -> torch.Tensor:
    B, banned = memory.shape[0], tokens.banned()
    ids = torch.full((B, 1), tokens.bos_id, dtype=torch.long, device=memory.device)
    done = torch.zeros(B, dtype=torch.bool, device=memory.device)
    while ids.shape[1] < max_len and not bool(done.all()):
        logits = _next_logits(model, ids, memory, memory_mask, banned)
        nxt = logits.argmax(dim=-1) if sampling is None else _top_p(logits, *sampling)
        nxt = torch.where(done, torch.full_like(nxt, tokens.pad_id), nxt)
        ids = torch.cat([ids, nxt[:, None]], dim=1)
        done |= nxt == tokens.eos_id
    return _pad_to(ids, max_len, tokens.pad_id)


def _top_p(logits: torch.Tensor, top_p: float, temperature: float, generator) -> torch.Tensor:
    probs = torch.softmax(logits / temperature, dim=-1)
    sorted_p, order = probs.sort(dim=-1, descending=True)
    outside = sorted_p.cumsum(dim=-1) - sorted_p > top_p  # the nucleus keeps at least the top token
    sorted_p = sorted_p.masked_fill(outside, 0.0)
    pick = torch.multinomial(sorted_p / sorted_p.sum(dim=-1, keepdim=True), 1, generator=generator)
    return order.gather(-1, pick).squeeze(-1)


def _beam(model, memory, memory_mask, tokens: Tokens, decoding: Decoding) -> torch.Tensor:
    B, K, device, banned = memory.shape[0], decoding.num_beams, memory.device, tokens.banned()
    memory = memory.repeat_interleave(K, dim=0)
    memory_mask = None if memory_mask is None else memory_mask.repeat_interleave(K, dim=0)
    ids = torch.full((B * K, 1), tokens.bos_id, dtype=torch.long, device=device)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one live beam per caption at the start
    done = torch.zeros(B * K, dtype=torch.bool, device=device)
    lengths = torch.ones(B * K, device=device)
    while ids.shape[1] < decoding.max_len and not bool(done.all()):
        logp = torch.log_softmax(_next_logits(model, ids, memory, memory_mask, banned), dim=-1)
        V = logp.shape[-1]
        # a finished beam continues only with padding, at no cost
        ended = torch.full_like(logp, float("-inf"))
        ended[:, tokens.pad_id] = 0.0
        logp = torch.where(done[:, None], ended, logp)
        scores, flat = (scores.view(B * K, 1) + logp).view(B, K * V).topk(K, dim=-1)
        beam = ((flat // V) + torch.arange(B, device=device)[:, None] * K).view(-1)
        token = (flat % V).view(-1)
        ids = torch.cat([ids[beam], token[:, None]], dim=1)
        lengths = torch.where(done[beam], lengths[beam], lengths[beam] + 1)
        done = done[beam] | (token == tokens.eos_id)
    best = (scores / lengths.view(B, K)).argmax(dim=-1) + torch.arange(B, device=device) * K
    return _pad_to(ids[best], decoding.max_len, tokens.pad_id)


def _pad_to(ids: torch.Tensor, max_len: int, pad_id: int) -> torch.Tensor:
    if ids.shape[1] >= max_len:
        return ids[:, :max_len]
    return torch.cat([ids, ids.new_full((ids.shape[0], max_len - ids.shape[1]), pad_id)], dim=1)


def captions_text(ids: torch.Tensor, tokenizer) -> list[str]:
    """Generated ids -> caption strings (special tokens dropped, `tidy`)."""
    return [tidy(tokenizer.decode(row.tolist())) for row in ids]


_TIDY = [
    (re.compile(r"(\d) : (\d\d)\b"), r"\1:\2"),  # clock times: "18 : 10" -> "18:10"
    (re.compile(r"(\d)\. (\d+)(?=\s*(?:[a-z%°]|$))"), r"\1.\2"),  # a decimal before its unit: "6. 6 hours"
    (re.compile(r"(\d) - ([a-z])"), r"\1-\2"),  # "71 - minute" -> "71-minute"
    (re.compile(r" ' s\b"), "'s"),
    (re.compile(r"\( "), "("),
    (re.compile(r" ([),;:%])"), r"\1"),
]


def tidy(text: str) -> str:
    """Undo what word-piece decoding does to numbers and punctuation (it puts a space around every
    punctuation mark): clock times, decimals before a unit, ``71-minute``, ``day's``."""
    for pattern, repl in _TIDY:
        text = pattern.sub(repl, text)
    return text
