"""Run a bnnflow edge bundle's model with ONNX Runtime: needs only onnxruntime and numpy.

    python run.py                              # the bundle's sample inputs, the default model
    python run.py --input images.npy           # float32 array, (N, ...) in the model's input layout
    python run.py --model int8.onnx --bench 100 --threads 4
    python run.py --model bitpacked.onnx       # needs onnxruntime-extensions and the built kernel (README)

Prints each input's predicted label; with --bench, the p50/p90/p99 latency over that many runs.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent


def session(model: Path, threads: int, provider: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if "bitpacked" in model.name:
        try:
            sys.path.insert(0, str(HERE / "kernel"))
            import bnn_ops  # noqa: F401  (registers the ops)
            from onnxruntime_extensions import get_library_path
        except ImportError as err:
            sys.exit(f"run.py: {model.name} needs onnxruntime-extensions and the built kernel ({err}); see README.md")
        options.register_custom_ops_library(get_library_path())
    available = ort.get_available_providers()
    wanted = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}[provider]
    providers = [p for p in wanted if p in available]
    if providers[0] != wanted[0]:
        print(f"run.py: {wanted[0]} is not available here; running on {providers[0]}", file=sys.stderr)
    return ort.InferenceSession(str(model), options, providers=providers)


def main() -> None:
    manifest = json.loads((HERE / "bundle.json").read_text())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=manifest["default_model"], help="an .onnx file of this bundle")
    parser.add_argument("--input", default="sample_inputs.npy", help="float32 .npy, samples on axis 0")
    parser.add_argument("--threads", type=int, default=manifest["threads"], help="intra-op threads")
    parser.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default=manifest["provider"])
    parser.add_argument("--bench", type=int, default=0, help="time this many runs of the first input")
    args = parser.parse_args()
    labels = (HERE / "labels.txt").read_text().splitlines()
    sess = session(HERE / args.model, args.threads, args.provider)
    name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    inputs = np.load(HERE / args.input if not Path(args.input).is_absolute() else args.input).astype(np.float32)
    for i, x in enumerate(inputs):
        scores = sess.run(None, {name: x.reshape(shape)})[0].reshape(-1)
        print(f"{i}: {labels[int(scores.argmax())]}")
    if args.bench:
        feed = {name: inputs[0].reshape(shape)}
        for _ in range(5):
            sess.run(None, feed)
        times = []
        for _ in range(args.bench):
            started = time.perf_counter()
            sess.run(None, feed)
            times.append((time.perf_counter() - started) * 1000)
        p50, p90, p99 = np.percentile(times, [50, 90, 99])
        print(f"latency over {args.bench} runs: p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms "
              f"on {sess.get_providers()[0]}, {args.threads} thread(s)")


if __name__ == "__main__":
    main()
