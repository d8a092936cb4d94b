"""The flip-rate meter (models/methods/oscillation.py): exact counts on constructed flips, of the binary weight each
layer uses (the parametrization's output), not the latent weight."""

from __future__ import annotations

import pytest
import torch

from bnnflow.models import create_model
from bnnflow.models.methods import create_method
from bnnflow.models.methods.base import binary_layers
from bnnflow.models.methods.oscillation import FlipRate
from bnnflow.models.methods.rbonn import recurrent_layers

SHAPE = (1, 8, 8)


def _prepared(name: str):
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10)
    create_method(name).prepare(model)
    return model


def test_flip_rate_counts_a_constructed_flip():
    model = _prepared("ste")
    flips = FlipRate(model, window=2)
    total = sum(layer.weight.numel() for _, layer in binary_layers(model))
    layer = model.features[3]
    with torch.no_grad():
        layer.weight[:2] = torch.where(layer.weight[:2] >= 0, -1.0, 1.0) * (layer.weight[:2].abs() + 0.01)
    assert flips.update() == 256 / total  # 2 rows of 128 weights
    assert flips.update() == 0.0
    assert flips.mean() == pytest.approx(128 / total)
    assert flips.update() == 0.0
    assert flips.mean() == 0.0  # the window holds the last 2 steps


def test_flip_rate_counts_zero_as_plus_one():
    model = _prepared("ste")
    layer = model.features[0]
    with torch.no_grad():
        layer.weight[0] = 1.0
    flips = FlipRate(model)
    with torch.no_grad():
        layer.weight[0] = 0.0  # +1 to sign(0) = +1: no flip
    assert flips.update() == 0.0


def test_flip_rate_measures_the_parametrized_binary_weight():
    """IR-Net standardizes each filter before the sign: shifting a filter flips latent signs, not binary ones."""
    model = _prepared("irnet")
    flips = FlipRate(model)
    latent = model.features[0].parametrizations.weight.original
    before = latent.detach() >= 0
    with torch.no_grad():
        latent[0] += 0.0625
    assert (before != (latent >= 0)).sum() > 0
    assert flips.update() == 0.0


def test_flip_rate_sees_rbonns_recurrent_step_in_training_mode():
    model = _prepared("rbonn")
    layer, step = next(iter(recurrent_layers(model)))
    flips = FlipRate(model)
    with torch.no_grad():
        step.gate[0] = 1.0
        step.grad_prev[0] = 10 * layer.parametrizations.weight.original[0] / step.u[0]  # w - u g = -9 w
    total = sum(m.weight.numel() for _, m in binary_layers(model))
    assert flips.update() == 64 / total  # every weight of channel 0, though no latent weight changed
