"""Exact integer steps in the edge graphs: a BatchNorm before a sign becomes ``m * acc + c`` on the integer
accumulator, so that ONNX Runtime's graph optimizations cannot change a sign.

Binary networks put an accumulator exactly on the BatchNorm's zero very often (an even fan-in makes a dot
product of 0 common), and ONNX Runtime folds BatchNorm into the conv's weights and bias, which moves such a
zero by a rounding error and flips the sign. Written as ``z = m * acc + c`` with integer ``m`` in {-1, 0, 1} and
integer ``c`` per channel, the sign's input is an exact integer, whatever the optimizer fuses.

The step is solved here in closed form: BatchNorm's scale ``g / sqrt(v + eps)`` in float32 (ONNX Runtime's own
folding of it, which the compiler's ``lowering.py`` uses too), composed with the accumulator's scale in float64;
``y >= 0`` <=> ``acc >= ceil(t)`` for a positive slope, ``acc <= floor(t)`` for a negative one. The compiler finds
its thresholds by evaluating the quantizer's float32 arithmetic at each integer instead
(``pipeline/compile/threshold_synthesis.py``); the two agree wherever the zero crossing is not within float32
rounding of an integer accumulator. Only the BatchNorms before a sign are rewritten: a multi-bit quantizer
(``Quant``, e.g. a ``hw`` network's join or stream quantizer) keeps its float BatchNorm and rounds its quotient,
which an optimizer's fusion moves by at most a rounding error, and so changes a code only at a rounding tie.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

#: ops that move values without changing them (a scalar Mul may move past them)
SHAPE_OPS = ("Reshape", "Flatten", "Transpose")


def _const(model: ModelWrapper, value: np.ndarray) -> str:
    name = model.make_new_valueinfo_name()
    model.set_initializer(name, np.asarray(value, dtype=np.float32))
    return name


def _power_of_two(value: float) -> bool:
    return value > 0 and float(np.log2(value)).is_integer()


def _scalar(model: ModelWrapper, name: str) -> float | None:
    value = model.get_initializer(name)
    return float(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _linear(node) -> bool:
    """A Conv without bias or group, or a MatMul: linear in its first input."""
    if node is None or node.op_type not in ("Conv", "MatMul") or len(node.input) > 2:
        return False
    group = get_by_name(node.attribute, "group")
    return group is None or group.i == 1


class MoveScalarMulPastLinear(Transformation):
    """``Mul(x, s) -> [shape ops] -> Conv/MatMul`` becomes ``[shape ops] -> Conv/MatMul -> Mul(s)``, so the linear
    layer sums the integer codes of a quantizer and the scale comes after."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for mul in model.graph.node:
            if mul.op_type != "Mul" or _scalar(model, mul.input[1]) is None:
                continue
            path = []
            node = model.find_consumer(mul.output[0])
            while node is not None and node.op_type in SHAPE_OPS and len(model.find_consumers(node.output[0])) == 1:
                path.append(node)
                node = model.find_consumer(node.output[0])
            if len(model.find_consumers(mul.output[0])) != 1 or not _linear(node) or \
                    model.get_initializer(node.input[1]) is None:
                continue
            first = path[0] if path else node
            first.input[0] = mul.input[0]
            moved = model.make_new_valueinfo_name()
            output = node.output[0]
            node.output[0] = moved
            mul.input[0], mul.output[0] = moved, output
            model.graph.node.remove(mul)
            model.graph.node.insert(list(model.graph.node).index(node) + 1, mul)
            return model, True
        return model, False


def _integer_input(model: ModelWrapper, tensor: str) -> float | None:
    """The power-of-two step of ``tensor``'s values when they are integers times it, else None."""
    node = model.find_producer(tensor)
    while node is not None and node.op_type in (*SHAPE_OPS, "MaxPool"):
        node = model.find_producer(node.input[0])
    if node is None:
        return None
    if node.op_type == "Clip" and model.find_producer(node.input[0]) is not None and \
            model.find_producer(node.input[0]).op_type == "Round":
        return 1.0
    if node.op_type == "Where":
        high = _scalar(model, node.input[1])
        return high if high is not None and _power_of_two(high) and _scalar(model, node.input[2]) == -high else None
    return None


def _feeds_only_signs(model: ModelWrapper, tensor: str) -> bool:
    consumers = model.find_consumers(tensor)
    return bool(consumers) and all(
        c.op_type == "GreaterOrEqual" and _scalar(model, c.input[1]) == 0.0 for c in consumers)


class BatchNormSignToInteger(Transformation):
    """BatchNormalization between an integer accumulator and a sign -> ``Mul(m) -> Add(c)`` on the accumulator."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for bn in model.graph.node:
            if bn.op_type != "BatchNormalization" or not _feeds_only_signs(model, bn.output[0]):
                continue
            params = [model.get_initializer(name) for name in bn.input[1:5]]
            if any(p is None for p in params):
                continue
            scales, chain = 1.0, []
            node = model.find_producer(bn.input[0])
            while node is not None and node.op_type == "Mul" and _scalar(model, node.input[1]) is not None:
                scales *= _scalar(model, node.input[1])
                chain.append(node)
                node = model.find_producer(node.input[0])
            if not _linear(node) or any(len(model.find_consumers(n.output[0])) != 1 for n in chain):
                continue
            weights = np.abs(model.get_initializer(node.input[1]))
            step = _integer_input(model, node.input[0])
            if step is None or not np.all(weights == weights.reshape(-1)[0]) or not _power_of_two(float(weights.max())):
                continue
            unit = step * float(weights.max())  # the linear layer's output is acc * unit, exactly
            gamma, beta, mean, var = (p.astype(np.float64) for p in params)
            eps = get_by_name(bn.attribute, "epsilon")
            scale = (params[0].astype(np.float32) / np.sqrt(params[3].astype(np.float32) +
                                                           np.float32(eps.f if eps else 1e-5))).astype(np.float64)
            slope = unit * scales * scale
            offset = -mean * scale + beta
            with np.errstate(divide="ignore", invalid="ignore"):
                tie = -offset / slope
            m = np.sign(slope)
            c = np.where(slope > 0, -np.ceil(tie), np.where(slope < 0, np.floor(tie), np.where(offset >= 0, 0, -1)))
            rank = len(model.get_tensor_shape(bn.input[0]))
            shape = [1, -1] + [1] * (rank - 2)
            scaled = model.make_new_valueinfo_name()
            replacement = [helper.make_node("Mul", [node.output[0], _const(model, (m / unit).reshape(shape))], [scaled]),
                           helper.make_node("Add", [scaled, _const(model, c.reshape(shape))], [bn.output[0]])]
            for dead in (bn, *chain):
                model.graph.node.remove(dead)
            index = list(model.graph.node).index(node) + 1
            for offset_, new in enumerate(replacement):
                model.graph.node.insert(index + offset_, new)
            return model, True
        return model, False
