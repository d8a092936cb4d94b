"""SlidingWindow: the convolution input generator, turning a channels-last feature map into one patch per
output pixel for the MVTU that follows (FINN's ConvolutionInputGenerator).

It emits ``OH * OW`` patches of ``kh * kw * C`` values of the map padded by ``Padding`` (top, left, bottom,
right) with ``PadValue`` (for bits: the bit; the MVTU after it corrects a zero padding), ``SIMD`` values per
cycle (``SIMD | C``, and equal to the consuming MVTU's SIMD). As the RTL (``hw/rtl/verilog/bnn_swg.v``) builds
it, it holds the whole input map in one of two banks: the next frame streams in while the current one's patches
are read out. Cycles per frame: the longer of the two, ``max(H * W * C / SIMD, OH * OW * kh * kw * C / SIMD)``;
memory: two maps.

Contract: the kernel fits the padded map and ``OFMDim`` is ``(IFMDim + padding - k) // stride + 1``, which the
kernels compute from the map while the RTL takes ``OFMDim`` as given; values pass through unchanged (the pad value
is one of the input datatype's), so the output datatype is the input's.
"""

from __future__ import annotations

import math

from onnx import helper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import HWOp, Memory, as_float, divides, divisors, pairs, positive
from bnnflow.hw.ops.mvtu import LUT_CONTROL


class SlidingWindow(HWOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "IFMChannels": ("i", True, 0),
            "IFMDim": ("ints", True, []),  # H, W
            "OFMDim": ("ints", True, []),  # OH, OW
            "ConvKernelDim": ("ints", True, []),  # kh, kw
            "Stride": ("ints", True, []),
            "SIMD": ("i", False, 1),
            "Padding": ("ints", False, [0, 0, 0, 0]),  # top, left, bottom, right
            "PadValue": ("i", False, 0),
        }

    def make_shape_compatible_op(self, model):
        # The same output shape as qonnx's Im2Col, which computes the identical patches.
        kh, kw = self.get_nodeattr("ConvKernelDim")
        h, w = self.get_nodeattr("IFMDim")
        return _shape_op_of(model, helper.make_node(
            "Im2Col", [self.onnx_node.input[0]], [self.onnx_node.output[0]], domain="qonnx.custom_op.general",
            kernel_size=[kh, kw], stride=self.get_nodeattr("Stride"), pad_amount=self.get_nodeattr("Padding"),
            input_shape=str((1, h, w, self.get_nodeattr("IFMChannels"))),
        ))

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "IFMChannels", "SIMD") + pairs(self, "IFMDim", "OFMDim", "ConvKernelDim", "Stride")
        if problems:
            return problems
        padding = self.get_nodeattr("Padding")
        if len(padding) != 4 or min(padding) < 0:
            return [f"has Padding = {padding}, not four amounts >= 0 (top, left, bottom, right)"]
        if any(padding) and not self.input_datatype().allowed(self.get_nodeattr("PadValue")):
            return [f"pads with {self.get_nodeattr('PadValue')}, which is no {self.input_datatype().name} value"]
        return divides(self, "SIMD", "IFMChannels") + window_problems(self, "IFMDim", "ConvKernelDim", "OFMDim",
                                                                       padding)

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        kh, kw = self.get_nodeattr("ConvKernelDim")
        c = self.get_nodeattr("IFMChannels")
        return [*self.get_nodeattr("IFMDim"), c], [*self.get_nodeattr("OFMDim"), kh * kw * c]

    def execute_node(self, context, graph) -> None:
        x = context[self.onnx_node.input[0]]
        out = kernels.sliding_window(x, tuple(self.get_nodeattr("ConvKernelDim")), tuple(self.get_nodeattr("Stride")),
                                     tuple(self.get_nodeattr("Padding")), self.get_nodeattr("PadValue"))
        context[self.onnx_node.output[0]] = as_float(out)

    def legal_foldings(self) -> list[dict[str, int]]:
        return [{"SIMD": simd} for simd in divisors(self.get_nodeattr("IFMChannels"))]

    def get_exp_cycles(self) -> int:
        c, simd = self.get_nodeattr("IFMChannels"), self.get_nodeattr("SIMD")
        kh, kw = self.get_nodeattr("ConvKernelDim")
        oh, ow = self.get_nodeattr("OFMDim")
        h, w = self.get_nodeattr("IFMDim")
        return max(h * w, oh * ow * kh * kw) * (c // simd)  # the padding is generated, not streamed in

    def memories(self) -> list[Memory]:
        # Two banks of the whole map, C values of the input width per pixel, read SIMD values at a time.
        c, simd = self.get_nodeattr("IFMChannels"), self.get_nodeattr("SIMD")
        h, w = self.get_nodeattr("IFMDim")
        bits = self.input_datatype().bitwidth()
        return [Memory(simd * bits, 2 * h * w * (c // simd))]

    def lut_estimate(self, lut_inputs: int) -> int:
        # Address generation (counters over kh, kw, OH, OW, C/SIMD) plus an output multiplexer per lane.
        c, simd = self.get_nodeattr("IFMChannels"), self.get_nodeattr("SIMD")
        counters = 5 * max(1, math.ceil(math.log2(max(self.get_nodeattr("IFMDim")) * c)))
        mux = simd * self.input_datatype().bitwidth()
        return int(LUT_CONTROL + counters + mux)


def window_problems(op: HWOp, image: str, kernel: str, output: str | None = None,
                    padding: list[int] = (0, 0, 0, 0)) -> list[str]:
    """A window op's rules: the kernel fits the (padded) image, ``output`` (when given) is the output size, and
    the values keep their datatype."""
    (h, w), (kh, kw), (sh, sw) = op.get_nodeattr(image), op.get_nodeattr(kernel), op.get_nodeattr("Stride")
    h, w = h + padding[0] + padding[2], w + padding[1] + padding[3]
    if kh > h or kw > w:
        return [f"has {kernel} = {[kh, kw]}, larger than {image} = {[h, w]}"]
    problems = []
    expected = [(h - kh) // sh + 1, (w - kw) // sw + 1]
    if output is not None and op.get_nodeattr(output) != expected:
        problems.append(f"has {output} = {op.get_nodeattr(output)}, but {image} {[h, w]}, {kernel} {[kh, kw]} and "
                        f"Stride {[sh, sw]} make {expected}")
    if op.get_nodeattr("outputDataType") != op.get_nodeattr("inputDataType"):
        problems.append(f"turns {op.get_nodeattr('inputDataType')} into {op.get_nodeattr('outputDataType')}, but "
                        "a window passes its values unchanged")
    return problems


def _shape_op_of(model, node):
    """qonnx's own shape-compatible op for an equivalent qonnx node (onnx shape inference knows no custom op)."""
    return getCustomOp(node).make_shape_compatible_op(model)
