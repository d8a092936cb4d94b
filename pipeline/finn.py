"""The FINN stage of a run: ``RUN/finn/``, a FINN build directory for a Xilinx board, built when FINN is here.

FINN takes model.qonnx as it is (bnnflow's models quantize their input behind a ReLU, the form FINN's QONNX
conversion takes an unsigned quantizer in), so the verification inputs are the model's own: the test images, with
any value exactly halfway between two input codes put on the code model.qonnx rounds it to (FINN rounds such ties
up, model.qonnx to even; ``off_rounding_ties``). The
expected outputs come from bnnflow's own levels (``pipeline/golden.py``): the simulator's outputs on them, mapped
to what model.onnx outputs and checked against model.qonnx before FINN sees them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import get_by_name

from bnnflow.errors import VerificationError
from bnnflow.hw.finn.boards import get_finn_board
from bnnflow.hw.finn.builddir import BuildSpec, write_build_dir
from bnnflow.hw.finn.runner import IMAGE_HINT, collect_reports, find_finn, run_build
from bnnflow.hw.finn.support import check_quantizers, finn_layers
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.golden import expected_outputs, model_inputs
from bnnflow.pipeline.onnx_files import load_model
from bnnflow.pipeline.rundir import RunDir


def finn_run(cfg: Config, run: RunDir, build: bool = True, estimate_only: bool = False) -> dict[str, Any]:
    """Write RUN/finn and, when FINN is installed, run its builder there and collect what it made."""
    settings = cfg.finn
    board = get_finn_board(settings.board)
    clock = settings.clock_mhz or cfg.compile.clock_mhz or 100.0
    dataflow = load_model(run.dataflow, "compile")
    model = load_model(run.qonnx, "export")
    check_quantizers(model)
    finn_layers(dataflow, folding=False)  # a network FINN has no layers for is refused before anything is computed
    images, ties = off_rounding_ties(model, model_inputs(cfg, run, settings.verify_samples))
    if ties:
        out.info(f"finn: {ties} input values of the verification images lie exactly between two codes of the input "
                 "quantizer, which model.qonnx rounds to even and FINN's thresholds round up; FINN gets them on the "
                 "code model.qonnx rounds them to (model.qonnx's outputs are the same)")
    expected, label = expected_outputs(cfg, run, images) if len(images) else (np.zeros((0,)), False)
    if settings.target_fps <= 0 and cfg.compile.board.lower() != board.name.lower():
        out.info(f"finn: the folding is bnnflow's for {cfg.compile.board} (compile.board); for one made for "
                 f"{board.name}, recompile with --board or set finn.target_fps")
    spec = BuildSpec(board, clock, settings.target_fps, label)
    folder = run.root / "finn"
    source = {"run": str(run.root), "model": run.qonnx.name, "dataflow": run.dataflow.name}
    written = write_build_dir(folder, spec, model, dataflow, images, expected, source)
    figures: dict[str, Any] = {"board": board.name, "part": board.part, "shell_flow": board.shell_flow,
                               "clock_mhz": clock, "folding": written["folding"], "verify_samples": len(images),
                               "build_dir": str(folder)}
    out.info(f"finn: wrote the FINN build directory {folder} for {board.name} ({board.part}) at {clock:g} MHz")
    if not build:
        return {**figures, "built": False}
    python = find_finn()
    if python is None:
        out.info(f"finn: FINN is not installed here, so nothing was built; build in the bnnflow image: "
                 f"`{IMAGE_HINT.format(run=run.root)}`, or run `python {folder / 'build.py'}` in a FINN environment")
        return {**figures, "built": False, "reason": "FINN is not installed"}
    out.info(f"finn: building with {python}{' (estimates only)' if estimate_only else ''}; log in "
             f"{folder / 'build.log'}")
    run_build(folder, python, estimate_only)
    reports = collect_reports(folder)
    if reports.get("verification_failed"):
        raise VerificationError(f"finn: FINN's verification failed at {', '.join(reports['verification_failed'])}; "
                                f"see {folder / 'output' / 'verification_output'}")
    return {**figures, "built": True, "estimate_only": estimate_only, **reports}


def off_rounding_ties(model: ModelWrapper, images: np.ndarray) -> tuple[np.ndarray, int]:
    """``images`` with every value that lies exactly halfway between two codes of the input quantizer (a Quant
    rounding half to even, on the graph input or behind a ReLU on it) replaced by the code it rounds to, and how
    many were. FINN's QONNX conversion makes the quantizer thresholds ``x >= (k - 1/2) * scale``, which round ties
    up: on such an input FINN's model and model.qonnx differ, on no other. Images of 8-bit pixels (k / 255) never
    tie on bnnflow's power-of-two input steps; resampled ones (the digits upsampled to 32 x 32) do."""
    consumer = model.find_consumer(model.graph.input[0].name)
    if consumer is not None and consumer.op_type == "Relu":
        consumer = model.find_consumer(consumer.output[0])
    if consumer is None or consumer.op_type != "Quant":
        return images, 0
    scale, zero = (model.get_initializer(name) for name in consumer.input[1:3])
    mode = get_by_name(consumer.attribute, "rounding_mode")
    if scale is None or zero is None or scale.size != 1 or np.any(zero != 0) or (mode and mode.s != b"ROUND"):
        return images, 0
    step = float(scale.reshape(()))
    codes = images.astype(np.float64) / step
    ties = (codes - np.floor(codes) == 0.5) & (images > 0)
    fixed = np.where(ties, np.round(codes) * step, images).astype(images.dtype)
    return fixed, int(ties.sum())


def with_finn_options(cfg: Config, **options: Any) -> Config:
    """``cfg`` with the [finn] fields given (not None) replaced; values are validated like the config file's."""
    return cfg.with_overrides({f"finn.{k}": v for k, v in options.items() if v is not None})


def board_check(run: RunDir, host: str | None) -> dict[str, Any] | None:
    """Print or run the PYNQ board check of RUN/finn's deployment package."""
    from bnnflow.hw.finn.deploy import check_on_board

    return check_on_board(Path(run.root) / "finn", host)
