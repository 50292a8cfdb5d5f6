"""Text transformer encoder (SensorLM's text tower): tokens -> masked mean pool -> projection -> L2 norm."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sensorlm.typed_config import ConfigError
from sensorlm.models.blocks import TransformerBlock


@dataclass(frozen=True)
class TextEncoderConfig:
    """Text transformer hyper-parameters.

    Args:
        vocab_size: tokenizer vocabulary size.
        max_len: size of the learned position table (longest accepted input).
        context_len: caption length the data pipeline pads/truncates to (<= max_len).
        width: token width.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide width).
        mlp_ratio: MLP hidden width as a multiple of width.
        embed_dim: output width of the final projection (the joint embedding space).
        dropout: dropout in the blocks.
        pad_id: id of the padding token (its embedding row stays zero).
    """

    vocab_size: int = 32000
    max_len: int = 1024
    context_len: int = 64
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    embed_dim: int = 768
    dropout: float = 0.0
    pad_id: int = 0

    def __post_init__(self) -> None:
        for name in ("vocab_size", "max_len", "context_len", "width", "depth", "num_heads", "embed_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        if self.context_len > self.max_len:
            raise ConfigError(f"context_len: {self.context_len} exceeds max_len {self.max_len}")
        if self.width % self.num_heads != 0:
            raise ConfigError(f"num_heads: width {self.width} is not divisible by num_heads {self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio: expected > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected in [0, 1), got {self.dropout!r}")
        if isinstance(self.pad_id, bool) or not isinstance(self.pad_id, int) or not 0 <= self.pad_id < self.vocab_size:
            raise ConfigError(f"pad_id: expected an id in [0, {self.vocab_size}), got {self.pad_id!r}")


class TextEncoder(nn.Module):
    """(B, L) token ids + (B, L) attention mask -> (B, embed_dim) L2-normalised embedding.

    Args:
        cfg: a `TextEncoderConfig`.
    """

    def __init__(self, cfg: TextEncoderConfig):
        super().__init__()
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self.grad_checkpointing = False
        self.token_embed = nn.Embedding(cfg.vocab_size, cfg.width, padding_idx=cfg.pad_id)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.max_len, cfg.width))
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.num_heads, cfg.mlp_ratio, drop=cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.embed_dim)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.token_embed.weight, std=0.02)
        with torch.no_grad():
            self.token_embed.weight[self.config.pad_id].zero_()
        nn.init.normal_(self.pos_embed, std=0.01)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.grad_checkpointing = enable

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, validate: bool = True) -> None:
        """Raise ValueError naming what is wrong with a batch.

        Shape and dtype checks are free; the value checks (id range, empty rows) read the tensors
        back to the host and run only with `validate=True`.
        """
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids: expected shape (B, L), got {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise ValueError(f"input_ids: expected an integer tensor, got {input_ids.dtype}")
        if input_ids.shape[1] > self.config.max_len:
            raise ValueError(f"input_ids: length {input_ids.shape[1]} exceeds max_len {self.config.max_len}")
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask: shape {tuple(attention_mask.shape)} does not match input_ids "
                f"{tuple(input_ids.shape)}"
            )
        if not validate or input_ids.numel() == 0:
            return
        lo, hi = int(input_ids.min()), int(input_ids.max())
        if lo < 0 or hi >= self.config.vocab_size:
            bad = lo if lo < 0 else hi
            raise ValueError(f"input_ids: token id {bad} out of range [0, {self.config.vocab_size})")
        empty = (attention_mask == 0).all(dim=1)
        if bool(empty.any()):
            rows = empty.nonzero().flatten().tolist()
            raise ValueError(f"attention_mask: rows {rows[:10]} have no tokens (all zeros)")

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, validate: bool = True) -> torch.Tensor:
        """Embed a tokenised batch.

        Args:
            input_ids: (B, L) integer token ids, L <= max_len.
            attention_mask: (B, L), 1 = real token, 0 = padding. Padding neither influences real
                tokens (it is masked as attention keys) nor enters the mean pool.
            validate: run the value checks (they sync with the host; the training loop skips them).
        """
        self.check_inputs(input_ids, attention_mask, validate)
        L = input_ids.shape[1]
        keep = attention_mask.to(torch.bool)
        # An all-padding row would make every attention row -inf (NaN); attend everything instead.
        kpm = keep | ~keep.any(dim=1, keepdim=True)
        x = self.token_embed(input_ids) + self.pos_embed[:, :L]
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, kpm, use_reentrant=False)
            else:
                x = blk(x, kpm)
        x = self.norm(x)
        w = keep.to(x.dtype).unsqueeze(-1)
        pooled = (x * w).sum(dim=1) / w.sum(dim=1).clamp_min(1.0)
        return F.normalize(self.proj(pooled), dim=-1)
