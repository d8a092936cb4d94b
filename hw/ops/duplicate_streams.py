"""DuplicateStreams: one stream copied to several consumers, the fork of a residual block (FINN's
DuplicateStreams).

Every output carries the input's values. ``PE`` channels per cycle (``PE | C``): ``prod(numInputVectors) * C /
PE`` cycles per frame. Each output has a two-beat buffer (the RTL's ``bnn_dup``); a beat is taken only when
every buffer has room, so the slowest consumer paces the rest, and no consumer's ready reaches another's.
"""

from __future__ import annotations

from onnx import helper

from bnnflow.hw.ops.base import VectorStreamOp, as_float, divides, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL


class DuplicateStreams(VectorStreamOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "NumChannels": ("i", True, 0),
            "NumOutputStreams": ("i", True, 2),
            "PE": ("i", False, 1),
            "numInputVectors": ("ints", False, []),
        }

    def make_shape_compatible_op(self, model):
        # onnx has no op of N equal outputs; the dataflow conversion records every output's shape itself
        return helper.make_node("Identity", [self.onnx_node.input[0]], [self.onnx_node.output[0]])

    def infer_node_datatype(self, model) -> None:
        for name in self.onnx_node.output:
            model.set_tensor_datatype(name, self.output_datatype())

    def execute_node(self, context, graph) -> None:
        for name in self.onnx_node.output:
            context[name] = as_float(context[self.onnx_node.input[0]])

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE", "numInputVectors") or divides(self, "PE", "NumChannels")
        if self.get_nodeattr("NumOutputStreams") < 2:
            problems.append(f"has NumOutputStreams = {self.get_nodeattr('NumOutputStreams')}; a fork has two or more")
        if self.get_nodeattr("outputDataType") != self.get_nodeattr("inputDataType"):
            problems.append("changes the datatype of the values it copies")
        return problems

    def num_outputs(self) -> int:
        return self.get_nodeattr("NumOutputStreams")

    def streams(self) -> list[tuple[str, list[int], str, str]]:
        shape = self.stream_shapes()[0]
        node = self.onnx_node
        return [(node.input[0], shape, "inputDataType", "reads"),
                *((name, shape, "outputDataType", "writes") for name in node.output)]

    def lut_estimate(self, lut_inputs: int) -> int:
        # per output: its buffer's count and valid / ready (4), and the load mux of its head register (a LUT a bit)
        width = self.get_nodeattr("PE") * self.input_datatype().bitwidth()
        return LUT_CONTROL + self.get_nodeattr("NumOutputStreams") * (4 + width)
