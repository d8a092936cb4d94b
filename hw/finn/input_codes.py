"""Give FINN a model that takes the input layer's integer codes, as FINN's own examples do.

bnnflow's input quantizer is unsigned (8-bit codes, scale 1/255: raw pixels are the codes), and FINN's
QONNX-to-FINN conversion accepts only signed Quant nodes as identity activations ("FINN only supports signed
Quant nodes for identity activations"). For inputs that already are integer codes, the Quant node is exactly a
multiplication by its scale, so it becomes that Mul and the graph input is annotated UINT<bits>: FINN then takes
the codes straight into the first layer (finn-examples do the same with a ToTensor pre-processing step and a
UINT8 input annotation).
"""

from __future__ import annotations

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

#: ops between the graph input and its quantizer that move values without changing them
SHAPE_OPS = ("Flatten", "Reshape", "Transpose")


def input_quant(model: ModelWrapper):
    """The unsigned, zero-point-free Quant node fed (through shape ops only) by the graph input, or None."""
    node = model.find_consumer(model.graph.input[0].name)
    while node is not None and node.op_type in SHAPE_OPS:
        node = model.find_consumer(node.output[0])
    if node is None or node.op_type != "Quant":
        return None
    scale, zeropt = model.get_initializer(node.input[1]), model.get_initializer(node.input[2])
    signed = get_by_name(node.attribute, "signed")
    rounding = get_by_name(node.attribute, "rounding_mode")
    if scale is None or zeropt is None or np.size(scale) != 1 or np.any(zeropt != 0):
        return None
    if signed is None or signed.i != 0 or (rounding is not None and rounding.s.decode() != "ROUND"):
        return None
    return node


class InputQuantToCodes(Transformation):
    """Replace the unsigned input Quant by a Mul with its scale; the graph input becomes UINT<bits> codes."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        node = input_quant(model)
        if node is None:
            return model, False
        bits = int(model.get_initializer(node.input[3]))
        node.op_type = "Mul"
        node.domain = ""
        del node.input[2:]
        del node.attribute[:]
        model.set_tensor_datatype(model.graph.input[0].name, DataType[f"UINT{bits}"])
        return model, False


def input_codes(model: ModelWrapper, inputs: np.ndarray) -> np.ndarray | None:
    """The codes the input Quant of ``model`` makes of ``inputs`` (half-to-even rounding, clipped), or None."""
    node = input_quant(model)
    if node is None:
        return None
    scale = float(model.get_initializer(node.input[1]))
    bits = int(model.get_initializer(node.input[3]))
    narrow = get_by_name(node.attribute, "narrow")
    top = 2**bits - 1 - (narrow.i if narrow is not None else 0)
    return np.clip(np.round(inputs / scale), 0, top).astype(np.float32)
