"""ConvertBipolarQuantToThreshold: BipolarQuant on activations becomes MultiThreshold(0) -> {-1, +1}, sign(0) = +1."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.pipeline.compile.convert_bipolar_quant_to_threshold import ConvertBipolarQuantToThreshold
from tests.pipeline.compile.conftest import make_model, run_graph

QONNX = "qonnx.custom_op.general"


def _inputs_with_zeros(shape, seed) -> np.ndarray:
    """Random values with a good share of exact zeros of both signs and tiny values either side of zero."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    flat = x.reshape(-1)
    picks = rng.permutation(flat.size)
    flat[picks[0::5]] = 0.0
    flat[picks[1::5]] = -0.0
    flat[picks[2::11]] = np.float32(1e-30)
    flat[picks[3::11]] = np.float32(-1e-30)
    return x


def _op_types(model: ModelWrapper) -> list[str]:
    return [n.op_type for n in model.graph.node]


SHAPES = [[4, 7], [2, 3, 4, 4]]


@pytest.mark.parametrize("shape", SHAPES, ids=["rank2", "rank4"])
def test_unit_scale_becomes_single_threshold_and_keeps_sign_of_zero(shape):
    model = make_model([helper.make_node("BipolarQuant", ["x", "scale"], ["y"], domain=QONNX)], shape, shape,
                   {"scale": np.float32(1.0)})
    x = _inputs_with_zeros(shape, seed=0)
    expected = run_graph(model, x)

    converted = model.transform(ConvertBipolarQuantToThreshold())

    assert _op_types(converted) == ["MultiThreshold"]
    node = converted.graph.node[0]
    inst = getCustomOp(node)
    assert inst.get_nodeattr("out_dtype") == "BIPOLAR"
    assert inst.get_nodeattr("out_scale") == 2.0
    assert inst.get_nodeattr("out_bias") == -1.0
    assert np.array_equal(converted.get_initializer(node.input[1]), np.zeros((1, 1), dtype=np.float32))
    assert converted.get_tensor_datatype("y") == DataType["BIPOLAR"]
    got = run_graph(converted, x)
    assert np.array_equal(got, expected)
    # sign(0) = +1 for both zeros, and values are exactly {-1, +1}.
    assert np.all(got[x == 0] == 1.0)
    assert np.array_equal(got, np.where(x >= 0, 1.0, -1.0).astype(np.float32))


@pytest.mark.parametrize("scale", [np.float32(0.5), np.float32(3.0),
                                   np.asarray([0.25, 2.0, 1.0], dtype=np.float32).reshape(1, 3, 1, 1)],
                         ids=["half", "three", "per_channel"])
def test_non_unit_scale_gives_trailing_mul(scale):
    shape = [2, 3, 4, 4]
    model = make_model([helper.make_node("BipolarQuant", ["x", "scale"], ["y"], domain=QONNX)], shape, shape,
                   {"scale": scale})
    x = _inputs_with_zeros(shape, seed=1)
    expected = run_graph(model, x)

    converted = model.transform(ConvertBipolarQuantToThreshold())

    assert _op_types(converted) == ["MultiThreshold", "Mul"]
    thresh, mul = converted.graph.node
    assert mul.input[0] == thresh.output[0]
    assert mul.output[0] == "y"
    assert converted.get_tensor_datatype(thresh.output[0]) == DataType["BIPOLAR"]
    assert np.array_equal(converted.get_initializer(mul.input[1]), scale)
    assert np.array_equal(run_graph(converted, x), expected)


def test_mid_graph_quantizer_keeps_wiring():
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Mul", ["x", "c"], ["x_scaled"]),
        helper.make_node("BipolarQuant", ["x_scaled", "scale"], ["x_q"], domain=QONNX),
        helper.make_node("MatMul", ["x_q", "w"], ["y"]),
    ]
    model = make_model(nodes, [5, 8], [5, 3], {"c": np.float32(-2.0), "scale": np.float32(0.5),
                                           "w": rng.integers(-3, 4, size=(8, 3))})
    x = _inputs_with_zeros([5, 8], seed=3)
    expected = run_graph(model, x)
    converted = model.transform(ConvertBipolarQuantToThreshold())
    assert _op_types(converted) == ["Mul", "MultiThreshold", "Mul", "MatMul"]
    assert "BipolarQuant" not in _op_types(converted)
    assert np.array_equal(run_graph(converted, x), expected)


def test_bipolar_quant_on_constant_is_not_converted():
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("BipolarQuant", ["w_float", "scale"], ["w_q"], domain=QONNX),
             helper.make_node("MatMul", ["x", "w_q"], ["y"])]
    model = make_model(nodes, [2, 4], [2, 3], {"w_float": rng.standard_normal((4, 3)), "scale": np.float32(1.0)})
    converted = model.transform(ConvertBipolarQuantToThreshold())
    assert _op_types(converted) == ["BipolarQuant", "MatMul"]


def test_two_quantizers_both_converted():
    shape = [3, 6]
    nodes = [helper.make_node("BipolarQuant", ["x", "s1"], ["h"], domain=QONNX),
             helper.make_node("Add", ["h", "b"], ["h2"]),
             helper.make_node("BipolarQuant", ["h2", "s2"], ["y"], domain=QONNX)]
    # h is +-1; adding +-1 lands some sums exactly on 0, which must map to +1.
    b = np.asarray([1, -1, 1, -1, 0.5, -0.5], dtype=np.float32)
    model = make_model(nodes, shape, shape, {"s1": np.float32(1.0), "s2": np.float32(1.0), "b": b})
    x = _inputs_with_zeros(shape, seed=5)
    expected = run_graph(model, x)
    converted = model.transform(ConvertBipolarQuantToThreshold())
    assert _op_types(converted) == ["MultiThreshold", "Add", "MultiThreshold"]
    got = run_graph(converted, x)
    assert np.array_equal(got, expected)
    h = np.where(x >= 0, 1.0, -1.0) + b
    assert np.any(h == 0)
    assert np.all(got[h == 0] == 1.0)
