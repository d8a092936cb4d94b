"""AddStreams: two integer streams added element by element, the join of a residual block (FINN's AddStreams).

Both inputs are codes of one scale (the compiler joins nothing else), so their float sum is the integer sum of the
codes, one bit wider. ``PE`` channels of both per cycle (``PE | C``): ``prod(numInputVectors) * C / PE`` cycles
per frame. The join waits for both: the FIFO on its shorter input must hold what the longer branch has in flight
(the RTL's business).
"""

from __future__ import annotations

from onnx import helper

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import VectorStreamOp, as_float, divides, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL, LUT_PER_ADDER_BIT


class AddStreams(VectorStreamOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "input2DataType": ("s", True, ""),
            "NumChannels": ("i", True, 0),
            "PE": ("i", False, 1),
            "numInputVectors": ("ints", False, []),
        }

    def make_shape_compatible_op(self, model):
        return helper.make_node("Add", list(self.onnx_node.input), [self.onnx_node.output[0]])

    def execute_node(self, context, graph) -> None:
        node = self.onnx_node
        context[node.output[0]] = as_float(kernels.add_streams(context[node.input[0]], context[node.input[1]]))

    def datatype_attributes(self) -> list[str]:
        return [*super().datatype_attributes(), "input2DataType"]

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE", "numInputVectors") or divides(self, "PE", "NumChannels")
        from qonnx.core.datatype import DataType

        a, b = self.input_datatype(), DataType[self.get_nodeattr("input2DataType")]
        out = self.output_datatype()
        low, high = a.min() + b.min(), a.max() + b.max()
        if not (out.allowed(low) and out.allowed(high)):
            problems.append(f"adds {a.name} and {b.name} into {out.name}, which cannot hold [{low}, {high}]")
        return problems

    def num_inputs(self) -> int:
        return 2

    def streams(self) -> list[tuple[str, list[int], str, str]]:
        shape = self.stream_shapes()[0]
        node = self.onnx_node
        return [(node.input[0], shape, "inputDataType", "reads"), (node.input[1], shape, "input2DataType", "reads"),
                (node.output[0], shape, "outputDataType", "writes")]

    def lut_estimate(self, lut_inputs: int) -> int:
        return int(round(LUT_CONTROL + self.get_nodeattr("PE") * self.output_datatype().bitwidth() * LUT_PER_ADDER_BIT))
