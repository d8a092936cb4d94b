"""Open-flow FPGA builds of TFC-w1a1, CNV-w1a1 and binary ResNet-20s on the ULX3S, beside FINN's figures.

    python benchmarks/fpga.py [--networks tfc,cnv,resnet20,resnet20_bireal] [--board ulx3s] [--clock-mhz 100]
                              [--out runs/bench/fpga] [--pad-value 0] [--finn]

For each network (Brevitas's own BNN-PYNQ models, ``TFC_1W1A`` and ``CNV_1W1A``, random weights): export,
compile, fold for a target frame rate (TFC: 1 M frames/s, above FINN's; CNV: FINN's 3,000), generate the RTL,
cosimulate it against the simulator (TFC on 10,000 frames, the size of MNIST's test set; CNV on 100), build the
bitstream with yosys and nextpnr, and print LUTs, flip-flops, block RAM, Fmax, frames/s at the built clock and
at Fmax, and frames/s per 1000 LUTs, beside FINN's published frames/s (finn-examples, 100 MHz on a Zynq:
TFC-w1a1 ~837k, CNV-w1a1 ~3,000) and our LUT estimate (to calibrate the model). Inputs are random codes of the
accelerator's input type: MNIST and CIFAR-10 are not on this machine, and timing and exactness do not depend on
them. Writes ``fpga.json`` to --out.

``resnet20`` and ``resnet20_bireal`` are trained, not random: ``bnnflow run configs/rebnn-digits-resnet20-hw.toml``
for one epoch (``resnet20_bireal`` with that model), through export and compile with the run's default folding
(the fastest that fits the board), so the row is what a user's first ResNet-20 run gets; they are cosimulated on
the first 100 test images the compile step verified. FINN builds a ResNet-20 only with ``--pad-value -1`` (FINN pads
binary maps with -1; the papers' zero padding needs bnnflow's correction); with ``--finn`` and FINN installed
(``FINN_ROOT``, ``FINN_PYTHON``) each run is also put through ``bnnflow finn RUN --estimate`` and FINN's estimated
frames/s, LUTs and block RAMs are printed beside ours.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from bnnflow.hw.boards import get_board
from bnnflow.hw.convert import to_dataflow
from bnnflow.hw.estimates import estimate, timing
from bnnflow.hw.folding import fold_for_fps
from bnnflow.hw.rtl import cosim
from bnnflow.hw.rtl.fit import check_fits
from bnnflow.hw.rtl.generate import generate_rtl
from bnnflow.hw.simulator import Simulator
from bnnflow.hw.toolchain import build_bitstream
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model

#: name -> (Brevitas model, input shape, target frames/s, frames to cosimulate, FINN's published frames/s)
NETWORKS = {
    "tfc": ("TFC_1W1A", (1, 28, 28), 1_000_000, 10_000, 837_000),
    "cnv": ("CNV_1W1A", (3, 32, 32), 3_000, 100, 3_000),
}
#: the trained networks: name -> bnnflow model; all from RECIPE (one epoch), frames to cosimulate
TRAINED = {"resnet20": "resnet20", "resnet20_bireal": "resnet20_bireal"}
RECIPE = Path(__file__).resolve().parent.parent / "configs" / "rebnn-digits-resnet20-hw.toml"
TRAINED_FRAMES = 100


def trained_run(network: str, out: Path, pad_value: int, board: str, clock_mhz: float) -> Path:
    """A run folder of the recipe trained one epoch, exported and compiled (``bnnflow run``, resumable)."""
    run = out / network / "run"
    args = [sys.executable, "-m", "bnnflow.pipeline.cli", "run", str(RECIPE), "--out", str(run), "--epochs", "1",
            "--steps", "train,export,compile", "--force", "--set", f"model.name={TRAINED[network]}",
            "--set", f"model.args={{hw=true,pad_value={pad_value}}}", "--set", f"compile.board={board}",
            "--set", f"compile.clock_mhz={clock_mhz}"]
    subprocess.run(args, check=True)
    return run


def finn_estimate(run: Path) -> dict:
    """``bnnflow finn RUN --estimate``: FINN's estimated frames/s, LUTs and block RAMs (needs FINN installed)."""
    subprocess.run([sys.executable, "-m", "bnnflow.pipeline.cli", "finn", str(run), "--estimate"], check=True)
    from bnnflow.hw.finn.runner import collect_reports

    reports = collect_reports(run / "finn")
    resources = reports.get("estimated_resources", {})
    return {"finn_estimated_fps": reports["estimated_fps"], "finn_estimated_luts": resources.get("LUT"),
            "finn_estimated_bram_18k": resources.get("BRAM_18K")}


def dataflow_of(network: str, board: str, clock_mhz: float):
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    name, shape, target, _, _ = NETWORKS[network]
    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataflow = to_dataflow(streamline_model(export_model(model.eval(), shape)), label_select=True)
    fold_for_fps(dataflow, target, clock_mhz, get_board(board).fabric)
    return dataflow


def bench(network: str, board: str, clock_mhz: float, out: Path, frames: int | None, build: bool = True,
          seed: int = 1, pad_value: int = 0, finn: bool = False) -> dict:
    extra: dict = {}
    if network in TRAINED:
        from bnnflow.pipeline.onnx_files import load_model

        run = trained_run(network, out, pad_value, board, clock_mhz)
        dataflow = load_model(run / "dataflow.onnx", "compile")
        simulator = Simulator(dataflow)
        inputs = simulator.check_inputs(np.load(run / "verify" / "compile.npz")["hw_input"][: frames or TRAINED_FRAMES])
        target, finn_fps = 0, None
        extra = {"pad_value": pad_value, **(finn_estimate(run) if finn else {})}
        finn_fps = extra.get("finn_estimated_fps")
    else:
        _, _, target, default_frames, finn_fps = NETWORKS[network]
        dataflow = dataflow_of(network, board, clock_mhz)
        simulator = Simulator(dataflow)
        dtype = simulator.input_type
        inputs = np.random.default_rng(0).integers(int(dtype.min()), int(dtype.max()) + 1,
                                                   (frames or default_frames, *simulator.input_shape))
    design = generate_rtl(dataflow, out / network / "rtl")
    ii = timing(dataflow, clock_mhz)["initiation_interval_cycles"]
    started = time.perf_counter()
    check = cosim.cosimulate(design, inputs, simulator.run(inputs), ii)
    cosim_s = time.perf_counter() - started
    result = {
        "network": network,
        "target_fps": target,
        "initiation_interval_cycles": ii,
        "cosim_frames": check["samples"],
        "cosim_mismatches": check["mismatches"],
        "cosim_cycles_per_frame": check["cycles_per_frame"],
        "cosim_seconds": round(cosim_s, 1),
        "luts_estimated": estimate(dataflow, clock_mhz, get_board(board).fabric)["luts"],
        "finn_published_fps": finn_fps,
        **extra,
    }
    if not build:
        return result
    check_fits(dataflow, get_board(board))
    report = build_bitstream(design.system_sources, board, clock_mhz, out / network / board, seed=seed)
    luts = report["utilization"]["lut4"]["used"]
    fps_at_fmax = report["fmax_mhz"] * 1e6 / ii
    return {
        **result,
        "luts": luts,
        "flip_flops": report["utilization"]["ff"]["used"],
        "ram_blocks": report["utilization"]["bram"]["used"] if "bram" in report["utilization"] else 0,
        "clock_mhz": report["clock"]["achieved_mhz"],
        "fmax_mhz": report["fmax_mhz"],
        "timing_met": report["met"],
        "fps_at_clock": report["clock"]["achieved_mhz"] * 1e6 / ii,
        "fps_at_fmax": fps_at_fmax,
        "fps_per_1000_luts": fps_at_fmax / (luts / 1000),
        "build_seconds": report["seconds"],
    }


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default="tfc,cnv", help="comma-separated: " + ", ".join([*NETWORKS, *TRAINED]))
    parser.add_argument("--board", default="ulx3s", help="an open-toolchain board (ulx3s, icebreaker)")
    parser.add_argument("--clock-mhz", type=float, default=100.0, help="the clock the build targets")
    parser.add_argument("--frames", type=int, default=None, help="frames to cosimulate [default: per network]")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/fpga"), help="folder for builds and fpga.json")
    parser.add_argument("--no-build", action="store_true", help="stop after the cosimulation (a quick check)")
    parser.add_argument("--seed", type=int, default=1, help="nextpnr's placement seed")
    parser.add_argument("--pad-value", type=int, default=0, choices=(0, 1, -1),
                        help="the ResNet-20s' padding of binary maps (FINN builds only -1)")
    parser.add_argument("--finn", action="store_true", help="also FINN's estimate of the ResNet-20s (FINN installed)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.networks.split(",") if name not in NETWORKS and name not in TRAINED]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r} (known: {', '.join([*NETWORKS, *TRAINED])})")
    results = [bench(name, args.board, args.clock_mhz, args.out, args.frames, not args.no_build, args.seed,
                     args.pad_value, args.finn) for name in args.networks.split(",")]
    if args.no_build:
        for r in results:
            print(f"{r['network']}: {r['cosim_mismatches']} of {r['cosim_frames']} frames differ; "
                  f"{r['cosim_cycles_per_frame']:g} cycles per frame (model {r['initiation_interval_cycles']})")
        return results
    header = (f"{'network':16}{'LUT4':>8}{'est.':>8}{'FF':>8}{'BRAM':>6}{'clock':>7}{'Fmax':>8}{'frames/s':>12}"
              f"{'@Fmax':>12}{'/1k LUT':>10}{'FINN':>10}{'ours/FINN':>11}  cosim")
    print(header)
    for r in results:
        finn = r["finn_published_fps"]
        finn_text, ratio = (f"{finn:,.0f}", f"{r['fps_at_clock'] / finn:.2f}x") if finn else ("-", "-")
        print(f"{r['network']:16}{r['luts']:>8}{r['luts_estimated']:>8}{r['flip_flops']:>8}{r['ram_blocks']:>6}"
              f"{r['clock_mhz']:>7.1f}{r['fmax_mhz']:>8.1f}{r['fps_at_clock']:>12,.0f}{r['fps_at_fmax']:>12,.0f}"
              f"{r['fps_per_1000_luts']:>10,.0f}{finn_text:>10}{ratio:>11}  {r['cosim_mismatches']} of "
              f"{r['cosim_frames']} differ")
    print("FINN: published frames/s (tfc, cnv) or FINN's own estimate at the same folding (resnet20s with --finn)")
    for r in results:
        if r.get("finn_estimated_luts") is not None:
            print(f"{r['network']}: FINN estimates {r['finn_estimated_luts']:,.0f} LUT (Xilinx LUT6) and "
                  f"{r['finn_estimated_bram_18k']:,.0f} BRAM_18K at this folding; we place {r['luts']:,} LUT4 and "
                  f"{r['ram_blocks']} DP16KD")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fpga.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    sys.exit(0 if all(r["cosim_mismatches"] == 0 and r.get("timing_met", True) for r in main()) else 1)
