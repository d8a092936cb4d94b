"""The FINN stage of a run: ``RUN/finn/``, a FINN build directory for a Xilinx board, built when FINN is here.

The verification vectors come from bnnflow's own levels: the test inputs go through streamlined.onnx to the
accelerator's input codes, the bit-exact simulator runs the accelerator, and its outputs are mapped through the
graph's float tail (the logit scale) to what model.onnx outputs; with a label select they are the class index.
Those expected outputs are checked against model.qonnx under qonnx before FINN sees them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError, VerificationError
from bnnflow.hw.finn.boards import get_finn_board
from bnnflow.hw.finn.builddir import BuildSpec, write_build_dir
from bnnflow.hw.finn.input_codes import InputQuantToCodes, input_codes
from bnnflow.hw.finn.runner import IMAGE_HINT, collect_reports, find_finn, run_build
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.onnx_files import load_model
from bnnflow.pipeline.rundir import RunDir

#: expected scores may differ from model.qonnx's by float rounding of the scale only
SCORE_RTOL = 1e-5


def model_inputs(cfg: Config, run: RunDir, samples: int) -> np.ndarray:
    """Test inputs as model.qonnx takes them: the run's stored inputs (a compiled file) or its test split."""
    stored = run.verify_dir / "inputs.npy"
    if stored.is_file():
        images = np.load(stored)
    else:
        from bnnflow.pipeline.data import load_data, stack

        images = stack(load_data(cfg.data).test)[0].numpy()
    return images[:samples].astype(np.float32)


def graph_tail(streamlined: ModelWrapper, start: str) -> ModelWrapper | None:
    """The part of the streamlined graph after tensor ``start`` (the accelerator's output), or None if empty.

    (onnx.utils.Extractor would do this, but refuses graphs with quantization annotations.)
    """
    end = streamlined.graph.output[0].name
    if start == end:
        return None
    tail = copy.deepcopy(streamlined)
    graph = tail.graph
    live, keep = {start}, []
    for node in graph.node:
        if any(name in live for name in node.input):
            keep.append(node)
            live.update(node.output)
    missing = {n for node in keep for n in node.input if n and n not in live and tail.get_initializer(n) is None}
    if missing or end not in live:
        raise UnsupportedGraphError(f"the graph after the accelerator's output {start!r} needs tensors other than "
                                    f"it ({', '.join(sorted(missing)) or end}); FINN's verification cannot use it")
    del graph.node[:]
    graph.node.extend(keep)
    del graph.input[:]
    kept_info = [vi for vi in graph.value_info if vi.name != start]
    del graph.value_info[:]
    graph.value_info.extend(kept_info)
    graph.input.append(helper.make_tensor_value_info(start, TensorProto.FLOAT, streamlined.get_tensor_shape(start)))
    return tail


def expected_outputs(cfg: Config, run: RunDir, images: np.ndarray) -> tuple[np.ndarray, bool]:
    """What model.onnx (with TopK when the accelerator selects the label) must output: from the simulator."""
    streamlined = load_model(run.streamlined, "compile")
    dataflow = load_model(run.dataflow, "compile")
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    hw_out = dataflow.get_metadata_prop("bnnflow.streamlined_output")
    label = dataflow.get_metadata_prop("bnnflow.output_kind") == "label"
    codes = execute(streamlined, images, [hw_in])[hw_in].astype(np.int64)
    accel = Simulator(dataflow).run(codes)
    reference = execute(load_model(run.qonnx, "export"), images)
    reference = reference[next(iter(reference))].reshape(len(images), -1)
    if label:
        expected = accel.reshape(len(images), 1).astype(np.int64)
        agree = np.array_equal(expected[:, 0], reference.argmax(axis=1))
    else:
        tail = graph_tail(streamlined, hw_out)
        scores = accel.astype(np.float32)
        if tail is not None:
            scores = execute(tail, scores.reshape(-1, *tail.get_tensor_shape(hw_out)[1:]))[tail.graph.output[0].name]
        expected = scores.reshape(len(images), -1).astype(np.float32)
        agree = np.allclose(expected, reference, rtol=SCORE_RTOL, atol=1e-6)
    if not agree:
        raise VerificationError(f"finn: the simulator's outputs, mapped to model outputs, differ from model.qonnx's on "
                                f"{len(images)} test inputs; rerun `bnnflow compile {run.root}`")
    return expected, label


def finn_run(cfg: Config, run: RunDir, build: bool = True, estimate_only: bool = False) -> dict[str, Any]:
    """Write RUN/finn and, when FINN is installed, run its builder there and collect what it made."""
    settings = cfg.finn
    board = get_finn_board(settings.board)
    clock = settings.clock_mhz or cfg.compile.clock_mhz or 100.0
    dataflow = load_model(run.dataflow, "compile")
    images = model_inputs(cfg, run, settings.verify_samples)
    expected, label = expected_outputs(cfg, run, images) if len(images) else (np.zeros((0,)), False)
    if settings.target_fps <= 0 and cfg.compile.board.lower() != board.name.lower():
        out.info(f"finn: the folding is bnnflow's for {cfg.compile.board} (compile.board); for one made for "
                 f"{board.name}, recompile with --board or set finn.target_fps")
    spec = BuildSpec(board, clock, settings.target_fps, label)
    folder = run.root / "finn"
    source = {"run": str(run.root), "model": run.qonnx.name, "dataflow": run.dataflow.name}
    model = load_model(run.qonnx, "export")
    codes = input_codes(model, images)
    if codes is not None:
        model = model.transform(InputQuantToCodes())
        source["input"] = "the input quantizer's integer codes (its Quant became a Mul by the scale)"
    written = write_build_dir(folder, spec, model, dataflow, images if codes is None else codes, expected, source)
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


def with_finn_options(cfg: Config, **options: Any) -> Config:
    """``cfg`` with the [finn] fields given (not None) replaced; values are validated like the config file's."""
    return cfg.with_overrides({f"finn.{k}": v for k, v in options.items() if v is not None})


def board_check(run: RunDir, host: str | None) -> dict[str, Any] | None:
    """Print or run the PYNQ board check of RUN/finn's deployment package."""
    from bnnflow.hw.finn.deploy import check_on_board

    return check_on_board(Path(run.root) / "finn", host)
