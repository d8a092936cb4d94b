"""bnnflow: binary neural networks from quantization-aware training to FPGA bitstreams and edge runtimes.

The code lives in three subpackages that mirror the pipeline's stages: ``bnnflow.models`` (networks, binary
quantizers), ``bnnflow.pipeline`` (config, data, train, export, CLI) and ``bnnflow.hw`` (dataflow hardware).
"""

__version__ = "0.1.0"
