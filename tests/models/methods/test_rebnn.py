"""ReBNN and RBONN (models/methods/rebnn.py, rbonn.py) and the flip-rate meter (oscillation.py): the mechanics the
papers claim, on the digits MLP and constructed tensors.

- ReBNN lowers the weight-flip (oscillation) rate against plain STE under the same optimizer and data, with the
  paper's adaptive gamma and with the released code's constant one;
- the gamma rule: flip fraction times the largest |dL/dw_hat|, clamped to [gamma_min, gamma_max];
- the reconstruction term's gradients are the paper's: gamma (w - alpha b) for w, -gamma sum (w - alpha b) b for alpha;
- RBONN's DReLU gate picks exactly the channels with the smallest scale, and its step u learns at 0.1x the lr;
- FlipRate counts a constructed flip exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from bnnflow.models import create_model
from bnnflow.models.methods import create_method
from bnnflow.models.methods.oscillation import FlipRate
from bnnflow.models.methods.rbonn import drelu, recurrent_layers
from bnnflow.models.methods.rebnn import reconstruction_loss, resilient_layers

SHAPE = (1, 8, 8)


def _late_flip_rate(name: str, seed: int, steps: int = 300, **options) -> float:
    """Adam at lr 1e-2 on digits batches (the same for every method and seed): the mean flip rate over the last
    100 steps."""
    digits = load_digits()
    x = torch.tensor(digits.images / 16, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target)
    torch.manual_seed(seed)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    method = create_method(name, **options)
    method.prepare(model)
    optimizer = torch.optim.Adam(method.param_groups(model, 1e-2, 0.0), lr=1e-2)
    flips, rates = FlipRate(model), []
    batches = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        index = torch.randint(0, len(x), (64,), generator=batches)
        loss = torch.nn.functional.cross_entropy(model(x[index]), y[index])
        extra = method.extra_loss(model)
        loss = loss + extra if extra is not None else loss
        optimizer.zero_grad()
        loss.backward()
        method.after_backward(model)
        optimizer.step()
        method.after_step(model)
        rates.append(flips.update())
    return float(np.mean(rates[-100:]))


@pytest.mark.parametrize("gamma_rule", ["paper", "constant"])
def test_rebnn_lowers_the_flip_rate_against_plain_ste(gamma_rule):
    ste, rebnn = _late_flip_rate("ste", 0), _late_flip_rate("rebnn", 0, gamma_rule=gamma_rule)
    assert rebnn < ste, f"ReBNN ({gamma_rule}) flips {rebnn:.2e} of its weights a step, STE {ste:.2e}"


def _prepared(name: str, **options):
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    method = create_method(name, **options)
    method.prepare(model)
    return model, method


def test_gamma_is_flip_fraction_times_largest_gradient_clamped():
    model, method = _prepared("rebnn", gamma_max=1.0)
    layer, param = next(iter(resilient_layers(model)))
    w = layer.parametrizations.weight.original
    with torch.no_grad():
        param.positive.copy_(w >= 0)
        param.grad_max.copy_(torch.linspace(0.1, 2.0, w.shape[0]))
        w[0, :16] = -w[0, :16].abs() - 0.1  # channel 0: 16 of 64 weights now negative ...
        param.positive[0, :16] = True  # ... after being positive
        param.positive[0, 16:] = w[0, 16:] >= 0
    method.after_step(model)
    assert param.gamma[0].item() == pytest.approx(16 / 64 * 0.1)
    assert torch.all(param.gamma[1:] == 1e-5)  # nothing flipped elsewhere: the lower clamp
    capped, capped_method = _prepared("rebnn")
    capped_layer, capped_param = next(iter(resilient_layers(capped)))
    with torch.no_grad():
        capped_param.positive.copy_(~(capped_layer.parametrizations.weight.original >= 0))  # every sign flipped
        capped_param.grad_max.fill_(5.0)
    capped_method.after_step(capped)
    assert torch.all(capped_param.gamma == 2e-4)  # the upper clamp


def test_reconstruction_gradients_are_the_papers():
    w = torch.randn(4, 9, requires_grad=True)
    alpha = torch.rand(4, requires_grad=True)
    gamma = torch.rand(4)
    reconstruction_loss(w, alpha, gamma).backward()
    b = torch.where(w >= 0, 1.0, -1.0).detach()
    residual = w.detach() - alpha.detach()[:, None] * b
    torch.testing.assert_close(w.grad, gamma[:, None] * residual)
    torch.testing.assert_close(alpha.grad, -(gamma[:, None] * residual * b).sum(1))


def test_drelu_selects_the_smallest_scale_channels():
    alpha = torch.tensor([0.9, -0.05, 0.4, 0.2, 1.5, 0.01, 0.7, 0.3, 0.6, 0.1])
    gate = drelu(alpha, tau=0.6)  # (1 - tau) C = 4 channels: |alpha| 0.01, 0.05, 0.1, 0.2
    assert gate.tolist() == [0, 1, 0, 1, 0, 1, 0, 0, 0, 1]
    assert drelu(alpha, tau=1.0).sum() == 0  # tau = 1 switches the recurrent module off


def test_rbonn_gate_follows_alpha_and_u_learns_at_a_tenth_of_the_lr():
    model, method = _prepared("rbonn")
    layer, step = next(iter(recurrent_layers(model)))
    with torch.no_grad():
        layer.channel_scale.alpha.copy_(torch.arange(layer.channel_scale.alpha.numel(), 0, -1).float())
    method.after_step(model)
    smallest = set(torch.argsort(layer.channel_scale.alpha)[: int(0.4 * len(step.gate))].tolist())
    assert set(torch.nonzero(step.gate).flatten().tolist()) == smallest
    groups = method.param_groups(model, 1e-3, 1e-5)
    assert [g["lr"] for g in groups] == [1e-3, 1e-4] and groups[1]["weight_decay"] == 0.0
    x = torch.rand(8, *SHAPE)
    model(x).sum().backward()  # first step: no previous gradient yet, so u's gradient is 0
    method.after_backward(model)
    model.zero_grad()
    model(x).sum().backward()
    assert step.u.grad is not None and step.u.grad.abs().sum() > 0


def test_flip_rate_counts_a_constructed_flip():
    model, _ = _prepared("ste")
    flips = FlipRate(model)
    layer = model.features[3]
    with torch.no_grad():
        layer.weight[:2] = -layer.weight[:2]  # 2 rows of 128 weights flip, of 4 layers' weights
    total = sum(m.weight.numel() for m in (model.features[0], model.features[3], model.features[6], model.features[9]))
    zeros = int((layer.weight[:2] == 0).sum())  # -0 is still +1
    assert flips.update() == pytest.approx((256 - zeros) / total)
    assert flips.update() == 0.0
