"""The pins, oscillator and PLL of each open board, and the Verilog top that wires ``bnnflow_system`` to them.

Only boards whose UART we have checked against an upstream pin file are wired; every pin below cites its file.
The generated top, ``bnnflow_board``, is the same on every board:

    oscillator -> PLL (Verilog from ecppll / icepll) -> design clock
    PLL lock   -> two-flop synchronizer -> 128-cycle power-on counter -> synchronous, active-high reset
    UART pin   -> two-flop synchronizer -> bnnflow_system #(CLKS_PER_BIT) -> UART pin, error -> LED

The PLL rarely hits the requested clock exactly, so the achieved frequency (computed from the divider values the
tool chose) is what the design's clock really is: CLKS_PER_BIT, nextpnr's ``--freq`` and the reports use it.
Running the PLL tools is ``bnnflow.hw.toolchain``'s job; this module only builds their arguments and reads their
answers, so it has no side effects.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bnnflow.errors import ConfigError
from bnnflow.hw.boards import Board, get_board

#: the top module every board build synthesizes
TOP = "bnnflow_board"
#: the module the generated PLL Verilog defines
PLL_MODULE = "bnnflow_pll"

#: PLL output range per family: ecppll warns outside 10-400 MHz (and still writes a PLL for a clock it did not
#: reach), icepll refuses outside 16-275 MHz; both ranges are the tools' own messages (yowasp-ecppll 1.4,
#: yowasp-icepll from nextpnr-0.11.1).
PLL_RANGE_MHZ = {"ecp5": (10.0, 400.0), "ice40": (16.0, 275.0)}

#: the largest baud-rate error we accept from the clock divider: a UART samples mid-bit, so sender and receiver
#: may drift apart by at most half a bit over a 10-bit frame (5%); 2% here leaves the rest to the other end
MAX_BAUD_ERROR = 0.02


@dataclass(frozen=True)
class Pin:
    """One package pin: its site (ball or pin number) and, on ECP5, the IOBUF attributes of the upstream file."""

    site: str
    attrs: str = ""


@dataclass(frozen=True)
class BoardIO:
    """What a board build needs beyond the board table: nextpnr's device flags, the oscillator and the pins."""

    board: Board
    nextpnr_args: tuple[str, ...]  #: device, package and speed flags of nextpnr-ecp5 / nextpnr-ice40
    osc_mhz: float  #: the oscillator the PLL runs from
    clk: Pin
    uart_rx: Pin  #: the FPGA receives on this pin (the USB-UART chip's TX)
    uart_tx: Pin  #: the FPGA transmits on this pin (the USB-UART chip's RX)
    led: Pin  #: shows ``bnnflow_system``'s error output
    led_active_low: bool
    pll_pad: bool  #: the oscillator pin is the PLL's own input pad (iCE40 SB_PLL40_PAD instead of _CORE)
    source: str  #: where the pins were checked

    @property
    def family(self) -> str:
        return self.board.fabric.name

    @property
    def constraints_name(self) -> str:
        return f"{self.board.name}.{'lpf' if self.family == 'ecp5' else 'pcf'}"


# ULX3S v2.x / v3.0.x: emard/ulx3s doc/constraints/ulx3s_v20.lpf (commit 0376883a): clk_25mhz G2 (25 MHz),
# ftdi_txd M1 "FPGA receives from ftdi", ftdi_rxd L4 "FPGA transmits to ftdi", led[0] B2; the IOBUF attributes
# are that file's. LFE5U-85F-6BG381C: nextpnr-ecp5 --85k --package CABGA381 --speed 6 (nextpnr-ecp5 --help:
# "--85k set device type to LFE5U-85F", package CABGA381 is its default, speed grades 6, 7 or 8).
_ULX3S = dict(
    nextpnr_args=("--85k", "--package", "CABGA381", "--speed", "6"),
    osc_mhz=25.0,
    clk=Pin("G2", "PULLMODE=NONE IO_TYPE=LVCMOS33"),
    uart_rx=Pin("M1", "PULLMODE=UP IO_TYPE=LVCMOS33"),
    uart_tx=Pin("L4", "PULLMODE=UP IO_TYPE=LVCMOS33 DRIVE=4"),
    led=Pin("B2", "PULLMODE=NONE IO_TYPE=LVCMOS33 DRIVE=4"),
    led_active_low=False,
    pll_pad=False,
    source="emard/ulx3s doc/constraints/ulx3s_v20.lpf @ 0376883a",
)

# Colorlight i5 v7.0 (LFE5U-25F-6BG381C) on Muse Lab's extension board: litex-hub/litex-boards
# litex_boards/platforms/colorlight_i5.py (commit 219067ed): clk25 P3, serial tx J17 / rx H18 (the FPGA's
# view; LiteX's default UART for this board), user_led_n U16 (active low), all LVCMOS33. The pull-up on the
# receive pin is ours: it holds the line idle (high) when no cable drives it.
_COLORLIGHT_I5 = dict(
    nextpnr_args=("--25k", "--package", "CABGA381", "--speed", "6"),
    osc_mhz=25.0,
    clk=Pin("P3", "IO_TYPE=LVCMOS33"),
    uart_rx=Pin("H18", "PULLMODE=UP IO_TYPE=LVCMOS33"),
    uart_tx=Pin("J17", "IO_TYPE=LVCMOS33"),
    led=Pin("U16", "IO_TYPE=LVCMOS33"),
    led_active_low=True,
    pll_pad=False,
    source="litex-hub/litex-boards litex_boards/platforms/colorlight_i5.py @ 219067ed",
)

# iCEBreaker (iCE40UP5K-SG48): icebreaker-fpga/icebreaker-verilog-examples icebreaker/icebreaker.pcf (commit
# 056ed402; the same pins as YosysHQ/icestorm examples/icebreaker/icebreaker.pcf): "12 MHz clock" CLK 35, RX 6,
# TX 9, LEDR_N 11 (red, active low). RX is the FPGA's input and CLK feeds SB_PLL40_PAD directly in that repo's
# icebreaker/pll_uart/pll_uart_mirror.v. nextpnr-ice40 --up5k --package sg48.
_ICEBREAKER = dict(
    nextpnr_args=("--up5k", "--package", "sg48"),
    osc_mhz=12.0,
    clk=Pin("35"),
    uart_rx=Pin("6"),
    uart_tx=Pin("9"),
    led=Pin("11"),
    led_active_low=True,
    pll_pad=True,
    source="icebreaker-fpga/icebreaker-verilog-examples icebreaker/icebreaker.pcf @ 056ed402",
)

_WIRED = {"ulx3s": _ULX3S, "colorlight-i5": _COLORLIGHT_I5, "icebreaker": _ICEBREAKER}

#: boards on the open flow that have no UART wired in bnnflow, and why
_UNWIRED = {
    "orangecrab": "it has no USB-UART chip: its USB port goes straight to the FPGA, which would need a USB-serial "
                  "core",
}


def wired_boards() -> list[str]:
    """Names of the boards ``board_io`` can wire up, smallest first."""
    return sorted(_WIRED, key=lambda name: get_board(name).luts)


def board_io(name: str) -> BoardIO:
    """The pins and device flags of board ``name``; a board without a wired UART is a ``ConfigError``."""
    board = get_board(name)
    if name in _WIRED:
        return BoardIO(board=board, **_WIRED[name])
    wired = ", ".join(wired_boards())
    if board.fabric.name not in PLL_RANGE_MHZ:
        raise ConfigError(f"{name} is a {board.fabric.name} board, which the open toolchain (yosys/nextpnr) cannot "
                          f"build; use `bnnflow finn` for it, or one of the open boards: {wired}")
    reason = _UNWIRED.get(name, "its pins have not been checked yet")
    raise ConfigError(f"{name} has no UART wired in bnnflow yet ({reason}); boards with one: {wired}")


def constraints(io: BoardIO) -> str:
    """The pin constraint file (.lpf on ECP5, .pcf on iCE40) for ``bnnflow_board``'s ports."""
    ports = {"clk_osc": io.clk, "uart_rx": io.uart_rx, "uart_tx": io.uart_tx, "led_error": io.led}
    lines = [f"# {io.board.name} ({io.board.part}), generated by bnnflow; pins from {io.source}"]
    if io.family == "ecp5":
        for port, pin in ports.items():
            lines.append(f'LOCATE COMP "{port}" SITE "{pin.site}";')
            lines.append(f'IOBUF PORT "{port}" {pin.attrs};')
        lines.append(f'FREQUENCY PORT "clk_osc" {io.osc_mhz:g} MHZ;')
    else:
        lines += [f"set_io {port} {pin.site}" for port, pin in ports.items()]
        lines.append(f"set_frequency clk_osc {io.osc_mhz:g}")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Pll:
    """The clock the design runs at and the PLL that makes it (``verilog`` is None when the oscillator is used)."""

    requested_mhz: float
    achieved_mhz: float
    verilog: str | None
    settings: str  #: the divider values, for the report


def needs_pll(io: BoardIO, clock_mhz: float) -> bool:
    """False when the requested clock is the oscillator's, which then drives the design directly."""
    if abs(clock_mhz - io.osc_mhz) < 1e-9:
        return False
    low, high = PLL_RANGE_MHZ[io.family]
    if not low <= clock_mhz <= high:
        raise ConfigError(f"clock {clock_mhz:g} MHz is outside the {io.family} PLL's range of {low:g}-{high:g} MHz "
                          f"on {io.board.name}; pick a clock in that range, or {io.osc_mhz:g} MHz (the oscillator)")
    return True


def pll_command(io: BoardIO, clock_mhz: float, verilog_path: str) -> tuple[str, list[str]]:
    """The tool and arguments that write a ``bnnflow_pll`` module for ``clock_mhz`` to ``verilog_path``.

    ecppll writes an EHXPLLL in a module with ports ``clkin``, ``clkout0``, ``locked``; icepll ``-m`` writes an
    SB_PLL40_CORE (``-p``: SB_PLL40_PAD, for a clock on the PLL's own pad) with ports ``clock_in``,
    ``clock_out``, ``locked``. Both pick the dividers closest to the request and say what they achieved.
    """
    if io.family == "ecp5":
        return "ecppll", ["-n", PLL_MODULE, "-i", f"{io.osc_mhz:g}", "-o", f"{clock_mhz:g}", "-f", verilog_path]
    return "icepll", ["-i", f"{io.osc_mhz:g}", "-o", f"{clock_mhz:g}", "-m", "-n", PLL_MODULE, "-f", verilog_path,
                      *(["-p"] if io.pll_pad else [])]


def _param(verilog: str, name: str) -> int:
    """An integer parameter ``.NAME(value)`` of the generated PLL (decimal, or Verilog binary like 4'b0011)."""
    match = re.search(rf"\.{name}\(\s*(?:\d+'b([01]+)|(\d+))\s*\)", verilog)
    if match is None:
        raise ValueError(f"parameter {name} not found in the generated PLL")
    return int(match.group(1), 2) if match.group(1) else int(match.group(2))


def parse_pll(io: BoardIO, clock_mhz: float, verilog: str) -> Pll:
    """The frequency the generated PLL really makes, from its divider parameters.

    ECP5 EHXPLLL with feedback from CLKOP (what ecppll writes): f_out = f_in * CLKFB_DIV / CLKI_DIV.
    iCE40 SB_PLL40 in SIMPLE feedback: f_out = f_in * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ) (Lattice FPGA-TN-02052,
    iCE40 sysCLOCK PLL design guide). ecppll and icepll print the same value rounded.
    """
    if io.family == "ecp5":
        if 'FEEDBK_PATH("CLKOP")' not in verilog:
            raise ValueError("ecppll wrote a PLL whose feedback is not CLKOP")
        ref, fb = _param(verilog, "CLKI_DIV"), _param(verilog, "CLKFB_DIV")
        achieved = io.osc_mhz * fb / ref
        settings = f"EHXPLLL CLKI_DIV={ref} CLKFB_DIV={fb} CLKOP_DIV={_param(verilog, 'CLKOP_DIV')}"
    else:
        if 'FEEDBACK_PATH("SIMPLE")' not in verilog:
            raise ValueError("icepll wrote a PLL whose feedback is not SIMPLE")
        divr, divf, divq = (_param(verilog, n) for n in ("DIVR", "DIVF", "DIVQ"))
        achieved = io.osc_mhz * (divf + 1) / ((divr + 1) * 2**divq)
        primitive = "SB_PLL40_PAD" if io.pll_pad else "SB_PLL40_CORE"
        settings = f"{primitive} DIVR={divr} DIVF={divf} DIVQ={divq}"
    return Pll(requested_mhz=clock_mhz, achieved_mhz=achieved, verilog=verilog, settings=settings)


def direct_clock(io: BoardIO) -> Pll:
    """The oscillator as the design clock, without a PLL."""
    return Pll(requested_mhz=io.osc_mhz, achieved_mhz=io.osc_mhz, verilog=None, settings="none (oscillator)")


def clks_per_bit(clock_mhz: float, baud: int) -> int:
    """UART bit time in design clocks, ``round(clock_hz / baud)``; a baud rate the clock cannot make is refused."""
    if baud <= 0:
        raise ConfigError(f"baud rate must be positive, got {baud}")
    cycles = round(clock_mhz * 1e6 / baud)
    error = abs(clock_mhz * 1e6 / cycles - baud) / baud if cycles else 1.0
    if cycles < 4 or error > MAX_BAUD_ERROR:
        raise ConfigError(f"a {clock_mhz:g} MHz clock cannot make {baud} baud (needs at least 4 clocks per bit and "
                          f"at most {MAX_BAUD_ERROR:.0%} error); pick a lower baud rate or a faster clock")
    return cycles


def board_top(io: BoardIO, pll: Pll, cycles_per_bit: int) -> str:
    """Verilog of ``bnnflow_board``: PLL, power-on reset, UART input synchronizer and the system instance."""
    if pll.verilog is None:
        clock = "    wire clk = clk_osc;\n    wire pll_locked = 1'b1;\n"
    elif io.family == "ecp5":
        clock = (f"    wire clk;\n    wire pll_locked;\n"
                 f"    {PLL_MODULE} pll (.clkin(clk_osc), .clkout0(clk), .locked(pll_locked));\n")
    else:
        clock = (f"    wire clk;\n    wire pll_locked;\n"
                 f"    {PLL_MODULE} pll (.clock_in(clk_osc), .clock_out(clk), .locked(pll_locked));\n")
    led = "~sys_error" if io.led_active_low else "sys_error"
    return f"""\
// bnnflow_board for {io.board.name} ({io.board.part}), generated by bnnflow: the {io.osc_mhz:g} MHz oscillator,
// PLL {pll.settings}, makes the {pll.achieved_mhz:.6g} MHz design clock (requested {pll.requested_mhz:g} MHz).
// Pins: {io.source}.
`default_nettype none

module {TOP} (
    input  wire clk_osc,
    input  wire uart_rx,
    output wire uart_tx,
    output wire led_error
);
{clock}
    // Power-on reset: held while the PLL is unlocked and for 128 cycles after it locks. Flip-flops start at 0
    // after configuration on ECP5 and iCE40 (rst starts at 1), so the reset is asserted from the first clock edge.
    // rst is a register of its own: it reaches every flip-flop of the design, and that route across the chip
    // takes most of a 10 ns cycle on an ECP5-85F.
    reg [1:0] locked_sync = 2'b00;
    reg [7:0] por_count = 8'd0;
    reg rst = 1'b1;
    always @(posedge clk) begin
        locked_sync <= {{locked_sync[0], pll_locked}};
        if (!locked_sync[1]) por_count <= 8'd0;
        else if (!por_count[7]) por_count <= por_count + 8'd1;
        rst <= !por_count[7];
    end

    // The UART line is asynchronous to clk: two flip-flops keep a metastable sample out of the receiver.
    reg [1:0] rx_sync = 2'b00;
    always @(posedge clk) rx_sync <= {{rx_sync[0], uart_rx}};

    wire sys_error;
    bnnflow_system #(.CLKS_PER_BIT({cycles_per_bit})) sys (
        .clk(clk),
        .rst(rst),
        .uart_rx(rx_sync[1]),
        .uart_tx(uart_tx),
        .error(sys_error)
    );
    assign led_error = {led};
endmodule

`default_nettype wire
"""
