"""Open-flow FPGA builds of TFC-w1a1, CNV-w1a1 and binary ResNet-20s on the ULX3S, beside FINN's figures.

    python benchmarks/fpga.py [--networks tfc,cnv,digits,cnv@6000,resnet20,resnet20_bireal] [--board ulx3s]
                              [--clock-mhz 100] [--out runs/bench/fpga] [--pad-value 0] [--finn]

For each network (Brevitas's own BNN-PYNQ models, ``TFC_1W1A`` and ``CNV_1W1A``, and bnnflow's digits MLP,
random weights): export, compile, fold for a target frame rate (TFC: 1 M frames/s, above FINN's; CNV: twice FINN's
3,000; digits: the default run's 250,000; ``name@FPS`` for another), generate the RTL, cosimulate it against the
simulator (TFC on 10,000 frames, the size of MNIST's test set; CNV on 100), build the bitstream with yosys and
nextpnr, and print LUTs, flip-flops, block RAM, Fmax, frames/s at the built clock and at Fmax, and frames/s per
1000 LUTs, beside FINN's published frames/s (finn-examples, 100 MHz on a Zynq: TFC-w1a1 ~837k, CNV-w1a1 ~3,000)
and the estimates' LUTs and block RAMs with the LUT estimate's error against place and route. Inputs are random codes of the
accelerator's input type: MNIST and CIFAR-10 are not on this machine, and timing and exactness do not depend on
them. Writes ``fpga.json`` to --out.

``resnet20`` and ``resnet20_bireal`` are trained, not random: ``bnnflow run configs/rebnn-digits-resnet20-hw.toml``
for one epoch (``resnet20_bireal`` with that model), through export and compile with the run's default folding
(the fastest that fits the board), so the row is what a user's first ResNet-20 run gets; they are cosimulated on
the first 100 test images the compile step verified. FINN builds a ResNet-20 only with ``--pad-value -1`` (FINN pads
binary maps with -1; the papers' zero padding needs bnnflow's correction).

With ``--finn`` and FINN installed (``FINN_ROOT``, ``FINN_PYTHON``), FINN estimates every network at the folding
built here: a ResNet-20's run through ``bnnflow finn RUN --estimate``; a random-weight network's folder, which gets
the network's model.qonnx, streamlined.onnx and dataflow.onnx and random 8-bit images as test inputs, through the
same stage (``pipeline.finn.finn_run``, estimate steps only, FINN's Python verification included). FINN's
estimated frames/s at the same clock, LUTs and BRAM_18K (its analytical models, for its default board, the
Pynq-Z1), and its frames/s per 1000 LUTs, are printed beside ours and kept in fpga.json; they need no Vivado, and
work with ``--no-build`` too (beside our estimates).
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
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.hw.boards import get_board
from bnnflow.hw.convert import to_dataflow
from bnnflow.hw.estimates import estimate, timing
from bnnflow.hw.finn.runner import find_finn
from bnnflow.hw.folding import fold_for_fps
from bnnflow.hw.rtl import cosim
from bnnflow.hw.rtl.fit import check_fits
from bnnflow.hw.rtl.generate import generate_rtl
from bnnflow.hw.simulator import Simulator
from bnnflow.hw.toolchain import build_bitstream
from bnnflow.models import create_model, list_models
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model
from bnnflow.pipeline.onnx_files import save_model

#: name -> (Brevitas BNN-PYNQ model or bnnflow model, input shape, target frames/s, frames to cosimulate, FINN's
#: published frames/s); ``name@FPS`` folds a network for another frame rate
NETWORKS = {
    "tfc": ("TFC_1W1A", (1, 28, 28), 1_000_000, 10_000, 837_000),
    "cnv": ("CNV_1W1A", (3, 32, 32), 6_000, 100, 3_000),
    "digits": ("digits_mlp", (1, 8, 8), 250_000, 1_000, None),
}
#: the trained networks: name -> bnnflow model; all from RECIPE (one epoch), frames to cosimulate
TRAINED = {"resnet20": "resnet20", "resnet20_bireal": "resnet20_bireal"}
RECIPE = Path(__file__).resolve().parent.parent / "configs" / "rebnn-digits-resnet20-hw.toml"
TRAINED_FRAMES = 100
#: random 8-bit images FINN's Python verification of a random-weight network runs on
FINN_VERIFY_SAMPLES = 10


def trained_run(network: str, out: Path, pad_value: int, board: str, clock_mhz: float) -> Path:
    """A run folder of the recipe trained one epoch, exported and compiled (``bnnflow run``, resumable)."""
    run = out / network / "run"
    args = [sys.executable, "-m", "bnnflow.pipeline.cli", "run", str(RECIPE), "--out", str(run), "--epochs", "1",
            "--steps", "train,export,compile", "--force", "--set", f"model.name={TRAINED[network]}",
            "--set", f"model.args={{hw=true,pad_value={pad_value}}}", "--set", f"compile.board={board}",
            "--set", f"compile.clock_mhz={clock_mhz}"]
    subprocess.run(args, check=True)
    return run


def finn_estimate(run: Path, clock_mhz: float) -> dict:
    """``bnnflow finn RUN --estimate`` on a trained run (compiled at ``clock_mhz``), so its summary records FINN's
    figures too."""
    subprocess.run([sys.executable, "-m", "bnnflow.pipeline.cli", "finn", str(run), "--estimate"], check=True)
    from bnnflow.hw.finn.runner import collect_reports

    return finn_figures(collect_reports(run / "finn"), clock_mhz)


def finn_estimate_of(folder: Path, model: ModelWrapper, streamlined: ModelWrapper, clock_mhz: float,
                     board: str) -> dict:
    """FINN's estimate of a random-weight network at our folding (``folder``'s dataflow.onnx): ``folder`` gets the
    files of a compiled run and goes through ``bnnflow finn``'s own stage, so FINN gets what a user's run gives it
    (the quantizer check, the layer match, verification on inputs FINN rounds as model.qonnx does)."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.finn import finn_run
    from bnnflow.pipeline.rundir import RunDir

    run = RunDir(folder)
    save_model(model, run.qonnx)
    save_model(streamlined, run.streamlined)
    shape = model.get_tensor_shape(model.graph.input[0].name)[1:]
    run.verify_dir.mkdir(parents=True, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (FINN_VERIFY_SAMPLES, *shape)) / 255  # 8-bit pixels
    np.save(run.verify_dir / "inputs.npy", images.astype(np.float32))
    cfg = Config().with_overrides({"compile.board": board, "compile.clock_mhz": clock_mhz,
                                   "finn.verify_samples": FINN_VERIFY_SAMPLES})
    return finn_figures(finn_run(cfg, run, estimate_only=True), clock_mhz)


def finn_figures(reports: dict, clock_mhz: float) -> dict:
    """fpga.json's FINN figures from FINN's estimate reports (``collect_reports``) at ``clock_mhz``: frames/s,
    LUTs, BRAM_18K and frames/s per 1000 LUTs."""
    resources = reports.get("estimated_resources", {})
    fps, luts = reports["estimated_fps"], resources.get("LUT")
    return {"finn_clock_mhz": clock_mhz, "finn_estimated_fps": fps, "finn_estimated_luts": luts,
            "finn_estimated_bram_18k": resources.get("BRAM_18K"),
            "finn_estimated_fps_per_1000_luts": fps / (luts / 1000) if luts else None}


def split_spec(spec: str) -> tuple[str, float | None]:
    """``network`` or ``network@FPS``: the network and the frame rate it is folded for (None: its own)."""
    network, _, fps = spec.partition("@")
    return network, float(fps) if fps else None


def dataflow_of(network: str, board: str, clock_mhz: float,
                target: float) -> tuple[ModelWrapper, ModelWrapper, ModelWrapper]:
    """The network with seeded random weights: its QONNX export, streamlined graph and dataflow folded for
    ``target`` frames/s (the first two for FINN)."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    name, shape, _, _, _ = NETWORKS[network]
    torch.manual_seed(0)
    if name in list_models():
        model = create_model(name, input_shape=shape, num_classes=10)
    else:
        model, _ = model_with_cfg(name, pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        exported = export_model(model.eval(), shape)
        streamlined = streamline_model(exported)
        dataflow = to_dataflow(streamlined, label_select=True)
    fold_for_fps(dataflow, target, clock_mhz, get_board(board).fabric)
    return exported, streamlined, dataflow


def bench(spec: str, board: str, clock_mhz: float, out: Path, frames: int | None, build: bool = True,
          seed: int = 1, pad_value: int = 0, finn: bool = False) -> dict:
    network, fps = split_spec(spec)
    extra: dict = {}
    if network in TRAINED:
        from bnnflow.pipeline.onnx_files import load_model

        run = trained_run(network, out, pad_value, board, clock_mhz)
        dataflow = load_model(run / "dataflow.onnx", "compile")
        simulator = Simulator(dataflow)
        inputs = simulator.check_inputs(np.load(run / "verify" / "compile.npz")["hw_input"][: frames or TRAINED_FRAMES])
        target, finn_fps = 0, None
        extra = {"pad_value": pad_value, **(finn_estimate(run, clock_mhz) if finn else {})}
        finn_fps = extra.get("finn_estimated_fps")
    else:
        _, _, target, default_frames, finn_fps = NETWORKS[network]
        target = fps or target
        model, streamlined, dataflow = dataflow_of(network, board, clock_mhz, target)
        simulator = Simulator(dataflow)
        dtype = simulator.input_type
        inputs = np.random.default_rng(0).integers(int(dtype.min()), int(dtype.max()) + 1,
                                                   (frames or default_frames, *simulator.input_shape))
    folder = out / spec.replace("@", "_")
    design = generate_rtl(dataflow, folder / "rtl")
    save_model(dataflow, folder / "dataflow.onnx")  # the folded design, for `calibrate_resources.py placed`
    if finn and network not in TRAINED:
        extra = finn_estimate_of(folder, model, streamlined, clock_mhz, board)
    ii = timing(dataflow, clock_mhz)["initiation_interval_cycles"]
    estimated = estimate(dataflow, clock_mhz, get_board(board).fabric)
    started = time.perf_counter()
    check = cosim.cosimulate(design, inputs, simulator.run(inputs), ii)
    cosim_s = time.perf_counter() - started
    result = {
        "network": spec,
        "target_fps": target,
        "initiation_interval_cycles": ii,
        "cosim_frames": check["samples"],
        "cosim_mismatches": check["mismatches"],
        "cosim_cycles_per_frame": check["cycles_per_frame"],
        "cosim_seconds": round(cosim_s, 1),
        "luts_estimated": estimated["luts"],
        "fps_per_1000_luts_estimated": clock_mhz * 1e6 / ii / (estimated["luts"] / 1000),
        "flip_flops_estimated": estimated["flip_flops"],
        "ram_blocks_estimated": estimated["ram_blocks"],
        "finn_published_fps": finn_fps,
        **extra,
    }
    if not build:
        return result
    check_fits(dataflow, get_board(board))
    report = build_bitstream(design.system_sources, board, clock_mhz, folder / board, seed=seed)
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


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


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
    parser.add_argument("--finn", action="store_true", help="also FINN's estimate at the same folding (FINN installed)")
    args = parser.parse_args(argv)
    if args.finn and find_finn() is None:
        parser.error("--finn needs FINN: set FINN_PYTHON to the Python of a FINN installation (FINN_ROOT to its source)")
    unknown = [name for name in args.networks.split(",")
               if split_spec(name)[0] not in NETWORKS and name not in TRAINED]
    if unknown:
        parser.error(f"unknown network {unknown[0]!r} (known: {', '.join([*NETWORKS, *TRAINED])})")
    results = [bench(name, args.board, args.clock_mhz, args.out, args.frames, not args.no_build, args.seed,
                     args.pad_value, args.finn) for name in args.networks.split(",")]
    if args.no_build:
        for r in results:
            print(f"{r['network']}: {r['cosim_mismatches']} of {r['cosim_frames']} frames differ; "
                  f"{r['cosim_cycles_per_frame']:g} cycles per frame (model {r['initiation_interval_cycles']})")
    else:
        print_table(results)
    for line in filter(None, map(finn_line, results)):
        print(line)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fpga.json").write_text(json.dumps(results, indent=2) + "\n")
    return results


def print_table(results: list[dict]) -> None:
    """The built designs' table, beside FINN's published or estimated frames/s."""
    header = (f"{'network':16}{'LUT4':>8}{'est.':>8}{'':>7}{'FF':>8}{'est.':>8}{'BRAM':>6}{'est.':>6}{'clock':>7}{'Fmax':>8}"
              f"{'frames/s':>12}{'@Fmax':>12}{'/1k LUT':>10}{'FINN':>10}{'ours/FINN':>11}  cosim")
    print(header)
    for r in results:
        finn = r["finn_published_fps"]
        finn_text, ratio = (f"{finn:,.0f}", f"{r['fps_at_clock'] / finn:.2f}x") if finn else ("-", "-")
        print(f"{r['network']:16}{r['luts']:>8}{r['luts_estimated']:>8}{r['luts_estimated'] / r['luts'] - 1:>+7.0%}"
              f"{r['flip_flops']:>8}{_count(r['flip_flops_estimated']):>8}{r['ram_blocks']:>6}"
              f"{r['ram_blocks_estimated']:>6}{r['clock_mhz']:>7.1f}"
              f"{r['fmax_mhz']:>8.1f}{r['fps_at_clock']:>12,.0f}{r['fps_at_fmax']:>12,.0f}"
              f"{r['fps_per_1000_luts']:>10,.0f}{finn_text:>10}{ratio:>11}  {r['cosim_mismatches']} of "
              f"{r['cosim_frames']} differ")
    print("FINN: published frames/s (tfc, cnv) or FINN's own estimate at the same folding (resnet20s with --finn)")


def finn_line(r: dict) -> str | None:
    """FINN's estimate at our folding beside our figures: placed ones after a build, our estimates without one;
    frames/s per 1000 LUTs at the same clock (FINN's LUT6s and our LUT4s are not the same unit)."""
    if r.get("finn_estimated_luts") is None:
        return None
    clock = r["finn_clock_mhz"]
    finn = (f"{r['network']}: FINN estimates {r['finn_estimated_fps']:,.1f} frames/s at {clock:g} MHz, "
            f"{r['finn_estimated_luts']:,.0f} LUT (Xilinx LUT6) and {r['finn_estimated_bram_18k']:,.0f} BRAM_18K "
            f"at this folding: {r['finn_estimated_fps_per_1000_luts']:,.0f} frames/s per 1k LUT; ")
    fps = clock * 1e6 / r["initiation_interval_cycles"]
    if "luts" not in r:
        return finn + (f"we estimate {fps:,.1f} frames/s, {r['luts_estimated']:,} LUT4 and "
                       f"{r['ram_blocks_estimated']} DP16KD: {r['fps_per_1000_luts_estimated']:,.0f} per 1k LUT4")
    return finn + (f"we place {r['luts']:,} LUT4 and {r['ram_blocks']} DP16KD: {fps / (r['luts'] / 1000):,.0f} "
                   f"frames/s per 1k LUT4 at {clock:g} MHz ({r['fps_per_1000_luts']:,.0f} at Fmax)")


if __name__ == "__main__":
    sys.exit(0 if all(r["cosim_mismatches"] == 0 and r.get("timing_met", True) for r in main()) else 1)
