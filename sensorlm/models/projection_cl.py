"""ProjectionCL: CLIP-style symmetric contrastive alignment of two precomputed embeddings.

Only the projection heads are trained: features of modality A (e.g. a frozen image encoder's
1280-d output) and modality B (e.g. a frozen text encoder's 768-d output) are projected into a
shared space, L2-normalised and compared by scaled cosine similarity

    L_ij = s * <f_i, g_j>,   s = exp(logit_scale),

trained with the symmetric InfoNCE loss 0.5 * [CE(L, I) + CE(L^T, I)].

`s` is bounded to [min_logit_scale, max_logit_scale] by clamping the parameter itself after
every optimizer step (`parameter_bounds`, enforced by the trainer), as open_clip does. The
forward never clamps: a functional clamp would give the parameter a zero gradient once past the
bound (measured: with max 3 it stopped at 4.67 and never trained again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from sensorlm.losses import clip_loss
from sensorlm.models.bounds import clamp_init, log_bounds
from sensorlm.models.registry import register_preset


def _check_args(
    embed_dim: int,
    modality_dims: Sequence[int],
    num_layers: int,
    hidden_dim: int | None,
    dropout: float,
    logit_scale_init: float,
    max_logit_scale: float,
    min_logit_scale: float | None,
) -> None:
    """Raise ValueError naming the first invalid argument (shared by the module and its config)."""
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
        raise ValueError(f"embed_dim must be a positive integer, got {embed_dim!r}")
    if isinstance(modality_dims, (str, bytes)) or not isinstance(modality_dims, Sequence) or len(modality_dims) != 2:
        raise ValueError(f"modality_dims must contain exactly two dimensions, got {modality_dims!r}")
    for i, d in enumerate(modality_dims):
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"modality_dims[{i}] must be a positive integer, got {d!r}")
    if isinstance(num_layers, bool) or not isinstance(num_layers, int) or num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers!r}")
    if hidden_dim is not None and (isinstance(hidden_dim, bool) or not isinstance(hidden_dim, int) or hidden_dim < 1):
        raise ValueError(f"hidden_dim must be a positive integer or None, got {hidden_dim!r}")
    if not 0.0 <= dropout <= 1.0:
        raise ValueError(f"dropout must be in [0, 1], got {dropout!r}")
    if not logit_scale_init > 0:
        raise ValueError(f"logit_scale_init must be positive, got {logit_scale_init!r}")
    if not max_logit_scale > 0:
        raise ValueError(f"max_logit_scale must be positive, got {max_logit_scale!r}")
    if min_logit_scale is not None and not 0 < min_logit_scale <= max_logit_scale:
        raise ValueError(
            f"min_logit_scale must be in (0, max_logit_scale={max_logit_scale}], got {min_logit_scale!r}"
        )


def _build_head(
    in_dim: int, embed_dim: int, *, num_layers: int, hidden_dim: int, bias: bool, dropout: float
) -> nn.Sequential:
    """Projection head: (num_layers - 1) x [Linear -> GELU -> Dropout], then Linear to `embed_dim`.

    Args:
        in_dim: input feature width.
        embed_dim: output (shared space) width.
        num_layers: number of Linear layers (>= 1).
        hidden_dim: width of the hidden layers.
        bias: bias terms on the Linear layers.
        dropout: dropout after each hidden activation (not on the output).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for _ in range(num_layers - 1):
        layers += [nn.Linear(width, hidden_dim, bias=bias), nn.GELU(), nn.Dropout(dropout)]
        width = hidden_dim
    layers.append(nn.Linear(width, embed_dim, bias=bias))
    return nn.Sequential(*layers)


def _check_head(head: nn.Module, name: str) -> nn.Module:
    """A head without any Linear layer cannot project; refuse it rather than train nothing."""
    if not any(isinstance(m, nn.Linear) for m in head.modules()):
        raise RuntimeError(f"projection head {name} contains no nn.Linear layer: {head}")
    return head


class ProjectionCL(nn.Module):
    """CLIP-style symmetric contrastive projector for paired embeddings.

    Args:
        embed_dim: shared embedding width after projection.
        modality_dims: input widths (dim_a, dim_b) of the two modalities.
        bias: bias terms in the projection layers.
        logit_scale_init: initial value (not log-space) of the logit scale multiplier `s`.
        num_layers: Linear layers per projection head.
        hidden_dim: width of hidden layers (defaults to `embed_dim`).
        dropout: dropout rate after hidden layers.
        max_logit_scale: upper bound for `s` (a minimum temperature 1/s).
        min_logit_scale: optional lower bound for `s`.

    Raises:
        ValueError: modality_dims not two dims, num_layers < 1, dropout outside [0, 1],
            logit_scale_init <= 0, max_logit_scale <= 0, min_logit_scale not in (0, max_logit_scale].
        RuntimeError: a projection head contains no linear layer.

    Attributes:
        proj_a, proj_b: the projection heads.
        init_value: log(logit_scale_init), the starting value of `logit_scale`.
        logit_scale: shape-(1,) parameter holding log(s).
    """

    def __init__(
        self,
        embed_dim: int = 512,
        modality_dims: tuple[int, int] = (1280, 768),
        *,
        bias: bool = False,
        logit_scale_init: float = 1.0,
        num_layers: int = 1,
        hidden_dim: int | None = None,
        dropout: float = 0.0,
        max_logit_scale: float = 10.0,
        min_logit_scale: float | None = None,
    ):
        super().__init__()
        _check_args(
            embed_dim, modality_dims, num_layers, hidden_dim, dropout,
            logit_scale_init, max_logit_scale, min_logit_scale,
        )
        self.embed_dim = embed_dim
        self.modality_dims = (int(modality_dims[0]), int(modality_dims[1]))
        self.max_logit_scale = float(max_logit_scale)
        self.min_logit_scale = None if min_logit_scale is None else float(min_logit_scale)
        hidden = embed_dim if hidden_dim is None else hidden_dim
        head_kwargs = dict(num_layers=num_layers, hidden_dim=hidden, bias=bias, dropout=dropout)
        self.proj_a = _check_head(_build_head(self.modality_dims[0], embed_dim, **head_kwargs), "proj_a")
        self.proj_b = _check_head(_build_head(self.modality_dims[1], embed_dim, **head_kwargs), "proj_b")
        self.init_value = math.log(clamp_init(logit_scale_init, min_logit_scale, max_logit_scale, "logit_scale_init",
                                              "min_logit_scale", "max_logit_scale"))
        # Shape (1,), not 0-dim: DeepSpeed 0.19.8 fails on 0-dim parameters.
        self.logit_scale = nn.Parameter(torch.full((1,), self.init_value))

    @classmethod
    def from_config(cls, cfg: "ProjectionCLConfig") -> "ProjectionCL":
        """Build from a `ProjectionCLConfig`."""
        return cls(
            cfg.embed_dim,
            tuple(cfg.modality_dims),
            bias=cfg.bias,
            logit_scale_init=cfg.logit_scale_init,
            num_layers=cfg.num_layers,
            hidden_dim=cfg.hidden_dim,
            dropout=cfg.dropout,
            max_logit_scale=cfg.max_logit_scale,
            min_logit_scale=cfg.min_logit_scale,
        )

    def _encode(self, head: nn.Module, features: torch.Tensor, expected: int, name: str) -> torch.Tensor:
        if not isinstance(features, torch.Tensor):
            raise TypeError(f"{name} features must be a torch.Tensor, got {type(features).__name__}")
        if features.ndim < 1 or features.shape[-1] != expected:
            raise ValueError(
                f"{name} features: expected last dimension {expected}, got shape {tuple(features.shape)}"
            )
        return head(features)

    def encode_a(self, features: torch.Tensor) -> torch.Tensor:
        """Project modality-A features (..., modality_dims[0]) -> (..., embed_dim) (not normalised)."""
        return self._encode(self.proj_a, features, self.modality_dims[0], "modality A")

    def encode_b(self, features: torch.Tensor) -> torch.Tensor:
        """Project modality-B features (..., modality_dims[1]) -> (..., embed_dim) (not normalised)."""
        return self._encode(self.proj_b, features, self.modality_dims[1], "modality B")

    def parameter_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Bounds on raw parameters that the trainer enforces after every optimizer step."""
        return log_bounds("logit_scale", self.min_logit_scale, self.max_logit_scale)

    def _scale(self) -> torch.Tensor:
        return self.logit_scale.exp()

    def current_logit_scale(self) -> float:
        """The logit scale s = exp(logit_scale) as a Python float, for logging."""
        with torch.no_grad():
            return float(self._scale().item())

    def forward(
        self, features_a: torch.Tensor, features_b: torch.Tensor, *, return_loss: bool = False,
        return_embeddings: bool = False,
    ):
        """Project both modalities, compute scaled cosine similarities, optionally the loss.

        Args:
            features_a: (B_a, modality_dims[0]) features of modality A.
            features_b: (B_b, modality_dims[1]) features of modality B.
            return_loss: also return the symmetric InfoNCE loss (needs B_a == B_b).
            return_embeddings: return {"emb_a", "emb_b", "logit_scale"} (normalised embeddings and
                s, shape (1,)) instead of logits, for a loss over several ranks' batches.

        Returns:
            (logits_a_b (B_a, B_b), logits_b_a (B_b, B_a)), plus the scalar loss if `return_loss`.

        Raises:
            ValueError: inputs not 2-D, wrong feature widths, or return_loss with B_a != B_b.
        """
        for name, f in (("features_a", features_a), ("features_b", features_b)):
            if not isinstance(f, torch.Tensor) or f.ndim != 2:
                shape = tuple(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
                raise ValueError(f"{name} must be a 2-D (batch, dim) tensor, got {shape}")
        if return_loss and features_a.shape[0] != features_b.shape[0]:
            raise ValueError(
                "return_loss=True needs equal batch sizes for both modalities, got "
                f"{features_a.shape[0]} (features_a) and {features_b.shape[0]} (features_b)"
            )
        za = F.normalize(self.encode_a(features_a), dim=-1)
        zb = F.normalize(self.encode_b(features_b), dim=-1)
        if return_embeddings:
            return {"emb_a": za, "emb_b": zb, "logit_scale": self._scale()}
        logits_a_b = self._scale() * za @ zb.t()
        logits_b_a = logits_a_b.t()
        if not return_loss:
            return logits_a_b, logits_b_a
        return logits_a_b, logits_b_a, clip_loss(logits_a_b, logits_b_a)


@dataclass
class ProjectionCLConfig:
    """Typed config mirroring `ProjectionCL`'s constructor (same names, same defaults)."""

    embed_dim: int = 512
    modality_dims: tuple[int, int] = (1280, 768)
    bias: bool = False
    logit_scale_init: float = 1.0
    num_layers: int = 1
    hidden_dim: int | None = None
    dropout: float = 0.0
    max_logit_scale: float = 10.0
    min_logit_scale: float | None = None

    def __post_init__(self) -> None:
        if isinstance(self.modality_dims, list):
            self.modality_dims = tuple(self.modality_dims)
        _check_args(
            self.embed_dim,
            self.modality_dims,
            self.num_layers,
            self.hidden_dim,
            self.dropout,
            self.logit_scale_init,
            self.max_logit_scale,
            self.min_logit_scale,
        )

    def build(self) -> ProjectionCL:
        return ProjectionCL.from_config(self)


register_preset("projection_cl", ProjectionCLConfig(), ProjectionCL.from_config)
register_preset(
    "projection_cl_tiny", ProjectionCLConfig(embed_dim=32, modality_dims=(64, 48)), ProjectionCL.from_config
)
