"""SensorLM: a two-tower sensor-language model trained with the SigLIP loss.

The sensor tower is either the ViT of `sensor_encoder.py` (the paper's ViT-B/10/2) or the
hierarchical HVT tower of `hvt.py`; the text tower is `text_encoder.py`. Both end in
L2-normalised embeddings of the same width; ``logits = exp(t_prime) * zs @ zt.T + bias``.
The loss lives in `sensorlm.losses` so the trainer can pick the local or distributed form.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from sensorlm.typed_config import ConfigError, from_dict
from sensorlm.models.bounds import check_scale_bounds, clamp_init, log_bounds
from sensorlm.models.registry import register_preset
from sensorlm.models.sensor_encoder import SensorEncoder, SensorEncoderConfig
from sensorlm.models.text_encoder import TextEncoder, TextEncoderConfig

try:
    from sensorlm.models.hvt import HVTSensorConfig
except ImportError:  # hvt.py absent: the field then takes a mapping, converted when the tower is built.
    HVTSensorConfig = Any  # type: ignore[misc,assignment]


def _hvt_module():
    # Imported here, not at the top, so the ViT presets work without hvt.py.
    from sensorlm.models import hvt

    return hvt


@dataclass(frozen=True)
class SensorLMConfig:
    """SensorLM two-tower config.

    Args:
        sensor: the ViT sensor tower; its (input_len, num_channels) is the model's input shape
            for either tower.
        text: the text tower; `text.embed_dim` is the joint embedding width.
        sensor_tower: "vit" (SensorEncoder) or "hvt" (HVTSensorEncoder).
        hvt: the HVT tower config (used when sensor_tower == "hvt"); None derives one from
            `sensor` (input shape, patch) and `text.embed_dim` with HVT defaults elsewhere.
        t_prime_init: initial log-temperature (SigLIP: log 10).
        bias_init: initial logit bias (SigLIP: -10).
        learn_temperature: train t_prime (False freezes it at t_prime_init; bias still trains).
        temperature_min / temperature_max: bounds on t = exp(t_prime) (None: unbounded). The
            trainer clamps the parameter itself after every optimizer step (`parameter_bounds`),
            as open_clip does, so it keeps its gradient at a bound; an init outside the bounds
            comes back inside at the first step.
    """

    sensor: SensorEncoderConfig = field(default_factory=SensorEncoderConfig)
    text: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    sensor_tower: Literal["vit", "hvt"] = "vit"
    hvt: HVTSensorConfig | None = None
    t_prime_init: float = math.log(10.0)
    bias_init: float = -10.0
    learn_temperature: bool = True
    temperature_min: float | None = None
    temperature_max: float | None = None

    def __post_init__(self) -> None:
        check_scale_bounds(self.temperature_min, self.temperature_max, "temperature_min", "temperature_max")
        if self.sensor_tower not in ("vit", "hvt"):
            raise ConfigError(f"sensor_tower: {self.sensor_tower!r} is not one of ['vit', 'hvt']")
        for name in ("t_prime_init", "bias_init"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name}: expected a finite number, got {value!r}")
        if isinstance(self.hvt, Mapping):
            object.__setattr__(self, "hvt", from_dict(_hvt_module().HVTSensorConfig, self.hvt, "hvt"))
        if self.sensor_tower == "hvt" and self.hvt is not None:
            got = (self.hvt.input_len, self.hvt.num_channels)
            want = (self.sensor.input_len, self.sensor.num_channels)
            if got != want:
                raise ConfigError(f"hvt: input shape (input_len, num_channels) = {got} differs from sensor's {want}")

    def resolved(self) -> SensorLMConfig:
        """This config with `hvt` filled in when the HVT tower is selected and `hvt` is None."""
        if self.sensor_tower != "hvt" or self.hvt is not None:
            return self
        hvt_cfg = _hvt_module().HVTSensorConfig(
            input_len=self.sensor.input_len,
            num_channels=self.sensor.num_channels,
            patch_size=self.sensor.patch,
            embed_dim=self.text.embed_dim,
        )
        return dataclasses.replace(self, hvt=hvt_cfg)


class SensorLM(nn.Module):
    """Sensor tower + text tower + SigLIP temperature and bias.

    Args:
        cfg: a `SensorLMConfig`; with the HVT tower and ``hvt=None`` the derived HVT config is
            stored in `self.config`, so `to_dict(model.config)` rebuilds the same model.
    """

    text_tower = TextEncoder  # the class of the text tower (a subclass may read captions causally)

    def __init__(self, cfg: SensorLMConfig):
        super().__init__()
        cfg = cfg.resolved()
        self.config = cfg
        if cfg.sensor_tower == "vit":
            self.sensor_encoder: nn.Module = SensorEncoder(cfg.sensor)
        else:
            self.sensor_encoder = _hvt_module().HVTSensorEncoder(cfg.hvt)
        self.text_encoder = self.text_tower(cfg.text)
        sensor_dim = self.sensor_encoder.embed_dim
        # Only when the towers' widths differ (not in the paper preset, both 768).
        self.sensor_proj = nn.Linear(sensor_dim, cfg.text.embed_dim) if sensor_dim != cfg.text.embed_dim else None
        t_init = clamp_init(math.exp(cfg.t_prime_init), cfg.temperature_min, cfg.temperature_max,
                            "the initial temperature exp(t_prime_init)", "temperature_min", "temperature_max")
        self.t_prime = nn.Parameter(torch.full((1,), math.log(t_init)), requires_grad=cfg.learn_temperature)
        self.bias = nn.Parameter(torch.full((1,), float(cfg.bias_init)))

    @property
    def embed_dim(self) -> int:
        return self.config.text.embed_dim

    def parameter_bounds(self) -> dict[str, tuple[float | None, float | None]]:
        """Bounds on raw parameters that the trainer enforces after every optimizer step."""
        return log_bounds("t_prime", self.config.temperature_min, self.config.temperature_max)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Turn activation checkpointing on in the towers that support it."""
        for tower in (self.sensor_encoder, self.text_encoder):
            if hasattr(tower, "set_grad_checkpointing"):
                tower.set_grad_checkpointing(enable)

    def encode_sensor(
        self, x: torch.Tensor, missing: torch.Tensor | None = None, check_finite: bool = True
    ) -> torch.Tensor:
        """(B, T, C) -> (B, embed_dim) L2-normalised.

        Args:
            x: sensor values (B, T, C).
            missing: optional (B, T) bool, True = minute missing.
            check_finite: count NaN/inf values and raise ValueError if any (a host sync; the
                training loop passes False).
        """
        self._check_sensor(x, check_finite)
        if self.sensor_proj is None:
            return self.sensor_encoder(x, missing)
        if isinstance(self.sensor_encoder, SensorEncoder):
            z = self.sensor_encoder(x, missing, normalize=False)
        else:
            z = self.sensor_encoder(x, missing)
        return F.normalize(self.sensor_proj(z), dim=-1)

    def _check_sensor(self, x: torch.Tensor, check_finite: bool) -> None:
        T, C = self.config.sensor.input_len, self.config.sensor.num_channels
        if x.ndim != 3 or tuple(x.shape[1:]) != (T, C):
            raise ValueError(f"sensor input: expected shape (B, {T}, {C}), got {tuple(x.shape)}")
        if check_finite:
            n_bad = int((~torch.isfinite(x)).sum())
            if n_bad:
                raise ValueError(f"{n_bad} non-finite values in sensor input of shape {tuple(x.shape)}")

    def encode_text(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, validate: bool = True
    ) -> torch.Tensor:
        """(B, L) ids + (B, L) mask -> (B, embed_dim) L2-normalised.

        Args:
            input_ids: token ids.
            attention_mask: 1 = token, 0 = padding.
            validate: check id range and empty rows (host sync; the training loop passes False).
        """
        return self.text_encoder(input_ids, attention_mask, validate=validate)

    def forward(
        self,
        sensor: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        missing: torch.Tensor | None = None,
        validate: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Embed a paired batch and score every sensor against every caption.

        Args:
            sensor: (B, T, C) sensor values.
            input_ids: (B, L) caption token ids.
            attention_mask: (B, L) caption mask.
            missing: optional (B, T) bool missing-minute mask.
            validate: run the value checks that sync with the host (non-finite count, id range).

        Returns:
            dict with sensor_emb (B, D), text_emb (B, D), logits (B, B) (row = sensor), and
            t_prime / bias (1,): the loss's scalars as outputs (as open_clip returns its logit
            scale), so a loss computed outside forward needs no parameter access; under ZeRO-3
            parameters are only materialised inside forward.
        """
        if sensor.shape[0] != input_ids.shape[0]:
            raise ValueError(f"batch sizes differ: sensor {sensor.shape[0]} vs input_ids {input_ids.shape[0]}")
        zs = self.encode_sensor(sensor, missing, check_finite=validate)
        zt = self.encode_text(input_ids, attention_mask, validate=validate)
        t_prime, bias = self.t_prime.clone(), self.bias.clone()
        logits = t_prime.exp() * (zs @ zt.T) + bias
        return {"sensor_emb": zs, "text_emb": zt, "logits": logits, "t_prime": t_prime, "bias": bias}


def build_sensorlm(cfg: SensorLMConfig) -> SensorLM:
    """Registry builder."""
    return SensorLM(cfg)


# Paper: ViT-B/10/2 sensor tower on (1440, 34) days, 12-layer text tower, both 768 wide.
SENSORLM_VITB_10_2 = SensorLMConfig()

# Tiny: 10-minute days (144 x 34). Patches span all 34 channels for 1 hour (24 tokens): on the
# synthetic data this tower learns the day's activity in ~75 supervised steps, where (12, 2)
# patches (204 tokens) had not started after 100, and it is 8x cheaper on a CPU.
SENSORLM_TINY = SensorLMConfig(
    sensor=SensorEncoderConfig(input_len=144, num_channels=34, patch=(6, 34), width=64, depth=2, num_heads=4),
    text=TextEncoderConfig(vocab_size=1024, context_len=48, width=64, depth=2, num_heads=4, embed_dim=64),
)
SENSORLM_TINY_MEANPOOL = dataclasses.replace(
    SENSORLM_TINY, sensor=dataclasses.replace(SENSORLM_TINY.sensor, pooling="mean")
)
# The HVT tower's own sizes; without hvt.py the preset keeps hvt=None and derives it at build time.
SENSORLM_HVT_TINY = dataclasses.replace(
    SENSORLM_TINY,
    sensor_tower="hvt",
    hvt=None
    if HVTSensorConfig is Any
    else HVTSensorConfig(
        input_len=144, num_channels=34, patch_size=(12, 2), width=32, depths=(1, 1), num_heads=(2, 4), embed_dim=64
    ),
)

register_preset("sensorlm_vitb_10_2", SENSORLM_VITB_10_2, build_sensorlm)
register_preset("sensorlm_tiny", SENSORLM_TINY, build_sensorlm)
register_preset("sensorlm_tiny_meanpool", SENSORLM_TINY_MEANPOOL, build_sensorlm)
register_preset("sensorlm_hvt_tiny", SENSORLM_HVT_TINY, build_sensorlm)
