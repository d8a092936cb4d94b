"""SlidingWindow: the convolution input generator, turning a channels-last feature map into one patch per
output pixel for the MVTU that follows (FINN's ConvolutionInputGenerator).

It emits ``OH * OW`` patches of ``kh * kw * C`` values of the map padded by ``Padding`` (top, left, bottom,
right) with ``PadValue`` (for bits: the bit; the MVTU after it corrects a zero padding), ``SIMD`` values per
cycle (``SIMD | C``, and equal to the consuming MVTU's SIMD). As the RTL (``hw/rtl/verilog/bnn_swg.v``) builds
it, it holds a ring of ``ring_rows()`` input rows (``kh + sh``, a little more for some shapes) and generates the
padding instead of reading it: while an output row's patches are read from its kh rows, the next rows (of the
next frame too) stream into the others. Cycles per frame: about the longer of the two,
``max(H * W * C / SIMD, OH * OW * kh * kw * C / SIMD)``, exactly what ``line_buffer_cycles`` models; memory: the
ring, ``ring_rows() * W * C / SIMD`` words of ``SIMD`` values.

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
        return line_buffer_cycles(self.get_nodeattr("IFMDim"), self.get_nodeattr("OFMDim"),
                                  self.get_nodeattr("ConvKernelDim"), self.get_nodeattr("Stride"),
                                  self.get_nodeattr("Padding")[0], c // simd, self.ring_rows())

    def ring_rows(self) -> int:
        """Input rows the RTL's line buffer holds: kh + sh, so the next sh rows stream in while an output row reads
        its kh, or more when a frame's turn needs more: its last output row keeps the rows from its first to the
        map's end while the next frame's first output row needs kh - top new ones. One row more where reading and
        writing a row take about as long, so the two sides' handshakes do not add up row after row (when that is
        more than 1 % faster)."""
        (h, w), (oh, ow) = self.get_nodeattr("IFMDim"), self.get_nodeattr("OFMDim")
        (kh, kw), (sh, sw) = self.get_nodeattr("ConvKernelDim"), self.get_nodeattr("Stride")
        top = self.get_nodeattr("Padding")[0]
        first = min(max(kh - top, 0), h)
        last = h - min(max((oh - 1) * sh - top, 0), h)
        rows = max(kh + sh, first + last)
        shape = ([h, w], [oh, ow], [kh, kw], [sh, sw], top, self.get_nodeattr("IFMChannels") // self.get_nodeattr("SIMD"))
        return rows + (line_buffer_cycles(*shape, rows + 1) < 0.99 * line_buffer_cycles(*shape, rows))

    def memories(self, model=None) -> list[Memory]:
        # The ring of kh + sh input rows, C values of the input width per pixel, read SIMD values at a time.
        c, simd = self.get_nodeattr("IFMChannels"), self.get_nodeattr("SIMD")
        w = self.get_nodeattr("IFMDim")[1]
        return [Memory(simd * self.input_datatype().bitwidth(), self.ring_rows() * w * (c // simd))]

    def lut_estimate(self, lut_inputs: int) -> int:
        # bnn_swg's control: the patch-order counters, padded coordinates, ring addresses (a dozen registers of the
        # address width with their adders) and the two handshakes' comparisons; yosys's synth_ecp5 maps it to
        # about 200 + 25 * address bits LUT4s (carry cells counted as two), from C = 2 on 8x8 maps to C = 64 on
        # 30x30, whatever the width; six-input LUTs take about three quarters. Per lane the output FIFO's LUT RAM.
        c, simd = self.get_nodeattr("IFMChannels"), self.get_nodeattr("SIMD")
        address = max(1, math.ceil(math.log2(self.ring_rows() * self.get_nodeattr("IFMDim")[1] * (c // simd))))
        control = 200 + 25 * address
        if lut_inputs >= 6:
            control = control * 3 // 4
        return int(control + simd * self.input_datatype().bitwidth())


def line_buffer_cycles(image: list[int], output: list[int], kernel: list[int], stride: list[int], top: int,
                       cf: int, nr: int, frames: int = 8) -> int:
    """Cycles per frame of bnn_swg in steady state (input always offered, output always taken): a row-level model
    of its two handshakes, run over ``frames`` frames.

    Input row g of the stream (counted over frames) takes ``W * cf`` cycles and starts once the previous one is
    written and two cycles after the reader is on an output row that no longer needs the row g - nr whose slot
    it takes (``nr`` rows in the ring) and whose frame is at most one before g's. Output row r takes
    ``OW * kh * kw * cf`` cycles and starts once the previous one is issued and the cycle after the last input
    row it reads is written (a row of one beat: also a cycle after the previous one). The last frames' mean
    spacing is the window's cycles per frame, rounded: a map so small that it alternates between two spacings
    (a 1x1 map through a 1x1 kernel) is not met exactly."""
    (h, w), (oh, ow), (kh, kw), (sh, _) = image, output, kernel, stride
    beats_in, beats_out = w * cf, ow * kh * kw * cf

    def first_row(oy: int) -> int:  # the first input row of its frame output row oy (or any after it) reads
        return min(max(oy * sh - top, 0), h)

    def rows_needed(oy: int) -> int:  # input rows of its frame written before output row oy starts
        return min(max(oy * sh - top + kh, 0), h)

    def frees(g: int, rr: int) -> bool:  # reader on output row rr (global): may input row g (global) be written?
        (frame_w, y), (frame_r, oy) = divmod(g, h), divmod(rr, oh)
        ahead = frame_w - frame_r
        return ahead < 0 or (ahead <= 1 and y + ahead * h < first_row(oy) + nr)

    rows_in, rows_out = frames * h, frames * oh
    w_end = [0] * rows_in  # the cycle after each input row's last beat
    r_end = [0] * rows_out  # the cycle after each output row's last beat
    g = r = free = 0  # next input row, next output row, the first output row that frees input row g's slot
    while r < rows_out:
        if g < rows_in:
            while free <= r and not frees(g, free):
                free += 1
            if free <= r:  # the reader is (or was) on that row: write input row g
                start = max(w_end[g - 1] if g else 0, r_end[free - 1] + 2 if free else 0)
                w_end[g] = start + beats_in
                g += 1
                continue
        frame_r, oy = divmod(r, oh)
        last = frame_r * h + rows_needed(oy) - 1  # the last input row output row r reads (global)
        if last >= g:
            raise AssertionError(f"the line buffer model stalls: output row {r} needs input row {last}")
        start = max(r_end[r - 1] + (beats_out == 1) if r else 0, w_end[last] + 1 if last >= 0 else 0)
        r_end[r] = start + beats_out
        r += 1
    ends = [r_end[(f + 1) * oh - 1] for f in range(frames)]
    return max(1, round((ends[-1] - ends[frames // 2]) / (frames - 1 - frames // 2)))


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
