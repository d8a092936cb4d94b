"""AbsorbAffineIntoThreshold: Mul/Add/Sub/Div between an integer accumulator and a MultiThreshold become integer
thresholds on the accumulator (the heart of the bit-exact contract).

The graphs are executed before and after on every input of a small layer (all 2^K bipolar/binary vectors, all
UINT8 pairs) and on random inputs. The affine constants are dyadic (exact in float32), so the float graph before
the transformation computes A * acc + B exactly and must agree with the integer thresholds after it bit for bit,
including accumulators that land exactly on a threshold (they fire: ``acc >= T``).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx

from bnnflow.pipeline.compile.absorb_affine_into_threshold import AbsorbAffineIntoThreshold
from tests.pipeline.compile.conftest import make_model, run_graph

QONNX = "qonnx.custom_op.general"

# Per output channel (A, B) for y = A * acc + B, thresholded at y >= 0, on a bipolar K=6 layer (acc in -6..6, even):
#   exact ties (acc = 2, acc = 0, acc = -2 give y = 0 exactly), all signs of A, A = 0 with B on either side of (and
#   on) the threshold, and thresholds that clip below the lowest / above the highest reachable accumulator.
BIPOLAR_CHANNELS = [
    (1.0, -2.0),    # acc >= 2, tie at 2
    (-1.0, 0.0),    # acc <= 0, tie at 0
    (0.0, 0.5),     # always fires
    (0.0, -0.5),    # never fires
    (0.0, 0.0),     # always fires: B exactly on the threshold
    (0.5, 10.0),    # acc >= -20: below the lowest accumulator, clips to lo
    (0.25, -3.0),   # acc >= 12: above the highest accumulator, clips to hi + 1
    (-2.0, -4.0),   # acc <= -2, tie at -2
    (1.5, -3.0),    # acc >= 2, tie at 2 with a fractional slope
    (-0.75, 1.5),   # acc <= 2, tie at 2 with a fractional negative slope
    (-0.5, -4.0),   # acc <= -8: never (negative slope, above the range after negation)
    (-0.5, 4.0),    # acc <= 8: always
    (2.0, -3.0),    # acc >= 1.5 -> 2 (ceil of a non-integer threshold), no tie
    (-3.0, 3.0),    # acc <= 1, tie at 1 unreachable (acc is even)
]


def _threshold_node(inp: str, thresholds_name: str = "thr", out_dtype: str = "BIPOLAR", **layout):
    if out_dtype == "BIPOLAR":
        return helper.make_node("MultiThreshold", [inp, thresholds_name], ["y"], domain=QONNX, out_dtype="BIPOLAR",
                                out_scale=2.0, out_bias=-1.0, **layout)
    return helper.make_node("MultiThreshold", [inp, thresholds_name], ["y"], domain=QONNX, out_dtype=out_dtype,
                            **layout)


def _affine_layer(weights, a, b, in_dtype, w_dtype, in_shape, producer="MatMul", thresholds=None,
                  out_dtype="BIPOLAR", prefix=(), **layout) -> ModelWrapper:
    """x -> producer(W) -> [prefix Mul/Add...] -> Mul(a) -> Add(b) -> MultiThreshold."""
    channels = weights.shape[1]
    out_shape = list(in_shape[:-1]) + [channels]
    nodes = [helper.make_node(producer, ["x", "w"], ["acc"], **({"domain": QONNX} if producer != "MatMul" else {}))]
    inits = {"w": weights, "a": np.asarray(a), "b": np.asarray(b),
             "thr": np.zeros((1, 1)) if thresholds is None else thresholds}
    prev = "acc"
    for i, (op, value) in enumerate(prefix):
        nodes.append(helper.make_node(op, [prev, f"p{i}"], [f"pre{i}"]))
        inits[f"p{i}"] = value
        prev = f"pre{i}"
    nodes += [helper.make_node("Mul", [prev, "a"], ["scaled"]), helper.make_node("Add", ["scaled", "b"], ["shifted"]),
              _threshold_node("shifted", out_dtype=out_dtype, **layout)]
    return make_model(nodes, list(in_shape), out_shape, inits, dtypes={"x": in_dtype, "w": w_dtype})


def _run_acc(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    return execute_onnx(model, {"x": x}, return_full_exec_context=True)[model.graph.node[0].output[0]]


def _op_types(model: ModelWrapper) -> list[str]:
    return [n.op_type for n in model.graph.node]


def _reachable_range(weights: np.ndarray, lo_in: float, hi_in: float) -> tuple[np.ndarray, np.ndarray]:
    w = weights.astype(np.float64)
    return np.minimum(w * lo_in, w * hi_in).sum(axis=0), np.maximum(w * lo_in, w * hi_in).sum(axis=0)


def _absorbed(model: ModelWrapper) -> tuple[ModelWrapper, np.ndarray, np.ndarray]:
    """Transform, check the graph shape, and return the new model, its thresholds and its weights."""
    new = model.transform(AbsorbAffineIntoThreshold())
    producer, threshold = new.graph.node
    assert threshold.op_type == "MultiThreshold"
    assert threshold.input[0] == producer.output[0]
    thresholds = new.get_initializer(threshold.input[1])
    assert np.array_equal(thresholds, np.round(thresholds)), "thresholds must be integers"
    return new, thresholds.astype(np.float64), new.get_initializer(producer.input[1])


def _all_bipolar(k: int) -> np.ndarray:
    return np.asarray(list(itertools.product([-1.0, 1.0], repeat=k)), dtype=np.float32)


def _all_binary(k: int) -> np.ndarray:
    return np.asarray(list(itertools.product([0.0, 1.0], repeat=k)), dtype=np.float32)


def _bipolar_weights(k: int, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).choice([-1.0, 1.0], size=(k, n)).astype(np.float32)


def test_bipolar_matmul_exact_on_every_input():
    k = 6
    a = np.asarray([c[0] for c in BIPOLAR_CHANNELS], dtype=np.float32)
    b = np.asarray([c[1] for c in BIPOLAR_CHANNELS], dtype=np.float32)
    w = _bipolar_weights(k, len(a), seed=0)
    model = _affine_layer(w, a, b, "BIPOLAR", "BIPOLAR", [2 ** k, k])
    x = _all_bipolar(k)
    expected = run_graph(model, x)
    acc = _run_acc(model, x)

    new, thresholds, w_new = _absorbed(model)

    assert _op_types(new) == ["MatMul", "MultiThreshold"]
    got = run_graph(new, x)
    assert np.array_equal(got, expected)
    # The reference, in exact arithmetic: +1 where A * acc + B >= 0.
    assert np.array_equal(got, np.where(a * acc.astype(np.float64) + b >= 0, 1.0, -1.0))
    # Accumulators exactly on the threshold fire, for positive and negative slopes alike.
    for ch, tie_acc in [(0, 2), (1, 0), (7, -2), (8, 2), (9, 2)]:
        on_tie = acc[:, ch] == tie_acc
        assert on_tie.any(), f"channel {ch} never reaches acc == {tie_acc}"
        assert np.all(got[on_tie, ch] == 1.0)
    # Negative slopes negate the weight column; the others are untouched.
    negative = a < 0
    assert np.array_equal(w_new[:, negative], -w[:, negative])
    assert np.array_equal(w_new[:, ~negative], w[:, ~negative])
    # Thresholds are integers within the reachable range [lo, hi + 1] (of the possibly negated accumulator).
    lo, hi = _reachable_range(w_new, -1, 1)
    assert np.all(thresholds[:, 0] >= lo) and np.all(thresholds[:, 0] <= hi + 1)
    assert thresholds[0, 0] == 2 and thresholds[1, 0] == 0  # acc >= 2; -acc >= 0
    assert thresholds[2, 0] == lo[2] and thresholds[4, 0] == lo[4]  # A = 0, always fires
    assert thresholds[3, 0] == hi[3] + 1  # A = 0, never fires
    assert thresholds[5, 0] == lo[5] and thresholds[6, 0] == hi[6] + 1  # clipped
    assert thresholds[10, 0] == hi[10] + 1 and thresholds[11, 0] == lo[11]
    assert thresholds[12, 0] == 2  # acc >= ceil(1.5)
    assert thresholds[13, 0] == -1  # on the negated accumulator: 3 * (-acc) + 3 >= 0 <=> -acc >= -1
    assert np.all(got[:, 2] == 1) and np.all(got[:, 4] == 1) and np.all(got[:, 3] == -1)
    assert np.all(got[:, 5] == 1) and np.all(got[:, 6] == -1)


def test_bipolar_matmul_random_larger_layer():
    rng = np.random.default_rng(1)
    k, n = 64, 16
    w = _bipolar_weights(k, n, seed=2)
    # Dyadic slopes of all signs, offsets on even integers (acc has the parity of K) so that ties happen.
    a = rng.choice([-2.0, -0.5, -0.25, 0.0, 0.25, 1.0, 4.0], size=n).astype(np.float32)
    b = (2 * rng.integers(-10, 11, size=n) * np.abs(np.where(a == 0, 1, a))).astype(np.float32)
    model = _affine_layer(w, a, b, "BIPOLAR", "BIPOLAR", [500, k])
    x = rng.choice([-1.0, 1.0], size=(500, k)).astype(np.float32)
    expected = run_graph(model, x)
    new, thresholds, w_new = _absorbed(model)
    assert np.array_equal(run_graph(new, x), expected)
    lo, hi = _reachable_range(w_new, -1, 1)
    assert np.all(thresholds[:, 0] >= lo) and np.all(thresholds[:, 0] <= hi + 1)


UINT8_CHANNELS = [
    (1.0, -300.0),    # acc >= 300, reachable exactly
    (-1.0, 17.0),     # acc <= 17
    (0.5, 64.0),      # acc >= -128
    (0.0, 3.0),       # always
    (0.0, -3.0),      # never
    (0.25, 1000.0),   # acc >= -4000: below lo
    (1.0, -10000.0),  # acc >= 10000: above hi
    (-0.125, -1.0),   # acc <= -8
    (3.0, 0.0),       # acc >= 0
    (-4.0, -508.0),   # acc <= -127
]


def _uint8_weights(n: int) -> np.ndarray:
    # K = 2 with every sign pattern, so that lo and hi differ between channels.
    patterns = np.asarray([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=np.float32)
    return np.stack([patterns[i % 4] for i in range(n)], axis=1)


def test_uint8_matmul_exact_on_every_input_pair():
    a = np.asarray([c[0] for c in UINT8_CHANNELS], dtype=np.float32)
    b = np.asarray([c[1] for c in UINT8_CHANNELS], dtype=np.float32)
    w = _uint8_weights(len(a))
    x = np.asarray(list(itertools.product(range(256), repeat=2)), dtype=np.float32)  # all 65536 input pairs
    model = _affine_layer(w, a, b, "UINT8", "BIPOLAR", list(x.shape))
    expected = run_graph(model, x)
    acc = _run_acc(model, x)

    new, thresholds, w_new = _absorbed(model)

    got = run_graph(new, x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, np.where(a * acc.astype(np.float64) + b >= 0, 1.0, -1.0))
    assert new.get_tensor_datatype(new.graph.node[0].output[0]).is_integer()
    lo, hi = _reachable_range(w_new, 0, 255)
    assert np.all(thresholds[:, 0] >= lo) and np.all(thresholds[:, 0] <= hi + 1)
    assert thresholds[3, 0] == lo[3] and thresholds[4, 0] == hi[4] + 1
    assert thresholds[5, 0] == lo[5] and thresholds[6, 0] == hi[6] + 1
    for ch, tie_acc in [(0, 300), (1, 17), (2, -128), (7, -8), (8, 0), (9, -127)]:
        on_tie = acc[:, ch] == tie_acc
        assert on_tie.any(), f"channel {ch} never reaches acc == {tie_acc}"
        assert np.all(got[on_tie, ch] == 1.0)
        assert np.all(expected[on_tie, ch] == 1.0)


def test_uint8_matmul_random_inputs():
    rng = np.random.default_rng(3)
    k, n = 16, 12
    w = _bipolar_weights(k, n, seed=4)
    a = rng.choice([-1.0, -0.5, 0.0, 0.5, 2.0], size=n).astype(np.float32)
    b = rng.integers(-2000, 2000, size=n).astype(np.float32)
    x = rng.integers(0, 256, size=(400, k)).astype(np.float32)
    model = _affine_layer(w, a, b, "UINT8", "BIPOLAR", list(x.shape))
    expected = run_graph(model, x)
    new, thresholds, w_new = _absorbed(model)
    assert np.array_equal(run_graph(new, x), expected)
    lo, hi = _reachable_range(w_new, 0, 255)
    assert np.all(thresholds[:, 0] >= lo) and np.all(thresholds[:, 0] <= hi + 1)


def test_multi_step_thresholds_with_mixed_slopes():
    """Several thresholds per channel (a 2-bit output) survive the negation of a channel: counts stay equal."""
    k = 6
    a = np.asarray([1.0, -1.0, 0.5, -2.0, 0.0], dtype=np.float32)
    b = np.asarray([0.0, 0.0, 1.0, -2.0, 0.25], dtype=np.float32)
    thresholds = np.asarray([[-2.0, 0.0, 2.0]], dtype=np.float32)  # shared (1, T), ties reachable
    w = _bipolar_weights(k, len(a), seed=5)
    model = _affine_layer(w, a, b, "BIPOLAR", "BIPOLAR", [2 ** k, k], thresholds=thresholds, out_dtype="UINT2")
    x = _all_bipolar(k)
    expected = run_graph(model, x)
    new, moved, w_new = _absorbed(model)
    assert moved.shape == (len(a), 3)
    assert np.all(np.diff(moved, axis=1) >= 0), "each channel's thresholds stay ascending"
    lo, hi = _reachable_range(w_new, -1, 1)
    assert np.all(moved >= lo[:, None]) and np.all(moved <= hi[:, None] + 1)
    assert np.array_equal(run_graph(new, x), expected)
    assert len(np.unique(expected)) > 2


def test_chain_of_mul_sub_div_add():
    k = 6
    w = _bipolar_weights(k, 4, seed=6)
    prefix = [("Mul", np.float32(2.0)), ("Sub", np.asarray([1.0, -1.0, 0.0, 3.0], dtype=np.float32)),
              ("Div", np.asarray([[2.0, -4.0, 0.5, -1.0]], dtype=np.float32))]
    a = np.asarray([1.0, 1.0, -1.0, 0.5], dtype=np.float32)
    b = np.asarray([-1.5, 0.25, 0.0, -1.0], dtype=np.float32)
    model = _affine_layer(w, a, b, "BIPOLAR", "BIPOLAR", [2 ** k, k], prefix=prefix)
    x = _all_bipolar(k)
    expected = run_graph(model, x)
    new, thresholds, _ = _absorbed(model)
    assert _op_types(new) == ["MatMul", "MultiThreshold"]
    assert np.array_equal(run_graph(new, x), expected)


@pytest.mark.parametrize("k", [5, 6])
def test_xnor_popcount_with_bipolar_correction(k):
    """XnorPopcountMatMul -> Mul(2) -> Add(-K) -> MultiThreshold(0): fires where 2p - K >= 0, i.e. p >= K / 2."""
    n = 4
    w = np.random.default_rng(7).integers(0, 2, size=(k, n)).astype(np.float32)
    nodes = [helper.make_node("XnorPopcountMatMul", ["x", "w"], ["acc"], domain=QONNX),
             helper.make_node("Mul", ["acc", "two"], ["m"]), helper.make_node("Add", ["m", "minus_k"], ["s"]),
             _threshold_node("s")]
    model = make_model(nodes, [2 ** k, k], [2 ** k, n], {"w": w, "two": np.float32(2.0), "minus_k": np.float32(-k),
                                                     "thr": np.zeros((1, 1))},
                   dtypes={"x": "BINARY", "w": "BINARY"})
    x = _all_binary(k)
    expected = run_graph(model, x)
    acc = _run_acc(model, x)
    new, thresholds, w_new = _absorbed(model)
    assert _op_types(new) == ["XnorPopcountMatMul", "MultiThreshold"]
    assert np.array_equal(w_new, w)
    assert np.all(thresholds == np.ceil(k / 2))
    got = run_graph(new, x)
    assert np.array_equal(got, expected)
    if k % 2 == 0:  # p = K / 2 gives a bipolar dot product of exactly 0, which fires
        assert np.all(got[acc == k // 2] == 1.0)


def test_xnor_popcount_per_channel_all_signs_exhaustive():
    k = 6
    a = np.asarray([1.0, -1.0, 0.0, 0.0, 0.5, -0.25, 2.0, -2.0], dtype=np.float32)
    b = np.asarray([0.0, 2.0, 1.0, -1.0, -1.0, 0.5, -20.0, 20.0], dtype=np.float32)
    w = np.random.default_rng(8).integers(0, 2, size=(k, len(a))).astype(np.float32)
    nodes = [helper.make_node("XnorPopcountMatMul", ["x", "w"], ["acc"], domain=QONNX),
             helper.make_node("Mul", ["acc", "two"], ["m"]), helper.make_node("Add", ["m", "minus_k"], ["s"]),
             helper.make_node("Mul", ["s", "a"], ["sa"]), helper.make_node("Add", ["sa", "b"], ["sb"]),
             _threshold_node("sb")]
    model = make_model(nodes, [2 ** k, k], [2 ** k, len(a)],
                   {"w": w, "two": np.float32(2.0), "minus_k": np.float32(-k), "a": a, "b": b, "thr": np.zeros((1, 1))},
                   dtypes={"x": "BINARY", "w": "BINARY"})
    x = _all_binary(k)
    expected = run_graph(model, x)
    dot = 2.0 * _run_acc(model, x).astype(np.float64) - k
    new, thresholds, w_new = _absorbed(model)
    got = run_graph(new, x)
    assert np.array_equal(got, expected)
    assert np.array_equal(got, np.where(a * dot + b >= 0, 1.0, -1.0))
    negative = a < 0
    assert np.array_equal(w_new[:, negative], 1 - w[:, negative])  # bits flip: p -> K - p
    assert np.array_equal(w_new[:, ~negative], w[:, ~negative])
    assert set(np.unique(w_new)) <= {0.0, 1.0}
    assert np.all(thresholds >= 0) and np.all(thresholds <= k + 1)
    assert thresholds[2, 0] == 0 and thresholds[3, 0] == k + 1  # A = 0: always / never
    assert thresholds[6, 0] == k + 1 and thresholds[7, 0] == 0  # clipped above / below
    # Ties: channel 0 fires at dot = 0, channel 1 at -dot + 2 = 0 (dot = 2), channel 4 at dot = 2.
    for ch, tie_dot in [(0, 0), (1, 2), (4, 2), (5, 2)]:
        on_tie = dot[:, ch] == tie_dot
        assert on_tie.any()
        assert np.all(got[on_tie, ch] == 1.0)


def test_xnor_popcount_random_inputs():
    rng = np.random.default_rng(9)
    k, n = 48, 10
    a = rng.choice([-1.0, -0.5, 0.0, 0.5, 1.0], size=n).astype(np.float32)
    b = rng.integers(-12, 13, size=n).astype(np.float32)
    w = rng.integers(0, 2, size=(k, n)).astype(np.float32)
    nodes = [helper.make_node("XnorPopcountMatMul", ["x", "w"], ["acc"], domain=QONNX),
             helper.make_node("Mul", ["acc", "two"], ["m"]), helper.make_node("Add", ["m", "minus_k"], ["s"]),
             helper.make_node("Mul", ["s", "a"], ["sa"]), helper.make_node("Add", ["sa", "b"], ["sb"]),
             _threshold_node("sb")]
    model = make_model(nodes, [300, k], [300, n],
                   {"w": w, "two": np.float32(2.0), "minus_k": np.float32(-k), "a": a, "b": b, "thr": np.zeros((1, 1))},
                   dtypes={"x": "BINARY", "w": "BINARY"})
    x = rng.integers(0, 2, size=(300, k)).astype(np.float32)
    expected = run_graph(model, x)
    new, thresholds, _ = _absorbed(model)
    assert np.array_equal(run_graph(new, x), expected)
    assert np.all(thresholds >= 0) and np.all(thresholds <= k + 1)


def test_nhwc_feature_map_with_layout():
    """A lowered convolution: MatMul on (N, H, W, K) patches, per-channel affine, NHWC MultiThreshold."""
    rng = np.random.default_rng(10)
    k, n = 6, 5
    w = _bipolar_weights(k, n, seed=11)
    a = np.asarray([1.0, -1.0, 0.0, 0.5, -0.5], dtype=np.float32)
    b = np.asarray([-2.0, 0.0, 0.0, 1.0, 1.0], dtype=np.float32)
    model = _affine_layer(w, a, b, "BIPOLAR", "BIPOLAR", [2, 4, 4, k], data_layout="NHWC")
    x = rng.choice([-1.0, 1.0], size=(2, 4, 4, k)).astype(np.float32)
    expected = run_graph(model, x)
    new, thresholds, _ = _absorbed(model)
    assert np.array_equal(run_graph(new, x), expected)


def test_nchw_rank4_threshold_is_left_alone():
    """Without an NHWC layout a rank-4 MultiThreshold reads channels on axis 1, not the MatMul's last axis."""
    w = _bipolar_weights(6, 5, seed=12)
    model = _affine_layer(w, np.ones(5), np.zeros(5), "BIPOLAR", "BIPOLAR", [1, 5, 5, 6])
    new = model.transform(AbsorbAffineIntoThreshold())
    assert _op_types(new) == ["MatMul", "Mul", "Add", "MultiThreshold"]


def test_float_matmul_is_left_alone():
    w = _bipolar_weights(6, 3, seed=13)
    model = _affine_layer(w, np.ones(3), np.zeros(3), "FLOAT32", "BIPOLAR", [4, 6])
    new = model.transform(AbsorbAffineIntoThreshold())
    assert _op_types(new) == ["MatMul", "Mul", "Add", "MultiThreshold"]


def test_non_channel_constant_is_left_alone():
    """An Add whose constant varies along the batch axis is not a per-channel affine map."""
    w = _bipolar_weights(6, 3, seed=14)
    model = _affine_layer(w, np.ones(3), np.arange(12, dtype=np.float32).reshape(4, 3), "BIPOLAR", "BIPOLAR", [4, 6])
    new = model.transform(AbsorbAffineIntoThreshold())
    assert _op_types(new) == ["MatMul", "Mul", "Add", "MultiThreshold"]
    assert np.array_equal(new.get_initializer("w"), w)


def test_chain_not_ending_in_threshold_is_left_alone():
    w = _bipolar_weights(6, 3, seed=15)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["acc"]), helper.make_node("Mul", ["acc", "a"], ["m"]),
             helper.make_node("Relu", ["m"], ["y"])]
    model = make_model(nodes, [4, 6], [4, 3], {"w": w, "a": np.float32(-1.0)},
                       dtypes={"x": "BIPOLAR", "w": "BIPOLAR"})
    new = model.transform(AbsorbAffineIntoThreshold())
    assert _op_types(new) == ["MatMul", "Mul", "Relu"]
    assert np.array_equal(new.get_initializer("w"), w)
