"""The RTL's thresholds and padding correction, on hand-built graphs through the real flow (generate, lint,
cosimulate against the simulator under random back-pressure, cycles per frame within 5 % of the model):
thresholds compared at once (up to 15) and searched (16 and more, bnn_thr_search), on negated channels
(inputSigns), below, on and above the input's range; MVTUs correcting zero padding per output position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qonnx.core.datatype import DataType
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.estimates import hw_ops
from bnnflow.hw.ops.base import Memory, bank_depth
from bnnflow.hw.rtl.generate import generate_rtl
from bnnflow.hw.rtl.layers import _rtl_gap, used_bits
from bnnflow.hw.simulator import Simulator
from tests.hw.conftest import graph_of, hw_node
from tests.hw.rtl.test_rtl import check_design, random_inputs


def _thresholds(rng, channels: int, count: int, low: int, high: int) -> np.ndarray:
    """(channels, count) sorted thresholds drawn over [low - 3, high + 3], with some on and beyond both ends."""
    t = rng.integers(low - 3, high + 4, (channels, count))
    t[0, :2] = [low - 3, low]  # below the range (always counts), on its minimum
    t[-1, -2:] = [high, high + 3]  # on the maximum, above it (never counts)
    return np.sort(t, axis=1)


def _thresholding(channels: int, pe: int, in_type: str, out_type: str, count: int, bias: int, signs: bool,
                  seed: int):
    rng = np.random.default_rng(seed)
    dtype = DataType[in_type]
    low, high = int(dtype.min()), int(dtype.max())
    if signs:
        low, high = min(low, -high), max(high, -low)
    inputs = ["x", "t"]
    initializers = {"t": _thresholds(rng, channels, count, low, high)}
    if signs:
        s = rng.choice([-1, 1], channels)
        s[:2] = [-1, 1]
        initializers["s"] = s
        inputs.append("s")
    node = hw_node("Thresholding", inputs, ["y"], NumChannels=channels, PE=pe, numInputVectors=[3, 2],
                   outputBias=bias, inputSigns=int(signs), inputDataType=in_type, outputDataType=out_type)
    return graph_of([node], {"x": ([3, 2, channels], in_type), "y": ([3, 2, channels], out_type)}, ["x"], ["y"],
                    initializers)


THRESHOLDINGS = {
    # 3 thresholds compared at once on negated channels of unsigned input
    "parallel-signs-unsigned": dict(channels=8, pe=4, in_type="UINT4", out_type="UINT2", count=3, bias=0,
                                    signs=True),
    "parallel-signs-signed": dict(channels=6, pe=2, in_type="INT5", out_type="INT2", count=3, bias=-2, signs=True),
    # 3 thresholds compared at once from block RAM (over 4096 bits): the word is held once more
    "parallel-block": dict(channels=512, pe=2, in_type="INT6", out_type="UINT2", count=3, bias=0, signs=False),
    # the residual requantization: INT9 -> INT8 with 255 thresholds, searched
    "search-255-signed": dict(channels=4, pe=2, in_type="INT9", out_type="INT8", count=255, bias=-128, signs=False),
    "search-255-signs": dict(channels=4, pe=4, in_type="INT9", out_type="INT8", count=255, bias=-128, signs=True),
    # 16 thresholds (5 levels, padded with thresholds above the range), one lane
    "search-16-unsigned": dict(channels=3, pe=1, in_type="UINT6", out_type="UINT5", count=16, bias=0, signs=False),
    # 40 channels in one lane: the deepest levels (2560 and 5120 words) sit in banks of 2048 words
    "search-255-banked": dict(channels=40, pe=1, in_type="INT9", out_type="INT8", count=255, bias=-128, signs=False),
}


@pytest.mark.parametrize("case", list(THRESHOLDINGS))
def test_thresholding_cosimulates_exactly(tmp_path: Path, case: str) -> None:
    spec = THRESHOLDINGS[case]
    model = _thresholding(**spec, seed=len(case))
    simulator = Simulator(model)
    outputs = simulator.run(random_inputs(simulator, 16, seed=2))
    assert len(np.unique(outputs)) > 2  # the thresholds do separate the inputs
    check_design(model, tmp_path / case, frames=16, seed=2)
    (node, op), = hw_ops(model)
    assert _rtl_gap(node, op) == ""
    params = generate_rtl(model, tmp_path / "again").layers[0].params
    assert params.get("SEARCH", 0) == (DataType[spec["out_type"]].bitwidth() if spec["count"] > 15 else 0)
    assert params.get("SIGNS", 0) == int(spec["signs"])


def _int_mvtu(mw: int, mh: int, pe: int, simd: int, in_type: str, out_type: str, count: int, bias: int,
              xnor: bool, seed: int, vectors: int = 4):
    """x -> MVTU with ``count`` thresholds per channel: multi-bit codes times INT3 weights, or XNOR."""
    rng = np.random.default_rng(seed)
    if xnor:
        in_type, weights, wtype, low, high = "BINARY", rng.integers(0, 2, (mw, mh)), "BINARY", -mw, mw
    else:
        weights, wtype = rng.integers(-4, 4, (mw, mh)), "INT3"
        dtype = DataType[in_type]
        lo, hi = float(dtype.min()), float(dtype.max())
        low = int(np.minimum(weights * lo, weights * hi).sum(axis=0).min())
        high = int(np.maximum(weights * lo, weights * hi).sum(axis=0).max())
    # most thresholds where the accumulators are (so that the codes spread), some beyond the reachable range
    centre, spread = (low + high) // 2, max(4, (high - low) // 6)
    t = np.sort(rng.integers(centre - spread, centre + spread, (mh, count)), axis=1)
    t[0, 0], t[-1, -1] = low - 5, high + 5
    t.sort(axis=1)
    node = hw_node("MVTU", ["x", "w", "t"], ["y"], MW=mw, MH=mh, PE=pe, SIMD=simd, binaryXnorMode=int(xnor),
                   numInputVectors=[vectors], outputBias=bias, inputDataType=in_type, outputDataType=out_type,
                   weightDataType=wtype, accDataType="INT16")
    return graph_of([node], {"x": ([vectors, mw], in_type), "y": ([vectors, mh], out_type)}, ["x"], ["y"],
                    {"w": weights, "t": t})


MVTUS = {
    "3-unsigned": dict(mw=12, mh=4, pe=2, simd=3, in_type="UINT3", out_type="UINT2", count=3, bias=0, xnor=False),
    "15-signed": dict(mw=8, mh=6, pe=3, simd=8, in_type="INT4", out_type="INT4", count=15, bias=-8, xnor=False),
    # thresholds compared at once from block RAM (over 4096 bits): the word is held once more
    "3-xnor-block": dict(mw=16, mh=512, pe=2, simd=16, in_type="BINARY", out_type="UINT2", count=3, bias=0,
                         xnor=True),
    "16-unsigned": dict(mw=12, mh=4, pe=4, simd=2, in_type="UINT3", out_type="UINT5", count=16, bias=0, xnor=False),
    "255-signed": dict(mw=16, mh=6, pe=2, simd=4, in_type="INT4", out_type="INT8", count=255, bias=-128,
                       xnor=False),
    "255-xnor": dict(mw=64, mh=4, pe=1, simd=16, in_type="BINARY", out_type="UINT8", count=255, bias=0, xnor=True),
}


@pytest.mark.parametrize("case", list(MVTUS))
def test_mvtu_thresholds_cosimulate_exactly(tmp_path: Path, case: str) -> None:
    spec = MVTUS[case]
    model = _int_mvtu(**spec, seed=len(case))
    simulator = Simulator(model)
    outputs = simulator.run(random_inputs(simulator, 12, seed=4))
    assert len(np.unique(outputs)) > 3
    check_design(model, tmp_path / case, frames=12, seed=4)


def _corrected(pe: int, simd: int, thresholds: int, out_type: str, rows: list[int], cols: list[int],
               xnor: bool = True, seed: int = 0):
    """x (5 x 6 map) -> SlidingWindow (3x3, no padding: 3 x 4 positions) -> MVTU with a padding correction per
    border class of (rows, cols); with ``thresholds`` per channel, or the corrected accumulator itself (0)."""
    rng = np.random.default_rng(seed)
    c, mh = 2, 4
    mw = 9 * c
    in_type = "BINARY" if xnor else "UINT2"
    classes = (max(rows) + 1) * (max(cols) + 1)
    table = rng.integers(-6, 7, (classes, mh))
    if xnor:
        weights, wtype, low, high = rng.integers(0, 2, (mw, mh)), "BINARY", -mw, mw
    else:
        weights, wtype, low, high = rng.integers(-2, 2, (mw, mh)), "INT2", -2 * 3 * mw, 3 * mw
    low, high = low + int(table.min()), high + int(table.max())
    initializers = {"w": weights, "corr": table}
    inputs = ["p", "w"]
    if thresholds:
        t = rng.integers(low // 2 - 2, high // 2 + 3, (mh, thresholds))  # odd and even, beyond the range too
        t[0, 0], t[-1, -1] = low - 4, high + 4
        initializers["t"] = np.sort(t, axis=1)
        inputs.append("t")
    nodes = [
        hw_node("SlidingWindow", ["x"], ["p"], IFMChannels=c, IFMDim=[5, 6], OFMDim=[3, 4], ConvKernelDim=[3, 3],
                Stride=[1, 1], SIMD=c, Padding=[0, 0, 0, 0], PadValue=0, inputDataType=in_type,
                outputDataType=in_type),
        hw_node("MVTU", [*inputs, "corr"], ["y"], MW=mw, MH=mh, PE=pe, SIMD=simd, binaryXnorMode=int(xnor),
                noActivation=int(not thresholds), numInputVectors=[3, 4], padCorrection=1, correctionRows=rows,
                correctionCols=cols, inputDataType=in_type, outputDataType=out_type, weightDataType=wtype,
                accDataType="INT12"),
    ]
    tensors = {"x": ([5, 6, c], in_type), "p": ([3, 4, mw], in_type), "y": ([3, 4, mh], out_type)}
    return graph_of(nodes, tensors, ["x"], ["y"], initializers)


CORRECTED = {
    "xnor-1-threshold": dict(pe=2, simd=6, thresholds=1, out_type="BINARY", rows=[0, 1, 2], cols=[0, 1, 1, 2]),
    "xnor-3-thresholds-one-fold": dict(pe=4, simd=18, thresholds=3, out_type="UINT2", rows=[0, 1, 1],
                                       cols=[1, 0, 2, 1]),
    "xnor-accumulator": dict(pe=1, simd=3, thresholds=0, out_type="INT8", rows=[0, 0, 1], cols=[0, 1, 1, 0]),
    "xnor-31-thresholds": dict(pe=2, simd=9, thresholds=31, out_type="UINT5", rows=[2, 1, 0], cols=[0, 1, 2, 3]),
    "int-3-thresholds": dict(pe=2, simd=2, thresholds=3, out_type="UINT2", rows=[0, 1, 2], cols=[0, 1, 1, 2],
                             xnor=False),
}


@pytest.mark.parametrize("case", list(CORRECTED))
def test_padding_correction_cosimulates_exactly(tmp_path: Path, case: str) -> None:
    model = _corrected(**CORRECTED[case], seed=len(case))
    simulator = Simulator(model)
    inputs = random_inputs(simulator, 8, seed=1)
    outputs = simulator.run(inputs)
    assert len(np.unique(outputs)) > 1
    check_design(model, tmp_path / case, frames=8, seed=1)


def test_correction_changes_the_outputs(tmp_path: Path) -> None:
    """The cosimulated correction is not a no-op: zeroing the table changes the simulator's outputs."""
    model = _corrected(**CORRECTED["xnor-accumulator"], seed=3)
    simulator = Simulator(model)
    inputs = random_inputs(simulator, 4, seed=1)
    before = simulator.run(inputs)
    model.set_initializer("corr", np.zeros_like(model.get_initializer("corr")))
    assert not np.array_equal(Simulator(model).run(inputs), before)


def test_search_memories_are_what_the_estimate_model_says(tmp_path: Path) -> None:
    """A searched MVTU's thresholds: per level s and lane, NF * 2^s words of one threshold, as memories() says."""
    model = _int_mvtu(**MVTUS["255-signed"], seed=1)
    (node, op), = hw_ops(model)
    design = generate_rtl(model, tmp_path / "rtl")
    params = design.layers[0].params
    assert params["SEARCH"] == 8
    nf = params["MH"] // params["PE"]
    for level in range(8):
        for lane in range(params["PE"]):
            words = (tmp_path / "rtl" / f"{node.name}_search_{level:02d}_{lane:03d}_00.hex").read_text().split()
            assert len(words) == max(2, nf << level)
    # after the weights and the input buffer; with the model, as wide as the RTL's ACC_W, each lane's ROM with the
    # bits of its thresholds that vary
    assert op.memories()[2:] == [Memory(op.acc_bits(), nf << level, params["PE"]) for level in range(8)]
    exact = op.memories(model)[2:]
    assert sum(m.count for m in exact) == 8 * params["PE"]
    assert all(m.width == params["ACC_W"] and 0 < m.used_width <= m.width for m in exact)
    getCustomOp(node).set_nodeattr("PE", 6)  # NF = 1: the root's 1-word memory is written 2 words deep
    generate_rtl(model, tmp_path / "one")
    assert len((tmp_path / "one" / f"{node.name}_search_00_005_00.hex").read_text().split()) == 2


def test_deep_search_levels_are_banked(tmp_path: Path) -> None:
    """A level deeper than a bank is split into banks of ``bank_depth`` words for the bits that vary over the level
    (SEARCH_BANKS, 4 bits a level), the last one shorter, which together hold the level's words in order;
    memories() lists the banks."""
    model = _thresholding(**THRESHOLDINGS["search-255-banked"], seed=1)
    (node, op), = hw_ops(model)
    design = generate_rtl(model, tmp_path / "rtl")
    params = design.layers[0].params
    expected = []
    for level in range(8):
        bank = 1 << (params["SEARCH_BANKS"] >> 4 * level & 15)
        banks = sorted((tmp_path / "rtl").glob(f"{node.name}_search_{level:02d}_000_*.hex"))
        words = [b.read_text().split() for b in banks]
        varying = used_bits(np.array([int(w, 16) for bank_words in words for w in bank_words]).reshape(-1, 1),
                            params["ACC_W"])
        assert bank == bank_depth(varying, 40 << level)
        whole, rest = divmod(40 << level, bank)
        assert [len(w) for w in words] == [bank] * whole + ([rest] if rest else []), level
        expected += [len(w) for w in words]
    assert len(expected) > 8  # some levels are banked
    depths = sorted(m.depth for m in op.memories(model) if m.width == params["ACC_W"] for _ in range(m.count))
    assert depths == sorted(expected)


def test_zero_padded_binary_conv_end_to_end(tmp_path: Path) -> None:
    """A zero-padded 3x3 binary conv the way the compiler builds it: the window pads with bit 0 (-1), the MVTU adds
    back, per border class, the weights of the padded taps. The graph equals a bipolar conv over a zero-padded map,
    and the RTL equals the graph, with a padded window in front of it."""
    rng = np.random.default_rng(7)
    h, w, c, mh = 5, 4, 2, 4
    weights = rng.integers(0, 2, (9 * c, mh))
    bipolar = 2 * weights - 1
    kernel = bipolar.reshape(3, 3, c, mh)
    # border classes: 0 the first row (column), 1 the inner ones, 2 the last; the padded kernel rows (columns) of each
    padded_taps = {0: [0], 1: [], 2: [2]}
    table = np.zeros((9, mh), dtype=np.int64)
    for rc in range(3):
        for cc in range(3):
            taps = [(kr, kc) for kr in range(3) for kc in range(3) if kr in padded_taps[rc] or kc in padded_taps[cc]]
            table[rc * 3 + cc] = sum((kernel[kr, kc].sum(axis=0) for kr, kc in taps), np.zeros(mh, dtype=np.int64))
    rows, cols = [0, *[1] * (h - 2), 2], [0, *[1] * (w - 2), 2]
    nodes = [
        hw_node("SlidingWindow", ["x"], ["p"], IFMChannels=c, IFMDim=[h, w], OFMDim=[h, w], ConvKernelDim=[3, 3],
                Stride=[1, 1], SIMD=1, Padding=[1, 1, 1, 1], PadValue=0, inputDataType="BINARY",
                outputDataType="BINARY"),
        hw_node("MVTU", ["p", "w", "corr"], ["y"], MW=9 * c, MH=mh, PE=2, SIMD=3, binaryXnorMode=1, noActivation=1,
                numInputVectors=[h, w], padCorrection=1, correctionRows=rows, correctionCols=cols,
                inputDataType="BINARY", outputDataType="INT6", weightDataType="BINARY", accDataType="INT6"),
    ]
    model = graph_of(nodes, {"x": ([h, w, c], "BINARY"), "p": ([h, w, 9 * c], "BINARY"), "y": ([h, w, mh], "INT6")},
                     ["x"], ["y"], {"w": weights, "corr": table})
    (window, window_op), (mvtu, op) = hw_ops(model)
    assert _rtl_gap(window, window_op) == "" and _rtl_gap(mvtu, op) == ""
    simulator = Simulator(model)
    inputs = random_inputs(simulator, 8, seed=6)
    values = np.pad(2 * inputs.reshape(8, h, w, c) - 1, ((0, 0), (1, 1), (1, 1), (0, 0)))  # zero-padded bipolar map
    reference = np.zeros((8, h, w, mh), dtype=np.int64)
    for r in range(h):
        for col in range(w):
            reference[:, r, col] = np.einsum("nijc,ijcm->nm", values[:, r: r + 3, col: col + 3], kernel)
    assert np.array_equal(simulator.run(inputs).reshape(reference.shape), reference)
    check_design(model, tmp_path / "padded", frames=8, seed=6)
