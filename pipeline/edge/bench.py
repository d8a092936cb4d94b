"""Latency of ONNX Runtime models measured side by side: rounds interleave the models, so that a change in the
machine's load hits them all alike and their ratios stay meaningful on a shared machine."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bnnflow.pipeline.edge import runtime


def float_twin(name: str, input_shape: tuple[int, ...], num_classes: int, path: Path) -> Path:
    """The float model of the same architecture (e.g. resnet18 for birealnet18), exported for ONNX Runtime."""
    import warnings

    from bnnflow.models import create_model

    model = create_model(name, input_shape=input_shape, num_classes=num_classes).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.zeros(1, *input_shape), str(path), dynamo=False, opset_version=17)
    return path


def measure(models: dict[str, Path], runs: int = 50, warmup: int = 5, threads: int = 1,
            provider: str | None = None) -> dict[str, Any]:
    """p50 / p90 / p99 latency (ms) and frames/s of each model at batch 1, measured in interleaved rounds."""
    sessions = {name: runtime.session(path, threads, provider) for name, path in models.items()}
    feeds = {}
    for name, sess in sessions.items():
        inp = sess.get_inputs()[0]
        shape = [d if isinstance(d, int) else 1 for d in inp.shape]
        feeds[name] = {inp.name: np.random.default_rng(0).random(shape, dtype=np.float32)}
    for _ in range(warmup):
        for name, sess in sessions.items():
            sess.run(None, feeds[name])
    times: dict[str, list[float]] = {name: [] for name in sessions}
    for _ in range(runs):
        for name, sess in sessions.items():
            started = time.perf_counter()
            sess.run(None, feeds[name])
            times[name].append(time.perf_counter() - started)
    report: dict[str, Any] = {"runs": runs, "warmup": warmup, "threads": threads, "batch": 1, "models": {}}
    for name, values in times.items():
        ms = np.asarray(values) * 1000
        report["models"][name] = {
            "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p90_ms": round(float(np.percentile(ms, 90)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3),
            "frames_per_second": round(1000 / float(np.percentile(ms, 50)), 1),
            "provider": sessions[name].get_providers()[0],
        }
    return report
