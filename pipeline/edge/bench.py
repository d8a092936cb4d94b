"""Latency of ONNX Runtime models measured side by side: rounds interleave the models, so that a change in the
machine's load hits them all alike and their ratios stay meaningful on a shared machine."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from qonnx.core.modelwrapper import ModelWrapper

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


#: registered binary models whose float counterpart is a model of its own
FLOAT_TWINS = {"birealnet18": "resnet18"}


def float_graph(reference: ModelWrapper) -> ModelWrapper:
    """The reference graph without its binarization (each sign bypassed): the same layers in float, so the same
    work for ONNX Runtime as a float network of that architecture."""
    from bnnflow.pipeline.edge.variants import RemoveDeadNodes, binary_source

    model = copy.deepcopy(reference)
    for node in list(model.graph.node):
        if node.op_type == "Where" and binary_source(model, node.output[0]) is not None:
            source = binary_source(model, node.output[0])[0]
            for consumer in model.find_consumers(node.output[0]):
                consumer.input[list(consumer.input).index(node.output[0])] = source
    return model.transform(RemoveDeadNodes())


def bench_run(run_root: Path, model_name: str, input_shape: tuple[int, ...], num_classes: int, runs: int,
              threads: int, provider: str | None) -> dict[str, Any]:
    """Time the run's exported variants and the float model of the same architecture; write bench.json / .png."""
    from bnnflow.pipeline.rundir import atomic_path, atomic_write_text

    folder = run_root / "edge"
    twin = folder / "float.onnx"
    with atomic_path(twin) as tmp:
        if model_name in FLOAT_TWINS:
            float_twin(FLOAT_TWINS[model_name], input_shape, num_classes, tmp)
        else:
            float_graph(ModelWrapper(str(folder / "reference.onnx"))).save(str(tmp))
    models = {"float": twin, **{v: folder / f"{v}.onnx" for v in ("reference", "int8", "bitpacked")}}
    report = measure(models, runs=runs, threads=threads, provider=provider)
    base = report["models"]["float"]["p50_ms"]
    for entry in report["models"].values():
        entry["speedup_vs_float"] = round(base / entry["p50_ms"], 2)
    atomic_write_text(folder / "bench.json", json.dumps(report, indent=2) + "\n")
    plot(report, folder / "bench.png")
    return report


def bench_stage(cfg, run, runs: int, threads: int, provider: str | None) -> dict[str, Any]:
    """The bench step of a run (``RunDir``): time its edge models, say how each did, return the p50 figures."""
    from bnnflow.errors import ConfigError
    from bnnflow.pipeline.console import out
    from bnnflow.pipeline.onnx_files import load_model

    if not (run.root / "edge" / "bitpacked.onnx").is_file():
        raise ConfigError(f"{run.root} has no edge models; run `bnnflow edge export {run.root}` first")
    chosen = runtime.providers(provider)
    out.info(f"edge bench: running on {chosen[0]}" + (f" (also available: {', '.join(chosen[1:])})"
                                                      if len(chosen) > 1 else ""))
    model = load_model(run.qonnx, "export")
    shape = tuple(model.get_tensor_shape(model.graph.input[0].name)[1:])
    classes = model.get_tensor_shape(model.graph.output[0].name)[-1]
    report = bench_run(run.root, cfg.model.name, shape, classes, runs, threads, provider)
    for name, entry in report["models"].items():
        out.info(f"{name:>10}: p50 {entry['p50_ms']:.3f} ms, p90 {entry['p90_ms']:.3f}, p99 {entry['p99_ms']:.3f}; "
                 f"{entry['frames_per_second']:,.0f} frames/s, {entry['speedup_vs_float']}x the float model")
    return {f"{name}_p50_ms": entry["p50_ms"] for name, entry in report["models"].items()}


def plot(report: dict[str, Any], path: Path) -> None:
    """p50 latency per model with p90-p99 whiskers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bnnflow.pipeline.report import save_png

    names = list(report["models"])
    p50 = [report["models"][n]["p50_ms"] for n in names]
    p99 = [report["models"][n]["p99_ms"] for n in names]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(names) + 1.5))
    ax.barh(names, p50, xerr=[[0] * len(names), [b - a for a, b in zip(p50, p99)]], color="#2e86c1")
    for i, name in enumerate(names):
        ax.text(p50[i], i, f"  {report['models'][name]['speedup_vs_float']}x", va="center")
    ax.set_xlabel(f"latency, ms (p50, whisker to p99; batch 1, {report['threads']} thread(s))")
    ax.invert_yaxis()
    save_png(fig, path)


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
