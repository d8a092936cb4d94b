"""CIFAR ResNet-18 and ResNet-20 (both block forms): shapes, the binary convs and their BatchNorms, option-A
shortcuts without parameters, the fixed-point ``hw`` form, and QONNX exports with 1-bit weights that qonnx's
executor runs to PyTorch's output. Exports use one block per stage and 16x16 inputs to stay fast."""

from __future__ import annotations

import math
from collections import Counter

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models import create_model, list_models
from bnnflow.models.cifar_resnet import BasicBlock, BiRealBasicBlock, OptionAShortcut
from bnnflow.models.layers import ExactBatchNorm2d
from bnnflow.models.methods.base import next_batchnorm
from bnnflow.models.resnet import PAD_VALUES, PaddedBinaryConv2d, check_pad_value
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import FLOAT_RTOL, compare_outputs, is_integer_network
from tests.models.exported import attributes, export_with_random_statistics, initializers, joins, weight_producers

SMALL_SHAPE = (3, 16, 16)
TINY_SHAPE = (3, 8, 8)  # still 1x1 after the last of three stride-2 stages

# (model, arguments, binary convs)
BINARY_CONVS = [
    ("cifar_resnet18", {}, 16),
    ("cifar_resnet18", {"binary_shortcut": True}, 19),  # RBNN: the three 1x1 shortcut convs are binary too
    ("resnet20", {}, 18),
    ("resnet20", {"shortcut": "conv"}, 18),
    ("resnet20_bireal", {}, 18),
]

# (model, arguments, binary convs, parameter-free shortcuts, multi-bit convs + linear) at one block per stage
EXPORTS = [
    ("cifar_resnet18", {"widths": [8, 16, 16, 32], "stem_width": 8, "binary_shortcut": True}, 8 + 3, 0, 1 + 1),
    ("cifar_resnet18", {"widths": [8, 16, 16, 32], "stem_width": 8, "hw": True}, 8, 0, 1 + 3 + 1),
    ("resnet20", {"widths": [8, 16, 32], "stem_width": 8, "hw": True}, 6, 2, 1 + 1),
    ("resnet20_bireal", {"widths": [8, 16, 32], "stem_width": 8}, 6, 2, 1 + 1),
]


def _binary_convs(model: nn.Module) -> list[qnn.QuantConv2d]:
    return [m for m in model.modules() if isinstance(m, qnn.QuantConv2d) and m.quant_weight().bit_width.item() == 1]


def test_models_are_registered():
    assert {"cifar_resnet18", "resnet20", "resnet20_bireal"} <= set(list_models())


@pytest.mark.parametrize("hw,pad_value", [(False, 0), (True, 1)])
@pytest.mark.parametrize("name,args,count", BINARY_CONVS)
def test_binary_convs_each_followed_by_batchnorm(name, args, count, hw, pad_value):
    """Every binary conv (padded with +-1 too) has its BatchNorm right after it (the exact form with ``hw``) and a
    sign before it; the input goes through the one unsigned ReLU quantizer; with ``hw`` each residual branch
    has its join quantizer and there is no hardtanh (a quantizer's clamp does its work)."""
    model = create_model(name, input_shape=TINY_SHAPE, num_classes=7, hw=hw, pad_value=pad_value, **args)
    with torch.no_grad():
        out = model.eval()(torch.rand(2, *TINY_SHAPE))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    convs = _binary_convs(model)
    assert len(convs) == count
    padded = [c for c in convs if isinstance(c, PaddedBinaryConv2d)]
    assert len(padded) == (sum(c.kernel_size == (3, 3) for c in convs) if pad_value else 0)
    assert all(c.pad_value == pad_value and c.pad_amount == 1 and c.padding == (0, 0) for c in padded)
    for conv in convs:
        bn = next_batchnorm(model, conv)
        assert isinstance(bn, ExactBatchNorm2d if hw else nn.BatchNorm2d) and bn.num_features == conv.out_channels
    signs = [m for m in model.modules() if isinstance(m, qnn.QuantIdentity) and m.act_quant.bit_width() == 1]
    assert len(signs) == count  # a sign before each binary conv
    assert [m for m in model.modules() if isinstance(m, qnn.QuantReLU)] == [model.input_quant]
    assert not any(isinstance(m, nn.Hardtanh) for m in model.modules()) == hw
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, BiRealBasicBlock))]
    joins = [m for b in blocks for child, m in b.named_children() if child.startswith("join")]
    assert len(joins) == len(blocks) * (2 if name == "resnet20_bireal" else 1)
    assert all(isinstance(j, qnn.QuantIdentity if hw else nn.Identity) for j in joins)


def test_stage_widths_and_blocks_are_arguments():
    model = create_model("cifar_resnet18", input_shape=SMALL_SHAPE, num_classes=10, widths=[120, 222, 290, 458],
                         blocks=[1, 1, 1, 1])  # DWR's reshaped ResNet-18
    assert [m.out_channels for m in _binary_convs(model)] == [120, 120, 222, 222, 290, 290, 458, 458]
    assert model.conv1.out_channels == 64  # the stem keeps its width; the first block's shortcut widens it
    assert isinstance(model.layers[0][0].shortcut[0], nn.Conv2d)
    assert model.fc.in_features == 458


def test_option_a_shortcuts_have_no_parameters():
    model = create_model("resnet20", input_shape=SMALL_SHAPE, num_classes=10)
    shortcuts = [m for m in model.modules() if isinstance(m, OptionAShortcut)]
    assert len(shortcuts) == 2  # entering stages 2 and 3
    assert all(not list(m.parameters()) and not list(m.buffers()) for m in shortcuts)
    # nothing on any shortcut path but the two pads: 18 binary convs + stem + classifier hold all the weights
    weights = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert len(weights) == 18 + 2


def test_option_a_subsamples_and_zero_pads_channels():
    x = torch.randn(2, 6, 8, 8)
    y = OptionAShortcut(6, 16, stride=2)(x)
    assert y.shape == (2, 16, 4, 4)
    assert torch.equal(y[:, 5:11], x[:, :, ::2, ::2])
    assert not y[:, :5].any() and not y[:, 11:].any()


def test_bireal_form_adds_a_shortcut_around_every_conv():
    model = create_model("resnet20_bireal", input_shape=SMALL_SHAPE, num_classes=10, blocks=[1, 1, 1])
    block = model.layers[1][0]
    x = torch.randn(2, 16, 16, 16)
    block.eval()
    with torch.no_grad():
        h = torch.nn.functional.hardtanh(block.bn1(block.conv1(block.act1(x))) + block.shortcut(x))
        expected = torch.nn.functional.hardtanh(block.bn2(block.conv2(block.act2(h))) + h)
        assert torch.equal(block(x), expected)


@pytest.mark.parametrize("name,args", [("resnet20", {"shortcut": "none"}), ("resnet20", {"widths": [16, 32]}),
                                       ("cifar_resnet18", {"blocks": [2, 0, 2, 2]}),
                                       ("resnet20", {"widths": [32, 16, 64]}), ("resnet20", {"blocks": [1, 1, 1.0]})])
def test_invalid_arguments_are_config_errors(name, args):
    with pytest.raises(ConfigError, match=name):
        create_model(name, input_shape=SMALL_SHAPE, num_classes=10, **args)


@pytest.mark.parametrize("name,args", [("cifar_resnet18", {"blocks": [1, 1, 1, 1]}),
                                       ("resnet20", {"blocks": [1, 1, 1], "shortcut": "conv"}),
                                       ("resnet20_bireal", {"blocks": [1, 1, 1]})])
def test_hw_is_fixed_point(name, args):
    """No float conv or linear is left, and every tensor a shortcut or the classifier reads is on a 2^-k grid."""
    model = create_model(name, input_shape=SMALL_SHAPE, num_classes=10, hw=True, **args).eval()
    assert not [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    layers = [m for m in model.modules() if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    assert all(m.quant_weight().bit_width.item() <= 8 for m in layers)
    seen = []
    for stage in model.layers:
        for block in stage:
            block.register_forward_hook(lambda m, args, y: seen.append((y, 128)))
    model.fc.register_forward_pre_hook(lambda m, args: seen.append((args[0], 16)))
    with torch.no_grad():
        model(torch.rand(2, *SMALL_SHAPE))
    assert len(seen) == len(model.layers) + 1
    for y, steps in seen:
        assert torch.equal(y * steps, (y * steps).round())


@pytest.mark.parametrize("name,args,binary,free,multibit", EXPORTS, ids=[f"{e[0]}-{i}" for i, e in enumerate(EXPORTS)])
def test_export_has_bipolar_weights_and_matches_pytorch(name, args, binary, free, multibit):
    torch.manual_seed(0)
    model = create_model(name, input_shape=SMALL_SHAPE, num_classes=10, blocks=[1] * len(args["widths"]), **args)
    wrapper, nodes, producer = export_with_random_statistics(model, SMALL_SHAPE)
    weights = Counter(weight_producers(nodes, producer, ("Conv", "Gemm", "MatMul")))
    hw = args.get("hw", False)
    assert weights == ({"BipolarQuant": binary, "Quant": multibit} if hw else {"BipolarQuant": binary, "float": multibit})
    assert Counter(n.op_type for n in nodes)["Pad"] == free
    images = torch.from_numpy((np.random.default_rng(0).integers(0, 256, (4, *SMALL_SHAPE)) / 255).astype(np.float32))
    with torch.no_grad():
        expected = model(images).numpy()
    got = execute(wrapper, images.numpy(), batch=4)[wrapper.graph.output[0].name]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# pad_value, and the hw residual joins

HW_RESNET20 = {"widths": [8, 16, 32], "stem_width": 8, "blocks": [1, 1, 1], "hw": True}


def _matches_pytorch(model: nn.Module, wrapper) -> None:
    """qonnx runs the graph to PyTorch's output: exactly when export calls the network exact, else within the
    export check's relative tolerance."""
    images = torch.from_numpy((np.random.default_rng(0).integers(0, 256, (4, *SMALL_SHAPE)) / 255).astype(np.float32))
    with torch.no_grad():
        expected = model(images).numpy()
    got = execute(wrapper, images.numpy(), batch=4)[wrapper.graph.output[0].name]
    rtol = 0.0 if is_integer_network(wrapper) else FLOAT_RTOL
    assert compare_outputs(expected, got, rtol)["mismatches"] == 0, np.abs(expected - got).max()


@pytest.mark.parametrize("pad_value", PAD_VALUES)
def test_pad_value_exports_the_padding_it_asks_for_and_matches_pytorch(pad_value):
    """Zero padding is the binary Conv's own ``pads``; +-1 is a constant Pad of that value between the sign and a
    Conv without padding. PyTorch pads the same way, and qonnx runs the graph to PyTorch's output."""
    torch.manual_seed(0)
    model = create_model("resnet20", input_shape=SMALL_SHAPE, num_classes=10, pad_value=pad_value, **HW_RESNET20)
    conv = next(m for m in model.modules() if isinstance(m, qnn.QuantConv2d) and m.kernel_size == (3, 3)
                and m.quant_weight().bit_width.item() == 1)
    x = torch.where(torch.rand(2, conv.in_channels, 6, 6) < 0.5, -1.0, 1.0)
    with torch.no_grad():  # the border is pad_value: a reference conv on the explicitly padded input
        reference = F.conv2d(F.pad(x, (1,) * 4, value=float(pad_value)), conv.quant_weight().value, stride=conv.stride)
        assert torch.equal(conv.eval()(x), reference)
    wrapper, nodes, producer = export_with_random_statistics(model, SMALL_SHAPE)
    inits = initializers(wrapper.graph)
    binary = [n for n in nodes if n.op_type == "Conv" and producer[n.input[1]].op_type == "BipolarQuant"]
    assert len(binary) == 6
    for node in binary:
        source = producer[node.input[0]]
        if pad_value == 0:
            assert attributes(node)["pads"] == [1, 1, 1, 1] and source.op_type == "BipolarQuant"
            continue
        assert attributes(node)["pads"] == [0, 0, 0, 0] and source.op_type == "Pad"
        assert attributes(source).get("mode", b"constant") == b"constant"
        assert inits[source.input[1]].tolist() == [0, 0, 1, 1, 0, 0, 1, 1]  # H and W by one, not N or C
        assert inits[source.input[2]].item() == pad_value
        assert producer[source.input[0]].op_type == "BipolarQuant"
    bipolar_pads = [n for n in nodes if n.op_type == "Pad" and producer[n.input[0]].op_type == "BipolarQuant"]
    assert len(bipolar_pads) == (0 if pad_value == 0 else 6)
    _matches_pytorch(model, wrapper)


@pytest.mark.parametrize("value", [2, -2, 0.5, True, False, "1", None])
def test_check_pad_value_refuses_other_values_in_one_line(value):
    with pytest.raises(ValueError, match=r"^resnet20: pad_value must be one of \(0, 1, -1\)") as error:
        check_pad_value("resnet20", value)
    assert "\n" not in str(error.value) and repr(value) in str(error.value)
    with pytest.raises(ConfigError, match="pad_value"):
        create_model("resnet20", input_shape=SMALL_SHAPE, num_classes=10, pad_value=value)
    for ok in PAD_VALUES:
        check_pad_value("resnet20", ok)


def _quant_behind(name: str, producer: dict) -> object:
    """The Quant node a join input comes from, through the option-A shortcut's subsampling Slices and channel Pads
    (which move codes and add zeros, a code of every scale)."""
    node = producer[name]
    while node.op_type in ("Slice", "Pad"):
        node = producer[node.input[0]]
    return node


@pytest.mark.parametrize("name,args", [("resnet20", {}), ("resnet20", {"shortcut": "conv"}), ("resnet20_bireal", {}),
                                       ("cifar_resnet18", {"widths": [8, 16, 16, 32], "blocks": [1] * 4})])
def test_hw_joins_add_codes_of_one_scale(name, args):
    """Both inputs of every residual Add come from signed Quant nodes with zero point 0 and the same power-of-two
    scale, so the sum is an integer add of codes in hardware."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=SMALL_SHAPE, num_classes=10, **{**HW_RESNET20, **args})
    wrapper, nodes, producer = export_with_random_statistics(model, SMALL_SHAPE)
    inits = initializers(wrapper.graph)
    adds = joins(wrapper.graph)
    blocks = [m for m in model.modules() if isinstance(m, (BasicBlock, BiRealBasicBlock))]
    assert len(adds) == len(blocks) * (2 if name == "resnet20_bireal" else 1)
    for add in adds:
        quants = [_quant_behind(i, producer) for i in add.input]
        assert [q.op_type for q in quants] == ["Quant", "Quant"], [q.op_type for q in quants]
        scales = [inits[q.input[1]].item() for q in quants]
        assert scales[0] == scales[1] and math.frexp(scales[0])[0] == 0.5, (add.name, scales)
        assert all(inits[q.input[2]].item() == 0.0 and attributes(q)["signed"] == 1 for q in quants)
    _matches_pytorch(model, wrapper)
