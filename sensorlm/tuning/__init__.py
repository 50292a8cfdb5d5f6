"""Hyperparameter sweeps: Ray Tune over the same Ray Train `TorchTrainer` as training.

`space.py` (the typed, validated sweep config and search space), `sweep.py` (the shared driver:
Tune, ASHA, MLflow parent/child runs, results table, champion registration, resume),
`trials.py` (a trial is the training job of any family, moved by the family's search
parameters). Entry points: ``tune/sweep_siglip.py`` and ``tune/sweep_projection.py``; see
``docs/sweeps.md``.
"""

from sensorlm.tuning.space import SweepConfig, load_sweep_config

__all__ = ["SweepConfig", "load_sweep_config"]
