import math

import pytest
import torch.nn as nn

from sensorlm.training.optim import param_groups, warmup_cosine


def test_warmup_then_cosine():
    assert warmup_cosine(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10, 0.1) == pytest.approx(1.0)
    mid = 10 + 45
    assert warmup_cosine(mid, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert warmup_cosine(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert warmup_cosine(500, 100, 10, 0.1) == pytest.approx(0.1)


def test_no_decay_on_norms_biases_and_siglip_scalars():
    from sensorlm.models import create_model

    model = create_model("sensorlm_tiny")
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay_names = {names[id(p)] for p in no_decay["params"]}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert {"t_prime", "bias"} <= no_decay_names
    assert all(not n.endswith(".bias") and "norm" not in n for n in decay_names)
    assert any(n.endswith(".bias") for n in no_decay_names)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay_names) + len(no_decay_names) == sum(1 for _ in model.parameters())


def test_linear_layer_groups():
    lin = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    decay, no_decay = param_groups(lin, 0.5)
    assert len(decay["params"]) == 1 and len(no_decay["params"]) == 3
