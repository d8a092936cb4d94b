"""MVTU: the matrix-vector-threshold unit, one per fully connected or (after a sliding window) conv layer.

Computes, for each of ``prod(numInputVectors)`` input vectors of ``MW`` elements, ``MH`` accumulators and
then, unless ``noActivation``, the integer thresholds of each output channel: the number of thresholds at or
below the accumulator, plus ``outputBias`` (the lowest code of a signed output). In XNOR mode (binary input and
weights, bits) the accumulator is the bipolar dot product ``2 * popcount(xnor(x, w)) - MW``; otherwise it is the
integer dot product (k-bit codes times bipolar or integer weights).

Zero padding of a binary map (``padCorrection``): the sliding window pads with bit 0 (-1), where the model
padded with a zero, so each output position (r, c) of a conv adds a correction per channel, the row
``correctionRows[r] * len(classes of columns) + correctionCols[c]`` of a small table (one row per border class of
the window: nine for a 3x3 window with pad 1), the last input.

Folding: ``PE`` output channels and ``SIMD`` input elements per cycle, ``PE | MH`` and ``SIMD | MW``; one frame
takes ``prod(numInputVectors) * (MW / SIMD) * (MH / PE)`` cycles (FINN's MVAU schedule, Umuroglu et al.,
FPGA 2017, section 4.2). Weights sit in ``PE`` memories of ``(MW/SIMD) * (MH/PE)`` words of ``SIMD * w_bits``.

Contract: XNOR mode takes BINARY inputs and weights, bits that the simulator packs and the RTL XNORs, so a
weight is 0 or 1; otherwise weights are integers of ``weightDataType`` (BIPOLAR: -1 or +1, which the RTL stores
as one bit) and inputs and weights fit 32 bits (the simulator's integer product). Without thresholds the RTL
emits the accumulator's low ``outputDataType`` bits, so that type must hold every reachable accumulator.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import (
    HWOp,
    Memory,
    as_float,
    bank_depth,
    divides,
    divisors,
    first_bad,
    fits_int32,
    frame,
    grouped,
    positive,
    threshold_compare_luts,
    threshold_memories,
    threshold_problems,
)

# LUT model constants (our own first-order model, in the spirit of FINN-R's resource models, Blott et al.,
# ACM TRETS 2018, section 5.1; checked against yosys utilisation by benchmarks/fpga.py):
LUT_PER_XNOR_BIT = {6: 0.5, 4: 1.0}  # an XNOR and its share of the popcount compressor per input bit
LUT_PER_ADDER_BIT = 1.0  # one LUT per bit of a ripple-carry adder stage (carry chain)
LUT_CONTROL = 60  # stream handshake, address counters and folding control per unit


class MVTU(HWOp):
    def get_nodeattr_types(self) -> dict:
        return {
            **super().get_nodeattr_types(),
            "MW": ("i", True, 0),
            "MH": ("i", True, 0),
            "PE": ("i", False, 1),
            "SIMD": ("i", False, 1),
            "binaryXnorMode": ("i", False, 0),
            "noActivation": ("i", False, 0),
            "numInputVectors": ("ints", False, []),
            "weightDataType": ("s", True, ""),
            "accDataType": ("s", True, ""),
            "outputBias": ("i", False, 0),
            "padCorrection": ("i", False, 0),
            "correctionRows": ("ints", False, []),
            "correctionCols": ("ints", False, []),
        }

    def make_shape_compatible_op(self, model):
        return helper.make_node("MatMul", [self.onnx_node.input[0], self.onnx_node.input[1]], [self.onnx_node.output[0]])

    def execute_node(self, context, graph) -> None:
        node = self.onnx_node
        context[node.output[0]] = as_float(self.compute(context[node.input[0]], *(context[n] for n in node.input[1:])))

    def compute(self, x, weights, *parameters):
        """The reference semantics on an input batch: accumulators, correction, thresholds (``kernels``)."""
        mw = self.get_nodeattr("MW")
        vectors = np.asarray(x).reshape(len(x), *self.get_nodeattr("numInputVectors"), mw)
        if self.get_nodeattr("binaryXnorMode"):
            acc = kernels.bipolar_dot(vectors, weights)
        else:
            acc = kernels.int_matmul(vectors, weights)
        if self.get_nodeattr("padCorrection"):
            acc = kernels.padding_correction(acc, parameters[-1], self.get_nodeattr("correctionRows"),
                                             self.get_nodeattr("correctionCols"))
        if self.get_nodeattr("noActivation"):
            return acc
        return kernels.multithreshold(acc, parameters[0], self.get_nodeattr("outputBias"))

    def datatype_attributes(self) -> list[str]:
        return [*super().datatype_attributes(), "weightDataType", "accDataType"]

    def attribute_problems(self) -> list[str]:
        problems = positive(self, "MW", "MH", "PE", "SIMD", "numInputVectors")
        problems += [f"has {name} = {self.get_nodeattr(name)}, not 0 or 1"
                     for name in ("binaryXnorMode", "noActivation", "padCorrection")
                     if self.get_nodeattr(name) not in (0, 1)]
        if self.get_nodeattr("padCorrection"):
            rows, cols = self.get_nodeattr("correctionRows"), self.get_nodeattr("correctionCols")
            vectors = self.get_nodeattr("numInputVectors")
            if len(vectors) != 2 or [len(rows), len(cols)] != vectors or min(rows + cols, default=-1) < 0:
                problems.append(f"corrects padding with {len(rows)} row and {len(cols)} column classes, but its "
                                f"output positions are {vectors}; each row and column needs a class >= 0")
        if problems:
            return problems
        problems = divides(self, "PE", "MH") + divides(self, "SIMD", "MW")
        in_type, w_type = self.input_datatype(), DataType[self.get_nodeattr("weightDataType")]
        if self.get_nodeattr("binaryXnorMode"):
            if (in_type.name, w_type.name) != ("BINARY", "BINARY"):
                problems.append(f"is in XNOR mode with {in_type.name} inputs and {w_type.name} weights; XNOR mode "
                                "takes BINARY (bits, 1 for +1) for both")
        else:
            problems += [f"has {name} = {dtype.name}, wider than the 32-bit integers the simulator multiplies"
                         for name, dtype in (("inputDataType", in_type), ("weightDataType", w_type))
                         if not fits_int32(dtype)]
        return problems

    def num_inputs(self) -> int:
        return 2 + (not self.get_nodeattr("noActivation")) + self.get_nodeattr("padCorrection")

    def stream_shapes(self) -> tuple[list[int], list[int]]:
        vectors = self.get_nodeattr("numInputVectors")
        return frame(vectors, self.get_nodeattr("MW")), frame(vectors, self.get_nodeattr("MH"))

    def parameter_problems(self, model) -> list[str]:
        node = self.onnx_node
        mw, mh = self.get_nodeattr("MW"), self.get_nodeattr("MH")
        weights = model.get_initializer(node.input[1])
        if weights is None:
            return [f"reads weights {node.input[1]}, which is not an initializer"]
        if weights.shape != (mw, mh):
            return [f"has weights {node.input[1]} of shape {list(weights.shape)}, not MW x MH = [{mw}, {mh}]"]
        w_type = DataType[self.get_nodeattr("weightDataType")]
        if self.get_nodeattr("binaryXnorMode"):
            ok = (weights == 0) | (weights == 1)
            rule = "XNOR weights are bits, 0 or 1"
        elif w_type.name == "BIPOLAR":
            ok = (weights == -1) | (weights == 1)
            rule = "BIPOLAR weights are -1 or +1"
        else:
            ok = (weights == np.round(weights)) & (weights >= w_type.min()) & (weights <= w_type.max())
            rule = f"weights are integers of weightDataType {w_type.name}"
        if not ok.all():
            return [f"has weight {first_bad(ok, weights)} in {node.input[1]}; {rule}"]
        if self.get_nodeattr("padCorrection"):
            table = model.get_initializer(node.input[-1])
            classes = (max(self.get_nodeattr("correctionRows")) + 1) * (max(self.get_nodeattr("correctionCols")) + 1)
            if table is None or table.shape != (classes, mh) or not np.array_equal(table, np.round(table)):
                return [f"has a padding correction {node.input[-1]} that is not an integer table of "
                        f"{classes} x {mh}"]
        if not self.get_nodeattr("noActivation"):
            return threshold_problems(model, node.input[2], mh, self.output_datatype(), self.get_nodeattr("outputBias"))
        low, high = self.accumulator_range(weights)
        out_type = self.output_datatype()
        if not (out_type.allowed(low) and out_type.allowed(high)):
            return [f"has accumulators in [{low}, {high}], which outputDataType {out_type.name} cannot hold (the RTL "
                    "keeps only that many low bits)"]
        return []

    def accumulator_range(self, weights: np.ndarray) -> tuple[int, int]:
        """The lowest and highest accumulator over all channels and inputs of the input datatype (a corrected
        XNOR accumulator is a dot product over fewer taps, so within the same range)."""
        if self.get_nodeattr("binaryXnorMode"):
            return -self.get_nodeattr("MW"), self.get_nodeattr("MW")
        w = weights.astype(np.float64)
        lo_in, hi_in = float(self.input_datatype().min()), float(self.input_datatype().max())
        return (int(np.minimum(w * lo_in, w * hi_in).sum(axis=0).min()),
                int(np.maximum(w * lo_in, w * hi_in).sum(axis=0).max()))

    def legal_foldings(self) -> list[dict[str, int]]:
        return [{"PE": pe, "SIMD": simd} for pe in divisors(self.get_nodeattr("MH"))
                for simd in divisors(self.get_nodeattr("MW"))]

    def get_exp_cycles(self) -> int:
        vectors = math.prod(self.get_nodeattr("numInputVectors"))
        mw, mh = self.get_nodeattr("MW"), self.get_nodeattr("MH")
        return vectors * (mw // self.get_nodeattr("SIMD")) * (mh // self.get_nodeattr("PE"))

    def weight_bits(self) -> int:
        dtype = DataType[self.get_nodeattr("weightDataType")]
        return dtype.bitwidth()

    def acc_bits(self) -> int:
        return DataType[self.get_nodeattr("accDataType")].bitwidth()

    def num_thresholds(self, model=None) -> int:
        if self.get_nodeattr("noActivation"):
            return 0
        return (1 << self.output_datatype().bitwidth()) - 1

    def memories(self, model=None) -> list[Memory]:
        """bnn_mvtu's memories. With the model, thresholds and corrections are as wide as the RTL's accumulator
        (from the weights' range) and each ROM says which of its bits vary (``rom_used_bits``); without it they are
        accDataType wide."""
        from bnnflow.hw.rtl.layers import mvtu_accumulator, rom_used_bits

        name = self.onnx_node.name
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        sf = self.get_nodeattr("MW") // simd
        nf = self.get_nodeattr("MH") // pe
        used = None
        acc = self.acc_bits()
        if model is not None and model.get_initializer(self.onnx_node.input[1]) is not None:
            used = rom_used_bits(model, self.onnx_node)
            acc = mvtu_accumulator(model, self.onnx_node, self)[0]
        # the weight ROM: words of all PE lanes' SIMD weights, in banks (``bank_depth``; the last one
        # shorter, a 1-word ROM 2 words deep)
        depth = sf * nf
        width = pe * simd * self.weight_bits()
        bank = bank_depth(width, depth)
        mems = grouped([Memory(width, max(2, min(bank, depth - start)), logic_when_shallow=True,
                               used_width=None if used is None else used[f"{name}_weights_{start // bank:02d}.hex"])
                        for start in range(0, depth, bank)])
        # the input double buffer: two vectors of SF words, each bank 2^ceil(log2 SF) words (2 at SF = 1)
        mems.append(Memory(simd * self.input_datatype().bitwidth(), 2 << max(1, (sf - 1).bit_length())))
        n_thr = self.num_thresholds()
        if n_thr:
            mems += threshold_memories(n_thr, acc, self.get_nodeattr("MH"), pe, used=used, name=name)
        if self.get_nodeattr("padCorrection"):
            # the corrections, a word of PE lanes per border class and channel fold, and the first word of each
            # output row's and column's class (read asynchronously: logic)
            rows, cols = self.get_nodeattr("correctionRows"), self.get_nodeattr("correctionCols")
            words = (max(rows) + 1) * (max(cols) + 1) * nf
            address = max(1, (words - 1).bit_length())
            mems += [Memory(pe * acc, words, used_width=None if used is None else used[f"{name}_corrections.hex"]),
                     Memory(address, len(rows), asynchronous=True), Memory(address, len(cols), asynchronous=True)]
        return mems

    def lut_estimate(self, lut_inputs: int) -> int:
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        acc = self.acc_bits()
        if self.get_nodeattr("binaryXnorMode"):
            lanes = simd * LUT_PER_XNOR_BIT[lut_inputs]
        else:  # each lane negates or passes a k-bit code, then an adder tree sums the SIMD lanes
            in_bits = self.input_datatype().bitwidth() + self.weight_bits() - 1
            lanes = simd * in_bits + (simd - 1) * (in_bits + math.ceil(math.log2(simd)) if simd > 1 else 0)
        accumulate = acc * LUT_PER_ADDER_BIT * (1 + self.get_nodeattr("padCorrection"))  # and the correction
        compare = threshold_compare_luts(self.num_thresholds(), acc, LUT_PER_ADDER_BIT)
        return int(round(pe * (lanes + accumulate + compare) + LUT_CONTROL))
