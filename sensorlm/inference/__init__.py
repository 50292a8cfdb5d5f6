"""Batch inference with trained models (`sensorlm embed`)."""
