"""The pipeline as a list of named steps over one run directory.

A step is a plain function ``(cfg, run) -> figures`` that reads the previous stage's file from the run
directory and writes its own; ``STEPS`` maps names to steps and ``DEFAULT_STEPS`` is the order ``bnnflow run``
takes. The runner times each step, records its status and figures in summary.json, and rewrites report.html,
so a failed step still leaves a readable record of what ran.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from bnnflow.errors import BnnflowError, ConfigError
from bnnflow.hw.boards import get_board
from bnnflow.models.methods import create_method
from bnnflow.models.registry import resolve_model_args
from bnnflow.pipeline.config import Config, MethodConfig, ModelConfig
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import load_data
from bnnflow.pipeline.export import export
from bnnflow.pipeline.report import write_report
from bnnflow.pipeline.rundir import RunDir
from bnnflow.pipeline.train import build_model, train

Step = Callable[[Config, RunDir], dict[str, Any]]


def step_train(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Train, resuming from the run's checkpoint when one exists (a finished training is not repeated)."""
    return train(cfg, run, resume=True)


def step_export(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Export the checkpoint to model.qonnx and verify it with qonnx's executor."""
    return export(cfg, run)


def step_compile(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Streamline model.qonnx, convert it to a folded dataflow graph, estimate it, and verify all three."""
    from bnnflow.pipeline.compile.stage import compile_run

    return compile_run(cfg, run)


def step_simulate(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Run the bit-exact simulator on dataflow.onnx, check it against qonnx, and report the timing model."""
    from bnnflow.pipeline.simulate import simulate_run

    return simulate_run(cfg, run)


def step_rtl(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Generate the Verilog of dataflow.onnx, lint it, and cosimulate it against the simulator under Verilator."""
    from bnnflow.pipeline.fpga import rtl_run

    return rtl_run(cfg, run)


def step_bitstream(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Build the board's bitstream with yosys and nextpnr (open-toolchain boards), unless fpga.bitstream is off."""
    if not cfg.fpga.bitstream:
        return {"skipped": "fpga.bitstream is false"}
    from bnnflow.pipeline.fpga import bitstream_run

    return bitstream_run(cfg, run)


def step_finn(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Write the FINN build directory for finn.board and build it when FINN is installed (not in `bnnflow run`'s
    default steps: the build needs FINN and Vivado)."""
    from bnnflow.pipeline.finn import finn_run

    return finn_run(cfg, run)


STEPS: dict[str, Step] = {"train": step_train, "export": step_export, "compile": step_compile,
                          "simulate": step_simulate, "rtl": step_rtl, "bitstream": step_bitstream, "finn": step_finn}
DEFAULT_STEPS: list[str] = ["train", "export", "compile", "simulate", "rtl", "bitstream"]


def resolve_steps(names: list[str | Step]) -> list[tuple[str, Step]]:
    """Step names (or callables, for user-defined steps) to (name, function) pairs."""
    resolved = []
    for item in names:
        if callable(item):
            resolved.append((item.__name__.removeprefix("step_"), item))
        elif item in STEPS:
            resolved.append((item, STEPS[item]))
        else:
            raise ConfigError(f"unknown step {item!r} (known: {', '.join(STEPS)})")
    return resolved


def validate(cfg: Config) -> Config:
    """Fail before anything is written: the data set must load, the model must build and the method must apply.

    Returns the config with the model's arguments resolved (defaults filled in), as config.toml records it.
    """
    get_board(cfg.compile.board)
    args = resolve_model_args(cfg.model.name, cfg.model.args)
    method = create_method(cfg.method.name, **cfg.method.options)
    cfg = dataclasses.replace(cfg, model=ModelConfig(cfg.model.name, args),
                              method=MethodConfig(cfg.method.name, method.options()))
    method.prepare(build_model(cfg, load_data(cfg.data)))
    return cfg


def prepare_run(cfg: Config, root: Path, *, force: bool = False) -> RunDir:
    """Create or reopen a run directory for ``cfg``.

    Reopening a run with the same configuration continues it (training resumes, later steps rerun); a run with
    a different configuration is kept unless ``force`` is given, so a typo never overwrites a trained model.
    """
    run = RunDir(root)
    if run.config_path.is_file():
        if run.read_config() != cfg:
            if not force:
                raise ConfigError(f"{root} holds a run with a different configuration; choose another --out "
                                  "or pass --force to replace it")
            shutil.rmtree(root)
    elif root.exists() and any(root.iterdir()):
        raise ConfigError(f"{root} exists and is not a bnnflow run; choose an empty or new --out folder")
    root.mkdir(parents=True, exist_ok=True)
    run.remove_stale_temporaries()
    run.write_config(cfg)
    return run


def run_steps(cfg: Config, run: RunDir, steps: list[str | Step]) -> dict[str, Any]:
    """Run steps in order, recording each in summary.json; re-raises the first failure after recording it."""
    for name, fn in resolve_steps(steps):
        out.info(f"[{name}]")
        started = time.perf_counter()
        try:
            figures = fn(cfg, run)
        except BnnflowError as err:
            run.record_stage(name, {"status": "failed", "seconds": round(time.perf_counter() - started, 2),
                                    "error": str(err)})
            write_report(run)
            raise
        run.record_stage(name, {"status": "ok", "seconds": round(time.perf_counter() - started, 2), **figures})
        write_report(run)
    return run.read_summary()
