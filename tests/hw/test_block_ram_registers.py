"""The ECP5 block RAM output-register pass, on netlists yosys really writes and nextpnr really places: it moves
exactly the plain registers after block RAM reads, keeps every other kind, rewires their loads to the block RAM,
and the block RAM's data then leaves it early enough that the read is no longer the critical path."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pytest

from bnnflow.hw.block_ram_registers import Absorbed, absorb_in_netlist_file, absorb_output_registers
from bnnflow.hw.toolchain import run_tool

pytestmark = pytest.mark.toolchain

#: Six block ROMs, each read into a register (which yosys puts in the block RAM) and then into a second one:
#: plain for r0 (36 bits: a pseudo-dual-port block RAM) and r1 (18 bits on one port); with an enable (r2), a
#: reset (r3), a second load on the data (r4) or powering up 1 (r5). Only r0's and r1's second registers are
#: the block RAM's output register's equal.
KINDS = """\
module kinds (input wire clk, input wire rst, input wire en, input wire [8:0] a, output reg [5:0] y);
    integer i;
    (* rom_style = "block" *) reg [35:0] r0 [0:511];
    (* rom_style = "block" *) reg [17:0] r1 [0:1023];
    (* rom_style = "block" *) reg [35:0] r2 [0:511];
    (* rom_style = "block" *) reg [35:0] r3 [0:511];
    (* rom_style = "block" *) reg [35:0] r4 [0:511];
    (* rom_style = "block" *) reg [35:0] r5 [0:511];
    initial for (i = 0; i < 512; i = i + 1) begin
        r0[i] = {i[3:0], i * 32'h9E3779B1};
        r2[i] = {i[3:0], i * 32'h85EBCA6B};
        r3[i] = {i[3:0], i * 32'hC2B2AE35};
        r4[i] = {i[3:0], i * 32'h27D4EB2F};
        r5[i] = {i[3:0], i * 32'h165667B1};
    end
    initial for (i = 0; i < 1024; i = i + 1) r1[i] = i * 18'h2F3A5;
    reg [35:0] q0, q2, q3, q4, q5, h0, h2, h3, h4, g0, g2, g3, g4, g5;
    reg [17:0] q1, h1, g1;
    reg [35:0] h5 = 36'hFFFFFFFFF;
    reg t4;
    always @(posedge clk) begin
        q0 <= r0[a]; q1 <= r1[{a, a[0]}]; q2 <= r2[a]; q3 <= r3[a]; q4 <= r4[a]; q5 <= r5[a];
        h0 <= q0;
        h1 <= q1;
        if (en) h2 <= q2;
        h3 <= rst ? 36'd0 : q3;
        h4 <= q4; t4 <= ^q4[3:0];
        h5 <= q5;
        {g0, g1, g2, g3, g4, g5} <= {h0, h1, h2, h3, h4, h5};
        y <= {^g0, ^g1, ^g2, ^g3, ^g4 ^ t4, ^g5};
    end
endmodule
"""


def _synthesize(folder: Path, name: str, verilog: str) -> Path:
    (folder / f"{name}.v").write_text(verilog)
    run_tool("yosys", ["-p", f"synth_ecp5 -top {name} -json {name}.json", f"{name}.v"], folder / f"{name}.log",
             folder)
    return folder / f"{name}.json"


@pytest.fixture(scope="module")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synthesize(tmp_path_factory.mktemp("kinds"), "kinds", KINDS)


def _cells(netlist: dict, name: str) -> dict[str, dict]:
    return netlist["modules"][name]["cells"]


def _driver_of(cells: dict[str, dict], bit: int) -> tuple[str, str]:
    return next((name, port) for name, cell in cells.items() for port, bits in cell["connections"].items()
                if cell["port_directions"][port] == "output" and bit in bits)


def test_only_plain_registers_move_into_the_block_ram(kinds: Path) -> None:
    netlist = json.loads(kinds.read_text())
    before = Counter(cell["type"] for cell in _cells(netlist, "kinds").values())
    assert before["DP16KD"] == 6

    assert absorb_output_registers(netlist) == Absorbed(block_rams=2, flip_flops=36 + 18)

    cells = _cells(netlist, "kinds")
    assert Counter(cell["type"] for cell in cells.values())["TRELLIS_FF"] == before["TRELLIS_FF"] - 54
    modes = {name.split(".")[0]: (cell["parameters"]["REGMODE_A"], cell["parameters"]["REGMODE_B"])
             for name, cell in cells.items() if cell["type"] == "DP16KD"}
    assert modes == {"r0": ("OUTREG", "OUTREG"), "r1": ("OUTREG", "NOREG"), "r2": ("NOREG", "NOREG"),
                     "r3": ("NOREG", "NOREG"), "r4": ("NOREG", "NOREG"), "r5": ("NOREG", "NOREG")}
    assert cells["r0.0.0"]["connections"]["OCEA"] == ["1"]  # a pseudo-dual-port's upper half loads too
    # the registers h0 and h1 are gone; their bits, read by g0 and g1, now come from the block RAMs
    for name, register in (("g0", "r0"), ("g1", "r1")):
        readers = [cell for cell_name, cell in cells.items() if cell_name.startswith(f"{name}_TRELLIS_FF")]
        assert readers
        for reader in readers:
            source, port = _driver_of(cells, reader["connections"]["DI"][0])
            assert source == f"{register}.0.0" and port.startswith("DO")
    assert not any(name.startswith(("h0_", "h1_")) for name in cells)
    # the kept kinds still read their block RAM through a flip-flop
    for name in ("h2", "h3", "h4", "h5"):
        assert any(cell_name.startswith(f"{name}_TRELLIS_FF") for cell_name in cells)


def test_a_second_pass_changes_nothing(kinds: Path, tmp_path: Path) -> None:
    netlist = tmp_path / "kinds.json"
    netlist.write_bytes(kinds.read_bytes())
    assert absorb_in_netlist_file(netlist) == Absorbed(2, 54)
    once = netlist.read_bytes()
    assert absorb_in_netlist_file(netlist) == Absorbed(0, 0)
    assert netlist.read_bytes() == once


#: Two block ROMs read into plain registers and on through two more: the read is the slowest path unless its
#: data comes from the output register.
PLAIN = """\
module plain (input wire clk, input wire [8:0] a, output reg [1:0] y);
    integer i;
    (* rom_style = "block" *) reg [35:0] r0 [0:511];
    (* rom_style = "block" *) reg [17:0] r1 [0:1023];
    initial for (i = 0; i < 512; i = i + 1) r0[i] = {i[3:0], i * 32'h9E3779B1};
    initial for (i = 0; i < 1024; i = i + 1) r1[i] = i * 18'h2F3A5;
    reg [35:0] q0, h0, g0;
    reg [17:0] q1, h1, g1;
    always @(posedge clk) begin
        q0 <= r0[a]; q1 <= r1[{a, a[0]}];
        h0 <= q0; h1 <= q1;
        g0 <= h0; g1 <= h1;
        y <= {^g0, ^g1};
    end
endmodule
"""


def _place(netlist: Path) -> tuple[float, str]:
    """nextpnr-ecp5 on the ULX3S's part: Fmax and the first cell of the critical path."""
    log = netlist.with_suffix(".pnr.log")
    run_tool("nextpnr-ecp5", ["--85k", "--package", "CABGA381", "--speed", "6", "--json", netlist.name, "--freq",
                              "100", "--timing-allow-fail", "--seed", "1"], log, netlist.parent)
    text = log.read_text()
    fmax = float(re.findall(r"Max frequency for clock '[^']+': ([\d.]+) MHz", text)[-1])
    clock_path = text.rsplit("Critical path report for clock", 1)[1]  # after routing, the clock's own paths
    source = re.search(r"clk-to-q\s+[\d.]+\s+[\d.]+ Source (\S+)", clock_path).group(1)
    return fmax, source


def test_nextpnr_places_the_output_registers_and_the_read_is_no_longer_critical(tmp_path: Path) -> None:
    netlist = _synthesize(tmp_path, "plain", PLAIN)
    moved = tmp_path / "moved.json"
    moved.write_bytes(netlist.read_bytes())
    assert absorb_in_netlist_file(moved) == Absorbed(2, 54)

    fmax_before, source_before = _place(netlist)
    fmax_after, source_after = _place(moved)
    assert source_before.split(".")[0] in {"r0", "r1"}  # the block RAM's 5.8 ns data limits the clock ...
    assert source_after.split(".")[0] not in {"r0", "r1"}  # ... and no longer does
    assert fmax_after > fmax_before
