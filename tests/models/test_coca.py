"""The CoCa family's model (sensorlm/models/coca.py): the dual encoder's contrastive side plus a causal
captioning decoder over the sensor tower's tokens."""

import dataclasses

import pytest
import torch

from sensorlm.families import family_of_config
from sensorlm.models import create_model, model_config
from sensorlm.models.coca import SensorCoCa, SensorCoCaConfig, caption_loss
from sensorlm.typed_config import ConfigError


def _batch(B=3, L=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, 144, 34, generator=g)
    ids = torch.randint(4, 1024, (B, L), generator=g)
    ids[:, 0] = 2
    mask = torch.ones_like(ids)
    mask[0, 9:], ids[0, 9:] = 0, 0  # a shorter caption, right-padded
    return x, ids, mask


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("sensorlm_coca_tiny").eval()


def test_outputs_and_the_contrastive_side_is_the_dual_encoders(model):
    x, ids, mask = _batch()
    out = model(x, ids, mask)
    assert out["caption_logits"].shape == (3, 16, 1024) and out["logits"].shape == (3, 3)
    torch.testing.assert_close(out["sensor_emb"], model.encode_sensor(x))
    torch.testing.assert_close(out["text_emb"], model.encode_text(ids, mask))
    assert torch.linalg.norm(out["text_emb"], dim=1).sub(1).abs().max() < 1e-5
    assert isinstance(model, SensorCoCa) and family_of_config(model.config).name == "sensorlm_coca"
    assert family_of_config(model_config("sensorlm_tiny")).name == "sensorlm"  # a subclass does not steal it


def test_the_decoder_is_causal_and_padding_changes_nothing_before_it(model):
    x, ids, mask = _batch()
    out = model(x, ids, mask)
    later = ids.clone()
    later[1, 10] = 7
    again = model(x, later, mask)
    torch.testing.assert_close(again["caption_logits"][1, :10], out["caption_logits"][1, :10])
    assert (again["caption_logits"][1, 10:] - out["caption_logits"][1, 10:]).abs().max() > 1e-4
    # the text embedding pools at the last real token: what follows it in the padding is never seen
    padded = ids.clone()
    padded[0, 12] = 5
    torch.testing.assert_close(model(x, padded, mask)["text_emb"][0], out["text_emb"][0])


def test_the_decoder_reads_the_sensor_and_missing_minutes_are_masked(model):
    x, ids, mask = _batch()
    base = model(x, ids, mask)["caption_logits"]
    assert (model(x + 1.0, ids, mask)["caption_logits"] - base).abs().max() > 1e-4
    missing = torch.zeros(3, 144, dtype=torch.bool)
    missing[:, :72] = True
    changed = x.clone()
    changed[:, :72] = 100.0  # values under a missing mask do not reach the captions
    torch.testing.assert_close(model(changed, ids, mask, missing)["caption_logits"], model(x, ids, mask, missing)["caption_logits"])
    every = torch.ones(3, 144, dtype=torch.bool)  # an all-missing window still gives finite captions
    assert torch.isfinite(model(x, ids, mask, every)["caption_logits"]).all()


def test_caption_loss_is_next_token_cross_entropy_over_real_tokens():
    logits = torch.randn(2, 5, 11)
    ids = torch.tensor([[2, 4, 5, 3, 0], [2, 6, 7, 8, 3]])
    mask = (ids != 0).long()
    by_hand = [torch.nn.functional.cross_entropy(logits[b, t], ids[b, t + 1])
               for b in range(2) for t in range(4) if mask[b, t + 1]]
    torch.testing.assert_close(caption_loss(logits, ids, mask), torch.stack(by_hand).mean())
    assert caption_loss(logits.bfloat16(), ids, mask).dtype == torch.float32


def test_the_lm_head_is_tied_to_the_token_embedding(model):
    names = [n for n, _ in model.named_parameters()]
    assert not any("lm_head" in n for n in names)
    w = model.text_encoder.token_embed.weight
    x, ids, mask = _batch()
    loss = caption_loss(model(x, ids, mask)["caption_logits"], ids, mask)
    loss.backward()
    assert w.grad is not None and w.grad.abs().sum() > 0
    model.zero_grad()


@pytest.mark.parametrize("field, value, match", [
    ("multimodal_layers", 0, "multimodal_layers: expected a positive integer, got 0"),
    ("caption_loss_weight", -1.0, "caption_loss_weight: expected a finite number >= 0, got -1.0"),
    ("caption_loss_weight", float("nan"), "caption_loss_weight"),
    ("contrastive_loss", "sigmoid", "contrastive_loss: 'sigmoid' is not one of"),
    ("sensor_tower", "hvt", "the captioning decoder reads the ViT tower's tokens"),
])
def test_bad_config_is_one_line(field, value, match):
    with pytest.raises(ConfigError, match=match):
        dataclasses.replace(model_config("sensorlm_coca_tiny"), **{field: value})


def test_paper_preset_splits_the_text_tower_in_half():
    cfg = model_config("sensorlm_coca_vitb_10_2")
    assert isinstance(cfg, SensorCoCaConfig)
    assert (cfg.sensor.input_len, cfg.sensor.num_channels, cfg.sensor.patch) == (1440, 34, (10, 2))
    assert (cfg.text.depth, cfg.multimodal_layers, cfg.text.width) == (6, 6, 768)


def test_activation_checkpointing_covers_the_text_and_decoder_layers_and_changes_no_gradient():
    x, ids, mask = _batch()
    grads = []
    for enable in (False, True):
        torch.manual_seed(0)
        model = create_model("sensorlm_coca_tiny")
        model.set_grad_checkpointing(enable)
        caption_loss(model(x, ids, mask)["caption_logits"], ids, mask).backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert model.text_encoder.grad_checkpointing and grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], msg=name)
