"""Random small quantized networks, built from the project's Brevitas blocks, through the whole compiler:
model.qonnx == streamlined.onnx == dataflow.onnx (qonnx's executor) == the bit-exact simulator, exactly.

Hypothesis draws (derandomized, so the suite is reproducible) 200 networks of an 8-bit stem conv and one to four
steps, each a binary or 2-bit conv (zero padding, or the +-1 padding of ``PaddedBinaryConv2d`` on binary input;
stride 1 or 2; a max-pool before its BatchNorm as VGG-Small has it), a residual unit (a branch ending in
``join_quant`` added to a stream of the same step, as the ResNets have it) or a max-pool, each followed by a
quantizer of 1 to 4 bits or a fixed-point stream; then global average pooling or a flatten, an optional hidden
layer and a classifier. Every BatchNorm is random, zero and negative scales included. Tiny shapes (4 to 8 channels,
6x6 to 8x8 images) keep each network a fraction of a second.
"""

from __future__ import annotations

import warnings

import brevitas.nn as qnn
import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from bnnflow.hw.simulator import Simulator
from bnnflow.models.layers import LogitScale, batch_norm, input_quant, quant_act
from bnnflow.models.quantizers import weight_quant
from bnnflow.models.resnet import binary_conv, join_quant, real_conv, real_linear, stream_quant
from bnnflow.pipeline.compile.stage import compile_model, verify_compile
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.export import export_model

NETWORKS = 200
SAMPLES = 32


def values(x):
    return x.value if hasattr(x, "value") else x  # quant_act returns a QuantTensor


def conv(cin: int, cout: int, kernel: int, stride: int, padding: int, pad_value: int, weight_bits: int) -> nn.Module:
    if weight_bits == 1:
        return binary_conv(cin, cout, kernel, stride=stride, padding=padding, pad_value=pad_value)
    return qnn.QuantConv2d(cin, cout, kernel, stride=stride, padding=padding, bias=False,
                           weight_quant=weight_quant(weight_bits), weight_bit_width=weight_bits)


def quantizer(kind: tuple) -> nn.Module:
    """("act", bits): the layers' quantizer (sign for 1 bit); ("stream", range, bits): a fixed-point stream."""
    return quant_act(kind[1]) if kind[0] == "act" else stream_quant(True, kind[1], kind[2])


class Step(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(values(x)) if not isinstance(layer, qnn.QuantConv2d) else layer(x)
        return values(x)


class Residual(nn.Module):
    """x -> quantizer -> conv3x3 -> BatchNorm -> join_quant, + x, -> the stream's quantizer."""

    def __init__(self, channels: int, max_val: float, bits: int, pad_value: int, weight_bits: int) -> None:
        super().__init__()
        self.branch = Step(quant_act(bits), conv(channels, channels, 3, 1, 1, pad_value, weight_bits),
                           batch_norm(channels, True), join_quant(True, max_val))
        self.quant = stream_quant(True, max_val)

    def forward(self, x):
        return self.quant(self.branch(x) + x)


@st.composite
def network_specs(draw) -> dict:
    size = draw(st.integers(6, 8))
    channels = draw(st.sampled_from([4, 6, 8]))
    kinds = st.one_of(st.tuples(st.just("act"), st.integers(1, 4)),
                      st.tuples(st.just("stream"), st.sampled_from([1.0, 8.0]), st.integers(3, 8)))
    spec = {"input": (draw(st.integers(1, 3)), size, size), "input_bits": draw(st.integers(2, 8)),
            "channels": channels, "stem_padding": draw(st.integers(0, 1)), "stem_quant": draw(kinds), "steps": []}
    kind, size = spec["stem_quant"], size - 2 * (1 - spec["stem_padding"])
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["conv", "residual", "maxpool"] if size >= 4 else ["conv", "residual"]))
        if op == "maxpool":
            spec["steps"].append({"op": op})
            size //= 2
        elif op == "conv":
            binary_in = kind == ("act", 1)  # hardware multiplies bits by binary weights only
            weight_bits, padding = 1 if binary_in else draw(st.integers(1, 2)), draw(st.integers(0, 1))
            step = {"op": op, "out": draw(st.sampled_from([4, 6, 8])), "kernel": draw(st.sampled_from([1, 3])),
                    "stride": draw(st.integers(1, 2)), "padding": padding, "weight_bits": weight_bits,
                    "pad_value": draw(st.sampled_from([0, 1, -1])) if binary_in and padding else 0,
                    "pool": draw(st.booleans()), "quant": draw(kinds)}
            if step["kernel"] == 1:
                step["padding"], step["pad_value"] = 0, 0
            elif size < 3:  # a 3x3 window needs padding on a map this small
                step["padding"] = 1
            size = (size + 2 * step["padding"] - step["kernel"]) // step["stride"] + 1
            if step["pool"] and size >= 2:
                size //= 2
            else:
                step["pool"] = False
            spec["steps"].append(step)
            kind = step["quant"]
        else:
            step = {"op": op, "max_val": draw(st.sampled_from([1.0, 8.0])), "bits": draw(st.integers(1, 4)),
                    "weight_bits": draw(st.integers(1, 2))}
            if step["bits"] == 1:
                step["weight_bits"], step["pad_value"] = 1, draw(st.sampled_from([0, 1, -1]))
            else:
                step["pad_value"] = 0
            spec["steps"].append(step)
            kind = ("stream", step["max_val"], 8)
    # hardware sums multi-bit maps only (the networks here put a stream quantizer before their pool)
    spec["head"] = "flatten" if kind == ("act", 1) else draw(st.sampled_from(["gap", "gap_bn", "flatten"]))
    spec["hidden"] = draw(st.one_of(st.none(), st.tuples(st.sampled_from([4, 8]), st.integers(1, 4))))
    spec["classifier"] = draw(st.sampled_from(["binary", "binary_scaled", "int8_bias"]))
    spec["seed"] = draw(st.integers(0, 2**31 - 1))
    return spec


def build(spec: dict) -> nn.Module:
    torch.manual_seed(spec["seed"])
    channels = spec["channels"]
    layers: list[nn.Module] = [input_quant(spec["input_bits"]),
                               real_conv(spec["input"][0], channels, 3, padding=spec["stem_padding"], hw=True),
                               batch_norm(channels, True), quantizer(spec["stem_quant"])]
    kind = spec["stem_quant"]
    for step in spec["steps"]:
        if step["op"] == "maxpool":
            layers.append(nn.MaxPool2d(2))
        elif step["op"] == "conv":
            layers.append(conv(channels, step["out"], step["kernel"], step["stride"], step["padding"],
                               step["pad_value"], step["weight_bits"]))
            if step["pool"]:
                layers.append(nn.MaxPool2d(2))
            channels, kind = step["out"], step["quant"]
            layers += [batch_norm(channels, True), quantizer(kind)]
        else:
            if kind != ("stream", step["max_val"], 8):  # the trunk onto the stream's grid first
                layers.append(stream_quant(True, step["max_val"]))
            layers.append(Residual(channels, step["max_val"], step["bits"], step["pad_value"], step["weight_bits"]))
            kind = ("stream", step["max_val"], 8)
    body = Step(*layers).eval()
    with torch.no_grad():
        shape = values(body(torch.zeros(1, *spec["input"]))).shape
    head: list[nn.Module] = []
    if spec["head"] == "flatten":
        features = int(np.prod(shape[1:]))
        head.append(nn.Flatten())
    else:
        features = shape[1]
        head += [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        if spec["head"] == "gap_bn":
            head.append(batch_norm(features, True, dims=1))
        head.append(stream_quant(True, 8.0))
    if spec["hidden"]:
        width, bits = spec["hidden"]
        head += [qnn.QuantLinear(features, width, bias=False, weight_quant=weight_quant(1), weight_bit_width=1),
                 batch_norm(width, True, dims=1), quant_act(bits)]
        features = width
    if spec["classifier"] == "int8_bias":
        head.append(real_linear(features, 3, hw=True))
    else:
        head.append(qnn.QuantLinear(features, 3, bias=False, weight_quant=weight_quant(1), weight_bit_width=1))
        if spec["classifier"] == "binary_scaled":
            head.append(LogitScale(features))
    model = nn.Sequential(body, Step(*head))
    randomise_batchnorm(model, spec)
    return model.eval()


def randomise_batchnorm(model: nn.Module, spec: dict) -> None:
    """Running statistics measured on random inputs, then random scales (zero and negative ones) and shifts."""
    gen = torch.Generator().manual_seed(spec["seed"])
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(16, *spec["input"], generator=gen))
    for module in norms:
        c = module.num_features
        weight = torch.randn(c, generator=gen)
        weight[torch.rand(c, generator=gen) < 0.15] = 0
        module.weight.data = weight
        module.bias.data = torch.randn(c, generator=gen) * 0.5
        module.running_mean.data += torch.randn(c, generator=gen) * module.running_var.sqrt() * 0.3


def check_network(spec: dict) -> None:
    model = build(spec)
    x = np.random.default_rng(spec["seed"]).random((SAMPLES, *spec["input"]), dtype=np.float32)
    x[0], x[1] = 0.0, 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx = export_model(model, spec["input"])
        streamlined, dataflow, _ = compile_model(qonnx, CompileConfig(board="ulx3s", target_fps=1000))
        _, arrays = verify_compile(qonnx, streamlined, dataflow, x)
    assert arrays["qonnx"].shape == (SAMPLES, 3)
    assert np.array_equal(arrays["streamlined"], arrays["qonnx"]), spec
    assert np.array_equal(arrays["hw_output"].reshape(SAMPLES, -1), arrays["hw_expected"].reshape(SAMPLES, -1)), spec
    sim = np.asarray(Simulator(dataflow).run(arrays["hw_input"])).reshape(SAMPLES, -1)
    assert np.array_equal(sim, arrays["hw_output"].reshape(SAMPLES, -1)), spec


def test_random_networks_are_exact():
    checked = []

    @settings(max_examples=NETWORKS, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck))
    @given(spec=network_specs())
    def check(spec):
        check_network(spec)
        checked.append(spec)

    check()
    assert len(checked) >= NETWORKS
