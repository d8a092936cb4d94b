"""The issue's exactness ladder on the named binary networks: PyTorch == model.qonnx == streamlined.onnx ==
dataflow.onnx (qonnx's executor) == the bit-exact simulator, on 200 inputs each, and the generated Verilog ==
the simulator under Verilator on 100 of them.

Every network is the registry's own at 32x32x3 with ``hw=True`` (the residual ones and vgg_small narrowed through
their ``widths`` / ``stem_width`` arguments: same layers, joins and shortcuts, fewer channels, so qonnx's Python
``MultiThreshold`` stays fast), with every BatchNorm randomised: running statistics measured on random inputs and
shifted, weights normal with every 7th zero and every 5th negative, biases random. ``cnv`` runs at
``act_bits=2``; resnet20 takes no ``act_bits``, so its 2-bit form swaps the signs in front of its binary convs
for 2-bit quantizers (``quant_act(2)``).
"""

from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from bnnflow.hw.simulator import Simulator
from bnnflow.models import create_model
from bnnflow.models.layers import quant_act
from bnnflow.pipeline.compile.stage import compile_model, verify_compile
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.export import FLOAT_RTOL, compare_outputs, export_model, is_integer_network

SHAPE = (3, 32, 32)
SAMPLES = 200
NETWORKS = {
    "resnet20": ("resnet20", dict(widths=[4, 8, 16], stem_width=4)),
    "resnet20_bireal": ("resnet20_bireal", dict(widths=[4, 8, 16], stem_width=4)),
    "vgg_small": ("vgg_small", dict(widths=[8, 8, 16, 16, 16, 16])),
    "cifar_resnet18": ("cifar_resnet18", dict(widths=[4, 8, 8, 16], stem_width=4)),
    "birealnet18": ("birealnet18", dict(widths=[4, 8, 8, 16], stem_width=4)),
    "reactnet18": ("reactnet18", dict(widths=[4, 8, 8, 16], stem_width=4)),
    "cnv_a2": ("cnv", dict(act_bits=2)),
    "resnet20_a2": ("resnet20", dict(widths=[4, 8, 16], stem_width=4)),
}
HW = {"cnv"}  # names whose entry point has no hw argument (always fixed point)


def randomise_batchnorm(model: nn.Module, shape: tuple[int, ...], seed: int) -> nn.Module:
    """Running statistics measured on random inputs (so the signal survives every layer), then random affine
    parameters with zero and negative scales and a shifted mean; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for module in norms:
        module.momentum = None  # cumulative average over the calibration batches
    model.train()
    with torch.no_grad():
        for _ in range(2):
            model(torch.rand(32, *shape, generator=gen))
    for module in norms:
        c = module.num_features
        weight = torch.randn(c, generator=gen)
        weight[::7] = 0
        weight[1::5] = -weight[1::5].abs()
        module.weight.data = weight
        module.bias.data = torch.randn(c, generator=gen) * 0.5
        module.running_mean.data += torch.randn(c, generator=gen) * module.running_var.sqrt() * 0.3
    return model.eval()


def build(key: str) -> nn.Module:
    name, kwargs = NETWORKS[key]
    torch.manual_seed(0)
    model = create_model(name, input_shape=SHAPE, num_classes=10, **({} if name in HW else {"hw": True}), **kwargs)
    if key == "resnet20_a2":  # the binary convs read 2-bit codes instead of signs
        swapped = 0
        for block in model.modules():
            for attr in ("act1", "act2"):
                if isinstance(getattr(block, attr, None), nn.Module):
                    setattr(block, attr, quant_act(2))
                    swapped += 1
        assert swapped == 18
    return randomise_batchnorm(model, SHAPE, seed=len(key))


def inputs(n: int, seed: int = 0) -> np.ndarray:
    """Uniform images, plus the extremes (black, white, out of range) the input quantizer clamps."""
    x = np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)
    x[0], x[1] = 0.0, 1.0
    x[2] = np.random.default_rng(seed + 1).normal(0.5, 1.0, SHAPE).astype(np.float32)
    return x


@pytest.fixture(scope="module", params=list(NETWORKS))
def network(request) -> dict:
    """One network exported, compiled, verified on SAMPLES inputs and simulated; the arrays to compare."""
    model = build(request.param)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx = export_model(model, SHAPE)
        streamlined, dataflow, _ = compile_model(qonnx, CompileConfig(board="ulx3s", target_fps=1000))
        x = inputs(SAMPLES)
        _, arrays = verify_compile(qonnx, streamlined, dataflow, x)
        with torch.no_grad():
            arrays["torch"] = model(torch.from_numpy(x)).numpy()
    arrays["simulator"] = Simulator(dataflow).run(arrays["hw_input"])
    return {"name": request.param, "model": qonnx, "dataflow": dataflow, **arrays}


def test_streamlined_equals_qonnx(network):
    assert network["qonnx"].shape == (SAMPLES, 10)
    assert len(np.unique(network["qonnx"], axis=0)) > SAMPLES // 2, "degenerate network: outputs barely vary"
    assert np.array_equal(network["streamlined"], network["qonnx"])


def test_dataflow_equals_streamlined(network):
    assert len(network["hw_expected"]) == SAMPLES
    assert np.array_equal(network["hw_output"].reshape(SAMPLES, -1), network["hw_expected"].reshape(SAMPLES, -1))


def test_simulator_equals_dataflow(network):
    sim = np.asarray(network["simulator"]).reshape(SAMPLES, -1)
    assert np.array_equal(sim, network["hw_output"].reshape(SAMPLES, -1))


def test_pytorch_equals_qonnx(network):
    exact = is_integer_network(network["model"])
    comparison = compare_outputs(network["torch"], network["qonnx"], 0.0 if exact else FLOAT_RTOL)
    assert comparison["mismatches"] == 0, (exact, comparison)



#: the RTL runs a copy folded this fast (the networks above are folded for 1,000 frames/s), on the first 100 inputs
RTL_FPS, RTL_FRAMES = 8000, 100
#: the CIFAR networks the papers train (ResNet-20 also with 2-bit activations); CNV's RTL is tests/hw/rtl's
RTL_NETWORKS = ["resnet20", "resnet20_bireal", "vgg_small", "cifar_resnet18", "resnet20_a2"]


@pytest.mark.parametrize("network", RTL_NETWORKS, indirect=True)
def test_rtl_equals_simulator(network, tmp_path):
    """The generated Verilog under Verilator, 100 inputs under random back-pressure (a stall that never clears
    fails on the testbench's cycle limit), equals the simulator; cycles per frame as modelled within 5 %."""
    from qonnx.core.modelwrapper import ModelWrapper

    from bnnflow.hw.boards import ECP5
    from bnnflow.hw.estimates import timing
    from bnnflow.hw.folding import fold_for_fps
    from bnnflow.hw.rtl import cosim, verilator
    from bnnflow.hw.rtl.generate import ACCEL_TOP, generate_rtl

    dataflow = ModelWrapper(copy.deepcopy(network["dataflow"].model))
    fold_for_fps(dataflow, RTL_FPS, 100.0, ECP5)
    design = generate_rtl(dataflow, tmp_path / "rtl")
    verilator.lint(design.source_paths, ACCEL_TOP, tmp_path / "rtl")
    ii = timing(dataflow, 100.0)["initiation_interval_cycles"]
    inputs = network["hw_input"][:RTL_FRAMES]
    report = cosim.cosimulate(design, inputs, np.asarray(network["simulator"])[:RTL_FRAMES], ii,
                              seed=len(network["name"]))
    assert report["samples"] == RTL_FRAMES
    assert report["mismatches"] == 0, report
    assert report["cycles_error"] <= 0.05, report
