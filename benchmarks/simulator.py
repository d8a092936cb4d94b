"""Simulator throughput on CNV-w1a1 and ResNet-20 hw (batch 256) against PyTorch and qonnx's executor, in one run.

    python benchmarks/simulator.py [--networks cnv,resnet20] [--frames 256] [--qonnx-frames 16] [--out runs/bench]

For each network (BNN-PYNQ's CNV w1a1; the binary CIFAR ResNet-20 with ``hw = true``: residual joins, padded
binary convs, 8-bit streams), builds it with random weights and BatchNorm statistics from random images with a
share of negative scales, exports and compiles it, then times on the same frames:
- the bit-exact simulator on dataflow.onnx (inputs: the accelerator's integer codes);
- (a) the PyTorch eval forward of the same Brevitas model (inputs: the float images);
- (b) qonnx's executor on the same dataflow.onnx (fewer frames: it is slow; frames/s is what is compared).
Prints frames/s and the two ratios per network, checks the simulator's outputs equal qonnx's, and writes JSON to
--out (``simulator.json``: one entry per network).
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


#: the benchmarked networks: registry name and arguments
NETWORKS = {
    "cnv": ("cnv w1a1 (BNN-PYNQ), random weights", "cnv", {}),
    "resnet20": ("resnet20 hw (binary CIFAR ResNet-20, quantized joins), random weights", "resnet20", {"hw": True}),
}


def _network(name: str, kwargs: dict, shape: tuple[int, ...]) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, input_shape=shape, num_classes=10, **kwargs)
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


def measure(key: str, frames: int, qonnx_frames: int, repeats: int) -> dict:
    """One network's row: simulator, PyTorch and qonnx frames/s on the same frames, and the exactness check."""
    description, name, kwargs = NETWORKS[key]
    shape = (3, 32, 32)
    model = _network(name, kwargs, shape)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        qonnx_model = export_model(model, shape)
    streamlined, dataflow, _ = compile_model(qonnx_model, CompileConfig(board="ulx3s"))
    images = np.random.default_rng(0).random((frames, *shape), dtype=np.float32)
    hw_in_name = dataflow.get_metadata_prop("bnnflow.streamlined_input")
    codes = to_accelerator(dataflow, execute(streamlined, images[:qonnx_frames], [hw_in_name])[hw_in_name])
    codes = np.concatenate([codes] * -(-frames // len(codes)))[:frames]  # a batch of real codes

    simulator = Simulator(dataflow)
    simulator.run(codes)  # warm-up: builds the C kernel on first use
    sim_s = _best_of(repeats, lambda: simulator.run(codes))
    torch_in = torch.from_numpy(images)
    with torch.no_grad():
        model(torch_in)
        torch_s = _best_of(repeats, lambda: model(torch_in))
    few = codes[:qonnx_frames]
    reference = {}
    qonnx_s = _best_of(1, lambda: reference.update(execute(dataflow, few)))
    exact = np.array_equal(simulator.run(few), reference[dataflow.graph.output[0].name].astype(np.int64))
    result = {
        "network": description,
        "frames": frames,
        "simulator_fps": frames / sim_s,
        "pytorch_fps": frames / torch_s,
        "qonnx_fps": qonnx_frames / qonnx_s,
        "qonnx_frames": qonnx_frames,
        "simulator_equals_qonnx": exact,
    }
    result["ratio_vs_pytorch"] = result["simulator_fps"] / result["pytorch_fps"]
    result["ratio_vs_qonnx"] = result["simulator_fps"] / result["qonnx_fps"]
    return result


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", default=",".join(NETWORKS), help=f"comma-separated, of {', '.join(NETWORKS)}")
    parser.add_argument("--frames", type=int, default=256, help="batch for the simulator and PyTorch")
    parser.add_argument("--qonnx-frames", type=int, default=16, help="frames for qonnx's (slow) executor")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs; the best is kept")
    parser.add_argument("--out", type=Path, default=Path("runs/bench"), help="folder for simulator.json")
    args = parser.parse_args(argv)
    keys = [key.strip() for key in args.networks.split(",") if key.strip()]
    unknown = [key for key in keys if key not in NETWORKS]
    if unknown or not keys:
        parser.error(f"--networks: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(NETWORKS)}")

    rows = {key: measure(key, args.frames, args.qonnx_frames, args.repeats) for key in keys}
    print(f"batch {args.frames}, PyTorch on {torch.get_num_threads()} threads")
    print(f"{'frames/s':12}{'simulator':>12}{'PyTorch eval':>14}{'sim/PyTorch':>13}{'qonnx exec':>12}{'sim/qonnx':>11}"
          f"  simulator == qonnx")
    for key, row in rows.items():
        print(f"{key:12}{row['simulator_fps']:>12.1f}{row['pytorch_fps']:>14.1f}{row['ratio_vs_pytorch']:>12.2f}x"
              f"{row['qonnx_fps']:>12.2f}{row['ratio_vs_qonnx']:>10.0f}x  {row['simulator_equals_qonnx']} "
              f"({row['qonnx_frames']} frames)")
    result = {"frames": args.frames, "torch_threads": torch.get_num_threads(), "networks": rows,
              "simulator_equals_qonnx": all(row["simulator_equals_qonnx"] for row in rows.values())}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simulator.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    sys.exit(0 if main()["simulator_equals_qonnx"] else 1)
