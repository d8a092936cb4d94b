"""Executing TFC's real dataflow graph under qonnx's executor: folding never changes results, the graph
matches a numpy re-computation of its layers, and it reproduces the streamlined graph at the hardware
boundary."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.hw.boards import XILINX, get_board
from bnnflow.hw.convert import from_accelerator, output_to_accelerator, to_accelerator, to_dataflow
from bnnflow.hw.folding import fold_for_board, fold_for_fps
from bnnflow.models import create_model
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model

SAMPLES = 32


@pytest.fixture(scope="module")
def tfc() -> tuple[ModelWrapper, ModelWrapper]:
    """(streamlined, dataflow) of a seeded random TFC."""
    torch.manual_seed(0)
    model = create_model("tfc", input_shape=(1, 28, 28), num_classes=10).eval()
    streamlined = streamline_model(export_model(model, (1, 28, 28)))
    return streamlined, to_dataflow(streamlined)


@pytest.fixture(scope="module")
def hw_inputs(tfc) -> np.ndarray:
    """32 seeded random inputs of the dataflow graph's input datatype (bits or integer codes)."""
    _, dataflow = tfc
    name = dataflow.graph.input[0].name
    dtype = dataflow.get_tensor_datatype(name)
    assert dtype.is_integer()
    shape = dataflow.get_tensor_shape(name)
    rng = np.random.default_rng(2024)
    x = rng.integers(int(dtype.min()), int(dtype.max()) + 1, size=(SAMPLES, *shape[1:]))
    assert len(np.unique(x)) > 1
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def unfolded_output(tfc, hw_inputs) -> np.ndarray:
    return execute(tfc[1], hw_inputs)[tfc[1].graph.output[0].name]


def foldings(model: ModelWrapper) -> dict[str, dict[str, int]]:
    return {n.name: getCustomOp(n).folding() for n in model.graph.node if n.domain == "bnnflow.hw"}


def numpy_forward(dataflow: ModelWrapper, x: np.ndarray) -> np.ndarray:
    """Independent re-computation of a chain of fully connected MVTUs from the graph's initializers."""
    acts = x.astype(np.int64).reshape(len(x), -1)
    for node in dataflow.graph.node:
        assert node.op_type == "MVTU"
        op = getCustomOp(node)
        w = dataflow.get_initializer(node.input[1]).astype(np.int64)
        if op.get_nodeattr("binaryXnorMode"):  # bits stand for +-1: the bipolar dot product
            acc = (2 * acts - 1) @ (2 * w - 1)
        else:
            acc = acts @ w
        if op.get_nodeattr("noActivation"):
            acts = acc
        else:
            t = dataflow.get_initializer(node.input[2]).astype(np.int64)
            acts = (t[None, :, :] <= acc[:, :, None]).sum(axis=-1) + op.get_nodeattr("outputBias")
    return acts


def test_folding_for_board_does_not_change_results(tfc, hw_inputs, unfolded_output):
    _, dataflow = tfc
    folded = ModelWrapper(copy.deepcopy(dataflow.model))
    fold_for_board(folded, get_board("icebreaker"), 100.0)
    assert foldings(folded) != foldings(dataflow)  # a different folding really was applied
    after = execute(folded, hw_inputs)[folded.graph.output[0].name]
    assert after.shape == unfolded_output.shape == (SAMPLES, 10)
    assert np.array_equal(after, unfolded_output)


def test_folding_for_fps_does_not_change_results(tfc, hw_inputs, unfolded_output):
    _, dataflow = tfc
    folded = ModelWrapper(copy.deepcopy(dataflow.model))
    fold_for_fps(folded, 1e6, 100.0, XILINX)
    assert foldings(folded) != foldings(dataflow)
    assert np.array_equal(execute(folded, hw_inputs)[folded.graph.output[0].name], unfolded_output)


def test_dataflow_matches_numpy_layers(tfc, hw_inputs, unfolded_output):
    expected = numpy_forward(tfc[1], hw_inputs)
    assert np.array_equal(unfolded_output, expected)
    assert len({tuple(row) for row in unfolded_output}) > 1  # different inputs give different accumulators


def test_batch_size_does_not_change_results(tfc, hw_inputs, unfolded_output):
    _, dataflow = tfc
    odd = execute(dataflow, hw_inputs, batch=5)[dataflow.graph.output[0].name]  # last batch zero-padded
    assert np.array_equal(odd, unfolded_output)


def test_dataflow_reproduces_streamlined_boundary(tfc):
    streamlined, dataflow = tfc
    hw_in = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    hw_out = dataflow.get_metadata_prop("bnnflow.streamlined_output")
    assert hw_in == dataflow.graph.input[0].name
    images = np.random.default_rng(7).random((SAMPLES, 1, 28, 28)).astype(np.float32)
    levels = execute(streamlined, images, [hw_in, hw_out])
    hardware = execute(dataflow, to_accelerator(dataflow, levels[hw_in]))[dataflow.graph.output[0].name]
    assert np.array_equal(hardware, output_to_accelerator(dataflow, levels[hw_out]))
    assert np.array_equal(from_accelerator(dataflow, hardware), levels[hw_out])
    assert len({tuple(row) for row in hardware.reshape(SAMPLES, -1)}) > 1


@pytest.fixture(scope="module")
def tfc_label(tfc) -> ModelWrapper:
    return to_dataflow(tfc[0], label_select=True)


def test_label_select_graph_gives_argmax_of_accumulators(tfc_label, hw_inputs, unfolded_output):
    assert tfc_label.graph.node[-1].op_type == "LabelSelect"
    assert tfc_label.get_metadata_prop("bnnflow.output_kind") == "label"
    labels = execute(tfc_label, hw_inputs)[tfc_label.graph.output[0].name]
    expected = np.array([[int(np.flatnonzero(row == row.max())[0])] for row in unfolded_output])  # ties: lowest
    assert np.array_equal(labels.reshape(SAMPLES, 1), expected)
    folded = ModelWrapper(copy.deepcopy(tfc_label.model))
    fold_for_fps(folded, 4e7, 100.0, XILINX)  # 2.5 cycles per frame: 10 / PE <= 2.5 needs PE = 5 (or 10)
    assert getCustomOp(folded.graph.node[-1]).get_nodeattr("PE") == 5
    assert np.array_equal(execute(folded, hw_inputs)[folded.graph.output[0].name], labels)


def test_label_select_graph_declares_its_output_shape(tfc_label):
    out = tfc_label.graph.output[0].name
    assert tfc_label.get_tensor_shape(out) == [1, 1]
