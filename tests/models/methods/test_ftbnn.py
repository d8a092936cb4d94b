"""FTBNN: the FPReLU formula and placement, ApproxSign activations, unscaled sign weights, group execution (same
binary OPs at sqrt(G) the width), and the method contract (freeze keeps outputs, export, state dict, limits)."""

from __future__ import annotations

import math

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.errors import ConfigError, UnsupportedGraphError
from bnnflow.models import create_model
from bnnflow.models.layers import quant_act
from bnnflow.models.methods import create_method
from bnnflow.models.methods.base import binary_acts, binary_layers
from bnnflow.models.methods.ftbnn import FPReLU, binary_ops, group_width
from bnnflow.models.quantizers import weight_quant
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model
from tests.models.exported import check_input_quant

SHAPE = (1, 8, 8)
GROUPS = [2, 4, 8]


def _binary_conv(c_in: int, c_out: int) -> qnn.QuantConv2d:
    return qnn.QuantConv2d(c_in, c_out, kernel_size=3, padding=1, bias=False, weight_quant=weight_quant(1),
                           weight_bit_width=1)


class ConvNet(nn.Module):
    """Float stem, two ``binary conv -> BN -> sign`` layers of ``width`` channels, float head."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.input_shape = (3, 6, 6)
        self.stem = nn.Conv2d(3, width, kernel_size=3, padding=1)
        self.features = nn.Sequential(quant_act(1), _binary_conv(width, width), nn.BatchNorm2d(width), quant_act(1),
                                      _binary_conv(width, width), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(self.features(self.stem(x)).mean((2, 3)))


class ResidualUnit(nn.Module):
    """Bi-Real's unit: sign -> binary conv -> BN, plus the real-valued input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.act = quant_act(1)
        self.conv = _binary_conv(channels, channels)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x):
        return self.bn(self.conv(self.act(x))) + x


class ResidualNet(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.input_shape = (3, 6, 6)
        self.stem = nn.Conv2d(3, channels, kernel_size=3, padding=1)
        self.units = nn.Sequential(ResidualUnit(channels), ResidualUnit(channels))
        self.head = nn.Linear(channels, 10)

    def forward(self, x):
        return self.head(self.units(self.stem(x)).mean((2, 3)))


def _train(model: nn.Module, method, x: torch.Tensor, steps: int = 5) -> None:
    optimizer = torch.optim.Adam(method.param_groups(model, 1e-2, 1e-4))
    y = torch.randint(0, 10, (len(x),))
    method.on_epoch_start(model, 0, 1)
    model.train()
    for _ in range(steps):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        method.after_backward(model)
        optimizer.step()
        method.after_step(model)


def test_fprelu_computes_its_formula():
    torch.manual_seed(0)
    f = FPReLU(4)
    with torch.no_grad():
        for p in f.parameters():
            p.copy_(torch.randn(4))
    x = torch.randn(5, 4, 3, 3)
    b_in, p, n, b_out = (t.reshape(1, -1, 1, 1) for t in (f.shift_in, f.slope_pos, f.slope_neg, f.shift_out))
    z = x + b_in
    expected = torch.where(z > 0, p * z, n * z) + b_out
    torch.testing.assert_close(f(x), expected)
    torch.testing.assert_close(f(x[:, :, 0, 0]), expected[:, :, 0, 0])  # [N, C] after a linear layer


def test_ftbnn_puts_fprelu_on_every_binary_layers_batchnorm_and_approx_sign_on_activations():
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    create_method("ftbnn").prepare(model)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
    assert len(bns) == 3 and all(isinstance(bn.fprelu, FPReLU) for bn in bns)  # none after the class layer
    assert sum(isinstance(m, FPReLU) for m in model.modules()) == 3
    layer = binary_layers(model)[0][1]
    assert not hasattr(layer, "channel_scale")  # no weight scaling factor: sign(w), then the BatchNorm
    assert set(layer.quant_weight().value.unique().tolist()) == {-1.0, 1.0}
    _, act = binary_acts(model)[0]
    x = torch.tensor([-1.5, -0.75, -0.25, 0.0, 0.25, 0.75, 1.5], requires_grad=True)
    act.train()
    act(x[None]).value.sum().backward()
    torch.testing.assert_close(x.grad, torch.clamp(2 - 2 * x.detach().abs(), min=0))  # ApproxSign


def test_ftbnn_does_not_weight_decay_fprelu():
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    method = create_method("ftbnn")
    method.prepare(model)
    groups = method.param_groups(model, 1e-3, 1e-4)
    fprelu = {id(p) for m in model.modules() if isinstance(m, FPReLU) for p in m.parameters()}
    assert [g["weight_decay"] for g in groups] == [1e-4, 0.0]
    assert {id(p) for p in groups[1]["params"]} == fprelu
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(model.parameters()))


def test_ftbnn_freezes_to_the_same_outputs_exports_and_compiles_while_fprelu_is_monotone():
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    method = create_method("ftbnn")
    method.prepare(model)
    x = torch.rand(32, *SHAPE)
    _train(model, method, x)
    model.eval()
    before = model(x).detach()
    method.freeze(model)
    torch.testing.assert_close(model(x), before)
    graph = export_model(model, SHAPE)
    ops = [n.op_type for n in graph.graph.node]
    input_relu = check_input_quant(graph.graph).input[0]  # the input quantizer's Relu -> Quant
    fprelu = [n for n in graph.graph.node if n.op_type == "Relu" and n.output[0] != input_relu]
    assert ops.count("BipolarQuant") >= 4 and len(fprelu) == 6  # FPReLU stays: two Relu per layer
    got = execute(graph, x.numpy())[graph.graph.output[0].name]
    np.testing.assert_allclose(got, before.numpy(), rtol=1e-5, atol=1e-5)
    # what ``limits`` says: the compiler folds an FPReLU monotone in every channel into the thresholds, and
    # refuses one whose slopes differ in sign in some channel (the sign's preimage is then an interval)
    assert "MultiThreshold" in {n.op_type for n in streamline_model(graph).graph.node}
    first = next(m for m in model.modules() if isinstance(m, FPReLU))
    with torch.no_grad():
        first.slope_pos.fill_(1.0)
        first.slope_neg[0] = -0.5  # channel 0 now falls below zero and rises above it
    with pytest.raises(UnsupportedGraphError, match="rises and falls"):
        streamline_model(export_model(model, SHAPE))
    assert "edge path" in method.limits


def test_ftbnn_state_round_trips_through_a_state_dict():
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    method = create_method("ftbnn")
    method.prepare(model)
    _train(model, method, torch.rand(16, *SHAPE))
    state = model.state_dict()
    assert sum(k.endswith("fprelu.slope_neg") for k in state) == 3
    fresh = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    create_method("ftbnn").prepare(fresh)
    fresh.load_state_dict(state)
    x = torch.rand(8, *SHAPE)
    torch.testing.assert_close(fresh.eval()(x), model.eval()(x))


def test_ftbnn_fprelu_goes_on_each_residual_units_batchnorm_and_exports():
    torch.manual_seed(0)
    model = ResidualNet()
    method = create_method("ftbnn")
    method.prepare(model)
    assert all(isinstance(unit.bn.fprelu, FPReLU) for unit in model.units)
    x = torch.rand(16, *model.input_shape)
    _train(model, method, x)
    model.eval()
    before = model(x).detach()
    method.freeze(model)
    torch.testing.assert_close(model(x), before)
    graph = export_model(model, model.input_shape)
    got = execute(graph, x.numpy())[graph.graph.output[0].name]
    np.testing.assert_allclose(got, before.numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("groups", GROUPS)
def test_group_width_keeps_binary_ops(groups):
    for width in (16, 64, 100, 512):
        wide = group_width(width, groups)
        assert wide % groups == 0
        # a conv's binary OPs scale as C_in C_out / G: within the rounding of the width to a multiple of G
        assert wide * wide / groups == pytest.approx(width * width, rel=2 * groups / (width * math.sqrt(groups)))
    assert group_width(64, 4) == 128


def test_groups_option_keeps_binary_ops_of_the_widened_network_and_exports_grouped_convs():
    torch.manual_seed(0)
    plain = ConvNet(8)
    assert binary_ops(plain, plain.input_shape) == 2 * 8 * 8 * 9 * 36
    grouped = ConvNet(group_width(8, 4))
    method = create_method("ftbnn", groups=4)
    method.prepare(grouped)
    assert all(layer.groups == 4 and layer.weight.shape == (16, 4, 3, 3) for _, layer in binary_layers(grouped))
    assert binary_ops(grouped, grouped.input_shape) == binary_ops(plain, plain.input_shape)
    x = torch.rand(8, *grouped.input_shape)
    _train(grouped, method, x, steps=2)
    grouped.eval()
    before = grouped(x).detach()
    method.freeze(grouped)
    torch.testing.assert_close(grouped(x), before)
    graph = export_model(grouped, grouped.input_shape)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    assert sorted(a.i for n in convs for a in n.attribute if a.name == "group") == [1, 4, 4]  # the stem is not


def test_groups_that_do_not_divide_the_width_are_a_config_error():
    with pytest.raises(ConfigError, match="does not divide"):
        create_method("ftbnn", groups=3).prepare(ConvNet(8))


def test_ftbnn_on_a_model_without_batchnorm_after_its_binary_layers_is_a_config_error():
    model = nn.Sequential(qnn.QuantLinear(4, 2, bias=False, weight_quant=weight_quant(1), weight_bit_width=1))
    with pytest.raises(ConfigError, match="no binary layer"):
        create_method("ftbnn").prepare(model)
