"""Dataflow hardware: hardware ops, conversion, folding, estimates (and, as they land, the simulator, RTL
and FPGA toolchains).

The ONNX domain of the hardware ops is ``bnnflow.hw``: qonnx imports this module to find them in
``custom_op``.
"""

from bnnflow.hw.ops import custom_op  # noqa: F401
from bnnflow.hw.ops.base import DOMAIN  # noqa: F401
