"""Exporting a backbone for the model tests: BatchNorm statistics made non-trivial, then the 1-bit QONNX graph;
and reading the parts of an exported graph the tests check (the input quantizer, BatchNorms, residual joins)."""

from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from torch import nn

from bnnflow.pipeline.export import export_model

SHAPE_OPS = ("Flatten", "Reshape")  # what may stand between the graph input and the input quantizer


def export_with_random_statistics(model: nn.Module, shape: tuple[int, ...]):
    """Export ``model`` (eval mode) after giving every BatchNorm random running statistics, so that thresholds
    are not all at zero; returns the qonnx ``ModelWrapper``, its nodes and a tensor -> producing node map."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    wrapper = export_model(model.eval(), shape)
    nodes = list(wrapper.graph.node)
    return wrapper, nodes, {o: n for n in nodes for o in n.output}


def weight_producers(nodes: list, producer: dict, ops: tuple[str, ...]) -> list[str]:
    """The op type that makes each ``ops`` node's weight input ("float" for a plain initializer), in graph order."""
    return [getattr(producer.get(n.input[1]), "op_type", "float") for n in nodes if n.op_type in ops]


def initializers(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in graph.initializer}


def attributes(node: onnx.NodeProto) -> dict:
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def check_input_quant(graph: onnx.GraphProto, bits: int = 8) -> onnx.NodeProto:
    """Assert the input quantizer's exported form and return its Quant node: the graph input (through a Flatten or
    Reshape or not) -> Relu -> one unsigned, non-narrow, per-tensor ``bits``-bit Quant with zero point 0 and the
    power-of-two scale 2**-bits, the first Quant on the way from the input."""
    nodes = list(graph.node)
    inits = initializers(graph)
    producer = {o: n for n in nodes for o in n.output}
    consumers = [n for n in nodes if graph.input[0].name in n.input]
    while len(consumers) == 1 and consumers[0].op_type in SHAPE_OPS:
        consumers = [n for n in nodes if consumers[0].output[0] in n.input]
    assert [n.op_type for n in consumers] == ["Relu"], [n.op_type for n in consumers]
    (quant,) = [n for n in nodes if consumers[0].output[0] in n.input]
    assert quant.op_type == "Quant" and producer[quant.input[0]] is consumers[0]
    scale, zero_point, bit_width = (inits[name] for name in quant.input[1:4])
    assert scale.size == zero_point.size == bit_width.size == 1  # per tensor
    assert bit_width.item() == bits and zero_point.item() == 0.0
    assert scale.item() == 2.0**-bits  # a power of two: 1/256 at 8 bits, not 1/255
    attrs = attributes(quant)
    assert attrs["signed"] == 0 and attrs["narrow"] == 0
    return quant


def batchnorm_starts(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The first node of each exported BatchNorm: a ``BatchNormalization``, or (``ExactBatchNorm``, in hw models)
    a ``Mul`` by a constant whose output is only read by an ``Add`` of a constant."""
    nodes, inits = list(graph.node), initializers(graph)
    starts = []
    for node in nodes:
        if node.op_type == "BatchNormalization":
            starts.append(node)
        elif node.op_type == "Mul" and node.input[1] in inits:
            readers = [n for n in nodes if node.output[0] in n.input]
            if [n.op_type for n in readers] == ["Add"] and readers[0].input[1] in inits:
                starts.append(node)
    return starts


def joins(graph: onnx.GraphProto) -> list[onnx.NodeProto]:
    """The residual joins: ``Add`` nodes of two computed tensors (a BatchNorm's shift adds a constant)."""
    inits = initializers(graph)
    return [n for n in graph.node if n.op_type == "Add" and not any(name in inits for name in n.input)]
