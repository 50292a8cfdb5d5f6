"""DeepSpeed checkpoints that load without unpickling arbitrary objects.

DeepSpeed 0.19's TorchCheckpointEngine loads with ``weights_only=False``, so a tampered
checkpoint could run code on every worker. We swap in an engine that loads with
``weights_only=True``, allowlisting the few plain classes DeepSpeed itself writes.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine


def _safe_globals() -> list:
    """Plain data classes DeepSpeed 0.19 pickles into its optimizer-state files (found by
    loading real stage 1-3 checkpoints with weights_only=True): an enum, a namedtuple and the
    loss-scaler state holders. None of them runs code when rebuilt."""
    from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
    from deepspeed.runtime.zero.config import ZeroStageEnum
    from deepspeed.utils.tensor_fragment import fragment_address

    return [ZeroStageEnum, fragment_address, LossScaler, DynamicLossScaler]


class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
    """TorchCheckpointEngine whose `load` refuses pickled code (weights_only=True)."""

    def load(self, path: str, map_location=None):
        with torch.serialization.safe_globals(_safe_globals()):
            try:
                return torch.load(path, map_location=map_location, weights_only=True)
            except Exception as e:  # name the file: the bare unpickling error does not
                raise RuntimeError(f"refusing to load checkpoint file {path}: {e}") from e


def install_safe_loading(engine) -> None:
    engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine._config)



@contextlib.contextmanager
def weights_only_loads() -> Iterator[None]:
    """Every ``torch.load`` in the block loads with weights_only=True and the same allowlist:
    DeepSpeed's universal-checkpoint conversion and loading call ``torch.load(weights_only=False)``
    themselves (in this process: the conversion runs with one worker, no subprocesses)."""
    real = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = True
        with torch.serialization.safe_globals(_safe_globals()):
            return real(*args, **kwargs)

    torch.load = load
    try:
        yield
    finally:
        torch.load = real
