"""Graphs the compiler cannot make exact are refused with the node, its op and the fix; nothing is written."""

from __future__ import annotations

import warnings
from pathlib import Path

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.models.quantizers import BinaryActQuant, BinaryWeightQuant, InputQuant, IntWeightQuant
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.export import export_model
from bnnflow.pipeline.onnx_files import load_model, save_model
from bnnflow.pipeline.rundir import RunDir


def _binary_linear(n_in: int, n_out: int) -> nn.Module:
    return qnn.QuantLinear(n_in, n_out, bias=False, weight_quant=BinaryWeightQuant)


def _sign() -> nn.Module:
    return qnn.QuantIdentity(act_quant=BinaryActQuant, return_quant_tensor=True)


def _net(*middle: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Flatten(), qnn.QuantIdentity(act_quant=InputQuant, bit_width=8, return_quant_tensor=True),
                         _binary_linear(64, 32), nn.BatchNorm1d(32), *middle, _binary_linear(32, 10))


BAD_NETWORKS = [
    # (network, op named in the error, text of the fix)
    (lambda: _net(nn.ReLU()), "MatMul", "put an activation quantizer before the layer"),
    (lambda: _net(), "MatMul", "reads a real-valued tensor that no quantizer made integer"),
    (lambda: _net(_sign(), nn.Linear(32, 32, bias=False), nn.BatchNorm1d(32), _sign()), "MatMul",
     "has float weights between quantized layers; quantize them"),
    (lambda: _net(_sign(), qnn.QuantLinear(32, 32, bias=False, weight_quant=IntWeightQuant, weight_bit_width=2),
                  nn.BatchNorm1d(32), _sign()), "MatMul", "binary activations by INT2 weights"),
]


def _run_with(tmp_path: Path, network: nn.Module) -> RunDir:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_config(Config())
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_model(export_model(network.eval(), (1, 8, 8)), run.qonnx)
    return run


@pytest.mark.parametrize("make,op,fix", BAD_NETWORKS,
                         ids=["relu", "float-activation", "float-weights", "multi-bit-hidden-weights"])
def test_compile_refuses_unsupported_graph(cli, tmp_path: Path, make, op: str, fix: str) -> None:
    run = _run_with(tmp_path, make())
    result = cli("compile", str(run.root))
    assert result.returncode == 3, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and "Traceback" not in result.stderr
    assert f"({op})" in error[0] and fix in error[0] and "node " in error[0]
    assert not run.streamlined.exists() and not run.dataflow.exists() and not run.compile_dir.exists()


def test_compile_names_an_unnamed_node_by_op_and_index(cli, tmp_path: Path) -> None:
    """ONNX allows empty node names (other exporters leave them empty): the error names the op and its index."""
    run = _run_with(tmp_path, _net(nn.ReLU()))
    model = load_model(run.qonnx, "export")
    relu = next(node for node in model.graph.node if node.op_type == "Relu")
    reader = next(i for i, node in enumerate(model.graph.node) if relu.output[0] in node.input)
    for node in model.graph.node:
        node.name = ""
    save_model(model, run.qonnx)
    result = cli("compile", str(run.root))
    assert result.returncode == 3, result.stderr
    error = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error) == 1 and f"node MatMul_{reader} (MatMul) reads a real-valued tensor" in error[0]


def test_compile_refuses_malformed_onnx(cli, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_config(Config())
    run.qonnx.write_bytes(b"\x08\x07garbage that is not a protobuf")
    result = cli("compile", str(run.root))
    assert result.returncode == 2  # a damaged file is bad input, not an unsupported graph
    assert "not a valid ONNX model" in result.stderr and "Traceback" not in result.stderr
    assert not run.streamlined.exists() and not run.dataflow.exists()


def test_compile_without_export_says_what_to_run(cli, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_config(Config())
    result = cli("compile", str(run.root))
    assert result.returncode == 2 and "bnnflow export" in result.stderr


def test_compile_unknown_board_lists_boards(cli, tmp_path: Path) -> None:
    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.write_config(Config())
    result = cli("compile", str(run.root), "--board", "de10-nano")
    assert result.returncode == 2 and "ulx3s" in result.stderr and "icebreaker" in result.stderr


def test_compile_qonnx_file_from_elsewhere(cli, tmp_path: Path) -> None:
    """A Brevitas bnn_pynq export compiled straight from its file, verified on seeded random inputs."""
    import json

    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg("TFC_1W1A", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save_model(export_model(model.eval(), (1, 28, 28)), tmp_path / "tfc.onnx")
    result = cli("compile", str(tmp_path / "tfc.onnx"), "--out", "tfc", "--board", "pynq-z1")
    assert result.returncode == 0, result.stderr
    summary = json.loads((tmp_path / "tfc" / "summary.json").read_text())["stages"]["compile"]
    assert summary["verified_samples"] == 256 and summary["dataflow_mismatches"] == 0
    # board folding says why the design is no faster (here the default fps_cap)
    assert summary["folding_stopped"] == "the rate reached fps_cap (250000 frames/s)"
    assert f"folded for pynq-z1 at {summary['frames_per_second']:,.0f} frames/s: no faster, as the rate" in result.stderr
    assert cli("simulate", str(tmp_path / "tfc")).returncode == 0
    np.save(tmp_path / "x.npy", np.zeros((4, 3, 32, 32), dtype=np.float32))
    bad = cli("compile", str(tmp_path / "tfc.onnx"), "--out", "tfc2", "--inputs", str(tmp_path / "x.npy"))
    assert bad.returncode == 2 and "takes (N, 1, 28, 28)" in bad.stderr
    assert not (tmp_path / "tfc2").exists()
