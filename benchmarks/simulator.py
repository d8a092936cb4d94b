"""Simulator throughput on CNV-w1a1 (batch 256) against PyTorch and qonnx's executor, measured in one run.

    python benchmarks/simulator.py [--frames 256] [--qonnx-frames 16] [--out runs/bench]

Builds BNN-PYNQ's CNV (w1a1, random weights, BatchNorm statistics from random images with a share of negative
scales), exports and compiles it, then times on the same frames:
- the bit-exact simulator on dataflow.onnx (inputs: the accelerator's integer codes);
- (a) the PyTorch eval forward of the same Brevitas model (inputs: the float images);
- (b) qonnx's executor on the same dataflow.onnx (fewer frames: it is slow; frames/s is what is compared).
Prints frames/s and the two ratios, checks the simulator's outputs equal qonnx's, and writes JSON to --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bnnflow.hw.convert import to_accelerator
from bnnflow.hw.simulator import Simulator
from bnnflow.models import create_model
from bnnflow.pipeline.compile.stage import compile_model
from bnnflow.pipeline.config import CompileConfig
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model


def _best_of(runs: int, fn) -> float:
    """The shortest of ``runs`` timings: the least disturbed by other work on a shared machine."""
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _cnv(shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("cnv", input_shape=shape, num_classes=10)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.momentum = None
    model.train()
    with torch.no_grad():
        model(torch.rand(64, *shape))
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.weight.data.uniform_(-1.5, 1.5)
    return model.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=256, help="batch for the simulator and PyTorch")
    parser.add_argument("--qonnx-frames", type=int, default=16, help="frames for qonnx's (slow) executor")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for simulator.json")
    args = parser.parse_args(argv)

    shape = (3, 32, 32)
    model = _cnv(shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx_model = export_model(model, shape)
    streamlined, dataflow, _ = compile_model(qonnx_model, CompileConfig(board="ulx3s"))
    images = np.random.default_rng(0).random((args.frames, *shape), dtype=np.float32)
    hw_in_name = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    codes = to_accelerator(dataflow, execute(streamlined, images[: args.qonnx_frames], [hw_in_name])[hw_in_name])
    codes = np.concatenate([codes] * -(-args.frames // len(codes)))[: args.frames]  # a batch of real codes

    simulator = Simulator(dataflow)
    simulator.run(codes)  # warm-up: builds the C kernel on first use
    sim_s = _best_of(args.repeats, lambda: simulator.run(codes))
    torch_in = torch.from_numpy(images)
    with torch.no_grad():
        model(torch_in)
        torch_s = _best_of(args.repeats, lambda: model(torch_in))
    few = codes[: args.qonnx_frames]
    reference = {}
    qonnx_s = _best_of(1, lambda: reference.update(execute(dataflow, few)))
    exact = np.array_equal(simulator.run(few), reference[dataflow.graph.output[0].name].astype(np.int64))

    result = {
        "network": "cnv w1a1 (BNN-PYNQ), random weights",
        "frames": args.frames,
        "simulator_fps": args.frames / sim_s,
        "pytorch_fps": args.frames / torch_s,
        "qonnx_fps": args.qonnx_frames / qonnx_s,
        "torch_threads": torch.get_num_threads(),
        "simulator_equals_qonnx": exact,
    }
    result["ratio_vs_pytorch"] = result["simulator_fps"] / result["pytorch_fps"]
    result["ratio_vs_qonnx"] = result["simulator_fps"] / result["qonnx_fps"]
    print(f"{'':24}{'frames/s':>12}")
    print(f"{'simulator':24}{result['simulator_fps']:>12.1f}")
    print(f"{'PyTorch eval forward':24}{result['pytorch_fps']:>12.1f}   simulator / PyTorch = "
          f"{result['ratio_vs_pytorch']:.2f}x")
    print(f"{'qonnx executor':24}{result['qonnx_fps']:>12.2f}   simulator / qonnx   = {result['ratio_vs_qonnx']:.0f}x")
    print(f"simulator outputs equal qonnx's on {args.qonnx_frames} frames: {exact}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simulator.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["simulator_equals_qonnx"] else 1)
