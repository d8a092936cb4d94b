"""A FINN build directory: what FINN's builder needs to build a run's network, written so a user can read it.

Layout (FINN's own ``build_dataflow -d`` layout plus bnnflow's additions)::

    model.onnx                   the run's model.qonnx, as it is: FINN's QONNX conversion takes it
    dataflow_build_config.json   FINN's DataflowBuildConfig (board, part, clock, outputs, verification)
    input.npy                    verification inputs, as model.onnx takes them (the float images)
    expected_output.npy          what model.onnx should give for them: bnnflow's simulator outputs, mapped
                                 through the float tail of the graph (or the class index with a label select)
    bnnflow.json                 what build.py needs besides FINN's config (bnnflow's layers, the FINN layers
                                 each may become and their folding), and where it all came from
    build.py                     runs FINN's builder on this folder (bnnflow/hw/finn/build_script.py)

FINN's layer names are not known until FINN builds: build.py reads them off FINN's graph after
``step_specialize_layers`` and writes ``output/folding_config.json`` under them (see ``support``).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.hw.finn.boards import FinnBoard
from bnnflow.hw.finn.support import finn_layers

BUILD_SCRIPT = Path(__file__).with_name("build_script.py")

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


def build_config(spec: BuildSpec, verify: bool) -> dict[str, Any]:
    """FINN's DataflowBuildConfig as JSON (enum fields by value, paths relative to the build directory); with
    bnnflow's folding, build.py adds the folding config it writes from FINN's graph."""
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
    if spec.target_fps > 0:
        config["target_fps"] = int(spec.target_fps)
    if verify:
        config.update(verify_steps=FULL_VERIFY, verify_input_npy="input.npy",
                      verify_expected_output_npy="expected_output.npy")
    return config


def write_build_dir(folder: Path, spec: BuildSpec, model: ModelWrapper, dataflow: ModelWrapper, inputs: np.ndarray,
                    expected: np.ndarray, source: dict[str, Any]) -> dict[str, Any]:
    """Write the build directory to ``folder`` (whole or not at all); returns bnnflow.json's content.

    ``model`` is the QONNX model FINN builds, ``inputs`` what it takes; a network FINN has no layers for is
    refused before anything is written.
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
        "layers": finn_layers(dataflow, folding),
    }
    files["dataflow_build_config.json"] = json.dumps(build_config(spec, len(inputs) > 0), indent=2) + "\n"
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
