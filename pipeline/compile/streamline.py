"""The streamlining recipe: 1-bit QONNX in, a graph of qonnx standard ops with integer thresholds out.

The result (``streamlined.onnx``) takes the same float input and gives the same float output as
``model.qonnx``; in between, every layer is an integer accumulator (``MatMul`` on integer codes or
``XnorPopcountMatMul`` on bits) followed by an integer ``MultiThreshold``, in channels-last layout, which is what
the dataflow conversion maps onto hardware units. Each step is a qonnx ``Transformation``; ours are in this
package, one per module, and the recipe below is their order.
"""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.bipolar_to_xnor import ConvertBipolarMatMulToXnorPopcount
from qonnx.transformation.extract_quant_scale_zeropt import ExtractQuantScaleZeroPt
from qonnx.transformation.infer_datatypes import InferDataTypes
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.transformation.lower_convs_to_matmul import LowerConvsToMatMul
from qonnx.util.basic import get_by_name

from bnnflow.errors import UnsupportedGraphError
from bnnflow.nodes import node_ref
from bnnflow.pipeline.compile.absorb_affine_into_threshold import AbsorbAffineIntoThreshold
from bnnflow.pipeline.compile.batchnorm_to_scale_shift import BatchNormToScaleShift
from bnnflow.pipeline.compile.convert_bipolar_quant_to_threshold import ConvertBipolarQuantToThreshold
from bnnflow.pipeline.compile.fold_weight_quant import FoldWeightQuant
from bnnflow.pipeline.compile.move_scalar_mul_downstream import MoveScalarMulDownstream
from bnnflow.pipeline.compile.move_transpose_downstream import MoveTransposeDownstream

SUPPORTED_INPUT_OPS = {
    "Quant", "BipolarQuant", "MatMul", "Conv", "BatchNormalization", "MaxPool", "Flatten", "Reshape", "Transpose",
    "Mul", "Add", "Sub", "Div",
}


def _infer(model: ModelWrapper) -> ModelWrapper:
    return model.transform(InferShapes()).transform(InferDataTypes())


def _check_input(model: ModelWrapper) -> None:
    """Refuse what streamlining cannot make exact, naming the node and what would make it compile."""
    for node in model.graph.node:
        if node.op_type not in SUPPORTED_INPUT_OPS:
            raise UnsupportedGraphError(
                f"node {node_ref(model, node)} is not supported by the compiler; binary layers may only be "
                "separated by BatchNorm, max-pooling and a quantizer (QuantIdentity / QuantReLU with bit_width 1)"
            )
        if node.op_type == "Conv":
            group = get_by_name(node.attribute, "group")
            dilations = get_by_name(node.attribute, "dilations")
            if (group is not None and group.i != 1) or (dilations is not None and set(dilations.ints) != {1}):
                raise UnsupportedGraphError(f"node {node_ref(model, node)} is grouped or dilated; use group=1, dilation=1")


def _check_quantizers(model: ModelWrapper) -> None:
    """After the weight and bipolar quantizers are folded, only the input quantizer may remain."""
    for node in model.graph.node:
        if node.op_type == "Quant" and model.find_producer(node.input[0]) is not None:
            upstream = model.find_upstream(node.input[0], lambda n: n.op_type in ("MatMul", "Conv", "MultiThreshold"))
            if upstream:
                raise UnsupportedGraphError(
                    f"node {node_ref(model, node)} is a multi-bit activation between layers; the compiler supports "
                    "multi-bit inputs and 1-bit activations: set act_bits=1"
                )


def _check_padding(model: ModelWrapper) -> None:
    """A zero-padded window over bipolar values would insert 0, which is neither -1 nor +1."""
    for node in model.graph.node:
        if node.op_type == "Im2Col":
            pads = get_by_name(node.attribute, "pad_amount")
            if pads is not None and any(pads.ints) and model.get_tensor_datatype(node.input[0]).bitwidth() == 1:
                raise UnsupportedGraphError(
                    f"node {node_ref(model, node)} pads a binary feature map with zeros, which has no bipolar value; "
                    "use unpadded convolutions (padding=0) after the first layer"
                )


def _complete_conv_attributes(model: ModelWrapper) -> None:
    """Write out ONNX's defaults for Conv attributes that qonnx's lowering reads without a default."""
    from onnx import helper

    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        rank = len(get_by_name(node.attribute, "kernel_shape").ints)
        defaults = {"group": 1, "dilations": [1] * rank, "strides": [1] * rank, "pads": [0] * (2 * rank)}
        for name, value in defaults.items():
            if get_by_name(node.attribute, name) is None:
                node.attribute.append(helper.make_attribute(name, value))


def _move_downstream(model: ModelWrapper) -> ModelWrapper:
    """Alternate the two movers until neither changes the graph."""
    while True:
        before = model.model.SerializeToString()
        model = model.transform(MoveScalarMulDownstream()).transform(MoveTransposeDownstream())
        if model.model.SerializeToString() == before:
            return model


def _check_result(model: ModelWrapper) -> None:
    for node in model.graph.node:
        if node.op_type in ("BatchNormalization", "Conv", "BipolarQuant"):
            raise UnsupportedGraphError(f"node {node_ref(model, node)} could not be folded into integer "
                                        "thresholds; it must sit between a binary layer and its quantizer")
        if node.op_type in ("MatMul", "XnorPopcountMatMul"):
            dtypes = [model.get_tensor_datatype(name) for name in node.input]
            if node.op_type == "MatMul" and dtypes[0].name == "BIPOLAR":
                raise UnsupportedGraphError(
                    f"node {node_ref(model, node)} multiplies binary activations by {dtypes[1].name} weights; after "
                    "the input layer the hardware takes binary weights only: set weight_bits=1"
                )
            if not all(dt.is_integer() for dt in dtypes):
                raise UnsupportedGraphError(
                    f"node {node_ref(model, node)} multiplies non-integer values ({dtypes[0].name} input, "
                    f"{dtypes[1].name} weights); quantize its input and weights (a float activation between binary "
                    "layers cannot be compiled)"
                )


def streamline_model(model: ModelWrapper) -> ModelWrapper:
    """QONNX (cleaned) to the streamlined graph; raises ``UnsupportedGraphError`` for what it cannot compile."""
    _check_input(model)
    model = _infer(model)
    model = model.transform(FoldWeightQuant())
    model = model.transform(ExtractQuantScaleZeroPt())
    model = _infer(model.transform(ConvertBipolarQuantToThreshold()))
    _check_quantizers(model)
    model = model.transform(BatchNormToScaleShift())
    _complete_conv_attributes(model)
    model = _infer(model.transform(LowerConvsToMatMul()))
    _check_padding(model)
    model = _infer(_move_downstream(model))
    model = _infer(model.transform(AbsorbAffineIntoThreshold()))
    model = _infer(model.transform(ConvertBipolarMatMulToXnorPopcount()))
    model = _infer(model.transform(AbsorbAffineIntoThreshold()))
    _check_result(model)
    return model
