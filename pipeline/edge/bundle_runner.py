"""Run a bnnflow edge bundle's model with ONNX Runtime, checked against what bnnflow computed.

Needs only onnxruntime and numpy (and onnxruntime-extensions for bitpacked.onnx).

    python run.py                              # the bundle's sample inputs, the default model, checked
    python run.py --input images.npy           # float32 array, (N, ...) in the model's input layout
    python run.py --model int8.onnx --bench 100 --threads 4
    python run.py --model bitpacked.onnx       # needs onnxruntime-extensions and the built kernel (README)

First each model file's sha256 is compared with bundle.json's. Then it prints each input's predicted label; on the
bundle's own sample inputs it compares the outputs with expected.json (README.md: what equal means per model);
with --bench, the p50/p90/p99 latency over that many runs.
Exit codes: 0 checked (or run on your inputs), 1 a dependency missing, 2 bad arguments, 3 a model file missing or
altered since the bundle was written, 4 outputs that differ from bnnflow's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import onnxruntime as ort

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "sample_inputs.npy"
MISSING, ARGUMENTS, ALTERED, DIFFERS = 1, 2, 3, 4


def fail(message: str, code: int) -> NoReturn:
    """One line on stderr and exit ``code``: what is wrong and what to do, no traceback."""
    print(f"run.py: {message}", file=sys.stderr)
    sys.exit(code)


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line too (its own prints the usage first)."""

    def error(self, message: str) -> NoReturn:
        fail(message, ARGUMENTS)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify_models(recorded: dict[str, str], target: str) -> None:
    """Every model file must be the one bnnflow wrote and checked: its sha256 as bundle.json records it."""
    for name, digest in recorded.items():
        path = HERE / name
        if not path.is_file() or sha256(path) != digest:
            state = "is missing" if not path.is_file() else "differs from the file bnnflow wrote (sha256)"
            fail(f"{name} {state}; extract the bundle again, or rebuild it with `bnnflow edge bundle RUN --target "
                 f"{target}`", ALTERED)


def differing(expected: dict[str, Any], scores: np.ndarray) -> np.ndarray:
    """Per sample, whether ``scores`` (N, classes) differ from ``expected`` (an expected.json entry): a score
    beyond the sample's tolerance of the expected one (labels then agree but between classes within twice the
    tolerance of a tie), or the label where only labels are recorded (an accelerator that selects the label)."""
    if expected["scores"] is None:
        return scores.argmax(axis=1) != np.asarray(expected["labels"])
    reference = np.asarray(expected["scores"], np.float32)
    tolerance = np.asarray(expected["tolerance"], np.float32)[:, None]
    return ~(np.abs(scores - reference) <= tolerance).all(axis=1)  # NaN differs


def session(model: Path, threads: int, provider: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    if "bitpacked" in model.name:
        try:
            sys.path.insert(0, str(HERE / "kernel"))
            import bnn_ops  # noqa: F401  (registers the ops)
            from onnxruntime_extensions import get_library_path
        except (ImportError, OSError) as err:  # OSError: kernel/libbnn_xnor.so not built
            fail(f"{model.name} needs onnxruntime-extensions and the kernel built on this board ({err}); "
                 "see README.md", MISSING)
        options.register_custom_ops_library(get_library_path())
    available = ort.get_available_providers()
    wanted = {"cpu": ["CPUExecutionProvider"], "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
              "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]}[provider]
    providers = [p for p in wanted if p in available]
    if providers[0] != wanted[0]:
        print(f"run.py: {wanted[0]} is not available here; running on {providers[0]}", file=sys.stderr)
    return ort.InferenceSession(str(model), options, providers=providers)


def load_inputs(path: Path, shape: list[int]) -> np.ndarray:
    """The samples of ``path`` (a .npy array, samples on axis 0), each the size of one model input."""
    if not path.is_file():
        fail(f"no input file {path}", ARGUMENTS)
    try:
        inputs = np.load(path)
    except (OSError, ValueError) as err:
        fail(f"{path} is not a .npy array of numbers ({err})", ARGUMENTS)
    sample = shape[1:]
    if (not isinstance(inputs, np.ndarray) or inputs.ndim < 1 or not len(inputs) or inputs.dtype.kind not in "biuf"
            or int(np.prod(inputs.shape[1:])) != int(np.prod(sample))):
        found = inputs.shape if isinstance(inputs, np.ndarray) else "an .npz archive"
        fail(f"{path} holds {found}; the model takes (N, {', '.join(map(str, sample))}) float32", ARGUMENTS)
    return inputs.astype(np.float32)


def compare(model: str, scores: np.ndarray, checked_with: str, running_on: str) -> None:
    """Compare outputs on the bundle's sample inputs with expected.json: one line either way."""
    try:
        expected = json.loads((HERE / "expected.json").read_text())["models"][model]
        differ = (np.ones(len(scores), bool) if len(scores) != len(expected["labels"])  # not the bundle's samples
                  else differing(expected, scores))
    except (OSError, ValueError, KeyError, TypeError) as err:
        fail(f"expected.json is unreadable ({err!r}); extract the bundle again", ALTERED)
    against = expected["against"]
    if differ.any():
        fail(f"{int(differ.sum())} of {len(scores)} outputs of {model} differ from those of {against} (first at index "
             f"{int(differ.argmax())}); bnnflow checked this bundle with onnxruntime {checked_with} on CPU, this is "
             f"onnxruntime {ort.__version__} on {running_on}: see README.md", DIFFERS)
    if expected["exact"]:
        print(f"run.py: all {len(scores)} outputs of {model} equal those of {against}")
        return
    print(f"run.py: all {len(scores)} outputs of {model} are within its tolerance (at most "
          f"{tolerance_share(expected):.2%} of a sample's largest score) of those of {against}")


def tolerance_share(expected: dict[str, Any]) -> float:
    """The largest of an expected.json entry's tolerances as a share of its sample's largest score."""
    largest = np.abs(np.asarray(expected["scores"], np.float64)).max(axis=1)
    return float((np.asarray(expected["tolerance"]) / np.maximum(largest, 1e-30)).max())


def bench(sess: ort.InferenceSession, feed: dict[str, np.ndarray], runs: int, threads: int) -> None:
    for _ in range(5):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - started) * 1000)
    p50, p90, p99 = np.percentile(times, [50, 90, 99])
    print(f"latency over {runs} runs: p50 {p50:.2f} ms, p90 {p90:.2f} ms, p99 {p99:.2f} ms "
          f"on {sess.get_providers()[0]}, {threads} thread(s)")


def main() -> None:
    try:
        manifest = json.loads((HERE / "bundle.json").read_text())
    except (OSError, ValueError) as err:
        fail(f"bundle.json is unreadable ({err}); extract the bundle again", ALTERED)
    parser = Parser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=manifest["default_model"], choices=sorted(manifest["sha256"]),
                        help="an .onnx file of this bundle")
    parser.add_argument("--input", type=Path, default=SAMPLES,
                        help="float32 .npy, samples on axis 0 [default: the bundle's sample inputs, checked]")
    parser.add_argument("--threads", type=int, default=manifest["threads"], help="intra-op threads")
    parser.add_argument("--provider", choices=["cpu", "cuda", "tensorrt"], default=manifest["provider"])
    parser.add_argument("--bench", type=int, default=0, help="time this many runs of the first input")
    args = parser.parse_args()
    verify_models(manifest["sha256"], manifest["target"])
    labels = (HERE / "labels.txt").read_text().splitlines()
    sess = session(HERE / args.model, args.threads, args.provider)
    name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    inputs = load_inputs(args.input, shape)
    scores = np.array([sess.run(None, {name: x.reshape(shape)})[0].reshape(-1) for x in inputs], np.float32)
    for i, row in enumerate(scores):
        print(f"{i}: {labels[int(row.argmax())]}")
    if args.input.resolve() == SAMPLES:
        compare(args.model, scores, manifest["onnxruntime"], sess.get_providers()[0])
    if args.bench:
        bench(sess, {name: inputs[0].reshape(shape)}, args.bench, args.threads)


if __name__ == "__main__":
    main()
