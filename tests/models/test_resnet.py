"""Bi-Real Net 18 and the float ResNet-18: shapes in both stem forms, torchvision's parameter count, and a
QONNX export of Bi-Real whose binary parts are BipolarQuant, whose residual stream stays float, and which qonnx's
executor runs to PyTorch's output."""

from __future__ import annotations

from collections import Counter

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models import create_model, list_models
from bnnflow.models.methods.base import next_batchnorm
from bnnflow.models.resnet import BiRealUnit, ReActUnit
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model
from tests.models.exported import check_input_quant, export_with_random_statistics, weight_producers

TORCHVISION_RESNET18_PARAMS = 11_689_512  # torchvision.models.resnet18(num_classes=1000)
BINARY_CONVS = 16  # 4 stages x 2 basic blocks x 2 Bi-Real units; stem, 1x1 downsample convs and FC are float
FLOAT_CONVS = 4  # the stem conv and the three downsample 1x1 convs
CIFAR_SHAPE = (3, 32, 32)
QUANTIZERS = ("Quant", "BipolarQuant")


def test_models_are_registered():
    assert {"birealnet18", "birealnet34", "reactnet18", "reactnet34", "resnet18"} <= set(list_models())


@pytest.mark.parametrize("name", ["birealnet18", "resnet18"])
@pytest.mark.parametrize("size,num_classes", [(224, 1000), (32, 10)])
def test_forward_shape(name, size, num_classes):
    model = create_model(name, input_shape=(3, size, size), num_classes=num_classes).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, size, size))
    assert out.shape == (1, num_classes)
    assert torch.isfinite(out).all()
    # ImageNet stem (7x7/2 conv and max-pool) from 64 px up, CIFAR stem (3x3/1, no pool) below
    assert model.conv1.kernel_size == ((7, 7) if size >= 64 else (3, 3))
    assert isinstance(model.maxpool, nn.MaxPool2d) == (size >= 64)


@pytest.mark.parametrize("name", ["birealnet18", "resnet18"])
def test_parameter_count_is_torchvision_resnet18(name):
    """Bi-Real keeps ResNet-18's conv shapes (one 3x3 conv per unit, two units per block), so both match."""
    model = create_model(name, input_shape=(3, 224, 224), num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_RESNET18_PARAMS


def test_birealnet18_binary_layers():
    model = create_model("birealnet18", input_shape=CIFAR_SHAPE, num_classes=10)
    binary = [m for m in model.modules() if isinstance(m, qnn.QuantConv2d)]
    assert len(binary) == BINARY_CONVS
    assert all(m.kernel_size == (3, 3) and m.quant_weight().bit_width.item() == 1 for m in binary)
    floats = [m for m in model.modules() if type(m) is nn.Conv2d]
    assert sorted(m.kernel_size for m in floats) == [(1, 1)] * 3 + [(3, 3)]
    assert type(model.fc) is nn.Linear


@pytest.fixture(scope="module")
def exported():
    """Bi-Real 18 at 32x32 with non-trivial BatchNorm statistics, and its QONNX graph."""
    torch.manual_seed(0)
    model = create_model("birealnet18", input_shape=CIFAR_SHAPE, num_classes=10)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    model.eval()
    return model, export_model(model, CIFAR_SHAPE)


def test_export_binary_parts_are_bipolar_quant(exported):
    _, wrapper = exported
    nodes = list(wrapper.graph.node)
    counts = Counter(n.op_type for n in nodes)
    assert counts["Conv"] == BINARY_CONVS + FLOAT_CONVS
    assert counts["BipolarQuant"] == 2 * BINARY_CONVS
    assert counts["Quant"] == 1  # the 8-bit input
    assert counts["Add"] == BINARY_CONVS  # one shortcut per binary conv
    producer = {o: n for n in nodes for o in n.output}
    binary_convs, float_conv_inputs = 0, []
    for conv in (n for n in nodes if n.op_type == "Conv"):
        weight = producer.get(conv.input[1])
        if weight is None:  # float conv: a plain initializer
            assert wrapper.get_initializer(conv.input[1]) is not None
            float_conv_inputs.append(producer[conv.input[0]].op_type)
            continue
        binary_convs += 1
        assert weight.op_type == "BipolarQuant"
        assert wrapper.get_initializer(weight.input[0]) is not None  # weights come through the quantizer
        act = producer[conv.input[0]]
        assert act.op_type == "BipolarQuant" and wrapper.get_initializer(act.input[0]) is None
        for q in (weight, act):
            assert np.all(wrapper.get_initializer(q.input[1]) == 1.0)  # scale 1: exactly {-1, +1}
    assert binary_convs == BINARY_CONVS
    assert sorted(float_conv_inputs) == ["AveragePool"] * 3 + ["Quant"]  # downsample shortcuts and the stem


def test_export_residual_stream_stem_and_head_stay_float(exported):
    _, wrapper = exported
    nodes = list(wrapper.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    for add in (n for n in nodes if n.op_type == "Add"):
        sources = [producer[name].op_type for name in add.input]
        assert "BatchNormalization" in sources  # the binary conv's branch
        assert not set(sources) & set(QUANTIZERS)
    quant = check_input_quant(wrapper.graph)  # graph input -> Relu -> the unsigned 8-bit Quant
    stem = next(n for n in nodes if n.op_type == "Conv")
    assert stem.input[0] == quant.output[0] and wrapper.get_initializer(stem.input[1]) is not None
    (gemm,) = (n for n in nodes if n.op_type == "Gemm")
    assert all(wrapper.get_initializer(name) is not None for name in gemm.input[1:])
    assert producer[gemm.input[0]].op_type in ("Flatten", "Reshape")


def test_export_matches_pytorch(exported):
    model, wrapper = exported
    images = torch.from_numpy(
        (np.random.default_rng(0).integers(0, 256, size=(4, *CIFAR_SHAPE)) / 255.0).astype(np.float32))
    with torch.no_grad():
        expected = model(images).numpy()
    got = execute(wrapper, images.numpy(), batch=4)[wrapper.graph.output[0].name]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


# ---------------------------------------------------------------------------------------------------------------
# The ImageNet family: Bi-Real 18/34 and the ReActNet form, with widths, depth and the hw flag as arguments

TINY_SHAPE = (3, 8, 8)  # the CIFAR stem; 1x1 after the third stride-2 stage
SMALL_SHAPE = (3, 16, 16)
SMALL_WIDTHS = [8, 8, 16, 16]
TORCHVISION_RESNET34_PARAMS = 21_797_672  # torchvision.models.resnet34(num_classes=1000)
# ReActNet's unit adds move0 (its input width), move1, PReLU and move2 (its output width) to Bi-Real's: over
# ResNet-18's units, 4 x (64 + 3 x 64) + (64 + 3 x 128) + 3 x 4 x 128 + (128 + 3 x 256) + 3 x 4 x 256
# + (256 + 3 x 512) + 3 x 4 x 512
REACTNET18_EXTRA_PARAMS = 14_912

# (model, binary 3x3 convs: one per unit, [4, 4, 4, 4] or [6, 8, 12, 6] units)
IMAGENET_FAMILY = [("birealnet18", 16), ("birealnet34", 32), ("reactnet18", 16), ("reactnet34", 32)]


def _binary_convs(model: nn.Module) -> list[qnn.QuantConv2d]:
    return [m for m in model.modules() if isinstance(m, qnn.QuantConv2d) and m.quant_weight().bit_width.item() == 1]


@pytest.mark.parametrize("name,count", IMAGENET_FAMILY)
def test_binary_units_each_followed_by_batchnorm(name, count):
    model = create_model(name, input_shape=TINY_SHAPE, num_classes=7, widths=SMALL_WIDTHS, stem_width=8)
    with torch.no_grad():
        out = model.eval()(torch.rand(2, *TINY_SHAPE))
    assert out.shape == (2, 7) and torch.isfinite(out).all()
    convs = _binary_convs(model)
    assert len(convs) == count and all(m.kernel_size == (3, 3) for m in convs)
    for conv in convs:
        bn = next_batchnorm(model, conv)
        assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == conv.out_channels
    units = [m for m in model.modules() if isinstance(m, (BiRealUnit, ReActUnit))]
    assert len(units) == count and all(isinstance(u, ReActUnit) == name.startswith("reactnet") for u in units)


def test_parameter_counts_follow_torchvision():
    """Bi-Real 34 keeps ResNet-34's conv shapes; ReActNet 18 adds only its per-channel shifts and slopes."""
    shape = (3, 224, 224)
    assert sum(p.numel() for p in create_model("birealnet34", input_shape=shape, num_classes=1000).parameters()) == (
        TORCHVISION_RESNET34_PARAMS)
    assert sum(p.numel() for p in create_model("reactnet18", input_shape=shape, num_classes=1000).parameters()) == (
        TORCHVISION_RESNET18_PARAMS + REACTNET18_EXTRA_PARAMS)


def test_reactnet_unit_is_rsign_conv_batchnorm_shortcut_rprelu():
    torch.manual_seed(0)
    unit = ReActUnit(8, 16, stride=2).eval()
    with torch.no_grad():
        for p in (unit.move0.bias, unit.move1.bias, unit.move2.bias, unit.prelu.weight):
            p.uniform_(-0.5, 0.5)
        x = torch.randn(2, 8, 6, 6)
        shifted = x + unit.move0.bias.reshape(1, -1, 1, 1)  # only the sign sees the shift; the shortcut sees x
        out = unit.bn(unit.conv(unit.act(shifted))) + unit.downsample(x)
        out = F.prelu(out + unit.move1.bias.reshape(1, -1, 1, 1), unit.prelu.weight)
        assert torch.equal(unit(x), out + unit.move2.bias.reshape(1, -1, 1, 1))


def test_widths_blocks_and_stem_width_are_arguments():
    model = create_model("birealnet18", input_shape=TINY_SHAPE, num_classes=10, widths=[96, 168, 378, 866],
                         blocks=[2, 2, 2, 2])  # DWR's reshaped Bi-Real 18 (before its stem widening)
    assert [m.out_channels for m in _binary_convs(model)] == [96] * 2 + [168] * 2 + [378] * 2 + [866] * 2
    assert model.conv1.out_channels == 64
    downsample = model.layer1[0].downsample  # the stem's 64 channels widen to 96 at stride 1: no pool
    # the join quantizer is an Identity without hw
    assert [type(m) for m in downsample] == [nn.Conv2d, nn.BatchNorm2d, nn.Identity]
    assert downsample[0].in_channels == 64
    assert model.fc.in_features == 866


@pytest.mark.parametrize("args", [{"widths": [64, 128, 256]}, {"blocks": [4, 4, 0, 4]}, {"input_bits": 9}])
def test_invalid_arguments_are_config_errors(args):
    with pytest.raises(ConfigError, match="reactnet18"):
        create_model("reactnet18", input_shape=TINY_SHAPE, num_classes=10, **args)


@pytest.mark.parametrize("name", ["birealnet18", "reactnet18"])
def test_hw_is_fixed_point(name):
    """No float conv or linear is left, and the residual stream and the classifier's input are 8-bit codes
    on [-8, 8) (step 1/16)."""
    model = create_model(name, input_shape=SMALL_SHAPE, num_classes=10, widths=SMALL_WIDTHS, stem_width=8,
                         blocks=[2, 1, 1, 1], hw=True).eval()
    assert not [m for m in model.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    layers = [m for m in model.modules() if isinstance(m, (qnn.QuantConv2d, qnn.QuantLinear))]
    assert sorted(m.quant_weight().bit_width.item() for m in layers) == [1] * 5 + [8] * 5  # stem, 3 downsample, fc
    seen = []
    for unit in (m for m in model.modules() if isinstance(m, (BiRealUnit, ReActUnit))):
        unit.register_forward_hook(lambda m, args, y: seen.append(y))
    model.fc.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    with torch.no_grad():
        model(torch.rand(2, *SMALL_SHAPE))
    assert len(seen) == 5 + 1
    for y in seen:
        assert torch.equal(y * 16, (y * 16).round()) and y.abs().max() <= 8


# (model, arguments, multi-bit layers: stem, downsample convs, fc); the fixed-point ones are also run by qonnx
# (qonnx's cleanup takes ~10 s on a 34-layer graph, so only one goes through it here)
IMAGENET_EXPORTS = [
    ("birealnet18", {"blocks": [1, 1, 1, 1], "hw": True}, 5),
    ("reactnet18", {"blocks": [1, 1, 1, 1], "hw": True}, 5),
    ("reactnet34", {}, 5),
]


@pytest.mark.parametrize("name,args,multibit", IMAGENET_EXPORTS)
def test_family_exports_with_bipolar_weights(name, args, multibit):
    torch.manual_seed(0)
    model = create_model(name, input_shape=SMALL_SHAPE, num_classes=10, widths=SMALL_WIDTHS, stem_width=8, **args)
    wrapper, nodes, producer = export_with_random_statistics(model, SMALL_SHAPE)
    weights = Counter(weight_producers(nodes, producer, ("Conv", "Gemm")))
    binary = len(_binary_convs(model))
    assert weights == {"BipolarQuant": binary, "Quant" if args.get("hw") else "float": multibit}
    counts = Counter(n.op_type for n in nodes)
    assert counts["PRelu"] == (binary if name.startswith("reactnet") else 0)
    if not args.get("hw"):
        return  # the float residual stream is checked on birealnet18 above; qonnx's executor is slow on deep graphs
    images = torch.from_numpy((np.random.default_rng(0).integers(0, 256, (2, *SMALL_SHAPE)) / 255).astype(np.float32))
    with torch.no_grad():
        expected = model(images).numpy()
    got = execute(wrapper, images.numpy(), batch=2)[wrapper.graph.output[0].name]
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
