"""Tests for sensorlm/models/projection_cl.py against the ProjectionCL specification."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import torch

from sensorlm.models.bounds import clamp_parameters_
import torch.nn as nn

from sensorlm.typed_config import ConfigError, from_dict, to_dict
from sensorlm.models import create_model, model_config, projection_cl
from sensorlm.models.projection_cl import ProjectionCL, ProjectionCLConfig


def _unit(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=-1, keepdim=True)


def _tiny(**kw) -> ProjectionCL:
    torch.manual_seed(0)
    return ProjectionCL(8, (6, 5), **kw)


def test_signature_matches_spec():
    sig = inspect.signature(ProjectionCL.__init__)
    params = list(sig.parameters.values())[1:]
    expected = [
        ("embed_dim", 512, inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("modality_dims", (1280, 768), inspect.Parameter.POSITIONAL_OR_KEYWORD),
        ("bias", False, inspect.Parameter.KEYWORD_ONLY),
        ("logit_scale_init", 1.0, inspect.Parameter.KEYWORD_ONLY),
        ("num_layers", 1, inspect.Parameter.KEYWORD_ONLY),
        ("hidden_dim", None, inspect.Parameter.KEYWORD_ONLY),
        ("dropout", 0.0, inspect.Parameter.KEYWORD_ONLY),
        ("max_logit_scale", 10.0, inspect.Parameter.KEYWORD_ONLY),
        ("min_logit_scale", None, inspect.Parameter.KEYWORD_ONLY),
    ]
    assert [(p.name, p.default, p.kind) for p in params] == expected


def test_default_attributes():
    m = ProjectionCL()
    lin_a = [x for x in m.proj_a.modules() if isinstance(x, nn.Linear)]
    lin_b = [x for x in m.proj_b.modules() if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features, x.bias) for x in lin_a] == [(1280, 512, None)]
    assert [(x.in_features, x.out_features, x.bias) for x in lin_b] == [(768, 512, None)]
    assert isinstance(m.logit_scale, nn.Parameter)
    assert m.logit_scale.shape == (1,)
    assert m.logit_scale.item() == pytest.approx(math.log(1.0))
    assert m.init_value == pytest.approx(0.0)
    assert m.current_logit_scale() == pytest.approx(1.0)


def test_logit_scale_is_log_of_init():
    m = _tiny(logit_scale_init=2.5)
    assert m.init_value == pytest.approx(math.log(2.5))
    assert m.logit_scale.item() == pytest.approx(math.log(2.5))
    assert m.current_logit_scale() == pytest.approx(2.5)


def test_multilayer_head_structure():
    m = _tiny(num_layers=3, hidden_dim=16, bias=True, dropout=0.5)
    lin = [x for x in m.proj_a if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in lin] == [(6, 16), (16, 16), (16, 8)]
    assert all(x.bias is not None for x in lin)
    drops = [x for x in m.proj_a if isinstance(x, nn.Dropout)]
    assert len(drops) == 2 and all(d.p == 0.5 for d in drops)
    # Output layer is the last one: no dropout after it.
    assert isinstance(m.proj_b[-1], nn.Linear) and m.proj_b[-1].in_features == 16
    # hidden_dim defaults to embed_dim.
    m2 = _tiny(num_layers=2)
    assert [x.out_features for x in m2.proj_b if isinstance(x, nn.Linear)] == [8, 8]


@pytest.mark.parametrize(
    "args, kwargs, match",
    [
        ((8, (6,)), {}, "modality_dims"),
        ((8, (6, 5, 4)), {}, "modality_dims"),
        ((8, (6, 5)), {"num_layers": 0}, "num_layers"),
        ((8, (6, 5)), {"dropout": -0.1}, "dropout"),
        ((8, (6, 5)), {"dropout": 1.5}, "dropout"),
        ((8, (6, 5)), {"logit_scale_init": 0.0}, "logit_scale_init"),
        ((8, (6, 5)), {"logit_scale_init": -1.0}, "logit_scale_init"),
        ((8, (6, 5)), {"max_logit_scale": 0.0}, "max_logit_scale"),
        ((8, (6, 5)), {"max_logit_scale": -3.0}, "max_logit_scale"),
        ((8, (6, 5)), {"min_logit_scale": 0.0}, "min_logit_scale"),
        ((8, (6, 5)), {"min_logit_scale": -1.0}, "min_logit_scale"),
        ((8, (6, 5)), {"min_logit_scale": 11.0}, "min_logit_scale"),
        ((8, (6, 5)), {"min_logit_scale": 3.0, "max_logit_scale": 2.0}, "min_logit_scale"),
    ],
)
def test_constructor_value_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ProjectionCL(*args, **kwargs)


@pytest.mark.parametrize("kwargs", [{"dropout": 0.0}, {"dropout": 1.0}, {"min_logit_scale": 10.0}])
def test_constructor_boundary_values_accepted(kwargs):
    m = ProjectionCL(8, (6, 5), **kwargs)
    assert m.logit_scale.shape == (1,)


def test_runtime_error_when_head_has_no_linear(monkeypatch):
    def no_linear_head(in_dim, embed_dim, **kwargs):
        return nn.Sequential(nn.Identity(), nn.GELU())

    monkeypatch.setattr(projection_cl, "_build_head", no_linear_head)
    with pytest.raises(RuntimeError, match="proj_a contains no nn.Linear"):
        ProjectionCL(8, (6, 5))


def test_return_loss_needs_equal_batches():
    m = _tiny()
    fa, fb = torch.randn(3, 6), torch.randn(5, 5)
    with pytest.raises(ValueError, match="equal batch sizes.*3.*5"):
        m(fa, fb, return_loss=True)
    # Without the loss, unequal batches are fine: a (3, 5) similarity matrix.
    lab, lba = m(fa, fb)
    assert lab.shape == (3, 5) and lba.shape == (5, 3)


def test_feature_dim_mismatch_names_dims():
    m = _tiny()
    with pytest.raises(ValueError, match=r"expected last dimension 6, got shape \(4, 7\)"):
        m(torch.randn(4, 7), torch.randn(4, 5))
    with pytest.raises(ValueError, match=r"expected last dimension 5, got shape \(4, 6\)"):
        m.encode_b(torch.randn(4, 6))
    with pytest.raises(ValueError, match="2-D"):
        m(torch.randn(4, 2, 6), torch.randn(4, 5))


def test_encode_shapes():
    m = _tiny()
    assert m.encode_a(torch.randn(4, 6)).shape == (4, 8)
    assert m.encode_b(torch.randn(2, 3, 5)).shape == (2, 3, 8)


@pytest.mark.parametrize("init, scale", [(3.0, 3.0), (25.0, 10.0)])  # 25 is above the default max of 10
@pytest.mark.filterwarnings("ignore:logit_scale_init 25 is outside")
def test_logits_are_scale_times_cosine(init, scale):
    m = _tiny(logit_scale_init=init, num_layers=2)
    m.eval()
    fa, fb = torch.randn(4, 6), torch.randn(4, 5)
    lab, lba = m(fa, fb)
    with torch.no_grad():
        cos = _unit(m.proj_a(fa)) @ _unit(m.proj_b(fb)).T
    torch.testing.assert_close(lab, scale * cos)
    torch.testing.assert_close(lba, lab.T)


def test_bounds_are_on_the_log_parameter():
    m = _tiny(min_logit_scale=2.0, max_logit_scale=10.0)
    assert m.parameter_bounds() == {"logit_scale": (pytest.approx(math.log(2.0)), pytest.approx(math.log(10.0)))}


def test_scale_above_its_max_comes_back_and_keeps_training():
    # The bound is enforced on the parameter after each step (clamp_parameters_), so a scale that
    # starts above it is pulled inside and, unlike a functional clamp, still gets a gradient there.
    m = _tiny(logit_scale_init=20.0, max_logit_scale=10.0, min_logit_scale=2.0)
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    fa, fb = torch.randn(4, 6), torch.randn(4, 5)
    for _ in range(3):
        opt.zero_grad()
        _, _, loss = m(fa, fb, return_loss=True)
        loss.backward()
        assert m.logit_scale.grad.abs().item() > 0
        opt.step()
        clamp_parameters_(m)
        assert 2.0 - 1e-5 <= m.current_logit_scale() <= 10.0 + 1e-5
    m.logit_scale.data.fill_(math.log(0.5))
    clamp_parameters_(m)
    assert m.current_logit_scale() == pytest.approx(2.0)


def test_unclamped_scale_gets_gradient():
    m = _tiny(logit_scale_init=2.0)
    _, _, loss = m(torch.randn(4, 6), torch.randn(4, 5), return_loss=True)
    loss.backward()
    assert m.logit_scale.grad.abs().item() > 0


def test_loss_equals_hand_infonce():
    m = _tiny(logit_scale_init=4.0)
    fa, fb = torch.randn(5, 6), torch.randn(5, 5)
    lab, lba, loss = m(fa, fb, return_loss=True)
    L = lab.detach().double()

    def ce_diag(mat: torch.Tensor) -> torch.Tensor:
        # -log softmax of the matching pair, averaged over rows.
        rows = [-(mat[i, i] - torch.log(torch.exp(mat[i]).sum())) for i in range(mat.shape[0])]
        return torch.stack(rows).mean()

    expected = 0.5 * (ce_diag(L) + ce_diag(L.T))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_current_logit_scale_returns_a_float():
    m = _tiny(logit_scale_init=7.0)
    v = m.current_logit_scale()
    assert isinstance(v, float) and v == pytest.approx(7.0)


def test_training_reduces_loss():
    m = _tiny(num_layers=2, logit_scale_init=5.0)
    torch.manual_seed(1)
    fa, fb = torch.randn(8, 6), torch.randn(8, 5)
    opt = torch.optim.Adam(m.parameters(), lr=1e-2)
    first = None
    for _ in range(30):
        _, _, loss = m(fa, fb, return_loss=True)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = loss.item() if first is None else first
    assert all(p.grad is not None for p in m.parameters())
    assert loss.item() < 0.5 * first


def test_config_mirrors_signature():
    sig = inspect.signature(ProjectionCL.__init__)
    fields = {f.name: f.default for f in dataclasses.fields(ProjectionCLConfig)}
    assert fields == {k: p.default for k, p in list(sig.parameters.items())[1:]}


def test_presets():
    m = create_model("projection_cl")
    assert m.modality_dims == (1280, 768) and m.embed_dim == 512
    tiny = create_model("projection_cl_tiny")
    assert tiny.modality_dims == (64, 48) and tiny.embed_dim == 32
    lab, lba, loss = tiny(torch.randn(3, 64), torch.randn(3, 48), return_loss=True)
    assert lab.shape == (3, 3) and torch.isfinite(loss)
    over = create_model("projection_cl_tiny", num_layers=2, min_logit_scale=0.5)
    assert sum(isinstance(x, nn.Linear) for x in over.proj_a) == 2


def test_config_errors_and_round_trip():
    with pytest.raises(ConfigError, match="num_layers"):
        model_config("projection_cl_tiny", num_layers=0)
    with pytest.raises(ConfigError, match="unknown config key"):
        model_config("projection_cl_tiny", width=3)
    with pytest.raises(ValueError, match="modality_dims"):
        ProjectionCLConfig(modality_dims=(3,))
    cfg = from_dict(ProjectionCLConfig, to_dict(ProjectionCLConfig(embed_dim=16, modality_dims=(4, 3))))
    assert cfg.modality_dims == (4, 3)
    assert cfg.build().encode_a(torch.randn(2, 4)).shape == (2, 16)


def test_an_initial_scale_outside_its_bounds_starts_at_the_bound():
    """The forward never runs at a scale the bounds exclude: ProjectionCL(logit_scale_init=100,
    max_logit_scale=10) starts at 10 (with a warning naming both), not at 100 until the first clamp."""
    with pytest.warns(UserWarning, match=r"logit_scale_init 100 is outside \[min_logit_scale=None, max_logit_scale=10\]"):
        model = ProjectionCL(8, (4, 4), logit_scale_init=100, max_logit_scale=10)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(10.0)
    with pytest.warns(UserWarning, match="the model starts at min_logit_scale 2"):
        model = ProjectionCL(8, (4, 4), logit_scale_init=0.5, min_logit_scale=2, max_logit_scale=10)
    assert float(model.logit_scale.detach().exp()) == pytest.approx(2.0)
