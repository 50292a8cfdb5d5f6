"""Batch inference with trained models (`sensorlm embed`: `sensorlm.inference.embed`)."""


class EmbedError(ValueError):
    """A bad run argument (model, dataset, shape); the message is one line naming it."""
