"""The edge variants of real models under ONNX Runtime (all graph optimizations on), against the simulator."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import ConfigError
from bnnflow.pipeline.edge import runtime
from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model


def test_digits_variants_equal_the_simulator_on_the_whole_test_split(cli, digits_run: Path) -> None:
    done = cli("edge", "export", str(digits_run))
    assert done.returncode == 0, done.stderr
    report = json.loads((digits_run / "edge" / "export.json").read_text())
    assert report["checked_against"] == "the simulator" and report["samples"] == 360
    variants = report["variants"]
    assert variants["reference"]["mismatches"] == 0 and variants["bitpacked"]["mismatches"] == 0
    assert variants["reference"]["exact"] and variants["bitpacked"]["exact"] and not variants["int8"]["exact"]
    assert report["binary_layers_on_kernel"] == 3  # the three binary hidden layers; the 8-bit input layer is not
    # int8 requantizes accumulators: measured, not required to match; its accuracy sits near the exact variants'
    assert report["binary_layers_int8"] == 3
    assert 0 <= variants["int8"]["label_changes"] <= 360
    assert variants["reference"]["test_accuracy"] == variants["bitpacked"]["test_accuracy"]
    assert abs(variants["int8"]["test_accuracy"] - variants["reference"]["test_accuracy"]) < 0.1
    int8 = ModelWrapper(str(digits_run / "edge" / "int8.onnx"))
    assert sum(node.op_type == "QuantizeLinear" for node in int8.graph.node) >= 3
    reference = ModelWrapper(str(digits_run / "edge" / "reference.onnx"))
    assert all(node.domain in ("", "ai.onnx") for node in reference.graph.node)
    assert "BatchNormalization" not in {node.op_type for node in reference.graph.node}  # integer steps instead
    bitpacked = ModelWrapper(str(digits_run / "edge" / "bitpacked.onnx"))
    assert sum(node.op_type == "BinaryMatMul" for node in bitpacked.graph.node) == 3
    assert "Where" not in {node.op_type for node in bitpacked.graph.node}  # the kernel takes the signs itself
    stage = json.loads((digits_run / "summary.json").read_text())["stages"]["edge"]
    assert stage["status"] == "ok" and stage["mismatches"] == 0


@pytest.mark.parametrize("name,shape,layers", [("TFC_1W1A", (1, 28, 28), 4), ("CNV_1W1A", (3, 32, 32), 8)])
def test_brevitas_bnn_pynq_models_are_exact(tmp_path: Path, name: str, shape, layers: int) -> None:
    """Brevitas's own TFC / CNV with random BatchNorm statistics: many accumulators sit exactly on a zero."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    from bnnflow.pipeline.edge.stage import mismatches
    from bnnflow.pipeline.execute import execute
    from bnnflow.pipeline.export import export_model

    torch.manual_seed(0)
    model, _ = model_with_cfg(name, pretrained=False)
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            module.running_mean.copy_(torch.randint(-4, 5, module.running_mean.shape).float())
            module.running_var.uniform_(0.5, 4.0)
            module.weight.data.uniform_(-1.0, 1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx_model = export_model(model.eval(), shape)
    reference = reference_model(qonnx_model)
    bitpacked, replaced = bitpacked_model(reference)
    assert replaced == layers
    inputs = np.random.default_rng(1).random((12, *shape), dtype=np.float32)
    expected = execute(qonnx_model, inputs)[qonnx_model.graph.output[0].name]
    for variant, graph in (("reference", reference), ("bitpacked", bitpacked)):
        path = tmp_path / f"{variant}.onnx"
        graph.save(str(path))
        assert mismatches(expected, runtime.run_batches(runtime.session(path), inputs)) == 0, variant


def test_birealnet_bitpacked_equals_reference(tmp_path: Path) -> None:
    from bnnflow.models import create_model
    from bnnflow.pipeline.export import export_model

    torch.manual_seed(0)
    model = create_model("birealnet18", input_shape=(3, 32, 32), num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = reference_model(export_model(model, (3, 32, 32)))
    bitpacked, replaced = bitpacked_model(reference)
    assert replaced == 16
    fused = [n for n in bitpacked.graph.node if n.op_type == "BinaryConv2dAffine"]
    chains = [n for n in bitpacked.graph.node if n.op_type == "BinaryConv2dChain"]
    assert "BatchNormalization" not in {n.op_type for n in bitpacked.graph.node} and chains
    chained = sum(a.i for n in chains for a in n.attribute if a.name == "layers")  # every chained layer is residual
    assert len(fused) + chained == 16
    residual = [a.i for n in fused for a in n.attribute if a.name == "residual"]
    assert sum(residual) + chained == 13  # every block's shortcut but the three downsampling ones (an average pool, a conv)
    pools = [n for n in reference.graph.node if n.op_type == "AveragePool"]
    assert len(pools) == 3 and all(  # even maps: no partial window, so ONNX Runtime's fast floor-mode path
        a.i == 0 for n in pools for a in n.attribute if a.name == "ceil_mode")
    reference.save(str(tmp_path / "reference.onnx"))
    bitpacked.save(str(tmp_path / "bitpacked.onnx"))
    inputs = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    want = runtime.run_batches(runtime.session(tmp_path / "reference.onnx"), inputs)
    got = runtime.run_batches(runtime.session(tmp_path / "bitpacked.onnx"), inputs)
    assert np.allclose(got, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
    with torch.no_grad():  # and both are the PyTorch model (float stem and shortcuts: up to float rounding)
        torch_out = model(torch.from_numpy(inputs)).numpy()
    assert np.array_equal(got.argmax(1), torch_out.argmax(1))


def test_unknown_execution_provider_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not available"):
        runtime.providers("tensorrt" if "TensorrtExecutionProvider" not in runtime.providers() else "nosuch")
    assert runtime.providers("cpu") == ["CPUExecutionProvider"]
