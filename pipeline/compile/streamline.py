"""Streamlining: quantized QONNX in, the same function as an integer graph of standard ONNX ops out.

The result (``streamlined.onnx``) takes the same float input and gives the same float output as ``model.qonnx``;
in between, every tensor of the accelerator's part is an integer: accumulators (``Conv`` / ``MatMul`` on codes),
integer ``MultiThreshold``s, pools, residual adds of codes, padding corrections, in model.qonnx's own (NCHW)
layout. ``LowerToIntegers`` (``lowering.py``) does the work; its metadata names the accelerator's input and
output tensors, which the dataflow conversion maps onto hardware units."""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.infer_shapes import InferShapes

from bnnflow.pipeline.compile.lowering import LowerToIntegers


def streamline_model(model: ModelWrapper) -> ModelWrapper:
    """QONNX (cleaned) to the streamlined graph; raises ``UnsupportedGraphError`` for what it cannot compile."""
    model = model.transform(InferShapes())
    return model.transform(LowerToIntegers()).transform(InferShapes())
