"""Caption generation (sensorlm/models/generation.py): greedy, beam search, top-p; batched, bounded,
deterministic where it should be, and one-line errors for bad inputs."""

import pytest
import torch

from sensorlm.models import create_model
from sensorlm.models.generation import Decoding, Tokens, generate

BOS, EOS, PAD, UNK = 2, 3, 0, 1
TOKENS = Tokens(BOS, EOS, PAD, (UNK,))


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return create_model("sensorlm_coca_tiny").eval()


def _x(B=3):
    return torch.randn(B, 144, 34, generator=torch.Generator().manual_seed(1))


def _gen(model, x, missing=None, generator=None, **kw):
    return generate(model, x, missing, TOKENS, Decoding(max_len=10, **kw), generator)


@pytest.mark.parametrize("method", ["greedy", "beam"])
def test_greedy_and_beam_are_deterministic_and_bounded(model, method):
    x = _x()
    a, b = _gen(model, x, method=method), _gen(model, x, method=method)
    assert a.shape == (3, 10) and a.dtype == torch.int64 and torch.equal(a, b)
    assert (a[:, 0] == BOS).all() and not (a[:, 1:] == BOS).any() and not (a == UNK).any()


def test_one_beam_is_greedy_and_a_tiny_nucleus_is_greedy(model):
    x = _x()
    greedy = _gen(model, x)
    assert torch.equal(_gen(model, x, method="beam", num_beams=1), greedy)
    # top_p -> 0 keeps only the most likely token: sampling then is the greedy caption
    assert torch.equal(_gen(model, x, method="top_p", top_p=1e-6, generator=torch.Generator().manual_seed(3)), greedy)


def test_sampling_is_reproducible_with_its_generator_and_varies_without(model):
    x = _x()
    first = _gen(model, x, method="top_p", top_p=1.0, generator=torch.Generator().manual_seed(5))
    again = _gen(model, x, method="top_p", top_p=1.0, generator=torch.Generator().manual_seed(5))
    other = _gen(model, x, method="top_p", top_p=1.0, generator=torch.Generator().manual_seed(6))
    assert torch.equal(first, again) and not torch.equal(first, other)


class _EndsEarly:
    """A decoder whose row 0 ends after two tokens while row 1 runs to the limit."""

    def __init__(self, model):
        self.model = model

    def sensor_tokens(self, x, missing=None):
        return self.model.sensor_tokens(x, missing)

    def caption_logits(self, ids, memory, memory_mask):
        logits = torch.zeros(ids.shape[0], ids.shape[1], 16)
        logits[:, :, 7] = 10.0
        if ids.shape[1] >= 3:
            logits[0, :, EOS] = 20.0
        return logits


@pytest.mark.parametrize("method", ["greedy", "beam", "top_p"])
def test_a_batch_of_different_lengths_pads_after_the_end(model, method):
    ids = generate(_EndsEarly(model), _x(2), None, Tokens(BOS, EOS, PAD),
                   Decoding(max_len=8, method=method, num_beams=2, top_p=0.5), torch.Generator().manual_seed(0))
    assert ids[0].tolist() == [BOS, 7, 7, EOS, PAD, PAD, PAD, PAD]
    assert ids[1].tolist() == [BOS] + [7] * 7


def test_an_all_missing_window_still_gets_a_caption(model):
    x = torch.zeros(2, 144, 34)
    missing = torch.ones(2, 144, dtype=torch.bool)
    ids = _gen(model, x, missing=missing, method="beam")
    assert ids.shape == (2, 10) and (ids[:, 0] == BOS).all()


def test_bad_inputs_are_one_line(model):
    x = _x()
    with pytest.raises(ValueError, match="sensor input: expected shape \\(B, 144, 34\\), got \\(3, 100, 34\\)"):
        _gen(model, torch.zeros(3, 100, 34))
    with pytest.raises(ValueError, match="method 'nucleus': expected one of"):
        _gen(model, x, method="nucleus")
    with pytest.raises(ValueError, match="max_len must be an integer >= 2, got 1"):
        Decoding(max_len=1)
    with pytest.raises(ValueError, match="top_p must be in \\(0, 1\\]"):
        _gen(model, x, method="top_p", top_p=0.0)
    with pytest.raises(ValueError, match="SensorLM has no captioning decoder"):
        generate(create_model("sensorlm_tiny"), x, None, TOKENS)
