"""The UART board wrapper, its Verilator testbench and the host side, on real Verilog simulated bit by bit.

Two test designs stand in for ``bnnflow_system``: ``loopback``, one ``uart_bridge`` (13 bits, 2 bytes a beat) whose
input beats come back through a register that stalls for pseudo-random times; and ``channels``, one loopback
bridge per width under test, the first byte after reset choosing which one is on the serial line (one build
for every width: a Verilator build takes ~15 s here, a run milliseconds). Both are built with ``tb_uart.cpp``
through ``uart_cosim`` exactly as a generated design would be.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import serial

from bnnflow.errors import ConfigError, DataError, ToolchainError, VerificationError
from bnnflow.hw.fpga_run import load_interface, run_on_board
from bnnflow.hw.rtl import uart_cosim, verilator
from bnnflow.hw.rtl.stream import StreamFormat, encode

pytestmark = pytest.mark.toolchain

CPB = 8  # clock cycles per bit in simulation: a byte is 80 cycles

#: channel of the ``channels`` design -> (bridge width, stream format of a frame on it)
CHANNELS = {
    0: (1, StreamFormat(1, 1, False, 5)),
    1: (7, StreamFormat(7, 1, False, 3)),
    2: (8, StreamFormat(1, 8, True, 4)),
    3: (13, StreamFormat(13, 1, False, 3)),
    4: (64, StreamFormat(8, 8, True, 2)),
    5: (100, StreamFormat(25, 4, False, 2)),
    6: (2000, StreamFormat(250, 8, False, 1)),
}
NEVER_READY = 7  # an 8-bit loopback whose input is never ready: what overflows the bridge's two buffers
LOOP_FMT = StreamFormat(13, 1, False, 3)  # the ``loopback`` design's frames: 3 beats of 13 bits, 6 bytes

# Shared by both designs: a bridge whose input beats come back on its output through one register.
# STALL 0: the register takes a beat whenever it is empty; 1: it also waits 0..127 cycles (an LFSR) after each
# beat, so beats pile up in the bridge's double buffer; 2: it never takes one.
LOOP_CHANNEL = """
module loop_channel #(
    parameter integer W = 8,
    parameter integer STALL = 0,
    parameter integer CLKS_PER_BIT = 868
) (
    input  wire clk,
    input  wire rst,
    input  wire rx,
    output wire tx,
    output wire error
);
    wire [W-1:0] m_data;
    wire         m_valid;
    wire         m_ready;
    reg  [W-1:0] held;
    reg          held_valid;
    wire         s_ready;
    reg  [7:0]   lfsr;
    reg  [6:0]   wait_cycles;

    assign m_ready = (STALL == 2) ? 1'b0 : (!held_valid && wait_cycles == 7'd0);

    always @(posedge clk) begin
        if (rst) begin
            held_valid <= 1'b0;
            lfsr <= 8'h5a;
            wait_cycles <= 7'd0;
        end else begin
            lfsr <= {lfsr[6:0], lfsr[7] ^ lfsr[5] ^ lfsr[4] ^ lfsr[3]};
            if (wait_cycles != 7'd0) wait_cycles <= wait_cycles - 1'b1;
            if (held_valid && s_ready) held_valid <= 1'b0;
            if (m_valid && m_ready) begin
                held <= m_data;
                held_valid <= 1'b1;
                if (STALL == 1) wait_cycles <= lfsr[6:0];
            end
        end
    end

    uart_bridge #(.IN_W(W), .OUT_W(W), .CLKS_PER_BIT(CLKS_PER_BIT)) bridge (
        .clk(clk), .rst(rst), .rx(rx), .tx(tx), .error(error),
        .m_data(m_data), .m_valid(m_valid), .m_ready(m_ready),
        .s_data(held), .s_valid(held_valid), .s_ready(s_ready)
    );
endmodule
"""

SYSTEM_PORTS = """module bnnflow_system #(
    parameter integer CLKS_PER_BIT = 868
) (
    input  wire clk,
    input  wire rst,
    input  wire uart_rx,
    output wire uart_tx,
    output wire error
);
"""


def _loopback_top() -> str:
    return SYSTEM_PORTS + f"""
    loop_channel #(.W({LOOP_FMT.width}), .STALL(1), .CLKS_PER_BIT(CLKS_PER_BIT)) loop (
        .clk(clk), .rst(rst), .rx(uart_rx), .tx(uart_tx), .error(error)
    );
endmodule
"""


def _channels_top() -> str:
    """The first byte after reset picks a channel; later bytes go to that channel's bridge, whose tx drives uart_tx."""
    widths = [(number, width, 0) for number, (width, _) in CHANNELS.items()] + [(NEVER_READY, 8, 2)]
    n = len(widths)
    lines = [SYSTEM_PORTS, f"""
    wire [7:0] pick_byte;
    wire       pick_valid;
    wire       unused_pick_error;
    reg  [7:0] channel;
    reg        chosen;
    wire [{n - 1}:0] tx;
    wire [{n - 1}:0] err;

    uart_rx #(.CLKS_PER_BIT(CLKS_PER_BIT)) pick (
        .clk(clk), .rst(rst), .rx(uart_rx), .data(pick_byte), .valid(pick_valid), .frame_error(unused_pick_error)
    );

    always @(posedge clk) begin
        if (rst) begin
            chosen <= 1'b0;
            channel <= 8'd0;
        end else if (pick_valid && !chosen) begin
            chosen <= 1'b1;
            channel <= pick_byte;
        end
    end

    assign uart_tx = &tx;  // the channels not chosen receive nothing, so their tx idles high
    assign error = |err;
"""]
    for number, width, stall in widths:
        lines.append(f"""
    loop_channel #(.W({width}), .STALL({stall}), .CLKS_PER_BIT(CLKS_PER_BIT)) ch{number} (
        .clk(clk), .rst(rst), .rx((chosen && channel == 8'd{number}) ? uart_rx : 1'b1), .tx(tx[{number}]),
        .error(err[{number}])
    );
""")
    lines.append("endmodule\n")
    return "".join(lines)


@pytest.fixture(scope="module")
def designs(pytestconfig, tmp_path_factory) -> dict[str, tuple[list[Path], uart_cosim.UartTestbench]]:
    """Both test designs built with tb_uart.cpp.

    Most of a build is one long compile of Verilator's runtime, so the two run in parallel, and they are kept in
    pytest's cache folder: ``verilator.build`` keys a build by the content of every source, the testbench and
    the defines, so a later session reuses it only if nothing changed.
    """
    cache = getattr(pytestconfig, "cache", None)  # absent under `-p no:cacheprovider`
    root = cache.mkdir("bnnflow_uart_tb") if cache else tmp_path_factory.mktemp("uart")
    channel = root / "loop_channel.v"
    channel.write_text(LOOP_CHANNEL)
    tops = {"loopback": _loopback_top(), "channels": _channels_top()}

    def build(name: str) -> tuple[list[Path], uart_cosim.UartTestbench]:
        top = root / name / "bnnflow_system.v"  # Verilator -Wall wants one module per file, named after it
        top.parent.mkdir(exist_ok=True)
        top.write_text(tops[name])
        sources = [*uart_cosim.UART_SOURCES, channel, top]
        return sources, uart_cosim.build_testbench(sources, root / name / "build", CPB)

    with ThreadPoolExecutor(2) as pool:
        return dict(zip(tops, pool.map(build, tops)))


def _frames(fmt: StreamFormat, count: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    low, high = (-(1 << (fmt.elem_bits - 1)), 1 << (fmt.elem_bits - 1)) if fmt.signed else (0, 1 << fmt.elem_bits)
    return rng.integers(low, high, size=(count, fmt.elements))


def _tb_file(tb: uart_cosim.UartTestbench, work: Path, data: bytes, expect: int, *args: str) -> tuple[int, dict, bytes]:
    """Run the testbench's file mode through its command line; returns (exit status, report, bytes received)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "in.bin").write_bytes(data)
    proc = subprocess.run([str(tb.executable), "file", "--in", str(work / "in.bin"), "--out", str(work / "out.bin"),
                           "--expect", str(expect), *args], capture_output=True, text=True, timeout=60)
    assert proc.stdout, proc.stderr
    return proc.returncode, json.loads(proc.stdout.splitlines()[-1]), (work / "out.bin").read_bytes()


def _interface(fmt: StreamFormat) -> dict:
    return {"top": "bnnflow_accel", "input": fmt.to_json(), "output": fmt.to_json(), "output_kind": "accumulator"}


def test_uart_modules_lint_clean_at_every_width(designs, tmp_path: Path) -> None:
    verilog = Path(uart_cosim.UART_SOURCES[0]).parent
    for module in ("uart_rx", "uart_tx"):
        verilator.lint([verilog / f"{module}.v"], module, tmp_path)
    verilator.lint([*uart_cosim.UART_SOURCES], "uart_bridge", tmp_path)
    # the channels design instantiates uart_bridge at every width under test, 1 to 2000 bits
    for sources, _ in designs.values():
        verilator.lint(sources, "bnnflow_system", tmp_path)


@pytest.mark.parametrize("channel", sorted(CHANNELS))
def test_bridge_returns_frames_bit_exact_at_width(designs, tmp_path: Path, channel: int) -> None:
    width, fmt = CHANNELS[channel]
    frames = _frames(fmt, 4, seed=width)
    data = encode(frames, fmt).tobytes()
    status, report, received = _tb_file(designs["channels"][1], tmp_path, bytes([channel]) + data, len(data),
                                        "--gap-bits", "0:3", "--seed", str(width), "--settle-cycles", "2000")
    assert status == 0 and not report["timeout"]
    assert received == data  # bit-exact, the padding of each beat's last byte included (zeros both ways)
    assert report["error"] == 0 and report["tx_framing_errors"] == 0


def test_run_file_lockstep_and_streaming(designs, tmp_path: Path) -> None:
    tb = designs["loopback"][1]
    frames = _frames(LOOP_FMT, 12, seed=1)
    # the frame's last input beat must arrive (6 bytes) before its output beat leaves (2 bytes), the stop bit of
    # which the host samples half a bit early; anything beyond is the loopback's and the bridge's latency
    least = (LOOP_FMT.beats + 1) * LOOP_FMT.bytes_per_beat * 10 * CPB - CPB // 2
    lockstep = uart_cosim.run_file(tb, frames, LOOP_FMT, LOOP_FMT, tmp_path / "lockstep", lockstep=True)
    assert np.array_equal(lockstep.outputs, frames) and not lockstep.error
    assert len(lockstep.frame_cycles) == len(frames)
    assert np.all(lockstep.frame_cycles >= least) and np.all(lockstep.frame_cycles < least + 300)
    streaming = uart_cosim.run_file(tb, frames, LOOP_FMT, LOOP_FMT, tmp_path / "streaming", lockstep=False,
                                    gap_bits=(0, 0))
    assert np.array_equal(streaming.outputs, frames) and not streaming.error
    assert streaming.cycles < lockstep.cycles  # the host did not wait for each answer


@pytest.mark.parametrize("rate_error", [-3.0, 3.0])
def test_run_file_tolerates_baud_mismatch(designs, tmp_path: Path, rate_error: float) -> None:
    frames = _frames(LOOP_FMT, 6, seed=2)
    run = uart_cosim.run_file(designs["loopback"][1], frames, LOOP_FMT, LOOP_FMT, tmp_path, rate_error=rate_error,
                              seed=3)
    assert np.array_equal(run.outputs, frames) and not run.error


def test_framing_error_sets_error_and_drops_the_byte(designs, tmp_path: Path) -> None:
    data = bytes(range(10, 30))
    status, report, received = _tb_file(designs["channels"][1], tmp_path, bytes([2]) + data, len(data) - 1,
                                        "--bad-stop", "6", "--gap-bits", "1:2", "--settle-cycles", "2000")
    assert status == 0
    assert received == data[:5] + data[6:]  # the receiver found the next start bit and carried on
    assert report["error"] == 1 and report["error_cycle"] > 0


def test_error_when_both_buffers_are_full(designs, tmp_path: Path) -> None:
    tb = designs["channels"][1]
    # two beats fit: one offered on m_data, one assembled behind it; neither is lost, so no error
    status, report, _ = _tb_file(tb, tmp_path / "two", bytes([NEVER_READY, 1, 2]), 0, "--settle-cycles", "2000")
    assert status == 0 and report["error"] == 0
    status, report, _ = _tb_file(tb, tmp_path / "three", bytes([NEVER_READY, 1, 2, 3]), 0, "--settle-cycles", "2000")
    assert status == 0 and report["error"] == 1


def test_timeout_is_an_error(designs, tmp_path: Path) -> None:
    tb = designs["channels"][1]
    status, report, received = _tb_file(tb, tmp_path, bytes([NEVER_READY, 1]), 1, "--max-cycles", "5000")
    assert status == 2 and report["timeout"] and report["cycles"] == 5000 and received == b""
    frames = _frames(LOOP_FMT, 2, seed=4)
    with pytest.raises(VerificationError, match="0 of 12 bytes came back"):
        uart_cosim.run_file(designs["loopback"][1], frames, LOOP_FMT, LOOP_FMT, tmp_path / "run", max_cycles=200)


def test_run_on_board_over_the_simulated_serial_port(designs, tmp_path: Path) -> None:
    frames = _frames(LOOP_FMT, 10, seed=5)
    link = tmp_path / "ttyBNN"
    with uart_cosim.pty_session(designs["loopback"][1], link=link) as port:
        assert os.path.realpath(link) == port
        first = run_on_board(port, _interface(LOOP_FMT), frames[:4].reshape(4, 3, 13), timeout=20)
        rest = run_on_board(str(link), _interface(LOOP_FMT), frames[4:].astype(np.float32), timeout=20)
    assert np.array_equal(first, frames[:4]) and np.array_equal(rest, frames[4:])
    assert not link.exists()


def test_run_on_board_timeout_names_the_likely_causes(designs) -> None:
    fmt = StreamFormat(1, 8, False, 1)
    with uart_cosim.pty_session(designs["channels"][1]) as port:
        # the first byte picks channel 200, which does not exist: nothing ever answers
        with pytest.raises(ToolchainError, match="0 of 1 bytes for frame 0 within 0.5 s.*programmed.*baud"):
            run_on_board(port, _interface(fmt), np.array([[200]]), timeout=0.5)


def test_run_on_board_port_in_use(designs) -> None:
    with uart_cosim.pty_session(designs["loopback"][1]) as port:
        with serial.Serial(port, exclusive=True):
            with pytest.raises(ConfigError, match="in use by another program"):
                run_on_board(port, _interface(LOOP_FMT), np.zeros((1, 39), dtype=np.int64))


def test_pty_session_reports_a_high_error_pin(designs) -> None:
    with pytest.raises(VerificationError, match="error pin went high"):
        with uart_cosim.pty_session(designs["channels"][1]) as port:
            with serial.Serial(port, 115200, timeout=1) as link:
                link.write(bytes([NEVER_READY, 1, 2, 3]))  # the third beat has nowhere to go
                link.flush()
                assert link.read(1) == b""  # the never-ready channel answers nothing; this also lets it run


def test_run_on_board_rejects_bad_inputs_before_opening_the_port(tmp_path: Path) -> None:
    interface = _interface(LOOP_FMT)
    missing = str(tmp_path / "ttyUSB9")  # would fail to open: these errors must come first
    with pytest.raises(DataError, match="39 per frame"):
        run_on_board(missing, interface, np.zeros((2, 38), dtype=np.int64))
    with pytest.raises(DataError, match="integers"):
        run_on_board(missing, interface, np.full((1, 39), 0.5))
    with pytest.raises(DataError, match="outside"):
        run_on_board(missing, interface, np.full((1, 39), 2))
    with pytest.raises(ConfigError, match="'input.lanes' must be a positive integer"):
        run_on_board(missing, {**interface, "input": {**interface["input"], "lanes": "13"}}, np.zeros((1, 39)))
    with pytest.raises(ConfigError, match="no 'output' stream"):
        run_on_board(missing, {"input": interface["input"]}, np.zeros((1, 39)))


def test_run_on_board_missing_port_says_how_to_find_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found.*cable.*ls /dev/ttyUSB\*"):
        run_on_board(str(tmp_path / "ttyUSB9"), _interface(LOOP_FMT), np.zeros((1, 39), dtype=np.int64))


@pytest.mark.skipif(os.geteuid() == 0, reason="root opens any file, so a permission error cannot be staged")
def test_run_on_board_permission_error_names_dialout(tmp_path: Path) -> None:
    port = tmp_path / "ttyUSB0"
    port.write_bytes(b"")
    port.chmod(0)
    with pytest.raises(ConfigError, match="dialout"):
        run_on_board(str(port), _interface(LOOP_FMT), np.zeros((1, 39), dtype=np.int64))


def test_load_interface_rejects_malformed_files(tmp_path: Path) -> None:
    path = tmp_path / "interface.json"
    path.write_text('{"input": {"lanes": 13, ')
    with pytest.raises(ConfigError, match="not readable JSON"):
        load_interface(path)
    path.write_text(json.dumps({"input": LOOP_FMT.to_json(), "output": {**LOOP_FMT.to_json(), "signed": "no"}}))
    with pytest.raises(ConfigError, match="'output.signed' must be true or false"):
        load_interface(path)
    with pytest.raises(ConfigError, match="does not exist"):
        load_interface(tmp_path / "absent.json")
    path.write_text(json.dumps(_interface(LOOP_FMT)))
    assert load_interface(path) == _interface(LOOP_FMT)
