"""Early stopping on a validation metric: stop once it has not improved for ``patience``
validations in a row (Lightning's and Keras's rule), with its state saved in checkpoints so a
resumed run counts on where it left off."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    """Args:
        metric / mode: the validation metric and whether higher (``max``) or lower is better.
        patience: validations without improvement before stopping (0 = never stop).
        min_delta: an improvement smaller than this does not count.
    """

    metric: str
    mode: str = "max"
    patience: int = 0
    min_delta: float = 0.0
    best: float | None = None
    best_step: int = 0
    stale: int = 0  # validations since the best

    def update(self, value: float, step: int) -> bool:
        """Record one validation's value; True when the run should stop here. A non-finite value
        never counts as an improvement."""
        value = float(value)
        sign = 1.0 if self.mode == "max" else -1.0
        improved = math.isfinite(value) and (self.best is None or sign * (value - self.best) > self.min_delta)
        if improved:
            self.best, self.best_step, self.stale = value, step, 0
        else:
            self.stale += 1
        return self.patience > 0 and self.stale >= self.patience

    def reason(self, step: int) -> str:
        best = "no finite value" if self.best is None else f"its best, {self.best:.4f} at step {self.best_step}"
        return (f"early stop at step {step}: {self.metric} has not improved on {best} for {self.stale} "
                f"validations (checkpoint.early_stop_patience={self.patience}, "
                f"early_stop_min_delta={self.min_delta:g})")

    def state_dict(self) -> dict:
        return {k: v for k, v in asdict(self).items() if k in ("best", "best_step", "stale")}

    def load_state_dict(self, state: dict) -> None:
        self.best = None if state.get("best") is None else float(state["best"])
        self.best_step, self.stale = int(state.get("best_step", 0)), int(state.get("stale", 0))
