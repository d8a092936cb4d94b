"""Expected model outputs from the bit-exact simulator, for the backends that run the whole model.

FINN's verification and the edge variants run model.qonnx's function, not just the accelerator; their expected
outputs are the simulator's accelerator outputs mapped through the rest of the streamlined graph (its float
tail: the logit scale and offset), or the class index when the accelerator ends in a label select. Each such
expectation is checked against model.qonnx under qonnx before it is used.
"""

from __future__ import annotations

import copy

import numpy as np
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError, VerificationError
from bnnflow.hw.convert import from_accelerator, to_accelerator
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.config import Config
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
    constant = {init.name for init in graph.initializer}
    live, keep = {start}, []
    for node in graph.node:
        if all(not name or name in constant for name in node.input):  # a weight quantizer of a float layer
            keep.append(node)
            constant.update(node.output)
        elif any(name in live for name in node.input):
            keep.append(node)
            live.update(node.output)
    missing = {n for node in keep for n in node.input if n and n not in live and n not in constant}
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
    codes = to_accelerator(dataflow, execute(streamlined, images, [hw_in])[hw_in]).astype(np.int64)
    accel = from_accelerator(dataflow, Simulator(dataflow).run(codes))
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
        raise VerificationError(f"the simulator's outputs, mapped to model outputs, differ from model.qonnx's on "
                                f"{len(images)} test inputs; rerun `bnnflow compile {run.root}`")
    return expected, label
