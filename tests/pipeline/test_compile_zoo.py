"""The compiler end to end: model.qonnx == streamlined.onnx == dataflow.onnx under qonnx's executor, exactly,
and the bit-exact simulator == qonnx's executor on dataflow.onnx.

Every zoo model and Brevitas's own bnn_pynq TFC/SFC/LFC/CNV (w1a1) are exported with randomised BatchNorm
statistics, including negative scales (so weight columns get flipped), and checked on 200 inputs; a trained
digits model is checked on its whole test split through the real run directory.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.hw.simulator import Simulator
from bnnflow.models import create_model
from bnnflow.pipeline.compile.stage import compile_model, verify_compile
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.export import export_model

SAMPLES = 200
ZOO = [("digits_mlp", (1, 8, 8)), ("tfc", (1, 28, 28)), ("sfc", (1, 28, 28)), ("lfc", (1, 28, 28)),
       ("cnv", (3, 32, 32))]
BNN_PYNQ = [("TFC_1W1A", (1, 28, 28)), ("SFC_1W1A", (1, 28, 28)), ("LFC_1W1A", (1, 28, 28)),
            ("CNV_1W1A", (3, 32, 32))]


def randomise_batchnorm(model: nn.Module, input_shape: tuple[int, ...], seed: int) -> nn.Module:
    """Running statistics from random inputs, then random affine parameters with a share of negative scales."""
    torch.manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand(64, *input_shape))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.weight.data = torch.empty(n).uniform_(-1.5, 1.5)
            module.bias.data = torch.randn(n) * 0.3
    return model.eval()


def _check(model: nn.Module, input_shape: tuple[int, ...], label_select: bool = False) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx = export_model(model, input_shape)
    negative = sum(int((m.weight < 0).sum()) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    assert negative > 0, "the test must exercise negative BatchNorm scales"
    streamlined, dataflow, estimates = compile_model(qonnx, CompileConfig(board="u250", label_select=label_select))
    images = np.random.default_rng(0).random((SAMPLES, *input_shape), dtype=np.float32)
    figures, arrays = verify_compile(qonnx, streamlined, dataflow, images)
    assert figures["verified_samples"] == SAMPLES
    assert figures["streamlined_mismatches"] == 0
    assert figures["dataflow_mismatches"] == 0
    np.testing.assert_array_equal(arrays["qonnx"], arrays["streamlined"])
    np.testing.assert_array_equal(arrays["hw_expected"], arrays["hw_output"])
    assert len(np.unique(arrays["hw_output"])) > 1, "a constant output would make the comparison vacuous"
    # The bit-exact simulator equals qonnx's executor on the dataflow graph, on the same 200 inputs.
    np.testing.assert_array_equal(Simulator(dataflow).run(arrays["hw_input"]), arrays["hw_output"])
    ops = {n.op_type for n in streamlined.graph.node}
    assert not ops & {"BatchNormalization", "BipolarQuant"} and "MultiThreshold" in ops
    # every product of the integer body multiplies codes by integer weight codes
    products = [n for n in streamlined.graph.node if n.op_type in ("MatMul", "Conv")]
    assert products
    for node in products:
        weights = streamlined.get_initializer(node.input[1])
        assert weights is not None and np.array_equal(weights, np.round(weights)), node.name
    assert all(n.domain == "bnnflow.hw" or n.op_type == "Reshape" for n in dataflow.graph.node)
    return estimates


@pytest.mark.parametrize("name,input_shape", ZOO, ids=[z[0] for z in ZOO])
def test_compile_zoo_model_is_exact(name: str, input_shape: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    model = create_model(name, input_shape=input_shape, num_classes=10)
    _check(randomise_batchnorm(model, input_shape, seed=1), input_shape)


@pytest.mark.parametrize("name,input_shape", BNN_PYNQ, ids=[b[0] for b in BNN_PYNQ])
def test_compile_brevitas_bnn_pynq_is_exact(name: str, input_shape: tuple[int, ...]) -> None:
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    _check(randomise_batchnorm(model, input_shape, seed=2), input_shape)


def test_compile_label_select_matches_argmax() -> None:
    torch.manual_seed(3)
    model = create_model("tfc", input_shape=(1, 28, 28), num_classes=10)
    estimates = _check(randomise_batchnorm(model, (1, 28, 28), seed=3), (1, 28, 28), label_select=True)
    assert estimates["layers"][-1]["op"] == "LabelSelect"


def test_compile_trained_digits_run(tmp_path) -> None:
    """A trained model through the real run directory: train, export, compile, and the files they leave."""
    import json

    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    cfg = validate(Config().with_overrides({"train.epochs": 3, "train.threads": 1}))
    run = prepare_run(cfg, tmp_path / "run")
    summary = run_steps(cfg, run, ["train", "export", "compile"])
    entry = summary["stages"]["compile"]
    assert entry["status"] == "ok"
    assert entry["verified_samples"] == 360
    assert entry["streamlined_mismatches"] == 0 and entry["dataflow_mismatches"] == 0
    estimates = json.loads((run.compile_dir / "estimates.json").read_text())
    assert estimates["luts"] <= 83_640 * 0.8 and estimates["board"]["name"] == "ulx3s"
    assert (run.compile_dir / "estimates.png").stat().st_size > 0
    assert run.streamlined.is_file() and run.dataflow.is_file()
    assert f"class='layer bottleneck' data-layer='{entry['bottleneck']}'" in (run.root / "report.html").read_text()


def test_unnamed_nodes_compile_exactly() -> None:
    """ONNX allows empty node names (other tools leave them empty); the compiler names them and stays exact."""
    torch.manual_seed(4)
    model = randomise_batchnorm(create_model("cnv", input_shape=(3, 32, 32), num_classes=10), (3, 32, 32), seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx = export_model(model, (3, 32, 32))
    for node in qonnx.graph.node:
        node.name = ""
    streamlined, dataflow, _ = compile_model(qonnx, CompileConfig(board="u250"))
    images = np.random.default_rng(4).random((32, 3, 32, 32), dtype=np.float32)
    figures, arrays = verify_compile(qonnx, streamlined, dataflow, images)
    assert figures["streamlined_mismatches"] == 0 and figures["dataflow_mismatches"] == 0
    assert all(node.name for node in streamlined.graph.node)
    np.testing.assert_array_equal(Simulator(dataflow).run(arrays["hw_input"]), arrays["hw_output"])
