"""sensorlm: distributed training of sensor foundation models."""

__version__ = "0.1.0"
