"""Helpers of the transformation tests: tiny graphs built with onnx.helper, run with qonnx's executor."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model


def make_model(nodes, in_shape, out_shape, initializers, value_info=None, dtypes=None) -> ModelWrapper:
    """A graph from ``x`` to ``y``; initializers named ``shape*`` are int64 (Reshape shapes), the rest float32;
    ``dtypes`` maps tensor names to qonnx datatype names annotated after shape inference."""
    graph = helper.make_graph(nodes, "transformation_test",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
                              value_info=[helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)
                                          for name, shape in (value_info or {}).items()])
    model = ModelWrapper(qonnx_make_model(graph, producer_name="bnnflow-test"))
    for name, value in initializers.items():
        model.set_initializer(name, np.asarray(value, dtype=np.int64 if name.startswith("shape") else np.float32))
    model = model.transform(InferShapes())
    for name, dtype in (dtypes or {}).items():
        model.set_tensor_datatype(name, DataType[dtype])
    return model


def run_graph(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    return execute_onnx(model, {"x": x})["y"]


def op_types(model: ModelWrapper) -> list[str]:
    return [n.op_type for n in model.graph.node]
