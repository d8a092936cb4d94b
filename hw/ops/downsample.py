"""Downsample: every ``Stride``-th pixel of a channels-last map from ``Offset``, ``OutDim`` per axis: the
strided subsampling of an option-A shortcut (He et al.'s ResNet, the CIFAR ResNet-20's ``x[:, :, ::2, ::2]``).

``PE`` channels per cycle (``PE | C``): it reads every input pixel and keeps the chosen ones, ``H * W * C / PE``
cycles per frame; no memory.
"""

from __future__ import annotations

from onnx import helper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import PixelStreamOp, as_float, divides, pairs, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL


class Downsample(PixelStreamOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "NumChannels": ("i", True, 0),
            "ImgDim": ("ints", True, []),
            "OutDim": ("ints", True, []),
            "Offset": ("ints", False, [0, 0]),
            "Stride": ("ints", True, []),
            "PE": ("i", False, 1),
        }

    def make_shape_compatible_op(self, model):
        # a 1x1 pool of the same stride: the output size of a subsampling from offset 0 to the map's end
        return getCustomOp(helper.make_node(
            "MaxPoolNHWC", [self.onnx_node.input[0]], [self.onnx_node.output[0]], domain="qonnx.custom_op.general",
            kernel_shape=[1, 1], strides=self.get_nodeattr("Stride"), pads=[0, 0, 0, 0])).make_shape_compatible_op(model)

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "NumChannels", "PE") + pairs(self, "ImgDim", "OutDim", "Stride")
        if problems:
            return problems
        (h, w), (oh, ow) = self.get_nodeattr("ImgDim"), self.get_nodeattr("OutDim")
        (oy, ox), (sy, sx) = self.get_nodeattr("Offset"), self.get_nodeattr("Stride")
        if min(oy, ox) < 0 or oy + sy * (oh - 1) >= h or ox + sx * (ow - 1) >= w:
            problems.append(f"takes {[oh, ow]} pixels every {[sy, sx]} from {[oy, ox]}, beyond the {[h, w]} map")
        if self.get_nodeattr("outputDataType") != self.get_nodeattr("inputDataType"):
            problems.append("changes the datatype of the values it passes")
        return problems + divides(self, "PE", "NumChannels")

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        c = self.get_nodeattr("NumChannels")
        return [*self.get_nodeattr("ImgDim"), c], [*self.get_nodeattr("OutDim"), c]

    def execute_node(self, context, graph) -> None:
        out = kernels.downsample(context[self.onnx_node.input[0]], tuple(self.get_nodeattr("Offset")),
                                 tuple(self.get_nodeattr("Stride")), tuple(self.get_nodeattr("OutDim")))
        context[self.onnx_node.output[0]] = as_float(out)

    def lut_estimate(self, lut_inputs: int) -> int:
        # per axis: position, next kept position and kept count counters, and their two compares
        h, w = self.get_nodeattr("ImgDim")
        return LUT_CONTROL + 5 * (h.bit_length() + w.bit_length())
