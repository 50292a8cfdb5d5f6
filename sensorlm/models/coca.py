"""SensorLM's generative variant: a CoCa (Yu et al. 2022) over the sensor tower.

The text side is split in two, as in CoCa and open_clip's ``CoCa``: the *unimodal* layers (the
text config's ``depth``) read the caption with causal attention and give the contrastive text
embedding at the caption's last token (as CLIP's text transformer pools at its end token); the
*multimodal* layers (``multimodal_layers``) continue from their token outputs with causal
self-attention plus cross-attention to the sensor tower's tokens, and a language-model head tied
to the token embedding predicts the next caption token. Training adds
``caption_loss_weight`` x next-token cross-entropy to the contrastive loss (SigLIP, or CLIP);
the contrastive side is the dual encoder's, so zero-shot, retrieval and embedding work unchanged.
Generation (greedy, beam search, top-p sampling) is `sensorlm.models.generation`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from sensorlm.models.blocks import Attention, Mlp
from sensorlm.models.registry import register_preset
from sensorlm.models.sensor_encoder import SensorEncoder
from sensorlm.models.sensorlm import SENSORLM_TINY, SENSORLM_VITB_10_2, SensorLM, SensorLMConfig
from sensorlm.models.text_encoder import TextEncoder
from sensorlm.typed_config import ConfigError


@dataclass(frozen=True)
class SensorCoCaConfig(SensorLMConfig):
    """A SensorLM config plus the captioning decoder.

    Args:
        multimodal_layers: decoder layers (causal self-attention, cross-attention to the sensor
            tokens, MLP) above the text config's ``depth`` unimodal layers.
        caption_loss_weight: weight of the captioning cross-entropy beside the contrastive loss
            (open_clip's CoCa default: 2).
        contrastive_loss: ``siglip`` (sigmoid, with the learnable bias) or ``clip`` (softmax
            InfoNCE with logit scale exp(t_prime)).
    """

    multimodal_layers: int = 2
    caption_loss_weight: float = 2.0
    contrastive_loss: Literal["siglip", "clip"] = "siglip"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.sensor_tower != "vit":
            raise ConfigError(f"sensor_tower: the captioning decoder reads the ViT tower's tokens; got {self.sensor_tower!r}")
        if isinstance(self.multimodal_layers, bool) or not isinstance(self.multimodal_layers, int) \
                or self.multimodal_layers < 1:
            raise ConfigError(f"multimodal_layers: expected a positive integer, got {self.multimodal_layers!r}")
        w = self.caption_loss_weight
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"caption_loss_weight: expected a finite number >= 0, got {w!r}")
        if self.contrastive_loss not in ("siglip", "clip"):
            raise ConfigError(f"contrastive_loss: {self.contrastive_loss!r} is not one of ['siglip', 'clip']")


class CausalTextEncoder(TextEncoder):
    """The unimodal text layers: the `TextEncoder`'s weights with causal attention, pooled at the
    caption's last real token (which has seen the whole caption). Also returns the token outputs
    the multimodal layers continue from."""

    def forward_tokens(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                       validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) ids + mask -> (L2-normalised (B, embed_dim) embedding, (B, L, width) token outputs).
        Captions are right-padded (the tokenizer's layout), so causal attention never sees a pad."""
        self.check_inputs(input_ids, attention_mask, validate)
        L = input_ids.shape[1]
        x = self.token_embed(input_ids) + self.pos_embed[:, :L]
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, None, True, use_reentrant=False)
            else:
                x = blk(x, None, True)
        last = (attention_mask.long().sum(dim=1) - 1).clamp_min(0)  # an empty row pools its first position
        pooled = self.norm(x[torch.arange(x.shape[0], device=x.device), last])
        return F.normalize(self.proj(pooled), dim=-1), x

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, validate: bool = True) -> torch.Tensor:
        return self.forward_tokens(input_ids, attention_mask, validate)[0]


class CrossAttention(nn.Module):
    """Queries from the text, keys and values from the sensor tokens (masked where missing)."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        h = self.num_heads
        q = self.q(x).view(B, L, h, D // h).transpose(1, 2)
        k, v = self.kv(memory).view(B, memory.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)
        attn_mask = None if memory_mask is None else memory_mask[:, None, None, :].to(torch.bool)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.proj(y.transpose(1, 2).reshape(B, L, D))


class MultimodalBlock(nn.Module):
    """Pre-norm decoder block: causal self-attention, cross-attention to the sensor, MLP."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm_cross = nn.LayerNorm(dim)
        self.cross = CrossAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), None, True)
        x = x + self.cross(self.norm_cross(x), memory, memory_mask)
        return x + self.mlp(self.norm2(x))


class SensorCoCa(SensorLM):
    """The dual encoder (contrastive side) plus the multimodal captioning decoder.

    ``forward`` returns the dual encoder's outputs and ``caption_logits`` (B, L, vocab): at each
    position the scores of the next caption token (the loss shifts them; `caption_loss`).
    """

    text_tower = CausalTextEncoder

    def __init__(self, cfg: SensorCoCaConfig):
        super().__init__(cfg)
        width = cfg.text.width
        self.sensor_to_text = nn.Linear(self.sensor_encoder.embed_dim, width)
        self.decoder = nn.ModuleList(
            MultimodalBlock(width, cfg.text.num_heads, cfg.text.mlp_ratio) for _ in range(cfg.multimodal_layers)
        )
        self.decoder_norm = nn.LayerNorm(width)
        for m in (self.sensor_to_text, *self.decoder.modules()):
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def sensor_tokens(self, x: torch.Tensor, missing: torch.Tensor | None = None, check_finite: bool = True
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """(B, T, C) -> (L2-normalised embedding (B, D), the decoder's memory (B, N, width), its
        (B, N) attend mask or None)."""
        self._check_sensor(x, check_finite)
        enc: SensorEncoder = self.sensor_encoder
        tokens = enc.forward_features(x, missing)
        z = enc.forward_head(tokens, missing, normalize=self.sensor_proj is None)
        if self.sensor_proj is not None:
            z = F.normalize(self.sensor_proj(z), dim=-1)
        return z, self.sensor_to_text(tokens), enc.token_mask(missing, x.shape[0])

    def decode(self, text_tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> torch.Tensor:
        """Unimodal token outputs (B, L, width) -> next-token logits (B, L, vocab)."""
        x = text_tokens
        for blk in self.decoder:  # checkpointed with the text tower (scaling.activation_checkpointing)
            if self.text_encoder.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, memory, memory_mask, use_reentrant=False)
            else:
                x = blk(x, memory, memory_mask)
        return self.decoder_norm(x) @ self.text_encoder.token_embed.weight.T  # tied to the embedding

    def caption_logits(self, input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None
                       ) -> torch.Tensor:
        """Next-token logits of a (B, L) prefix given the sensor memory (generation's step)."""
        mask = torch.ones_like(input_ids)
        _, tokens = self.text_encoder.forward_tokens(input_ids, mask, validate=False)
        return self.decode(tokens, memory, memory_mask)

    def forward(self, sensor: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                missing: torch.Tensor | None = None, validate: bool = True) -> dict[str, torch.Tensor]:
        """As `SensorLM.forward`, plus ``caption_logits`` (B, L, vocab)."""
        if sensor.shape[0] != input_ids.shape[0]:
            raise ValueError(f"batch sizes differ: sensor {sensor.shape[0]} vs input_ids {input_ids.shape[0]}")
        zs, memory, memory_mask = self.sensor_tokens(sensor, missing, check_finite=validate)
        zt, text_tokens = self.text_encoder.forward_tokens(input_ids, attention_mask, validate=validate)
        t_prime, bias = self.t_prime.clone(), self.bias.clone()
        return {"sensor_emb": zs, "text_emb": zt, "logits": t_prime.exp() * (zs @ zt.T) + bias, "t_prime": t_prime,
                "bias": bias, "caption_logits": self.decode(text_tokens, memory, memory_mask)}


def caption_token_stats(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cross-entropy sum, correct next tokens, tokens predicted) over the captions' real tokens:
    position i predicts token i + 1; padding is not predicted (fp32 whatever the logits' precision)."""
    target, keep = input_ids[:, 1:], attention_mask[:, 1:].bool()
    logits = logits[:, :-1].float()
    losses = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="none")
    hits = (logits.argmax(dim=-1) == target) & keep
    return (losses.view_as(target) * keep).sum(), hits.sum(), keep.sum()


def caption_loss(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the captions' real tokens (`caption_token_stats`)."""
    total, _, n = caption_token_stats(logits, input_ids, attention_mask)
    return total / n.clamp_min(1)


def build_coca(cfg: SensorCoCaConfig) -> SensorCoCa:
    """Registry builder."""
    return SensorCoCa(cfg)


def _coca(base: SensorLMConfig, **fields) -> SensorCoCaConfig:
    return SensorCoCaConfig(**{**{f.name: getattr(base, f.name) for f in dataclasses.fields(SensorLMConfig)}, **fields})


# The paper's CoCa variant: the ViT-B/10/2 tower; 12 text layers split 6 unimodal + 6 multimodal
# (CoCa's split of its text decoder in half).
SENSORLM_COCA_VITB_10_2 = _coca(
    SENSORLM_VITB_10_2, text=dataclasses.replace(SENSORLM_VITB_10_2.text, depth=6), multimodal_layers=6
)
# Tiny: the tiny dual encoder's towers and 2 decoder layers (CPU tests, the README's run).
SENSORLM_COCA_TINY = _coca(SENSORLM_TINY, multimodal_layers=2)

register_preset("sensorlm_coca_vitb_10_2", SENSORLM_COCA_VITB_10_2, build_coca)
register_preset("sensorlm_coca_tiny", SENSORLM_COCA_TINY, build_coca)

__all__ = ["CausalTextEncoder", "SensorCoCa", "SensorCoCaConfig", "caption_loss", "caption_token_stats"]
