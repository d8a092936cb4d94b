"""Shared helpers of the hardware tests: dataflow graphs built the real way (export, streamline, convert), and one
chain of the ops no compiled network uses this way, built by hand."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.hw.convert import to_dataflow
from bnnflow.hw.ops.base import DOMAIN
from bnnflow.models import create_model
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model


def build_dataflow(name: str, input_shape: tuple[int, ...]) -> ModelWrapper:
    """A zoo model with seeded random weights, as a dataflow graph at PE = SIMD = 1."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=input_shape, num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return to_dataflow(streamline_model(export_model(model, input_shape)))


def fresh(model: ModelWrapper) -> ModelWrapper:
    """An independent copy, so a test can fold it without touching a shared fixture."""
    return ModelWrapper(copy.deepcopy(model.model))


def threshold_pool_label_chain(pool_stride: int = 2) -> ModelWrapper:
    """Thresholding (signed input, thresholds below, on and above its range) -> 2x2 max-pooling -> flatten ->
    label select, with lanes 3 -> 2 -> 4 (or 3), built by hand as no compiled network has it."""
    rng = np.random.default_rng(5)
    thresholds = np.sort(rng.integers(-40, 40, (6, 3)), axis=1)
    thresholds[0] = [-40, -32, 0]  # below the INT6 range, on its minimum, inside
    thresholds[1] = [31, 32, 50]  # on the maximum, above it
    side = (4 - 2) // pool_stride + 1
    labels = side * side * 6
    label_type = f"UINT{(labels - 1).bit_length()}"
    nodes = [
        helper.make_node("Thresholding", ["x", "t"], ["a"], domain=DOMAIN, name="Thresholding_0", NumChannels=6, PE=3,
                         numInputVectors=[4, 4], inputDataType="INT6", outputDataType="UINT2"),
        helper.make_node("StreamingMaxPool", ["a"], ["p"], domain=DOMAIN, name="StreamingMaxPool_0", NumChannels=6,
                         ImgDim=[4, 4], PoolDim=[2, 2], Stride=[pool_stride, pool_stride], PE=2, inputDataType="UINT2",
                         outputDataType="UINT2"),
        helper.make_node("Reshape", ["p", "shape"], ["f"], name="Reshape_0"),
        helper.make_node("LabelSelect", ["f"], ["y"], domain=DOMAIN, name="LabelSelect_0", Labels=labels,
                         PE=4 if labels % 4 == 0 else 3, inputDataType="UINT2", outputDataType=label_type),
    ]
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 4, 6])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                                 helper.make_opsetid(DOMAIN, 1)]))
    model.set_initializer("t", thresholds.astype(np.float32))
    model.set_initializer("shape", np.asarray([-1, labels], dtype=np.int64))
    for name, dtype in (("x", "INT6"), ("a", "UINT2"), ("p", "UINT2"), ("f", "UINT2"), ("y", label_type)):
        model.set_tensor_datatype(name, DataType[dtype])
    for name, shape in (("a", [1, 4, 4, 6]), ("p", [1, side, side, 6]), ("f", [1, labels])):
        model.set_tensor_shape(name, shape)
    return model
