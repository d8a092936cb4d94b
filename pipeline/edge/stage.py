"""The edge export of a run: ``RUN/edge/{reference,int8,bitpacked}.onnx``, each checked before it is kept.

A run that compiled to hardware (dataflow.onnx) is checked against the bit-exact simulator: every test output
of the exact variants (reference, bitpacked) must equal the simulator's, mapped to model outputs
(``simulated.py``). A network that has no hardware form (a residual one) is checked against model.qonnx
under qonnx's executor instead. The int8 variant requantizes accumulators, so it is measured, not required to
match: how many outputs differ, how many labels change, and the test accuracy of each variant.
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
from bnnflow.pipeline.edge.int8 import int8_model
from bnnflow.pipeline.edge.simulated import run_simulator_outputs
from bnnflow.pipeline.edge.variants import bitpacked_model, reference_model
from bnnflow.pipeline.export import FLOAT_RTOL, compare_outputs, is_integer_network
from bnnflow.pipeline.golden import SCORE_RTOL, model_inputs
from bnnflow.pipeline.onnx_files import load_model, save_model
from bnnflow.pipeline.rundir import RunDir, atomic_path, atomic_write_text

EXACT_VARIANTS = ("reference", "bitpacked")


def write_variants(model: ModelWrapper, folder: Path, calibration: np.ndarray) -> dict[str, Any]:
    """reference.onnx, int8.onnx (calibrated on ``calibration``) and bitpacked.onnx of ``model`` in ``folder``."""
    reference = reference_model(model)
    bitpacked, replaced = bitpacked_model(reference)
    folder.mkdir(parents=True, exist_ok=True)
    save_model(reference, folder / "reference.onnx")
    save_model(bitpacked, folder / "bitpacked.onnx")
    with atomic_path(folder / "int8.onnx") as tmp:
        quantized = int8_model(reference, calibration, tmp)
    return {"binary_layers_on_kernel": replaced, "binary_layers_int8": quantized}


def mismatches(expected: np.ndarray, got: np.ndarray, float_network: bool = False) -> int:
    """Samples whose outputs differ: integers exactly; float scores beyond the rounding of their scale; a network
    with float layers (checked against model.qonnx) within the export check's tolerance."""
    if float_network:
        return compare_outputs(expected, got.reshape(expected.shape), FLOAT_RTOL)["mismatches"]
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
    samples = cfg.compile.verify_samples
    images = model_inputs(cfg, run, samples or 10**9)
    figures = write_variants(model, folder, images[:CALIBRATION_SAMPLES])
    labels = split_labels(cfg, run, len(images))
    if run.dataflow.is_file():
        expected, label = run_simulator_outputs(run, images)
        against = "the simulator"
    else:
        from bnnflow.pipeline.execute import execute

        expected, label = execute(model, images)[model.graph.output[0].name], False
        against = "model.qonnx"
    float_network = against == "model.qonnx" and not is_integer_network(model)
    report: dict[str, Any] = {"checked_against": against, "samples": len(images), "variants": {}}
    predicted: dict[str, np.ndarray] = {}
    for variant in ("reference", "int8", "bitpacked"):
        scores = runtime.run_batches(runtime.session(folder / f"{variant}.onnx"), images).reshape(len(images), -1)
        got = scores.argmax(axis=1)[:, None] if label else scores
        entry = {"file": f"{variant}.onnx", "exact": variant in EXACT_VARIANTS,
                 "mismatches": mismatches(expected, got, float_network)}
        predicted[variant] = scores.argmax(axis=1)
        if variant == "int8":
            entry["label_changes"] = int((predicted["int8"] != predicted["reference"]).sum())
        if labels is not None:
            entry["test_accuracy"] = round(float((predicted[variant] == labels).mean()), 4)
        report["variants"][variant] = entry
    atomic_write_text(folder / "export.json", json.dumps({**figures, **report}, indent=2) + "\n")
    bad = {v: r["mismatches"] for v, r in report["variants"].items() if r["exact"] and r["mismatches"]}
    if bad:
        raise VerificationError(f"edge: outputs differ from {against} on {len(images)} test inputs: "
                                f"{', '.join(f'{v} {n}' for v, n in bad.items())}; see {folder / 'export.json'}")
    int8 = report["variants"]["int8"]
    out.info(f"edge: reference and bitpacked ({figures['binary_layers_on_kernel']} binary layers on the kernel) "
             f"equal {against} on all {len(images)} test inputs; int8 ({figures['binary_layers_int8']} layers) "
             f"changes {int8['label_changes']} of {len(images)} predicted labels")
    accuracy = {f"{v}_test_accuracy": r["test_accuracy"] for v, r in report["variants"].items() if "test_accuracy" in r}
    return {**figures, "checked_against": against, "verified_samples": len(images), "mismatches": 0,
            "int8_label_changes": int8["label_changes"], **accuracy}


#: inputs the int8 variant's activation ranges are calibrated on
CALIBRATION_SAMPLES = 64


def split_labels(cfg: Config, run: RunDir, count: int) -> np.ndarray | None:
    """The test split's labels, or None for a run compiled from a file (its inputs have none)."""
    if (run.verify_dir / "inputs.npy").is_file():
        return None
    from bnnflow.pipeline.data import load_data, stack

    return stack(load_data(cfg.data).test)[1].numpy()[:count]


def edge_bundle_run(cfg: Config, run: RunDir, target: str) -> dict[str, Any]:
    """RUN/edge/bundle-TARGET.tar.gz from the exported variants, with the run's class names, sample inputs and
    every model's expected outputs on them, checked here first as run.py will check them on the board."""
    from bnnflow.pipeline.edge.bundle import require_export, write_bundle
    from bnnflow.pipeline.edge.expected import check_on_host, exact_expectation, expected_record

    folder = run.root / "edge"
    require_export(folder, target)
    report = folder / "export.json"
    accuracy = {}
    if report.is_file():
        variants = json.loads(report.read_text()).get("variants", {})
        accuracy = {v: r["test_accuracy"] for v, r in variants.items() if "test_accuracy" in r}
    if (run.verify_dir / "inputs.npy").is_file():
        classes = load_model(run.qonnx, "export").get_tensor_shape(load_model(run.qonnx, "export").graph.output[0].name)
        labels = [str(i) for i in range(classes[-1])]
    else:
        from bnnflow.pipeline.data import load_data

        labels = list(load_data(cfg.data).class_names)
    images = model_inputs(cfg, run, BUNDLE_SAMPLES)
    expected = expected_record(folder, images, exact_expectation(cfg, run, images))
    check_on_host(folder, images, expected)
    archive = write_bundle(folder, target, labels, images, run.root.name, accuracy, expected)
    out.info(f"edge: wrote {archive} ({archive.stat().st_size / 1e6:.1f} MB) for {target}; its {len(images)} sample "
             f"outputs pass run.py's check here")
    return {"bundle": str(archive.relative_to(run.root)), "target": target, "bytes": archive.stat().st_size}


#: sample inputs a bundle carries, with every model's expected outputs on them
BUNDLE_SAMPLES = 8
