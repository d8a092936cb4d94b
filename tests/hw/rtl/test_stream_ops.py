"""The stream ops of residual networks in RTL: fork (bnn_dup), join (bnn_add, with bnn_stream_fifo before it),
subsampling, channel padding and sum pooling (bnn_pool), each cosimulated bit for bit against the simulator under random
back-pressure and timed against its cycle model (``check_design``); and forks whose branches differ widely in
latency, run under several back-pressure patterns to show the join FIFOs keep them from deadlocking.

Every case compiles a real Verilator model of the generated design.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.hw.boards import ECP5
from bnnflow.hw.estimates import memory_cost, timing
from bnnflow.hw.ops.base import bank_depth
from bnnflow.hw.rtl import cosim, verilator
from bnnflow.hw.rtl.fifos import stream_fifo_memories
from bnnflow.hw.rtl.generate import ACCEL_TOP, RtlDesign, generate_rtl, library_file
from bnnflow.hw.rtl.stream import StreamFormat
from bnnflow.hw.simulator import Simulator
from tests.hw.conftest import graph_of, hw_node, residual_dag
from tests.hw.rtl.test_rtl import check_design, random_inputs


def _one(op_type: str, x: tuple[list[int], str], y: tuple[list[int], str], **attrs) -> ModelWrapper:
    return graph_of([hw_node(op_type, ["x"], ["y"], **attrs)], {"x": x, "y": y}, ["x"], ["y"])


SINGLE = {
    # rows from an offset, columns 0, 2, 4 of 7 (column 6 is on the stride but past OutDim), 2 of 6 channels a
    # beat, signed values
    "downsample-offset": _one("Downsample", ([5, 7, 6], "INT3"), ([2, 3, 6], "INT3"), NumChannels=6, ImgDim=[5, 7],
                              OutDim=[2, 3], Offset=[1, 0], Stride=[2, 2], PE=2, inputDataType="INT3",
                              outputDataType="INT3"),
    # unequal strides (rows 0 and 3 of 8, not 6; columns 1 to 5), all channels a beat, bits
    "downsample-strides": _one("Downsample", ([8, 6, 3], "BINARY"), ([2, 5, 3], "BINARY"), NumChannels=3,
                               ImgDim=[8, 6], OutDim=[2, 5], Offset=[0, 1], Stride=[3, 1], PE=3,
                               inputDataType="BINARY", outputDataType="BINARY"),
    # PadBefore not a multiple of PE: output beats straddle two input beats
    "channel-pad-straddling": _one("ChannelPad", ([3, 3, 4], "UINT2"), ([3, 3, 8], "UINT2"), NumChannels=4,
                                   PadBefore=1, PadAfter=3, PadValue=3, PE=2, numInputVectors=[3, 3],
                                   inputDataType="UINT2", outputDataType="UINT2"),
    # a negative pad value, 5 channels in front (one beat and two lanes at PE 3)
    "channel-pad-signed": _one("ChannelPad", ([5, 6], "INT2"), ([5, 12], "INT2"), NumChannels=6, PadBefore=5,
                               PadAfter=1, PadValue=-1, PE=3, numInputVectors=[5], inputDataType="INT2",
                               outputDataType="INT2"),
    # a global sum of signed values (stride 1: one window either way)
    "sum-pool-global": _one("SumPool", ([4, 4, 6], "INT3"), ([1, 1, 6], "INT7"), NumChannels=6, ImgDim=[4, 4],
                            PoolDim=[4, 4], Stride=[1, 1], PE=3, inputDataType="INT3", outputDataType="INT7"),
    # 2x2 windows of a 5x5 map: floor mode drops the last row and column
    "sum-pool-windows": _one("SumPool", ([5, 5, 4], "UINT2"), ([2, 2, 4], "UINT4"), NumChannels=4, ImgDim=[5, 5],
                             PoolDim=[2, 2], Stride=[2, 2], PE=4, inputDataType="UINT2", outputDataType="UINT4"),
}


@pytest.mark.parametrize("case", list(SINGLE))
def test_single_stream_op_cosimulates_exactly(tmp_path: Path, case: str) -> None:
    model = SINGLE[case]
    report = check_design(model, tmp_path / case, frames=12, seed=len(case))  # exact, and within 5 % of its model
    assert report["samples"] == 12


def _fork_join_three_ways() -> ModelWrapper:
    """x (INT4) forked three ways at PE 3; one copy thresholded to signed 2-bit codes (PE 2), added to the second
    copy (INT2 + INT4 into INT5, PE 6), and that to the third (INT5 + INT4 into INT6, PE 1): two joins, inputs of
    different widths and lanes, so width converters sit before them."""
    rng = np.random.default_rng(3)
    nodes = [
        hw_node("DuplicateStreams", ["x"], ["a", "b", "c"], NumChannels=6, NumOutputStreams=3, PE=3,
                numInputVectors=[2, 3], inputDataType="INT4", outputDataType="INT4"),
        hw_node("Thresholding", ["a", "t"], ["q"], NumChannels=6, PE=2, numInputVectors=[2, 3], outputBias=-2,
                inputDataType="INT4", outputDataType="INT2"),
        hw_node("AddStreams", ["q", "b"], ["s"], name="AddStreams_0", NumChannels=6, PE=6, numInputVectors=[2, 3],
                inputDataType="INT2", input2DataType="INT4", outputDataType="INT5"),
        hw_node("AddStreams", ["s", "c"], ["y"], name="AddStreams_1", NumChannels=6, PE=1, numInputVectors=[2, 3],
                inputDataType="INT5", input2DataType="INT4", outputDataType="INT6"),
    ]
    tensors = {"x": ([2, 3, 6], "INT4"), "a": ([2, 3, 6], "INT4"), "b": ([2, 3, 6], "INT4"),
               "c": ([2, 3, 6], "INT4"), "q": ([2, 3, 6], "INT2"), "s": ([2, 3, 6], "INT5"), "y": ([2, 3, 6], "INT6")}
    return graph_of(nodes, tensors, ["x"], ["y"], {"t": np.sort(rng.integers(-9, 9, (6, 3)), axis=1)})


def _fork_join_bits() -> ModelWrapper:
    """x (UINT2) forked at PE 2; one copy thresholded to bits (PE 1); the join adds UINT2 and BINARY into UINT3."""
    nodes = [
        hw_node("DuplicateStreams", ["x"], ["a", "b"], NumChannels=4, NumOutputStreams=2, PE=2,
                numInputVectors=[5], inputDataType="UINT2", outputDataType="UINT2"),
        hw_node("Thresholding", ["a", "t"], ["q"], NumChannels=4, PE=1, numInputVectors=[5],
                inputDataType="UINT2", outputDataType="BINARY"),
        hw_node("AddStreams", ["b", "q"], ["y"], NumChannels=4, PE=4, numInputVectors=[5],
                inputDataType="UINT2", input2DataType="BINARY", outputDataType="UINT3"),
    ]
    tensors = {"x": ([5, 4], "UINT2"), "a": ([5, 4], "UINT2"), "b": ([5, 4], "UINT2"), "q": ([5, 4], "BINARY"),
               "y": ([5, 4], "UINT3")}
    return graph_of(nodes, tensors, ["x"], ["y"], {"t": np.asarray([[0], [1], [2], [4]])})


@pytest.mark.parametrize("case", ["three-ways", "bits"])
def test_fork_and_join_of_mixed_datatypes_cosimulate_exactly(tmp_path: Path, case: str) -> None:
    model = _fork_join_three_ways() if case == "three-ways" else _fork_join_bits()
    outputs = Simulator(model).run(random_inputs(Simulator(model), 4, seed=1))
    if case == "three-ways":
        assert outputs.min() < -8 and outputs.max() > 7  # sums beyond either input's range
    report = check_design(model, tmp_path / case, frames=16, seed=7)
    assert report["samples"] == 16


def _centre_crop_residual() -> ModelWrapper:
    """A 'valid' 3x3 convolution with its residual: x (6x6x2 bits) forked; the shortcut crops the centre 4x4 with
    a cycle of latency, the convolution branch (an XNOR MVTU, PE 1) waits for two rows and three pixels before its
    first output, so the short branch must hold over a third of a frame."""
    rng = np.random.default_rng(5)
    nodes = [
        hw_node("DuplicateStreams", ["x"], ["a", "b"], NumChannels=2, NumOutputStreams=2, PE=1, numInputVectors=[6, 6],
                inputDataType="BINARY", outputDataType="BINARY"),
        hw_node("Downsample", ["a"], ["d"], NumChannels=2, ImgDim=[6, 6], OutDim=[4, 4], Offset=[1, 1], Stride=[1, 1],
                PE=1, inputDataType="BINARY", outputDataType="BINARY"),
        hw_node("SlidingWindow", ["b"], ["p"], IFMChannels=2, IFMDim=[6, 6], OFMDim=[4, 4], ConvKernelDim=[3, 3],
                Stride=[1, 1], SIMD=1, inputDataType="BINARY", outputDataType="BINARY"),
        hw_node("MVTU", ["p", "w", "t"], ["m"], MW=18, MH=2, PE=1, SIMD=9, numInputVectors=[4, 4],
                binaryXnorMode=1, inputDataType="BINARY", outputDataType="BINARY", weightDataType="BINARY",
                accDataType="INT6"),
        hw_node("AddStreams", ["d", "m"], ["y"], NumChannels=2, PE=2, numInputVectors=[4, 4], inputDataType="BINARY",
                input2DataType="BINARY", outputDataType="UINT2"),
    ]
    tensors = {"x": ([6, 6, 2], "BINARY"), "a": ([6, 6, 2], "BINARY"), "b": ([6, 6, 2], "BINARY"),
               "d": ([4, 4, 2], "BINARY"), "p": ([4, 4, 18], "BINARY"), "m": ([4, 4, 2], "BINARY"),
               "y": ([4, 4, 2], "UINT2")}
    initializers = {"w": rng.integers(0, 2, (18, 2)), "t": np.asarray([[0], [2]])}
    return graph_of(nodes, tensors, ["x"], ["y"], initializers)


def _vector_residual() -> ModelWrapper:
    """A fully connected residual block on one 128-value vector a frame: the MVTU (PE 1) holds two input vectors
    and its output FIFO before its last output of a frame leaves, so the shortcut's join FIFO must hold over two
    frames, hundreds of beats: a block RAM FIFO."""
    rng = np.random.default_rng(8)
    nodes = [
        hw_node("DuplicateStreams", ["x"], ["a", "b"], NumChannels=128, NumOutputStreams=2, PE=4,
                inputDataType="UINT2", outputDataType="UINT2"),
        hw_node("MVTU", ["a", "w", "t"], ["m"], MW=128, MH=128, PE=1, SIMD=16, inputDataType="UINT2",
                outputDataType="UINT2", weightDataType="INT2", accDataType="INT12"),
        hw_node("AddStreams", ["m", "b"], ["y"], NumChannels=128, PE=1, inputDataType="UINT2",
                input2DataType="UINT2", outputDataType="UINT3"),
    ]
    tensors = {"x": ([128], "UINT2"), "a": ([128], "UINT2"), "b": ([128], "UINT2"), "m": ([128], "UINT2"),
               "y": ([128], "UINT3")}
    initializers = {"w": rng.integers(-2, 2, (128, 128)), "t": np.sort(rng.integers(-40, 40, (128, 3)), axis=1)}
    return graph_of(nodes, tensors, ["x"], ["y"], initializers)


def _basic_block() -> ModelWrapper:
    """ResNet's basic block: x (8x8x4) forked; one copy goes straight to the join (an empty branch), the other
    through two zero-padded 3x3 convolutions (window, MVTU with thresholds, twice), each waiting for a row and more
    of its input before its first output."""
    rng = np.random.default_rng(13)
    window = dict(IFMChannels=4, IFMDim=[8, 8], OFMDim=[8, 8], ConvKernelDim=[3, 3], Stride=[1, 1],
                  Padding=[1, 1, 1, 1], PadValue=0, SIMD=2, inputDataType="UINT2", outputDataType="UINT2")
    conv = dict(MW=36, MH=4, PE=2, SIMD=6, numInputVectors=[8, 8], inputDataType="UINT2", outputDataType="UINT2",
                weightDataType="INT2", accDataType="INT10")
    nodes = [
        hw_node("DuplicateStreams", ["x"], ["a", "b"], NumChannels=4, NumOutputStreams=2, PE=2, numInputVectors=[8, 8],
                inputDataType="UINT2", outputDataType="UINT2"),
        hw_node("SlidingWindow", ["b"], ["p0"], name="SlidingWindow_0", **window),
        hw_node("MVTU", ["p0", "w0", "t0"], ["m0"], name="MVTU_0", **conv),
        hw_node("SlidingWindow", ["m0"], ["p1"], name="SlidingWindow_1", **window),
        hw_node("MVTU", ["p1", "w1", "t1"], ["m1"], name="MVTU_1", **conv),
        hw_node("AddStreams", ["a", "m1"], ["y"], NumChannels=4, PE=4, numInputVectors=[8, 8], inputDataType="UINT2",
                input2DataType="UINT2", outputDataType="UINT3"),
    ]
    tensors = {name: ([8, 8, 4], "UINT2") for name in ("x", "a", "b", "m0", "m1")}
    tensors |= {"p0": ([8, 8, 36], "UINT2"), "p1": ([8, 8, 36], "UINT2"), "y": ([8, 8, 4], "UINT3")}
    initializers = {f"{kind}{i}": value for i in range(2) for kind, value in
                    (("w", rng.integers(-2, 2, (36, 4))), ("t", np.sort(rng.integers(-12, 12, (4, 3)), axis=1)))}
    return graph_of(nodes, tensors, ["x"], ["y"], initializers)


DAGS = {"option-a": partial(residual_dag, option_a=True), "residual-dag": residual_dag, "basic-block": _basic_block,
        "centre-crop": _centre_crop_residual, "vector": _vector_residual}

#: (p_valid, p_ready) of the extra runs: a fast source into a slow sink, a trickling source, both random
BACK_PRESSURE = [(1.0, 0.15), (0.2, 1.0), (0.5, 0.5), (0.9, 0.3)]


@pytest.mark.parametrize("case", list(DAGS))
def test_fork_join_of_unequal_branches_never_deadlocks(tmp_path: Path, case: str) -> None:
    """Cosimulated and timed as every design is, then run again under four more back-pressure patterns and seeds:
    every output beat arrives (the testbench reports a stall as a failure) and equals the simulator's."""
    model = DAGS[case]()
    folder = tmp_path / case
    design = generate_rtl(model, folder)
    verilator.lint(design.source_paths, ACCEL_TOP, folder)
    assert any(layer.module == "bnn_dup" for layer in design.layers)
    # the short branch got its join FIFO; the vector block's is deep enough for block RAM (bnn_stream_fifo's
    # synchronous-read path)
    depths = [int(d) for d in re.findall(r"bnn_stream_fifo #\(\s*\.WIDTH\(\d+\),\s*\.DEPTH\((\d+)\)",
                                         (folder / f"{ACCEL_TOP}.v").read_text())]
    assert len(depths) == 1 and (case != "vector" or depths[0] > 256), depths
    simulator = Simulator(model)
    inputs = random_inputs(simulator, 10, seed=2)
    expected = simulator.run(inputs).reshape(len(inputs), -1)
    report = cosim.cosimulate(design, inputs, expected, timing(model, 100.0)["initiation_interval_cycles"], seed=2)
    assert report["mismatches"] == 0, report
    assert report["cycles_error"] <= 0.05, report
    for seed, (p_valid, p_ready) in enumerate(BACK_PRESSURE, start=10):
        run = cosim.run(design, inputs, seed=seed, p_valid=p_valid, p_ready=p_ready, work=folder / f"bp{seed}")
        assert np.array_equal(run.outputs, expected), (seed, p_valid, p_ready)


#: the FIFOs of the chain, (depth, words per bank): one beat (its ready passes through), two and five beats (LUT
#: RAM), 60 beats of 72 bits and 300 beats (block RAM: a synchronous read, then the banks' registers and the skid),
#: 700 beats in banks of 256 words (three banks, the last one shorter)
FIFO_DEPTHS = [(1, 2048), (2, 2048), (5, 2048), (60, 2048), (300, 2048), (700, 256)]


def test_stream_fifos_of_every_kind_pass_every_beat_at_one_a_cycle(tmp_path: Path) -> None:
    """A chain of bnn_stream_fifo of each kind as the whole accelerator: under random back-pressure every beat comes
    out once and in order, and without back-pressure a 50-beat frame takes 50 cycles (one beat a cycle through all
    of them)."""
    folder = tmp_path / "fifos"
    folder.mkdir()
    fmt = StreamFormat(9, 8, False, 50)
    wires = ["in", *(f"s{i}" for i in range(len(FIFO_DEPTHS) - 1)), "out"]
    body = [f"    wire [{fmt.width - 1}:0] {w}_data;\n    wire {w}_valid;\n    wire {w}_ready;" for w in wires[1:-1]]
    for i, (depth, bank) in enumerate(FIFO_DEPTHS):
        a, b = wires[i], wires[i + 1]
        body.append(f"    bnn_stream_fifo #(.WIDTH({fmt.width}), .DEPTH({depth}), .BANK({bank})) u_f{i} "
                    f"(.clk(clk), .rst(rst), .in_data({a}_data), .in_valid({a}_valid), .in_ready({a}_ready), "
                    f".out_data({b}_data), .out_valid({b}_valid), .out_ready({b}_ready));")
    (folder / f"{ACCEL_TOP}.v").write_text(
        f"`default_nettype none\nmodule {ACCEL_TOP} (\n    input wire clk,\n    input wire rst,\n"
        f"    input wire [{fmt.width - 1}:0] in_data,\n    input wire in_valid,\n    output wire in_ready,\n"
        f"    output wire [{fmt.width - 1}:0] out_data,\n    output wire out_valid,\n    input wire out_ready\n);\n"
        + "\n".join(body) + "\nendmodule\n`default_nettype wire\n")
    (folder / "bnn_stream_fifo.v").write_text(library_file("bnn_stream_fifo.v").read_text())
    design = RtlDesign(folder, ["bnn_stream_fifo.v", f"{ACCEL_TOP}.v"], fmt, fmt, "accumulator", [])
    verilator.lint(design.source_paths, ACCEL_TOP, folder)
    inputs = np.random.default_rng(4).integers(0, 256, (30, fmt.elements))
    for seed, (p_valid, p_ready) in enumerate([(0.7, 0.6), *BACK_PRESSURE]):
        run = cosim.run(design, inputs, seed=seed, p_valid=p_valid, p_ready=p_ready, work=folder / f"bp{seed}")
        assert np.array_equal(run.outputs, inputs), (p_valid, p_ready)
    steady = cosim.run(design, inputs, work=folder / "steady")
    assert cosim.measured_cycles_per_frame(steady.frame_cycles) == fmt.beats


@pytest.mark.parametrize(("width", "depth", "block_rams"), [(128, 2048, 16), (12, 3000, 3), (16, 12, 0)])
def test_deep_stream_fifos_map_to_block_ram_on_ecp5(tmp_path: Path, width: int, depth: int, block_rams: int) -> None:
    """yosys synth_ecp5, in banks of ``bank_depth`` words, as the estimate counts them: a 2048-beat FIFO of 128 bits
    is block RAM (2046 words of the RAM: 4 banks of 512 words, 4 DP16KD of 36 x 512 each), 3000 of 12 bits 3 banks
    of 18 x 1024, a 12-beat one LUT RAM."""
    from bnnflow.hw.toolchain import run_tool

    assert sum(memory_cost(m, ECP5)[0] for m in stream_fifo_memories(width, depth)) == block_rams
    source = tmp_path / "bnn_stream_fifo.v"
    source.write_text(library_file("bnn_stream_fifo.v").read_text())
    bank = bank_depth(width, max(2, depth - 2))
    script = (f"read_verilog {source.name}; chparam -set WIDTH {width} -set DEPTH {depth} -set BANK {bank} "
              "bnn_stream_fifo; "
              "synth_ecp5 -top bnn_stream_fifo; tee -o stat.txt stat")
    run_tool("yosys", ["-q", "-p", script], tmp_path / "yosys.log", tmp_path)
    cells = dict((name, int(count)) for count, name in re.findall(r"^\s+(\d+)\s+(\w+)$", (tmp_path / "stat.txt").read_text(),
                                                                  re.M))
    assert cells.get("DP16KD", 0) == block_rams, cells
    if not block_rams:
        assert cells.get("TRELLIS_DPR16X4", 0) > 0, cells
