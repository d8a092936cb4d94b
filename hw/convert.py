"""Conversion of a streamlined graph into ``dataflow.onnx``: the hardware part, as bnnflow.hw ops.

A streamlined graph is a chain in three parts:

- host pre-processing: from the float input up to the input quantizer (and a transpose to channels-last); the
  host turns images into the integer codes (or bits) the accelerator streams in;
- the hardware part: integer layers only, ``Im2Col``, ``MatMul`` / ``XnorPopcountMatMul`` (each with the
  ``MultiThreshold`` that follows it), ``MultiThreshold`` alone, ``MaxPoolNHWC``, and reshapes, which are free in
  a stream;
- host post-processing: the float affine ops that turn the last accumulators into the model's class scores.

Only the hardware part goes into ``dataflow.onnx``; its metadata names the two boundary tensors of
``streamlined.onnx`` (``bnnflow.streamlined_input`` / ``bnnflow.streamlined_output``), so each level of the
verification ladder can be compared with the one before it exactly.
"""

from __future__ import annotations

import numpy as np
from onnx import AttributeProto, TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.util.basic import get_by_name

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.ops.base import DOMAIN
from bnnflow.nodes import node_ref
from bnnflow.pipeline.compile.absorb_affine_into_threshold import accumulator_range

COMPUTE_OPS = {"Im2Col", "MatMul", "XnorPopcountMatMul", "MultiThreshold", "MaxPoolNHWC"}
FREE_OPS = {"Reshape", "Flatten"}
MONOTONE_TAIL_OPS = {"Mul", "Div", "Add", "Sub"}


def _attr(node, name, default=None):
    attr = get_by_name(node.attribute, name)
    return helper.get_attribute_value(attr) if attr is not None else default


def _region(model: ModelWrapper) -> tuple[int, int]:
    """Indices [start, end] of the hardware part in the (chain-shaped) node list."""
    nodes = list(model.graph.node)
    for node in nodes:
        if len(model.find_consumers(node.output[0])) > 1:
            raise UnsupportedGraphError(
                f"node {node_ref(model, node)} feeds several nodes (a residual or branching network); the "
                "dataflow compiler takes plain chains; use the edge path (bnnflow edge) for residual networks"
            )
    start = next((i for i, n in enumerate(nodes) if n.op_type in COMPUTE_OPS
                  and model.get_tensor_datatype(n.input[0]).is_integer()), None)
    if start is None:
        raise UnsupportedGraphError("the graph has no integer layer to put in hardware; export a quantized model")
    end = max(i for i, n in enumerate(nodes) if n.op_type in COMPUTE_OPS)
    for node in nodes[start: end + 1]:
        if node.op_type not in COMPUTE_OPS | FREE_OPS:
            raise UnsupportedGraphError(
                f"node {node_ref(model, node)} sits between hardware layers and has no hardware op; only "
                "binary/integer layers, thresholds, max-pooling and reshapes can be compiled"
            )
    return start, end


def _int_type(low: float, high: float) -> DataType:
    """The smallest integer datatype holding [low, high]."""
    if low >= 0:
        return DataType.get_smallest_possible(high)
    return DataType.get_smallest_possible(min(low, -high - 1))


def _threshold_type(thresholds: np.ndarray) -> DataType:
    """A threshold count's datatype: one bit for one threshold, else enough bits for 0 .. T."""
    if thresholds.shape[1] == 1:
        return DataType["BINARY"]
    return DataType[f"UINT{int(np.ceil(np.log2(thresholds.shape[1] + 1)))}"]


class _Builder:
    """Collects the nodes, initializers and datatypes of the dataflow graph."""

    def __init__(self, source: ModelWrapper) -> None:
        self.source = source
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.datatypes: dict[str, DataType] = {}
        self.counts: dict[str, int] = {}

    def name(self, op: str) -> str:
        index = self.counts.get(op, 0)
        self.counts[op] = index + 1
        return f"{op}_{index}"

    def add(self, op: str, inputs: list[str], output: str, **attrs) -> None:
        node = helper.make_node(op, inputs, [output], domain=DOMAIN, name=self.name(op))
        for key, value in attrs.items():  # explicit type: onnx cannot infer one from an empty list
            kind = AttributeProto.INTS if isinstance(value, list) else None
            node.attribute.append(helper.make_attribute(key, value, attr_type=kind))
        self.nodes.append(node)

    def mvtu(self, matmul, threshold) -> None:
        src = self.source
        weights = src.get_initializer(matmul.input[1])
        in_shape = src.get_tensor_shape(matmul.input[0])
        xnor = matmul.op_type == "XnorPopcountMatMul"
        low, high = accumulator_range(src, matmul)
        acc_type = _int_type(float(low.min()), float(high.max()) + 1)
        name = f"MVTU_{self.counts.get('MVTU', 0)}"
        inputs = [matmul.input[0], f"{name}_weights"]
        self.initializers[f"{name}_weights"] = weights
        self.datatypes[f"{name}_weights"] = DataType["BINARY"] if xnor else src.get_tensor_datatype(matmul.input[1])
        if threshold is not None:
            scale, bias = _attr(threshold, "out_scale", 1.0), _attr(threshold, "out_bias", 0.0)
            if (scale, bias) != (1.0, 0.0):
                raise UnsupportedGraphError(
                    f"node {node_ref(src, threshold)} outputs {scale} * count + {bias}, not a plain count; "
                    "only thresholds feeding binary layers or graph outputs are supported in hardware"
                )
            thresholds = src.get_initializer(threshold.input[1])
            inputs.append(f"{name}_thresholds")
            self.initializers[f"{name}_thresholds"] = thresholds
            self.datatypes[f"{name}_thresholds"] = acc_type
            out_type, output = _threshold_type(thresholds), threshold.output[0]
        else:
            out_type, output = _int_type(float(low.min()), float(high.max())), matmul.output[0]
        self.add(
            "MVTU", inputs, output, MW=int(weights.shape[0]), MH=int(weights.shape[1]), PE=1, SIMD=1,
            binaryXnorMode=int(xnor), noActivation=int(threshold is None),
            numInputVectors=[int(d) for d in in_shape[1:-1]],
            inputDataType=src.get_tensor_datatype(matmul.input[0]).name, outputDataType=out_type.name,
            weightDataType=self.datatypes[f"{name}_weights"].name, accDataType=acc_type.name,
        )
        self.datatypes[output] = out_type

    def sliding_window(self, node) -> None:
        src = self.source
        if any(_attr(node, "pad_amount", [0, 0, 0, 0])):
            raise UnsupportedGraphError(f"node {node_ref(src, node)} is padded; the hardware sliding window takes "
                                        "unpadded convolutions (padding=0)")
        _, h, w, c = src.get_tensor_shape(node.input[0])
        _, oh, ow, _ = src.get_tensor_shape(node.output[0])
        dtype = src.get_tensor_datatype(node.input[0])
        self.add("SlidingWindow", [node.input[0]], node.output[0], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow],
                 ConvKernelDim=list(_attr(node, "kernel_size")), Stride=list(_attr(node, "stride")), SIMD=1,
                 inputDataType=dtype.name, outputDataType=dtype.name)
        self.datatypes[node.output[0]] = dtype

    def maxpool(self, node) -> None:
        src = self.source
        if any(_attr(node, "pads", [0, 0, 0, 0])):
            raise UnsupportedGraphError(f"node {node_ref(src, node)} is padded; use unpadded max-pooling")
        _, h, w, c = src.get_tensor_shape(node.input[0])
        dtype = src.get_tensor_datatype(node.input[0])
        self.add("StreamingMaxPool", [node.input[0]], node.output[0], NumChannels=c, ImgDim=[h, w],
                 PoolDim=list(_attr(node, "kernel_shape")), Stride=list(_attr(node, "strides")), PE=1,
                 inputDataType=dtype.name, outputDataType=dtype.name)
        self.datatypes[node.output[0]] = dtype

    def thresholding(self, node) -> None:
        src = self.source
        thresholds = src.get_initializer(node.input[1])
        shape = src.get_tensor_shape(node.input[0])
        name = f"Thresholding_{self.counts.get('Thresholding', 0)}"
        self.initializers[f"{name}_thresholds"] = thresholds
        out_type = _threshold_type(thresholds)
        self.add("Thresholding", [node.input[0], f"{name}_thresholds"], node.output[0], NumChannels=int(shape[-1]),
                 PE=1, numInputVectors=[int(d) for d in shape[1:-1]],
                 inputDataType=src.get_tensor_datatype(node.input[0]).name, outputDataType=out_type.name)
        self.datatypes[node.output[0]] = out_type

    def reshape(self, node) -> None:
        shape_name = f"{node.output[0]}_shape"
        flat = int(np.prod(self.source.get_tensor_shape(node.output[0])[1:]))
        self.initializers[shape_name] = np.asarray([-1, flat], dtype=np.int64)
        self.nodes.append(helper.make_node("Reshape", [node.input[0], shape_name], [node.output[0]],
                                           name=self.name("Reshape")))
        self.datatypes[node.output[0]] = self.source.get_tensor_datatype(node.input[0])


def _check_monotone_tail(model: ModelWrapper, tail: list) -> None:
    """Label select on accumulators equals argmax of the scores only if the tail is increasing and shared."""
    for node in tail:
        value = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
        positive_scale = node.op_type in ("Mul", "Div") and value is not None and value.size == 1 and value.item() > 0
        shared_offset = node.op_type in ("Add", "Sub") and value is not None and value.size == 1
        if not (positive_scale or shared_offset):
            raise UnsupportedGraphError(
                f"node {node_ref(model, node)} after the last layer is not a positive scalar scale or a shared "
                "offset, so the label of the accumulators may differ from the model's; compile without label select"
            )


def to_dataflow(streamlined: ModelWrapper, label_select: bool = False) -> ModelWrapper:
    """The hardware part of a streamlined graph as a dataflow graph (folding PE = SIMD = 1 everywhere)."""
    start, end = _region(streamlined)
    nodes = list(streamlined.graph.node)
    builder = _Builder(streamlined)
    region = nodes[start: end + 1]
    i = 0
    while i < len(region):
        node = region[i]
        follower = region[i + 1] if i + 1 < len(region) else None
        if node.op_type in ("MatMul", "XnorPopcountMatMul"):
            paired = follower is not None and follower.op_type == "MultiThreshold"
            builder.mvtu(node, follower if paired else None)
            i += 2 if paired else 1
            continue
        {"Im2Col": builder.sliding_window, "MaxPoolNHWC": builder.maxpool, "MultiThreshold": builder.thresholding,
         "Reshape": builder.reshape, "Flatten": builder.reshape}[node.op_type](node)
        i += 1
    first_input = region[0].input[0]
    last_output = builder.nodes[-1].output[0]
    builder.datatypes[first_input] = streamlined.get_tensor_datatype(first_input)
    if label_select:
        _check_monotone_tail(streamlined, nodes[end + 1:])
        scores_shape = streamlined.get_tensor_shape(last_output)
        label = f"{last_output}_label"
        builder.add("LabelSelect", [last_output], label, Labels=int(scores_shape[-1]), PE=1,
                    inputDataType=builder.datatypes[last_output].name,
                    outputDataType=DataType.get_smallest_possible(scores_shape[-1] - 1).name)
        builder.datatypes[label] = DataType.get_smallest_possible(scores_shape[-1] - 1)
        last_output = label
    return _assemble(streamlined, builder, first_input, last_output, nodes[end].output[0] if not label_select
                     else streamlined.graph.output[0].name)


def _assemble(source: ModelWrapper, builder: _Builder, first_input: str, last_output: str,
              streamlined_output: str) -> ModelWrapper:
    in_shape = source.get_tensor_shape(first_input)
    graph = helper.make_graph(
        builder.nodes, "bnnflow_dataflow",
        [helper.make_tensor_value_info(first_input, TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info(last_output, TensorProto.FLOAT, None)],
    )
    onnx_model = helper.make_model(graph, producer_name="bnnflow", opset_imports=[
        helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1), helper.make_opsetid("qonnx.custom_op.general", 1)])
    onnx_model.ir_version = source.model.ir_version
    model = ModelWrapper(onnx_model)
    for name, value in builder.initializers.items():
        model.set_initializer(name, value)
    for name, dtype in builder.datatypes.items():
        model.set_tensor_datatype(name, dtype)
    # Every tensor keeps its name and shape from the streamlined graph; only the label is new.
    for node in model.graph.node:
        for name in list(node.input) + list(node.output):
            if model.get_initializer(name) is None and source.get_tensor_shape(name) is not None:
                model.set_tensor_shape(name, source.get_tensor_shape(name))
    if not model.get_tensor_shape(last_output):
        model.set_tensor_shape(last_output, [in_shape[0], 1])
    model = model.transform(InferDataTypes())
    model.set_metadata_prop("bnnflow.streamlined_input", first_input)
    model.set_metadata_prop("bnnflow.streamlined_output", streamlined_output)
    model.set_metadata_prop("bnnflow.output_kind", "label" if builder.counts.get("LabelSelect") else "accumulator")
    return model
