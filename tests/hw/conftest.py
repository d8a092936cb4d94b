"""Shared helpers of the hardware tests: dataflow graphs built the real way (export, streamline, convert), and one
chain of the ops no compiled network uses this way, built by hand."""

from __future__ import annotations

import copy
import warnings

import numpy as np
import torch
from onnx import AttributeProto, TensorProto, helper
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


def hw_node(op_type: str, inputs: list[str], outputs: list[str], name: str | None = None, **attrs):
    """A ``bnnflow.hw`` node; list attributes typed explicitly (onnx cannot infer the type of an empty list)."""
    node = helper.make_node(op_type, inputs, outputs, domain=DOMAIN, name=name or f"{op_type}_0")
    for key, value in attrs.items():
        kind = AttributeProto.INTS if isinstance(value, list) else None
        node.attribute.append(helper.make_attribute(key, value, attr_type=kind))
    return node


def graph_of(nodes: list, tensors: dict[str, tuple[list[int], str]], inputs: list[str], outputs: list[str],
             initializers: dict[str, np.ndarray] | None = None, batch: int = 1) -> ModelWrapper:
    """A graph of ``nodes``; ``tensors`` gives each stream's frame shape (``batch`` is prepended) and datatype."""
    def info(name: str):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, [batch, *tensors[name][0]])

    graph = helper.make_graph(nodes, "dag", [info(n) for n in inputs], [info(n) for n in outputs],
                              value_info=[info(n) for n in tensors if n not in inputs + outputs])
    model = ModelWrapper(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13),
                                                                 helper.make_opsetid(DOMAIN, 1)]))
    for name, value in (initializers or {}).items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    for name, (_, dtype) in tensors.items():
        model.set_tensor_datatype(name, DataType[dtype])
    return model


def residual_dag(option_a: bool = False) -> ModelWrapper:
    """Every op of a residual network, built by hand: a fork; on one branch a subsampling and a channel
    zero-extension (an option-A shortcut), on the other a zero-padded strided window into a multi-bit MVTU; the
    join, a global sum pool, and thresholds on negated channels with a signed output; then a flatten.

    With ``option_a``, the RTL's own option-A residual block (no zero padding): x is 5x5, the shortcut subsamples
    it from (1, 1), the strided 3x3 window must take in three rows before its first output, and the thresholds
    after the sum pool are on plain channels, with no flatten after them."""
    side = 5 if option_a else 4
    rng = np.random.default_rng(11)
    window, thresholding = {}, {}
    if not option_a:
        signs = rng.choice([-1, 1], 8)
        signs[:2] = [-1, 1]
        window = {"Padding": [1, 1, 1, 1], "PadValue": 0}
        thresholding = {"inputSigns": 1}
    nodes = [
        hw_node("DuplicateStreams", ["x"], ["a", "b"], NumChannels=4, NumOutputStreams=2, PE=2,
                numInputVectors=[side, side], inputDataType="UINT2", outputDataType="UINT2"),
        hw_node("Downsample", ["a"], ["d"], NumChannels=4, ImgDim=[side, side], OutDim=[2, 2],
                Offset=[1, 1] if option_a else [1, 0], Stride=[2, 2], PE=4, inputDataType="UINT2",
                outputDataType="UINT2"),
        hw_node("ChannelPad", ["d"], ["c"], NumChannels=4, PadBefore=2, PadAfter=2, PadValue=0, PE=2,
                numInputVectors=[2, 2], inputDataType="UINT2", outputDataType="UINT2"),
        hw_node("SlidingWindow", ["b"], ["p"], IFMChannels=4, IFMDim=[side, side], OFMDim=[2, 2], ConvKernelDim=[3, 3],
                Stride=[2, 2], SIMD=2, **window, inputDataType="UINT2", outputDataType="UINT2"),
        hw_node("MVTU", ["p", "w", "t"], ["m"], MW=36, MH=8, PE=4, SIMD=2, numInputVectors=[2, 2],
                inputDataType="UINT2", outputDataType="UINT2", weightDataType="INT2", accDataType="INT10"),
        hw_node("AddStreams", ["c", "m"], ["s"], NumChannels=8, PE=8, numInputVectors=[2, 2], inputDataType="UINT2",
                input2DataType="UINT2", outputDataType="UINT3"),
        hw_node("SumPool", ["s"], ["g"], NumChannels=8, ImgDim=[2, 2], PoolDim=[2, 2], Stride=[2, 2], PE=2,
                inputDataType="UINT3", outputDataType="UINT5"),
        hw_node("Thresholding", ["g", "tg"] if option_a else ["g", "tg", "signs"], ["y" if option_a else "q"],
                NumChannels=8, PE=4, numInputVectors=[1, 1], outputBias=-2, **thresholding, inputDataType="UINT5",
                outputDataType="INT2"),
    ]
    tensors = {"x": ([side, side, 4], "UINT2"), "a": ([side, side, 4], "UINT2"), "b": ([side, side, 4], "UINT2"),
               "d": ([2, 2, 4], "UINT2"), "c": ([2, 2, 8], "UINT2"), "p": ([2, 2, 36], "UINT2"),
               "m": ([2, 2, 8], "UINT2"), "s": ([2, 2, 8], "UINT3"), "g": ([1, 1, 8], "UINT5")}
    initializers = {"w": rng.integers(-2, 2, (36, 8)), "t": np.sort(rng.integers(-12, 12, (8, 3)), axis=1)}
    if option_a:  # thresholds on the sums' range
        tensors["y"] = ([1, 1, 8], "INT2")
        initializers["tg"] = np.sort(rng.integers(0, 28, (8, 3)), axis=1)
        return graph_of(nodes, tensors, ["x"], ["y"], initializers)
    nodes.append(helper.make_node("Reshape", ["q", "shape"], ["y"], name="Reshape_0"))
    tensors |= {"q": ([1, 1, 8], "INT2"), "y": ([8], "INT2")}
    # thresholds on the range of the sums and of their negations
    initializers |= {"tg": np.sort(rng.integers(-14, 14, (8, 3)), axis=1), "signs": signs,
                     "shape": np.asarray([-1, 8])}
    model = graph_of(nodes, tensors, ["x"], ["y"], initializers)
    model.set_initializer("shape", np.asarray([-1, 8], dtype=np.int64))
    return model
