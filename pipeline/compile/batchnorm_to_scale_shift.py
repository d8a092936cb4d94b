"""BatchNormToScaleShift: an inference-mode BatchNormalization becomes ``Sub(mean) -> Mul(scale) -> Add(beta)``.

qonnx's ``BatchNormToAffine`` folds the mean into the bias in float32 (``beta - mean * scale``), which moves a
threshold that sits exactly on an integer (``mean`` integer, ``beta = 0``: the accumulator equal to the mean
must fire, sign(0) = +1) by a rounding error, and ``ceil`` then lands one too high. Keeping the three float32
constants apart lets ``AbsorbAffineIntoThreshold`` compose them in float64, where ``scale * mean`` is exact and
the threshold comes out as ``mean - beta / scale`` exactly when ``beta = 0``.

In: ``BatchNormalization(x, gamma, beta, mean, var)`` with constant parameters. Out: ``Sub``, ``Mul``, ``Add``
with constants shaped to broadcast along the channel axis (axis 1).
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from bnnflow.pipeline.compile._graph import constant, new_tensor, set_constant


class BatchNormToScaleShift(Transformation):
    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for index, node in enumerate(model.graph.node):
            if node.op_type != "BatchNormalization":
                continue
            gamma, beta, mean, var = (constant(model, name) for name in node.input[1:5])
            if any(v is None for v in (gamma, beta, mean, var)):
                continue
            eps = get_by_name(node.attribute, "epsilon")
            eps = eps.f if eps is not None else 1e-5
            scale = (gamma.astype(np.float32) / np.sqrt(var.astype(np.float32) + np.float32(eps))).astype(np.float32)
            rank = len(model.get_tensor_shape(node.input[0]))
            shape = [1, -1] + [1] * (rank - 2)
            centred = new_tensor(model, model.get_tensor_shape(node.input[0]))
            scaled = new_tensor(model, model.get_tensor_shape(node.input[0]))
            replacement = [
                helper.make_node("Sub", [node.input[0], set_constant(model, mean.reshape(shape))], [centred]),
                helper.make_node("Mul", [centred, set_constant(model, scale.reshape(shape))], [scaled]),
                helper.make_node("Add", [scaled, set_constant(model, beta.reshape(shape))], [node.output[0]]),
            ]
            model.graph.node.remove(node)
            for offset, new in enumerate(replacement):
                model.graph.node.insert(index + offset, new)
            return model, True
        return model, False
