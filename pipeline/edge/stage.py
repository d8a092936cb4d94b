"""The edge export of a run: ``RUN/edge/{reference,bitpacked}.onnx``, each checked before it is kept.

A run that compiled to hardware (dataflow.onnx) is checked against the bit-exact simulator: every test output
of each variant must equal the simulator's, mapped to model outputs (``pipeline/golden.py``). A network that has
no hardware form (a residual one) is checked against model.qonnx under qonnx's executor instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import VerificationError
from bnnflow.pipeline.config import Config
from bnnflow.pipeline.console import out
from bnnflow.pipeline.edge import runtime
from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model
from bnnflow.pipeline.golden import SCORE_RTOL, expected_outputs, model_inputs
from bnnflow.pipeline.onnx_files import load_model, save_model
from bnnflow.pipeline.rundir import RunDir, atomic_write_text


def write_variants(model: ModelWrapper, folder: Path) -> dict[str, Any]:
    """reference.onnx and bitpacked.onnx of ``model`` in ``folder``."""
    reference = reference_model(model)
    bitpacked, replaced = bitpacked_model(reference)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(reference, folder / "reference.onnx")
    save_model(bitpacked, folder / "bitpacked.onnx")
    return {"binary_layers_on_kernel": replaced}


def mismatches(expected: np.ndarray, got: np.ndarray) -> int:
    """Samples whose outputs differ (integers exactly; float scores beyond the rounding of their scale)."""
    expected, got = expected.reshape(len(expected), -1), got.reshape(len(got), -1)
    if np.issubdtype(expected.dtype, np.integer):
        close = expected == got
    else:
        close = np.isclose(got, expected, rtol=SCORE_RTOL, atol=1e-6)
    return int((~close.all(axis=1)).sum())


def edge_export_run(cfg: Config, run: RunDir) -> dict[str, Any]:
    """Write the variants of the run's model.qonnx and check each on the test inputs."""
    model = load_model(run.qonnx, "export")
    folder = run.root / "edge"
    figures = write_variants(model, folder)
    samples = cfg.compile.verify_samples
    images = model_inputs(cfg, run, samples or 10**9)
    if run.dataflow.is_file():
        expected, label = expected_outputs(cfg, run, images)
        against = "the simulator"
    else:
        from bnnflow.pipeline.execute import execute

        expected, label = execute(model, images)[model.graph.output[0].name], False
        against = "model.qonnx"
    report: dict[str, Any] = {"checked_against": against, "samples": len(images), "variants": {}}
    for variant in ("reference", "bitpacked"):
        got = runtime.run_batches(runtime.session(folder / f"{variant}.onnx"), images)
        if label:
            got = got.reshape(len(images), -1).argmax(axis=1)[:, None]
        report["variants"][variant] = {"mismatches": mismatches(expected, got), "file": f"{variant}.onnx"}
    atomic_write_text(folder / "export.json", json.dumps({**figures, **report}, indent=2) + "\n")
    bad = {v: r["mismatches"] for v, r in report["variants"].items() if r["mismatches"]}
    if bad:
        raise VerificationError(f"edge: outputs differ from {against} on {len(images)} test inputs: "
                                f"{', '.join(f'{v} {n}' for v, n in bad.items())}; see {folder / 'export.json'}")
    out.info(f"edge: reference and bitpacked ({figures['binary_layers_on_kernel']} binary layers on the kernel) "
             f"equal {against} on all {len(images)} test inputs")
    return {**figures, "checked_against": against, "verified_samples": len(images), "mismatches": 0}
