"""hw/kernels.py against qonnx's own implementations, which bnnflow did not write, as independent references.

- bipolar_dot vs 2 * qonnx.custom_op.general.xnorpopcount.xnorpopcountmatmul - K;
- int_matmul vs ONNX MatMul run by qonnx's executor (onnxruntime);
- multithreshold vs qonnx.custom_op.general.multithreshold.multithreshold (channels last) and the MultiThreshold
  op with data_layout NHWC;
- sliding_window vs qonnx's Im2Col and maxpool vs qonnx's MaxPoolNHWC, each a one-node graph run by execute_onnx;
- label_select vs np.argmax and a sort on (-score, index).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.general.multithreshold import multithreshold as qonnx_multithreshold
from qonnx.custom_op.general.xnorpopcount import xnorpopcountmatmul as qonnx_xnorpopcountmatmul
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import qonnx_make_model

from bnnflow.hw import kernels

QONNX = "qonnx.custom_op.general"


def _one_node(node, in_shape, out_shape, in_dtype: str | None = None, initializers=None) -> ModelWrapper:
    graph = helper.make_graph([node], "kernel_reference",
                              [helper.make_tensor_value_info(node.input[0], TensorProto.FLOAT, in_shape)],
                              [helper.make_tensor_value_info(node.output[0], TensorProto.FLOAT, out_shape)])
    model = ModelWrapper(qonnx_make_model(graph, producer_name="bnnflow-test"))
    for name, value in (initializers or {}).items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
    if in_dtype is not None:
        model.set_tensor_datatype(node.input[0], DataType[in_dtype])
    return model.transform(InferShapes())


def _exec(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    return execute_onnx(model, {model.graph.input[0].name: x})[model.graph.output[0].name]


def _exact_int(ref: np.ndarray) -> np.ndarray:
    """A float reference as int64, after checking it holds integers only."""
    assert np.array_equal(ref, np.round(ref))
    return ref.astype(np.int64)


# ---------------------------------------------------------------- bipolar_dot

XNOR_SHAPES = [((1, 1), 1), ((4, 7), 3), ((16, 64), 10), ((2, 3, 3, 18), 8), ((5, 1), 4)]


@pytest.mark.parametrize("x_shape,n", XNOR_SHAPES, ids=str)
def test_bipolar_dot_matches_qonnx_xnor_popcount(x_shape, n):
    rng = np.random.default_rng(sum(x_shape) + n)
    k = x_shape[-1]
    bits = rng.integers(0, 2, size=x_shape).astype(np.float32)  # qonnx's float containers
    weight_bits = rng.integers(0, 2, size=(k, n)).astype(np.float32)
    got = kernels.bipolar_dot(bits, weight_bits)
    assert got.dtype == np.int64
    assert got.shape == (*x_shape[:-1], n)
    assert np.array_equal(got, 2 * _exact_int(qonnx_xnorpopcountmatmul(bits, weight_bits)) - k)
    assert got.min() >= -k and got.max() <= k


def test_bipolar_dot_all_inputs_and_extremes():
    k = 6
    bits = np.asarray(list(itertools.product([0, 1], repeat=k)), dtype=np.int64)
    weight_bits = np.random.default_rng(0).integers(0, 2, size=(k, 5))
    acc = kernels.bipolar_dot(bits, weight_bits)
    assert np.array_equal(acc, 2 * _exact_int(qonnx_xnorpopcountmatmul(bits.astype(np.float64),
                                                                       weight_bits.astype(np.float64))) - k)
    # The contract: the accumulator is the dot product of the +-1 values the bits stand for.
    assert np.array_equal(acc, (2 * bits - 1) @ (2 * weight_bits - 1))
    # Extremes: equal vectors give K, complementary ones give -K.
    col = weight_bits[:, 0]
    assert kernels.bipolar_dot(col[None], weight_bits)[0, 0] == k
    assert kernels.bipolar_dot(1 - col[None], weight_bits)[0, 0] == -k


# ---------------------------------------------------------------- int_matmul

INT_MATMUL_CASES = [((3, 8), 4, (0, 256), (-1, 2)), ((2, 3, 3, 27), 6, (0, 256), (-8, 8)),
                    ((5, 16), 3, (-128, 128), (-1, 2))]


@pytest.mark.parametrize("x_shape,n,x_range,w_range", INT_MATMUL_CASES, ids=str)
def test_int_matmul_matches_onnx_matmul(x_shape, n, x_range, w_range):
    rng = np.random.default_rng(n)
    k = x_shape[-1]
    x = rng.integers(*x_range, size=x_shape).astype(np.float32)
    w = rng.integers(*w_range, size=(k, n)).astype(np.float32)
    model = _one_node(helper.make_node("MatMul", ["x", "w"], ["y"]), list(x_shape), [*x_shape[:-1], n],
                      initializers={"w": w})
    got = kernels.int_matmul(x, w)
    assert got.dtype == np.int64
    assert np.array_equal(got, _exact_int(_exec(model, x)))


# ---------------------------------------------------------------- multithreshold

def _boundary_thresholds(acc: np.ndarray, steps: int, shared: bool, rng) -> np.ndarray:
    """Ascending thresholds per channel drawn from the accumulator values themselves (ties guaranteed), plus values
    below the lowest and above the highest accumulator."""
    channels = 1 if shared else acc.shape[-1]
    lo, hi = int(acc.min()), int(acc.max())
    rows = []
    for ch in range(channels):
        on_values = np.unique(acc[..., ch if not shared else 0])
        pool = np.concatenate([on_values, [lo - 5, lo - 1, lo, hi, hi + 1, hi + 7]])
        rows.append(np.sort(rng.choice(pool, size=steps)))
    return np.asarray(rows, dtype=np.float32)


MT_CASES = [  # acc shape, steps, shared (1, T) thresholds
    ((10, 4), 1, False), ((10, 4), 1, True), ((6, 5), 3, False), ((6, 5), 3, True),
    ((2, 3, 3, 8), 7, False), ((2, 3, 3, 8), 15, True), ((1, 1), 2, False),
]


@pytest.mark.parametrize("acc_shape,steps,shared", MT_CASES, ids=str)
def test_multithreshold_matches_qonnx(acc_shape, steps, shared):
    rng = np.random.default_rng(steps * 10 + len(acc_shape))
    acc = rng.integers(-20, 21, size=acc_shape).astype(np.float32)
    thresholds = _boundary_thresholds(acc, steps, shared, rng)
    got = kernels.multithreshold(acc, thresholds)
    assert got.shape == acc.shape
    ref = qonnx_multithreshold(acc, thresholds, channels_last=True)
    assert np.array_equal(got, _exact_int(ref))
    assert got.min() >= 0 and got.max() <= steps


def test_multithreshold_accumulator_on_threshold_counts():
    acc = np.asarray([[-3, 0, 5, 7]])
    thresholds = np.asarray([[-3, 1], [0, 0], [4, 6], [8, 9]])
    # -3 >= -3 (1 of 2); 0 >= 0, 0 (2); 5 >= 4 only (1); 7 below both (0)
    assert np.array_equal(kernels.multithreshold(acc, thresholds), [[1, 2, 1, 0]])
    assert np.array_equal(kernels.multithreshold(acc, thresholds),
                          _exact_int(qonnx_multithreshold(acc.astype(np.float32), thresholds.astype(np.float32),
                                                          channels_last=True)))


def test_multithreshold_out_of_range_thresholds():
    acc = np.arange(-4, 5).reshape(-1, 1).repeat(3, axis=1)
    low = np.full((3, 2), -100)  # always both
    high = np.full((3, 2), 100)  # never
    assert np.all(kernels.multithreshold(acc, low) == 2)
    assert np.all(kernels.multithreshold(acc, high) == 0)
    mixed = np.asarray([[-100, 100]])  # shared: exactly one
    assert np.all(kernels.multithreshold(acc, mixed) == 1)


@pytest.mark.parametrize("shared", [False, True])
def test_multithreshold_matches_qonnx_nhwc_op(shared):
    rng = np.random.default_rng(42 + shared)
    acc = rng.integers(-10, 11, size=(2, 3, 3, 4)).astype(np.float32)
    thresholds = _boundary_thresholds(acc, 3, shared, rng)
    node = helper.make_node("MultiThreshold", ["acc", "thr"], ["y"], domain=QONNX, out_dtype="UINT2",
                            data_layout="NHWC")
    model = _one_node(node, list(acc.shape), list(acc.shape), initializers={"thr": thresholds})
    assert np.array_equal(kernels.multithreshold(acc, thresholds), _exact_int(_exec(model, acc)))


@st.composite
def _mt_case(draw):
    channels = draw(st.integers(1, 5))
    steps = draw(st.integers(1, 6))
    rows = draw(st.integers(1, 6))
    shared = draw(st.booleans())
    acc = np.asarray(draw(st.lists(st.integers(-40, 40), min_size=rows * channels, max_size=rows * channels)))
    t_rows = 1 if shared else channels
    thr = np.asarray(draw(st.lists(st.integers(-45, 45), min_size=t_rows * steps, max_size=t_rows * steps)))
    return acc.reshape(rows, channels), np.sort(thr.reshape(t_rows, steps), axis=1)


@settings(max_examples=50, deadline=None)
@given(_mt_case())
def test_multithreshold_property_matches_qonnx(case):
    acc, thresholds = case
    got = kernels.multithreshold(acc, thresholds)
    ref = qonnx_multithreshold(acc.astype(np.float64), thresholds.astype(np.float64), channels_last=True)
    assert np.array_equal(got, _exact_int(ref))


# ---------------------------------------------------------------- sliding_window vs Im2Col

WINDOW_CASES = [  # (H, W), C, kernel, stride
    ((5, 5), 1, (3, 3), (1, 1)), ((5, 5), 3, (3, 3), (1, 1)), ((6, 6), 3, (3, 3), (2, 2)),
    ((4, 4), 1, (2, 2), (2, 2)), ((7, 5), 3, (3, 2), (2, 1)), ((3, 3), 3, (3, 3), (1, 1)),
    ((4, 6), 1, (1, 1), (1, 1)), ((8, 8), 3, (5, 5), (3, 3)),
]


def _out_dim(size: int, k: int, s: int) -> int:
    return (size - k) // s + 1


@pytest.mark.parametrize("hw,c,kernel,stride", WINDOW_CASES, ids=str)
def test_sliding_window_matches_qonnx_im2col(hw, c, kernel, stride):
    rng = np.random.default_rng(hw[0] * 100 + c * 10 + kernel[0])
    n = 2
    x = rng.integers(0, 256, size=(n, *hw, c)).astype(np.float32)
    oh, ow = _out_dim(hw[0], kernel[0], stride[0]), _out_dim(hw[1], kernel[1], stride[1])
    got = kernels.sliding_window(x, kernel, stride)
    assert got.shape == (n, oh, ow, kernel[0] * kernel[1] * c)
    # qonnx's Im2Col handles one image per call; compare image by image.
    node = helper.make_node("Im2Col", ["x"], ["y"], domain=QONNX, stride=list(stride), kernel_size=list(kernel),
                            input_shape=f"(1, {hw[0]}, {hw[1]}, {c})")
    model = _one_node(node, [1, *hw, c], [1, oh, ow, kernel[0] * kernel[1] * c], in_dtype="UINT8")
    for i in range(n):
        assert np.array_equal(got[i:i + 1], _exact_int(_exec(model, x[i:i + 1])))


def test_sliding_window_patch_order_is_kh_kw_channels_fastest():
    x = np.arange(3 * 3 * 2).reshape(1, 3, 3, 2)
    patch = kernels.sliding_window(x, (2, 2), (1, 1))[0, 0, 0]
    assert np.array_equal(patch, [x[0, 0, 0, 0], x[0, 0, 0, 1], x[0, 0, 1, 0], x[0, 0, 1, 1],
                                  x[0, 1, 0, 0], x[0, 1, 0, 1], x[0, 1, 1, 0], x[0, 1, 1, 1]])


# ---------------------------------------------------------------- maxpool vs MaxPoolNHWC

POOL_CASES = [  # (H, W), C, kernel, stride
    ((4, 4), 1, (2, 2), (2, 2)), ((4, 4), 3, (2, 2), (2, 2)), ((5, 5), 3, (2, 2), (2, 2)),
    ((5, 5), 3, (3, 3), (2, 2)), ((6, 4), 1, (2, 2), (1, 1)), ((6, 6), 3, (3, 3), (3, 3)),
    ((4, 6), 3, (2, 3), (2, 3)),
]


@pytest.mark.parametrize("hw,c,kernel,stride", POOL_CASES, ids=str)
@pytest.mark.parametrize("values", ["int", "bits"])
def test_maxpool_matches_qonnx_maxpool_nhwc(hw, c, kernel, stride, values):
    rng = np.random.default_rng(hw[0] * 100 + c * 10 + kernel[0] + stride[0])
    n = 2
    high = 2 if values == "bits" else 256
    low = 0 if values == "bits" else -255
    x = rng.integers(low, high, size=(n, *hw, c)).astype(np.float32)
    oh, ow = _out_dim(hw[0], kernel[0], stride[0]), _out_dim(hw[1], kernel[1], stride[1])
    node = helper.make_node("MaxPoolNHWC", ["x"], ["y"], domain=QONNX, kernel_shape=list(kernel),
                            strides=list(stride), pads=[0, 0, 0, 0])
    model = _one_node(node, [n, *hw, c], [n, oh, ow, c])
    got = kernels.maxpool(x, kernel, stride)
    assert got.shape == (n, oh, ow, c)
    assert np.array_equal(got, _exact_int(_exec(model, x)))


def test_maxpool_on_bits_is_or():
    bits = np.random.default_rng(5).integers(0, 2, size=(3, 4, 4, 2))
    pooled = kernels.maxpool(bits, (2, 2), (2, 2))
    blocks = bits.reshape(3, 2, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4, 5)  # n, oy, ox, ky, kx, c
    assert np.array_equal(pooled, np.any(blocks, axis=(3, 4)).astype(np.int64))


# ---------------------------------------------------------------- label_select

def _reference_topk(scores: np.ndarray, k: int) -> np.ndarray:
    flat = scores.reshape(-1, scores.shape[-1])
    rows = [sorted(range(len(row)), key=lambda i: (-row[i], i))[:k] for row in flat]
    return np.asarray(rows).reshape(*scores.shape[:-1], k)


@pytest.mark.parametrize("shape", [(50, 10), (7, 3, 5), (1, 1)], ids=str)
def test_label_select_top1_is_argmax(shape):
    scores = np.random.default_rng(len(shape)).integers(-3, 4, size=shape)  # a small range: many ties
    got = kernels.label_select(scores.astype(np.float32), 1)
    assert got.shape == (*shape[:-1], 1)
    assert np.array_equal(got[..., 0], np.argmax(scores, axis=-1))  # argmax also takes the first maximum


@pytest.mark.parametrize("k", [1, 2, 3, 10])
def test_label_select_topk_ties_to_lower_index(k):
    scores = np.random.default_rng(k).integers(-2, 3, size=(40, 10))
    assert np.array_equal(kernels.label_select(scores, k), _reference_topk(scores, k))


def test_label_select_ties_explicit():
    scores = np.asarray([[5, 9, 9, 1, 9], [0, 0, 0, 0, 0], [-7, -3, -3, -8, -9]])
    assert np.array_equal(kernels.label_select(scores, 1)[:, 0], [1, 0, 1])
    assert np.array_equal(kernels.label_select(scores, 3), [[1, 2, 4], [0, 1, 2], [1, 2, 0]])
    # Large accumulators in float containers keep their order.
    big = np.asarray([[2.0 ** 20, 2.0 ** 20 + 1, -2.0 ** 20]], dtype=np.float32)
    assert kernels.label_select(big, 1)[0, 0] == 1
