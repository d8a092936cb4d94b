"""RBONN (models/methods/rbonn.py): the recurrent module, its DReLU gate and its step u, the constant-weight
bilinear term, and the invariants of every method, on the digits MLP and constructed tensors.
"""

from __future__ import annotations

import pytest
import torch

from bnnflow.errors import ConfigError
from bnnflow.models import create_model
from bnnflow.models.methods import create_method
from bnnflow.models.methods.rbonn import RecurrentStep, drelu, recurrent_layers
from bnnflow.pipeline.export import export_model
from tests.models.methods.training import train_steps

SHAPE = (1, 8, 8)


def _prepared(**options):
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    method = create_method("rbonn", **options)
    method.prepare(model)
    return model, method


def test_drelu_selects_the_smallest_scale_channels():
    alpha = torch.tensor([0.9, -0.05, 0.4, 0.2, 1.5, 0.01, 0.7, 0.3, 0.6, 0.1])
    gate = drelu(alpha, tau=0.6)  # (1 - tau) C = 4 channels: |alpha| 0.01, 0.05, 0.1, 0.2
    assert gate.tolist() == [0, 1, 0, 1, 0, 1, 0, 0, 0, 1]
    assert drelu(alpha, tau=0.0).sum() == 10
    assert drelu(alpha, tau=1.0).sum() == 0  # tau = 1 switches the recurrent module off


def test_released_drelu_gates_a_scrambled_set_of_the_same_size():
    """The released code's gate (methods.md 4.2): sort |alpha|, then compare the k-th argsort index, not the
    rank, with floor((1 - tau) C) and gate channel k by it."""
    alpha = torch.tensor([0.9, -0.05, 0.4, 0.2, 1.5, 0.01, 0.7, 0.3, 0.6, 0.1])
    count = 4
    _, idx = torch.sort(alpha.abs())
    released = [1.0 if int(idx[k]) < count else 0.0 for k in range(len(alpha))]
    assert drelu(alpha, tau=0.6, released=True).tolist() == released
    assert sum(released) == count and released != drelu(alpha, tau=0.6).tolist()
    model, method = _prepared(drelu_rule="released")
    layer, step = next(iter(recurrent_layers(model)))
    method.after_step(model)
    assert torch.equal(step.gate, drelu(layer.channel_scale.alpha, method.tau, released=True))
    with pytest.raises(ConfigError, match="drelu_rule must be one of rank, released"):
        create_method("rbonn", drelu_rule="ranks")


def test_rbonn_gate_follows_the_updated_alpha():
    model, method = _prepared()
    layer, step = next(iter(recurrent_layers(model)))
    with torch.no_grad():
        layer.channel_scale.alpha.copy_(torch.randperm(128).float() + 1)
    method.after_step(model)
    smallest = set(torch.argsort(layer.channel_scale.alpha)[:51].tolist())  # floor(0.4 * 128)
    assert set(torch.nonzero(step.gate).flatten().tolist()) == smallest


def test_recurrent_step_moves_the_gated_channels_and_passes_the_gradient_to_w():
    w = torch.randn(4, 6, requires_grad=True)
    step = RecurrentStep(w.detach())
    with torch.no_grad():
        step.gate.copy_(torch.tensor([1.0, 0.0, 1.0, 0.0]))
        step.grad_prev.copy_(torch.randn(4, 6))
    w_tilde = step(w)
    expected = w.detach() - 0.2 * step.gate[:, None] * step.grad_prev
    torch.testing.assert_close(w_tilde.detach(), expected)
    r = torch.randn(4, 6)
    (w_tilde * r).sum().backward()
    torch.testing.assert_close(w.grad, r)  # dw_tilde/dw = I
    torch.testing.assert_close(step.u.grad, -(r * step.grad_prev).sum(1) * step.gate)
    assert torch.equal(step.eval()(w), w)  # eval mode: no backtracking


def test_rbonn_u_learns_at_a_tenth_of_the_lr():
    model, method = _prepared()
    layer, step = next(iter(recurrent_layers(model)))
    groups = method.param_groups(model, 1e-3, 1e-5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4] and groups[1]["weight_decay"] == 0.0
    assert {id(p) for p in groups[1]["params"]} == {id(s.u) for _, s in recurrent_layers(model)}
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in model.parameters())
    x = torch.rand(8, *SHAPE)
    model(x).sum().backward()  # first step: no previous gradient yet, so u's gradient is 0
    assert step.u.grad.abs().sum() == 0
    method.after_backward(model)
    torch.testing.assert_close(step.grad_prev, layer.parametrizations.weight.original.grad)
    model.zero_grad()
    model(x).sum().backward()
    assert step.u.grad[step.gate == 1].abs().sum() > 0 and step.u.grad[step.gate == 0].abs().sum() == 0


def test_rbonn_reconstruction_term_uses_w_tilde_and_a_constant_lambda():
    model, method = _prepared(lam=1e-3)
    train_steps(model, method, steps=2)  # g_prev and the gate are set: w_tilde differs from w
    expected = 0.0
    for layer, step in recurrent_layers(model):
        w_tilde = step(layer.parametrizations.weight.original).detach()
        assert not torch.equal(w_tilde, layer.parametrizations.weight.original.detach())
        b = torch.where(w_tilde >= 0, 1.0, -1.0)
        expected += 1e-3 / 2 * (w_tilde - layer.channel_scale.alpha.detach()[:, None] * b).pow(2).sum()
    assert method.extra_loss(model).item() == pytest.approx(expected.item(), rel=1e-5)


def test_rbonn_freezes_to_the_same_outputs_and_exports_1_bit_weights():
    model, method = _prepared()
    train_steps(model, method)
    x = torch.rand(16, *SHAPE)
    before = model.eval()(x)
    model.train()  # frozen in training mode, with a previous gradient in place: sign(w) is still what is baked
    method.freeze(model)
    torch.testing.assert_close(model.eval()(x), before, rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, RecurrentStep) for m in model.modules())
    graph = export_model(model, SHAPE).graph
    initializers = {t.name for t in graph.initializer}
    weight_quants = [n for n in graph.node if n.op_type == "BipolarQuant" and n.input[0] in initializers]
    assert len(weight_quants) == 4


def test_rbonn_state_round_trips_into_a_freshly_prepared_model():
    model, method = _prepared()
    train_steps(model, method)
    fresh, _ = _prepared()
    fresh.load_state_dict(model.state_dict())
    for (_, a), (_, b) in zip(recurrent_layers(model), recurrent_layers(fresh)):
        assert torch.equal(a.u, b.u) and torch.equal(a.grad_prev, b.grad_prev) and torch.equal(a.gate, b.gate)
    x = torch.rand(8, *SHAPE)
    torch.testing.assert_close(fresh.train()(x), model.train()(x))  # training mode: the recurrent step too


def test_rbonn_sign_of_zero_is_plus_one():
    model, _ = _prepared()
    layer, _ = next(iter(recurrent_layers(model)))
    with torch.no_grad():
        layer.parametrizations.weight.original[0].zero_()
    assert torch.all(layer.weight[0] == 1.0)
