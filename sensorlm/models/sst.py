"""SpatioTemporalModel: gap-filled monthly SST maps from cloudy daily fields (pure PyTorch).

Input is a "video" of daily fields, M month slots of D = 32 days each (months shorter than 32
days are padded at the end of their slot), and the output is the monthly map of the LAST month:

    x (B,1,M*D,H,W), daily_mask, padded_days
      -> VideoEncoder                (B, M*T'*H'*W', E)   3-D patches, validity as 2nd channel
      -> TemporalAttentionAggregator (B, H'*W', E)        day pooling, cross-month attention,
                                                          month pooling, per spatial patch
      -> + SpatialPositionalEncoding2D
      -> SpatialTransformer          (B, H'*W', E)        global mixing across patches
      -> MonthlyConvDecoder          (B, 1, H, W)         overlapping deconvolution, land = 0
         + observed summary          (B, 4, H, W)         per-pixel mean and fraction of the
                                                          observed days (last month, window),
                                                          at full resolution (``input_skip``)

Why the skip: every path from the input to the output otherwise goes through one E-wide token
per (Pt, Ph, Pw) patch, pooled over days by a softmax (a convex combination of tokens, blind to
how many days each pixel was seen), and back to pixels through a deconvolution. That cannot carry
a per-pixel monthly mean at full resolution: without the skip the trained `sst_tiny` was worse on
the pixels it observed than their plain observed-days mean (README).

Two invariances hold exactly (not just approximately) and are tested:
  * values at missing pixels never reach the network (they are replaced by 0 with
    `torch.where`, so even NaN garbage there is harmless);
  * padded days are treated as missing on every pixel (their values AND mask contents are
    discarded at the start), and temporal tokens made only of padded days get zero attention
    weight (-inf score before the softmax).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from sensorlm.typed_config import ConfigError
from sensorlm.models.registry import register_preset

__all__ = [
    "SSTConfig",
    "VideoEncoder",
    "TemporalPositionalEncoding",
    "TemporalAttentionAggregator",
    "SpatialPositionalEncoding2D",
    "SpatialTransformer",
    "MonthlyConvDecoder",
    "SpatioTemporalModel",
    "sinusoidal_table",
    "month_of_year_from_last",
    "observed_summary",
]

MONTHS_PER_YEAR = 12


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def _positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive integer, got {value!r}")


@dataclass
class SSTConfig:
    """Configuration of `SpatioTemporalModel`.

    Args:
        height: grid height H in pixels.
        width: grid width W in pixels.
        months: number of month slots M in the input window (the output is the last month).
        days_per_month: days per month slot D (31 real days at most; the rest padded).
        patch: patch size (Pt, Ph, Pw) in (days, pixels, pixels); non-overlapping 3-D patches.
        embed_dim: token width E.
        hidden: channel width of the convolutional decoder.
        depth: number of spatial transformer layers.
        num_heads: attention heads (spatial transformer and cross-month attention).
        mlp_ratio: feed-forward width of the spatial transformer as a multiple of `embed_dim`.
        dropout: dropout rate (patch embedding, attention, feed-forward).
        overlap: pixels by which each patch's deconvolution footprint spills into its
            neighbours (ConvTranspose2d kernel = patch + 2*overlap, stride = patch,
            padding = overlap, so the output is exactly (H, W)).
        input_skip: give the decoder, at full resolution, each pixel's mean and fraction of
            observed days (last month and whole window; `observed_summary`), beside the tokens.
    """

    height: int = 128
    width: int = 128
    months: int = 3
    days_per_month: int = 32
    patch: tuple[int, int, int] = (4, 8, 8)
    embed_dim: int = 128
    hidden: int = 128
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    overlap: int = 2
    input_skip: bool = True

    def __post_init__(self) -> None:
        for name in ("height", "width", "months", "days_per_month", "embed_dim", "hidden", "depth", "num_heads"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.patch, list):
            self.patch = tuple(self.patch)
        if not isinstance(self.patch, tuple) or len(self.patch) != 3:
            raise ConfigError(f"patch must be three integers (Pt, Ph, Pw), got {self.patch!r}")
        for i, p in enumerate(self.patch):
            _positive_int(f"patch[{i}]", p)
        pt, ph, pw = self.patch
        if self.days_per_month % pt != 0:
            raise ConfigError(
                f"days_per_month {self.days_per_month} is not divisible by the temporal patch patch[0]={pt}"
            )
        if self.height % ph != 0:
            raise ConfigError(f"height {self.height} is not divisible by the patch height patch[1]={ph}")
        if self.width % pw != 0:
            raise ConfigError(f"width {self.width} is not divisible by the patch width patch[2]={pw}")
        if self.embed_dim % 2 != 0:
            # Sine/cosine halves for day|month and height|width need an even width.
            raise ConfigError(f"embed_dim must be even, got {self.embed_dim}")
        if self.embed_dim % self.num_heads != 0:
            raise ConfigError(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if isinstance(self.mlp_ratio, bool) or not isinstance(self.mlp_ratio, (int, float)) or self.mlp_ratio <= 0:
            raise ConfigError(f"mlp_ratio must be a positive number, got {self.mlp_ratio!r}")
        if int(self.embed_dim * self.mlp_ratio) < 1:
            raise ConfigError(f"mlp_ratio {self.mlp_ratio} gives an empty feed-forward layer for embed_dim {self.embed_dim}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int) or self.overlap < 0:
            raise ConfigError(f"overlap must be a non-negative integer, got {self.overlap!r}")
        if not isinstance(self.input_skip, bool):
            raise ConfigError(f"input_skip must be true or false, got {self.input_skip!r}")

    @property
    def tokens_per_month(self) -> int:
        return self.days_per_month // self.patch[0]

    @property
    def grid(self) -> tuple[int, int]:
        """Patch grid (H', W')."""
        return self.height // self.patch[1], self.width // self.patch[2]


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def sinusoidal_table(length: int, dim: int, base: float = 10000.0) -> torch.Tensor:
    """Transformer sinusoidal table (length, dim): pe[t, 2i] = sin(t / base^(2i/dim)),
    pe[t, 2i+1] = cos(t / base^(2i/dim)).

    Args:
        length: number of positions.
        dim: encoding width (an odd width drops the last cosine column).
        base: wavelength base.
    """
    _positive_int("length", length)
    _positive_int("dim", dim)
    even = dim + (dim % 2)
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(base) * torch.arange(0, even, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(length, even, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * freq)
    pe[:, 1::2] = torch.cos(pos * freq)
    return pe[:, :dim].to(torch.float32)


def month_of_year_from_last(last_month: torch.Tensor, months: int) -> torch.Tensor:
    """Month-of-year indices (B, M) in 0..11 of a window whose last slot is `last_month`.

    Args:
        last_month: (B,) integer calendar month 1..12 of the last (target) month, as stored in
            the SST samples' `month` field.
        months: number of month slots M in the window.
    """
    if last_month.dim() != 1:
        raise ValueError(f"last_month: expected shape (B,), got {tuple(last_month.shape)}")
    if last_month.numel() and (int(last_month.min()) < 1 or int(last_month.max()) > 12):
        raise ValueError(
            f"last_month: values must be calendar months 1..12, got range "
            f"[{int(last_month.min())}, {int(last_month.max())}]"
        )
    offsets = torch.arange(months - 1, -1, -1, device=last_month.device)  # M-1, ..., 0
    return (last_month.long()[:, None] - 1 - offsets[None, :]) % MONTHS_PER_YEAR


SKIP_CHANNELS = 4


def observed_summary(x: torch.Tensor, missing: torch.Tensor, days_per_month: int) -> torch.Tensor:
    """Per-pixel mean and fraction of observed days, of the last month and of the whole window.

    Args:
        x: (B, 1, S, H, W) daily values (anything where missing).
        missing: same shape bool, True = missing (cloud, land, padded day, held out).
        days_per_month: day slots per month; the last month is the last `days_per_month` slots.

    Returns:
        (B, 4, H, W) float32: last-month mean, last-month fraction of day slots observed, window
        mean, window fraction; a mean is 0 where the pixel was never observed (its fraction then
        says so). Summed in float32: a bf16 sum over a month's days would lose the mean's digits.
    """
    valid = ~missing
    vals = torch.where(valid, x.float(), torch.zeros((), device=x.device))[:, 0]
    valid = valid[:, 0].float()
    out = []
    for sl in (slice(x.shape[2] - days_per_month, None), slice(None)):
        n = valid[:, sl].sum(dim=1)
        mean = vals[:, sl].sum(dim=1) / n.clamp_min(1)
        out += [mean, n / valid[:, sl].shape[1]]
    return torch.stack(out, dim=1)


def _check_shape(name: str, t: torch.Tensor, expected: tuple[int | None, ...], meaning: str) -> None:
    """Raise ValueError naming the tensor, the expected shape and the given one (None = any size, shown as B)."""
    if t.dim() != len(expected) or any(e is not None and e != s for e, s in zip(expected, t.shape)):
        shown = "(" + ", ".join("B" if e is None else str(e) for e in expected) + ("," if len(expected) == 1 else "") + ")"
        raise ValueError(f"{name}: expected shape {shown} {meaning}, got {tuple(t.shape)}")


# --------------------------------------------------------------------------------------------
# 1. Video encoder
# --------------------------------------------------------------------------------------------


class VideoEncoder(nn.Module):
    """Masked 3-D patch embedding: (B,C,T,H,W) + mask -> (B, T'*H'*W', E).

    Missing values are zeroed and the validity map is appended as extra channels, so the
    network knows where observations were; a Conv3d with kernel = stride = patch embeds each
    non-overlapping (Pt, Ph, Pw) patch. Tokens are ordered (t', h', w') with w' fastest.

    Args:
        embed_dim: token width E.
        patch: (Pt, Ph, Pw).
        in_chans: data channels C (the validity map doubles them).
        dropout: dropout on the tokens.
    """

    def __init__(self, embed_dim: int, patch: tuple[int, int, int], in_chans: int = 1, dropout: float = 0.0):
        super().__init__()
        self.patch = tuple(patch)
        self.in_chans = in_chans
        self.proj = nn.Conv3d(2 * in_chans, embed_dim, kernel_size=self.patch, stride=self.patch)
        self.norm = nn.LayerNorm(embed_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x: (B,C,T,H,W) float; mask: same shape, nonzero/True = missing -> (B, N, E)."""
        if x.dim() != 5 or x.shape[1] != self.in_chans:
            raise ValueError(f"x: expected shape (B, {self.in_chans}, T, H, W), got {tuple(x.shape)}")
        if mask.shape != x.shape:
            raise ValueError(f"mask: expected the shape of x {tuple(x.shape)}, got {tuple(mask.shape)}")
        for name, size, p in zip(("T", "H", "W"), x.shape[2:], self.patch):
            if size % p != 0:
                raise ValueError(f"x: {name}={size} is not divisible by the patch size {p} (x shape {tuple(x.shape)})")
        valid = ~mask.bool()
        # where (not x * valid) so that NaN/inf garbage at missing pixels cannot leak through.
        x_valid = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
        x_cat = torch.cat([x_valid, valid.to(x.dtype)], dim=1)
        z = self.proj(x_cat)  # (B, E, T', H', W')
        z = z.flatten(2).transpose(1, 2)  # (B, N, E)
        return self.drop(self.norm(z))


# --------------------------------------------------------------------------------------------
# 2. Temporal positional encoding
# --------------------------------------------------------------------------------------------


class TemporalPositionalEncoding(nn.Module):
    """Fixed sinusoidal encoding of time indices (buffer, no parameters).

    Args:
        embed_dim: encoding width.
        max_len: largest supported sequence length.
    """

    def __init__(self, embed_dim: int, max_len: int):
        super().__init__()
        self.embed_dim = embed_dim
        self.max_len = max_len
        self.register_buffer("pe", sinusoidal_table(max_len, embed_dim), persistent=False)

    def forward(self, length: int) -> torch.Tensor:
        """Encodings of indices 0..length-1: (length, embed_dim)."""
        if not 0 < length <= self.max_len:
            raise ValueError(f"temporal length {length} is outside 1..max_len={self.max_len}")
        return self.pe[:length]

    def lookup(self, index: torch.Tensor) -> torch.Tensor:
        """Encodings of arbitrary integer indices: (*index.shape, embed_dim)."""
        return self.pe[index.long()]


# --------------------------------------------------------------------------------------------
# 3. Temporal attention aggregator
# --------------------------------------------------------------------------------------------


def _score_mlp(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, 1))


class TemporalAttentionAggregator(nn.Module):
    """Per spatial patch: attention-pool the temporal tokens of each month, let the month tokens
    attend to each other, then attention-pool the months -> one token per spatial patch.

    Positions: half of the width carries the day-in-month encoding (index of the temporal token
    within its month slot), the other half the month-of-year encoding (0..11). They are
    concatenated rather than summed from one table, so (day d, month m) and (day m, month d)
    cannot collide.

    Args:
        embed_dim: token width E.
        months: month slots M.
        tokens_per_month: temporal tokens per month slot T = days_per_month / Pt.
        num_heads: heads of the cross-month attention.
        dropout: dropout on the cross-month attention.
    """

    def __init__(self, embed_dim: int, months: int, tokens_per_month: int, num_heads: int = 4, dropout: float = 0.0):
        super().__init__()
        self.embed_dim = embed_dim
        self.months = months
        self.tokens_per_month = tokens_per_month
        self.day_pe = TemporalPositionalEncoding(embed_dim // 2, tokens_per_month)
        self.month_pe = TemporalPositionalEncoding(embed_dim - embed_dim // 2, MONTHS_PER_YEAR)
        self.day_score = _score_mlp(embed_dim)
        # Pre-norm residual around the cross-month attention keeps each month's own summary
        # reachable by the month scoring below.
        self.month_norm = nn.LayerNorm(embed_dim)
        self.month_attn = nn.MultiheadAttention(embed_dim, num_heads, dropout=dropout, batch_first=True)
        self.month_drop = nn.Dropout(dropout)
        self.month_score = _score_mlp(embed_dim)

    def positional(self, batch: int, month_of_year: torch.Tensor | None, device: torch.device) -> torch.Tensor:
        """(B, M, T, E) day-in-month | month-of-year encodings."""
        M, T = self.months, self.tokens_per_month
        if month_of_year is None:
            # No calendar given: fall back to the slot index, which still orders the months.
            month_of_year = (torch.arange(M, device=device) % MONTHS_PER_YEAR).expand(batch, M)
        day = self.day_pe(T)[None, None].expand(batch, M, T, -1)
        month = self.month_pe.lookup(month_of_year)[:, :, None].expand(batch, M, T, -1)
        return torch.cat([day, month], dim=-1)

    def forward(
        self,
        x: torch.Tensor,
        token_padded: torch.Tensor | None = None,
        month_of_year: torch.Tensor | None = None,
        return_weights: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Aggregate time away.

        Args:
            x: (B, M*T*S, E) tokens ordered (month, token-in-month, spatial patch).
            token_padded: (B, M*T) bool, True = the temporal token covers only padded days.
            month_of_year: (B, M) long 0..11, or None.
            return_weights: also return {"day": (B,S,M,T), "month": (B,S,M)} float32 weights.

        Returns:
            (B, S, E), S = number of spatial patches.
        """
        M, T, E = self.months, self.tokens_per_month, self.embed_dim
        if x.dim() != 3 or x.shape[2] != E or x.shape[1] % (M * T) != 0:
            raise ValueError(f"x: expected shape (B, {M}*{T}*S, {E}), got {tuple(x.shape)}")
        B = x.shape[0]
        S = x.shape[1] // (M * T)
        if token_padded is not None:
            _check_shape("token_padded", token_padded, (B, M * T), "(B, M*T) bool")
        if month_of_year is not None:
            _check_shape("month_of_year", month_of_year, (B, M), "(B, M) month indices 0..11")

        seq = x.view(B, M, T, S, E).permute(0, 3, 1, 2, 4)  # (B, S, M, T, E)
        seq = seq + self.positional(B, month_of_year, x.device).to(seq.dtype)[:, None]

        # Day pooling inside each month slot; softmax in float32 for stable weights.
        scores = self.day_score(seq).squeeze(-1).float()  # (B, S, M, T)
        if token_padded is not None:
            pad = token_padded.bool().view(B, 1, M, T)
            month_empty = pad.all(dim=-1)  # (B, 1, M): a slot with no real day
            # An empty slot keeps finite scores (no NaN from an all -inf softmax); it is removed
            # at the month level instead.
            scores = scores.masked_fill(pad & ~month_empty[..., None], float("-inf"))
        else:
            month_empty = torch.zeros(B, 1, M, dtype=torch.bool, device=x.device)
        day_w = torch.softmax(scores, dim=-1)
        month_tok = (day_w.to(seq.dtype)[..., None] * seq).sum(dim=-2)  # (B, S, M, E)

        # Cross-month mixing over the M month tokens of each spatial patch.
        mt = month_tok.reshape(B * S, M, E)
        # Ignore empty slots as keys, unless every slot is empty (then nothing is ignored).
        ignore = month_empty[:, 0] & ~month_empty[:, 0].all(dim=-1, keepdim=True)  # (B, M)
        ignore = ignore[:, None].expand(B, S, M).reshape(B * S, M)
        h = self.month_norm(mt)
        attn, _ = self.month_attn(h, h, h, key_padding_mask=ignore, need_weights=False)
        mt = mt + self.month_drop(attn)

        # Month pooling -> one token per spatial patch.
        mscores = self.month_score(mt).squeeze(-1).float().masked_fill(ignore, float("-inf"))
        month_w = torch.softmax(mscores, dim=-1)  # (B*S, M)
        out = (month_w.to(mt.dtype)[..., None] * mt).sum(dim=1).view(B, S, E)
        if return_weights:
            return out, {"day": day_w, "month": month_w.view(B, S, M)}
        return out


# --------------------------------------------------------------------------------------------
# 4. Spatial positional encoding
# --------------------------------------------------------------------------------------------


class SpatialPositionalEncoding2D(nn.Module):
    """Fixed 2-D sinusoidal encoding of an (H', W') patch grid (buffer, no parameters).

    The first half of the width encodes the row index, the second half the column index, each
    with the 1-D sine/cosine table. Rows are flattened row-major, matching the token order.

    Args:
        embed_dim: encoding width (even).
        height: grid rows H'.
        width: grid columns W'.
    """

    def __init__(self, embed_dim: int, height: int, width: int):
        super().__init__()
        if embed_dim % 2 != 0:
            raise ValueError(f"embed_dim must be even for the 2-D encoding, got {embed_dim}")
        self.embed_dim, self.height, self.width = embed_dim, height, width
        half = embed_dim // 2
        rows = sinusoidal_table(height, half)[:, None, :].expand(height, width, half)
        cols = sinusoidal_table(width, half)[None, :, :].expand(height, width, half)
        pe = torch.cat([rows, cols], dim=-1).reshape(height * width, embed_dim)
        self.register_buffer("pe", pe.contiguous(), persistent=False)

    def forward(self) -> torch.Tensor:
        """(H'*W', embed_dim) encodings in row-major order."""
        return self.pe


# --------------------------------------------------------------------------------------------
# 5. Spatial transformer
# --------------------------------------------------------------------------------------------


class SpatialTransformer(nn.Module):
    """`depth` pre-norm transformer encoder layers over the spatial tokens, then a final norm.

    Args:
        embed_dim: token width.
        depth: number of layers.
        num_heads: attention heads.
        mlp_ratio: feed-forward width multiple.
        dropout: dropout in attention and feed-forward.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int = 4, mlp_ratio: float = 4.0, dropout: float = 0.0):
        super().__init__()
        layer = nn.TransformerEncoderLayer(
            d_model=embed_dim,
            nhead=num_heads,
            dim_feedforward=int(embed_dim * mlp_ratio),
            dropout=dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Pre-norm layers leave the residual stream un-normalised: close it with a LayerNorm.
        # Nested tensors are only used with padding masks, which spatial tokens never have.
        self.encoder = nn.TransformerEncoder(
            layer, num_layers=depth, norm=nn.LayerNorm(embed_dim), enable_nested_tensor=False
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, S, E) -> (B, S, E)."""
        return self.encoder(x)


# --------------------------------------------------------------------------------------------
# 6. Monthly convolutional decoder
# --------------------------------------------------------------------------------------------


class MonthlyConvDecoder(nn.Module):
    """Tokens of the (H', W') grid -> (B, 1, H, W) map.

    1x1 conv (E -> hidden), overlapping transposed conv back to pixels (kernel = patch +
    2*overlap, stride = patch, padding = overlap: output exactly (H'*Ph, W'*Pw) and each patch
    paints `overlap` pixels into its neighbours), a refinement block against blocky artefacts,
    a 1x1 head, learnable scale and bias, and land pixels set to 0.

    Args:
        embed_dim: token width E.
        hidden: decoder channels.
        grid: (H', W').
        patch: (Ph, Pw) spatial patch size.
        overlap: deconvolution overlap in pixels.
        skip_channels: full-resolution input channels concatenated before the refinement block
            and again before the head (0: none), so the head has a linear path from them.
    """

    def __init__(self, embed_dim: int, hidden: int, grid: tuple[int, int], patch: tuple[int, int], overlap: int = 2,
                 skip_channels: int = 0):
        super().__init__()
        self.skip_channels = skip_channels
        self.grid = tuple(grid)
        self.patch = tuple(patch)
        self.embed_dim = embed_dim
        ph, pw = self.patch
        self.proj = nn.Conv2d(embed_dim, hidden, kernel_size=1)
        self.deconv = nn.ConvTranspose2d(
            hidden, hidden, kernel_size=(ph + 2 * overlap, pw + 2 * overlap), stride=(ph, pw), padding=overlap
        )
        # Convolutions feeding a BatchNorm carry no bias: the norm's shift replaces it.
        self.refine = nn.Sequential(
            nn.Conv2d(hidden + skip_channels, hidden, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
            nn.Conv2d(hidden, hidden, kernel_size=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.GELU(),
        )
        self.head = nn.Conv2d(hidden + skip_channels, 1, kernel_size=1)
        if skip_channels:
            # Start by reproducing what was seen: the output begins as the first skip channel
            # (the last month's observed mean; 0 where never observed) plus the learnt part.
            with torch.no_grad():
                self.head.weight[:, hidden:] = 0.0
                self.head.weight[0, hidden] = 1.0
        self.scale = nn.Parameter(torch.ones(1))
        self.bias = nn.Parameter(torch.zeros(1))

    @property
    def out_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch[0], self.grid[1] * self.patch[1]

    def forward(self, x: torch.Tensor, land_mask: torch.Tensor | None = None,
                skip: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, H'*W', E); land_mask: (B, H, W) bool True = land, or None; skip: (B,
        skip_channels, H, W) when skip_channels > 0 -> (B, 1, H, W)."""
        gh, gw = self.grid
        _check_shape("tokens", x, (None, gh * gw, self.embed_dim), "(B, H'*W', E)")
        B = x.shape[0]
        H, W = self.out_size
        if land_mask is not None:
            _check_shape("land_mask", land_mask, (B, H, W), "(B, H, W) bool, True = land")
        z = x.transpose(1, 2).reshape(B, self.embed_dim, gh, gw)
        z = self.deconv(self.proj(z))  # (B, hidden, H, W)
        if self.skip_channels:
            if skip is None:
                raise ValueError(f"skip: this decoder needs (B, {self.skip_channels}, H, W) skip channels, got None")
            _check_shape("skip", skip, (B, self.skip_channels, H, W), "(B, skip_channels, H, W)")
            skip = skip.to(z.dtype)
            z = self.head(torch.cat([self.refine(torch.cat([z, skip], dim=1)), skip], dim=1))
        else:
            z = self.head(self.refine(z))  # (B, 1, H, W)
        out = z * self.scale + self.bias
        if land_mask is not None:
            out = torch.where(land_mask.bool()[:, None], torch.zeros((), dtype=out.dtype, device=out.device), out)
        return out


# --------------------------------------------------------------------------------------------
# The model
# --------------------------------------------------------------------------------------------


class SpatioTemporalModel(nn.Module):
    """Daily fields of M month slots -> monthly map of the last month.

    Args:
        cfg: an `SSTConfig`.
    """

    def __init__(self, cfg: SSTConfig):
        super().__init__()
        if not isinstance(cfg, SSTConfig):
            raise TypeError(f"cfg: expected an SSTConfig, got {type(cfg).__name__}")
        self.config = cfg
        pt, ph, pw = cfg.patch
        gh, gw = cfg.grid
        self.encoder = VideoEncoder(cfg.embed_dim, cfg.patch, in_chans=1, dropout=cfg.dropout)
        self.aggregator = TemporalAttentionAggregator(
            cfg.embed_dim, cfg.months, cfg.tokens_per_month, num_heads=cfg.num_heads, dropout=cfg.dropout
        )
        self.spatial_pe = SpatialPositionalEncoding2D(cfg.embed_dim, gh, gw)
        self.spatial = SpatialTransformer(cfg.embed_dim, cfg.depth, cfg.num_heads, cfg.mlp_ratio, cfg.dropout)
        self.decoder = MonthlyConvDecoder(cfg.embed_dim, cfg.hidden, (gh, gw), (ph, pw), cfg.overlap,
                                          SKIP_CHANNELS if cfg.input_skip else 0)

    def _check_inputs(
        self,
        x: torch.Tensor,
        daily_mask: torch.Tensor,
        padded_days: torch.Tensor,
        land_mask: torch.Tensor | None,
        month_of_year: torch.Tensor | None,
    ) -> None:
        c = self.config
        days = c.months * c.days_per_month
        _check_shape("x", x, (None, 1, days, c.height, c.width), f"(B, 1, M*D={c.months}*{c.days_per_month}, H, W)")
        if not x.is_floating_point():
            raise ValueError(f"x: expected a floating-point tensor, got {x.dtype}")
        B = x.shape[0]
        _check_shape("daily_mask", daily_mask, tuple(x.shape), "(the shape of x; 1/True = missing)")
        _check_shape("padded_days", padded_days, (B, days), "(B, M*D) bool, True = padded")
        if land_mask is not None:
            _check_shape("land_mask", land_mask, (B, c.height, c.width), "(B, H, W) bool, True = land")
        if month_of_year is not None:
            _check_shape("month_of_year", month_of_year, (B, c.months), "(B, M) month indices 0..11")
            if month_of_year.is_floating_point() or month_of_year.dtype == torch.bool:
                raise ValueError(f"month_of_year: expected an integer tensor, got {month_of_year.dtype}")
            if month_of_year.numel() and (int(month_of_year.min()) < 0 or int(month_of_year.max()) > 11):
                raise ValueError(
                    f"month_of_year: values must be 0..11 (January = 0), got range "
                    f"[{int(month_of_year.min())}, {int(month_of_year.max())}]"
                )

    def forward(
        self,
        x: torch.Tensor,
        daily_mask: torch.Tensor,
        padded_days: torch.Tensor,
        land_mask: torch.Tensor | None = None,
        month_of_year: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict the monthly map of the last month slot.

        Args:
            x: (B, 1, M*D, H, W) daily values (anything at missing or padded days).
            daily_mask: (B, 1, M*D, H, W), 1/True = missing (cloud, land, held out).
            padded_days: (B, M*D) bool, True = day slot beyond the month's real length.
            land_mask: (B, H, W) bool, True = land (output set to 0 there), or None.
            month_of_year: (B, M) long, month of each slot, 0 = January; None = slot index.

        Returns:
            (B, 1, H, W).
        """
        self._check_inputs(x, daily_mask, padded_days, land_mask, month_of_year)
        c = self.config
        B = x.shape[0]
        padded = padded_days.bool()
        # Padded days count as missing everywhere, so neither their values nor their mask
        # contents reach the network.
        missing = daily_mask.bool() | padded[:, None, :, None, None]
        tokens = self.encoder(x, missing)  # (B, M*T'*H'*W', E)
        token_padded = padded.view(B, c.months * c.tokens_per_month, c.patch[0]).all(dim=-1)
        z = self.aggregator(tokens, token_padded, month_of_year)  # (B, H'*W', E)
        z = z + self.spatial_pe().to(z.dtype)
        z = self.spatial(z)
        skip = observed_summary(x, missing, c.days_per_month) if c.input_skip else None
        return self.decoder(z, land_mask, skip)


# --------------------------------------------------------------------------------------------
# Presets
# --------------------------------------------------------------------------------------------

register_preset(
    "sst_tiny",
    SSTConfig(
        height=32, width=32, months=2, days_per_month=32, patch=(4, 4, 4),
        embed_dim=32, hidden=32, depth=1, num_heads=4, dropout=0.0, overlap=2,
    ),
    SpatioTemporalModel,
)
register_preset(
    "sst_base",
    SSTConfig(
        height=128, width=128, months=3, days_per_month=32, patch=(4, 8, 8),
        embed_dim=128, hidden=128, depth=4, num_heads=4, dropout=0.1, overlap=2,
    ),
    SpatioTemporalModel,
)
