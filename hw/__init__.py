"""Dataflow hardware: hardware ops, folding, estimates, the bit-exact simulator, RTL and FPGA toolchains."""
