"""MoveScalarMulDownstream: Mul by one constant swaps with the linear (and, for c > 0, monotone) op after it.

Inputs are integer valued and scales are powers of two (or small integers), so moving a Mul never changes the
float32 rounding and the outputs before and after must be identical, shapes included.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.pipeline.compile.move_scalar_mul_downstream import MoveScalarMulDownstream
from tests.pipeline.compile.conftest import make_model, op_types, run_graph

QONNX = "qonnx.custom_op.general"

# A scalar constant as exporters write it: 0-d, 1-element vector, and broadcast-shaped.
SCALAR_SHAPES = [(), (1,), (1, 1, 1, 1)]

# Past a rank-reducing op, a rank-4 scalar constant exposes that bug (Brevitas writes () or (1,), never rank 4).
SCALAR_SHAPES_RANK_REDUCING = [(), (1,), (1, 1, 1, 1)]


def _int_inputs(shape, seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20, 21, size=shape).astype(np.float32)


def _check_moved(model: ModelWrapper, x: np.ndarray, expected_ops: list[str]) -> ModelWrapper:
    expected = run_graph(model, x)
    moved = model.transform(MoveScalarMulDownstream())
    assert op_types(moved) == expected_ops
    assert moved.graph.node[-1].output[0] == "y"
    got = run_graph(moved, x)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)
    return moved


@pytest.mark.parametrize("c_shape", SCALAR_SHAPES, ids=str)
def test_past_transpose(c_shape):
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 3, 1])]
    model = make_model(nodes, [1, 2, 3, 4], [1, 3, 4, 2], {"c": np.full(c_shape, 0.5)})
    _check_moved(model, _int_inputs((1, 2, 3, 4), 0), ["Transpose", "Mul"])


@pytest.mark.parametrize("c_shape", SCALAR_SHAPES_RANK_REDUCING, ids=str)
def test_past_reshape(c_shape):
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("Reshape", ["h", "shape"], ["y"])]
    model = make_model(nodes, [1, 2, 3, 4], [1, 24], {"c": np.full(c_shape, 0.25), "shape": [1, -1]})
    _check_moved(model, _int_inputs((1, 2, 3, 4), 1), ["Reshape", "Mul"])


@pytest.mark.parametrize("c_shape", SCALAR_SHAPES_RANK_REDUCING, ids=str)
def test_past_flatten(c_shape):
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("Flatten", ["h"], ["y"], axis=1)]
    model = make_model(nodes, [2, 2, 3, 4], [2, 24], {"c": np.full(c_shape, 2.0)})
    _check_moved(model, _int_inputs((2, 2, 3, 4), 2), ["Flatten", "Mul"])


@pytest.mark.parametrize("c", [0.125, -0.5, 3.0])
def test_past_matmul_with_constant_weights(c):
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("MatMul", ["h", "w"], ["y"])]
    model = make_model(nodes, [3, 6], [3, 4], {"c": np.float32(c), "w": rng.choice([-1.0, 1.0], size=(6, 4))})
    moved = _check_moved(model, _int_inputs((3, 6), 4), ["MatMul", "Mul"])
    assert moved.graph.node[0].input[0] == "x"


def test_not_past_matmul_with_computed_weights():
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("Relu", ["x"], ["w"]),
             helper.make_node("MatMul", ["h", "w"], ["y"])]
    model = make_model(nodes, [4, 4], [4, 4], {"c": np.float32(0.5)})
    moved = model.transform(MoveScalarMulDownstream())
    mul = moved.get_nodes_by_op_type("Mul")[0]
    assert moved.find_consumer(mul.output[0]).op_type == "MatMul"
    x = _int_inputs((4, 4), 5)
    assert np.array_equal(run_graph(moved, x), run_graph(model, x))


def _maxpool_model(c, op="MaxPool", shape=(1, 3, 4, 4)) -> ModelWrapper:
    if op == "MaxPool":
        pool = helper.make_node("MaxPool", ["h"], ["y"], kernel_shape=[2, 2], strides=[2, 2])
        out = [shape[0], shape[1], shape[2] // 2, shape[3] // 2]
    else:
        pool = helper.make_node("MaxPoolNHWC", ["h"], ["y"], domain=QONNX, kernel_shape=[2, 2], strides=[2, 2],
                                pads=[0, 0, 0, 0])
        out = [shape[0], shape[1] // 2, shape[2] // 2, shape[3]]
    return make_model([helper.make_node("Mul", ["x", "c"], ["h"]), pool], list(shape), out, {"c": np.float32(c)},
                  value_info={"h": list(shape)})


@pytest.mark.parametrize("op,shape", [("MaxPool", (1, 3, 4, 4)), ("MaxPoolNHWC", (1, 4, 4, 3))])
def test_past_maxpool_for_positive_scalar(op, shape):
    _check_moved(_maxpool_model(0.5, op, shape), _int_inputs(shape, 6), [op, "Mul"])


@pytest.mark.parametrize("op,shape", [("MaxPool", (1, 3, 4, 4)), ("MaxPoolNHWC", (1, 4, 4, 3))])
@pytest.mark.parametrize("c", [-0.5, -2.0, 0.0])
def test_not_past_maxpool_for_negative_or_zero_scalar(op, shape, c):
    model = _maxpool_model(c, op, shape)
    x = _int_inputs(shape, 7)
    moved = model.transform(MoveScalarMulDownstream())
    assert op_types(moved) == ["Mul", op]
    assert np.array_equal(run_graph(moved, x), run_graph(model, x))
    if c < 0:
        # Swapping would have been wrong: max(c * x) = c * min(x) != c * max(x) for c < 0.
        assert not np.array_equal(run_graph(model, x), c * run_graph(_maxpool_model(1.0, op, shape), x))


def test_not_moved_for_per_channel_constant():
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("Transpose", ["h"], ["y"], perm=[0, 2, 3, 1])]
    model = make_model(nodes, [1, 2, 3, 4], [1, 3, 4, 2], {"c": np.asarray([0.5, 2.0]).reshape(1, 2, 1, 1)})
    moved = model.transform(MoveScalarMulDownstream())
    assert op_types(moved) == ["Mul", "Transpose"]


def test_not_moved_when_mul_has_two_consumers():
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]), helper.make_node("Transpose", ["h"], ["t"], perm=[1, 0]),
             helper.make_node("Transpose", ["h"], ["u"], perm=[1, 0]), helper.make_node("Add", ["t", "u"], ["y"])]
    model = make_model(nodes, [3, 3], [3, 3], {"c": np.float32(0.5)})
    moved = model.transform(MoveScalarMulDownstream())
    assert moved.graph.node[0].op_type == "Mul"
    x = _int_inputs((3, 3), 8)
    assert np.array_equal(run_graph(moved, x), run_graph(model, x))


def test_past_padded_im2col():
    # Zero padding commutes with scaling: 0 * c = 0.
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]),
             helper.make_node("Im2Col", ["h"], ["y"], domain=QONNX, stride=[1, 1], kernel_size=[3, 3],
                              input_shape="(1, 4, 4, 2)", pad_amount=[1, 1, 1, 1])]
    model = make_model(nodes, [1, 4, 4, 2], [1, 4, 4, 18], {"c": np.float32(0.25)})
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_tensor_datatype("h", DataType["FLOAT32"])
    moved = _check_moved(model, _int_inputs((1, 4, 4, 2), 9), ["Im2Col", "Mul"])
    assert moved.graph.node[0].input[0] == "x"


@pytest.mark.parametrize("c_shape", SCALAR_SHAPES_RANK_REDUCING, ids=str)
def test_chain_moves_to_the_end(c_shape):
    rng = np.random.default_rng(10)
    nodes = [helper.make_node("Mul", ["x", "c"], ["h0"]),
             helper.make_node("Transpose", ["h0"], ["h1"], perm=[0, 2, 3, 1]),
             helper.make_node("MaxPool", ["h1"], ["h2"], kernel_shape=[1, 1]),  # NCHW pooling on NHWC: still monotone
             helper.make_node("Reshape", ["h2", "shape"], ["h3"]),
             helper.make_node("MatMul", ["h3", "w"], ["y"])]
    model = make_model(nodes, [2, 3, 2, 2], [2, 5], {"c": np.full(c_shape, 0.5), "shape": [2, 12],
                                                 "w": rng.choice([-1.0, 1.0], size=(12, 5))})
    _check_moved(model, _int_inputs((2, 3, 2, 2), 11), ["Transpose", "MaxPool", "Reshape", "MatMul", "Mul"])




@pytest.mark.parametrize("pad_value", [0, 1])
def test_im2col_padding_value_respected(pad_value):
    nodes = [helper.make_node("Mul", ["x", "c"], ["h"]),
             helper.make_node("Im2Col", ["h"], ["y"], domain=QONNX, stride=[1, 1], kernel_size=[3, 3],
                              input_shape="(1, 3, 3, 1)", pad_amount=[1, 1, 1, 1], pad_value=pad_value)]
    model = make_model(nodes, [1, 3, 3, 1], [1, 3, 3, 9], {"c": np.float32(0.25)})
    model.set_tensor_datatype("x", DataType["INT8"])
    model.set_tensor_datatype("h", DataType["FLOAT32"])
    x = _int_inputs((1, 3, 3, 1), 12)
    expected = run_graph(model, x)
    moved = model.transform(MoveScalarMulDownstream())
    assert np.array_equal(run_graph(moved, x), expected)
