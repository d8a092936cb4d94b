"""Block RAM by construction: every memory of the RTL carries the yosys attribute (``rom_style`` / ``ram_style``)
of the estimate's rule (``bnnflow.hw.estimates.LUTROM_MAX_BITS``), and every one is in its op's ``memories()``, so
``estimate()["ram_blocks"]`` is the DP16KD count of yosys's ``synth_ecp5``. Checked on small designs that hold
every kind of memory, as LUTs and as block RAM: weight ROMs, parallel and searched thresholds, sign ROMs,
padding corrections, the MVTU's input buffer, the sliding window's ring, a pool's row, join FIFOs shallow and
deep, and the output FIFOs.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from bnnflow.hw.boards import ECP5
from bnnflow.hw.estimates import LUTROM_MAX_BITS, estimate, hw_ops, memory_cost
from bnnflow.hw.rtl.generate import ACCEL_TOP, generate_rtl
from tests.hw.conftest import graph_of, hw_node, residual_dag
from tests.hw.rtl.test_stream_ops import DAGS

pytestmark = pytest.mark.toolchain


def _conv_search():
    """x (5 x 18 x 64, UINT4) -> 3x3 window (a ring of block RAM) -> MVTU (PE 2, SIMD 16: weights and input buffer
    in block RAM) with 255 thresholds searched (the first levels logic, the deep ones block RAM) and a padding
    correction (block RAM) -> Thresholding with 15 thresholds compared at once (block RAM)."""
    rng = np.random.default_rng(3)
    c, h, w, mh = 64, 5, 18, 64
    mw, oh, ow = 9 * c, h - 2, w - 2
    rows, cols = [0, 1, 2], [0] + [1] * (ow - 2) + [2]
    nodes = [
        hw_node("SlidingWindow", ["x"], ["p"], IFMChannels=c, IFMDim=[h, w], OFMDim=[oh, ow], ConvKernelDim=[3, 3],
                Stride=[1, 1], SIMD=16, Padding=[0, 0, 0, 0], PadValue=0, inputDataType="UINT4",
                outputDataType="UINT4"),
        hw_node("MVTU", ["p", "w", "t", "corr"], ["m"], MW=mw, MH=mh, PE=2, SIMD=16, numInputVectors=[oh, ow],
                padCorrection=1, correctionRows=rows, correctionCols=cols, inputDataType="UINT4",
                outputDataType="UINT8", weightDataType="INT2", accDataType="INT16"),
        hw_node("Thresholding", ["m", "t2"], ["y"], NumChannels=mh, PE=1, numInputVectors=[oh, ow],
                inputDataType="UINT8", outputDataType="UINT4"),
    ]
    tensors = {"x": ([h, w, c], "UINT4"), "p": ([oh, ow, mw], "UINT4"), "m": ([oh, ow, mh], "UINT8"),
               "y": ([oh, ow, mh], "UINT4")}
    initializers = {"w": rng.integers(-2, 2, (mw, mh)), "t": np.sort(rng.integers(-40, 40, (mh, 255)), axis=1),
                    "corr": rng.integers(-6, 7, (9, mh)), "t2": np.sort(rng.integers(0, 256, (mh, 15)), axis=1)}
    return graph_of(nodes, tensors, ["x"], ["y"], initializers)


def _shallow_wide():
    """x (3 x 3 x 288, UINT4) -> MVTU (PE 8, SIMD 32): its weight ROM is 18 words of 512 bits, over
    LUTROM_MAX_BITS but shallow enough for logic (SHALLOW_ROM_WORDS), where block RAM would take 15 blocks."""
    rng = np.random.default_rng(5)
    mw, mh = 288, 16
    nodes = [hw_node("MVTU", ["x", "w", "t"], ["y"], MW=mw, MH=mh, PE=8, SIMD=32, numInputVectors=[3, 3],
                     inputDataType="UINT4", outputDataType="UINT2", weightDataType="INT2", accDataType="INT16")]
    tensors = {"x": ([3, 3, mw], "UINT4"), "y": ([3, 3, mh], "UINT2")}
    initializers = {"w": rng.integers(-2, 2, (mw, mh)), "t": np.sort(rng.integers(-40, 40, (mh, 3)), axis=1)}
    return graph_of(nodes, tensors, ["x"], ["y"], initializers)


#: a residual DAG (a padded window, signs, a sum pool, a shallow join FIFO), the fully connected residual block
#: whose join FIFO is deep (block RAM), and the conv with every threshold and correction memory
DESIGNS = {"residual-dag": residual_dag, "vector": DAGS["vector"], "conv-search": _conv_search,
           "shallow-wide": _shallow_wide}


def _synth_cells(folder: Path, sources: list[Path]) -> dict[str, int]:
    from bnnflow.hw.toolchain import run_tool

    script = f"synth_ecp5 -top {ACCEL_TOP}; tee -o stat.txt stat"
    run_tool("yosys", ["-q", "-p", script, *sources], folder / "yosys.log", folder)
    return {name: int(count) for count, name in re.findall(r"^\s+(\d+)\s+(\w+)$", (folder / "stat.txt").read_text(),
                                                             re.M)}


@pytest.mark.parametrize("case", list(DESIGNS))
def test_block_rams_of_synthesis_are_the_estimate(tmp_path: Path, case: str) -> None:
    model = DESIGNS[case]()
    design = generate_rtl(model, tmp_path / case)
    expected = estimate(model, 100.0, ECP5)["ram_blocks"]
    memories = [m for _, op in hw_ops(model) for m in op.memories(model)]
    # each design has memories on both sides of the rule (the conv and the vector block have block RAM)
    assert any(memory_cost(m, ECP5)[1] for m in memories)
    assert case in ("residual-dag", "shallow-wide") or expected > 0
    if case == "shallow-wide":  # the weight ROM is in logic though it is over LUTROM_MAX_BITS
        assert any(m.bits > LUTROM_MAX_BITS and memory_cost(m, ECP5)[0] == 0 for m in memories)
    cells = _synth_cells(design.folder, design.source_paths)
    assert cells.get("DP16KD", 0) == expected, (cells, expected)
    assert cells.get("TRELLIS_DPR16X4", 0) > 0, cells  # output FIFOs, pool rows, shallow buffers: LUT RAM
