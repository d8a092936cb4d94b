"""ROM images: each word in exactly the hex digits its memory's width needs, read by Icarus Verilog's $readmemh
without a warning and into the intended weights and thresholds (negative ones in two's complement)."""

from __future__ import annotations

import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.boards import ECP5
from bnnflow.hw.folding import fold_for_fps
from bnnflow.hw.rtl.generate import ACCEL_TOP, RtlDesign, generate_rtl
from bnnflow.hw.rtl.layers import Layer
from bnnflow.hw.rtl.stream import StreamFormat, decode
from tests.hw.conftest import build_dataflow, threshold_pool_label_chain

#: digits layers folded for word widths that are not multiples of 4, four banks, and a 1-word ROM: (PE, SIMD)
DIGITS_FOLDING = {"MVTU_0": (2, 8), "MVTU_1": (4, 16), "MVTU_2": (1, 2), "MVTU_3": (10, 128)}


def _digits():
    """digits_mlp with negative thresholds in its 8-bit input layer, folded as DIGITS_FOLDING says."""
    model = build_dataflow("digits_mlp", (1, 8, 8))
    model.set_initializer("MVTU_0_thresholds", np.random.default_rng(3).integers(-300, 300, (128, 1)).astype(np.float32))
    for node in model.graph.node:
        pe, simd = DIGITS_FOLDING[node.name]
        getCustomOp(node).set_nodeattr("PE", pe)
        getCustomOp(node).set_nodeattr("SIMD", simd)
    return model


def _cnv():
    model = build_dataflow("cnv", (3, 32, 32))
    fold_for_fps(model, 3000, 100.0, ECP5)
    return model


DESIGNS = {"digits": _digits, "cnv": _cnv, "chain": threshold_pool_label_chain}


@pytest.fixture(scope="module")
def designs(tmp_path_factory) -> dict:
    """name -> (dataflow graph, its generated design)."""
    root = tmp_path_factory.mktemp("roms")
    built = {}
    for name, make in DESIGNS.items():
        model = make()
        built[name] = (model, generate_rtl(model, root / name))
    return built


def rom_widths(layer: Layer) -> dict[str, int]:
    """Each ROM file of a layer with its word width, as bnn_mvtu.v (WW, TW) and bnn_threshold.v (TW) declare it."""
    p = layer.params
    widths = {name: p["PE"] * p["SIMD"] * p["W_BITS"] for name in layer.roms if "_weights_" in name}
    if p.get("N_THR"):
        widths[p["THRESH_FILE"]] = p["PE"] * p["N_THR"] * p["ACC_W"]
    return widths


@pytest.mark.parametrize("name", list(DESIGNS))
def test_every_rom_word_has_exactly_its_widths_digits(designs, name: str) -> None:
    _, design = designs[name]
    widths = {rom: width for layer in design.layers for rom, width in rom_widths(layer).items()}
    assert set(widths) == {path.name for path in design.folder.glob("*.hex")}
    assert {width % 4 for width in widths.values()} - {0}, "some width must not be a multiple of 4"
    for rom, width in widths.items():
        lines = (design.folder / rom).read_text().split()
        assert {len(line) for line in lines} == {math.ceil(width / 4)}, rom
        assert max(int(line, 16) for line in lines) < 1 << width, rom


def _readback_bench(design: RtlDesign, widths: dict[str, int]) -> str:
    """A testbench with the real accelerator (its ROMs load at time 0) and one memory per ROM file, declared at its
    width, that prints every word it read: ``ROM <file index> <word> <hex>``."""
    stream = design.input.width
    lines = ["module tb;",
             f"    {ACCEL_TOP} u (.clk(1'b0), .rst(1'b1), .in_data({{{stream}{{1'b0}}}}), .in_valid(1'b0), .in_ready(),",
             "        .out_data(), .out_valid(), .out_ready(1'b1));",
             "    integer i;"]
    for k, (rom, width) in enumerate(widths.items()):
        depth = len((design.folder / rom).read_text().split())
        lines += [f"    reg [{width - 1}:0] m{k} [0:{depth - 1}];",
                  f'    initial begin $readmemh("{rom}", m{k}); for (i = 0; i < {depth}; i = i + 1) '
                  f'$display("ROM {k} %0d %h", i, m{k}[i]); end']
    return "\n".join([*lines, "endmodule", ""])


def _values(design: RtlDesign, widths: dict[str, int], out: str) -> dict[str, np.ndarray]:
    """Each ROM's words as Icarus read them, as the byte rows the stream decoder takes."""
    words: dict[str, list[int]] = {rom: [] for rom in widths}
    names = list(widths)
    for line in out.splitlines():
        if line.startswith("ROM "):
            _, k, _, value = line.split()
            words[names[int(k)]].append(int(value, 16))
    return {rom: np.array([list(w.to_bytes(math.ceil(widths[rom] / 8), "little")) for w in ws], dtype=np.uint8)
            for rom, ws in words.items()}


def _expected_thresholds(model, layer: Layer) -> np.ndarray:
    """The thresholds the ROM must hold: the chain's INT6 input clips them to [-32, 32]; digits' are in range, and
    its XNOR units count agreements, so a threshold t on the bipolar accumulator 2 * count - MW becomes the fewest
    agreements that reach it (MW + 1: never), found by trying every count."""
    node = next(node for node in model.graph.node if node.name == layer.name)
    thresholds = model.get_initializer(node.input[-1]).astype(np.int64)
    if layer.module == "bnn_threshold":
        return np.clip(thresholds, -32, 32)
    if layer.params["XNOR"]:
        mw = layer.params["MW"]
        counts = np.arange(mw + 2)
        return np.array([[int(counts[(2 * counts - mw >= t) | (counts == mw + 1)][0]) for t in row]
                         for row in thresholds])
    return thresholds


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="needs Icarus Verilog (Debian: apt-get install iverilog)")
@pytest.mark.parametrize("name", ["digits", "chain"])
def test_icarus_reads_every_rom_without_warning_to_the_intended_values(designs, name: str, tmp_path: Path) -> None:
    model, design = designs[name]
    widths = {rom: width for layer in design.layers for rom, width in rom_widths(layer).items()}
    (design.folder / "tb.v").write_text(_readback_bench(design, widths))
    sources = [*design.sources, "tb.v"]
    build = subprocess.run(["iverilog", "-Wall", "-g2005", "-o", str(tmp_path / "sim"), "-s", "tb", *sources],
                           cwd=design.folder, capture_output=True, text=True)
    assert build.returncode == 0 and not build.stdout + build.stderr, build.stdout + build.stderr
    run = subprocess.run(["vvp", "-n", str(tmp_path / "sim")], cwd=design.folder, capture_output=True, text=True)
    assert run.returncode == 0
    assert "WARNING" not in run.stdout + run.stderr, run.stdout + run.stderr  # e.g. "Excess hex digits"
    read = _values(design, widths, run.stdout)
    negative = False
    for layer in design.layers:
        p = layer.params
        if layer.module == "bnn_mvtu":
            weights_read = [read[rom] for rom in sorted(read) if rom.startswith(f"{layer.name}_weights_")]
            fmt = StreamFormat(p["PE"] * p["SIMD"], p["W_BITS"], not (p["XNOR"] or p["W_BIPOLAR"]), 1)
            nf, sf = p["MH"] // p["PE"], p["MW"] // p["SIMD"]
            words = decode(np.concatenate(weights_read), fmt)[: nf * sf]  # a 1-word bank is padded to 2
            rebuilt = words.reshape(nf, sf, p["PE"], p["SIMD"]).transpose(1, 3, 0, 2).reshape(p["MW"], p["MH"])
            weights = model.get_initializer(next(n for n in model.graph.node if n.name == layer.name).input[1])
            np.testing.assert_array_equal(rebuilt, weights if fmt.signed else (weights > 0).astype(np.int64))
        if p.get("N_THR"):
            fmt = StreamFormat(p["PE"] * p["N_THR"], p["ACC_W"], True, 1)
            thresholds = decode(read[p["THRESH_FILE"]], fmt).reshape(-1, p["N_THR"])
            np.testing.assert_array_equal(thresholds, _expected_thresholds(model, layer))
            negative |= bool((thresholds < 0).any())
    assert negative, "the designs must hold negative thresholds (two's complement)"
