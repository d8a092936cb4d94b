"""Thresholding: integer thresholds on a stream without a matrix product before them (FINN's Thresholding):
after a pool, a residual join, or on the accelerator's input.

Each output is the number of thresholds at or below its input, plus ``outputBias``. With ``inputSigns`` a third
input holds one sign per channel (+1 / -1) that multiplies the value first: a channel whose activation falls as
its input rises (a BatchNorm with a negative slope after a max-pool) is thresholded on the negated value.
``PE`` channels per cycle (``PE | C``): ``prod(numInputVectors) * C / PE`` cycles per frame. Thresholds follow
the MVTU's rules (``bnnflow.hw.ops.base.threshold_problems``).
"""

from __future__ import annotations

import numpy as np
from onnx import helper

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import (
    Memory,
    VectorStreamOp,
    as_float,
    divides,
    positive,
    threshold_compare_luts,
    threshold_memories,
    threshold_problems,
    varying_bits,
)
from bnnflow.hw.ops.mvtu import LUT_CONTROL, LUT_PER_ADDER_BIT


class Thresholding(VectorStreamOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "NumChannels": ("i", True, 0),
            "PE": ("i", False, 1),
            "numInputVectors": ("ints", False, []),
            "outputBias": ("i", False, 0),
            "inputSigns": ("i", False, 0),
        }

    def make_shape_compatible_op(self, model):
        return helper.make_node("Relu", [self.onnx_node.input[0]], [self.onnx_node.output[0]])

    def execute_node(self, context, graph) -> None:
        node = self.onnx_node
        signs = context[node.input[2]] if self.get_nodeattr("inputSigns") else None
        context[node.output[0]] = as_float(kernels.multithreshold(context[node.input[0]], context[node.input[1]],
                                                                  self.get_nodeattr("outputBias"), signs))

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE", "numInputVectors") or divides(self, "PE", "NumChannels")
        if self.get_nodeattr("inputSigns") not in (0, 1):
            problems.append(f"has inputSigns = {self.get_nodeattr('inputSigns')}, not 0 or 1")
        return problems

    def num_inputs(self) -> int:
        return 2 + self.get_nodeattr("inputSigns")

    def parameter_problems(self, model) -> list[str]:
        if self.get_nodeattr("inputSigns"):
            signs = model.get_initializer(self.onnx_node.input[2])
            if signs is None or signs.shape != (self.get_nodeattr("NumChannels"),) or \
                    not np.isin(signs, (-1, 1)).all():
                return [f"has input signs {self.onnx_node.input[2]} that are not one -1 or +1 per channel"]
        return threshold_problems(model, self.onnx_node.input[1], self.get_nodeattr("NumChannels"),
                                  self.output_datatype(), self.get_nodeattr("outputBias"))

    def num_thresholds(self) -> int:
        return (1 << self.output_datatype().bitwidth()) - 1

    def value_bits(self) -> int:
        """Bits of the values compared: the input's, one more for negated channels (``inputSigns``)."""
        return self.input_datatype().bitwidth() + self.get_nodeattr("inputSigns")

    def threshold_range(self) -> tuple[int, int, int]:
        """bnn_threshold's thresholds: their width (ACC_W: the values' range and one above it, at least one bit more
        than the input) and the range they are clipped to."""
        from bnnflow.hw.rtl.layers import signed_width

        low, high = int(self.input_datatype().min()), int(self.input_datatype().max())
        if self.get_nodeattr("inputSigns"):
            low, high = min(low, -high), max(high, -low)
        return max(signed_width(low, high + 1), self.input_datatype().bitwidth() + 1), low, high + 1

    def memories(self, model=None) -> list[Memory]:
        """bnn_threshold's ROMs; with the model, each says which of its bits vary (``rom_used_bits``), else the bits
        that vary over the thresholds' range count."""
        from bnnflow.hw.rtl.layers import rom_used_bits

        c, pe = self.get_nodeattr("NumChannels"), self.get_nodeattr("PE")
        width, low, high = self.threshold_range()
        used = None
        if model is not None and model.get_initializer(self.onnx_node.input[1]) is not None:
            used = rom_used_bits(model, self.onnx_node)
        mems = threshold_memories(self.num_thresholds(), width, c, pe, varying_bits(low, high, width), used,
                                  self.onnx_node.name)
        if self.get_nodeattr("inputSigns"):  # a sign bit per channel
            mems.append(Memory(pe, c // pe, used_width=None if used is None else used[f"{self.onnx_node.name}_signs.hex"]))
        return mems

    def lut_estimate(self, lut_inputs: int) -> int:
        compare = threshold_compare_luts(self.num_thresholds(), self.value_bits(), LUT_PER_ADDER_BIT)
        negate = self.value_bits() * LUT_PER_ADDER_BIT * self.get_nodeattr("inputSigns")
        return int(round(LUT_CONTROL + self.get_nodeattr("PE") * (compare + negate)))
