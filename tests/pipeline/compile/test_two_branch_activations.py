"""Activations exported as two branches of the same tensor (FTBNN's FPReLU: ``p relu(z) - n relu(-z)``) fold
into the next quantizer's thresholds exactly while they are monotone, and are refused in one line otherwise."""

from __future__ import annotations

import warnings

import brevitas.nn as qnn
import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.simulator import Simulator
from bnnflow.models.methods.ftbnn import FPReLU
from bnnflow.models.quantizers import BinaryActQuant, BinaryWeightQuant, InputQuant
from bnnflow.pipeline.compile.stage import compile_model, verify_compile
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.export import export_model


def _net(slope_pos: torch.Tensor, slope_neg: torch.Tensor) -> nn.Module:
    torch.manual_seed(0)
    fprelu = FPReLU(32)
    fprelu.slope_pos.data, fprelu.slope_neg.data = slope_pos, slope_neg
    fprelu.shift_in.data, fprelu.shift_out.data = torch.randn(32) * 0.3, torch.randn(32) * 0.3
    bn = nn.BatchNorm1d(32)
    bn.weight.data, bn.bias.data = torch.randn(32), torch.randn(32) * 0.5
    bn.running_mean.data, bn.running_var.data = torch.randn(32) * 3, torch.rand(32) * 4 + 0.1
    return nn.Sequential(
        nn.Flatten(), qnn.QuantIdentity(act_quant=InputQuant, bit_width=8, return_quant_tensor=True),
        qnn.QuantLinear(64, 32, bias=False, weight_quant=BinaryWeightQuant), bn, fprelu,
        qnn.QuantIdentity(act_quant=BinaryActQuant, return_quant_tensor=True),
        qnn.QuantLinear(32, 10, bias=False, weight_quant=BinaryWeightQuant)).eval()


def _export(model: nn.Module):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_model(model, (1, 8, 8))


@pytest.mark.parametrize("sign", [1.0, -1.0], ids=["rising", "falling"])
def test_monotone_fprelu_compiles_exactly(sign: float) -> None:
    slopes = torch.rand(32) + 0.05
    qonnx = _export(_net(sign * slopes, sign * torch.rand(32).clamp(min=0.01)))
    assert {"Neg", "Sub", "Relu"} <= {node.op_type for node in qonnx.graph.node}
    streamlined, dataflow, _ = compile_model(qonnx, CompileConfig(board="u250"))
    images = np.random.default_rng(1).random((300, 1, 8, 8), dtype=np.float32)
    figures, arrays = verify_compile(qonnx, streamlined, dataflow, images)
    assert figures["streamlined_mismatches"] == 0 and figures["dataflow_mismatches"] == 0
    assert len(np.unique(arrays["hw_output"])) > 2
    np.testing.assert_array_equal(Simulator(dataflow).run(arrays["hw_input"]), arrays["hw_output"])


def test_fprelu_with_slopes_of_both_signs_is_refused_in_one_line() -> None:
    qonnx = _export(_net(torch.rand(32) + 0.1, -(torch.rand(32) + 0.1)))
    with pytest.raises(UnsupportedGraphError, match="rises and falls") as error:
        compile_model(qonnx, CompileConfig(board="u250"))
    assert "\n" not in str(error.value) and "(BipolarQuant)" in str(error.value)
