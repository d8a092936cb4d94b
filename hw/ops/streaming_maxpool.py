"""StreamingMaxPool: max-pooling on a channels-last integer or binary stream (an OR on bits).

It reads each input pixel once, ``PE`` channels per cycle (``PE | C``): ``H * W * C / PE`` cycles per frame, and
keeps one output row of running maxima. Contract: the window fits the image (floor-mode pooling drops what is
left over) and values keep their datatype; the RTL takes only stride = kernel, which its generator checks.
"""

from __future__ import annotations

from onnx import helper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import HWOp, Memory, PixelStreamOp, as_float, divides, pairs, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL
from bnnflow.hw.ops.sliding_window import window_problems


class StreamingMaxPool(PixelStreamOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "NumChannels": ("i", True, 0),
            "ImgDim": ("ints", True, []),  # H, W
            "PoolDim": ("ints", True, []),  # kh, kw
            "Stride": ("ints", True, []),
            "PE": ("i", False, 1),
        }

    def make_shape_compatible_op(self, model):
        return pool_shape_op(self, model)

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE") + pairs(self, "ImgDim", "PoolDim", "Stride")
        return problems or divides(self, "PE", "NumChannels") + window_problems(self, "ImgDim", "PoolDim")

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        return pool_shapes(self)

    def execute_node(self, context, graph) -> None:
        x = context[self.onnx_node.input[0]]
        out = kernels.maxpool(x, tuple(self.get_nodeattr("PoolDim")), tuple(self.get_nodeattr("Stride")))
        context[self.onnx_node.output[0]] = as_float(out)

    def memories(self, model=None) -> list[Memory]:
        c, pe = self.get_nodeattr("NumChannels"), self.get_nodeattr("PE")
        out_w = self.get_nodeattr("ImgDim")[1] // self.get_nodeattr("Stride")[1]
        return [Memory(pe * self.input_datatype().bitwidth(), out_w * (c // pe), asynchronous=True)]

    def lut_estimate(self, lut_inputs: int) -> int:
        bits = self.input_datatype().bitwidth()
        return int(LUT_CONTROL + self.get_nodeattr("PE") * bits * 2)  # a comparator and a register mux per lane


def pool_shapes(op: HWOp) -> tuple[list[int], list[int]]:
    """A pool's input and output frames: (H, W, C) and (OH, OW, C) in floor mode."""
    (h, w), (kh, kw), (sh, sw) = op.get_nodeattr("ImgDim"), op.get_nodeattr("PoolDim"), op.get_nodeattr("Stride")
    c = op.get_nodeattr("NumChannels")
    return [h, w, c], [(h - kh) // sh + 1, (w - kw) // sw + 1, c]


def pool_shape_op(op: HWOp, model):
    """qonnx's MaxPoolNHWC of the same window: the shapes of any pool's stream."""
    kh, kw = op.get_nodeattr("PoolDim")
    return _shape_op_of(model, helper.make_node(
        "MaxPoolNHWC", [op.onnx_node.input[0]], [op.onnx_node.output[0]], domain="qonnx.custom_op.general",
        kernel_shape=[kh, kw], strides=op.get_nodeattr("Stride"), pads=[0, 0, 0, 0],
    ))


def _shape_op_of(model, node):
    """qonnx's own shape-compatible op for an equivalent qonnx node (onnx shape inference knows no custom op)."""
    return getCustomOp(node).make_shape_compatible_op(model)
