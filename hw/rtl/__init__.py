"""The RTL backend: Verilog for a dataflow graph, Verilator cosimulation, and the UART board wrapper."""
