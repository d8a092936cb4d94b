"""Bi-Real Net 18 at 224x224 under ONNX Runtime against the float ResNet-18, at 1 thread and batch 1, in one run.

    python benchmarks/edge.py [--runs 50] [--threads 1] [--out runs/bench/edge]

Exports Bi-Real Net 18 (random weights, 1000 classes) to QONNX, builds its edge variants (reference: standard
ops; int8: the binary convs as int8 QDQ for ONNX Runtime's QLinearConv, calibrated on random images; bitpacked:
the binary convs on bnnflow's XNOR kernel), exports the float ResNet-18 of the same layout, and
times all three in interleaved rounds (``pipeline/edge/bench.py``). Prints p50/p90/p99 latency and each
variant's speed-up over the float model, checks the bitpacked outputs against the reference's, and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

from bnnflow.models import create_model
from bnnflow.pipeline.edge import runtime
from bnnflow.pipeline.edge.bench import float_twin, measure
from bnnflow.pipeline.edge.int8 import int8_model
from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model
from bnnflow.pipeline.export import export_model


def build(out: Path, size: int) -> dict[str, Path]:
    """The three models of the comparison, written to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    shape = (3, size, size)
    torch.manual_seed(0)
    binary = create_model("birealnet18", input_shape=shape, num_classes=1000).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = reference_model(export_model(binary, shape))
    bitpacked, replaced = bitpacked_model(reference)
    if replaced != 16:
        sys.exit(f"edge benchmark: {replaced} of Bi-Real-18's 16 binary convs reached the kernel")
    paths = {"float_resnet18": float_twin("resnet18", shape, 1000, out / "resnet18.onnx"),
             "reference": out / "birealnet18_reference.onnx", "int8": out / "birealnet18_int8.onnx",
             "bitpacked": out / "birealnet18_bitpacked.onnx"}
    reference.save(str(paths["reference"]))
    bitpacked.save(str(paths["bitpacked"]))
    calibration = np.random.default_rng(1).random((8, *shape), dtype=np.float32)
    if int8_model(reference, calibration, paths["int8"]) != 16:
        sys.exit("edge benchmark: not all of Bi-Real-18's 16 binary convs were quantized to int8")
    return paths


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=50, help="timed rounds (each runs every model once)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed rounds first")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime intra-op threads")
    parser.add_argument("--size", type=int, default=224, help="image side (224 is the benchmark's)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench/edge"), help="folder for models and edge.json")
    args = parser.parse_args(argv)
    paths = build(args.out, args.size)
    x = np.random.default_rng(0).random((2, 3, args.size, args.size), dtype=np.float32)
    want = runtime.run_batches(runtime.session(paths["reference"]), x)
    got = runtime.run_batches(runtime.session(paths["bitpacked"]), x)
    agree = bool(np.allclose(got, want, rtol=1e-5, atol=1e-4 * float(np.abs(want).max())))
    report = measure(paths, runs=args.runs, warmup=args.warmup, threads=args.threads)
    base = report["models"]["float_resnet18"]["p50_ms"]
    for entry in report["models"].values():
        entry["speedup_vs_float"] = round(base / entry["p50_ms"], 2)
    report["bitpacked_equals_reference"] = agree
    print(f"{'model':<16}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'frames/s':>10}{'vs float':>10}")
    for name, entry in report["models"].items():
        print(f"{name:<16}{entry['p50_ms']:>9.2f}{entry['p90_ms']:>9.2f}{entry['p99_ms']:>9.2f}"
              f"{entry['frames_per_second']:>10.1f}{entry['speedup_vs_float']:>9.2f}x")
    print(f"bitpacked outputs equal the reference's: {agree}  ({args.threads} thread(s), batch 1, "
          f"{args.size}x{args.size}, {args.runs} rounds)")
    (args.out / "edge.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
