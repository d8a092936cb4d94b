"""The RTL and bitstream stages of a run: Verilog from ``dataflow.onnx``, its cosimulation, and an open-flow build.

- ``rtl``: writes ``RUN/rtl/`` (Verilog, ROM images, ``interface.json``), lints it with ``verilator -Wall``,
  cosimulates it on the test inputs the compile step verified (``verify/compile.npz``) under random
  back-pressure, compares every output with the simulator, and measures cycles per frame against the timing
  model; the result goes to ``RUN/rtl/cosim.json``.
- ``bitstream``: builds ``RUN/fpga/BOARD/`` with yosys and nextpnr for the open-toolchain boards (ECP5, iCE40):
  the UART wrapper, the board's pins and clock, the bitstream and the utilisation and timing report. Xilinx
  boards are built through FINN instead, so the stage says so and skips.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from bnnflow.errors import ConfigError, VerificationError
from bnnflow.hw.boards import ECP5, ICE40, get_board
from bnnflow.hw.estimates import timing
from bnnflow.hw.rtl import cosim, verilator
from bnnflow.hw.rtl.fit import check_fits
from bnnflow.hw.rtl.generate import ACCEL_TOP, generate_rtl
from bnnflow.hw.simulator import Simulator, describe_mismatch
from bnnflow.pipeline.compile.stage import clock_of
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.onnx_files import load_model
from bnnflow.pipeline.rundir import RunDir, atomic_write_text

#: the cosimulated cycles per frame may differ from the timing model by this share before the run warns
CYCLES_TOLERANCE = 0.05


def cosim_inputs(cfg: Config, run: RunDir, simulator: Simulator) -> np.ndarray:
    """The accelerator inputs the compile step verified on, up to ``fpga.cosim_samples``."""
    from bnnflow.pipeline.simulate import split_inputs

    golden = run.verify_dir / "compile.npz"
    if golden.is_file():
        inputs = np.load(golden)["hw_input"]
    else:
        inputs, _ = split_inputs(cfg, run, "test", cfg.compile.verify_samples)
    limit = cfg.fpga.cosim_samples
    return simulator.check_inputs(inputs[:limit] if limit else inputs)


def rtl_run(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Generate, lint and cosimulate the run's accelerator; a single differing output is a VerificationError."""
    dataflow = load_model(run.dataflow, "compile")
    folder = run.root / "rtl"
    design = generate_rtl(dataflow, folder)
    out.info(f"wrote {len(design.layers)} layers of Verilog to {folder}; linting with verilator -Wall")
    verilator.lint(design.source_paths, ACCEL_TOP, folder)
    verilator.lint(design.system_sources, "bnnflow_system", folder)
    simulator = Simulator(dataflow)
    inputs = cosim_inputs(cfg, run, simulator)
    model_cycles = timing(dataflow, clock_of(cfg.compile))["initiation_interval_cycles"]
    out.info(f"cosimulating {len(inputs)} frames under Verilator with random back-pressure")
    p = cfg.fpga.cosim_throughput
    report = cosim.cosimulate(design, inputs, simulator.run(inputs), model_cycles, p_valid=p, p_ready=p)
    atomic_write_text(folder / "cosim.json", json.dumps(report, indent=2) + "\n")
    if report["mismatches"]:
        raise VerificationError(f"rtl: the Verilog disagrees with the simulator: {describe_mismatch(report)}; the "
                                f"details are in {folder / 'cosim.json'}")
    if report["cycles_error"] > CYCLES_TOLERANCE:
        out.info(f"warning: the RTL takes {report['cycles_per_frame']:g} cycles per frame, the timing model says "
                 f"{model_cycles} ({report['cycles_error']:.1%} apart)")
    return {
        "layers": len(design.layers),
        "lint": "clean",
        "cosim_samples": report["samples"],
        "mismatches": 0,
        "cycles_per_frame": report["cycles_per_frame"],
        "model_cycles_per_frame": model_cycles,
        "cycles_error": round(report["cycles_error"], 4),
        "latency_cycles": report["latency_cycles"],
    }


def system_sources(run: RunDir) -> list[Path]:
    """The Verilog of the run's board design, as the rtl stage wrote it; missing or stale RTL is an error."""
    interface = run.root / "rtl" / "interface.json"
    if not interface.is_file():
        raise ConfigError(f"{run.root} has no RTL yet ({interface} is missing); run `bnnflow rtl {run.root}` first")
    if run.dataflow.is_file() and interface.stat().st_mtime < run.dataflow.stat().st_mtime:
        raise ConfigError(f"the RTL in {interface.parent} is older than {run.dataflow}; run `bnnflow rtl {run.root}` "
                          "again")
    try:
        names = json.loads(interface.read_text())["system_sources"]
    except (json.JSONDecodeError, KeyError, TypeError):
        raise ConfigError(f"{interface} is malformed; run `bnnflow rtl {run.root}` again") from None
    return [interface.parent / name for name in names]


def bitstream_run(cfg: Config, run: RunDir, board_name: str | None = None) -> dict[str, Any]:
    """Build the board bitstream with the open flow; report LUTs, FFs, block RAM, Fmax and frames/s at Fmax."""
    from bnnflow.hw.toolchain import build_bitstream

    board = get_board(board_name or cfg.compile.board)
    if board.fabric not in (ECP5, ICE40):
        out.info(f"{board.name} is a Xilinx board: its bitstream is built by FINN and Vivado (`bnnflow finn`)")
        return {"board": board.name, "skipped": "Xilinx boards are built through FINN (bnnflow finn)"}
    dataflow = load_model(run.dataflow, "compile")
    sources = system_sources(run)
    check_fits(dataflow, board)
    report = build_bitstream(sources, board.name, clock_of(cfg.compile), run.root / "fpga" / board.name,
                             baud=cfg.fpga.baud, seed=cfg.fpga.seed)
    ii = timing(dataflow, clock_of(cfg.compile))["initiation_interval_cycles"]
    clock = report["clock"]["achieved_mhz"]
    fmax = report["fmax_mhz"]
    figures = {
        "board": board.name,
        "bitstream": str(Path("fpga") / board.name / report["files"]["bitstream"]),
        **{name: report["utilization"][key]["used"] for name, key in (
            ("luts", "lut4"), ("flip_flops", "ff"), ("ram_blocks", "bram")) if key in report["utilization"]},
        "clock_mhz": clock,
        "fmax_mhz": fmax,
        "timing_met": report["met"],
        "frames_per_second": round(clock * 1e6 / ii, 1),
        "frames_per_second_at_fmax": round(fmax * 1e6 / ii, 1),
    }
    report["throughput"] = {"initiation_interval_cycles": ii, **{k: figures[k] for k in (
        "frames_per_second", "frames_per_second_at_fmax")}}
    atomic_write_text(run.root / "fpga" / board.name / "report.json", json.dumps(report, indent=2) + "\n")
    return figures
