"""FoldWeightQuant: weight quantizers on constants become integer weight initializers (plus a Mul for the scale).

Every graph is executed before and after the transformation on the same seeded inputs; integer-valued inputs and
power-of-two scales keep the float32 arithmetic exact, so the outputs must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from bnnflow.errors import UnsupportedGraphError
from bnnflow.pipeline.compile.fold_weight_quant import FoldWeightQuant

QONNX = "qonnx.custom_op.general"


def _model(nodes, inputs, outputs, initializers) -> ModelWrapper:
    graph = helper.make_graph(nodes, "fold_weight_quant_test", inputs, outputs)
    model = ModelWrapper(qonnx_make_model(graph, producer_name="bnnflow-test"))
    for name, value in initializers.items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    return model.transform(InferShapes())


def _run(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    name_in, name_out = model.graph.input[0].name, model.graph.output[0].name
    return execute_onnx(model, {name_in: x})[name_out]


def _op_types(model: ModelWrapper) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _int_inputs(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape).astype(np.float32)


def _matmul_model(quant_node, k=6, n=4, extra_inits=None) -> ModelWrapper:
    rng = np.random.default_rng(1)
    inits = {"w_float": rng.standard_normal((k, n)), **(extra_inits or {})}
    return _model(
        [quant_node, helper.make_node("MatMul", ["x", "w_q"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, n])],
        inits,
    )


def _weight_of(model: ModelWrapper, op_type: str) -> tuple[str, np.ndarray]:
    node = model.get_nodes_by_op_type(op_type)[0]
    return node.input[1], model.get_initializer(node.input[1])


def test_bipolar_quant_on_matmul_weight_becomes_bipolar_initializer():
    quant = helper.make_node("BipolarQuant", ["w_float", "scale"], ["w_q"], domain=QONNX)
    model = _matmul_model(quant, extra_inits={"scale": np.float32(1.0)})
    x = _int_inputs((3, 6))
    expected = _run(model, x)

    folded = model.transform(FoldWeightQuant())

    assert _op_types(folded) == ["MatMul"]
    name, w = _weight_of(folded, "MatMul")
    assert w is not None
    assert set(np.unique(w)) <= {-1.0, 1.0}
    assert folded.get_tensor_datatype(name) == DataType["BIPOLAR"]
    w_float = model.get_initializer("w_float")
    assert np.array_equal(w, np.where(w_float >= 0, 1.0, -1.0))
    assert np.array_equal(_run(folded, x), expected)


@pytest.mark.parametrize("scale", [np.float32(0.5), np.asarray([[0.25, 2.0, 0.5, 4.0]], dtype=np.float32)],
                         ids=["per_tensor", "per_channel"])
def test_bipolar_quant_scale_becomes_mul_after_matmul(scale):
    quant = helper.make_node("BipolarQuant", ["w_float", "scale"], ["w_q"], domain=QONNX)
    model = _matmul_model(quant, extra_inits={"scale": scale})
    x = _int_inputs((3, 6), seed=2)
    expected = _run(model, x)

    folded = model.transform(FoldWeightQuant())

    assert _op_types(folded) == ["MatMul", "Mul"]
    name, w = _weight_of(folded, "MatMul")
    assert set(np.unique(w)) <= {-1.0, 1.0}
    assert folded.get_tensor_datatype(name) == DataType["BIPOLAR"]
    mul = folded.get_nodes_by_op_type("Mul")[0]
    assert mul.input[0] == folded.get_nodes_by_op_type("MatMul")[0].output[0]
    assert mul.output[0] == "y"
    assert np.array_equal(folded.get_initializer(mul.input[1]).reshape(-1), np.asarray(scale).reshape(-1))
    assert np.array_equal(_run(folded, x), expected)


def _conv_model(scale, bits=4, signed=1, narrow=0, zeropt=0.0) -> ModelWrapper:
    rng = np.random.default_rng(3)
    quant = helper.make_node("Quant", ["w_float", "scale", "zeropt", "bits"], ["w_q"], domain=QONNX,
                             signed=signed, narrow=narrow, rounding_mode="ROUND")
    conv = helper.make_node("Conv", ["x", "w_q"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    return _model(
        [quant, conv],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 5, 5])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 5, 5])],
        {"w_float": rng.standard_normal((3, 2, 3, 3)), "scale": scale, "zeropt": np.float32(zeropt),
         "bits": np.float32(bits)},
    )


@pytest.mark.parametrize("scale", [np.float32(0.25), np.asarray([0.5, 0.125, 2.0], dtype=np.float32).reshape(3, 1, 1, 1)],
                         ids=["per_tensor", "per_channel"])
def test_int4_quant_on_conv_weight_leaves_codes_and_mul(scale):
    model = _conv_model(scale)
    x = _int_inputs((1, 2, 5, 5), seed=4)
    expected = _run(model, x)

    folded = model.transform(FoldWeightQuant())

    assert _op_types(folded) == ["Conv", "Mul"]
    name, codes = _weight_of(folded, "Conv")
    assert folded.get_tensor_datatype(name) == DataType["INT4"]
    assert np.array_equal(codes, np.round(codes))
    assert codes.min() >= -8 and codes.max() <= 7
    # The codes are the quantized weight divided by its scale.
    w_float = model.get_initializer("w_float").astype(np.float64)
    assert np.array_equal(codes, np.clip(np.round(w_float / scale), -8, 7))
    mul = folded.get_nodes_by_op_type("Mul")[0]
    mul_scale = folded.get_initializer(mul.input[1])
    if np.asarray(scale).size > 1:
        assert mul_scale.shape == (1, 3, 1, 1)  # broadcasts over the Conv output's channel axis
    assert np.array_equal(mul_scale.reshape(-1), np.asarray(scale).reshape(-1))
    got = _run(folded, x)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)


def test_unit_scale_quant_adds_no_mul():
    model = _conv_model(np.float32(1.0), bits=2)
    x = _int_inputs((1, 2, 5, 5), seed=5)
    expected = _run(model, x)
    folded = model.transform(FoldWeightQuant())
    assert _op_types(folded) == ["Conv"]
    name, codes = _weight_of(folded, "Conv")
    assert folded.get_tensor_datatype(name) == DataType["INT2"]
    assert np.array_equal(_run(folded, x), expected)


@pytest.mark.parametrize("bits,signed,narrow", [
    (4, 1, 0), (4, 1, 1), (2, 1, 0), (1, 1, 0),
    (4, 0, 0), (1, 0, 0),
])
def test_annotated_weight_dtype_holds_every_code(bits, signed, narrow):
    model = _conv_model(np.float32(0.25), bits=bits, signed=signed, narrow=narrow)
    folded = model.transform(FoldWeightQuant())
    name, codes = _weight_of(folded, "Conv")
    dtype = folded.get_tensor_datatype(name)
    assert dtype.is_integer()
    assert np.all(dtype.allowed(codes)), f"{dtype.name} cannot hold codes in [{codes.min()}, {codes.max()}]"


def test_zero_point_leaving_fractional_codes_is_rejected():
    model = _conv_model(np.float32(0.25), zeropt=0.5)
    with pytest.raises(UnsupportedGraphError, match="non-integer weight codes"):
        model.transform(FoldWeightQuant())


def test_quantizer_on_constant_feeding_add_is_rejected():
    rng = np.random.default_rng(6)
    quant = helper.make_node("BipolarQuant", ["bias_float", "scale"], ["bias_q"], domain=QONNX, name="bq0")
    model = _model(
        [quant, helper.make_node("Add", ["x", "bias_q"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])],
        {"bias_float": rng.standard_normal((3, 4)), "scale": np.float32(1.0)},
    )
    with pytest.raises(UnsupportedGraphError, match="bq0"):
        model.transform(FoldWeightQuant())


def test_quantizer_on_constant_matmul_data_input_is_rejected():
    rng = np.random.default_rng(7)
    quant = helper.make_node("BipolarQuant", ["a_float", "scale"], ["a_q"], domain=QONNX)
    model = _model(
        [quant, helper.make_node("MatMul", ["a_q", "x"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 2])],
        {"a_float": rng.standard_normal((3, 4)), "scale": np.float32(1.0)},
    )
    with pytest.raises(UnsupportedGraphError):
        model.transform(FoldWeightQuant())


def test_quantized_constant_shared_by_two_layers_is_rejected():
    rng = np.random.default_rng(8)
    quant = helper.make_node("BipolarQuant", ["w_float", "scale"], ["w_q"], domain=QONNX)
    model = _model(
        [quant, helper.make_node("MatMul", ["x", "w_q"], ["y0"]), helper.make_node("MatMul", ["y0", "w_q"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        {"w_float": rng.standard_normal((4, 4)), "scale": np.float32(1.0)},
    )
    with pytest.raises(UnsupportedGraphError):
        model.transform(FoldWeightQuant())


def test_activation_quantizer_is_left_alone():
    quant = helper.make_node("BipolarQuant", ["x", "scale"], ["x_q"], domain=QONNX)
    rng = np.random.default_rng(9)
    model = _model(
        [quant, helper.make_node("MatMul", ["x_q", "w"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        {"w": rng.standard_normal((4, 3)), "scale": np.float32(1.0)},
    )
    folded = model.transform(FoldWeightQuant())
    assert _op_types(folded) == ["BipolarQuant", "MatMul"]
    x = rng.standard_normal((2, 4)).astype(np.float32)
    assert np.array_equal(_run(folded, x), _run(model, x))
