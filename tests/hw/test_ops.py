"""The hardware ops of ``dataflow.onnx`` one node at a time: qonnx's executor against plain numpy, and the
cycle / folding / memory / LUT models against hand-computed values from each op's docstring."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from onnx import AttributeProto, TensorProto, helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.ops import custom_op
from bnnflow.hw.ops.base import DOMAIN, HWOp, Memory

RNG_SEED = 1234


# --------------------------------------------------------------------------------------------- helpers


def make_node(op_type: str, inputs: list[str], **attrs) -> object:
    """A ``bnnflow.hw`` node with exactly the attributes given; they must be declared by the op, and every
    required attribute the op declares must be given."""
    node = helper.make_node(op_type, inputs, ["y"], domain=DOMAIN, name=f"{op_type}_test")
    for key, value in attrs.items():
        kind = AttributeProto.INTS if isinstance(value, list) else None
        node.attribute.append(helper.make_attribute(key, value, attr_type=kind))
    declared = custom_op[op_type](node).get_nodeattr_types()
    assert set(attrs) <= set(declared), f"undeclared attributes {set(attrs) - set(declared)}"
    required = {name for name, spec in declared.items() if spec[1]}
    assert required <= set(attrs), f"missing required attributes {required - set(attrs)}"
    return node


def make_model(node, x_shape, x_dtype: str, out_shape, out_dtype: str,
               initializers: dict[str, tuple[np.ndarray, str]] | None = None) -> ModelWrapper:
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, list(out_shape))],
    )
    onnx_model = helper.make_model(graph, producer_name="bnnflow-tests", opset_imports=[
        helper.make_opsetid("", 13), helper.make_opsetid(DOMAIN, 1)])
    model = ModelWrapper(onnx_model)
    for name, (value, dtype) in (initializers or {}).items():
        model.set_initializer(name, np.asarray(value, dtype=np.float32))
        model.set_tensor_datatype(name, DataType[dtype])
    model.set_tensor_datatype("x", DataType[x_dtype])
    model.set_tensor_datatype("y", DataType[out_dtype])
    return model


def run(model: ModelWrapper, x: np.ndarray) -> np.ndarray:
    out = execute_onnx(model, {"x": np.asarray(x, dtype=np.float32)})["y"]
    assert out.dtype == np.float32  # qonnx's convention: float containers
    return out


def op_of(model: ModelWrapper):
    return getCustomOp(model.graph.node[0])


def ascending_thresholds(rng, channels: int, count: int, low: int, high: int, acc: np.ndarray | None = None):
    """(channels, count) ascending integer thresholds; when ``acc`` is given, some thresholds are copied from
    accumulator values so that ``acc == T`` (which must count) occurs."""
    t = rng.integers(low, high + 1, size=(channels, count))
    if acc is not None:
        flat = acc.reshape(-1, channels)
        for c in range(channels):
            t[c, 0] = flat[rng.integers(len(flat)), c]
    return np.sort(t, axis=1)


def np_threshold(acc: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Independent reference: per channel, the number of thresholds T with T <= acc (loops, no broadcasting
    tricks of the kernel)."""
    out = np.zeros(acc.shape, dtype=np.int64)
    t = np.broadcast_to(thresholds, (acc.shape[-1], thresholds.shape[1]))
    for index in np.ndindex(acc.shape):
        c = index[-1]
        out[index] = sum(1 for value in t[c] if value <= acc[index])
    return out


def divisor_set(n: int) -> set[int]:
    return {d for d in range(1, n + 1) if n % d == 0}


# --------------------------------------------------------------------------------------------- MVTU


def mvtu_node(mw, mh, *, xnor, thresholds, in_dtype, w_dtype, out_dtype, acc_dtype, pe=1, simd=1, vectors=()):
    inputs = ["x", "w"] + (["t"] if thresholds else [])
    return make_node("MVTU", inputs, MW=mw, MH=mh, PE=pe, SIMD=simd, binaryXnorMode=int(xnor),
                     noActivation=int(not thresholds), numInputVectors=list(vectors), inputDataType=in_dtype,
                     outputDataType=out_dtype, weightDataType=w_dtype, accDataType=acc_dtype)


def test_mvtu_xnor_with_thresholds_matches_bipolar_dot_product():
    rng = np.random.default_rng(RNG_SEED)
    n, mw, mh = 16, 24, 8
    x = rng.integers(0, 2, size=(n, mw))
    w = rng.integers(0, 2, size=(mw, mh))
    acc = (2 * x - 1) @ (2 * w - 1)  # bits stand for +-1: the bipolar dot product, in [-MW, MW]
    assert (acc < 0).any() and (acc > 0).any()
    t = ascending_thresholds(rng, mh, 1, -mw, mw, acc)
    node = mvtu_node(mw, mh, xnor=True, thresholds=True, in_dtype="BINARY", w_dtype="BINARY", out_dtype="BINARY",
                     acc_dtype="INT6", pe=2, simd=4)
    model = make_model(node, (n, mw), "BINARY", (n, mh), "BINARY", {"w": (w, "BINARY"), "t": (t, "INT6")})
    got = run(model, x)
    expected = np_threshold(acc, t)
    assert got.shape == (n, mh)
    assert np.array_equal(got, expected)
    assert set(np.unique(got)) == {0, 1}  # a non-trivial binary output
    popcount_thresholds = np_threshold((acc + mw) // 2, t)  # the old semantics: thresholds on the popcount
    assert not np.array_equal(got, popcount_thresholds)


def test_mvtu_xnor_with_output_bias_gives_signed_codes():
    rng = np.random.default_rng(RNG_SEED + 9)
    n, mw, mh = 20, 16, 6
    x = rng.integers(0, 2, size=(n, mw))
    w = rng.integers(0, 2, size=(mw, mh))
    acc = (2 * x - 1) @ (2 * w - 1)
    t = ascending_thresholds(rng, mh, 3, -8, 8, acc)
    node = make_node("MVTU", ["x", "w", "t"], MW=mw, MH=mh, PE=3, SIMD=8, binaryXnorMode=1, outputBias=-2,
                     inputDataType="BINARY", outputDataType="INT2", weightDataType="BINARY", accDataType="INT6")
    model = make_model(node, (n, mw), "BINARY", (n, mh), "INT2", {"w": (w, "BINARY"), "t": (t, "INT6")})
    got = run(model, x)
    assert np.array_equal(got, np_threshold(acc, t) - 2)
    assert set(np.unique(got)) == {-2, -1, 0, 1}


def test_mvtu_xnor_without_activation_gives_bipolar_dot_product():
    rng = np.random.default_rng(RNG_SEED + 1)
    n, mw, mh = 8, 32, 10
    x = rng.integers(0, 2, size=(n, mw))
    w = rng.integers(0, 2, size=(mw, mh))
    expected = np.zeros((n, mh), dtype=np.int64)
    for i, j in itertools.product(range(n), range(mh)):
        expected[i, j] = sum(1 if x[i, k] == w[k, j] else -1 for k in range(mw))  # agreements minus disagreements
    node = mvtu_node(mw, mh, xnor=True, thresholds=False, in_dtype="BINARY", w_dtype="BINARY", out_dtype="INT7",
                     acc_dtype="INT7")
    model = make_model(node, (n, mw), "BINARY", (n, mh), "INT7", {"w": (w, "BINARY")})
    got = run(model, x)
    assert np.array_equal(got, expected)
    assert got.min() >= -mw and got.max() <= mw and (got < 0).any()


def test_mvtu_xnor_conv_form_over_input_vectors():
    """numInputVectors = [OH, OW]: every pixel's vector goes through the same matrix."""
    rng = np.random.default_rng(RNG_SEED + 2)
    n, oh, ow, mw, mh = 3, 2, 3, 18, 4
    x = rng.integers(0, 2, size=(n, oh, ow, mw))
    w = rng.integers(0, 2, size=(mw, mh))
    acc = np.zeros((n, oh, ow, mh), dtype=np.int64)
    for b, i, j in itertools.product(range(n), range(oh), range(ow)):
        acc[b, i, j] = (2 * x[b, i, j] - 1) @ (2 * w - 1)
    t = ascending_thresholds(rng, mh, 1, -mw, mw, acc)
    node = mvtu_node(mw, mh, xnor=True, thresholds=True, in_dtype="BINARY", w_dtype="BINARY", out_dtype="BINARY",
                     acc_dtype="INT6", vectors=(oh, ow))
    model = make_model(node, (n, oh, ow, mw), "BINARY", (n, oh, ow, mh), "BINARY",
                       {"w": (w, "BINARY"), "t": (t, "INT6")})
    got = run(model, x)
    assert got.shape == (n, oh, ow, mh)
    assert np.array_equal(got, np_threshold(acc, t))


@pytest.mark.parametrize("w_dtype", ["BIPOLAR", "INT3"])
def test_mvtu_multibit_without_thresholds_is_integer_dot_product(w_dtype):
    rng = np.random.default_rng(RNG_SEED + 3)
    n, mw, mh = 12, 20, 6
    x = rng.integers(0, 16, size=(n, mw))  # UINT4 codes
    w = rng.choice([-1, 1], size=(mw, mh)) if w_dtype == "BIPOLAR" else rng.integers(-4, 4, size=(mw, mh))
    expected = np.einsum("nk,km->nm", x, w)  # plain integer sums
    node = mvtu_node(mw, mh, xnor=False, thresholds=False, in_dtype="UINT4", w_dtype=w_dtype, out_dtype="INT16",
                     acc_dtype="INT16", pe=3, simd=5)
    model = make_model(node, (n, mw), "UINT4", (n, mh), "INT16", {"w": (w, w_dtype)})
    got = run(model, x)
    assert np.array_equal(got, expected)
    assert (got < 0).any() and (got > 0).any()


def test_mvtu_multibit_with_thresholds_counts_thresholds_at_or_below():
    rng = np.random.default_rng(RNG_SEED + 4)
    n, mw, mh = 20, 16, 6
    x = rng.integers(0, 256, size=(n, mw))  # UINT8 codes
    w = rng.choice([-1, 1], size=(mw, mh))
    acc = x @ w
    t = ascending_thresholds(rng, mh, 3, int(acc.min()), int(acc.max()), acc)  # 3 thresholds: UINT2 output
    node = mvtu_node(mw, mh, xnor=False, thresholds=True, in_dtype="UINT8", w_dtype="BIPOLAR", out_dtype="UINT2",
                     acc_dtype="INT14", pe=2, simd=8)
    model = make_model(node, (n, mw), "UINT8", (n, mh), "UINT2", {"w": (w, "BIPOLAR"), "t": (t, "INT14")})
    got = run(model, x)
    expected = np.zeros((n, mh), dtype=np.int64)
    for i, j in itertools.product(range(n), range(mh)):
        expected[i, j] = int(np.sum(t[j] <= acc[i, j]))
    assert np.array_equal(got, expected)
    assert len(np.unique(got)) > 1


@pytest.mark.parametrize(("mw", "mh", "pe", "simd", "vectors", "cycles"), [
    (784, 64, 1, 1, (), 784 * 64),
    (784, 64, 16, 49, (), 16 * 4),
    (64, 10, 10, 64, (), 1),
    (27, 64, 4, 3, (30, 30), 900 * 9 * 16),
    (576, 128, 32, 64, (12, 12), 144 * 9 * 4),
])
def test_mvtu_cycles_follow_docstring_formula(mw, mh, pe, simd, vectors, cycles):
    # prod(numInputVectors) * (MW / SIMD) * (MH / PE)
    node = mvtu_node(mw, mh, xnor=True, thresholds=True, in_dtype="BINARY", w_dtype="BINARY", out_dtype="BINARY",
                     acc_dtype="UINT10", pe=pe, simd=simd, vectors=vectors)
    assert custom_op["MVTU"](node).get_exp_cycles() == cycles


def test_mvtu_legal_foldings_are_exactly_the_divisor_pairs():
    node = mvtu_node(12, 18, xnor=True, thresholds=True, in_dtype="BINARY", w_dtype="BINARY", out_dtype="BINARY",
                     acc_dtype="UINT4")
    folds = custom_op["MVTU"](node).legal_foldings()
    pairs = [(f["PE"], f["SIMD"]) for f in folds]
    assert all(set(f) == {"PE", "SIMD"} for f in folds)
    assert len(pairs) == len(set(pairs))  # no duplicates
    assert set(pairs) == {(pe, simd) for pe in (1, 2, 3, 6, 9, 18) for simd in (1, 2, 3, 4, 6, 12)}


@pytest.mark.parametrize(("mw", "mh", "pe", "simd", "w_dtype", "w_bits"), [
    (64, 64, 1, 1, "BINARY", 1),
    (64, 64, 4, 16, "BINARY", 1),
    (784, 64, 8, 49, "BIPOLAR", 1),
    (20, 6, 3, 5, "INT3", 3),
])
def test_mvtu_weight_memories_per_pe(mw, mh, pe, simd, w_dtype, w_bits):
    xnor = w_dtype == "BINARY"
    node = mvtu_node(mw, mh, xnor=xnor, thresholds=False, in_dtype="BINARY" if xnor else "UINT4", w_dtype=w_dtype,
                     out_dtype="INT16", acc_dtype="INT16", pe=pe, simd=simd)
    mems = custom_op["MVTU"](node).memories()
    depth = (mw // simd) * (mh // pe)
    # bnn_mvtu's ROM: words of the PE lanes' SIMD weights side by side, in banks of 2048 words (a narrow ROM: as
    # many as a block holds, 16384 of one bit); then the input double buffer (two vectors of SF words, rounded up
    # to a power of two)
    weights, buffer = mems[:-1], mems[-1]
    assert all(m.width == pe * simd * w_bits and m.depth <= max(2048, 16384 // m.width) for m in weights)
    assert sum(m.depth * m.count for m in weights) == depth
    assert sum(m.bits for m in weights) == mw * mh * w_bits  # every weight bit stored exactly once
    assert buffer == Memory(simd * (1 if xnor else 4), 2 << max(1, (mw // simd - 1).bit_length()))


def test_mvtu_threshold_memories_follow_the_weights():
    # binary output: 1 threshold per channel of accDataType bits, MH / PE channels per PE
    node = mvtu_node(64, 32, xnor=True, thresholds=True, in_dtype="BINARY", w_dtype="BINARY", out_dtype="BINARY",
                     acc_dtype="UINT7", pe=4, simd=8)
    mems = custom_op["MVTU"](node).memories()
    # weights, the input buffer (8 words of 8 bits, twice), one ROM of the 4 lanes' thresholds
    assert mems == [Memory(4 * 8, 8 * 8, logic_when_shallow=True), Memory(8, 2 * 8), Memory(4 * 1 * 7, 32 // 4)]
    # 2-bit output: 3 thresholds per channel
    node = mvtu_node(16, 6, xnor=False, thresholds=True, in_dtype="UINT8", w_dtype="BIPOLAR", out_dtype="UINT2",
                     acc_dtype="INT14", pe=2, simd=8)
    mems = custom_op["MVTU"](node).memories()
    assert mems == [Memory(2 * 8, 2 * 3, logic_when_shallow=True), Memory(8 * 8, 2 * 2), Memory(2 * 3 * 14, 3)]


@pytest.mark.parametrize("xnor", [True, False])
@pytest.mark.parametrize("lut_inputs", [4, 6])
def test_mvtu_luts_positive_and_growing_with_pe_and_simd(xnor, lut_inputs):
    def luts(pe, simd):
        node = mvtu_node(64, 64, xnor=xnor, thresholds=True, in_dtype="BINARY" if xnor else "UINT8",
                         w_dtype="BINARY" if xnor else "BIPOLAR", out_dtype="BINARY",
                         acc_dtype="UINT7" if xnor else "INT16", pe=pe, simd=simd)
        return custom_op["MVTU"](node).lut_estimate(lut_inputs)

    by_pe = [luts(pe, 4) for pe in (1, 2, 4, 8, 16, 32, 64)]
    assert by_pe[0] > 0
    assert all(a < b for a, b in zip(by_pe, by_pe[1:]))
    by_simd = [luts(4, simd) for simd in (1, 2, 4, 8, 16, 32, 64)]
    assert all(a < b for a, b in zip(by_simd, by_simd[1:]))


# --------------------------------------------------------------------------------------------- SlidingWindow


def window_node(c, h, w, k, stride, dtype="BINARY", simd=1):
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    return make_node("SlidingWindow", ["x"], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=list(k),
                     Stride=list(stride), SIMD=simd, inputDataType=dtype, outputDataType=dtype), (oh, ow)


def np_patches(x, k, stride):
    """Each output pixel's (kh, kw, C) patch, channels fastest, by explicit loops."""
    n, h, w, c = x.shape
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    out = np.zeros((n, oh, ow, k[0] * k[1] * c), dtype=np.int64)
    for b, i, j in itertools.product(range(n), range(oh), range(ow)):
        values = []
        for di in range(k[0]):
            for dj in range(k[1]):
                for ch in range(c):
                    values.append(x[b, i * stride[0] + di, j * stride[1] + dj, ch])
        out[b, i, j] = values
    return out


@pytest.mark.parametrize(("shape", "k", "stride", "dtype"), [
    ((2, 5, 5, 3), (3, 3), (1, 1), "UINT8"),
    ((2, 6, 7, 4), (2, 3), (2, 2), "BINARY"),
    ((1, 4, 4, 2), (1, 1), (1, 1), "INT4"),
])
def test_sliding_window_emits_patches_channels_fastest(shape, k, stride, dtype):
    rng = np.random.default_rng(RNG_SEED + 5)
    dt = DataType[dtype]
    x = rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape)
    node, (oh, ow) = window_node(shape[3], shape[1], shape[2], k, stride, dtype)
    model = make_model(node, shape, dtype, (shape[0], oh, ow, k[0] * k[1] * shape[3]), dtype)
    got = run(model, x)
    assert np.array_equal(got, np_patches(x, k, stride))


@pytest.mark.parametrize(("c", "hw", "k", "simd", "cycles"), [
    # max(H * W, OH * OW * kh * kw) * C / SIMD: patches read from the line buffer while the next rows stream in
    (4, 6, 3, 1, 16 * 9 * 4),
    (4, 6, 3, 2, 16 * 9 * 2),
    (3, 32, 3, 3, 900 * 9),
    (64, 30, 3, 8, 784 * 9 * 8),
    (16, 5, 1, 4, 25 * 4),
    (2, 8, 3, 1, 64 * 2),  # stride 3 (below): fewer patches than pixels, so filling the map is the longer part
])
def test_sliding_window_cycles(c, hw, k, simd, cycles):
    node, _ = window_node(c, hw, hw, (k, k), (3, 3) if cycles == 64 * 2 else (1, 1), simd=simd)
    assert custom_op["SlidingWindow"](node).get_exp_cycles() == cycles


def test_sliding_window_folding_memory_and_luts():
    node, _ = window_node(12, 8, 8, (3, 3), (1, 1), dtype="UINT4")
    op = custom_op["SlidingWindow"](node)
    assert sorted(f["SIMD"] for f in op.legal_foldings()) == sorted(divisor_set(12))
    assert all(set(f) == {"SIMD"} for f in op.legal_foldings())
    luts = []
    for simd in sorted(divisor_set(12)):
        op.set_nodeattr("SIMD", simd)
        # a ring of 6 rows of the 8-pixel-wide map, SIMD values of 4 bits per word: 3 + 1 for the kernel and the
        # stride, 2 more so the next frame's first 3 rows stream in while the last output row holds its 3
        assert op.ring_rows() == 6
        assert op.memories() == [Memory(simd * 4, 6 * 8 * (12 // simd))]
        luts.append(op.lut_estimate(6))
    # the line buffer's control (counters, addresses, handshakes) outweighs the lanes: about flat over SIMD
    assert luts[0] > 0
    assert max(luts) < 1.3 * min(luts)


# --------------------------------------------------------------------------------------------- StreamingMaxPool


def pool_node(c, h, w, k, stride, dtype="BINARY", pe=1):
    return make_node("StreamingMaxPool", ["x"], NumChannels=c, ImgDim=[h, w], PoolDim=list(k), Stride=list(stride),
                     PE=pe, inputDataType=dtype, outputDataType=dtype)


@pytest.mark.parametrize(("shape", "k", "stride", "dtype"), [
    ((3, 4, 4, 5), (2, 2), (2, 2), "BINARY"),
    ((2, 6, 6, 3), (2, 2), (2, 2), "INT4"),
    ((2, 5, 7, 2), (3, 3), (2, 2), "UINT8"),
])
def test_streaming_maxpool_matches_window_max(shape, k, stride, dtype):
    rng = np.random.default_rng(RNG_SEED + 6)
    dt = DataType[dtype]
    x = rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape)
    n, h, w, c = shape
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    expected = np.zeros((n, oh, ow, c), dtype=np.int64)
    for b, i, j, ch in itertools.product(range(n), range(oh), range(ow), range(c)):
        expected[b, i, j, ch] = x[b, i * stride[0]: i * stride[0] + k[0], j * stride[1]: j * stride[1] + k[1], ch].max()
    model = make_model(pool_node(c, h, w, k, stride, dtype), shape, dtype, (n, oh, ow, c), dtype)
    got = run(model, x)
    assert np.array_equal(got, expected)
    if dtype == "BINARY":  # max on bits is an OR
        ors = np.zeros_like(expected)
        for b, i, j, ch in itertools.product(range(n), range(oh), range(ow), range(c)):
            ors[b, i, j, ch] = int(np.any(x[b, 2 * i: 2 * i + 2, 2 * j: 2 * j + 2, ch]))
        assert np.array_equal(got, ors)


@pytest.mark.parametrize(("c", "hw", "pe", "cycles"), [
    (6, 4, 3, 4 * 4 * 2),  # H * W * C / PE
    (64, 28, 1, 28 * 28 * 64),
    (128, 10, 32, 100 * 4),
])
def test_streaming_maxpool_cycles(c, hw, pe, cycles):
    assert custom_op["StreamingMaxPool"](pool_node(c, hw, hw, (2, 2), (2, 2), pe=pe)).get_exp_cycles() == cycles


def test_streaming_maxpool_folding_and_luts():
    op = custom_op["StreamingMaxPool"](pool_node(24, 8, 8, (2, 2), (2, 2), dtype="UINT2"))
    assert [f["PE"] for f in op.legal_foldings()] == sorted(divisor_set(24))
    luts = []
    for pe in sorted(divisor_set(24)):
        op.set_nodeattr("PE", pe)
        # one output row of running maxima, read and written in the same cycle: LUT RAM
        assert op.memories() == [Memory(pe * 2, (8 // 2) * (24 // pe), asynchronous=True)]
        luts.append(op.lut_estimate(4))
    assert luts[0] > 0 and all(a < b for a, b in zip(luts, luts[1:]))


# --------------------------------------------------------------------------------------------- Thresholding


def threshold_node(c, vectors, in_dtype, out_dtype, pe=1):
    return make_node("Thresholding", ["x", "t"], NumChannels=c, PE=pe, numInputVectors=list(vectors),
                     inputDataType=in_dtype, outputDataType=out_dtype)


@pytest.mark.parametrize("shared", [False, True])
def test_thresholding_counts_thresholds_at_or_below(shared):
    rng = np.random.default_rng(RNG_SEED + 7)
    n, vectors, c = 4, (3, 2), 5
    x = rng.integers(-128, 128, size=(n, *vectors, c))  # INT8
    t = ascending_thresholds(rng, 1 if shared else c, 3, -100, 100)
    t[0, 1] = x.reshape(-1, c)[0, 0]  # an input exactly on a threshold
    t = np.sort(t, axis=1)
    node = threshold_node(c, vectors, "INT8", "UINT2", pe=5)
    model = make_model(node, (n, *vectors, c), "INT8", (n, *vectors, c), "UINT2", {"t": (t, "INT8")})
    got = run(model, x)
    expected = np_threshold(x, t)
    assert np.array_equal(got, expected)
    assert set(np.unique(got)) == {0, 1, 2, 3}


@pytest.mark.parametrize(("c", "vectors", "pe", "cycles"), [
    (64, (), 1, 64),  # prod(numInputVectors) * C / PE
    (64, (), 16, 4),
    (10, (4, 5), 2, 20 * 5),
    (12, (3, 3), 12, 9),
])
def test_thresholding_cycles(c, vectors, pe, cycles):
    assert custom_op["Thresholding"](threshold_node(c, vectors, "INT8", "BINARY", pe)).get_exp_cycles() == cycles


def test_thresholding_folding_memory_and_luts():
    op = custom_op["Thresholding"](threshold_node(18, (), "INT8", "UINT2"))
    assert [f["PE"] for f in op.legal_foldings()] == sorted(divisor_set(18))
    luts = []
    for pe in sorted(divisor_set(18)):
        op.set_nodeattr("PE", pe)
        # a word of PE lanes' 3 thresholds per channel group, of 9 bits (INT8 and the one above it, all varying)
        assert op.memories() == [Memory(pe * 3 * 9, 18 // pe, used_width=pe * 3 * 9)]
        luts.append(op.lut_estimate(6))
    assert luts[0] > 0 and all(a < b for a, b in zip(luts, luts[1:]))


# --------------------------------------------------------------------------------------------- LabelSelect


def label_node(labels, in_dtype="UINT7", pe=1):
    return make_node("LabelSelect", ["x"], Labels=labels, PE=pe, inputDataType=in_dtype, outputDataType="UINT4")


def test_label_select_is_argmax_with_ties_to_lower_index():
    rng = np.random.default_rng(RNG_SEED + 8)
    n, labels = 64, 10
    x = rng.integers(0, 4, size=(n, labels))  # a small range: many ties
    x[0] = 3  # all tied: label 0
    x[1, :] = 0
    x[1, [7, 9]] = 2  # tie between 7 and 9: label 7
    expected = np.array([[next(j for j in range(labels) if row[j] == row.max())] for row in x])
    model = make_model(label_node(labels, "UINT2", pe=5), (n, labels), "UINT2", (n, 1), "UINT4")
    got = run(model, x)
    assert got.shape == (n, 1)
    assert np.array_equal(got, expected)
    assert got[0, 0] == 0 and got[1, 0] == 7
    assert np.array_equal(got[:, 0], np.argmax(x, axis=1))


@pytest.mark.parametrize(("labels", "pe", "cycles"), [(10, 1, 10), (10, 5, 2), (10, 10, 1), (1000, 8, 125)])
def test_label_select_cycles(labels, pe, cycles):
    assert custom_op["LabelSelect"](label_node(labels, pe=pe)).get_exp_cycles() == cycles  # Labels / PE


def test_label_select_folding_and_luts():
    op = custom_op["LabelSelect"](label_node(12))
    assert [f["PE"] for f in op.legal_foldings()] == sorted(divisor_set(12))
    assert op.memories() == []
    luts = []
    for pe in sorted(divisor_set(12)):
        op.set_nodeattr("PE", pe)
        luts.append(op.lut_estimate(4))
    assert luts[0] > 0 and all(a < b for a, b in zip(luts, luts[1:]))


# --------------------------------------------------------------------------------------------- common


def test_every_op_is_registered_under_the_domain():
    assert set(custom_op) == {"MVTU", "SlidingWindow", "StreamingMaxPool", "Thresholding", "LabelSelect",
                              "AddStreams", "DuplicateStreams", "SumPool", "Downsample", "ChannelPad"}
    for op_type, cls in custom_op.items():
        node = helper.make_node(op_type, ["x"], ["y"], domain=DOMAIN)
        assert type(getCustomOp(node)) is cls and issubclass(cls, HWOp)


def test_infer_node_datatype_sets_the_output_datatype():
    model = make_model(label_node(10), (1, 10), "UINT7", (1, 1), "FLOAT32")
    assert model.get_tensor_datatype("y") == DataType["FLOAT32"]
    op_of(model).infer_node_datatype(model)
    assert model.get_tensor_datatype("y") == DataType["UINT4"]


def test_base_methods_not_implemented_raise():
    class Bare(HWOp):  # HWOp is abstract only in qonnx's execution hooks; nothing of the estimate API defined
        def make_shape_compatible_op(self, model):
            raise AssertionError("not used")

        def execute_node(self, context, graph):
            raise AssertionError("not used")

    op = Bare(helper.make_node("Bare", ["x"], ["y"], domain=DOMAIN, inputDataType="BINARY", outputDataType="BINARY"))
    assert isinstance(op, HWOp)
    with pytest.raises(NotImplementedError, match="Bare"):
        op.get_exp_cycles()
    with pytest.raises(NotImplementedError):
        op.legal_foldings()
    with pytest.raises(NotImplementedError):
        op.lut_estimate(6)
    assert op.memories() == []
    assert op.folding() == {}
    assert op.input_datatype() == DataType["BINARY"]


def test_hwop_itself_cannot_be_instantiated_without_execution_hooks():
    with pytest.raises(TypeError):
        HWOp(helper.make_node("X", ["x"], ["y"], domain=DOMAIN))


def _without_output_shape(model: ModelWrapper) -> ModelWrapper:
    model.graph.output.pop()
    model.graph.output.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, None))
    assert model.get_tensor_shape("y") == []
    return model


def test_shape_inference_of_each_op():
    from qonnx.transformation.infer_shapes import InferShapes

    cases = []
    node, (oh, ow) = window_node(4, 6, 7, (3, 2), (1, 1))
    # like qonnx's Im2Col, whose shape op it reuses, the window's shape op is written for batch 1
    cases.append((make_model(node, (1, 6, 7, 4), "BINARY", (1, oh, ow, 24), "BINARY"), [1, 4, 6, 24]))
    cases.append((make_model(pool_node(5, 6, 6, (2, 2), (2, 2)), (3, 6, 6, 5), "BINARY", (3, 3, 3, 5), "BINARY"),
                  [3, 3, 3, 5]))
    node = mvtu_node(8, 4, xnor=True, thresholds=False, in_dtype="BINARY", w_dtype="BINARY", out_dtype="UINT4",
                     acc_dtype="UINT4", vectors=(2, 2))
    cases.append((make_model(node, (3, 2, 2, 8), "BINARY", (3, 2, 2, 4), "UINT4", {"w": (np.zeros((8, 4)), "BINARY")}),
                  [3, 2, 2, 4]))
    cases.append((make_model(threshold_node(5, (), "INT8", "UINT2"), (3, 5), "INT8", (3, 5), "UINT2",
                             {"t": (np.zeros((5, 3)), "INT8")}), [3, 5]))
    for model, shape in cases:
        inferred = _without_output_shape(model).transform(InferShapes())
        assert inferred.get_tensor_shape("y") == shape, inferred.graph.node[0].op_type
        assert inferred.graph.node[0].domain == DOMAIN  # the shape op was swapped back for the hardware op
