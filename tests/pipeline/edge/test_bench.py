"""`bnnflow edge bench`: every variant and the float model of the same architecture, timed side by side."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.pipeline.edge import runtime


def test_bench_writes_latencies_and_plot(cli, digits_run: Path, tmp_path: Path) -> None:
    assert cli("edge", "export", str(digits_run)).returncode == 0
    done = cli("edge", "bench", str(digits_run), "--runs", "3", "--threads", "1", "--provider", "cpu")
    assert done.returncode == 0, done.stderr
    assert "running on CPUExecutionProvider" in done.stderr
    report = json.loads((digits_run / "edge" / "bench.json").read_text())
    assert set(report["models"]) == {"float", "reference", "int8", "bitpacked"}
    assert report["runs"] == 3 and report["threads"] == 1 and report["batch"] == 1
    for entry in report["models"].values():
        assert 0 < entry["p50_ms"] <= entry["p90_ms"] <= entry["p99_ms"]
        assert entry["frames_per_second"] > 0 and entry["provider"] == "CPUExecutionProvider"
    assert report["models"]["float"]["speedup_vs_float"] == 1.0
    assert (digits_run / "edge" / "bench.png").stat().st_size > 1000
    # the float model is the reference without its signs: the same layers, float activations
    reference = ModelWrapper(str(digits_run / "edge" / "reference.onnx"))
    floating = ModelWrapper(str(digits_run / "edge" / "float.onnx"))
    ops, float_ops = ([n.op_type for n in m.graph.node] for m in (reference, floating))
    assert "Where" in ops and "Where" not in float_ops
    assert ops.count("MatMul") == float_ops.count("MatMul")
    inputs = np.random.default_rng(0).random((2, 1, 8, 8), dtype=np.float32)
    assert np.isfinite(runtime.run_batches(runtime.session(digits_run / "edge" / "float.onnx"), inputs)).all()


def test_bench_needs_an_export_and_a_known_provider(cli, digits_run: Path, tmp_path: Path) -> None:
    import shutil

    bare = tmp_path / "copy"
    shutil.copytree(digits_run, bare, ignore=shutil.ignore_patterns("edge"))
    missing = cli("edge", "bench", str(bare))
    assert missing.returncode == 2 and "bnnflow edge export" in missing.stderr and "Traceback" not in missing.stderr
    assert cli("edge", "export", str(digits_run)).returncode == 0
    unknown = cli("edge", "bench", str(digits_run), "--provider", "nosuch")
    assert unknown.returncode == 2 and "not available" in unknown.stderr
