"""ONNX Runtime sessions for the edge variants, on the execution providers present."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bnnflow.errors import ConfigError

#: execution providers in order of preference; CPU is always there
PREFERRED_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")


def uses_kernel(path: Path) -> bool:
    """Whether the model holds our custom ops (it then needs onnxruntime-extensions and the C kernel)."""
    return any(node.domain == "ai.onnx.contrib" for node in onnx.load(str(path), load_external_data=False).graph.node)


def providers(requested: str | None = None) -> list[str]:
    """The providers to run on: ``requested`` (CPU as fallback) or every preferred one present."""
    available = ort.get_available_providers()
    if requested is None:
        return [p for p in PREFERRED_PROVIDERS if p in available]
    name = requested if requested.endswith("ExecutionProvider") else f"{requested.upper()}ExecutionProvider"
    if name.upper() not in {p.upper() for p in available}:
        raise ConfigError(f"execution provider {requested!r} is not available here (available: "
                          f"{', '.join(available)})")
    matched = next(p for p in available if p.upper() == name.upper())
    return [matched] if matched == "CPUExecutionProvider" else [matched, "CPUExecutionProvider"]


def session(path: Path, threads: int = 1, provider: str | None = None) -> ort.InferenceSession:
    """A session for one variant; ``threads`` intra-op threads (0 = ONNX Runtime's default)."""
    if uses_kernel(path):
        from bnnflow.pipeline.edge.custom_ops import session_options

        options = session_options()
    else:
        options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers(provider))


def run_batches(sess: ort.InferenceSession, inputs: np.ndarray) -> np.ndarray:
    """Outputs for ``inputs`` (N, ...), one sample per call, as the exported graphs take batch 1."""
    name = sess.get_inputs()[0].name
    shape = [d if isinstance(d, int) else 1 for d in sess.get_inputs()[0].shape]
    return np.concatenate([sess.run(None, {name: x.reshape(shape).astype(np.float32)})[0] for x in inputs])
