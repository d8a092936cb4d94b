"""MoveScalarMulDownstream: a multiplication by one constant moves past the linear ops that follow it.

In: ``Mul(x, c)`` with a scalar constant ``c`` (the input quantizer's scale, a weight scale) followed by
``Transpose``, ``Reshape``, ``Flatten``, ``Im2Col`` (zero padding: ``0 * c = 0``), ``MatMul`` (as first input),
or, for ``c > 0``, ``MaxPool`` / ``MaxPoolNHWC``. Out: the same ops with the ``Mul`` after them, so that it meets
the per-channel affine ops in front of a threshold and is absorbed there. Each step swaps one pair.
"""

from __future__ import annotations

from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from bnnflow.pipeline.compile._graph import constant, only_consumer

LINEAR_OPS = {"Transpose", "Reshape", "Flatten", "Im2Col", "MatMul"}
MONOTONE_OPS = {"MaxPool", "MaxPoolNHWC"}


def _attr(node, name, default):
    attr = get_by_name(node.attribute, name)
    return helper.get_attribute_value(attr) if attr is not None else default


class MoveScalarMulDownstream(Transformation):
    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for mul in model.graph.node:
            if mul.op_type != "Mul":
                continue
            c = constant(model, mul.input[1])
            if c is None or c.size != 1 or constant(model, mul.input[0]) is not None:
                continue
            nxt = only_consumer(model, mul.output[0])
            if nxt is None or nxt.input[0] != mul.output[0]:
                continue
            if not (nxt.op_type in LINEAR_OPS or (nxt.op_type in MONOTONE_OPS and float(c.flat[0]) > 0)):
                continue
            if nxt.op_type == "MatMul" and constant(model, nxt.input[1]) is None:
                continue
            if nxt.op_type == "Im2Col" and _attr(nxt, "pad_value", 0) != 0 and any(_attr(nxt, "pad_amount", [0])):
                continue  # a non-zero pad value would be scaled too
            # x -> Mul -> y -> Next -> z   becomes   x -> Next -> y' -> Mul -> z
            x, y, z = mul.input[0], mul.output[0], nxt.output[0]
            nxt.input[0] = x
            nxt.output[0] = y
            mul.input[0] = y
            mul.output[0] = z
            model.set_initializer(mul.input[1], c.reshape(()))  # a scalar broadcasts to any shape it meets
            model.set_tensor_shape(y, model.get_tensor_shape(z))
            nodes = model.graph.node
            after = list(nodes).index(nxt)
            nodes.remove(mul)
            nodes.insert(after, mul)  # Next moved up by one, so the Mul now follows it
            return model, True
        return model, False
