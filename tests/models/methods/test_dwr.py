"""DWR: the reshaping arithmetic (compute kept, activations / sqrt(s)), the width search counting distinct
channels (a constructed layer, and the digits MLP on real digits), the IRConv2d binarization, and the method
contract (freeze keeps outputs, export, state dict)."""

from __future__ import annotations

import math

import brevitas.nn as qnn
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn

from bnnflow.models import create_model
from bnnflow.models.methods import create_method
from bnnflow.models.methods.base import ChannelScale, binary_acts, binary_layers, latent_weight, set_channel_scale
from bnnflow.models.methods.dwr import reshape_depth_width, width_search
from bnnflow.models.quantizers import weight_quant
from bnnflow.pipeline.export import export_model

SHAPE = (1, 8, 8)

# (blocks, widths, s, reshaped blocks): CIFAR ResNet-18 and ResNet-20 as DWR reshapes them, and an s that does
# not divide the depth (1.5 blocks round up to 2)
RESHAPES = [
    ([2, 2, 2, 2], [64, 128, 256, 512], 2.0, [1, 1, 1, 1]),
    ([3, 3, 3], [16, 32, 64], 3.0, [1, 1, 1]),
    ([3, 3, 3], [16, 32, 64], 2.0, [2, 2, 2]),
]


@pytest.mark.parametrize("blocks, widths, s, expected", RESHAPES)
def test_reshape_keeps_compute_and_cuts_activations_by_about_sqrt_s(blocks, widths, s, expected):
    new_blocks, new_widths = reshape_depth_width(blocks, widths, s)
    assert new_blocks == expected
    compute = sum(b * w * w for b, w in zip(blocks, widths))
    activations = sum(b * w for b, w in zip(blocks, widths))
    assert sum(b * w * w for b, w in zip(new_blocks, new_widths)) == pytest.approx(compute, rel=0.03)
    cut = sum(b / nb for b, nb in zip(blocks, new_blocks)) / len(blocks)  # the depth actually divided by
    assert sum(b * w for b, w in zip(new_blocks, new_widths)) == pytest.approx(activations / math.sqrt(cut), rel=0.03)


def test_reshape_by_two_gives_sqrt_two_wider_stages():
    assert reshape_depth_width([2, 2, 2, 2], [64, 128, 256, 512], 2.0) == ([1, 1, 1, 1], [91, 181, 362, 724])
    with pytest.raises(ValueError, match="one width per stage"):
        reshape_depth_width([2, 2], [64], 2.0)


class Probe(nn.Module):
    """One binary conv and its BatchNorm: the layer whose output channels the width search clusters."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv = qnn.QuantConv2d(c_in, c_out, kernel_size=3, bias=False, weight_quant=weight_quant(1),
                                    weight_bit_width=1)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x):
        return self.bn(self.conv(x))


def test_width_search_counts_k_repeated_patterns_plus_singletons():
    torch.manual_seed(0)
    c_in, k, copies, singletons = 8, 3, 6, 2
    patterns = torch.randn(k + singletons, c_in, 3, 3).sign()
    filters = []
    for j in range(k):
        for c in range(copies):
            w = patterns[j].clone()
            if c % 2:  # small noise: every other copy has one weight flipped (1 of 72), at its own place
                w.view(-1)[c] *= -1
            filters.append(w)
    filters += list(patterns[k:])
    probe = Probe(c_in, len(filters))
    with torch.no_grad():
        probe.conv.weight.copy_(torch.stack(filters))
    # and scaling: every channel multiplied by its own positive factor (cosine distance ignores it)
    set_channel_scale(probe.conv, ChannelScale(len(filters), init=torch.rand(len(filters)) * 2 + 0.5, learnable=False))
    inputs = torch.randn(c_in, 12, 12).sign() + 0.3 * torch.randn(40, c_in, 12, 12)  # fixed maps plus noise
    assert width_search(probe, inputs, eps=0.2) == {"conv": k + singletons}
    # with min_samples above the number of copies, no cluster forms: every channel is its own
    assert width_search(probe, inputs, eps=0.2, min_samples=copies + 1) == {"conv": len(filters)}


def _digits(n: int = 300) -> torch.Tensor:
    images = load_digits().images[:n] / 16.0
    return torch.tensor(images, dtype=torch.float32).reshape(n, *SHAPE)


def test_width_search_finds_duplicated_units_of_the_digits_mlp():
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    first = binary_layers(model)[0][1]
    with torch.no_grad():  # the first hidden layer's 16 units are 2 units, 8 times each
        first.weight.copy_(first.weight[:2].repeat(8, 1))
    widths = width_search(model, _digits(), eps=0.01)
    assert list(widths) == ["features.0", "features.3", "features.6"]  # the class layer's width is fixed
    assert widths["features.0"] == 2
    assert all(1 <= w <= 16 for w in widths.values())


def test_dwr_binarizes_weights_without_scale_with_clipped_ste_and_activations_with_approx_sign():
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    create_method("dwr").prepare(model)
    layer = binary_layers(model)[1][1]
    w = latent_weight(layer)
    with torch.no_grad():
        w[0, :4] = torch.tensor([-1.5, -0.5, 0.5, 1.5])
    assert torch.equal(layer.weight, torch.where(w >= 0, 1.0, -1.0))  # sign(w), sign(0) = +1, no scale
    (layer.weight * torch.randn_like(w)).sum().backward()
    assert (w.grad[0, :4] != 0).tolist() == [False, True, True, False]  # 1{|w| <= 1}
    _, act = binary_acts(model)[0]
    x = torch.tensor([-1.5, -0.75, 0.0, 0.25, 1.5], requires_grad=True)
    act.train()
    act(x[None]).value.sum().backward()
    torch.testing.assert_close(x.grad, torch.clamp(2 - 2 * x.detach().abs(), min=0))


def test_dwr_trains_freezes_to_the_same_outputs_exports_and_round_trips_its_state():
    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    method = create_method("dwr")
    method.prepare(model)
    optimizer = torch.optim.Adam(method.param_groups(model, 1e-2, 0.0))
    x, y = _digits(64), torch.tensor(load_digits().target[:64])
    start = latent_weight(binary_layers(model)[0][1]).detach().clone()
    for _ in range(5):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert not torch.equal(latent_weight(binary_layers(model)[0][1]), start)
    fresh = create_model("digits_mlp", input_shape=SHAPE, num_classes=10, hidden=16)
    create_method("dwr").prepare(fresh)
    fresh.load_state_dict(model.state_dict())
    model.eval()
    before = model(x).detach()
    torch.testing.assert_close(fresh.eval()(x), before)
    method.freeze(model)
    torch.testing.assert_close(model(x), before)
    graph = export_model(model, SHAPE)
    assert sum(n.op_type == "BipolarQuant" for n in graph.graph.node) >= 4
