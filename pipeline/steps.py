"""The pipeline as a list of named stages over one run folder.

A stage is a plain function ``(cfg, run) -> figures`` that reads the previous stage's files from the run folder
and writes its own, together with what it reads (run files and config sections) and what it writes (files and
folders it owns). ``STAGES`` maps names to stages and ``DEFAULT_STEPS`` is the order ``bnnflow run`` takes.

The runner holds the folder's lock, refuses an input made by a stage that is out of date (or changed after it
was written), claims the stage's outputs in the manifest before it runs, times it, records its status, input
fingerprints and files in ``manifest.json`` and its figures in ``summary.json``, and rewrites report.html, so a
failed or interrupted stage still leaves a readable record. With ``skip_current`` (``bnnflow run``) a stage
whose inputs and outputs are unchanged since it last succeeded is skipped, saying so.
"""

from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from bnnflow.errors import BnnflowError, ConfigError
from bnnflow.hw.boards import get_board
from bnnflow.models.methods import create_method
from bnnflow.models.registry import resolve_model_args
from bnnflow.pipeline.config import Config, MethodConfig, ModelConfig
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import load_data
from bnnflow.pipeline.distributed import check_placement
from bnnflow.pipeline.export import export
from bnnflow.pipeline.manifest import Manifest, under
from bnnflow.pipeline.report import write_report
from bnnflow.pipeline.rundir import RunDir
from bnnflow.pipeline.runlock import LOCK_NAME, run_lock
from bnnflow.pipeline.staleness import check_inputs, fingerprint, first_change, input_keys, out_of_date
from bnnflow.pipeline.train import build_model, load_teacher, train

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


def step_edge(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Write the ONNX Runtime variants of model.qonnx and check them against the simulator (or model.qonnx)."""
    from bnnflow.pipeline.edge.stage import edge_export_run

    return edge_export_run(cfg, run)


def step_bench(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Time the edge models against the float model of the same architecture (50 rounds, 1 thread)."""
    from bnnflow.pipeline.edge.bench import bench_stage

    return bench_stage(cfg, run, runs=50, threads=1, provider=None)


def step_bundle(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Pack the Raspberry Pi deploy bundle of the edge models."""
    from bnnflow.pipeline.edge.stage import edge_bundle_run

    return edge_bundle_run(cfg, run, "rpi")


@dataclass(frozen=True)
class Stage:
    """A step and its place in the run folder: what it reads and writes, and how a user reruns it."""

    name: str
    fn: Step
    #: run files it reads; each existing one is fingerprinted (sha256) when the stage runs
    inputs: tuple[str, ...] = ()
    #: run files and folders it writes, and so owns
    outputs: tuple[str, ...] = ()
    #: config sections it reads
    config: tuple[str, ...] = ()
    #: the command that reruns it, for messages ({run} is the run folder)
    command: str = ""
    #: paths under its outputs that it keeps rather than replaces (FINN's output/ of an earlier build: hours of
    #: Vivado, possibly built outside bnnflow), so files there that bnnflow did not write do not stop it
    keeps: tuple[str, ...] = ()

    @property
    def keys(self) -> list[str]:
        """Its fingerprint keys: input files and ``[config sections]``."""
        return input_keys(self.inputs, self.config)

    def with_fn(self, fn: Step, **changes: Any) -> "Stage":
        """The same stage running ``fn`` (a command's variant with its own options)."""
        return dataclasses.replace(self, fn=fn, **changes)


_EDGE_MODELS = tuple(f"edge/{n}" for n in ("reference.onnx", "int8.onnx", "bitpacked.onnx"))
STAGES: dict[str, Stage] = {s.name: s for s in [
    Stage("train", step_train, (), ("train",), ("data", "model", "method", "train"),
          "bnnflow train CONFIG --out {run} --resume"),
    Stage("export", step_export, ("train/checkpoint.safetensors",), ("model.qonnx", "verify/export.npz"),
          ("export", "data"), "bnnflow export {run}"),
    Stage("compile", step_compile, ("model.qonnx", "verify/inputs.npy"),
          ("streamlined.onnx", "dataflow.onnx", "compile", "verify/compile.npz"), ("compile", "data"),
          "bnnflow compile {run}"),
    Stage("simulate", step_simulate, ("dataflow.onnx", "verify/compile.npz"), ("sim",), ("compile",),
          "bnnflow simulate {run}"),
    Stage("rtl", step_rtl, ("dataflow.onnx", "verify/compile.npz"), ("rtl",), ("compile", "fpga"), "bnnflow rtl {run}"),
    Stage("bitstream", step_bitstream, ("dataflow.onnx", "rtl/interface.json"), ("fpga",), ("compile", "fpga"),
          "bnnflow bitstream {run}"),
    Stage("finn", step_finn, ("model.qonnx", "dataflow.onnx"), ("finn",), ("compile", "finn"), "bnnflow finn {run}",
          ("finn/output",)),
    Stage("edge", step_edge, ("model.qonnx", "dataflow.onnx", "verify/compile.npz", "verify/inputs.npy"),
          (*_EDGE_MODELS, "edge/export.json"), ("compile", "data"), "bnnflow edge export {run}"),
    Stage("bench", step_bench, _EDGE_MODELS, ("edge/bench.json", "edge/bench.png", "edge/float.onnx"), (),
          "bnnflow edge bench {run}"),
    Stage("bundle", step_bundle, (*_EDGE_MODELS, "edge/export.json"),
          ("edge/bundle-rpi.tar.gz", "edge/bundle-jetson.tar.gz"), ("data",), "bnnflow edge bundle {run}"),
]}
STEPS: dict[str, Step] = {name: stage.fn for name, stage in STAGES.items()}
DEFAULT_STEPS: list[str] = ["train", "export", "compile", "simulate", "rtl", "bitstream"]


def resolve_steps(names: list[str | Stage | Step]) -> list[Stage]:
    """Step names, stages, or plain callables (user-defined steps that declare no files) to stages."""
    resolved = []
    for item in names:
        if isinstance(item, Stage):
            resolved.append(item)
        elif callable(item):
            resolved.append(Stage(item.__name__.removeprefix("step_"), item))
        elif item in STEPS:
            resolved.append(STAGES[item])
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
    check_placement(cfg.train, method)
    data = load_data(cfg.data)
    method.prepare(build_model(cfg, data))
    if cfg.train.teacher:
        load_teacher(cfg.train.teacher, cfg.train.teacher_model, data, cfg.train.teacher_args)  # it must fit
    return cfg


# -- the run folder -----------------------------------------------------------------------------------------------

@contextmanager
def open_run(cfg: Config, root: Path, *, force: bool = False, replace: bool | None = None) -> Iterator[RunDir]:
    """Create or reopen the run folder ``root`` for ``cfg`` and hold its lock for the block.

    Reopening a run with the same configuration continues it. A run with another configuration (or, with
    ``replace``, any run) is kept unless ``force`` is given; then the files bnnflow wrote are removed, and only
    if the folder holds no file of anyone else's. A folder that is not a bnnflow run is never written into.
    """
    root = Path(root).absolute()
    if root.exists() and not root.is_dir():
        raise ConfigError(f"{root} is a file, not a folder; choose a folder for --out")
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"cannot create the run folder {root} ({err.strerror}); choose another --out") from None
    with run_lock(root):
        run = RunDir(root)
        _prepare(run, cfg, force, replace)
        yield run


def _prepare(run: RunDir, cfg: Config, force: bool, replace: bool | None) -> None:
    manifest = Manifest(run.root)
    if manifest.exists:
        before = run.read_config()
        differs = before.identity() != cfg.identity() if replace is None else replace
        if not differs and cfg != before:  # the same model reopened with other settings: say which
            out.info(f"recorded in {run.config_path}: {'; '.join(cfg.changes(before))}")
        if differs:
            if not force:
                raise ConfigError(f"{run.root} holds a run with a different configuration; choose another --out "
                                  "or pass --force to replace it")
            foreign = manifest.foreign()
            if foreign:
                raise ConfigError(f"--force: {run.root} holds {_some(foreign)}, which bnnflow did not write; move "
                                  "your files out of the folder first (nothing was deleted)")
            run.remove_stale_temporaries()
            manifest.remove_owned()
    else:
        others = [p.name for p in run.root.iterdir() if p.name != LOCK_NAME]
        if others:
            old = " (a config.toml without manifest.json: a run of an older bnnflow, or not a run)" \
                if run.config_path.is_file() else ""
            raise ConfigError(f"{run.root} exists and is not a bnnflow run{old}; choose an empty or new --out folder")
    run.remove_stale_temporaries()
    run.write_config(cfg)
    manifest.save()


def _some(files: list[str]) -> str:
    return files[0] + (f" and {len(files) - 1} more" if len(files) > 1 else "")


def prepare_run(cfg: Config, root: Path, *, force: bool = False) -> RunDir:
    """``open_run`` for callers that run their steps later (``run_steps`` takes the lock again)."""
    with open_run(cfg, root, force=force) as run:
        return run


# -- running -----------------------------------------------------------------------------------------------------

def run_steps(cfg: Config, run: RunDir, steps: list[str | Stage | Step], *, skip_current: bool = False) -> dict[str, Any]:
    """Run steps in order under the run's lock, recording each; re-raises the first failure after recording it.

    With ``skip_current``, a stage that is up to date (same inputs, intact outputs, last run succeeded) is skipped.
    """
    stages = resolve_steps(steps)
    with run_lock(run.root):
        run.read_summary()  # a damaged summary is refused before any stage runs, not after the first
        for stage in stages:
            manifest = Manifest(run.root)
            if skip_current:
                reason = out_of_date(stage.name, stage.keys, cfg, run, manifest)
                if reason is None:
                    out.info(f"[{stage.name}] skipped: up to date (its inputs and outputs are unchanged since it "
                             "last succeeded)")
                    continue
                if stage.name in manifest.stages:
                    out.info(f"[{stage.name}] runs again: {reason}")
            _run_stage(stage, cfg, run, manifest)
    return run.read_summary()


def _run_stage(stage: Stage, cfg: Config, run: RunDir, manifest: Manifest) -> None:
    out.info(f"[{stage.name}]")
    started = time.perf_counter()

    def failed(status: str, err: BaseException) -> None:
        entry: dict[str, Any] = {"status": status, "seconds": round(time.perf_counter() - started, 2)}
        if isinstance(err, BnnflowError):
            entry["error"] = str(err)
        run.record_stage(stage.name, entry)
        write_report(run)

    try:
        check_inputs(stage.name, stage.inputs, cfg, run, manifest)
        foreign = [rel for rel in manifest.foreign(list(stage.outputs)) if not under(rel, stage.keeps)]
        if foreign:
            raise ConfigError(f"{run.root} holds {_some(foreign)}, which bnnflow did not write and the {stage.name} "
                              "step would replace; move it out of the run folder")
    except BnnflowError as err:
        failed("failed", err)
        raise
    inputs = fingerprint(stage.keys, cfg, run)
    manifest.claim(stage.name, list(stage.outputs), stage.command)
    try:
        figures = stage.fn(cfg, run)
    except BaseException as err:
        status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        manifest.record(stage.name, status, inputs, list(stage.outputs))
        failed(status, err)
        raise
    manifest.record(stage.name, "ok", inputs, list(stage.outputs))
    run.record_stage(stage.name, {"status": "ok", "seconds": round(time.perf_counter() - started, 2), **figures})
    _mark_stale(cfg, run, manifest, stage.name)
    write_report(run)


def _mark_stale(cfg: Config, run: RunDir, manifest: Manifest, done: str) -> None:
    """Flag in summary.json the stages whose inputs the stage that just ran has changed."""
    for name, entry in run.read_summary().get("stages", {}).items():
        if name == done or entry.get("status") != "ok" or name not in manifest.stages:
            continue
        changed = first_change(manifest.stages[name].get("inputs", {}), cfg, run)
        if changed:
            run.record_stage(name, {**entry, "status": "stale", "stale_because": f"{changed} changed since it ran"})
