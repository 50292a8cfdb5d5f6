"""Hierarchical Vision Transformer (HVT): patch embedding, global-attention stages with 2x2 patch
merging between them (Swin-style hierarchy without windows), an optional second spectral stream.

Two models live here:

- `HVTEncoder` (`HVTConfig`): images. An RGB stream and an optional spectral stream, each
  PatchEmbed -> learned position embedding -> stages -> final LayerNorm. `forward_features_encoded`
  returns the token sequences of both streams; `forward` mean-pools each stream, concatenates them
  and applies a linear head.
- `HVTSensorEncoder` (`HVTSensorConfig`): an alternative sensor tower for SensorLM. A (B, T, C)
  wearable day is read as a 1-channel (T x C) image, e.g. (1440, 34) with patch (10, 2) ->
  a (144, 17) patch grid; output is an L2-normalised (B, embed_dim) embedding.

Patch merging halves each side of the grid; an odd side is first padded with zero tokens to the
next even size (so 17 -> 9, 9 -> 5, ...). Attention inside a stage is global over the grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sensorlm.typed_config import ConfigError
from sensorlm.models.blocks import MAPHead, TransformerBlock
from sensorlm.models.registry import register_preset


def _pair(v: int | tuple[int, int] | list[int], name: str) -> tuple[int, int]:
    """Turn an int or a 2-sequence of positive ints into a pair, naming `name` on error."""
    if isinstance(v, int) and not isinstance(v, bool):
        pair = (v, v)
    elif isinstance(v, (tuple, list)) and len(v) == 2:
        pair = (v[0], v[1])
    else:
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    for x in pair:
        if isinstance(x, bool) or not isinstance(x, int) or x < 1:
            raise ValueError(f"{name} must hold positive integers, got {v!r}")
    return pair


def _init_weights(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


class PatchEmbed(nn.Module):
    """Split an image into non-overlapping patches and embed each (a strided Conv2d).

    Args:
        img_size: (H, W) or an int for square images; each side must be divisible by the patch.
        patch_size: (ph, pw) or an int.
        in_chans: input channels.
        embed_dim: output token width.
        norm_layer: optional norm class applied to the tokens, e.g. `nn.LayerNorm`.

    Attributes:
        grid_size: (H // ph, W // pw); num_patches: their product.
    """

    def __init__(
        self,
        img_size: int | tuple[int, int] = (224, 224),
        patch_size: int | tuple[int, int] = 16,
        in_chans: int = 3,
        embed_dim: int = 96,
        norm_layer: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        self.img_size = _pair(img_size, "img_size")
        self.patch_size = _pair(patch_size, "patch_size")
        for side, (s, p) in zip(("height", "width"), zip(self.img_size, self.patch_size)):
            if s % p != 0:
                # A strided conv would silently drop the remainder; refuse instead.
                raise ValueError(
                    f"image {side} {s} is not divisible by patch {side} {p} "
                    f"(img_size={self.img_size}, patch_size={self.patch_size})"
                )
        self.in_chans = in_chans
        self.grid_size = (self.img_size[0] // self.patch_size[0], self.img_size[1] // self.patch_size[1])
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size, stride=self.patch_size)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_chans, H, W) -> (B, num_patches, embed_dim), row-major over the grid."""
        expected = (self.in_chans, *self.img_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"PatchEmbed expected input (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}")
        x = self.proj(x)  # B, C_embed, H_grid, W_grid
        return self.norm(x.flatten(2).transpose(1, 2))


class PatchMerging(nn.Module):
    """Merge each 2x2 group of neighbouring tokens: concat (4C) -> LayerNorm -> Linear(4C, 2C).

    An odd grid side is padded with zero tokens to the next even size first, so the output grid
    is (ceil(H/2), ceil(W/2)); the padded tokens only contribute zeros to the concatenation.

    Args:
        input_resolution_patches: (H, W) token grid of the input.
        dim: input token width C.
        norm_layer: norm class applied to the 4C concatenation.
    """

    def __init__(
        self,
        input_resolution_patches: tuple[int, int],
        dim: int,
        norm_layer: Callable[[int], nn.Module] = nn.LayerNorm,
    ):
        super().__init__()
        self.input_resolution = _pair(tuple(input_resolution_patches), "input_resolution_patches")
        self.dim = dim
        h, w = self.input_resolution
        self.output_resolution = ((h + 1) // 2, (w + 1) // 2)
        self.out_dim = 2 * dim
        self.norm = norm_layer(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, C) -> (B, ceil(H/2)*ceil(W/2), 2C)."""
        h, w = self.input_resolution
        if x.ndim != 3 or x.shape[1] != h * w or x.shape[2] != self.dim:
            raise ValueError(
                f"PatchMerging expected input (B, {h * w}, {self.dim}) for grid {h}x{w}, got {tuple(x.shape)}"
            )
        B = x.shape[0]
        x = x.view(B, h, w, self.dim)
        if h % 2 or w % 2:
            # F.pad pads from the last dim backwards: (C: 0,0), (W: 0, w%2), (H: 0, h%2).
            x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))
        x0 = x[:, 0::2, 0::2]
        x1 = x[:, 1::2, 0::2]
        x2 = x[:, 0::2, 1::2]
        x3 = x[:, 1::2, 1::2]
        x = torch.cat([x0, x1, x2, x3], dim=-1).reshape(B, -1, 4 * self.dim)  # B, H/2*W/2, 4C
        return self.reduction(self.norm(x))


class HVTStage(nn.Module):
    """`depth` global-attention TransformerBlocks, then an optional downsampling layer.

    Args:
        dim: token width.
        input_resolution: (H, W) token grid.
        depth: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP width multiple.
        qkv_bias: bias on qkv.
        drop: dropout in blocks.
        attn_drop: attention-weight dropout.
        downsample: a class called as `downsample(input_resolution, dim)` (e.g. `PatchMerging`), or None.

    Attributes:
        output_resolution, out_dim: grid and width after the stage.
    """

    def __init__(
        self,
        dim: int,
        input_resolution: tuple[int, int],
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        downsample: Callable[[tuple[int, int], int], nn.Module] | None = None,
    ):
        super().__init__()
        self.dim = dim
        self.input_resolution = tuple(input_resolution)
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList(
            [TransformerBlock(dim, num_heads, mlp_ratio, qkv_bias, drop, attn_drop) for _ in range(depth)]
        )
        self.downsample_layer = downsample(self.input_resolution, dim) if downsample is not None else None
        if self.downsample_layer is None:
            self.output_resolution, self.out_dim = self.input_resolution, dim
        else:
            self.output_resolution = self.downsample_layer.output_resolution
            self.out_dim = self.downsample_layer.out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, H*W, dim) -> (B, H'*W', out_dim)."""
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                # Recompute block activations in backward: the first stages hold the most tokens.
                x = checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        if self.downsample_layer is not None:
            x = self.downsample_layer(x)
        return x


def _check_stages(prefix: str, width: int, depths: tuple[int, ...], num_heads: tuple[int, ...]) -> None:
    if len(depths) < 1:
        raise ConfigError(f"{prefix}depths must list at least one stage, got {depths!r}")
    if len(depths) != len(num_heads):
        raise ConfigError(f"{prefix}depths {depths!r} and num_heads {num_heads!r} must have the same length")
    for i, (d, h) in enumerate(zip(depths, num_heads)):
        if d < 1:
            raise ConfigError(f"{prefix}depths[{i}] must be >= 1, got {d}")
        dim = width * 2**i
        if h < 1 or dim % h:
            raise ConfigError(f"{prefix}num_heads[{i}]={h} must be >= 1 and divide the stage width {dim}")


def _build_stages(
    width: int, grid: tuple[int, int], depths, num_heads, mlp_ratio, qkv_bias, drop, attn_drop
) -> nn.ModuleList:
    """Stages of widths width * 2**i; every stage but the last ends in PatchMerging."""
    stages = nn.ModuleList()
    dim, res = width, grid
    for i, (depth, heads) in enumerate(zip(depths, num_heads)):
        last = i == len(depths) - 1
        stage = HVTStage(dim, res, depth, heads, mlp_ratio, qkv_bias, drop, attn_drop, None if last else PatchMerging)
        stages.append(stage)
        dim, res = stage.out_dim, stage.output_resolution
    return stages


@dataclass
class HVTConfig:
    """Config of `HVTEncoder`.

    Args:
        img_size: (H, W) of both streams' images.
        patch_size: (ph, pw) patch of both streams.
        in_chans: RGB-stream channels.
        spectral_in_chans: channels of the optional spectral stream; 0 = RGB only.
        embed_dim: token width of the first stage (doubles at every merge).
        depths: blocks per stage.
        num_heads: heads per stage.
        mlp_ratio: MLP width multiple.
        qkv_bias: bias on qkv.
        drop_rate: dropout on position-embedded tokens and in blocks.
        attn_drop_rate: attention dropout.
        out_dim: width of the fused output embedding (linear head).
    """

    img_size: tuple[int, int] = (224, 224)
    patch_size: tuple[int, int] = (4, 4)
    in_chans: int = 3
    spectral_in_chans: int = 0
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    out_dim: int = 512

    def __post_init__(self) -> None:
        try:
            self.img_size = _pair(self.img_size, "img_size")
            self.patch_size = _pair(self.patch_size, "patch_size")
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        for name in ("in_chans", "embed_dim", "out_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.spectral_in_chans < 0:
            raise ConfigError(f"spectral_in_chans must be >= 0 (0 = no spectral stream), got {self.spectral_in_chans}")
        for side in (0, 1):
            if self.img_size[side] % self.patch_size[side]:
                raise ConfigError(f"img_size {self.img_size} is not divisible by patch_size {self.patch_size}")
        _check_stages("", self.embed_dim, self.depths, self.num_heads)
        for name in ("drop_rate", "attn_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class _Stream(nn.Module):
    """One image stream: PatchEmbed -> + learned pos embed -> dropout -> stages -> LayerNorm."""

    def __init__(self, cfg: HVTConfig, in_chans: int):
        super().__init__()
        self.patch_embed = PatchEmbed(cfg.img_size, cfg.patch_size, in_chans, cfg.embed_dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, cfg.embed_dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.stages = _build_stages(
            cfg.embed_dim, self.patch_embed.grid_size, cfg.depths, cfg.num_heads,
            cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate,
        )
        self.out_dim = self.stages[-1].out_dim
        self.output_resolution = self.stages[-1].output_resolution
        self.norm = nn.LayerNorm(self.out_dim)

    def forward(self, img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.pos_drop(self.patch_embed(img) + self.pos_embed)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x), self.patch_embed.grid_size


class HVTEncoder(nn.Module):
    """Hierarchical ViT over an RGB image and an optional spectral image of the same size.

    Args:
        cfg: an `HVTConfig`; `cfg.spectral_in_chans > 0` adds the spectral stream.

    Attributes:
        rgb_stream, spectral_stream (None without one), head (fused Linear), num_features
        (token width after the last stage), out_dim.
    """

    def __init__(self, cfg: HVTConfig):
        super().__init__()
        self.config = cfg
        self.rgb_stream = _Stream(cfg, cfg.in_chans)
        self.spectral_stream = _Stream(cfg, cfg.spectral_in_chans) if cfg.spectral_in_chans > 0 else None
        self.num_features = self.rgb_stream.out_dim
        self.num_streams = 1 if self.spectral_stream is None else 2
        self.out_dim = cfg.out_dim
        self.head = nn.Linear(self.num_streams * self.num_features, cfg.out_dim)
        self.apply(_init_weights)

    def forward_features_encoded(
        self, rgb_img: torch.Tensor, spectral_img: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[int, int], tuple[int, int] | None]:
        """Encode each stream to its final token sequence.

        Args:
            rgb_img: (B, in_chans, H, W).
            spectral_img: optional (B, spectral_in_chans, H, W); only with a spectral stream.

        Returns:
            (x_rgb_encoded (B, N', C'), x_spectral_encoded or None, rgb_orig_patch_grid (Hp, Wp),
            spectral_orig_patch_grid or None), where the grids are the patch grids before merging.
        """
        x_rgb, rgb_grid = self.rgb_stream(rgb_img)
        x_spec, spec_grid = None, None
        if spectral_img is not None:
            if self.spectral_stream is None:
                raise ValueError("spectral_img given but this HVTEncoder has no spectral stream (spectral_in_chans=0)")
            if spectral_img.shape[0] != rgb_img.shape[0]:
                raise ValueError(
                    f"spectral_img batch {spectral_img.shape[0]} differs from rgb_img batch {rgb_img.shape[0]}"
                )
            x_spec, spec_grid = self.spectral_stream(spectral_img)
        return x_rgb, x_spec, rgb_grid, spec_grid

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer-block activations in backward (less memory, ~1/3 more compute)."""
        for stream in (self.rgb_stream, self.spectral_stream):
            if stream is not None:
                for stage in stream.stages:
                    stage.grad_checkpointing = enable

    def forward_head(self, x_rgb: torch.Tensor, x_spectral: torch.Tensor | None = None) -> torch.Tensor:
        """Mean-pool each stream's tokens, concatenate, project: -> (B, out_dim)."""
        pooled = [x_rgb.mean(dim=1)] + ([] if x_spectral is None else [x_spectral.mean(dim=1)])
        return self.head(torch.cat(pooled, dim=-1))

    def forward(self, rgb: torch.Tensor, spectral: torch.Tensor | None = None) -> torch.Tensor:
        """(B, in_chans, H, W) [+ (B, spectral_in_chans, H, W)] -> fused (B, out_dim).

        A model built with a spectral stream needs the spectral image here (the head was sized
        for both streams); `forward_features_encoded` accepts it missing.
        """
        if self.spectral_stream is not None and spectral is None:
            raise ValueError(
                f"this HVTEncoder has a spectral stream ({self.config.spectral_in_chans} channels); "
                "forward needs the spectral image"
            )
        x_rgb, x_spec, _, _ = self.forward_features_encoded(rgb, spectral)
        return self.forward_head(x_rgb, x_spec)


@dataclass
class HVTSensorConfig:
    """Config of `HVTSensorEncoder` (the hierarchical sensor tower for SensorLM).

    Args:
        input_len: time steps T of a sample (1440 = one day at 1-minute resolution).
        num_channels: sensor channels C.
        patch_size: (time, channel) patch; must divide (input_len, num_channels).
        width: token width of the first stage (doubles at every merge).
        depths: blocks per stage; a PatchMerging sits between consecutive stages.
        num_heads: heads per stage.
        mlp_ratio: MLP width multiple.
        qkv_bias: bias on qkv.
        drop_rate: dropout in blocks and after the position embedding.
        attn_drop_rate: attention dropout.
        pool: "mean" (average of final tokens) or "map" (attention pooling).
        embed_dim: width of the output embedding (match the text tower's width in SensorLM).
    """

    input_len: int = 1440
    num_channels: int = 34
    patch_size: tuple[int, int] = (10, 2)
    width: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    pool: Literal["mean", "map"] = "mean"
    embed_dim: int = 768

    def __post_init__(self) -> None:
        try:
            self.patch_size = _pair(self.patch_size, "patch_size")
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.depths, self.num_heads = tuple(self.depths), tuple(self.num_heads)
        for name in ("input_len", "num_channels", "width", "embed_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.input_len % self.patch_size[0]:
            raise ConfigError(f"input_len {self.input_len} is not divisible by patch_size[0] {self.patch_size[0]}")
        if self.num_channels % self.patch_size[1]:
            raise ConfigError(
                f"num_channels {self.num_channels} is not divisible by patch_size[1] {self.patch_size[1]}"
            )
        _check_stages("", self.width, self.depths, self.num_heads)
        if self.pool not in ("mean", "map"):
            raise ConfigError(f"pool must be 'mean' or 'map', got {self.pool!r}")
        for name in ("drop_rate", "attn_drop_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name} must be in [0, 1), got {getattr(self, name)}")


class HVTSensorEncoder(nn.Module):
    """Hierarchical sensor tower: (B, T, C) -> L2-normalised (B, embed_dim).

    The day is read as a 1-channel T x C image and cut into (pt, pc) patches; e.g. (1440, 34)
    with patch (10, 2) gives a (144, 17) grid. Stages of global attention follow, with 2x2 patch
    merging between them; an odd grid side (17 here) is zero-padded to even at each merge, so the
    grid goes (144, 17) -> (72, 9) -> (36, 5) -> (18, 3). A final LayerNorm, mean or MAP pooling
    and a Linear to `embed_dim` end it.

    Missing data: `missing` (B, T) bool (True = missing minute) zeroes those time steps' inputs
    before patching, so whatever the loader put there (e.g. a normalised fill value) cannot leak
    in; the tokens themselves are not masked (a patch can mix observed and missing minutes).

    Args:
        cfg: an `HVTSensorConfig`.

    Attributes:
        embed_dim: output width; grid_size: the patch grid; num_features: final token width.
    """

    def __init__(self, cfg: HVTSensorConfig):
        super().__init__()
        self.config = cfg
        self.embed_dim = cfg.embed_dim
        self.patch_embed = PatchEmbed((cfg.input_len, cfg.num_channels), cfg.patch_size, 1, cfg.width)
        self.grid_size = self.patch_embed.grid_size
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches, cfg.width))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.stages = _build_stages(
            cfg.width, self.grid_size, cfg.depths, cfg.num_heads,
            cfg.mlp_ratio, cfg.qkv_bias, cfg.drop_rate, cfg.attn_drop_rate,
        )
        self.num_features = self.stages[-1].out_dim
        self.output_resolution = self.stages[-1].output_resolution
        self.norm = nn.LayerNorm(self.num_features)
        self.pool = MAPHead(self.num_features, cfg.num_heads[-1], cfg.mlp_ratio) if cfg.pool == "map" else None
        self.head = nn.Linear(self.num_features, cfg.embed_dim)
        self.apply(_init_weights)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute transformer-block activations in backward (less memory, ~1/3 more compute)."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, C) -> final normalised tokens (B, N', num_features)."""
        T, C = self.config.input_len, self.config.num_channels
        if x.ndim != 3 or tuple(x.shape[1:]) != (T, C):
            raise ValueError(f"HVTSensorEncoder expected sensor input (B, {T}, {C}), got {tuple(x.shape)}")
        if missing is not None:
            if tuple(missing.shape) != (x.shape[0], T):
                raise ValueError(
                    f"HVTSensorEncoder expected missing mask (B, T) = ({x.shape[0]}, {T}), got {tuple(missing.shape)}"
                )
            x = x.masked_fill(missing.to(torch.bool)[:, :, None], 0.0)
        x = self.pos_drop(self.patch_embed(x.unsqueeze(1)) + self.pos_embed)
        for stage in self.stages:
            x = stage(x)
        return self.norm(x)

    def forward(self, x: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
        """Args:
            x: (B, T, C) sensor values.
            missing: optional (B, T) bool, True = missing time step (its inputs are zeroed).

        Returns:
            (B, embed_dim), unit L2 norm.
        """
        x = self.forward_features(x, missing)
        pooled = x.mean(dim=1) if self.pool is None else self.pool(x)
        return F.normalize(self.head(pooled), dim=-1)


HVT_TINY = HVTConfig(
    img_size=(32, 32), patch_size=(4, 4), in_chans=3, spectral_in_chans=4,
    embed_dim=32, depths=(1, 1, 1), num_heads=(1, 2, 4), out_dim=64,
)
# Matches `sensorlm_tiny`: input (144, 34), patch (12, 2), text width 64.
HVT_SENSOR_TINY = HVTSensorConfig(
    input_len=144, num_channels=34, patch_size=(12, 2), width=32,
    depths=(1, 1), num_heads=(2, 4), embed_dim=64,
)

register_preset("hvt_tiny", HVT_TINY, HVTEncoder)
register_preset("hvt_sensor_tiny", HVT_SENSOR_TINY, HVTSensorEncoder)
