"""Training: Ray Train workers running DeepSpeed, tracked in MLflow.

`config.py` (the typed run config), `deepspeed_config.py`, `optim.py`, `tasks.py` (per-task step
and validation), `loop.py` (the per-worker loop), `trainer.py` (the driver: `train(cfg)`).
"""
