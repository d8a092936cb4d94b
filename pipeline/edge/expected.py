"""What a deploy bundle's models must output on its sample inputs (``expected.json``), and how close is equal.

``reference.onnx`` and ``bitpacked.onnx`` are exact, so their expectation is one of bnnflow's own levels: the
simulator's outputs (``simulated.run_simulator_outputs``) or, for a network without a hardware form, model.qonnx's under
qonnx, within the export check's tolerance (float rounding of the logit scale, or of the float layers).

``int8.onnx`` requantizes every binary layer's accumulator to 8 bits, which no bnnflow level computes: its
expectation is its own output under ONNX Runtime here, on CPU. Two differences on a board are legitimate. Its float
layers may round differently: ONNX Runtime 1.31.1's aarch64 wheel under qemu-user as Cortex-A72 and A76
(Raspberry Pi 4 and 5) gave the x86 int8 outputs bit for bit for the digits MLP (360 test inputs) and a CNV, and
within 4.6e-7 of the largest score for a Bi-Real-18 (the last two with random weights). And another build may
break the requantization's rounding ties the other way (its multiplier ``s_in * s_w / s_out`` computed in another
order, an ulp apart): nudging those scales by 1e-6 moved 35 of the digits run's 360 outputs, by up to 1.6 % of
their largest score, and no label. So each sample's int8 tolerance is twice what its scores move under that
nudge either way, and at least the float tolerance. Another model, a broken kernel or other inputs move scores
far past it (and run.py's sha256 check stops an altered model file before it runs).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import VerificationError
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.edge import runtime
from bnnflow.pipeline.edge.bundle_runner import differing
from bnnflow.pipeline.edge.simulated import run_simulator_outputs
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import FLOAT_RTOL, is_integer_network
from bnnflow.pipeline.golden import SCORE_RTOL
from bnnflow.pipeline.onnx_files import load_model
from bnnflow.pipeline.rundir import RunDir

#: relative nudge of the int8 requantization scales: past the float32 rounding of any order of computing them
NUDGE = 1e-6
#: absolute floor of every tolerance, for a sample whose scores are all 0
ATOL = 1e-6


def entry(against: str, exact: bool, labels: np.ndarray, scores: np.ndarray | None = None,
          tolerance: np.ndarray | None = None) -> dict[str, Any]:
    """One model's record: what it is compared with, the labels, and the scores with a tolerance per sample
    (None where the accelerator selects the label itself, which leaves labels only)."""
    return {"against": against, "exact": exact, "labels": [int(v) for v in labels],
            "scores": None if scores is None else _floats(scores),
            "tolerance": None if tolerance is None else _floats(tolerance)}


def _floats(values: np.ndarray) -> list:
    """float32 values as the shortest decimals that read back to the same float32 (a readable file)."""
    array = np.asarray(values, np.float32)
    return [_floats(row) for row in array] if array.ndim > 1 else [float(str(v)) for v in array]


def _tolerance(scores: np.ndarray, rtol: float) -> np.ndarray:
    return rtol * np.abs(scores).max(axis=1) + ATOL


def exact_expectation(cfg: Config, run: RunDir, images: np.ndarray) -> dict[str, Any]:
    """The simulator's outputs for a compiled run; model.qonnx's for a network without a hardware form."""
    if not run.dataflow.is_file():
        return qonnx_expectation(load_model(run.qonnx, "export"), images)
    expected, label = run_simulator_outputs(run, images)
    if label:
        return entry("bnnflow's simulator", True, expected[:, 0])
    return entry("bnnflow's simulator", True, expected.argmax(axis=1), expected, _tolerance(expected, SCORE_RTOL))


def qonnx_expectation(model: ModelWrapper, images: np.ndarray) -> dict[str, Any]:
    """model.qonnx's outputs under qonnx; a network with float layers within FLOAT_RTOL of the largest score."""
    scores = execute(model, images)[model.graph.output[0].name].reshape(len(images), -1).astype(np.float32)
    rtol = SCORE_RTOL if is_integer_network(model) else FLOAT_RTOL
    return entry("model.qonnx", True, scores.argmax(axis=1), scores, _tolerance(scores, rtol))


def int8_expectation(path: Path, images: np.ndarray) -> dict[str, Any]:
    """int8.onnx's own outputs on CPU, each sample's tolerance from how far its requantization ties move it."""
    model = onnx.load(str(path))
    scores = _cpu_scores(model, images)
    moved = np.zeros(len(images), np.float32)
    for factor in (1 + NUDGE, 1 - NUDGE):
        moved = np.maximum(moved, np.abs(_cpu_scores(nudged(model, factor), images) - scores).max(axis=1))
    tolerance = np.maximum(2 * moved, _tolerance(scores, FLOAT_RTOL))
    return entry(f"bnnflow's int8 run (ONNX Runtime {ort.__version__})", False, scores.argmax(axis=1), scores,
                 tolerance)


def nudged(model: onnx.ModelProto, factor: float) -> onnx.ModelProto:
    """``model`` with the scale of every requantization (a QuantizeLinear of a Conv / MatMul output) times
    ``factor``; the DequantizeLinear after it keeps the original, so only the rounding of ties moves."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    producers = {out: node.op_type for node in copy.graph.node for out in node.output}
    scales = {init.name: init for init in copy.graph.initializer}
    for node in copy.graph.node:
        if node.op_type == "QuantizeLinear" and producers.get(node.input[0]) in ("Conv", "MatMul"):
            scale = numpy_helper.to_array(scales[node.input[1]]) * np.float32(factor)
            node.input[1] = f"{node.name}_nudged_scale"
            copy.graph.initializer.append(numpy_helper.from_array(scale.astype(np.float32), node.input[1]))
    return copy


def _cpu_scores(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return runtime.run_batches(sess, images).reshape(len(images), -1)


def expected_record(edge_dir: Path, images: np.ndarray, exact: dict[str, Any]) -> dict[str, Any]:
    """expected.json's content: every model's expectation on ``images`` (the bundle's sample inputs)."""
    return {"samples": len(images),
            "models": {"reference.onnx": exact, "int8.onnx": int8_expectation(edge_dir / "int8.onnx", images),
                       "bitpacked.onnx": exact}}


def check_on_host(edge_dir: Path, images: np.ndarray, record: dict[str, Any]) -> None:
    """Run every model here on CPU and compare as run.py will: a bundle passes its own check before it ships."""
    for model, expected in record["models"].items():
        scores = runtime.run_batches(runtime.session(edge_dir / model, provider="cpu"), images)
        differ = differing(expected, scores.reshape(len(images), -1))
        if differ.any():
            raise VerificationError(
                f"edge bundle: {model} differs from {expected['against']} on {int(differ.sum())} of {len(images)} "
                f"sample inputs (first at index {int(differ.argmax())}); run `bnnflow edge export "
                f"{edge_dir.parent}` again")


def expected_json(record: dict[str, Any]) -> str:
    """``record`` as JSON with each list of numbers on one line."""
    text = json.dumps(record, indent=2)
    return re.sub(r"\[\s+([-0-9.e+,\s]+?)\s+\]", lambda m: "[" + re.sub(r",\s+", ", ", m.group(1)) + "]", text)
