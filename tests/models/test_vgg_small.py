"""VGG-Small: shapes, five binary convs each with its BatchNorm registered after it but run after the max-pool,
the fixed-point ``hw`` form, and QONNX exports with 1-bit weights that qonnx's executor runs to PyTorch's
output."""

from __future__ import annotations

from collections import Counter

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models import create_model, list_models
from bnnflow.models.methods.base import next_batchnorm
from bnnflow.pipeline.execute import execute
from tests.models.exported import batchnorm_starts, check_input_quant, export_with_random_statistics, joins, weight_producers

CIFAR_SHAPE = (3, 32, 32)
SMALL_SHAPE = (3, 16, 16)
SMALL_WIDTHS = [16, 16, 32, 32, 64, 64]
VGG_SMALL_PARAMS = 4_660_106  # 3x3 convs 3-128-128-256-256-512-512, six BatchNorms, Linear(8192, 10)


def _binary_convs(model: nn.Module) -> list[qnn.QuantConv2d]:
    return [m for m in model.modules() if isinstance(m, qnn.QuantConv2d) and m.quant_weight().bit_width.item() == 1]


def test_vgg_small_is_registered():
    assert "vgg_small" in list_models()


def test_forward_shape_and_size_at_cifar_resolution():
    model = create_model("vgg_small", input_shape=CIFAR_SHAPE, num_classes=10).eval()
    with torch.no_grad():
        out = model(torch.rand(2, *CIFAR_SHAPE))
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert type(model.conv0) is nn.Conv2d and type(model.fc) is nn.Linear
    assert model.fc.in_features == 8192
    assert sum(p.numel() for p in model.parameters()) == VGG_SMALL_PARAMS


def test_binary_convs_have_their_batchnorm_after_the_pool():
    model = create_model("vgg_small", input_shape=SMALL_SHAPE, num_classes=10)
    convs = _binary_convs(model)
    assert [m.out_channels for m in convs] == [128, 256, 256, 512, 512]
    for conv in convs:
        assert next_batchnorm(model, conv) is not None
    order = []
    for block in model.features:
        for part in (block.conv, block.pool, block.bn):
            part.register_forward_hook(lambda m, args, y: order.append(type(m).__name__))
    with torch.no_grad():
        model.eval()(torch.rand(1, *SMALL_SHAPE))
    pooled = ["QuantConv2d", "MaxPool2d", "BatchNorm2d"]
    plain = ["QuantConv2d", "Identity", "BatchNorm2d"]
    assert order == pooled + plain + pooled + plain + pooled


@pytest.mark.parametrize("shape,widths", [((3, 4, 4), None), (CIFAR_SHAPE, [128, 256])])
def test_invalid_arguments_are_config_errors(shape, widths):
    args = {} if widths is None else {"widths": widths}
    with pytest.raises(ConfigError, match="vgg_small"):
        create_model("vgg_small", input_shape=shape, num_classes=10, **args)


def test_hw_is_fixed_point():
    model = create_model("vgg_small", input_shape=SMALL_SHAPE, num_classes=10, widths=SMALL_WIDTHS, hw=True).eval()
    assert not [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert model.conv0.quant_weight().bit_width.item() == 8 and model.fc.quant_weight().bit_width.item() == 8
    seen = []
    model.fc.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.rand(2, *SMALL_SHAPE))
    assert torch.equal(seen[0] * 128, (seen[0] * 128).round())  # the classifier reads 8-bit codes on [-1, 1)


@pytest.mark.parametrize("hw", [False, True])
def test_export_has_bipolar_weights_and_matches_pytorch(hw):
    torch.manual_seed(0)
    model = create_model("vgg_small", input_shape=SMALL_SHAPE, num_classes=10, widths=SMALL_WIDTHS, hw=hw)
    wrapper, nodes, producer = export_with_random_statistics(model, SMALL_SHAPE)
    weights = weight_producers(nodes, producer, ("Conv", "Gemm"))
    multibit = "Quant" if hw else "float"
    assert weights == [multibit] + ["BipolarQuant"] * 5 + [multibit]
    counts = Counter(n.op_type for n in nodes)
    assert counts["BipolarQuant"] == 10 and not joins(wrapper.graph)  # a plain chain: Adds only of BN shifts
    assert counts["Quant"] == (4 if hw else 1)  # input; with hw also conv0's and fc's weights and fc's input
    check_input_quant(wrapper.graph)
    starts = batchnorm_starts(wrapper.graph)  # BatchNormalization, or Mul -> Add (ExactBatchNorm) with hw
    assert {n.op_type for n in starts} == {"Mul" if hw else "BatchNormalization"}
    assert len(starts) == (6 if hw else 5)  # the float conv0 takes its BatchNorm into its weights and bias
    assert counts["Add"] == (6 if hw else 0)
    pooled = [producer[n.input[0]].op_type for n in starts]
    assert pooled.count("MaxPool") == 3
    images = torch.from_numpy((np.random.default_rng(0).integers(0, 256, (4, *SMALL_SHAPE)) / 255).astype(np.float32))
    with torch.no_grad():
        expected = model(images).numpy()
    got = execute(wrapper, images.numpy(), batch=4)[wrapper.graph.output[0].name]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
