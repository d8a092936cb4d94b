"""MoveTransposeDownstream: NHWC->NCHW Transposes move towards the output, cancel, or fold into MatMul weights.

Each graph starts from an NHWC tensor, transposes it to NCHW (as LowerConvsToMatMul leaves it) and continues in
NCHW; after the transformation the same computation runs channels-last. Values are integers and constants are
exactly representable, so outputs must be identical.
"""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import get_by_name

from bnnflow.pipeline.compile.move_transpose_downstream import MoveTransposeDownstream
from tests.pipeline.compile.conftest import make_model, op_types, run_graph

QONNX = "qonnx.custom_op.general"
TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]

N, H, W, C = 2, 4, 4, 3
NHWC = [N, H, W, C]
NCHW = [N, C, H, W]


def _int_inputs(shape, seed) -> np.ndarray:
    return np.random.default_rng(seed).integers(-8, 9, size=shape).astype(np.float32)


def _to_nchw(inp="x", out="t"):
    return helper.make_node("Transpose", [inp], [out], perm=TO_NCHW)


def _moved(model: ModelWrapper, x: np.ndarray) -> ModelWrapper:
    expected = run_graph(model, x)
    moved = model.transform(MoveTransposeDownstream())
    got = run_graph(moved, x)
    assert got.shape == expected.shape
    assert np.array_equal(got, expected)
    return moved


# Per-channel constants in the NCHW shapes exporters write, plus a scalar that needs no re-layout.
CHANNEL_CONSTANTS = {
    "rank4": np.asarray([2.0, -3.0, 0.5]).reshape(1, C, 1, 1),
    "rank3": np.asarray([2.0, -3.0, 0.5]).reshape(C, 1, 1),
    "scalar": np.float32(-1.5),
    "vector1": np.asarray([4.0]),
}


@pytest.mark.parametrize("op", ["Mul", "Add", "Sub", "Div"])
@pytest.mark.parametrize("const", list(CHANNEL_CONSTANTS), ids=str)
def test_past_per_channel_elementwise(op, const):
    value = CHANNEL_CONSTANTS[const]
    model = make_model([_to_nchw(), helper.make_node(op, ["t", "c"], ["y"])], NHWC, NCHW, {"c": value})
    moved = _moved(model, _int_inputs(NHWC, 0))
    assert op_types(moved) == [op, "Transpose"]
    elementwise, trans = moved.graph.node
    assert elementwise.input[0] == "x" and trans.output[0] == "y"
    assert list(get_by_name(trans.attribute, "perm").ints) == TO_NCHW
    laid_out = moved.get_initializer(elementwise.input[1])
    if np.asarray(value).size == C:
        # channels last: the constant now broadcasts along the last axis
        assert laid_out.shape[-1] == C and laid_out.size == C
        assert np.array_equal(laid_out.reshape(-1), np.asarray(value, dtype=np.float32).reshape(-1))


def test_not_past_elementwise_varying_along_width():
    # A length-W vector in NCHW broadcasts along W, not C: it cannot be re-laid out as a channel constant.
    model = make_model([_to_nchw(), helper.make_node("Mul", ["t", "c"], ["y"])], NHWC, NCHW,
                   {"c": np.arange(1, W + 1, dtype=np.float32)})
    moved = _moved(model, _int_inputs(NHWC, 1))
    assert op_types(moved) == ["Transpose", "Mul"]


def test_not_past_elementwise_with_computed_operand():
    nodes = [_to_nchw(), helper.make_node("Relu", ["t"], ["r"]), helper.make_node("Add", ["t", "r"], ["y"])]
    model = make_model(nodes, NHWC, NCHW, {})
    moved = _moved(model, _int_inputs(NHWC, 2))
    assert moved.graph.node[0].op_type == "Transpose"


@pytest.mark.parametrize("layout", [None, "NCHW"])
def test_past_multithreshold_sets_nhwc_layout(layout):
    thresholds = np.asarray([[-2, 1], [0, 0], [-5, 3]], dtype=np.float32)  # per channel, two steps
    attrs = {"out_dtype": "UINT2"}
    if layout is not None:
        attrs["data_layout"] = layout
    mt = helper.make_node("MultiThreshold", ["t", "thr"], ["y"], domain=QONNX, **attrs)
    model = make_model([_to_nchw(), mt], NHWC, NCHW, {"thr": thresholds})
    x = _int_inputs(NHWC, 3)
    nchw = x.transpose(TO_NCHW)
    assert any(np.any(nchw[:, ch] == t) for ch in range(C) for t in thresholds[ch])  # some values sit on a threshold
    moved = _moved(model, x)
    assert op_types(moved) == ["MultiThreshold", "Transpose"]
    node = moved.graph.node[0]
    assert node.input[0] == "x"
    assert getCustomOp(node).get_nodeattr("data_layout") == "NHWC"
    assert len([a for a in node.attribute if a.name == "data_layout"]) == 1
    assert np.array_equal(moved.get_initializer(node.input[1]), thresholds)


def test_not_past_multithreshold_already_nhwc():
    mt = helper.make_node("MultiThreshold", ["t", "thr"], ["y"], domain=QONNX, out_dtype="BINARY", data_layout="NHWC")
    model = make_model([_to_nchw(), mt], NHWC, NCHW, {"thr": np.zeros((1, 1))})
    moved = model.transform(MoveTransposeDownstream())
    assert op_types(moved) == ["Transpose", "MultiThreshold"]


@pytest.mark.parametrize("kernel,strides,pads", [([2, 2], [2, 2], None), ([3, 3], [1, 1], [1, 1, 1, 1]),
                                                 ([2, 2], [1, 1], [0, 0, 0, 0])])
def test_past_maxpool_becomes_maxpool_nhwc(kernel, strides, pads):
    attrs = {"kernel_shape": kernel, "strides": strides}
    if pads is not None:
        attrs["pads"] = pads
    pool = helper.make_node("MaxPool", ["t"], ["y"], **attrs)
    oh = (H + (sum(pads[::2]) if pads else 0) - kernel[0]) // strides[0] + 1
    model = make_model([_to_nchw(), pool], NHWC, [N, C, oh, oh], {})
    moved = _moved(model, _int_inputs(NHWC, 4))
    assert op_types(moved) == ["MaxPoolNHWC", "Transpose"]
    node = moved.graph.node[0]
    assert node.domain == QONNX and node.input[0] == "x"
    inst = getCustomOp(node)
    assert inst.get_nodeattr("kernel_shape") == kernel
    assert inst.get_nodeattr("strides") == strides


def test_past_maxpool_without_strides_uses_onnx_default_stride():
    pool = helper.make_node("MaxPool", ["t"], ["y"], kernel_shape=[2, 2])  # ONNX: strides default to 1
    model = make_model([_to_nchw(), pool], NHWC, [N, C, H - 1, W - 1], {})
    moved = _moved(model, _int_inputs(NHWC, 5))
    assert getCustomOp(moved.get_nodes_by_op_type("MaxPoolNHWC")[0]).get_nodeattr("strides") == [1, 1]


def test_cancels_with_following_nhwc_transpose():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), _to_nchw("r", "t"),
             helper.make_node("Transpose", ["t"], ["u"], perm=TO_NHWC), helper.make_node("Neg", ["u"], ["y"])]
    model = make_model(nodes, NHWC, NHWC, {})
    moved = _moved(model, _int_inputs(NHWC, 6))
    assert op_types(moved) == ["Relu", "Neg"]
    assert moved.graph.node[1].input[0] == moved.graph.node[0].output[0]


def test_cancels_when_pair_ends_at_graph_output():
    nodes = [helper.make_node("Relu", ["x"], ["r"]), _to_nchw("r", "t"),
             helper.make_node("Transpose", ["t"], ["y"], perm=TO_NHWC)]
    model = make_model(nodes, NHWC, NHWC, {})
    moved = _moved(model, _int_inputs(NHWC, 7))
    assert op_types(moved) == ["Relu"]
    assert moved.graph.node[0].output[0] == "y"


def test_cancels_when_pair_starts_at_graph_input():
    nodes = [_to_nchw(), helper.make_node("Transpose", ["t"], ["u"], perm=TO_NHWC), helper.make_node("Neg", ["u"], ["y"])]
    model = make_model(nodes, NHWC, NHWC, {})
    moved = _moved(model, _int_inputs(NHWC, 8))
    assert op_types(moved) == ["Neg"]
    assert moved.graph.node[0].input[0] == "x"


def test_cancels_when_pair_is_the_whole_graph():
    nodes = [_to_nchw(), helper.make_node("Transpose", ["t"], ["y"], perm=TO_NHWC)]
    model = make_model(nodes, NHWC, NHWC, {})
    moved = model.transform(MoveTransposeDownstream())
    assert "Transpose" not in op_types(moved)
    if len(moved.graph.node):  # an empty graph cannot be executed; otherwise it must still be the identity
        x = _int_inputs(NHWC, 16)
        assert np.array_equal(run_graph(moved, x), x)


def test_not_cancelled_by_other_permutation():
    nodes = [_to_nchw(), helper.make_node("Transpose", ["t"], ["y"], perm=[0, 1, 3, 2])]
    model = make_model(nodes, NHWC, [N, C, W, H], {})
    moved = _moved(model, _int_inputs(NHWC, 9))
    assert op_types(moved) == ["Transpose", "Transpose"]


def _flatten_matmul_model(flatten_op: str, h=2, w=2, c=3, n=2, k=5, seed=10) -> ModelWrapper:
    rng = np.random.default_rng(seed)
    flat = c * h * w
    if flatten_op == "Reshape":
        flatten = helper.make_node("Reshape", ["t", "shape"], ["f"])
        inits = {"shape": [n, flat]}
    else:
        flatten = helper.make_node("Flatten", ["t"], ["f"], axis=1)
        inits = {}
    inits["w"] = rng.integers(-4, 5, size=(flat, k))
    return make_model([_to_nchw(), flatten, helper.make_node("MatMul", ["f", "w"], ["y"])], [n, h, w, c], [n, k], inits)


@pytest.mark.parametrize("flatten_op", ["Reshape", "Flatten"])
def test_folds_into_reshape_matmul_by_permuting_weight_rows(flatten_op):
    model = _flatten_matmul_model(flatten_op)
    x = _int_inputs((2, 2, 2, 3), 11)
    moved = _moved(model, x)
    assert "Transpose" not in op_types(moved)
    assert op_types(moved) == [flatten_op, "MatMul"]
    assert moved.graph.node[0].input[0] == "x"
    w_old = model.get_initializer("w")
    w_new = moved.get_initializer(moved.graph.node[1].input[1])
    # The permutation really matters on a 2x2 map with 3 channels: rows are reordered, not left as they were.
    assert not np.array_equal(w_new, w_old)
    assert np.array_equal(np.sort(w_new, axis=0), np.sort(w_old, axis=0))
    # Row (y, x, ch) of the new weights is row (ch, y, x) of the old ones.
    for yy in range(2):
        for xx in range(2):
            for ch in range(3):
                assert np.array_equal(w_new[(yy * 2 + xx) * 3 + ch], w_old[ch * 4 + yy * 2 + xx])
    if flatten_op == "Reshape":
        assert list(moved.get_initializer(moved.graph.node[0].input[1])) == [-1, 12]
    # The folded graph equals flattening NHWC directly.
    assert np.array_equal(run_graph(moved, x), x.reshape(2, -1) @ w_new)


def test_fold_with_non_square_map():
    model = _flatten_matmul_model("Reshape", h=2, w=3, c=2, n=1, k=4, seed=12)
    moved = _moved(model, _int_inputs((1, 2, 3, 2), 13))
    assert op_types(moved) == ["Reshape", "MatMul"]


def test_not_folded_when_matmul_weights_are_computed():
    nodes = [_to_nchw(), helper.make_node("Reshape", ["t", "shape"], ["f"]),
             helper.make_node("Relu", ["wf"], ["w"]), helper.make_node("MatMul", ["f", "w"], ["y"])]
    graph_model = make_model(nodes, [1, 2, 2, 3], [1, 4], {"shape": [1, 12], "wf": np.ones((12, 4))})
    moved = graph_model.transform(MoveTransposeDownstream())
    assert "Transpose" in op_types(moved)


def test_whole_lowered_layer_ends_channels_last():
    """Mul -> Add -> MultiThreshold -> MaxPool -> Reshape -> MatMul after a transpose: every transpose disappears."""
    rng = np.random.default_rng(14)
    nodes = [
        _to_nchw(),
        helper.make_node("Mul", ["t", "a"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["ab"]),
        helper.make_node("MultiThreshold", ["ab", "thr"], ["q"], domain=QONNX, out_dtype="BIPOLAR", out_scale=2.0,
                         out_bias=-1.0),
        helper.make_node("MaxPool", ["q"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["f"]),
        helper.make_node("MatMul", ["f", "w"], ["y"]),
    ]
    model = make_model(nodes, NHWC, [N, 5], {
        "a": np.asarray([2.0, -1.0, 0.5]).reshape(1, C, 1, 1), "b": np.asarray([1.0, 0.0, -2.0]).reshape(1, C, 1, 1),
        "thr": np.zeros((1, 1)), "shape": [N, C * 2 * 2], "w": rng.choice([-1.0, 1.0], size=(C * 4, 5)),
    })
    moved = _moved(model, _int_inputs(NHWC, 15))
    assert op_types(moved) == ["Mul", "Add", "MultiThreshold", "MaxPoolNHWC", "Reshape", "MatMul"]
