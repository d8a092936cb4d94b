"""MVTU: the matrix-vector-threshold unit, one per fully connected or (after a sliding window) conv layer.

Computes, for each of ``prod(numInputVectors)`` input vectors of ``MW`` elements, ``MH`` accumulators and
then, unless ``noActivation``, the integer thresholds of each output channel. In XNOR mode (binary input and
weights, bits) the accumulator is ``popcount(xnor(x, w))``; otherwise it is the integer dot product (the
multi-bit input layer: k-bit codes times bipolar or integer weights).

Folding: ``PE`` output channels and ``SIMD`` input elements per cycle, ``PE | MH`` and ``SIMD | MW``; one frame
takes ``prod(numInputVectors) * (MW / SIMD) * (MH / PE)`` cycles (FINN's MVAU schedule, Umuroglu et al.,
FPGA 2017, section 4.2). Weights sit in ``PE`` memories of ``(MW/SIMD) * (MH/PE)`` words of ``SIMD * w_bits``.
"""

from __future__ import annotations

import math

from onnx import helper
from qonnx.core.datatype import DataType

from bnnflow.hw import kernels
from bnnflow.hw.ops.base import HWOp, Memory, as_float, divisors

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
        }

    def make_shape_compatible_op(self, model):
        return helper.make_node("MatMul", [self.onnx_node.input[0], self.onnx_node.input[1]], [self.onnx_node.output[0]])

    def execute_node(self, context, graph) -> None:
        node = self.onnx_node
        mw = self.get_nodeattr("MW")
        x = context[node.input[0]]
        vectors = x.reshape(x.shape[0], *self.get_nodeattr("numInputVectors"), mw)
        weights = context[node.input[1]]
        if self.get_nodeattr("binaryXnorMode"):
            acc = kernels.xnor_popcount_matmul(vectors, weights)
        else:
            acc = kernels.int_matmul(vectors, weights)
        out = acc if self.get_nodeattr("noActivation") else kernels.multithreshold(acc, context[node.input[2]])
        context[node.output[0]] = as_float(out)

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

    def memories(self) -> list[Memory]:
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        depth = (self.get_nodeattr("MW") // simd) * (self.get_nodeattr("MH") // pe)
        mems = [Memory(simd * self.weight_bits(), depth, pe)]
        n_thr = self.num_thresholds()
        if n_thr:
            mems.append(Memory(n_thr * self.acc_bits(), self.get_nodeattr("MH") // pe, pe))
        return mems

    def lut_estimate(self, lut_inputs: int) -> int:
        pe, simd = self.get_nodeattr("PE"), self.get_nodeattr("SIMD")
        acc = self.acc_bits()
        if self.get_nodeattr("binaryXnorMode"):
            lanes = simd * LUT_PER_XNOR_BIT[lut_inputs]
        else:  # each lane negates or passes a k-bit code, then an adder tree sums the SIMD lanes
            in_bits = self.input_datatype().bitwidth() + self.weight_bits() - 1
            lanes = simd * in_bits + (simd - 1) * (in_bits + math.ceil(math.log2(simd)) if simd > 1 else 0)
        accumulate = acc * LUT_PER_ADDER_BIT
        compare = self.num_thresholds() * acc * LUT_PER_ADDER_BIT / 2  # comparators share the carry chain
        return int(round(pe * (lanes + accumulate + compare) + LUT_CONTROL))
