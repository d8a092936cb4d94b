"""The ``int8`` edge variant: the binary layers as int8 QDQ, so that ONNX Runtime runs them with its int8 kernels.

ONNX Runtime's own static quantizer (``onnxruntime.quantization.quantize_static``, QDQ format, symmetric, weights
per channel) quantizes only the binary Conv / MatMul nodes of the reference model, calibrated on the run's own
inputs; ONNX Runtime then fuses each ``DequantizeLinear -> Conv -> QuantizeLinear`` into QLinearConv (QLinearMatMul
for matmuls). The +-1 inputs and weights are exact in int8, but the accumulator (up to +-K for a fan-in K, e.g.
576 for a 3x3x64 conv) is requantized to 8 bits on the way out, so the variant is not exact: its accuracy change
is measured on the test set, never assumed.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.pipeline.edge.variants import binary_source


def binary_layers(model: ModelWrapper) -> list[str]:
    """Names of the Conv / MatMul nodes whose input is a binary activation and whose weights are constants."""
    return [node.name for node in model.graph.node
            if node.op_type in ("Conv", "MatMul") and model.get_initializer(node.input[1]) is not None
            and binary_source(model, node.input[0]) is not None]


def int8_model(reference: ModelWrapper, calibration: np.ndarray, path: Path) -> int:
    """Write the int8 variant of ``reference`` to ``path``, calibrated on ``calibration`` (N, ...); returns how
    many layers were quantized."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    layers = binary_layers(reference)
    name = reference.graph.input[0].name
    shape = [1, *reference.get_tensor_shape(name)[1:]]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.samples = iter(calibration)

        def get_next(self) -> dict[str, np.ndarray] | None:
            sample = next(self.samples, None)
            return None if sample is None else {name: sample.reshape(shape).astype(np.float32)}

    with tempfile.TemporaryDirectory(prefix="bnnflow-int8-") as tmp:
        source = Path(tmp) / "reference.onnx"
        reference.save(str(source))
        # the quantizer logs a hint to pre-process the model on the root logger: ours is shape-inferred already
        logging.disable(logging.WARNING)
        try:
            quantize_static(str(source), str(path), Reader(), quant_format=QuantFormat.QDQ,
                            nodes_to_quantize=layers, per_channel=True, activation_type=QuantType.QInt8,
                            weight_type=QuantType.QInt8,
                            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True})
        finally:
            logging.disable(logging.NOTSET)
    return len(layers)
