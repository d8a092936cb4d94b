"""AbsorbAffineIntoThreshold: the affine ops between an integer accumulator and a threshold become integer
thresholds on the accumulator itself.

In: ``MatMul`` (integer inputs, integer weights) or ``XnorPopcountMatMul``, then a chain of ``Mul``/``Add``/
``Sub``/``Div`` by constants (folded BatchNorm, scales, XNOR's ``2p - K``), then ``MultiThreshold``.
Out: the accumulator feeds the ``MultiThreshold`` directly, with integer thresholds.

The math, per output channel c, with the chain composed into ``y = A_c * acc + B_c`` (in float64):

- ``A_c > 0``: ``y >= T``  <=>  ``acc >= (T - B_c) / A_c``  <=>  ``acc >= ceil((T - B_c) / A_c)`` since acc is an
  integer (the contract's rounding rule: ceil, for ``>=``; an accumulator exactly on a threshold fires).
- ``A_c < 0``: the channel's weight column is negated (``acc -> -acc``; for XNOR, bits flip: ``p -> K - p``, so
  ``B_c`` gains ``A_c * K``), which makes the slope ``|A_c|`` and reduces to the case above.
- ``A_c = 0``: the output is the constant ``B_c >= T``: the threshold becomes the lowest reachable accumulator
  (always fires) or one past the highest (never fires).

Thresholds are clipped to ``[lo_c, hi_c + 1]``, the accumulator's reachable range, so they fit its bit width.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from bnnflow.pipeline.compile._graph import constant, only_consumer

AFFINE_OPS = {"Mul", "Add", "Sub", "Div"}
PRODUCERS = {"MatMul", "XnorPopcountMatMul"}


def accumulator_range(model: ModelWrapper, producer) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel, the lowest and highest value the producer's accumulator can take."""
    weights = constant(model, producer.input[1]).astype(np.float64)
    if producer.op_type == "XnorPopcountMatMul":
        k = weights.shape[0]
        return np.zeros(weights.shape[1]), np.full(weights.shape[1], float(k))
    dtype = model.get_tensor_datatype(producer.input[0])
    lo_in, hi_in = float(dtype.min()), float(dtype.max())
    low = np.minimum(weights * lo_in, weights * hi_in).sum(axis=0)
    high = np.maximum(weights * lo_in, weights * hi_in).sum(axis=0)
    return low, high


def _channel_constant(value: np.ndarray, channels: int) -> np.ndarray | None:
    """A constant as a per-channel vector (channels last), or None if it varies along another axis."""
    value = np.asarray(value, dtype=np.float64)
    if value.size == 1:
        return np.full(channels, value.flat[0])
    if value.shape[-1] == channels and value.size == channels:
        return value.reshape(channels)
    return None


class AbsorbAffineIntoThreshold(Transformation):
    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for producer in model.graph.node:
            if producer.op_type not in PRODUCERS or constant(model, producer.input[1]) is None:
                continue
            if producer.op_type == "MatMul" and not self._integer_matmul(model, producer):
                continue
            chain, node = [], only_consumer(model, producer.output[0])
            while node is not None and node.op_type in AFFINE_OPS and node.input[0] == (
                    chain[-1].output[0] if chain else producer.output[0]) and constant(model, node.input[1]) is not None:
                chain.append(node)
                node = only_consumer(model, node.output[0])
            if not chain or node is None or node.op_type != "MultiThreshold":
                continue
            layout = get_by_name(node.attribute, "data_layout")
            rank = len(model.get_tensor_shape(node.input[0]))
            if rank != 2 and (layout is None or layout.s.decode() != "NHWC"):
                continue
            if self._absorb(model, producer, chain, node):
                return model, True
        return model, False

    @staticmethod
    def _integer_matmul(model: ModelWrapper, producer) -> bool:
        return model.get_tensor_datatype(producer.input[0]).is_integer() and \
            model.get_tensor_datatype(producer.input[1]).is_integer()

    def _absorb(self, model: ModelWrapper, producer, chain, threshold) -> bool:
        weights = constant(model, producer.input[1])
        channels = weights.shape[1]
        slope, offset = np.ones(channels), np.zeros(channels)
        for node in chain:
            c = _channel_constant(constant(model, node.input[1]), channels)
            if c is None:
                return False
            if node.op_type == "Mul":
                slope, offset = slope * c, offset * c
            elif node.op_type == "Div":
                slope, offset = slope / c, offset / c
            elif node.op_type == "Add":
                offset = offset + c
            else:
                offset = offset - c
        thresholds = constant(model, threshold.input[1]).astype(np.float64)
        if thresholds.shape[0] == 1:
            thresholds = np.repeat(thresholds, channels, axis=0)
        negative = slope < 0
        if negative.any():
            weights = weights.copy()
            if producer.op_type == "XnorPopcountMatMul":
                weights[:, negative] = 1 - weights[:, negative]
                offset = np.where(negative, offset + slope * weights.shape[0], offset)
            else:
                weights[:, negative] = -weights[:, negative]
            model.set_initializer(producer.input[1], weights)
            slope = np.abs(slope)
        low, high = accumulator_range(model, producer)
        with np.errstate(divide="ignore", invalid="ignore"):
            moved = np.ceil((thresholds - offset[:, None]) / slope[:, None])
        constant_fire = offset[:, None] >= thresholds
        moved = np.where(slope[:, None] == 0, np.where(constant_fire, low[:, None], high[:, None] + 1), moved)
        moved = np.clip(moved, low[:, None], high[:, None] + 1)
        model.set_initializer(threshold.input[1], moved.astype(np.float32))
        threshold.input[0] = producer.output[0]
        for node in chain:
            model.graph.node.remove(node)
        if producer.op_type == "MatMul":
            model.set_tensor_datatype(producer.output[0], DataType["INT32"])
        return True
