"""The compile stage: ``model.qonnx`` -> ``streamlined.onnx`` -> folded ``dataflow.onnx`` + estimates.

Two layers, as qonnx's utilities have: ``compile_model`` works on graphs in memory, ``compile_run`` on a run
directory. Verification runs qonnx's executor on the test split through all three graphs and compares:
``model.qonnx`` and ``streamlined.onnx`` outputs must be identical floats; ``dataflow.onnx``, fed the
streamlined graph's tensor at the hardware boundary (the integer codes the accelerator receives), must
reproduce its tensor at the other boundary (the integer accumulators, or the label) exactly.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from itertools import takewhile
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import ConfigError, DataError, UnsupportedGraphError, VerificationError
from bnnflow.hw.boards import get_board
from bnnflow.hw.convert import output_to_accelerator, to_accelerator, to_dataflow
from bnnflow.hw.estimates import estimate
from bnnflow.hw.folding import fold_for_board, fold_for_fps
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.config import CompileConfig, Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.data import load_data, stack
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import compare_outputs
from bnnflow.pipeline.onnx_files import load_model, save_model
from bnnflow.pipeline.report import save_png
from bnnflow.pipeline.rundir import RunDir, atomic_path, atomic_write_text


def clock_of(cfg: CompileConfig) -> float:
    """The accelerator clock in MHz: the configured one, or the board's default."""
    return cfg.clock_mhz or get_board(cfg.board).clock_mhz


def compile_model(model: ModelWrapper, cfg: CompileConfig) -> tuple[ModelWrapper, ModelWrapper, dict[str, Any]]:
    """Streamline, convert to dataflow and fold; returns (streamlined, dataflow, estimates)."""
    board = get_board(cfg.board)
    clock = clock_of(cfg)
    streamlined = streamline_model(model)
    dataflow = to_dataflow(streamlined, label_select=cfg.label_select)
    if cfg.target_fps > 0:
        folding = fold_for_fps(dataflow, cfg.target_fps, clock, board.fabric)
    else:
        folding = fold_for_board(dataflow, board, clock, cfg.fps_cap)
    estimates = estimate(dataflow, clock, board.fabric)
    estimates["folding"] = folding
    ffs_fit = estimates["flip_flops"] is None or estimates["flip_flops"] <= board.flip_flops
    estimates["board"] = {"name": board.name, "part": board.part, "luts": board.luts, "ram_blocks": board.ram_blocks,
                          "flip_flops": board.flip_flops,
                          "fits": estimates["luts"] <= board.luts and estimates["ram_blocks"] <= board.ram_blocks
                          and ffs_fit}
    if cfg.target_fps > 0:
        folding["met"] = estimates["frames_per_second"] >= cfg.target_fps
    return streamlined, dataflow, estimates


def verify_compile(model: ModelWrapper, streamlined: ModelWrapper, dataflow: ModelWrapper, images: np.ndarray,
                   batch: int = 256) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Run all three graphs on ``images``; returns (comparison figures, the compared arrays). The accelerator's
    arrays are in its own layout (channels last, bits for +-1), as the simulator and the RTL produce them."""
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    hw_out = dataflow.get_metadata_prop("bnnflow.streamlined_output")
    reference = execute(model, images, batch=batch, progress="model.qonnx")[model.graph.output[0].name]
    out_name = streamlined.graph.output[0].name
    levels = execute(streamlined, images, [out_name, hw_in, hw_out], batch=batch, progress="streamlined.onnx")
    hw_input = to_accelerator(dataflow, levels[hw_in])
    hardware = execute(dataflow, hw_input, batch=batch, progress="dataflow.onnx")[dataflow.graph.output[0].name]
    expected = levels[hw_out]
    if dataflow.get_metadata_prop("bnnflow.output_kind") == "label":
        expected = expected.argmax(axis=-1)[:, None].astype(np.float32)
    expected = output_to_accelerator(dataflow, expected)
    streamlined_cmp = compare_outputs(reference, levels[out_name])
    hardware_cmp = compare_outputs(expected.reshape(len(images), -1), hardware.reshape(len(images), -1))
    figures = {
        "verified_samples": len(images),
        "streamlined_mismatches": streamlined_cmp["mismatches"],
        "dataflow_mismatches": hardware_cmp["mismatches"],
    }
    arrays = {"qonnx": reference, "streamlined": levels[out_name], "hw_input": hw_input.astype(np.int32),
              "hw_expected": expected.astype(np.int64), "hw_output": hardware.astype(np.int64)}
    return figures, arrays


def plot_estimates(estimates: dict[str, Any], path) -> None:
    """Cycles per frame and LUTs per layer, the bottleneck highlighted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    layers = estimates["layers"]
    names = [layer["name"] for layer in layers]
    colors = ["#c0392b" if n == estimates["bottleneck"] else "#2e86c1" for n in names]
    fig, (ax_cycles, ax_luts) = plt.subplots(1, 2, figsize=(11, 0.35 * len(names) + 1.8))
    ax_cycles.barh(names, [layer["cycles"] for layer in layers], color=colors)
    ax_cycles.set_xlabel("cycles per frame")
    ax_cycles.set_title(f"{estimates['frames_per_second']:,.0f} frames/s at {estimates['clock_mhz']:g} MHz")
    ax_cycles.invert_yaxis()
    ax_luts.barh(names, [layer["luts"] for layer in layers], color="#7d3c98")
    ax_luts.set_xlabel(f"LUTs ({estimates['fabric']})")
    ax_luts.set_title(f"{estimates['luts']:,} LUTs, {estimates['ram_blocks']} block RAMs")
    ax_luts.invert_yaxis()
    save_png(fig, path)


def compile_run(cfg: Config, run: RunDir, images: np.ndarray | None = None) -> dict[str, Any]:
    """The compile step of a run: writes streamlined.onnx, dataflow.onnx and compile/estimates.{json,png}.

    Verification uses ``images`` when given (a model compiled from a file has no data set), else the run's test
    split, cut to ``compile.verify_samples``.
    """
    model = load_model(run.qonnx, "export")
    streamlined, dataflow, estimates = compile_model(model, cfg.compile)
    if not estimates["board"]["fits"]:
        out.info(f"warning: {estimates['folding'].get('problem') or 'the design does not fit ' + cfg.compile.board}; "
                 "it still gets its RTL and cosimulation, and the bitstream stage will refuse it")
    save_model(streamlined, run.streamlined)
    save_model(dataflow, run.dataflow)
    atomic_write_text(run.compile_dir / "estimates.json", json.dumps(estimates, indent=2) + "\n")
    plot_estimates(estimates, run.compile_dir / "estimates.png")
    figures: dict[str, Any] = {
        "hw_layers": len(estimates["layers"]),
        "frames_per_second": round(estimates["frames_per_second"], 1),
        "clock_mhz": estimates["clock_mhz"],
        "bottleneck": estimates["bottleneck"],
        "luts": estimates["luts"],
        "flip_flops": estimates["flip_flops"],
        "ram_blocks": estimates["ram_blocks"],
        "board": cfg.compile.board,
        "fits_board": estimates["board"]["fits"],
    }
    if estimates["folding"].get("over_timing_limit"):
        wide = estimates["folding"]["over_timing_limit"]
        out.info(f"warning: {', '.join(wide)} {'is' if len(wide) == 1 else 'are'} folded wider than the "
                 f"{estimates['fabric'].upper()}'s {estimates['folding']['max_array_bits']:,} product bits per cycle, "
                 "where designs were measured to miss 100 MHz; lower compile.target_fps or compile.clock_mhz if "
                 "the bitstream misses its clock")
    if "stopped" in estimates["folding"]:  # board folding: why the design is no faster
        figures["folding_stopped"] = estimates["folding"]["stopped"]
        out.info(f"folded for {cfg.compile.board} at {estimates['frames_per_second']:,.0f} frames/s: no faster, as "
                 f"{figures['folding_stopped']}")
    if not cfg.compile.verify:
        return figures
    if images is None:
        images = stack(load_data(cfg.data).test)[0].numpy()
    if cfg.compile.verify_samples:
        images = images[: cfg.compile.verify_samples]
    out.info(f"verifying model.qonnx == streamlined.onnx == dataflow.onnx on {len(images)} samples")
    comparison, arrays = verify_compile(model, streamlined, dataflow, images)
    figures.update(comparison)
    run.verify_dir.mkdir(exist_ok=True)
    with atomic_path(run.verify_dir / "compile.npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    if comparison["streamlined_mismatches"] or comparison["dataflow_mismatches"]:
        raise VerificationError(
            f"compile: {comparison['streamlined_mismatches']} streamlined and {comparison['dataflow_mismatches']} "
            f"dataflow outputs of {len(images)} differ from the level before; arrays in {run.verify_dir / 'compile.npz'}"
        )
    return figures


@contextmanager
def import_run(source: Path, root: Path, cfg: Config, images: np.ndarray | None, force: bool = False
               ) -> Iterator[RunDir]:
    """Hold a run folder holding the QONNX file ``source`` (made elsewhere, e.g. a Brevitas export), ready for
    ``compile_run``; the import is the run's first stage.

    The model is normalised (``qonnx_import.import_qonnx``: legacy domains, missing opset imports, old opsets,
    other spellings of the same ops, channels-last graphs, qonnx's ``cleanup_model``, the strict ONNX check) and
    written as ``model.qonnx``; the import's entry in summary.json lists what it changed. Without ``images``,
    verification draws ``compile.verify_samples`` (at most 256) uniform random inputs in [0, 1), seeded, in the
    model's input shape; they are kept in ``verify/inputs.npy``. A folder holding a run of another model (another
    file's content, or a trained run) is not replaced without ``force``; one imported from the same content is
    reopened with the new settings.
    """
    from bnnflow.pipeline.manifest import Manifest, file_sha256
    from bnnflow.pipeline.qonnx_import import import_qonnx
    from bnnflow.pipeline.steps import Stage, open_run, run_steps

    model, changes = import_qonnx(source)
    shape = model.get_tensor_shape(model.graph.input[0].name)[1:]
    explicit_inputs = images is not None
    if images is None:
        count = min(cfg.compile.verify_samples or 256, 256)
        images = np.random.default_rng(0).random((count, *shape), dtype=np.float32)
    elif tuple(images.shape[1:]) != tuple(shape):
        raise DataError(f"inputs have shape {images.shape}, but {source} takes (N, {', '.join(map(str, shape))})")
    sha = file_sha256(source)
    existing = RunDir(root)
    stages = existing.read_summary().get("stages", {}) if existing.summary_path.is_file() else {}
    previous = stages.get("import", {})
    same = previous.get("source_sha256") == sha and "train" not in stages
    if stages and not same and not force:
        what = f"a run compiled from {previous['source']}" if previous else "a trained run"
        raise ConfigError(f"{root} holds {what}, another model than {source}; pass --force to replace it, or "
                          "choose another --out")
    created = [folder for folder in takewhile(lambda p: not p.exists(), [Path(root), *Path(root).parents])]
    try:
        with open_run(cfg, root, force=force, replace=not same) as run:
            if not same or explicit_inputs:
                def step_import(cfg: Config, run: RunDir) -> dict[str, Any]:
                    """Write the normalised model and the verification inputs."""
                    for change in changes:
                        out.info(f"[import] {change}")
                    save_model(model, run.qonnx)
                    with atomic_path(run.verify_dir / "inputs.npy") as tmp:
                        with open(tmp, "wb") as f:
                            np.save(f, images.astype(np.float32))
                    return {"source": str(source), "source_sha256": sha, "samples": len(images), "changes": changes}

                run_steps(cfg, run, [Stage("import", step_import, (), ("model.qonnx", "verify/inputs.npy"), (),
                                           f"bnnflow compile {source} --out {{run}} --force")])
            try:
                yield run
            except UnsupportedGraphError:
                if created:  # a model the compiler refuses leaves no run behind, as a bad config does
                    Manifest(run.root).remove_owned()
                raise
    finally:
        for folder in created:
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
