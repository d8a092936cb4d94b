"""Bi-Real Net 18 and the float ResNet-18: shapes in both stem forms, torchvision's parameter count, and a
QONNX export of Bi-Real whose binary parts are BipolarQuant, whose residual stream stays float, and which qonnx's
executor runs to PyTorch's output."""

from __future__ import annotations

from collections import Counter

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.models import create_model, list_models
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model

TORCHVISION_RESNET18_PARAMS = 11_689_512  # torchvision.models.resnet18(num_classes=1000)
BINARY_CONVS = 16  # 4 stages x 2 basic blocks x 2 Bi-Real units; stem, 1x1 downsample convs and FC are float
FLOAT_CONVS = 4  # the stem conv and the three downsample 1x1 convs
CIFAR_SHAPE = (3, 32, 32)
QUANTIZERS = ("Quant", "BipolarQuant")


def test_models_are_registered():
    assert {"birealnet18", "resnet18"} <= set(list_models())


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
    quant = next(n for n in nodes if n.op_type == "Quant")
    assert quant.input[0] == wrapper.graph.input[0].name
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
