"""The base class of bnnflow's hardware ops (ONNX domain ``bnnflow.hw``).

A hardware op is a qonnx ``CustomOp``: a node of ``dataflow.onnx`` whose attributes hold its shape and its
folding (how many processing elements, PE, and input lanes, SIMD, work in parallel), and whose initializers
hold weights and thresholds. ``execute_node`` runs the op's reference semantics (``bnnflow.hw.kernels``), so a
dataflow graph runs in qonnx's own executor. The estimates are exact functions of the attributes; an op that
does not define one raises ``NotImplementedError`` instead of reporting 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.custom_op.base import CustomOp

DOMAIN = "bnnflow.hw"


@dataclass(frozen=True)
class Memory:
    """``count`` identical on-chip memories of an op: ``width`` bits read per cycle, ``depth`` words each."""

    width: int
    depth: int
    count: int = 1

    @property
    def bits(self) -> int:
        """Bits of all ``count`` memories together."""
        return self.width * self.depth * self.count


class HWOp(CustomOp):
    """Common attributes and helpers; subclasses declare their own attributes and estimates."""

    def get_nodeattr_types(self) -> dict:
        return {"inputDataType": ("s", True, ""), "outputDataType": ("s", True, "")}

    def input_datatype(self) -> DataType:
        return DataType[self.get_nodeattr("inputDataType")]

    def output_datatype(self) -> DataType:
        return DataType[self.get_nodeattr("outputDataType")]

    def infer_node_datatype(self, model) -> None:
        model.set_tensor_datatype(self.onnx_node.output[0], self.output_datatype())

    def verify_node(self) -> list[str]:
        return []

    def folding(self) -> dict[str, int]:
        """The op's folding attributes (PE / SIMD) and their values."""
        return {name: self.get_nodeattr(name) for name in ("PE", "SIMD") if name in self.get_nodeattr_types()}

    def legal_foldings(self) -> list[dict[str, int]]:
        """Every legal value combination of the folding attributes."""
        raise NotImplementedError(f"{type(self).__name__} does not list its legal foldings")

    def get_exp_cycles(self) -> int:
        """Clock cycles to process one frame at the current folding (the op's initiation interval)."""
        raise NotImplementedError(f"{type(self).__name__} has no cycle model")

    def lut_estimate(self, lut_inputs: int) -> int:
        """Logic LUTs of ``lut_inputs`` inputs (6 on Xilinx 7-series/UltraScale, 4 on ECP5/iCE40)."""
        raise NotImplementedError(f"{type(self).__name__} has no LUT model")

    def memories(self) -> list[Memory]:
        """The op's parameter memories (weights, thresholds) at the current folding; [] when it has none."""
        return []


def divisors(n: int) -> list[int]:
    """The legal parallelism values of a dimension of size ``n``: its divisors, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def as_float(values: np.ndarray) -> np.ndarray:
    """qonnx's executor keeps every tensor in float32 containers; integers below 2**24 stay exact."""
    return np.asarray(values).astype(np.float32)
