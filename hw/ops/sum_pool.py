"""SumPool: the sum over pooling windows of a channels-last integer map: an average pool (or a global one) whose
1 / (kh kw) the compiler folds into the thresholds or the layer that reads it.

``PE`` channels per cycle (``PE | C``): it reads each input pixel once, ``H * W * C / PE`` cycles per frame,
and keeps one output row of running sums (the whole sum for a global pool). Contract: the window fits the image
(floor mode), and the output datatype holds ``kh * kw`` times the input's range. The RTL (``bnn_pool``) takes
non-overlapping windows (stride = kernel) and the global pool, which its generator checks.
"""

from __future__ import annotations

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import Memory, PixelStreamOp, as_float, divides, pairs, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL, LUT_PER_ADDER_BIT
from bnnflow.hw.ops.sliding_window import window_problems
from bnnflow.hw.ops.streaming_maxpool import pool_shape_op, pool_shapes


class SumPool(PixelStreamOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "NumChannels": ("i", True, 0),
            "ImgDim": ("ints", True, []),
            "PoolDim": ("ints", True, []),
            "Stride": ("ints", True, []),
            "PE": ("i", False, 1),
        }

    def make_shape_compatible_op(self, model):
        return pool_shape_op(self, model)

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE") + pairs(self, "ImgDim", "PoolDim", "Stride")
        if problems:
            return problems
        problems = divides(self, "PE", "NumChannels") + [
            p for p in window_problems(self, "ImgDim", "PoolDim") if "passes its values" not in p]
        count = self.get_nodeattr("PoolDim")[0] * self.get_nodeattr("PoolDim")[1]
        a, out = self.input_datatype(), self.output_datatype()
        if not (out.allowed(a.min() * count) and out.allowed(a.max() * count)):
            problems.append(f"sums {count} values of {a.name} into {out.name}, which cannot hold them")
        return problems

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        return pool_shapes(self)

    def execute_node(self, context, graph) -> None:
        x = context[self.onnx_node.input[0]]
        out = kernels.sum_pool(x, tuple(self.get_nodeattr("PoolDim")), tuple(self.get_nodeattr("Stride")))
        context[self.onnx_node.output[0]] = as_float(out)

    def memories(self, model=None) -> list[Memory]:
        c, pe = self.get_nodeattr("NumChannels"), self.get_nodeattr("PE")
        out_w = pool_shapes(self)[1][1]  # a running sum per output column and channel group
        return [Memory(pe * self.output_datatype().bitwidth(), out_w * (c // pe), asynchronous=True)]

    def lut_estimate(self, lut_inputs: int) -> int:
        bits = self.output_datatype().bitwidth()
        return int(round(LUT_CONTROL + self.get_nodeattr("PE") * bits * LUT_PER_ADDER_BIT))
