"""ChannelPad: a stream's channels extended with constant channels, ``PadBefore`` in front and ``PadAfter``
behind: the channel zero-padding of an option-A shortcut (the new channels of a wider stage).

``PE`` output channels per cycle (``PE`` divides the input and the output channel counts):
``prod(numInputVectors) * (C + PadBefore + PadAfter) / PE`` cycles per frame; no memory.
"""

from __future__ import annotations

import math

from onnx import helper

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import HWOp, as_float, divisors, frame, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL


class ChannelPad(HWOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "NumChannels": ("i", True, 0),
            "PadBefore": ("i", False, 0),
            "PadAfter": ("i", False, 0),
            "PadValue": ("i", False, 0),
            "PE": ("i", False, 1),
            "numInputVectors": ("ints", False, []),
        }

    def out_channels(self) -> int:
        return self.get_nodeattr("NumChannels") + self.get_nodeattr("PadBefore") + self.get_nodeattr("PadAfter")

    def make_shape_compatible_op(self, model):
        return helper.make_node("Identity", [self.onnx_node.input[0]], [self.onnx_node.output[0]])

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE", "numInputVectors")
        if min(self.get_nodeattr("PadBefore"), self.get_nodeattr("PadAfter")) < 0:
            problems.append("pads a negative number of channels")
        if problems:
            return problems
        if self.get_nodeattr("NumChannels") % self.get_nodeattr("PE") or self.out_channels() % self.get_nodeattr("PE"):
            problems.append(f"has PE = {self.get_nodeattr('PE')}, which does not divide both "
                            f"{self.get_nodeattr('NumChannels')} input and {self.out_channels()} output channels")
        if not self.input_datatype().allowed(self.get_nodeattr("PadValue")):
            problems.append(f"pads with {self.get_nodeattr('PadValue')}, no {self.input_datatype().name} value")
        if self.get_nodeattr("outputDataType") != self.get_nodeattr("inputDataType"):
            problems.append("changes the datatype of the values it passes")
        return problems

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        vectors = self.get_nodeattr("numInputVectors")
        return frame(vectors, self.get_nodeattr("NumChannels")), frame(vectors, self.out_channels())

    def execute_node(self, context, graph) -> None:
        out = kernels.channel_pad(context[self.onnx_node.input[0]], self.get_nodeattr("PadBefore"),
                                  self.get_nodeattr("PadAfter"), self.get_nodeattr("PadValue"))
        context[self.onnx_node.output[0]] = as_float(out)

    def legal_foldings(self) -> list[dict[str, int]]:
        both = math.gcd(self.get_nodeattr("NumChannels"), self.out_channels())
        return [{"PE": pe} for pe in divisors(both)]

    def get_exp_cycles(self) -> int:
        return math.prod(self.get_nodeattr("numInputVectors")) * (self.out_channels() // self.get_nodeattr("PE"))

    def lut_estimate(self, lut_inputs: int) -> int:
        return LUT_CONTROL + self.get_nodeattr("PE") * self.input_datatype().bitwidth()  # a constant mux per lane
