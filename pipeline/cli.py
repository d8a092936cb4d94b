"""The ``bnnflow`` command: one typer command per stage, each a few lines over the same functions as the API.

Errors a user can cause (``BnnflowError``) become one line on stderr and the error's exit code; the traceback
is shown only with ``--debug`` or ``BNNFLOW_DEBUG=1``. Anything else is a bug and propagates.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path
from typing import Annotated, Any, Optional

import numpy as np
import typer

from bnnflow import __version__
from bnnflow.errors import BnnflowError
from bnnflow.pipeline.console import out

app = typer.Typer(
    name="bnnflow",
    help="Binary neural networks from training to hardware: train, export, compile (and, as stages land, "
    "simulate, build and deploy).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

edge_app = typer.Typer(help="ONNX Runtime models of a run for ARM boards and Jetson: export, bench, bundle.",
                       no_args_is_help=True)
app.add_typer(edge_app, name="edge")

ConfigArg = Annotated[Optional[Path], typer.Argument(help="TOML config file; omit for the digits default.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Run directory [default: runs/<config name>].")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", help="Override a config key, e.g. train.epochs=5.")]
ModelOpt = Annotated[Optional[str], typer.Option(help="Model name (shortcut for --set model.name=...).")]
MethodOpt = Annotated[Optional[str], typer.Option(help="Training method, e.g. rbnn (shortcut for --set method.name=...; "
                                                        "`bnnflow methods` lists them).")]
DataOpt = Annotated[Optional[str], typer.Option(help="Data set: digits, mnist, cifar10, imagefolder.")]
DataDirOpt = Annotated[Optional[Path], typer.Option(help="Folder of the data set (data.root).")]
EpochsOpt = Annotated[Optional[int], typer.Option(help="Training epochs (train.epochs).")]
SeedOpt = Annotated[Optional[int], typer.Option(help="Training seed (train.seed).")]


@app.callback()
def _global(
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print only errors (for CI).")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of user errors.")] = False,
) -> None:
    out.quiet = quiet
    if debug:
        os.environ["BNNFLOW_DEBUG"] = "1"


def _resolve_config(config: Optional[Path], sets: Optional[list[str]], **shortcuts: Any):
    from bnnflow.pipeline.config import load_config, parse_override

    overrides = dict(parse_override(s) for s in sets or [])
    keys = {"model": "model.name", "method": "method.name", "data": "data.name", "data_dir": "data.root",
            "epochs": "train.epochs", "seed": "train.seed"}
    for name, value in shortcuts.items():
        if value is not None:
            overrides[keys[name]] = str(value) if isinstance(value, Path) else value
    return load_config(config).with_overrides(overrides)


def _default_out(config: Optional[Path]) -> Path:
    return Path("runs") / (config.stem if config else "default")


@app.command()
def run(
    config: ConfigArg = None,
    out_dir: OutOpt = None,
    sets: SetOpt = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    steps: Annotated[Optional[str], typer.Option(help="Comma-separated steps [default: all].")] = None,
    force: Annotated[bool, typer.Option(help="Replace a run in --out made with another configuration.")] = False,
) -> None:
    """Run the whole pipeline (train, export, ...) into one run directory.

    Rerunning with the same configuration continues where the last run stopped.
    """
    cfg = _resolve_config(config, sets, model=model, method=method, data=data, data_dir=data_dir, epochs=epochs,
                          seed=seed)
    from bnnflow.pipeline.steps import DEFAULT_STEPS, prepare_run, run_steps, validate

    step_names = steps.split(",") if steps else DEFAULT_STEPS
    cfg = validate(cfg)
    run_dir = prepare_run(cfg, out_dir or _default_out(config), force=force)
    summary = run_steps(cfg, run_dir, step_names)
    _print_summary(run_dir.root, summary)


@app.command()
def train(
    config: ConfigArg = None,
    out_dir: OutOpt = None,
    sets: SetOpt = None,
    model: ModelOpt = None,
    method: MethodOpt = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    epochs: EpochsOpt = None,
    seed: SeedOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Replace a run in --out made with another configuration.")] = False,
) -> None:
    """Train a model; checkpoints every epoch to RUN/train/.

    Multi-process (DDP): torchrun --nproc-per-node 2 -m bnnflow.pipeline.cli train CONFIG --out RUN
    """
    cfg = _resolve_config(config, sets, model=model, method=method, data=data, data_dir=data_dir, epochs=epochs,
                          seed=seed)
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate
    from bnnflow.pipeline.train import train as train_fn

    cfg = validate(cfg)
    root = out_dir or _default_out(config)
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 owns the run directory
        from bnnflow.pipeline.rundir import RunDir

        train_fn(cfg, RunDir(root), resume=resume)
        return
    if not resume and (root / "train").exists() and not force:
        from bnnflow.errors import ConfigError

        raise ConfigError(f"{root} already has a training; pass --resume to continue it or --force to start over")
    run_dir = prepare_run(cfg, root, force=force)

    def step_train(cfg, run):
        """Train (resuming when asked)."""
        return train_fn(cfg, run, resume=resume)

    summary = run_steps(cfg, run_dir, [step_train])
    _print_summary(run_dir.root, summary)


@app.command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a trained checkpoint.")],
    verify: Annotated[bool, typer.Option(help="Check model.qonnx against PyTorch with qonnx's executor.")] = True,
) -> None:
    """Export RUN/train/checkpoint.safetensors to RUN/model.qonnx (1-bit QONNX), verified with qonnx."""
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)
    cfg = run.read_config()
    cfg = cfg.with_overrides({"export.verify": verify})
    summary = run_steps(cfg, run, ["export"])
    _print_summary(run.root, summary)


@app.command("compile")
def compile_cmd(
    source: Annotated[Path, typer.Argument(help="A run directory with model.qonnx, or a QONNX file.")],
    out_dir: OutOpt = None,
    inputs: Annotated[Optional[Path], typer.Option(help="With a QONNX file: float inputs (.npy) to verify on "
                                                   "[default: 256 seeded random inputs in [0, 1)].")] = None,
    board: Annotated[Optional[str], typer.Option(help="Board to fit (`bnnflow boards`).")] = None,
    target_fps: Annotated[Optional[float], typer.Option(help="Frames/s to reach with the fewest resources.")] = None,
    clock_mhz: Annotated[Optional[float], typer.Option(help="Accelerator clock in MHz.")] = None,
    label_select: Annotated[Optional[bool], typer.Option(help="End with the class index, not the scores.")] = None,
    verify: Annotated[bool, typer.Option(help="Check all three graphs against each other with qonnx.")] = True,
    force: Annotated[bool, typer.Option(help="Replace a run in --out made with another configuration.")] = False,
) -> None:
    """Compile model.qonnx into streamlined.onnx and a folded dataflow.onnx, with estimates.

    SOURCE is a run directory (its config.toml gets the settings used, once the compile succeeds), or a QONNX
    file exported elsewhere, which starts a new run directory in --out [default: runs/<file name>].
    """
    from bnnflow.hw.boards import get_board
    from bnnflow.pipeline.compile.stage import compile_file, compile_run
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    options = {"board": board, "target_fps": target_fps, "clock_mhz": clock_mhz, "label_select": label_select,
               "verify": verify}
    overrides = {f"compile.{k}": v for k, v in options.items() if v is not None}
    if source.is_dir():
        run = RunDir(source)
        cfg = run.read_config().with_overrides(overrides)
        get_board(cfg.compile.board)
        summary = run_steps(cfg, run, ["compile"])
        run.write_config(cfg)
    else:
        from bnnflow.pipeline.simulate import load_array

        cfg = Config().with_overrides(overrides)
        get_board(cfg.compile.board)
        images = load_array(inputs, "inputs") if inputs is not None else None
        run = compile_file(source, out_dir or Path("runs") / source.stem, cfg, images, force=force)
        stored = np.load(run.verify_dir / "inputs.npy")

        def step_compile(cfg, run):
            """Compile the QONNX file, verifying on the stored inputs."""
            return compile_run(cfg, run, stored)

        summary = run_steps(cfg, run, [step_compile])
    _print_summary(run.root, summary)


@app.command()
def simulate(
    target: Annotated[Path, typer.Argument(help="A run directory, or a dataflow.onnx file.")],
    inputs: Annotated[Optional[Path], typer.Option(help="Accelerator inputs (.npy, integer codes).")] = None,
    expect: Annotated[Optional[Path], typer.Option(help="Expected outputs (.npy); exit 4 on any difference.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the outputs here (.npy).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Use a data split of the run (train or test) as inputs, "
                                                 "checked against the compiled model.")] = None,
    record: Annotated[Optional[Path], typer.Option(help="Write golden vectors (inputs.npy, expected.npy) here.")] = None,
    golden: Annotated[Optional[Path], typer.Option(help="Check against golden vectors written by --record.")] = None,
    batch: Annotated[int, typer.Option(help="Frames per simulator call.")] = 256,
    clock_mhz: Annotated[Optional[float], typer.Option(help="Clock for the timing line [default: the run's, "
                                                       "or 100 MHz for a bare dataflow.onnx].")] = None,
) -> None:
    """Simulate the accelerator bit-exactly; exit 0 when every output matches, 4 with a short diff when not.

    With a run directory and no inputs, runs the run's simulate step (simulator vs qonnx, timing report).
    """
    from bnnflow.errors import ConfigError, VerificationError
    from bnnflow.hw.estimates import timing
    from bnnflow.hw.simulator import Simulator, compare, describe_mismatch
    from bnnflow.pipeline import simulate as sim
    from bnnflow.pipeline.onnx_files import load_model
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    is_run = target.is_dir()
    if is_run and not any((inputs, split, golden)):
        run = RunDir(target)
        summary = run_steps(run.read_config(), run, ["simulate"])
        _print_summary(run.root, summary)
        return
    if sum(x is not None for x in (inputs, split, golden)) != 1:
        raise ConfigError("give exactly one source of inputs: --inputs X.npy, --split NAME (run only) or --golden DIR")
    expected = None
    if split is not None:
        if not is_run:
            raise ConfigError("--split needs a run directory, not a dataflow.onnx file")
        run = RunDir(target)
        frames, expected = sim.split_inputs(run.read_config(), run, split)
    elif golden is not None:
        frames = sim.load_array(golden / "inputs.npy", "golden inputs")
        expected = sim.load_array(golden / "expected.npy", "golden outputs")
    else:
        frames = sim.load_array(inputs, "inputs")
    if expect is not None:
        expected = sim.load_array(expect, "expected outputs")
    dataflow = load_model(RunDir(target).dataflow if is_run else target, "compile")
    got = Simulator(dataflow).run(frames, batch)
    if clock_mhz is None:
        clock_mhz = 100.0
        if is_run:
            from bnnflow.pipeline.compile.stage import clock_of

            clock_mhz = clock_of(RunDir(target).read_config().compile)
    t = timing(dataflow, clock_mhz)
    out.info(f"timing at {clock_mhz:g} MHz: {t['frames_per_second']:,.0f} frames/s, initiation interval "
             f"{t['initiation_interval_cycles']} cycles, latency {t['latency_cycles']} cycles, bounded by "
             f"{t['bottleneck']}")
    if out_file is not None:
        sim.save_array(out_file, got)
    if record is not None:
        sim.save_array(record / "inputs.npy", np.asarray(frames))
        sim.save_array(record / "expected.npy", got)
    if expected is not None:
        result = compare(expected, got)
        if result["mismatches"]:
            raise VerificationError(f"simulate: {describe_mismatch(result)}")
        out.info(f"simulate: {describe_mismatch(result)}")
    else:
        out.info(f"simulate: {len(got)} frames simulated")


@app.command()
def rtl(run_dir: Annotated[Path, typer.Argument(help="A run directory with dataflow.onnx.")]) -> None:
    """Write the accelerator's Verilog to RUN/rtl, lint it, and cosimulate it against the simulator.

    Exit 4 when any output of the Verilator model differs from the simulator's.
    """
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)
    _print_summary(run.root, run_steps(run.read_config(), run, ["rtl"]))


@app.command()
def bitstream(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose RTL `bnnflow rtl` wrote.")],
    board: Annotated[Optional[str], typer.Option(help="Open-toolchain board [default: the run's].")] = None,
) -> None:
    """Build a bitstream for an ECP5 or iCE40 board with yosys and nextpnr, into RUN/fpga/BOARD.

    The design is wrapped in a UART bridge with the board's pins and clock, ready for `bnnflow fpga-run`.
    """
    from bnnflow.hw.boards import get_board
    from bnnflow.pipeline.fpga import bitstream_run
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)
    cfg = run.read_config()
    name = get_board(board or cfg.compile.board).name

    def step_bitstream(cfg, run):
        """Build the bitstream for the chosen board."""
        return bitstream_run(cfg, run, name)

    _print_summary(run.root, run_steps(cfg, run, [step_bitstream]))


@app.command("fpga-run")
def fpga_run(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a bitstream loaded on the board.")],
    port: Annotated[str, typer.Option(help="The board's serial port.")] = "/dev/ttyUSB0",
    inputs: Annotated[Optional[Path], typer.Option(help="Accelerator inputs (.npy) [default: the run's cosimulated "
                                                   "test inputs].")] = None,
    samples: Annotated[int, typer.Option(help="Send at most this many frames (0 = all).")] = 100,
    baud: Annotated[Optional[int], typer.Option(help="UART baud rate [default: the run's fpga.baud].")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for each frame's answer.")] = 10.0,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the board's outputs here (.npy).")] = None,
) -> None:
    """Run frames on a programmed board over its serial port and check them against the simulator (exit 4 if any
    differs). Program the board first, e.g. `openFPGALoader -b ulx3s RUN/fpga/ulx3s/ulx3s.bit`."""
    from bnnflow.errors import VerificationError
    from bnnflow.hw.fpga_run import load_interface, run_on_board
    from bnnflow.hw.simulator import Simulator, compare, describe_mismatch
    from bnnflow.pipeline import simulate as sim
    from bnnflow.pipeline.fpga import cosim_inputs
    from bnnflow.pipeline.onnx_files import load_model
    from bnnflow.pipeline.rundir import RunDir

    run = RunDir(run_dir)
    cfg = run.read_config()
    interface = load_interface(run.root / "rtl" / "interface.json")
    simulator = Simulator(load_model(run.dataflow, "compile"))
    frames = simulator.check_inputs(sim.load_array(inputs, "inputs")) if inputs else cosim_inputs(cfg, run, simulator)
    if samples:
        frames = frames[:samples]
    got = run_on_board(port, interface, frames, baud=baud or cfg.fpga.baud, timeout=timeout)
    if out_file is not None:
        sim.save_array(out_file, got)
    result = compare(simulator.run(frames).reshape(len(frames), -1), got)
    if result["mismatches"]:
        raise VerificationError(f"fpga-run: the board disagrees with the simulator: {describe_mismatch(result)}")
    out.info(f"fpga-run: {describe_mismatch(result)} on {port}")


@app.command()
def finn(
    run_dir: Annotated[Path, typer.Argument(help="A compiled run directory (model.qonnx, dataflow.onnx).")],
    board: Annotated[Optional[str], typer.Option(help="FINN board: Pynq-Z1, Pynq-Z2, Ultra96, Ultra96-V2, ZCU102, "
                                                 "ZCU104, ZCU111, RFSoC2x2, RFSoC4x2, KV260_SOM, U50, U200, U250, "
                                                 "U280, U55C [default: the run's finn.board].")] = None,
    target_fps: Annotated[Optional[float], typer.Option(help="Let FINN fold for this rate instead of using "
                                                        "bnnflow's folding.")] = None,
    clock_mhz: Annotated[Optional[float], typer.Option(help="Accelerator clock in MHz.")] = None,
    verify_samples: Annotated[Optional[int], typer.Option(help="Test samples for FINN's verification steps.")] = None,
    build: Annotated[bool, typer.Option(help="Run FINN's builder when FINN is installed.")] = True,
    estimate: Annotated[bool, typer.Option(help="Only FINN's estimate steps (no Vivado needed).")] = False,
    check_on_board: Annotated[bool, typer.Option(help="Check a finished build's deployment package on a PYNQ "
                                                 "board: print the commands, or run them with --host.")] = False,
    host: Annotated[Optional[str], typer.Option(help="user@address of the PYNQ board for --check-on-board.")] = None,
) -> None:
    """Write RUN/finn, a FINN build directory for a Xilinx board, and build it when FINN is installed.

    The directory holds model.onnx, FINN's dataflow_build_config.json, bnnflow's folding as FINN's folding
    config, verification vectors from bnnflow's simulator, and build.py, which runs FINN's builder on it. In the
    bnnflow Docker image (FINN inside, Vivado mounted from the host) this command builds the bitstream and the
    PYNQ driver; elsewhere it writes the directory and says how to build it.
    """
    from bnnflow.pipeline.finn import board_check, finn_run, with_finn_options
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)
    if check_on_board:
        result = board_check(run, host)
        if result:
            out.info(f"finn: all {result['board_samples']} outputs of the board equal bnnflow's")
        return
    cfg = with_finn_options(run.read_config(), board=board, target_fps=target_fps, clock_mhz=clock_mhz,
                            verify_samples=verify_samples)

    def step_finn(cfg, run):
        """Write and (with FINN installed) build the FINN directory."""
        return finn_run(cfg, run, build=build, estimate_only=estimate)

    summary = run_steps(cfg, run, [step_finn])
    run.write_config(cfg)  # the [finn] settings this directory was written with
    _print_summary(run.root, summary)


@edge_app.command("export")
def edge_export(run_dir: Annotated[Path, typer.Argument(help="A run directory with model.qonnx.")]) -> None:
    """Write RUN/edge/reference.onnx (standard ops) and bitpacked.onnx (binary layers on bnnflow's XNOR kernel).

    Each is run under ONNX Runtime on the test inputs and must equal the simulator (a compiled run) or
    model.qonnx (a network without a hardware form): exit 4 otherwise.
    """
    from bnnflow.pipeline.edge.stage import edge_export_run
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)

    def step_edge(cfg, run):
        """Export and check the ONNX Runtime variants."""
        return edge_export_run(cfg, run)

    _print_summary(run.root, run_steps(run.read_config(), run, [step_edge]))


@edge_app.command("bench")
def edge_bench(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose edge models `bnnflow edge export` wrote.")],
    runs: Annotated[int, typer.Option(help="Timed rounds (each runs every model once, batch 1).")] = 50,
    threads: Annotated[int, typer.Option(help="ONNX Runtime intra-op threads (0 = its default).")] = 1,
    provider: Annotated[Optional[str], typer.Option(help="cpu, cuda or tensorrt [default: the best present].")] = None,
) -> None:
    """Latency (p50, p90, p99) and frames/s of each edge model and of the float model of the same architecture,
    measured in interleaved rounds, into RUN/edge/bench.json and bench.png."""
    from bnnflow.errors import ConfigError
    from bnnflow.pipeline.edge.bench import bench_run
    from bnnflow.pipeline.edge.runtime import providers
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)
    if not (run.root / "edge" / "bitpacked.onnx").is_file():
        raise ConfigError(f"{run.root} has no edge models; run `bnnflow edge export {run.root}` first")
    chosen = providers(provider)
    out.info(f"edge bench: running on {chosen[0]}" + (f" (also available: {', '.join(chosen[1:])})"
                                                      if len(chosen) > 1 else ""))

    def step_bench(cfg, run):
        """Time the edge models."""
        from bnnflow.pipeline.onnx_files import load_model

        model = load_model(run.qonnx, "export")
        shape = tuple(model.get_tensor_shape(model.graph.input[0].name)[1:])
        classes = model.get_tensor_shape(model.graph.output[0].name)[-1]
        report = bench_run(run.root, cfg.model.name, shape, classes, runs, threads, provider)
        for name, entry in report["models"].items():
            out.info(f"{name:>10}: p50 {entry['p50_ms']:.3f} ms, p90 {entry['p90_ms']:.3f}, p99 "
                     f"{entry['p99_ms']:.3f}; {entry['frames_per_second']:,.0f} frames/s, "
                     f"{entry['speedup_vs_float']}x the float model")
        return {f"{name}_p50_ms": entry["p50_ms"] for name, entry in report["models"].items()}

    _print_summary(run.root, run_steps(run.read_config(), run, [step_bench]))


@edge_app.command("bundle")
def edge_bundle(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose edge models `bnnflow edge export` wrote.")],
    target: Annotated[str, typer.Option(help="rpi (Raspberry Pi OS 64-bit) or jetson (JetPack).")] = "rpi",
) -> None:
    """Pack RUN/edge into RUN/edge/bundle-TARGET.tar.gz: the models, labels, sample inputs, a one-file runner
    (onnxruntime and numpy only), the kernel's source with its build line, and a README for the target."""
    from bnnflow.pipeline.edge.stage import edge_bundle_run
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    run = RunDir(run_dir)

    def step_bundle(cfg, run):
        """Pack the deploy bundle."""
        return edge_bundle_run(cfg, run, target)

    _print_summary(run.root, run_steps(run.read_config(), run, [step_bundle]))


@app.command()
def boards() -> None:
    """List the boards folding can target, with their FPGA and budgets."""
    from bnnflow.hw.boards import BOARDS

    for board in BOARDS.values():
        print(f"{board.name:<14} {board.part:<22} {board.fabric.name:<7} {board.luts:>9,} LUTs "
              f"{board.ram_blocks:>5} x {board.fabric.ram_block_bits // 1024} Kbit RAM  {board.clock_mhz:g} MHz")


@app.command()
def models(pattern: Annotated[str, typer.Argument(help="Shell-style filter.")] = "*") -> None:
    """List the registered models and their arguments."""
    from bnnflow.models import list_models
    from bnnflow.models.registry import model_defaults

    for name in list_models(pattern):
        args = ", ".join(f"{k}={v!r}" for k, v in model_defaults(name).items())
        print(f"{name}({args})")


@app.command()
def methods() -> None:
    """List the training methods, their options, and the pipeline paths a method cannot take."""
    from bnnflow.models.methods import create_method, list_methods, method_defaults

    for name in list_methods():
        options = ", ".join(f"{k}={v!r}" for k, v in method_defaults(name).items())
        limits = create_method(name).limits
        print(f"{name}({options})" + (f"  -- {limits}" if limits else ""))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Rewrite RUN/report.html from RUN/summary.json and the run's plots."""
    from bnnflow.pipeline.report import write_report
    from bnnflow.pipeline.rundir import RunDir

    run = RunDir(run_dir)
    run.read_config()
    print(write_report(run))


@app.command()
def version() -> None:
    """Print the bnnflow version."""
    print(__version__)


def _print_summary(root: Path, summary: dict[str, Any]) -> None:
    if out.quiet:
        return
    for stage, entry in summary.get("stages", {}).items():
        keys = ("test_accuracy", "mismatches", "verified_samples", "streamlined_mismatches", "dataflow_mismatches",
                "frames_per_second", "luts", "simulated_samples", "simulator_frames_per_second", "built",
                "estimated_fps", "verification_passed")
        figures = {k: v for k, v in entry.items() if k in keys}
        out.info(f"{stage:>8}: {entry.get('status')} in {entry.get('seconds')} s  {json.dumps(figures)}")
    out.info(f"run directory: {root}  (summary.json, report.html)")


def main() -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit code."""
    warnings.filterwarnings("ignore", module="brevitas")
    warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
    try:
        app()
    except BnnflowError as err:
        if os.environ.get("BNNFLOW_DEBUG") == "1":
            raise
        out.error(str(err))
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        out.error("interrupted; rerun the same command to continue from the last checkpoint")
        sys.exit(130)


if __name__ == "__main__":
    main()
