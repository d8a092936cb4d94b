"""Conversion of a streamlined graph into ``dataflow.onnx``: its integer part as bnnflow.hw ops.

The streamlined graph (``pipeline/compile``) holds, between the tensors its metadata names
(``bnnflow.streamlined_input`` / ``bnnflow.streamlined_output``), only integer tensors in model.qonnx's NCHW
layout: convolutions and matrix products of codes by integer weights, ``MultiThreshold``s, pools, residual adds,
slices, pads and flattens. Hardware streams pixels in raster order with channels innermost and carries binary
activations as bits, so the conversion:

- maps each op to a unit: ``Conv`` -> ``SlidingWindow`` (padding included) + ``MVTU`` (XNOR mode on bits, a
  correction table where a binary map was zero-padded, see ``hw/ops/mvtu.py``), ``MatMul`` -> ``MVTU``, the
  ``MultiThreshold`` after either folded into it (a channel whose activation decreases flips its weights),
  ``MultiThreshold`` alone -> ``Thresholding``, ``MaxPool`` -> ``StreamingMaxPool``, ``Add`` of two streams ->
  ``AddStreams``, ``ReduceSum`` and depthwise ``Conv`` of ones -> ``SumPool``, ``Slice`` -> ``Downsample``, a
  channel ``Pad`` -> ``ChannelPad``, ``Flatten`` -> a free reshape;
- lays weights out for channels-last patches, and permutes a fully connected layer's weight rows (and a
  threshold unit's rows) where a channels-last map was flattened, since model.qonnx flattens channels first;
- inserts ``DuplicateStreams`` where a stream has several consumers (a residual fork).

The accelerator's input and output are the streamlined graph's boundary tensors in the hardware's layout;
``to_accelerator`` and ``from_accelerator`` map between the two (the metadata ``bnnflow.boundary`` records how),
so each level of the verification ladder is compared with the one before exactly.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from onnx import AttributeProto, TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import get_by_name

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.ops.base import DOMAIN
from bnnflow.nodes import node_ref
from bnnflow.pipeline.compile.linear import conv_matrix, padding_correction, padding_mask
from bnnflow.pipeline.compile.values import smallest_type

BINARY, BIPOLAR = DataType["BINARY"], DataType["BIPOLAR"]


def _attr(node, name, default=None):
    attr = get_by_name(node.attribute, name)
    return helper.get_attribute_value(attr) if attr is not None else default


@dataclass(frozen=True)
class Stream:
    """A streamlined tensor as the hardware carries it: ``name`` in the dataflow graph, its frame ``shape``
    (H, W, C) or (F,), its datatype (bits for +-1), and for flattened maps the streamlined feature each position
    holds (``order``)."""

    name: str
    shape: tuple[int, ...]
    dtype: DataType
    bipolar: bool = False
    order: np.ndarray | None = None


class _Converter:
    def __init__(self, source: ModelWrapper, label_select: bool) -> None:
        self.src = source
        self.label_select = label_select
        self.first = source.get_metadata_prop("bnnflow.streamlined_input")
        self.last = source.get_metadata_prop("bnnflow.streamlined_output")
        if not self.first or not self.last:
            raise UnsupportedGraphError("the streamlined graph does not name its integer part; recompile it")
        self.nodes: list = []
        self.initializers: dict[str, np.ndarray] = {}
        self.datatypes: dict[str, DataType] = {}
        self.shapes: dict[str, list[int]] = {}
        self.counts: dict[str, int] = {}
        self.streams: dict[str, Stream] = {}
        self.done: set[str] = set()

    # -- helpers ------------------------------------------------------------------------------------------------

    def refuse(self, node, problem: str):
        raise UnsupportedGraphError(f"node {node_ref(self.src, node)} {problem}")

    def name(self, op: str) -> str:
        index = self.counts.get(op, 0)
        self.counts[op] = index + 1
        return f"{op}_{index}"

    def add(self, op: str, inputs: list[str], outputs: list[str] | str, shape: tuple[int, ...], dtype: DataType,
            **attrs) -> str:
        """A hardware node; ``shape`` is its output's frame shape."""
        outputs = [outputs] if isinstance(outputs, str) else outputs
        name = self.name(op)
        node = helper.make_node(op, inputs, outputs, domain=DOMAIN, name=name)
        for key, value in attrs.items():  # explicit type: onnx cannot infer one from an empty list
            kind = AttributeProto.INTS if isinstance(value, list) else None
            node.attribute.append(helper.make_attribute(key, value, attr_type=kind))
        self.nodes.append(node)
        for out in outputs:
            self.shapes[out] = [1, *shape]
            self.datatypes[out] = dtype
        return name

    def const(self, name: str, value: np.ndarray, dtype: DataType | None = None) -> str:
        self.initializers[name] = np.asarray(value, dtype=np.float32)
        if dtype is not None:
            self.datatypes[name] = dtype
        return name

    def consumers(self, tensor: str) -> list:
        return self.src.find_consumers(tensor)

    def only_consumer(self, tensor: str, op_type: str):
        consumers = self.consumers(tensor)
        if len(consumers) == 1 and consumers[0].op_type == op_type and tensor != self.last:
            return consumers[0]
        return None

    def stream(self, node, tensor: str) -> Stream:
        if tensor not in self.streams:
            self.refuse(node, f"reads {tensor}, which the accelerator does not compute")
        return self.streams[tensor]

    @staticmethod
    def hw_type(dtype: DataType) -> DataType:
        return BINARY if dtype == BIPOLAR else dtype

    def sign_vector(self, node) -> np.ndarray | None:
        """A per-channel Mul by +-1 (the lowering's orientation of decreasing channels), as a vector."""
        value = self.src.get_initializer(node.input[1]) if node.op_type == "Mul" else None
        if value is None or not np.isin(value, (-1, 1)).all():
            return None
        return value.reshape(-1)

    # -- driving ------------------------------------------------------------------------------------------------

    def run(self) -> ModelWrapper:
        shape = self.src.get_tensor_shape(self.first)
        dtype = self.src.get_tensor_datatype(self.first)
        frame = (*shape[2:], shape[1]) if len(shape) == 4 else tuple(shape[1:])
        self.streams[self.first] = Stream(self.first, frame, self.hw_type(dtype), dtype == BIPOLAR)
        body = self._body()
        handlers = {"Conv": self.conv, "MatMul": self.matmul, "MultiThreshold": self.thresholds,
                    "MaxPool": self.maxpool, "Add": self.add_streams, "ReduceSum": self.sum_pool,
                    "Slice": self.downsample, "Pad": self.pad, "Flatten": self.flatten, "Mul": self.orient}
        for node in self.src.graph.node:
            if node.name not in body or node.name in self.done:
                continue
            handler = handlers.get(node.op_type)
            if handler is None:
                self.refuse(node, "sits between hardware layers and has no hardware op")
            handler(node)
        if self.last not in self.streams:
            raise UnsupportedGraphError(f"the accelerator's output {self.last} was not converted")
        out = self.streams[self.last]
        if self.label_select:
            out = self._label_select(out)
        self._fork()
        return self._assemble(out)

    def _body(self) -> set[str]:
        """The nodes between the accelerator's input and output tensors."""
        producers = {name: node for node in self.src.graph.node for name in node.output}
        body, frontier = set(), [self.last]
        while frontier:
            tensor = frontier.pop()
            if tensor == self.first or tensor not in producers:
                continue
            node = producers[tensor]
            if node.name not in body:
                body.add(node.name)
                frontier.extend(n for n in node.input if n and self.src.get_initializer(n) is None)
        return body

    # -- linear layers ------------------------------------------------------------------------------------------

    def conv(self, node) -> None:
        weights = self.src.get_initializer(node.input[1])
        group = _attr(node, "group", 1)
        if group != 1:
            if weights is not None and group == weights.shape[0] and (weights == 1).all():
                return self.sum_pool(node)
            self.refuse(node, "is a grouped convolution other than a sum pool")
        x = self.stream(node, node.input[0])
        kernel, strides = list(_attr(node, "kernel_shape")), list(_attr(node, "strides", [1, 1]))
        pads = list(_attr(node, "pads", [0, 0, 0, 0]))
        h, w, c = x.shape
        pad_value, correction = 0, None
        if any(pads) and x.bipolar:
            # the window pads with bit 0 (-1) where the model padded with 0: a correction per output position
            mask = padding_mask((h, w), tuple(kernel), tuple(strides), pads)
            correction = padding_correction(weights, mask)
        oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
        ow = (w + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
        source = x.name
        if kernel != [1, 1] or strides != [1, 1] or any(pads):
            source = f"{node.output[0]}_patches"
            self.add("SlidingWindow", [x.name], source, (oh, ow, kernel[0] * kernel[1] * c), x.dtype,
                     IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=kernel, Stride=strides, SIMD=1,
                     Padding=pads, PadValue=pad_value, inputDataType=x.dtype.name, outputDataType=x.dtype.name)
        self._mvtu(node, x, source, conv_matrix(weights), [oh, ow], correction)

    def matmul(self, node) -> None:
        x = self.stream(node, node.input[0])
        weights = self.src.get_initializer(node.input[1])
        if weights is None:
            self.refuse(node, "multiplies two computed tensors")
        if x.order is not None:  # hardware features are channels-last; model.qonnx's rows are channels-first
            weights = weights[x.order]
        self._mvtu(node, x, x.name, weights, [], None)

    def _mvtu(self, node, x: Stream, source: str, matrix: np.ndarray, vectors: list[int],
              correction: np.ndarray | None) -> None:
        """An MVTU computing ``node``'s accumulator, with the thresholds after it folded in when they are its only
        reader (and a Mul by -1 of decreasing channels in front of them, folded into the weights)."""
        w_type = self.src.get_tensor_datatype(node.input[1])
        xnor = x.bipolar and w_type == BIPOLAR
        if x.bipolar and not xnor:
            self.refuse(node, f"multiplies binary activations by {w_type.name} weights; the hardware multiplies bits "
                        "only by binary weights (weight_bits=1) or codes by integer weights")
        acc = node.output[0]
        sign_node = self.only_consumer(acc, "Mul")
        signs = self.sign_vector(sign_node) if sign_node is not None else None
        after = sign_node.output[0] if signs is not None else acc
        threshold = self.only_consumer(after, "MultiThreshold")
        if signs is not None and threshold is None and self.only_consumer(after, "MaxPool") is None:
            signs = None  # not an orientation the MVTU can take: left to the Mul's own handler
        if signs is not None:
            matrix = matrix * signs[None, :]
            correction = None if correction is None else correction * signs
            self.done.add(sign_node.name)
        mw, mh = matrix.shape
        name = f"MVTU_{self.counts.get('MVTU', 0)}"
        inputs = [source, self.const(f"{name}_weights", (matrix + 1) // 2 if xnor else matrix,
                                     BINARY if xnor else w_type)]
        acc_dtype = self.src.get_tensor_datatype(acc)
        low, high = (-mw, mw) if xnor else (int(acc_dtype.min()), int(acc_dtype.max()))
        if signs is not None:  # some channels negated: the range of either sign
            low, high = min(low, -high), max(high, -low)
        acc_type = smallest_type(low, high)
        attrs = {}
        if threshold is not None:
            out_type, bias = self._threshold_output(threshold)
            inputs.append(self.const(f"{name}_thresholds", self.src.get_initializer(threshold.input[1]), acc_type))
            output = threshold.output[0]
            self.done.add(threshold.name)
            attrs["outputBias"] = bias
        else:
            out_type, output = acc_type, after
        if correction is not None:
            rows, cols, table = _classes(correction)
            inputs.append(self.const(f"{name}_correction", table))
            attrs.update(padCorrection=1, correctionRows=rows, correctionCols=cols)
        shape = (*vectors, mh)
        self.add("MVTU", inputs, output, shape, out_type, MW=mw, MH=mh, PE=1, SIMD=1, binaryXnorMode=int(xnor),
                 noActivation=int(threshold is None), numInputVectors=vectors, inputDataType=x.dtype.name,
                 outputDataType=out_type.name, weightDataType=(BINARY if xnor else w_type).name,
                 accDataType=acc_type.name, **attrs)
        bits = threshold is not None and self.src.get_tensor_datatype(output) == BIPOLAR
        self.streams[output] = Stream(output, shape, out_type, bits)

    def _threshold_output(self, node) -> tuple[DataType, int]:
        """The hardware datatype and bias of a MultiThreshold's output: bits for +-1, else the code itself."""
        dtype = self.src.get_tensor_datatype(node.output[0])
        scale, bias = _attr(node, "out_scale", 1.0), _attr(node, "out_bias", 0.0)
        if dtype == BIPOLAR and (scale, bias) == (2.0, -1.0):
            return BINARY, 0
        if scale != 1.0 or bias != round(bias):
            self.refuse(node, f"outputs {scale} * count + {bias}, neither a code nor +-1")
        return dtype, int(bias)

    # -- elementwise and data movement --------------------------------------------------------------------------

    def thresholds(self, node) -> None:
        source, signs = node.input[0], None
        producer = self.src.find_producer(source)
        if producer is not None and producer.name in self.done and producer.op_type == "Mul":
            source, signs = producer.input[0], self.sign_vector(producer)
        x = self.stream(node, source)
        out_type, bias = self._threshold_output(node)
        thresholds = self.src.get_initializer(node.input[1])
        name = f"Thresholding_{self.counts.get('Thresholding', 0)}"
        channels = x.shape[-1]
        if x.order is not None and thresholds.shape[0] > 1:
            thresholds = thresholds[x.order]
        t_type = x.dtype
        if x.bipolar:  # the stream holds bits b of codes 2b - 1: s (2b - 1) >= t  <=>  s b >= ceil((t + s) / 2)
            s = np.ones(channels) if signs is None else (signs if x.order is None else signs[x.order])
            thresholds = np.ceil((np.broadcast_to(thresholds, (channels, thresholds.shape[1])) + s[:, None]) / 2)
            t_type = smallest_type(int(thresholds.min()), int(thresholds.max()))
        inputs = [x.name, self.const(f"{name}_thresholds", thresholds, t_type)]
        if signs is not None:
            inputs.append(self.const(f"{name}_signs", signs if x.order is None else signs[x.order]))
        self.add("Thresholding", inputs, node.output[0], x.shape, out_type, NumChannels=channels, PE=1,
                 numInputVectors=list(x.shape[:-1]), outputBias=bias, inputSigns=int(signs is not None),
                 inputDataType=x.dtype.name, outputDataType=out_type.name)
        self.streams[node.output[0]] = Stream(node.output[0], x.shape, out_type, out_type == BINARY, x.order)

    def orient(self, node) -> None:
        """A Mul by -1 of some channels that no MVTU took: in front of thresholds, the threshold unit takes it."""
        consumer = self.only_consumer(node.output[0], "MultiThreshold")
        if self.sign_vector(node) is None or consumer is None:
            self.refuse(node, "multiplies a stream by something other than the signs of a threshold unit's channels")
        self.done.add(node.name)

    def maxpool(self, node) -> None:
        x = self.stream(node, node.input[0])
        kernel, strides = list(_attr(node, "kernel_shape")), list(_attr(node, "strides", _attr(node, "kernel_shape")))
        h, w, c = x.shape
        shape = ((h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c)
        self.add("StreamingMaxPool", [x.name], node.output[0], shape, x.dtype, NumChannels=c, ImgDim=[h, w],
                 PoolDim=kernel, Stride=strides, PE=1, inputDataType=x.dtype.name, outputDataType=x.dtype.name)
        self.streams[node.output[0]] = Stream(node.output[0], shape, x.dtype, x.bipolar)

    def add_streams(self, node) -> None:
        a, b = (self.stream(node, name) for name in node.input)
        if a.bipolar or b.bipolar or a.shape != b.shape:
            self.refuse(node, "adds binary activations or streams of different shapes")
        out_type = self.src.get_tensor_datatype(node.output[0])
        vectors = list(a.shape[:-1])
        self.add("AddStreams", [a.name, b.name], node.output[0], a.shape, out_type, NumChannels=a.shape[-1], PE=1,
                 numInputVectors=vectors, inputDataType=a.dtype.name, input2DataType=b.dtype.name,
                 outputDataType=out_type.name)
        self.streams[node.output[0]] = Stream(node.output[0], a.shape, out_type, False, a.order)

    def sum_pool(self, node) -> None:
        x = self.stream(node, node.input[0])
        if x.bipolar or len(x.shape) != 3:
            self.refuse(node, "sums binary activations or a stream that is not a map")
        h, w, c = x.shape
        if node.op_type == "ReduceSum":
            axes = self.src.get_initializer(node.input[1])
            if axes is None or sorted(int(a) for a in axes) != [2, 3]:
                self.refuse(node, "sums over axes other than the image's rows and columns")
            kernel = strides = [h, w]
        else:
            kernel, strides = list(_attr(node, "kernel_shape")), list(_attr(node, "strides", [1, 1]))
        shape = ((h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1, c)
        out_type = self.src.get_tensor_datatype(node.output[0])
        self.add("SumPool", [x.name], node.output[0], shape, out_type, NumChannels=c, ImgDim=[h, w], PoolDim=kernel,
                 Stride=strides, PE=1, inputDataType=x.dtype.name, outputDataType=out_type.name)
        self.streams[node.output[0]] = Stream(node.output[0], shape, out_type)

    def downsample(self, node) -> None:
        x = self.stream(node, node.input[0])
        starts, ends, axes, steps = [self.src.get_initializer(node.input[i]) for i in range(1, 5)]
        h, w, c = x.shape
        offset, stride, size = [0, 0], [1, 1], [h, w]
        for axis, start, end, step in zip(axes, starts, ends, steps):
            dim = int(axis) % 4 - 2
            if dim not in (0, 1):
                self.refuse(node, "slices channels; the hardware subsamples rows and columns only")
            taken = range(*slice(int(start), int(end), int(step)).indices(size[dim]))
            offset[dim], stride[dim], size[dim] = taken.start, int(step), len(taken)
        shape = (*size, c)
        self.add("Downsample", [x.name], node.output[0], shape, x.dtype, NumChannels=c, ImgDim=[h, w], OutDim=size,
                 Offset=offset, Stride=stride, PE=1, inputDataType=x.dtype.name, outputDataType=x.dtype.name)
        self.streams[node.output[0]] = Stream(node.output[0], shape, x.dtype, x.bipolar)

    def pad(self, node) -> None:
        x = self.stream(node, node.input[0])
        pads = [int(p) for p in self.src.get_initializer(node.input[1])]
        fill = float(self.src.get_initializer(node.input[2]).reshape(-1)[0])
        conv = self.only_consumer(node.output[0], "Conv")
        if conv is not None and not any(pads[i] for i in (0, 1, 4, 5)):
            return self._padded_conv(node, conv, x, pads, fill)
        if any(pads[i] for i in (0, 2, 3, 4, 6, 7)) or x.bipolar:
            self.refuse(node, "pads a map's rows or columns without a convolution reading it")
        h, w, c = x.shape
        shape = (h, w, c + pads[1] + pads[5])
        self.add("ChannelPad", [x.name], node.output[0], shape, x.dtype, NumChannels=c, PadBefore=pads[1],
                 PadAfter=pads[5], PadValue=int(fill), PE=1, numInputVectors=[h, w], inputDataType=x.dtype.name,
                 outputDataType=x.dtype.name)
        self.streams[node.output[0]] = Stream(node.output[0], shape, x.dtype)

    def _padded_conv(self, pad, conv, x: Stream, pads: list[int], fill: float) -> None:
        """A Pad that only a convolution reads: the sliding window pads with its value (a bit for +-1)."""
        if any(_attr(conv, "pads", [0, 0, 0, 0])):
            self.refuse(conv, "is padded twice (a Pad and its own pads)")
        bit = (fill + 1) / 2 if x.bipolar else fill
        if bit != int(bit) or not x.dtype.allowed(int(bit)):
            self.refuse(pad, f"pads with {fill}, no value of its stream")
        kernel, strides = list(_attr(conv, "kernel_shape")), list(_attr(conv, "strides", [1, 1]))
        window = [pads[2], pads[3], pads[6], pads[7]]
        h, w, c = x.shape
        oh = (h + window[0] + window[2] - kernel[0]) // strides[0] + 1
        ow = (w + window[1] + window[3] - kernel[1]) // strides[1] + 1
        patches = f"{conv.output[0]}_patches"
        self.add("SlidingWindow", [x.name], patches, (oh, ow, kernel[0] * kernel[1] * c), x.dtype, IFMChannels=c,
                 IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=kernel, Stride=strides, SIMD=1, Padding=window,
                 PadValue=int(bit), inputDataType=x.dtype.name, outputDataType=x.dtype.name)
        self.done.add(conv.name)
        self._mvtu(conv, x, patches, conv_matrix(self.src.get_initializer(conv.input[1])), [oh, ow], None)

    def flatten(self, node) -> None:
        x = self.stream(node, node.input[0])
        if len(x.shape) == 1:
            self.streams[node.output[0]] = x
            return
        h, w, c = x.shape
        # hardware position (y, x, ch) holds model.qonnx's channels-first feature ch * H * W + y * W + x
        y, xx, ch = np.meshgrid(np.arange(h), np.arange(w), np.arange(c), indexing="ij")
        order = (ch * h * w + y * w + xx).reshape(-1)
        shape_name = f"{node.output[0]}_shape"
        self.initializers[shape_name] = np.asarray([-1, h * w * c], dtype=np.int64)
        self.nodes.append(helper.make_node("Reshape", [x.name, shape_name], [node.output[0]], name=self.name("Reshape")))
        self.shapes[node.output[0]] = [1, h * w * c]
        self.datatypes[node.output[0]] = x.dtype
        identity = np.array_equal(order, np.arange(order.size))
        self.streams[node.output[0]] = Stream(node.output[0], (h * w * c,), x.dtype, x.bipolar,
                                              None if identity else order)

    # -- the end ------------------------------------------------------------------------------------------------

    def _label_select(self, out: Stream) -> Stream:
        tail = [n for n in self.src.graph.node if n.name not in self._body() and self._after(n)]
        _check_monotone_tail(self.src, tail)
        if len(out.shape) != 1 or out.order is not None:
            raise UnsupportedGraphError("label select needs the accelerator to end in class scores")
        label = f"{out.name}_label"
        labels = out.shape[0]
        dtype = DataType.get_smallest_possible(labels - 1)
        self.add("LabelSelect", [out.name], label, (1,), dtype, Labels=labels, PE=1, inputDataType=out.dtype.name,
                 outputDataType=dtype.name)
        return Stream(label, (1,), dtype)

    def _after(self, node) -> bool:
        """Whether ``node`` depends on the accelerator's output (is part of the host tail)."""
        live, frontier = set(), [self.last]
        while frontier:
            for consumer in self.src.find_consumers(frontier.pop()):
                if consumer.name not in live:
                    live.add(consumer.name)
                    frontier.extend(consumer.output)
        return node.name in live

    def _fork(self) -> None:
        """A DuplicateStreams in front of every stream read by several hardware nodes."""
        readers: dict[str, list] = {}
        for node in self.nodes:
            for index, name in enumerate(node.input):
                if name in self.shapes:
                    readers.setdefault(name, []).append((node, index))
        for tensor, uses in readers.items():
            if len(uses) < 2:
                continue
            shape, dtype = self.shapes[tensor][1:], self.datatypes[tensor]
            outputs = [f"{tensor}_copy{i}" for i in range(len(uses))]
            self.add("DuplicateStreams", [tensor], outputs, tuple(shape), dtype, NumChannels=shape[-1],
                     NumOutputStreams=len(uses), PE=1, numInputVectors=list(shape[:-1]), inputDataType=dtype.name,
                     outputDataType=dtype.name)
            for (node, index), copy in zip(uses, outputs):
                node.input[index] = copy

    def _assemble(self, out: Stream) -> ModelWrapper:
        first = self.streams[self.first]
        graph = helper.make_graph(_sorted(self.nodes), "bnnflow_dataflow",
                                  [helper.make_tensor_value_info(first.name, TensorProto.FLOAT, [1, *first.shape])],
                                  [helper.make_tensor_value_info(out.name, TensorProto.FLOAT, [1, *out.shape])])
        onnx_model = helper.make_model(graph, producer_name="bnnflow", opset_imports=[
            helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])
        onnx_model.ir_version = self.src.model.ir_version
        model = ModelWrapper(onnx_model)
        for name, value in self.initializers.items():
            model.set_initializer(name, value)
        declared = {first.name, out.name}
        for name, shape in self.shapes.items():
            if name not in declared and name not in self.initializers:
                model.graph.value_info.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape))
        model.set_tensor_datatype(first.name, first.dtype)
        for name, dtype in self.datatypes.items():
            model.set_tensor_datatype(name, dtype)
        last = self.streams[self.last]
        boundary = {"input": {"layout": "NCHW" if len(first.shape) == 3 else "NC", "bipolar": first.bipolar},
                    "output": {"layout": "NCHW" if len(last.shape) == 3 else "NC", "bipolar": last.bipolar,
                               "order": None if last.order is None else last.order.tolist()}}
        model.set_metadata_prop("bnnflow.streamlined_input", self.first)
        model.set_metadata_prop("bnnflow.streamlined_output", self.last)
        model.set_metadata_prop("bnnflow.boundary", json.dumps(boundary))
        model.set_metadata_prop("bnnflow.output_kind", "label" if self.label_select else "accumulator")
        return model


def _classes(correction: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
    """An (OH, OW, C) correction as row classes, column classes and one table row per (row, column) class: the
    positions of a window's border share their correction."""
    oh, ow, c = correction.shape
    # a row's class is its pattern across the whole row; a column's across the whole column
    row_keys = [correction[r].tobytes() for r in range(oh)]
    col_keys = [correction[:, x].tobytes() for x in range(ow)]
    row_ids = {key: i for i, key in enumerate(dict.fromkeys(row_keys))}
    col_ids = {key: i for i, key in enumerate(dict.fromkeys(col_keys))}
    rows, cols = [row_ids[k] for k in row_keys], [col_ids[k] for k in col_keys]
    first_row = {cls: r for r, cls in reversed(list(enumerate(rows)))}
    first_col = {cls: x for x, cls in reversed(list(enumerate(cols)))}
    table = np.stack([correction[first_row[r], first_col[x]] for r in range(len(row_ids)) for x in range(len(col_ids))])
    rebuilt = table.reshape(len(row_ids), len(col_ids), c)[np.asarray(rows)][:, np.asarray(cols)]
    if not np.array_equal(rebuilt, correction):  # a window's border is a product of row and column classes
        raise AssertionError("padding correction is not separable into row and column classes")
    return rows, cols, table


def _sorted(nodes: list) -> list:
    """Nodes in an order where each comes after the producers of its inputs."""
    produced = {name for node in nodes for name in node.output}
    ready, placed, order = set(), set(), []
    pending = list(nodes)
    while pending:
        progress = False
        for node in list(pending):
            if all(name not in produced or name in ready for name in node.input):
                order.append(node)
                ready.update(node.output)
                placed.add(node.name)
                pending.remove(node)
                progress = True
        if not progress:
            raise AssertionError("the dataflow graph has a cycle")
    return order


def _check_monotone_tail(model: ModelWrapper, tail: list) -> None:
    """Label select on accumulators equals argmax of the scores only if the tail is increasing and shared."""
    for node in tail:
        value = model.get_initializer(node.input[1]) if len(node.input) > 1 else None
        shared = value is not None and value.size >= 1 and np.all(value == value.reshape(-1)[0])
        positive_scale = node.op_type in ("Mul", "Div") and shared and value.reshape(-1)[0] > 0
        shared_offset = node.op_type in ("Add", "Sub") and shared
        if not (positive_scale or shared_offset):
            raise UnsupportedGraphError(
                f"node {node_ref(model, node)} after the last layer is not a positive scalar scale or a shared "
                "offset, so the label of the accumulators may differ from the model's; compile without label select"
            )


def to_dataflow(streamlined: ModelWrapper, label_select: bool = False) -> ModelWrapper:
    """The integer part of a streamlined graph as a dataflow graph (folding PE = SIMD = 1 everywhere)."""
    return _Converter(streamlined, label_select).run()


def _boundary(dataflow: ModelWrapper) -> dict:
    return json.loads(dataflow.get_metadata_prop("bnnflow.boundary") or "{}")


def to_accelerator(dataflow: ModelWrapper, values: np.ndarray) -> np.ndarray:
    """The streamlined graph's input tensor (N, C, H, W) or (N, F) as the accelerator's input frames: channels
    last, +-1 as bits."""
    side = _boundary(dataflow).get("input", {})
    values = np.asarray(values)
    if side.get("layout") == "NCHW":
        values = values.transpose(0, 2, 3, 1)
    if side.get("bipolar"):
        values = (values > 0).astype(values.dtype)
    return values


def output_to_accelerator(dataflow: ModelWrapper, values: np.ndarray) -> np.ndarray:
    """The streamlined graph's output tensor as the accelerator's output frames (``from_accelerator``'s inverse):
    what the simulator must produce."""
    if dataflow.get_metadata_prop("bnnflow.output_kind") == "label":
        return np.asarray(values)
    side = _boundary(dataflow).get("output", {})
    values = np.asarray(values)
    if side.get("layout") == "NCHW":
        values = values.transpose(0, 2, 3, 1)
    if side.get("order") is not None:
        values = values[:, np.asarray(side["order"])]
    if side.get("bipolar"):
        values = (values > 0).astype(values.dtype)
    return values


def from_accelerator(dataflow: ModelWrapper, frames: np.ndarray) -> np.ndarray:
    """The accelerator's output frames as the streamlined graph's output tensor (the inverse of the layout and
    ordering the hardware uses); a label select's class index stays as it is."""
    if dataflow.get_metadata_prop("bnnflow.output_kind") == "label":
        return np.asarray(frames)
    side = _boundary(dataflow).get("output", {})
    frames = np.asarray(frames)
    if side.get("bipolar"):
        frames = 2 * frames - 1
    if side.get("order") is not None:
        result = np.empty_like(frames)
        result[:, np.asarray(side["order"])] = frames
        frames = result
    if side.get("layout") == "NCHW":
        frames = frames.transpose(0, 3, 1, 2)
    return frames
