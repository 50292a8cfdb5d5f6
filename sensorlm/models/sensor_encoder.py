"""ViT sensor encoder with rectangular patches and MAP pooling (SensorLM's sensor tower).

A day of wearable data (B, T, C) is treated as a one-channel image of T minutes by C channels.
A Conv2d with kernel = stride = (pt, pc) cuts it into (T/pt) x (C/pc) patches, e.g. 144 x 17 = 2448
tokens for the paper's (1440, 34) input with (10, 2) patches. Tokens are ordered row-major over
(time patch, channel patch), so token ``i`` covers time patch ``i // (C/pc)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sensorlm.typed_config import ConfigError
from sensorlm.models.blocks import MAPHead, TransformerBlock


@dataclass(frozen=True)
class SensorEncoderConfig:
    """Sensor ViT hyper-parameters.

    Args:
        input_len: T, minutes (time steps) per sample.
        num_channels: C, sensor channels.
        patch: (pt, pc) patch size over (time, channels); must divide (T, C).
        width: token width D.
        depth: number of transformer blocks.
        num_heads: attention heads (must divide width).
        mlp_ratio: MLP hidden width as a multiple of width.
        dropout: dropout in the blocks.
        pooling: "map" (multihead attention pooling, the paper) or "mean" (ablation).
    """

    input_len: int = 1440
    num_channels: int = 34
    patch: tuple[int, int] = (10, 2)
    width: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    pooling: Literal["map", "mean"] = "map"

    def __post_init__(self) -> None:
        # Lists arrive from YAML/JSON; keep the field hashable and comparable.
        object.__setattr__(self, "patch", tuple(self.patch))
        for name in ("input_len", "num_channels", "width", "depth", "num_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name}: expected a positive integer, got {value!r}")
        if len(self.patch) != 2 or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in self.patch):
            raise ConfigError(f"patch: expected two positive integers (time, channels), got {self.patch!r}")
        pt, pc = self.patch
        if self.input_len % pt != 0 or self.num_channels % pc != 0:
            raise ConfigError(
                f"patch: input shape (T={self.input_len}, C={self.num_channels}) is not divisible by "
                f"patch {self.patch}"
            )
        if self.width % self.num_heads != 0:
            raise ConfigError(f"num_heads: width {self.width} is not divisible by num_heads {self.num_heads}")
        if not self.mlp_ratio > 0:
            raise ConfigError(f"mlp_ratio: expected > 0, got {self.mlp_ratio!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout: expected in [0, 1), got {self.dropout!r}")
        if self.pooling not in ("map", "mean"):
            raise ConfigError(f"pooling: {self.pooling!r} is not one of ['map', 'mean']")

    @property
    def grid(self) -> tuple[int, int]:
        """Token grid (T / pt, C / pc)."""
        return self.input_len // self.patch[0], self.num_channels // self.patch[1]

    @property
    def num_tokens(self) -> int:
        return self.grid[0] * self.grid[1]


class SensorEncoder(nn.Module):
    """(B, T, C) sensor day -> (B, width) L2-normalised embedding.

    Args:
        cfg: a `SensorEncoderConfig`.
    """

    def __init__(self, cfg: SensorEncoderConfig):
        super().__init__()
        self.config = cfg
        self.embed_dim = cfg.width
        self.grad_checkpointing = False
        self.patch_embed = nn.Conv2d(1, cfg.width, kernel_size=cfg.patch, stride=cfg.patch)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, cfg.width))
        self.blocks = nn.ModuleList(
            TransformerBlock(cfg.width, cfg.num_heads, cfg.mlp_ratio, drop=cfg.dropout) for _ in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(cfg.width)
        self.head = MAPHead(cfg.width, cfg.num_heads, cfg.mlp_ratio) if cfg.pooling == "map" else None
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        # Patch conv as a linear layer over the pt*pc inputs (lecun-normal, as big_vision's ViT).
        fan_in = self.patch_embed.weight[0].numel()
        nn.init.trunc_normal_(self.patch_embed.weight, std=fan_in**-0.5)
        nn.init.zeros_(self.patch_embed.bias)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward (saves memory on the 2448-token sequence)."""
        self.grad_checkpointing = enable

    def token_mask(self, missing: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """(B, T) bool minutes-missing -> (B, N) bool, True = token may be attended.

        A token is masked out when every minute of its time patch is missing. A sample with every
        token masked keeps all of them attendable (softmax over an empty set would be NaN).
        """
        if missing is None:
            return None
        T = self.config.input_len
        if missing.ndim != 2 or missing.shape != (batch_size, T):
            raise ValueError(f"missing mask: expected shape ({batch_size}, {T}), got {tuple(missing.shape)}")
        pt = self.config.patch[0]
        n_time, n_chan = self.config.grid
        patch_missing = missing.to(torch.bool).view(batch_size, n_time, pt).all(dim=-1)  # (B, T/pt)
        attend = (~patch_missing)[:, :, None].expand(batch_size, n_time, n_chan).reshape(batch_size, -1)
        nothing = ~attend.any(dim=-1, keepdim=True)
        return attend | nothing

    def _check_input(self, x: torch.Tensor) -> None:
        T, C = self.config.input_len, self.config.num_channels
        if x.ndim != 3 or x.shape[1:] != (T, C):
            raise ValueError(f"sensor input: expected shape (B, {T}, {C}), got {tuple(x.shape)}")

    def embed_patches(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, C) -> (B, N, width): the patch Conv2d (kernel = stride) as one matmul over the
        cut-out patches, tokens row-major over (time patch, channel patch). Same weights and
        result as ``patch_embed(x.unsqueeze(1))``. torch 2.13's CPU bf16 Conv2d returned wrong
        values and NaN for kernel = stride = (6, 34) (2 of 5 random batches NaN, the others off by
        about 30%), which made bf16 training on CPU go non-finite within 2 steps; a matmul does not."""
        B, T, C = x.shape
        pt, pc = self.config.patch
        patches = x.reshape(B, T // pt, pt, C // pc, pc).permute(0, 1, 3, 2, 4).reshape(B, -1, pt * pc)
        w = self.patch_embed.weight
        return F.linear(patches, w.reshape(w.shape[0], -1), self.patch_embed.bias)

    def forward_features(self, x: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> normalised token sequence (B, N, width).

        Args:
            x: sensor values (B, T, C).
            missing: optional (B, T) bool, True = minute missing.
        """
        self._check_input(x)
        B = x.shape[0]
        kpm = self.token_mask(missing, B)
        x = self.embed_patches(x) + self.pos_embed
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, kpm, use_reentrant=False)
            else:
                x = blk(x, kpm)
        return self.norm(x)

    def forward_head(
        self, x: torch.Tensor, missing: torch.Tensor | None = None, normalize: bool = True
    ) -> torch.Tensor:
        """Pool a (B, N, width) sequence to (B, width).

        Args:
            x: output of `forward_features`.
            missing: the same (B, T) mask given to `forward_features`; masked tokens are not pooled.
            normalize: L2-normalise the result.
        """
        kpm = self.token_mask(missing, x.shape[0])
        if self.head is not None:
            z = self.head(x, kpm)
        elif kpm is None:
            z = x.mean(dim=1)
        else:
            w = kpm.to(x.dtype).unsqueeze(-1)
            z = (x * w).sum(dim=1) / w.sum(dim=1)
        return F.normalize(z, dim=-1) if normalize else z

    def forward(self, x: torch.Tensor, missing: torch.Tensor | None = None, normalize: bool = True) -> torch.Tensor:
        """(B, T, C) -> (B, width), L2-normalised unless `normalize=False`.

        Args:
            x: sensor values (B, T, C).
            missing: optional (B, T) bool, True = minute missing; fully missing patches are ignored.
            normalize: L2-normalise the embedding.
        """
        return self.forward_head(self.forward_features(x, missing), missing, normalize)
