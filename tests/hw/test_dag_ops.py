"""The ops of residual, padded and multi-bit networks one node at a time, each under qonnx's executor against an
independent numpy computation by explicit loops: stream fork and join, sum pooling, subsampling, channel
zero-extension, padded sliding windows, the MVTU's padding correction (against a zero-padded convolution of +-1
values in floating point), output bias and input signs of thresholds; then their estimates, and a graph of them
all through the simulator."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from qonnx.core.datatype import DataType
from qonnx.core.onnx_exec import execute_onnx
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.boards import ECP5, XILINX
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.estimates import estimate, layer_estimate, timing
from bnnflow.hw.ops import custom_op
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.execute import execute
from tests.hw.conftest import fresh, graph_of, hw_node, residual_dag

RNG_SEED = 4321


def codes(rng, dtype: str, shape) -> np.ndarray:
    dt = DataType[dtype]
    return rng.integers(int(dt.min()), int(dt.max()) + 1, size=shape)


def run_one(node, tensors: dict, inputs: dict[str, np.ndarray], initializers: dict | None = None) -> dict:
    """Execute a one-node graph under qonnx's executor; every output of the node, as float32 containers."""
    batch = len(next(iter(inputs.values())))
    model = graph_of([node], tensors, list(inputs), list(node.output), initializers, batch)
    out = execute_onnx(model, {name: np.asarray(v, dtype=np.float32) for name, v in inputs.items()})
    assert all(value.dtype == np.float32 for value in out.values())
    return out


# --------------------------------------------------------------------------------------------- stream fork and join


def test_add_streams_adds_element_by_element():
    rng = np.random.default_rng(RNG_SEED)
    a, b = codes(rng, "INT4", (3, 2, 3, 6)), codes(rng, "UINT3", (3, 2, 3, 6))
    node = hw_node("AddStreams", ["x", "x2"], ["y"], NumChannels=6, PE=3, numInputVectors=[2, 3],
                   inputDataType="INT4", input2DataType="UINT3", outputDataType="INT5")
    got = run_one(node, {"x": ([2, 3, 6], "INT4"), "x2": ([2, 3, 6], "UINT3"), "y": ([2, 3, 6], "INT5")},
                  {"x": a, "x2": b})["y"]
    expected = np.zeros(a.shape, dtype=np.int64)
    for index in np.ndindex(a.shape):
        expected[index] = int(a[index]) + int(b[index])
    assert np.array_equal(got, expected)
    assert got.min() < 0 and got.max() > 7  # beyond either input's range: the sum is one bit wider


@pytest.mark.parametrize("count", [2, 3])
def test_duplicate_streams_copies_to_every_output(count):
    rng = np.random.default_rng(RNG_SEED + 1)
    x = codes(rng, "INT3", (4, 3, 5))
    outputs = [f"y{i}" for i in range(count)]
    node = hw_node("DuplicateStreams", ["x"], outputs, NumChannels=5, NumOutputStreams=count, PE=5,
                   numInputVectors=[3], inputDataType="INT3", outputDataType="INT3")
    tensors = {"x": ([3, 5], "INT3"), **{name: ([3, 5], "INT3") for name in outputs}}
    got = run_one(node, tensors, {"x": x})
    assert set(got) == set(outputs)
    for name in outputs:
        assert np.array_equal(got[name], x)
    model = graph_of([node], tensors, ["x"], outputs)
    getCustomOp(node).infer_node_datatype(model)
    assert all(model.get_tensor_datatype(name) == DataType["INT3"] for name in outputs)


# --------------------------------------------------------------------------------------------- pools and subsampling


@pytest.mark.parametrize(("shape", "k", "stride", "dtype", "out_dtype"), [
    ((2, 4, 4, 3), (2, 2), (2, 2), "UINT2", "UINT4"),
    ((2, 5, 7, 2), (3, 3), (2, 2), "INT3", "INT7"),
    ((3, 3, 3, 4), (3, 3), (3, 3), "UINT3", "UINT6"),  # a global pool
])
def test_sum_pool_sums_each_window(shape, k, stride, dtype, out_dtype):
    rng = np.random.default_rng(RNG_SEED + 2)
    x = codes(rng, dtype, shape)
    n, h, w, c = shape
    oh, ow = (h - k[0]) // stride[0] + 1, (w - k[1]) // stride[1] + 1
    expected = np.zeros((n, oh, ow, c), dtype=np.int64)
    for b, i, j, ch in itertools.product(range(n), range(oh), range(ow), range(c)):
        for di, dj in itertools.product(range(k[0]), range(k[1])):
            expected[b, i, j, ch] += x[b, i * stride[0] + di, j * stride[1] + dj, ch]
    node = hw_node("SumPool", ["x"], ["y"], NumChannels=c, ImgDim=[h, w], PoolDim=list(k), Stride=list(stride), PE=1,
                   inputDataType=dtype, outputDataType=out_dtype)
    got = run_one(node, {"x": ([h, w, c], dtype), "y": ([oh, ow, c], out_dtype)}, {"x": x})["y"]
    assert np.array_equal(got, expected)
    assert custom_op["SumPool"](node).verify_node() == []


@pytest.mark.parametrize(("hw", "offset", "stride", "out"), [
    ((6, 6), (0, 0), (2, 2), (3, 3)),
    ((5, 7), (1, 2), (2, 3), (2, 2)),
    ((4, 4), (3, 1), (1, 1), (1, 3)),
])
def test_downsample_keeps_every_strided_pixel(hw, offset, stride, out):
    rng = np.random.default_rng(RNG_SEED + 3)
    (h, w), c = hw, 3
    x = codes(rng, "INT4", (2, h, w, c))
    expected = np.zeros((2, *out, c), dtype=np.int64)
    for b, i, j in itertools.product(range(2), range(out[0]), range(out[1])):
        expected[b, i, j] = x[b, offset[0] + i * stride[0], offset[1] + j * stride[1]]
    node = hw_node("Downsample", ["x"], ["y"], NumChannels=c, ImgDim=list(hw), OutDim=list(out), Offset=list(offset),
                   Stride=list(stride), PE=3, inputDataType="INT4", outputDataType="INT4")
    assert custom_op["Downsample"](node).verify_node() == []
    got = run_one(node, {"x": ([h, w, c], "INT4"), "y": ([*out, c], "INT4")}, {"x": x})["y"]
    assert np.array_equal(got, expected)


def test_downsample_refuses_pixels_beyond_the_map():
    node = hw_node("Downsample", ["x"], ["y"], NumChannels=3, ImgDim=[5, 5], OutDim=[3, 3], Offset=[1, 0],
                   Stride=[2, 2], inputDataType="INT4", outputDataType="INT4")
    assert custom_op["Downsample"](node).verify_node() == ["takes [3, 3] pixels every [2, 2] from [1, 0], beyond the "
                                                           "[5, 5] map"]


@pytest.mark.parametrize(("before", "after", "value", "dtype"), [(2, 2, 0, "UINT2"), (0, 3, -1, "INT3"),
                                                                  (1, 0, 1, "BINARY")])
def test_channel_pad_extends_channels_with_the_value(before, after, value, dtype):
    rng = np.random.default_rng(RNG_SEED + 4)
    c = 4
    x = codes(rng, dtype, (3, 2, 2, c))
    out_c = before + c + after
    expected = np.full((3, 2, 2, out_c), value, dtype=np.int64)
    for index in np.ndindex(x.shape):
        expected[(*index[:-1], index[-1] + before)] = x[index]
    node = hw_node("ChannelPad", ["x"], ["y"], NumChannels=c, PadBefore=before, PadAfter=after, PadValue=value, PE=1,
                   numInputVectors=[2, 2], inputDataType=dtype, outputDataType=dtype)
    assert custom_op["ChannelPad"](node).verify_node() == []
    got = run_one(node, {"x": ([2, 2, c], dtype), "y": ([2, 2, out_c], dtype)}, {"x": x})["y"]
    assert np.array_equal(got, expected)


# --------------------------------------------------------------------------------------------- padded windows


def padded_patches(x: np.ndarray, k, stride, padding, value) -> np.ndarray:
    """Each output pixel's (kh, kw, C) patch of the map padded (top, left, bottom, right) with ``value``, by loops
    over the unpadded map's coordinates."""
    n, h, w, c = x.shape
    top, left, bottom, right = padding
    oh, ow = (h + top + bottom - k[0]) // stride[0] + 1, (w + left + right - k[1]) // stride[1] + 1
    out = np.zeros((n, oh, ow, k[0] * k[1] * c), dtype=np.int64)
    for b, i, j in itertools.product(range(n), range(oh), range(ow)):
        values = []
        for di, dj, ch in itertools.product(range(k[0]), range(k[1]), range(c)):
            r, s = i * stride[0] + di - top, j * stride[1] + dj - left
            values.append(x[b, r, s, ch] if 0 <= r < h and 0 <= s < w else value)
        out[b, i, j] = values
    return out


@pytest.mark.parametrize(("shape", "k", "stride", "padding", "value", "dtype"), [
    ((2, 4, 5, 2), (3, 3), (1, 1), (1, 1, 1, 1), 0, "BINARY"),
    ((2, 5, 4, 3), (2, 3), (1, 2), (1, 0, 2, 1), 7, "UINT4"),
    ((1, 6, 6, 1), (3, 3), (2, 2), (0, 1, 1, 0), -3, "INT3"),
])
def test_sliding_window_pads_with_the_pad_value(shape, k, stride, padding, value, dtype):
    rng = np.random.default_rng(RNG_SEED + 5)
    x = codes(rng, dtype, shape)
    expected = padded_patches(x, k, stride, padding, value)
    n, h, w, c = shape
    oh, ow = expected.shape[1:3]
    node = hw_node("SlidingWindow", ["x"], ["y"], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=list(k),
                   Stride=list(stride), Padding=list(padding), PadValue=value, inputDataType=dtype, outputDataType=dtype)
    op = custom_op["SlidingWindow"](node)
    assert op.verify_node() == []
    got = run_one(node, {"x": ([h, w, c], dtype), "y": ([oh, ow, expected.shape[3]], dtype)}, {"x": x})["y"]
    assert np.array_equal(got, expected)
    # the padding is generated in the window, not streamed in: max(H * W, OH * OW * kh * kw) * C / SIMD
    assert op.get_exp_cycles() == max(h * w, oh * ow * k[0] * k[1]) * c


def test_sliding_window_refuses_a_pad_value_outside_its_datatype():
    node = hw_node("SlidingWindow", ["x"], ["y"], IFMChannels=2, IFMDim=[4, 4], OFMDim=[4, 4], ConvKernelDim=[3, 3],
                   Stride=[1, 1], Padding=[1, 1, 1, 1], PadValue=-1, inputDataType="BINARY", outputDataType="BINARY")
    assert custom_op["SlidingWindow"](node).verify_node() == ["pads with -1, which is no BINARY value"]


# --------------------------------------------------------------------------------------------- MVTU padding correction


def zero_padded_conv(bits: np.ndarray, weight_bits: np.ndarray, stride, padding) -> np.ndarray:
    """The model's convolution: +-1 activations zero-padded, +-1 weights (kh, kw, C, M), in float64 by loops."""
    x = 2.0 * bits - 1
    top, left, bottom, right = padding
    x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))  # zeros, as the model pads
    w = 2.0 * weight_bits - 1
    kh, kw, _, m = w.shape
    n, hp, wp, _ = x.shape
    oh, ow = (hp - kh) // stride[0] + 1, (wp - kw) // stride[1] + 1
    out = np.zeros((n, oh, ow, m))
    for b, i, j, o in itertools.product(range(n), range(oh), range(ow), range(m)):
        out[b, i, j, o] = np.sum(x[b, i * stride[0]: i * stride[0] + kh, j * stride[1]: j * stride[1] + kw] * w[..., o])
    return out


def border_classes(size: int, out: int, k: int, stride: int, before: int) -> tuple[list[int], list[tuple[int, ...]]]:
    """Each output row's (or column's) class: which kernel rows fall into the padding; and each class's rows."""
    keys = [tuple(d for d in range(k) if not 0 <= i * stride + d - before < size) for i in range(out)]
    kinds = list(dict.fromkeys(keys))
    return [kinds.index(key) for key in keys], kinds


def correction_table(weight_bits: np.ndarray, row_kinds, col_kinds) -> np.ndarray:
    """Per (row class, column class), what the window's -1 at each padded tap took away: + the sum of the +-1
    weights there (the model multiplied a zero)."""
    w = 2 * weight_bits.astype(np.int64) - 1
    kh, kw, _, m = w.shape
    table = np.zeros((len(row_kinds) * len(col_kinds), m), dtype=np.int64)
    for (r, rows), (c, cols) in itertools.product(enumerate(row_kinds), enumerate(col_kinds)):
        for di, dj in itertools.product(range(kh), range(kw)):
            if di in rows or dj in cols:
                table[r * len(col_kinds) + c] += w[di, dj].sum(axis=0)
    return table


@pytest.mark.parametrize(("hw", "stride", "padding", "thresholds"), [
    ((5, 6), (1, 1), (1, 1, 1, 1), False),
    ((6, 5), (2, 2), (1, 1, 1, 1), False),
    ((4, 4), (1, 1), (2, 0, 0, 1), True),
])
def test_padding_correction_gives_the_zero_padded_convolution(hw, stride, padding, thresholds):
    """SlidingWindow (padding with bit 0, i.e. -1) -> XNOR MVTU with the correction table of its border classes:
    the accumulators equal the model's zero-padded convolution; with thresholds and a signed output the codes
    count the thresholds at or below those accumulators, from outputBias."""
    rng = np.random.default_rng(RNG_SEED + 6)
    (h, w), c, m, k = hw, 3, 5, (3, 3)
    x = rng.integers(0, 2, (6, h, w, c))
    weight_bits = rng.integers(0, 2, (*k, c, m))
    conv = zero_padded_conv(x, weight_bits, stride, padding)
    oh, ow = conv.shape[1:3]
    rows, row_kinds = border_classes(h, oh, k[0], stride[0], padding[0])
    cols, col_kinds = border_classes(w, ow, k[1], stride[1], padding[1])
    assert len(row_kinds) > 1 and len(col_kinds) > 1  # the borders really differ from the middle
    mw = k[0] * k[1] * c
    initializers = {"w": weight_bits.reshape(mw, m), "corr": correction_table(weight_bits, row_kinds, col_kinds)}
    out_type, inputs = ("INT6", ["p", "w", "corr"])
    extra = {}
    if thresholds:
        t = np.sort(np.stack([rng.choice(conv[..., o].ravel(), 3) for o in range(m)]), axis=1)
        initializers["t"], inputs, out_type = t, ["p", "w", "t", "corr"], "INT2"
        extra = {"outputBias": -2}
    nodes = [
        hw_node("SlidingWindow", ["x"], ["p"], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=list(k),
                Stride=list(stride), SIMD=c, Padding=list(padding), PadValue=0, inputDataType="BINARY",
                outputDataType="BINARY"),
        hw_node("MVTU", inputs, ["y"], MW=mw, MH=m, PE=m, SIMD=c, binaryXnorMode=1, noActivation=int(not thresholds),
                numInputVectors=[oh, ow], padCorrection=1, correctionRows=rows, correctionCols=cols,
                inputDataType="BINARY", outputDataType=out_type, weightDataType="BINARY", accDataType="INT7", **extra),
    ]
    tensors = {"x": ([h, w, c], "BINARY"), "p": ([oh, ow, mw], "BINARY"), "y": ([oh, ow, m], out_type)}
    model = graph_of(nodes, tensors, ["x"], ["y"], initializers)
    check_dataflow(model)
    got = execute(model, x.astype(np.float32))["y"]
    if thresholds:
        expected = np.zeros(conv.shape, dtype=np.int64)
        for index in np.ndindex(conv.shape):
            expected[index] = -2 + sum(1 for value in initializers["t"][index[-1]] if value <= conv[index])
        assert set(np.unique(got)) == {-2, -1, 0, 1}
    else:
        expected = conv
        uncorrected = zero_padded_conv(np.pad(x, ((0, 0), (padding[0], padding[2]), (padding[1], padding[3]),
                                                  (0, 0))), weight_bits, stride, (0, 0, 0, 0))
        assert not np.array_equal(uncorrected, conv)  # the correction matters
    assert np.array_equal(got, expected)
    assert np.array_equal(Simulator(model).run(x), expected)


def test_padding_correction_needs_a_class_per_output_row_and_column():
    node = hw_node("MVTU", ["x", "w", "corr"], ["y"], MW=9, MH=2, binaryXnorMode=1, noActivation=1,
                   numInputVectors=[3, 3], padCorrection=1, correctionRows=[0, 1], correctionCols=[0, 1, 2],
                   inputDataType="BINARY", outputDataType="INT5", weightDataType="BINARY", accDataType="INT5")
    assert custom_op["MVTU"](node).verify_node() == [
        "corrects padding with 2 row and 3 column classes, but its output positions are [3, 3]; each row and column "
        "needs a class >= 0"]


# --------------------------------------------------------------------------------------------- thresholds


@pytest.mark.parametrize(("signed_input", "shared"), [(True, False), (False, True)])
def test_thresholding_output_bias_and_input_signs(signed_input, shared):
    rng = np.random.default_rng(RNG_SEED + 7)
    c, in_type = 6, "INT5" if signed_input else "UINT4"
    x = codes(rng, in_type, (40, 2, c))
    signs = rng.choice([-1, 1], c)
    signs[:2] = [-1, 1]
    t = np.sort(rng.integers(-12, 13, (1 if shared else c, 3)), axis=1)
    t[0, 1] = -x[0, 0, 0] * signs[0]  # an input exactly on a threshold (after its sign) counts
    t = np.sort(t, axis=1)
    node = hw_node("Thresholding", ["x", "t", "s"], ["y"], NumChannels=c, PE=3, numInputVectors=[2], outputBias=-2,
                   inputSigns=1, inputDataType=in_type, outputDataType="INT2")
    tensors = {"x": ([2, c], in_type), "y": ([2, c], "INT2")}
    got = run_one(node, tensors, {"x": x}, {"t": t, "s": signs})["y"]
    rows = np.broadcast_to(t, (c, 3))
    expected = np.zeros(x.shape, dtype=np.int64)
    for index in np.ndindex(x.shape):
        value = x[index] * signs[index[-1]]
        expected[index] = -2 + sum(1 for threshold in rows[index[-1]] if threshold <= value)
    assert np.array_equal(got, expected)
    assert set(np.unique(got)) == {-2, -1, 0, 1}
    model = graph_of([node], tensors, ["x"], ["y"], {"t": t, "s": signs})
    assert np.array_equal(Simulator(model).run(x), expected)


def test_thresholding_refuses_bad_signs_and_a_bias_its_output_cannot_hold():
    tensors = {"x": ([1, 4], "INT5"), "y": ([1, 4], "INT2")}

    def problems(signs, bias):
        node = hw_node("Thresholding", ["x", "t", "s"], ["y"], NumChannels=4, numInputVectors=[1], outputBias=bias,
                       inputSigns=1, inputDataType="INT5", outputDataType="INT2")
        model = graph_of([node], tensors, ["x"], ["y"], {"t": np.zeros((4, 3)), "s": signs})
        return custom_op["Thresholding"](node).verify_in_graph(model)

    assert problems(np.ones(4), -2) == []
    assert problems(np.asarray([1, 0, -1, 1]), -2) == ["has input signs s that are not one -1 or +1 per channel"]
    assert problems(np.ones(4), -1) == ["outputs -1 .. 2 (3 thresholds per channel from -1), which outputDataType "
                                        "INT2 cannot hold"]


# --------------------------------------------------------------------------------------------- estimates


def new_op_nodes() -> dict[str, tuple]:
    """Each new op at PE 1 with the cycle count its docstring gives, as a function of PE."""
    return {
        "AddStreams": (hw_node("AddStreams", ["x", "x2"], ["y"], NumChannels=12, numInputVectors=[5, 5],
                               inputDataType="UINT3", input2DataType="UINT3", outputDataType="UINT4"),
                       lambda pe: 25 * 12 // pe),
        "DuplicateStreams": (hw_node("DuplicateStreams", ["x"], ["y0", "y1", "y2"], NumChannels=12, NumOutputStreams=3,
                                     numInputVectors=[5, 5], inputDataType="INT4", outputDataType="INT4"),
                             lambda pe: 25 * 12 // pe),
        "SumPool": (hw_node("SumPool", ["x"], ["y"], NumChannels=12, ImgDim=[8, 6], PoolDim=[2, 2], Stride=[2, 2],
                            inputDataType="UINT2", outputDataType="UINT4"), lambda pe: 48 * 12 // pe),
        "Downsample": (hw_node("Downsample", ["x"], ["y"], NumChannels=12, ImgDim=[8, 6], OutDim=[4, 3], Stride=[2, 2],
                               inputDataType="UINT2", outputDataType="UINT2"), lambda pe: 48 * 12 // pe),
        "ChannelPad": (hw_node("ChannelPad", ["x"], ["y"], NumChannels=12, PadBefore=6, PadAfter=6,
                               numInputVectors=[5, 5], inputDataType="UINT2", outputDataType="UINT2"),
                       lambda pe: 25 * 24 // pe),
    }


@pytest.mark.parametrize("op_type", list(new_op_nodes()))
def test_new_op_estimates_follow_their_cycles(op_type):
    node, cycles = new_op_nodes()[op_type]
    op = custom_op[op_type](node)
    assert op.verify_node() == []
    foldings = op.legal_foldings()
    assert [f["PE"] for f in foldings] == [1, 2, 3, 4, 6, 12]  # the divisors of 12 (and of ChannelPad's 24)
    seen = []
    for folding in foldings:
        op.set_nodeattr("PE", folding["PE"])
        assert op.verify_node() == []  # every legal folding is legal
        assert op.folding() == folding
        assert op.get_exp_cycles() == cycles(folding["PE"]) > 0
        for fabric in (ECP5, XILINX):
            layer = layer_estimate(node, op, fabric)
            assert layer["cycles"] == op.get_exp_cycles()
            assert layer["luts"] >= op.lut_estimate(fabric.lut_inputs) > 0
            assert layer["memory_bits"] == sum(m.bits for m in op.memories()) >= 0
        seen.append(op.get_exp_cycles())
    assert all(a > b for a, b in zip(seen, seen[1:]))  # more lanes, fewer cycles
    op.set_nodeattr("PE", 5)
    assert op.verify_node() != []  # 5 divides no channel count here


def test_dag_timing_is_the_slowest_op_and_the_longest_branch():
    model = residual_dag()
    ops = {node.name: getCustomOp(node) for node in model.graph.node if node.op_type != "Reshape"}
    cycles = {name: op.get_exp_cycles() for name, op in ops.items()}
    assert all(value > 0 for value in cycles.values())
    report = timing(model, 100.0)
    assert report["initiation_interval_cycles"] == max(cycles.values())
    assert report["bottleneck"] == max(cycles, key=cycles.get)
    shortcut = cycles["Downsample_0"] + cycles["ChannelPad_0"]
    conv = cycles["SlidingWindow_0"] + cycles["MVTU_0"]
    assert shortcut != conv  # the branches run side by side: the longer one counts, not their sum
    assert report["latency_cycles"] == (cycles["DuplicateStreams_0"] + max(shortcut, conv) + cycles["AddStreams_0"]
                                        + cycles["SumPool_0"] + cycles["Thresholding_0"])
    full = estimate(model, 100.0, ECP5)
    assert [layer["cycles"] for layer in full["layers"]] == list(cycles.values())
    assert full["luts"] > 0


# --------------------------------------------------------------------------------------------- all of them together


def test_residual_dag_simulates_like_the_executor_at_every_folding():
    model = residual_dag()
    x = np.random.default_rng(RNG_SEED + 8).integers(0, 4, (48, 4, 4, 4))
    expected = execute(model, x.astype(np.float32))["y"]
    assert np.array_equal(Simulator(model).run(x), expected)
    assert set(np.unique(expected)) == {-2, -1, 0, 1}
    for lanes in (min, max):
        folded = fresh(model)
        for node in folded.graph.node:
            if node.op_type != "Reshape":
                op = getCustomOp(node)
                for key, value in lanes(op.legal_foldings(), key=lambda f: sum(f.values())).items():
                    op.set_nodeattr(key, value)
        check_dataflow(folded)
        assert np.array_equal(Simulator(folded).run(x), expected)
        assert np.array_equal(execute(folded, x.astype(np.float32))["y"], expected)
