"""The simulator's outputs as model outputs, for the edge variants' check, from graphs in memory.

``golden.expected_outputs`` reads a run folder; this takes the three graphs, so the tests can check networks they
build. The accelerator's outputs are mapped to the streamlined graph's boundary tensor (``from_accelerator``),
then through the streamlined graph's float tail. That tail may read constants the streamlined graph computes (the
8-bit weight quantizer of a ``hw`` network's float classifier), so they are folded first.

Besides the model outputs it returns the values of the model.qonnx tensor the float tail starts from (the first
tensor after the boundary that model.qonnx has too; the label itself where the accelerator selects it): the
integer part's last value, which the exact variants compute bit for bit, as the variants keep model.qonnx's
tensor names. The float tail after it (a classifier's Gemm, a logit scale) is summed in another order by ONNX
Runtime than by qonnx's numpy, so the scores agree to float rounding, not to the bit.
"""

from __future__ import annotations

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.fold_constants import FoldConstants

from bnnflow.errors import VerificationError
from bnnflow.hw.convert import from_accelerator, to_accelerator
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.golden import SCORE_RTOL, graph_tail
from bnnflow.pipeline.onnx_files import load_model
from bnnflow.pipeline.rundir import RunDir


def simulator_outputs(model: ModelWrapper, streamlined: ModelWrapper, dataflow: ModelWrapper, images: np.ndarray
                      ) -> tuple[np.ndarray, bool, tuple[str, np.ndarray] | None]:
    """(expected model outputs, whether they are labels, (tensor, exact values) where the float tail starts)."""
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    hw_out = dataflow.get_metadata_prop("bnnflow.streamlined_output")
    codes = to_accelerator(dataflow, execute(streamlined, images, [hw_in])[hw_in]).astype(np.int64)
    accel = from_accelerator(dataflow, Simulator(dataflow).run(codes))
    if dataflow.get_metadata_prop("bnnflow.output_kind") == "label":
        return accel.reshape(len(images), 1).astype(np.int64), True, None
    tail = graph_tail(streamlined.transform(FoldConstants(exclude_op_types=[])), hw_out)
    values = accel.astype(np.float32)
    if tail is None:
        return values.reshape(len(images), -1), False, None
    names = {name for node in model.graph.node for name in node.output}
    start = next((name for node in tail.graph.node for name in node.output if name in names), None)
    out = tail.graph.output[0].name
    results = execute(tail, values.reshape(-1, *tail.get_tensor_shape(hw_out)[1:]), [out, *([start] if start else [])])
    scores = results[out].reshape(len(images), -1).astype(np.float32)
    return scores, False, (start, results[start]) if start else None


def run_simulator_outputs(run: RunDir, images: np.ndarray) -> tuple[np.ndarray, bool]:
    """``simulator_outputs`` of a compiled run, checked against model.qonnx under qonnx before it is used (labels
    exactly, scores to ``SCORE_RTOL``), as ``golden.expected_outputs`` checks its own."""
    model = load_model(run.qonnx, "export")
    expected, label, _ = simulator_outputs(model, load_model(run.streamlined, "compile"),
                                           load_model(run.dataflow, "compile"), images)
    reference = execute(model, images)[model.graph.output[0].name].reshape(len(images), -1)
    if label:
        agree = np.array_equal(expected[:, 0], reference.argmax(axis=1))
    else:
        agree = np.allclose(expected, reference, rtol=SCORE_RTOL, atol=1e-6)
    if not agree:
        raise VerificationError(f"the simulator's outputs, mapped to model outputs, differ from model.qonnx's on "
                                f"{len(images)} test inputs; rerun `bnnflow compile {run.root}`")
    return expected, label
