"""The expected model outputs that FINN's verification and the edge bundle use: the simulator's accelerator
outputs through the streamlined graph's float tail, here for a hw ResNet-20 whose tail is a float classifier
(8-bit weights quantized by a Quant node on the host)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from bnnflow.models import create_model
from bnnflow.pipeline.compile.stage import compile_model
from bnnflow.pipeline.config import CompileConfig, Config
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model
from bnnflow.pipeline.golden import SCORE_RTOL, expected_outputs, graph_tail
from bnnflow.pipeline.onnx_files import save_model
from bnnflow.pipeline.rundir import RunDir
from tests.pipeline.test_compile_zoo import randomise_batchnorm


def test_expected_outputs_through_a_float_classifier(tmp_path: Path) -> None:
    shape = (3, 8, 8)
    torch.manual_seed(5)
    model = create_model("resnet20", input_shape=shape, num_classes=10, hw=True, widths=[4, 8, 16], stem_width=4)
    model = randomise_batchnorm(model, shape, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx = export_model(model, shape)
    streamlined, dataflow, _ = compile_model(qonnx, CompileConfig(board="u250"))
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_config(Config())
    for graph, path in ((qonnx, run.qonnx), (streamlined, run.streamlined), (dataflow, run.dataflow)):
        save_model(graph, path)
    images = np.random.default_rng(5).random((24, *shape), dtype=np.float32)

    tail = graph_tail(streamlined, dataflow.get_metadata_prop("bnnflow.streamlined_output"))
    assert tail is not None and {"Quant", "Gemm"} <= {node.op_type for node in tail.graph.node}
    expected, label = expected_outputs(Config(), run, images)
    reference = execute(qonnx, images)[qonnx.graph.output[0].name]
    assert not label and expected.shape == reference.shape
    np.testing.assert_allclose(expected, reference, rtol=SCORE_RTOL, atol=1e-6)
    assert len(np.unique(expected.argmax(axis=1))) > 1, "a constant prediction would make the check vacuous"
