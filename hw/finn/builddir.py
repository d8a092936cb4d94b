"""A FINN build directory: what FINN's builder needs to build a run's network, written so a user can read it.

Layout (FINN's own ``build_dataflow -d`` layout plus bnnflow's additions)::

    model.onnx                   the run's model.qonnx; an unsigned input quantizer becomes a Mul by its scale
                                 and the input takes its integer codes (FINN converts only signed ones)
    dataflow_build_config.json   FINN's DataflowBuildConfig (board, part, clock, outputs, verification)
    folding_config.json          bnnflow's folding as FINN's per-layer config (absent with target_fps)
    input.npy                    verification inputs, as model.onnx takes them
    expected_output.npy          what model.onnx should give for them: bnnflow's simulator outputs, mapped
                                 through the float tail of the graph (or the class index with a label select)
    bnnflow.json                 what build.py needs besides FINN's config, and where it all came from
    build.py                     runs FINN's builder on this folder (bnnflow/hw/finn/build_script.py)

Layer names: FINN names its layers ``<op>_<impl>_<i>`` after ``step_specialize_layers``, counting per op type
in graph order; its layers come out in the same order as bnnflow's, one for one (checked by running FINN's
builder on TFC, CNV and the digits default, see the FINN issue note). Binary-weight MVAUs are always HLS
(FINN's RTL MVAU needs weights and inputs of 4 bits or more); sliding windows and thresholds default to RTL.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.finn.boards import FinnBoard
from bnnflow.hw.ops.base import DOMAIN
from bnnflow.nodes import node_ref

BUILD_SCRIPT = Path(__file__).with_name("build_script.py")

#: bnnflow op -> (the FINN layer it becomes after step_specialize_layers, the folding attributes it takes)
FINN_LAYERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "MVTU": ("MVAU_hls", ("PE", "SIMD")),
    "SlidingWindow": ("ConvolutionInputGenerator_rtl", ("SIMD",)),
    "StreamingMaxPool": ("StreamingMaxPool_hls", ("PE",)),
    "Thresholding": ("Thresholding_rtl", ("PE",)),
    "LabelSelect": ("LabelSelect_hls", ("PE",)),
}

#: FINN outputs of a full build for each shell flow (DataflowOutputType values)
FULL_OUTPUTS = ["estimate_reports", "stitched_ip", "bitfile", "pynq_driver", "deployment_package"]
#: verification steps of a full build (VerificationStepType values); the *_python ones need no Xilinx tools
FULL_VERIFY = ["initial_python", "streamlined_python", "folded_hls_cppsim", "stitched_ip_rtlsim"]


@dataclass(frozen=True)
class BuildSpec:
    """What a FINN build directory is written from."""

    board: FinnBoard
    clock_mhz: float
    target_fps: float = 0.0  #: > 0: FINN folds for this rate; 0: bnnflow's folding from dataflow.onnx
    label_select: bool = False


def finn_folding(dataflow: ModelWrapper) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]]]:
    """bnnflow's folding as FINN's folding config, and the (bnnflow layer, FINN layer) pairs it was made from;
    a graph that breaks the ops' contract (``bnnflow.hw.check``) has no folding to take."""
    check_dataflow(dataflow)
    config: dict[str, dict[str, Any]] = {"Defaults": {}}
    pairs = []
    counters: Counter[str] = Counter()
    for node in dataflow.graph.node:
        if node.domain != DOMAIN:
            continue  # reshapes between layers: FINN has no layer for them either
        if node.op_type not in FINN_LAYERS:
            raise UnsupportedGraphError(f"node {node_ref(dataflow, node)} has no FINN layer to map its folding to; "
                                        "use `bnnflow finn RUN --target-fps N` to let FINN fold")
        finn_type, attrs = FINN_LAYERS[node.op_type]
        name = f"{finn_type}_{counters[finn_type]}"
        counters[finn_type] += 1
        op = getCustomOp(node)
        config[name] = {attr: int(op.get_nodeattr(attr)) for attr in attrs}
        pairs.append((node.name, name))
    return config, pairs


def build_config(spec: BuildSpec, folding: bool, verify: bool) -> dict[str, Any]:
    """FINN's DataflowBuildConfig as JSON (enum fields by value, paths relative to the build directory)."""
    board = spec.board
    config: dict[str, Any] = {
        "output_dir": "output",
        "synth_clk_period_ns": round(1000.0 / spec.clock_mhz, 6),
        "board": board.name,
        "shell_flow_type": board.shell_flow,
        "fpga_part": board.part,
        "generate_outputs": FULL_OUTPUTS,
        "save_intermediate_models": True,
        "enable_build_pdb_debug": False,
        "verbose": False,
    }
    if board.platform:
        config["vitis_platform"] = board.platform
    if folding:
        config["folding_config_file"] = "folding_config.json"
    else:
        config["target_fps"] = int(spec.target_fps)
    if verify:
        config.update(verify_steps=FULL_VERIFY, verify_input_npy="input.npy",
                      verify_expected_output_npy="expected_output.npy")
    return config


def write_build_dir(folder: Path, spec: BuildSpec, model: ModelWrapper, dataflow: ModelWrapper, inputs: np.ndarray,
                    expected: np.ndarray, source: dict[str, Any]) -> dict[str, Any]:
    """Write the build directory to ``folder`` (whole or not at all); returns bnnflow.json's content.

    ``model`` is the QONNX model FINN builds (see ``input_codes``), ``inputs`` what it takes.
    """
    files: dict[str, str] = {}
    folding = spec.target_fps <= 0
    settings: dict[str, Any] = {
        "label_select": spec.label_select,
        "board": spec.board.name,
        "clock_mhz": spec.clock_mhz,
        "folding": "bnnflow" if folding else f"FINN, target_fps {int(spec.target_fps)}",
        "verify_samples": len(inputs),
        "source": source,
    }
    if folding:
        config, pairs = finn_folding(dataflow)
        files["folding_config.json"] = json.dumps(config, indent=2) + "\n"
        settings["layers"] = [{"bnnflow": ours, "finn": theirs} for ours, theirs in pairs]
    files["dataflow_build_config.json"] = json.dumps(build_config(spec, folding, len(inputs) > 0), indent=2) + "\n"
    files["bnnflow.json"] = json.dumps(settings, indent=2) + "\n"
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))  # a killed run's: removed
    try:
        for name, text in files.items():
            (tmp / name).write_text(text)
        model.save(str(tmp / "model.onnx"))
        shutil.copyfile(BUILD_SCRIPT, tmp / "build.py")
        np.save(tmp / "input.npy", inputs.astype(np.float32))
        np.save(tmp / "expected_output.npy", expected)
        _replace(folder, tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return settings


def _replace(folder: Path, new: Path) -> None:
    """Swap ``new`` in for ``folder``, carrying over FINN's ``output/`` of an earlier build (hours of Vivado)."""
    if not folder.exists():
        new.rename(folder)
        return
    old = folder.with_name(f".{folder.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    folder.rename(old)
    if (old / "output").is_dir():
        (old / "output").rename(new / "output")
    new.rename(folder)
    shutil.rmtree(old)
