"""LabelSelect: the index of the largest class score (top-1 label select, FINN's LabelSelect with K = 1).

Reads ``PE`` scores per cycle (``PE | Labels``): ``Labels / PE`` cycles per frame; the index leaves through the
unit's pipeline while the next frame's scores stream in, so emitting it costs no cycle of throughput.
Ties go to the lower index, as numpy's and PyTorch's argmax do. Contract: the scores are one vector of
``Labels`` values and the output datatype holds every index, since the RTL emits its low bits.
"""

from __future__ import annotations

import math

from onnx import helper

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import HWOp, as_float, divides, divisors, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL, LUT_PER_ADDER_BIT


class LabelSelect(HWOp):
    def get_nodeattr_types(self) -> dict:
        return {**super().get_nodeattr_types(), "Labels": ("i", True, 0), "PE": ("i", False, 1)}

    def make_shape_compatible_op(self, model):
        # ReduceMax rather than ArgMax: same (N, 1) shape, and a float output like the graph declares.
        return helper.make_node("ReduceMax", [self.onnx_node.input[0]], [self.onnx_node.output[0]], axes=[-1],
                                keepdims=1)

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "Labels", "PE")
        if problems:
            return problems
        labels, out_type = self.get_nodeattr("Labels"), self.output_datatype()
        if not (out_type.allowed(0) and out_type.allowed(labels - 1)):
            problems.append(f"has outputDataType {out_type.name}, which cannot hold every label 0 .. {labels - 1}")
        return divides(self, "PE", "Labels") + problems

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        return [self.get_nodeattr("Labels")], [1]

    def execute_node(self, context, graph) -> None:
        scores = context[self.onnx_node.input[0]]
        context[self.onnx_node.output[0]] = as_float(kernels.label_select(scores, 1))

    def legal_foldings(self) -> list[dict[str, int]]:
        return [{"PE": pe} for pe in divisors(self.get_nodeattr("Labels"))]

    def get_exp_cycles(self) -> int:
        return self.get_nodeattr("Labels") // self.get_nodeattr("PE")

    def lut_estimate(self, lut_inputs: int) -> int:
        bits = self.input_datatype().bitwidth()
        index_bits = max(1, math.ceil(math.log2(self.get_nodeattr("Labels"))))
        per_lane = (bits + index_bits) * LUT_PER_ADDER_BIT * 2  # compare and select per lane
        return int(round(LUT_CONTROL + self.get_nodeattr("PE") * per_lane))
