"""ConvertBipolarQuantToThreshold: a bipolar activation quantizer becomes a one-threshold ``MultiThreshold``.

In: ``BipolarQuant(x, scale)`` on a computed tensor. Out: ``MultiThreshold(x, [[0]])`` with ``out_scale = 2``,
``out_bias = -1`` and ``out_dtype = BIPOLAR``, i.e. ``+1 if x >= 0 else -1``: sign(0) = +1, the contract's
convention and BipolarQuant's own. A non-unit scale follows as a ``Mul``.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation

from bnnflow.pipeline.compile._graph import constant, new_tensor, set_constant


class ConvertBipolarQuantToThreshold(Transformation):
    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for index, node in enumerate(model.graph.node):
            if node.op_type != "BipolarQuant" or constant(model, node.input[0]) is not None:
                continue
            scale = constant(model, node.input[1])
            out = node.output[0]
            thresholded = out if np.all(scale == 1.0) else new_tensor(model, model.get_tensor_shape(out))
            threshold = helper.make_node(
                "MultiThreshold", [node.input[0], set_constant(model, np.zeros((1, 1)))], [thresholded],
                domain="qonnx.custom_op.general", out_dtype="BIPOLAR", out_scale=2.0, out_bias=-1.0,
                name=node.name,
            )
            model.graph.node.remove(node)
            model.graph.node.insert(index, threshold)
            model.set_tensor_datatype(thresholded, DataType["BIPOLAR"])
            if thresholded != out:
                model.graph.node.insert(index + 1, helper.make_node("Mul", [thresholded, set_constant(model, scale)],
                                                                    [out]))
            return model, True
        return model, False
