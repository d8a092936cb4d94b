"""The ``bnnflow`` command: one typer command per stage, each a few lines over the same functions as the API.

Errors a user can cause (``BnnflowError``) become one line on stderr and the error's exit code; the traceback
is shown only with ``--debug`` or ``BNNFLOW_DEBUG=1``. Anything else is a bug and propagates. Every path a user
gives is made absolute here, once (``command``), so no stage and no tool it calls depends on the working
directory.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shlex
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import numpy as np
import typer

from bnnflow import __version__
from bnnflow.errors import BnnflowError
from bnnflow.pipeline.console import out

app = typer.Typer(
    name="bnnflow",
    help="Binary neural networks from training to hardware: train, export, compile, simulate, build RTL and "
    "bitstreams, and deploy to edge boards.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

edge_app = typer.Typer(help="ONNX Runtime models of a run for ARM boards and Jetson: export, bench, bundle.",
                       no_args_is_help=True)
app.add_typer(edge_app, name="edge")


def _absolute(value: Any) -> Any:
    """A path (or list of paths) from the command line, resolved against the working directory."""
    if isinstance(value, Path):
        return Path(os.path.abspath(value.expanduser()))
    if isinstance(value, list):
        return [_absolute(v) for v in value]
    return value


def command(group: typer.Typer = app, *args: Any, **kwargs: Any) -> Callable:
    """``group.command(...)`` for a function whose ``Path`` arguments arrive absolute."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def with_absolute_paths(**params: Any) -> Any:
            return fn(**{name: _absolute(value) for name, value in params.items()})

        return group.command(*args, **kwargs)(with_absolute_paths)

    return decorate

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
DeviceOpt = Annotated[Optional[str], typer.Option(help="Where to train: auto, cpu, cuda, cuda:N, mps (train.device).")]


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
            "epochs": "train.epochs", "seed": "train.seed", "device": "train.device"}
    for name, value in shortcuts.items():
        if value is not None:
            overrides[keys[name]] = str(value) if isinstance(value, Path) else value
    return load_config(config).with_overrides(overrides).with_absolute_paths(Path.cwd())


def _default_out(config: Optional[Path]) -> Path:
    return Path.cwd() / "runs" / (config.stem if config else "default")


def _parse_steps(steps: Optional[str]) -> list[str]:
    """``--steps a,b`` checked against the known steps before anything is written."""
    from bnnflow.pipeline.steps import DEFAULT_STEPS, resolve_steps

    names = [name.strip() for name in steps.split(",")] if steps else DEFAULT_STEPS
    resolve_steps(names)
    return names


@contextmanager
def _existing_run(path: Path) -> Iterator[Any]:
    """The run folder ``path`` (refused when it is not a run), held under its lock for the block."""
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.runlock import run_lock

    run = RunDir(path)
    run.read_config()
    with run_lock(run.root):
        yield run


def _update_config(run: Any, before: Any, after: Any) -> None:
    """Write the settings a command was given into config.toml, and say which changed (no hidden state)."""
    changes = after.changes(before)
    if changes:
        run.write_config(after)
        out.info(f"recorded in {run.config_path}: {'; '.join(changes)}")


@command()
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
    device: DeviceOpt = None,
    steps: Annotated[Optional[str], typer.Option(help="Comma-separated steps [default: all].")] = None,
    force: Annotated[bool, typer.Option(help="Replace a run in --out made with another configuration.")] = False,
) -> None:
    """Run the whole pipeline (train, export, ...) into one run directory.

    Rerunning with the same configuration continues where the last run stopped: stages that are up to date are
    skipped, saying so, and a stage whose inputs changed runs again with everything after it.
    """
    cfg = _resolve_config(config, sets, model=model, method=method, data=data, data_dir=data_dir, epochs=epochs,
                          seed=seed, device=device)
    from bnnflow.pipeline.steps import open_run, run_steps, validate

    step_names = _parse_steps(steps)
    cfg = validate(cfg)
    with open_run(cfg, out_dir or _default_out(config), force=force) as run_dir:
        summary = run_steps(cfg, run_dir, step_names, skip_current=True)
    _print_summary(run_dir.root, summary)


@command()
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
    device: DeviceOpt = None,
    resume: Annotated[bool, typer.Option(help="Continue from the run's last checkpoint.")] = False,
    force: Annotated[bool, typer.Option(help="Replace a run in --out made with another configuration.")] = False,
) -> None:
    """Train a model; checkpoints every epoch to RUN/train/.

    Multi-process (DDP): torchrun --nproc-per-node 2 -m bnnflow.pipeline.cli train CONFIG --out RUN (one GPU per
    process with --device cuda; gloo on CPUs).
    """
    cfg = _resolve_config(config, sets, model=model, method=method, data=data, data_dir=data_dir, epochs=epochs,
                          seed=seed, device=device)
    from bnnflow.pipeline.steps import STAGES, open_run, run_steps, validate
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

    def step_train(cfg, run):
        """Train (resuming when asked)."""
        return train_fn(cfg, run, resume=resume)

    with open_run(cfg, root, force=force) as run_dir:
        summary = run_steps(cfg, run_dir, [STAGES["train"].with_fn(step_train)])
    _print_summary(run_dir.root, summary)


@command()
def export(
    run_dir: Annotated[Path, typer.Argument(help="A run directory with a trained checkpoint.")],
    verify: Annotated[bool, typer.Option(help="Check model.qonnx against PyTorch with qonnx's executor.")] = True,
) -> None:
    """Export RUN/train/checkpoint.safetensors to RUN/model.qonnx (1-bit QONNX), verified with qonnx."""
    from bnnflow.pipeline.steps import run_steps

    with _existing_run(run_dir) as run:  # --no-verify holds for this export only: a later `run` verifies again
        summary = run_steps(run.read_config().with_overrides({"export.verify": verify}), run, ["export"])
    _print_summary(run.root, summary)


@command(app, "compile")
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
    file exported elsewhere, which starts a run directory in --out [default: runs/<file name>-<hash of its
    path>]; a run compiled from another model is not replaced without --force.
    """
    from bnnflow.hw.boards import get_board
    from bnnflow.pipeline.compile.stage import compile_run, import_run
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import STAGES, run_steps

    options = {"board": board, "target_fps": target_fps, "clock_mhz": clock_mhz, "label_select": label_select,
               "verify": verify}
    overrides = {f"compile.{k}": v for k, v in options.items() if v is not None}
    if source.is_dir():
        with _existing_run(source) as run:
            before = run.read_config()
            cfg = before.with_overrides(overrides)
            get_board(cfg.compile.board)
            summary = run_steps(cfg, run, ["compile"])
            _update_config(run, before, cfg)
    else:
        from bnnflow.pipeline.simulate import load_array

        cfg = Config().with_overrides(overrides)
        get_board(cfg.compile.board)
        images = load_array(inputs, "inputs") if inputs is not None else None
        with import_run(source, out_dir or _default_import_out(source), cfg, images, force=force) as run:
            stored = np.load(run.verify_dir / "inputs.npy")

            def step_compile(cfg, run):
                """Compile the QONNX file, verifying on the stored inputs."""
                return compile_run(cfg, run, stored)

            summary = run_steps(cfg, run, [STAGES["compile"].with_fn(step_compile)])
    _print_summary(run.root, summary)


def _default_import_out(source: Path) -> Path:
    """runs/NAME-HASH for a QONNX file: two files of one name in different folders get different runs."""
    return Path.cwd() / "runs" / f"{source.stem}-{hashlib.sha256(str(source).encode()).hexdigest()[:8]}"


@command()
def inspect(
    model_file: Annotated[Path, typer.Argument(metavar="FILE.onnx", help="A QONNX file, from anywhere.")],
    board: Annotated[Optional[str], typer.Option(help="Also fold for this board and show its estimate "
                                                 "(`bnnflow boards`).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the facts as JSON, for scripts.")] = False,
) -> None:
    """Say what a QONNX file is and whether it compiles (changes no file).

    Shows the producer, opsets, domains, inputs and outputs, what the import would change, each layer with its
    weight and input bit widths, and whether the compiler takes it: if not, the first node that stops it and what
    would make it compile. Exit 0 either way; a file that is not valid ONNX is one line and exit 2.
    """
    from bnnflow.pipeline.inspection import format_facts, inspect_file

    facts = inspect_file(model_file, board)
    print(json.dumps(facts, indent=2) if as_json else format_facts(facts))


@command()
def simulate(
    target: Annotated[Path, typer.Argument(help="A run directory, or a dataflow.onnx file.")],
    inputs: Annotated[Optional[Path], typer.Option(help="Accelerator inputs (.npy, integer codes).")] = None,
    expect: Annotated[Optional[Path], typer.Option(help="Expected outputs (.npy); exit 4 on any difference.")] = None,
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write the outputs here (.npy).")] = None,
    split: Annotated[Optional[str], typer.Option(help="Use a data split of the run (train or test) as inputs, "
                                                 "checked against the compiled model.")] = None,
    record: Annotated[Optional[Path], typer.Option(help="Write golden vectors (inputs.npy, expected.npy) here.")] = None,
    golden: Annotated[Optional[Path], typer.Option(help="Check against golden vectors written by --record.")] = None,
    batch: Annotated[int, typer.Option(min=1, help="Frames per simulator call.")] = 256,
    clock_mhz: Annotated[Optional[float], typer.Option(help="Clock for the timing line [default: the run's, "
                                                       "or 100 MHz for a bare dataflow.onnx].")] = None,
) -> None:
    """Simulate the accelerator bit-exactly; exit 0 when every output matches, 4 with a short diff when not.

    With a run directory and no inputs, runs the run's simulate step (simulator vs qonnx, timing report).
    """
    from bnnflow.errors import ConfigError, DataError, VerificationError
    from bnnflow.hw.estimates import timing
    from bnnflow.hw.simulator import Simulator, compare, describe_mismatch
    from bnnflow.pipeline import simulate as sim
    from bnnflow.pipeline.onnx_files import load_model
    from bnnflow.pipeline.rundir import RunDir
    from bnnflow.pipeline.steps import run_steps

    is_run = target.is_dir()
    if is_run and not any((inputs, split, golden)):
        with _existing_run(target) as run:
            summary = run_steps(run.read_config(), run, ["simulate"])
        _print_summary(run.root, summary)
        return
    if sum(x is not None for x in (inputs, split, golden)) != 1:
        raise ConfigError("give exactly one source of inputs: --inputs X.npy, --split NAME (run only) or --golden DIR")
    if out_file is not None and out_file.is_dir():
        raise ConfigError(f"--out {out_file} is a folder; give the .npy file to write the outputs to")
    if record is not None and record.exists() and not record.is_dir():
        raise ConfigError(f"--record {record} is a file; give a folder for inputs.npy and expected.npy")
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
    if is_run:
        RunDir(target).read_config()
    dataflow = load_model(RunDir(target).dataflow if is_run else target, "compile")
    got = Simulator(dataflow).run(frames, batch)
    if expected is not None and (expected.ndim == 0 or len(expected) != len(got) or expected[0].size != got[0].size):
        raise DataError(f"the expected outputs have shape {expected.shape}, but the accelerator gives "
                        f"{got.shape} for these inputs; pass outputs of the same run and inputs")
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


@command()
def rtl(run_dir: Annotated[Path, typer.Argument(help="A run directory with dataflow.onnx.")]) -> None:
    """Write the accelerator's Verilog to RUN/rtl, lint it, and cosimulate it against the simulator.

    Exit 4 when any output of the Verilator model differs from the simulator's.
    """
    from bnnflow.pipeline.steps import run_steps

    with _existing_run(run_dir) as run:
        summary = run_steps(run.read_config(), run, ["rtl"])
    _print_summary(run.root, summary)


@command()
def bitstream(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose RTL `bnnflow rtl` wrote.")],
    board: Annotated[Optional[str], typer.Option(help="Open-toolchain board [default: the run's].")] = None,
) -> None:
    """Build a bitstream for an ECP5 or iCE40 board with yosys and nextpnr, into RUN/fpga/BOARD.

    The design is wrapped in a UART bridge with the board's pins and clock, ready for `bnnflow fpga-run`.
    """
    from bnnflow.hw.boards import get_board
    from bnnflow.pipeline.fpga import bitstream_run
    from bnnflow.pipeline.steps import STAGES, run_steps

    with _existing_run(run_dir) as run:
        cfg = run.read_config()
        name = get_board(board or cfg.compile.board).name

        def step_bitstream(cfg, run):
            """Build the bitstream for the chosen board."""
            return bitstream_run(cfg, run, name)

        summary = run_steps(cfg, run, [STAGES["bitstream"].with_fn(step_bitstream)])
    _print_summary(run.root, summary)


@command(app, "fpga-run")
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


@command()
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
    from bnnflow.pipeline.steps import STAGES, run_steps

    with _existing_run(run_dir) as run:
        if check_on_board:
            result = board_check(run, host)
            if result:
                out.info(f"finn: all {result['board_samples']} outputs of the board equal bnnflow's")
            return
        before = run.read_config()
        cfg = with_finn_options(before, board=board, target_fps=target_fps, clock_mhz=clock_mhz,
                                verify_samples=verify_samples)

        def step_finn(cfg, run):
            """Write and (with FINN installed) build the FINN directory."""
            return finn_run(cfg, run, build=build, estimate_only=estimate)

        summary = run_steps(cfg, run, [STAGES["finn"].with_fn(step_finn)])
        _update_config(run, before, cfg)  # the [finn] settings this directory was written with
    _print_summary(run.root, summary)


@command(edge_app, "export")
def edge_export(run_dir: Annotated[Path, typer.Argument(help="A run directory with model.qonnx.")]) -> None:
    """Write RUN/edge/reference.onnx (standard ops), int8.onnx (int8 QDQ) and bitpacked.onnx (bnnflow's XNOR kernel).

    Each is run under ONNX Runtime on the test inputs and must equal the simulator (a compiled run) or
    model.qonnx (a network without a hardware form): exit 4 otherwise.
    """
    from bnnflow.pipeline.steps import run_steps

    with _existing_run(run_dir) as run:
        summary = run_steps(run.read_config(), run, ["edge"])
    _print_summary(run.root, summary)


@command(edge_app, "bench")
def edge_bench(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose edge models `bnnflow edge export` wrote.")],
    runs: Annotated[int, typer.Option(min=1, help="Timed rounds (each runs every model once, batch 1).")] = 50,
    threads: Annotated[int, typer.Option(min=0, help="ONNX Runtime intra-op threads (0 = its default).")] = 1,
    provider: Annotated[Optional[str], typer.Option(help="cpu, cuda or tensorrt [default: the best present].")] = None,
) -> None:
    """Latency (p50, p90, p99) and frames/s of each edge model and of the float model of the same architecture,
    measured in interleaved rounds, into RUN/edge/bench.json and bench.png."""
    from bnnflow.pipeline.edge.bench import bench_stage
    from bnnflow.pipeline.steps import STAGES, run_steps

    with _existing_run(run_dir) as run:

        def step_bench(cfg, run):
            """Time the edge models."""
            return bench_stage(cfg, run, runs, threads, provider)

        summary = run_steps(run.read_config(), run, [STAGES["bench"].with_fn(step_bench)])
    _print_summary(run.root, summary)


@command(edge_app, "bundle")
def edge_bundle(
    run_dir: Annotated[Path, typer.Argument(help="A run directory whose edge models `bnnflow edge export` wrote.")],
    target: Annotated[str, typer.Option(help="rpi (Raspberry Pi OS 64-bit) or jetson (JetPack).")] = "rpi",
) -> None:
    """Pack RUN/edge into RUN/edge/bundle-TARGET.tar.gz: the models, labels, sample inputs, a one-file runner
    (onnxruntime and numpy only), the kernel's source with its build line, and a README for the target."""
    from bnnflow.pipeline.edge.stage import edge_bundle_run
    from bnnflow.pipeline.steps import STAGES, run_steps

    with _existing_run(run_dir) as run:

        def step_bundle(cfg, run):
            """Pack the deploy bundle."""
            return edge_bundle_run(cfg, run, target)

        summary = run_steps(run.read_config(), run, [STAGES["bundle"].with_fn(step_bundle)])
    _print_summary(run.root, summary)


@command()
def boards() -> None:
    """List the boards folding can target, with their FPGA and budgets."""
    from bnnflow.hw.boards import BOARDS

    for board in BOARDS.values():
        print(f"{board.name:<14} {board.part:<22} {board.fabric.name:<7} {board.luts:>9,} LUTs "
              f"{board.ram_blocks:>5} x {board.fabric.ram_block_bits // 1024} Kbit RAM  {board.clock_mhz:g} MHz")


@command()
def models(pattern: Annotated[str, typer.Argument(help="Shell-style filter.")] = "*") -> None:
    """List the registered models and their arguments."""
    from bnnflow.models import list_models
    from bnnflow.models.registry import model_defaults

    for name in list_models(pattern):
        args = ", ".join(f"{k}={v!r}" for k, v in model_defaults(name).items())
        print(f"{name}({args})")


@command()
def methods() -> None:
    """List the training methods, their options, and the pipeline paths a method cannot take."""
    from bnnflow.models.methods import create_method, list_methods, method_defaults

    for name in list_methods():
        options = ", ".join(f"{k}={v!r}" for k, v in method_defaults(name).items())
        method = create_method(name)
        amp = f"  [amp: {', '.join(method.amp)}]"
        print(f"{name}({options}){amp}" + (f"  -- {method.limits}" if method.limits else ""))


@command()
def report(run_dir: Annotated[Path, typer.Argument(help="A run directory.")]) -> None:
    """Rewrite RUN/report.html from RUN/summary.json and the run's plots."""
    from bnnflow.pipeline.report import write_report

    with _existing_run(run_dir) as run:
        print(write_report(run))


@command()
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


def _rerun_hint() -> str:
    """The command that continues an interrupted one (training needs --resume to continue)."""
    args = sys.argv[1:]
    if "train" in args and "--resume" not in args:
        args = [*args, "--resume"]
    return shlex.join(["bnnflow", *args])


#: OS errors that come from the machine or the user's folders, not from a bug: one line, like bad input
_ENVIRONMENT_ERRNOS = {13, 28, 30, 122}  # EACCES, ENOSPC, EROFS, EDQUOT


def main() -> None:
    """Entry point: run the CLI, turning user errors into one line and an exit code.

    Usage errors (an unknown option, a value out of range) are one line too, with exit code 2 as click gives them.
    """
    warnings.filterwarnings("ignore", module="brevitas")
    warnings.filterwarnings("ignore", message=".*fast_hadamard_transform.*")
    debug = os.environ.get("BNNFLOW_DEBUG") == "1" or "--debug" in sys.argv[1:]
    try:
        code = app(standalone_mode=False)  # typer turns Ctrl-C into exit code 130 without a word
    except typer.Abort:
        code = 130
    except typer.TyperException as err:  # click's usage errors: an unknown option, a bad value
        if type(err).__name__ == "NoArgsIsHelpError":  # a bare group: its help, as standalone typer shows it
            err.show()
            sys.exit(0)
        hint = f" (see `{err.ctx.command_path} --help`)" if getattr(err, "ctx", None) is not None else ""
        out.error(f"{err.format_message()}{hint}")
        sys.exit(getattr(err, "exit_code", 2))
    except BnnflowError as err:
        if debug:
            raise
        out.error(str(err))
        sys.exit(err.exit_code)
    except KeyboardInterrupt:
        code = 130
    except OSError as err:
        if debug or err.errno not in _ENVIRONMENT_ERRNOS:
            raise
        out.error(f"{err.strerror}: {err.filename}; free space or fix the folder's permissions, then rerun")
        sys.exit(2)
    if code == 130:
        out.error(f"interrupted; rerun `{_rerun_hint()}` to continue where it stopped")
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
