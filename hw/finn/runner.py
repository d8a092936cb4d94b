"""Running a FINN build directory's build.py with a FINN installation, and reading back what FINN made.

FINN is found as ``FINN_PYTHON`` (an interpreter that imports FINN; the Docker image sets it to FINN's own
virtual environment, whose numpy and onnx pins differ from bnnflow's) or, failing that, in bnnflow's own
interpreter. Without either, the build directory is all there is, and the caller says how to run it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from bnnflow.errors import ToolchainError, UnsupportedGraphError
from bnnflow.pipeline.console import out

#: what FINN's log says when a step needs the Xilinx tools and they are not there
XILINX_MISSING = ("KeyError: 'HLS_PATH'", "vitis_hls not found", "vivado not found", "KeyError: 'XILINX_VIVADO'")

IMAGE_HINT = ("docker run --rm -v \"$PWD:/work\" -v /tools/Xilinx:/tools/Xilinx -e FINN_XILINX_PATH=/tools/Xilinx "
              "-e FINN_XILINX_VERSION=2022.2 bnnflow finn {run}")


def find_finn() -> str | None:
    """The Python interpreter to run FINN with, or None when FINN is not installed."""
    configured = os.environ.get("FINN_PYTHON")
    if configured:
        if not Path(configured).is_file():
            raise ToolchainError(f"FINN_PYTHON={configured} does not exist; point it at the Python of a FINN "
                                 "installation or unset it")
        return configured
    if importlib.util.find_spec("finn") is not None and importlib.util.find_spec("finn.builder") is not None:
        return sys.executable
    return None


def run_build(folder: Path, python: str, estimate_only: bool) -> None:
    """Run ``folder/build.py``; FINN's step lines are shown as progress, everything goes to build.log. A layer of
    bnnflow's that FINN's graph lacks is an ``UnsupportedGraphError``, any other failure a ``ToolchainError``."""
    folder = Path(folder).absolute()  # FINN runs inside it; its build folder must not be relative to that
    command = [python, "build.py"] + (["--estimate"] if estimate_only else [])
    env = {**os.environ, "FINN_BUILD_DIR": os.environ.get("FINN_BUILD_DIR", str(folder / "finn_tmp"))}
    Path(env["FINN_BUILD_DIR"]).mkdir(parents=True, exist_ok=True)
    log = folder / "build.log"
    last = ""
    with open(log, "w") as f:
        process = subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True, bufsize=1)
        assert process.stdout is not None
        for line in process.stdout:
            f.write(line)
            if "Running step:" in line:
                out.info("finn: " + line.split("Running step:", 1)[1].strip())
            if line.strip():
                last = line.strip()
        code = process.wait()
    if code != 0:
        text = log.read_text(errors="replace")
        refused = re.findall(r"^BnnflowError: (.*)$", text, re.MULTILINE)  # build.py's: FINN lacks a layer
        if refused:
            raise UnsupportedGraphError(f"FINN cannot build this network: {refused[-1]}; the whole log is {log}")
        errors = re.findall(r"^(?:\w+\.)*\w*(?:Error|Exception): .*$", text, re.MULTILINE)
        cause = (errors[-1] if errors else last)[:300]
        hint = ""
        missing = [mark for mark in XILINX_MISSING if mark in text]
        if missing:
            cause = missing[0]
            hint = (" (Vivado / Vitis HLS are not on the path: mount them and set FINN_XILINX_PATH and "
                    "FINN_XILINX_VERSION, or build only the estimates with --estimate)")
        raise ToolchainError(f"FINN's build failed (exit {code}): {cause}{hint}; the whole log is {log}")


def collect_reports(folder: Path) -> dict[str, Any]:
    """FINN's reports and artifacts in ``folder/output``, as summary figures (only what the build made)."""
    output = folder / "output"
    report = output / "report"
    figures: dict[str, Any] = {}

    def load(name: str) -> dict[str, Any] | None:
        path = report / name
        return json.loads(path.read_text()) if path.is_file() else None

    performance = load("estimate_network_performance.json")
    if performance:
        figures["estimated_fps"] = round(performance["estimated_throughput_fps"], 1)
        figures["estimated_latency_ns"] = performance["estimated_latency_ns"]
        figures["bottleneck"] = performance["max_cycles_node_name"]
        figures["bottleneck_cycles"] = performance["max_cycles"]
    resources = load("estimate_layer_resources.json")
    if resources and "total" in resources:
        figures["estimated_resources"] = {k: v for k, v in resources["total"].items() if not k.endswith("efficiency")}
    synthesis = load("post_synth_resources.json")
    if synthesis:
        figures["post_synthesis_resources"] = synthesis.get("(top)", synthesis)
    for name, path in (("bitfile", output / "bitfile"), ("pynq_driver", output / "driver"),
                       ("deployment_package", output / "deploy")):
        if path.is_dir() and any(path.iterdir()):
            figures[name] = str(path.relative_to(folder.parent))
    verification = output / "verification_output"
    if verification.is_dir():
        results = sorted(p.name for p in verification.glob("verify_*"))
        figures["verification_failed"] = [p for p in results if "FAIL" in p]
        figures["verification_passed"] = sum("SUCCESS" in p for p in results)
    return figures
