"""Dataflow hardware: hardware ops, conversion, folding, estimates, the bit-exact simulator, the RTL generator and
the FPGA toolchains (open flow and FINN).

The ONNX domain of the hardware ops is ``bnnflow.hw``: qonnx imports this module to find them in
``custom_op``.
"""

from bnnflow.hw.ops import custom_op  # noqa: F401
from bnnflow.hw.ops.base import DOMAIN  # noqa: F401
