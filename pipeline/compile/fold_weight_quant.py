"""FoldWeightQuant: quantizer nodes on constant weights become integer weight initializers.

In: ``Quant`` / ``BipolarQuant`` whose inputs are all initializers, feeding a ``MatMul`` or ``Conv``.
Out: the integer codes as the weight initializer, annotated ``BIPOLAR`` or ``INTk``; a non-unit scale becomes a
``Mul`` after the MatMul/Conv (per tensor, or per output channel), which later steps absorb into thresholds.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation

from bnnflow.errors import UnsupportedGraphError
from bnnflow.nodes import node_ref
from bnnflow.pipeline.compile._graph import constant, new_tensor, only_consumer, set_constant


class FoldWeightQuant(Transformation):
    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type not in ("Quant", "BipolarQuant"):
                continue
            if any(constant(model, name) is None for name in node.input):
                continue
            consumer = only_consumer(model, node.output[0])
            if consumer is None or consumer.op_type not in ("MatMul", "Conv") or consumer.input[1] != node.output[0]:
                raise UnsupportedGraphError(
                    f"node {node_ref(model, node)} quantizes a constant that is not the weight of one MatMul "
                    "or Conv; only weight quantizers may act on constants"
                )
            self._fold(model, node, consumer)
            return model, True
        return model, False

    @staticmethod
    def _fold(model: ModelWrapper, node, consumer) -> None:
        context = {name: constant(model, name) for name in node.input}
        getCustomOp(node).execute_node(context, model.graph)
        values = context[node.output[0]].astype(np.float64)
        scale = constant(model, node.input[1]).astype(np.float64)
        codes = values / scale
        if not np.array_equal(codes, np.round(codes)):
            raise UnsupportedGraphError(f"node {node_ref(model, node)} has a zero point or scale that leaves "
                                        "non-integer weight codes; use a symmetric weight quantizer")
        dtype = DataType["BIPOLAR"] if node.op_type == "BipolarQuant" else getCustomOp(node).get_integer_datatype(model)
        model.set_initializer(node.output[0], codes.astype(np.float32))
        model.set_tensor_datatype(node.output[0], dtype)
        model.graph.node.remove(node)
        if np.all(scale == 1.0):
            return
        # Move the scale behind the MatMul/Conv: per tensor, or per output channel of the layer.
        if scale.size > 1:
            if consumer.op_type == "Conv":  # weight (Cout, Cin, k, k): scale (Cout, 1, 1, 1) -> (1, Cout, 1, 1)
                scale = scale.reshape(1, -1, 1, 1)
            else:  # MatMul weight (K, N): scale broadcasts along N
                scale = scale.reshape(1, -1)
        out = consumer.output[0]
        scaled = new_tensor(model, model.get_tensor_shape(out))
        consumer.output[0] = scaled
        index = list(model.graph.node).index(consumer)
        model.graph.node.insert(index + 1, helper.make_node("Mul", [scaled, set_constant(model, scale)], [out]))
