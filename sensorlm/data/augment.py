"""What a training sample may be changed by before it is batched (wearable); validation, evaluation
and embedding read samples as stored.

Captions: `caption_mix` draws each sample's caption from its stored levels. Sensor: a random crop
in time keeps a contiguous span of at least `crop_min_fraction` of the window and marks the rest
missing (the model already masks missing steps, so the window keeps its shape), and channel
dropout sets whole channels to their normalised mean (0), never all of them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from sensorlm.data.captioner import compose, normalize_levels


@dataclass(frozen=True)
class Augment:
    """Training-time sample changes (see the module docstring); the defaults change nothing.

    Args:
        caption_mix: caption key -> weight (`sensorlm.data.captioner.CAPTION_KEYS`); empty = the
            full caption.
        crop_min_fraction: in (0, 1]: the kept span is drawn uniformly between this fraction of
            the window and all of it, at a uniform offset; 1 = no crop.
        channel_dropout: in [0, 1): each channel is dropped with this probability.
    """

    caption_mix: dict[str, float] = field(default_factory=dict)
    crop_min_fraction: float = 1.0
    channel_dropout: float = 0.0

    def __post_init__(self):
        # the caption draw's keys and weights, once (it runs for every training sample)
        mix = {k: float(w) for k, w in self.caption_mix.items() if w > 0}
        object.__setattr__(self, "_keys", list(mix))
        object.__setattr__(self, "_weights", list(mix.values()))
        if not 0 < self.crop_min_fraction <= 1:
            raise ValueError(f"crop_min_fraction must lie in (0, 1], got {self.crop_min_fraction}")
        if not 0 <= self.channel_dropout < 1:
            raise ValueError(f"channel_dropout must lie in [0, 1), got {self.channel_dropout}")

    @property
    def changes_sensor(self) -> bool:
        return self.crop_min_fraction < 1 or self.channel_dropout > 0

    def caption(self, meta: dict, caption: str, rng: random.Random) -> str:
        """One of the caption keys, drawn by `caption_mix` weights from the stored levels (the full
        caption when the sample stores no levels or the drawn combination is empty)."""
        if not self._keys:
            return caption
        levels = normalize_levels(meta.get("captions"))
        if levels is None:
            return caption
        return compose(levels, rng.choices(self._keys, self._weights)[0]) or caption

    def sensor(self, x: np.ndarray, missing: np.ndarray, rng: random.Random) -> None:
        """Crop and drop channels of one normalised (T, C) window in place (missing: (T,) bool)."""
        t, c = x.shape
        if self.crop_min_fraction < 1:
            keep = rng.randint(max(1, int(np.ceil(self.crop_min_fraction * t))), t)
            start = rng.randint(0, t - keep)
            outside = np.ones(t, dtype=bool)
            outside[start:start + keep] = False
            if not (missing | outside).all():  # a crop that leaves no data keeps the window whole
                missing |= outside
                x[outside] = 0.0
        if self.channel_dropout > 0 and c > 1:
            dropped = [j for j in range(c) if rng.random() < self.channel_dropout]
            if len(dropped) < c:  # a window with no channel left says nothing
                x[:, dropped] = 0.0
