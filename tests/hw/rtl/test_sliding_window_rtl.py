"""The sliding-window generator's RTL (bnn_swg.v, a line buffer that pads): every patch equal to the reference's
under random back-pressure, and its cycles per frame equal to ``SlidingWindow.get_exp_cycles`` within 5 %, over
padding (none, symmetric, asymmetric, wider than the kernel reaches), pad values (bits, unsigned and signed codes),
strides, kernels from 1x1 to 5x5, SIMD from 1 to C, and maps from 1x1 to 32x32.

Each case compiles a Verilator model of a one-window design (the window is the design's last layer, so the
measured cycles are its own), and one feeds an XNOR MVTU, so the patches are also computed on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.rtl.generate import generate_rtl
from bnnflow.hw.simulator import Simulator
from tests.hw.conftest import graph_of, hw_node
from tests.hw.rtl.test_rtl import check_design, random_inputs


def _window(c: int, image: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
            padding: tuple[int, int, int, int], simd: int, dtype: str, pad_value: int):
    (ih, iw), (kh, kw), (sh, sw) = image, kernel, stride
    oh = (ih + padding[0] + padding[2] - kh) // sh + 1
    ow = (iw + padding[1] + padding[3] - kw) // sw + 1
    node = hw_node("SlidingWindow", ["x"], ["y"], IFMChannels=c, IFMDim=[ih, iw], OFMDim=[oh, ow],
                   ConvKernelDim=[kh, kw], Stride=[sh, sw], SIMD=simd, Padding=list(padding), PadValue=pad_value,
                   inputDataType=dtype, outputDataType=dtype)
    return node, {"x": ([ih, iw, c], dtype), "y": ([oh, ow, kh * kw * c], dtype)}


# C, (IH, IW), (KH, KW), (SH, SW), padding (top, left, bottom, right), SIMD, datatype, PadValue
CASES = {
    "1x1-identity": (1, (4, 4), (1, 1), (1, 1), (0, 0, 0, 0), 1, "BINARY", 0),
    "1x1-stride2-simd-c": (4, (8, 8), (1, 1), (2, 2), (0, 0, 0, 0), 4, "BINARY", 0),
    "2x2-stride2-uint2": (3, (8, 8), (2, 2), (2, 2), (0, 0, 0, 0), 1, "UINT2", 0),
    "3x3-valid-simd-between": (8, (8, 8), (3, 3), (1, 1), (0, 0, 0, 0), 2, "BINARY", 0),
    "3x3-pad1-bit1": (4, (5, 7), (3, 3), (1, 1), (1, 1, 1, 1), 2, "BINARY", 1),
    "3x3-pad1-bit0-stride2": (4, (5, 7), (3, 3), (2, 2), (1, 1, 1, 1), 4, "BINARY", 0),
    "3x3-int4-negative-pad": (4, (4, 4), (3, 3), (2, 1), (1, 2, 0, 1), 2, "INT4", -3),
    "3x3-uint2-asymmetric": (3, (4, 4), (3, 3), (1, 1), (2, 0, 1, 2), 3, "UINT2", 2),
    "5x5-pad2-uint8": (2, (8, 8), (5, 5), (1, 1), (2, 2, 2, 2), 1, "UINT8", 200),
    "2x3-kernel-2x1-stride": (6, (6, 5), (2, 3), (2, 1), (0, 1, 1, 0), 3, "INT4", 5),
    "3x2-kernel-wide-pad": (2, (2, 3), (3, 2), (1, 2), (2, 1, 2, 1), 1, "BINARY", 1),
    "pad-beyond-kernel": (2, (4, 4), (4, 4), (1, 1), (3, 3, 3, 3), 2, "BINARY", 1),
    "one-pixel-map": (2, (1, 1), (3, 3), (1, 1), (1, 1, 1, 1), 1, "BINARY", 1),
    "1x3-kernel-row-pad": (1, (3, 12), (1, 3), (1, 1), (0, 1, 0, 1), 1, "UINT2", 1),
    # bottom padding past the kernel: the last output rows read no input row, and the next frame's rows stream in
    "bottom-rows-all-padding": (1, (4, 7), (1, 5), (1, 2), (3, 1, 2, 1), 1, "BINARY", 0),
    "bottom-pad-3-uint8": (1, (7, 3), (2, 5), (1, 1), (1, 1, 3, 2), 1, "UINT8", 77),
    "32x32-cnv-like": (4, (32, 32), (3, 3), (1, 1), (0, 0, 0, 0), 4, "BINARY", 0),
}


def _random_cases(count: int, seed: int) -> dict[str, tuple]:
    """Windows drawn at random: maps to 12x12, kernels to 5x5, strides to 3, padding to 3 a side, any SIMD."""
    rng = np.random.default_rng(seed)
    cases: dict[str, tuple] = {}
    while len(cases) < count:
        c = int(rng.choice([1, 2, 3, 4, 6]))
        simd = int(rng.choice([d for d in range(1, c + 1) if c % d == 0]))
        image, kernel, stride = tuple(rng.integers(1, 13, 2)), tuple(rng.integers(1, 6, 2)), tuple(rng.integers(1, 4, 2))
        padding = tuple(int(p) for p in rng.integers(0, 4, 4))
        if kernel[0] > image[0] + padding[0] + padding[2] or kernel[1] > image[1] + padding[1] + padding[3]:
            continue
        if image == (1, 1) and kernel == (1, 1):
            continue  # one beat a frame each way: its spacing alternates (see line_buffer_cycles)
        dtype, pad_value = [("BINARY", 1), ("BINARY", 0), ("UINT2", 3), ("INT4", -5), ("UINT8", 77)][rng.integers(5)]
        case = (c, tuple(map(int, image)), tuple(map(int, kernel)), tuple(map(int, stride)), padding, simd, dtype,
                pad_value)
        cases[f"random-{len(cases)}"] = case
    return cases


CASES.update(_random_cases(8, seed=2026))


@pytest.mark.parametrize("case", list(CASES))
def test_window_alone_cosimulates_exactly_at_its_modelled_rate(tmp_path: Path, case: str) -> None:
    c, image, kernel, stride, padding, simd, dtype, pad_value = CASES[case]
    node, tensors = _window(c, image, kernel, stride, padding, simd, dtype, pad_value)
    model = graph_of([node], tensors, ["x"], ["y"])
    frames = 4 if image[0] * image[1] > 256 else 8
    report = check_design(model, tmp_path / "rtl", frames=frames, seed=len(case))
    assert report["samples"] == frames
    # the timing model counts every cycle: the measured rate matches it exactly, not just within 5 %
    assert report["cycles_per_frame"] == report["model_cycles_per_frame"]
    op = getCustomOp(node)
    beats_in = image[0] * image[1] * (c // simd)
    beats_out = np.prod(tensors["y"][0]) // simd
    # near the better of reading and writing: a little over only where rows are a few beats long
    assert max(beats_in, beats_out) <= report["cycles_per_frame"] <= 1.1 * max(beats_in, beats_out) + 4
    if any(padding) and pad_value:
        # some patch element is padding: the output differs from a window that padded with zeros
        zero_node, _ = _window(c, image, kernel, stride, padding, simd, dtype, 0)
        zero = Simulator(graph_of([zero_node], tensors, ["x"], ["y"]))
        inputs = random_inputs(zero, 2)
        assert not np.array_equal(zero.run(inputs), Simulator(model).run(inputs))
    assert op.memories()[0].depth == op.ring_rows() * image[1] * (c // simd)


def test_padded_window_feeding_an_xnor_mvtu_cosimulates(tmp_path: Path) -> None:
    """A padded binary 3x3 convolution as the compiler lays it out (window, then MVTU with thresholds), both at
    the same rate, so the window's patches are consumed as fast as it makes them."""
    rng = np.random.default_rng(7)
    window, tensors = _window(4, (6, 6), (3, 3), (1, 1), (1, 1, 1, 1), 2, "BINARY", 1)
    mvtu = hw_node("MVTU", ["y", "w", "t"], ["z"], MW=36, MH=8, PE=8, SIMD=2, numInputVectors=[6, 6],
                   binaryXnorMode=1, inputDataType="BINARY", weightDataType="BINARY", accDataType="INT8",
                   outputDataType="BINARY")
    tensors["z"] = ([6, 6, 8], "BINARY")
    model = graph_of([window, mvtu], tensors, ["x"], ["z"],
                     {"w": rng.integers(0, 2, (36, 8)), "t": rng.integers(-6, 7, (8, 1))})
    report = check_design(model, tmp_path / "rtl", frames=8, seed=2)
    assert report["samples"] == 8


def test_line_buffer_holds_rows_not_maps(tmp_path: Path) -> None:
    """A CNV-sized window keeps a few rows, sized as memories() says, and its held beats (for join FIFOs) are the
    ring, its input register and output FIFO."""
    node, tensors = _window(64, (30, 30), (3, 3), (1, 1), (0, 0, 0, 0), 32, "BINARY", 0)
    model = graph_of([node], tensors, ["x"], ["y"])
    op = getCustomOp(node)
    design = generate_rtl(model, tmp_path / "rtl")
    (layer,) = design.layers
    rows = layer.params["NR"]
    assert rows == op.ring_rows() and 3 + 1 <= rows <= 2 * 3
    assert op.memories()[0].depth == rows * 30 * 2 and op.memories()[0].width == 32
    assert layer.held_beats == rows * 30 * 2 + 1 + 8
    assert op.get_exp_cycles() == 28 * 28 * 9 * 2  # the output's beats: the next frame streams in meanwhile
