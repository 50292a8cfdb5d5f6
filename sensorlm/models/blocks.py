"""Transformer building blocks shared by every model family (pure PyTorch).

Attention goes through `F.scaled_dot_product_attention`, so on a GPU with bf16 inputs the
flash / memory-efficient kernels are used instead of materialising the (N x N) score matrix.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection.

    Args:
        dim: token width.
        num_heads: number of heads; must divide `dim`.
        qkv_bias: bias on the qkv projection.
        attn_drop: dropout on attention weights (training only).
        proj_drop: dropout after the output projection.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0, proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = attn_drop
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """x: (B, N, D). key_padding_mask: optional (B, N) bool, True = token may be attended.
        causal: each token attends to itself and earlier ones only (the padding mask is then not
        used: with right padding a real token never sees a later pad)."""
        B, N, D = x.shape
        q, k, v = self.qkv(x).view(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        attn_mask = None
        if key_padding_mask is not None and not causal:
            attn_mask = key_padding_mask[:, None, None, :].to(torch.bool)
        x = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, dropout_p=self.attn_drop if self.training else 0.0, is_causal=causal
        )
        x = x.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(x))


class Mlp(nn.Module):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attn(LN(x)), then x + MLP(LN(x)).

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of `dim`.
        qkv_bias: bias on qkv.
        drop: dropout after attention projection and in the MLP.
        attn_drop: dropout on attention weights.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True, drop: float = 0.0, attn_drop: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), key_padding_mask, causal)
        return x + self.mlp(self.norm2(x))


class MAPHead(nn.Module):
    """Multihead attention pooling (big_vision's MAPHead): a learned probe cross-attends to the
    sequence, then a residual MLP; returns the probe token.

    Args:
        dim: token width.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width multiple.
    """

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.probe = nn.Parameter(torch.zeros(1, 1, dim))
        nn.init.xavier_uniform_(self.probe.view(1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, N, D) -> (B, D)."""
        B, N, D = x.shape
        h = self.num_heads
        q = self.q(self.probe.expand(B, -1, -1)).view(B, 1, h, D // h).transpose(1, 2)
        k, v = self.kv(x).view(B, N, 2, h, D // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if key_padding_mask is None else key_padding_mask[:, None, None, :].to(torch.bool)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        y = self.proj(y.transpose(1, 2).reshape(B, 1, D))
        y = y + self.mlp(self.norm(y))
        return y[:, 0]
