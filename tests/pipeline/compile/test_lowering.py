"""Lowering refuses what it cannot make exact, in one line that names the node of model.qonnx and the problem.

Each case is a tiny Brevitas network with the project's quantizers, exported by the pipeline's ``export_model``,
whose one offending layer the message must name (``name (OpType)`` of a node that exists in the graph).
"""

from __future__ import annotations

import re
import warnings

import brevitas.nn as qnn
import pytest
import torch
from torch import nn

from bnnflow.errors import UnsupportedGraphError
from bnnflow.models.layers import batch_norm, input_quant, quant_act
from bnnflow.models.quantizers import weight_quant
from bnnflow.models.resnet import real_conv, stream_quant
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model

SHAPE = (2, 6, 6)


def values(x):
    return x.value if hasattr(x, "value") else x


class Chain(nn.Module):
    def __init__(self, *layers: nn.Module) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for layer in self.layers:
            x = layer(x if isinstance(layer, qnn.QuantConv2d) else values(x))
        return values(x)


class Join(nn.Module):
    """trunk + branch(trunk), each with its own quantizer."""

    def __init__(self, trunk: nn.Module, branch: nn.Module) -> None:
        super().__init__()
        self.trunk, self.branch = trunk, branch

    def forward(self, x):
        x = values(self.trunk(x))
        return values(self.branch(x)) + x


def stem(channels: int = 4) -> list[nn.Module]:
    return [input_quant(8), real_conv(SHAPE[0], channels, 3, padding=1, hw=True), batch_norm(channels, True)]


def binary_conv(cin: int, cout: int, **kwargs) -> qnn.QuantConv2d:
    return qnn.QuantConv2d(cin, cout, 3, bias=False, weight_quant=weight_quant(1), weight_bit_width=1, **kwargs)


def head(features: int) -> nn.Module:
    return qnn.QuantLinear(features, 3, bias=False, weight_quant=weight_quant(1), weight_bit_width=1)


CASES = {
    "float conv between quantized layers": (
        lambda: Chain(*stem(), quant_act(1), nn.Conv2d(4, 4, 3, bias=False), batch_norm(4, True), quant_act(1),
                      nn.Flatten(), head(64)),
        "Conv", r"has float weights between quantized layers"),
    "grouped conv": (
        lambda: Chain(*stem(), quant_act(1), binary_conv(4, 4, groups=2), batch_norm(4, True), quant_act(1),
                      nn.Flatten(), head(64)),
        "Conv", r"is grouped or dilated"),
    "conv of a real-valued tensor": (
        lambda: Chain(*stem(), quant_act(1), binary_conv(4, 4), batch_norm(4, True), binary_conv(4, 4),
                      batch_norm(4, True), quant_act(1), nn.Flatten(), head(16)),
        "Conv", r"reads a real-valued tensor that no quantizer made integer"),
    "padded max-pool": (
        lambda: Chain(*stem(), quant_act(2), nn.MaxPool2d(3, stride=2, padding=1), nn.Flatten(), head(36)),
        "MaxPool", r"is padded, dilated or in ceil mode"),
    "average pool whose windows do not tile": (
        lambda: Chain(*stem(), stream_quant(True, 1.0), nn.AvgPool2d(4, stride=4, ceil_mode=True),
                      stream_quant(True, 8.0), nn.Flatten(), head(16)),
        "AveragePool", r"windows that do not tile|is padded"),
    "residual add of two scales": (
        lambda: Join(Chain(*stem(), stream_quant(True, 1.0)),
                     Chain(quant_act(1), binary_conv(4, 4, padding=1), batch_norm(4, True), stream_quant(True, 8.0))),
        "Add", r"adds codes of scales"),
    "quantized PReLU with a negative slope": (
        lambda: Chain(*stem(), quant_act(1), binary_conv(4, 4), batch_norm(4, True), nn.PReLU(4, init=-0.5),
                      quant_act(2), nn.Flatten(), head(64)),
        "PReLU|Quant", r"rises and falls"),
}


def export(model: nn.Module):
    torch.manual_seed(0)
    model.eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_model(model, SHAPE)


@pytest.mark.parametrize("case", list(CASES))
def test_refusal_names_the_node(case):
    make, op_types, problem = CASES[case]
    torch.manual_seed(0)
    qonnx = export(make())
    with pytest.raises(UnsupportedGraphError) as err:
        streamline_model(qonnx)
    message = str(err.value)
    assert "\n" not in message
    assert re.search(problem, message), message
    named = re.match(r"node (\S+) \((\w+)\) ", message)
    assert named, message
    assert re.fullmatch(op_types, named.group(2)), message
    assert named.group(1) in {n.name for n in qonnx.graph.node}, message


def test_graph_without_quantized_layer_is_refused():
    qonnx = export(Chain(input_quant(8), nn.Flatten(), nn.Linear(72, 3)))
    with pytest.raises(UnsupportedGraphError, match="no quantized layer|float weights"):
        streamline_model(qonnx)


def test_the_same_networks_compile_once_fixed():
    """Control: the residual case with both branches on one scale (join_quant's rule) is accepted."""
    from bnnflow.models.resnet import join_quant

    model = Join(Chain(*stem(), stream_quant(True, 1.0)),
                 Chain(quant_act(1), binary_conv(4, 4, padding=1), batch_norm(4, True), join_quant(True, 1.0)))
    streamlined = streamline_model(export(model))
    assert "Add" in {n.op_type for n in streamlined.graph.node}
