"""The verification ladder: each level's predictions and accuracy on the test split, and how many of its outputs
differ from the level before, computed from the arrays the stages saved (no model is run).

Levels: PyTorch and model.qonnx (``verify/export.npz``), streamlined.onnx and dataflow.onnx
(``verify/compile.npz``), the simulator (``sim/outputs.npy``), the RTL cosimulation (``rtl/cosim.json``: counts
only) and the edge variants (``edge/export.json``: counts and accuracies). The accelerator's outputs are integer
accumulators (the prediction is their argmax: the host's scale is positive) or, when it ends in a label select
(dataflow.onnx's ``bnnflow.output_kind`` is ``label``), the class index itself.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from bnnflow.pipeline.reporting.fmt import is_number
from bnnflow.pipeline.reporting.runfiles import Unreadable

if TYPE_CHECKING:
    from bnnflow.pipeline.reporting.context import Context


@dataclass
class Level:
    """One rung: what ran, which stage ran it, and its figures (None where the run has none)."""

    name: str
    engine: str
    stage: str
    before: str = ""  #: the level its outputs are compared with
    samples: int | None = None
    mismatches: int | None = None  #: samples whose outputs differ from ``before``'s
    exact: bool = True  #: whether its outputs must equal ``before``'s (the int8 edge variant's need not)
    predicted: np.ndarray | None = None  #: the class of each sample
    correct: int | None = None
    accuracy: float | None = None
    notes: list[str] = field(default_factory=list)  #: plain text, escaped when shown
    problem: str = ""  #: why the figures are missing although the stage ran (an unreadable file)

    @property
    def has_figures(self) -> bool:
        return self.samples is not None


@dataclass
class Ladder:
    levels: list[Level]
    labels: np.ndarray | None
    unlabelled: str  #: why there are no labels ("" when there are)

    def deepest_labelled(self) -> Level | None:
        """The last level with per-sample predictions and labels: the confusion matrix's."""
        usable = [lv for lv in self.levels if lv.predicted is not None and lv.correct is not None]
        return usable[-1] if usable else None


def differing(expected: np.ndarray, got: np.ndarray) -> int:
    """Samples whose outputs are not all equal (shapes that disagree: every sample)."""
    a, b = expected.reshape(len(expected), -1), got.reshape(len(got), -1)
    if a.shape != b.shape:
        return len(got)
    return int((~np.all(a == b, axis=1)).sum())


def classes(outputs: np.ndarray, kind: str) -> np.ndarray:
    """The predicted class per sample: the label an accelerator selected, else the argmax of the scores."""
    flat = outputs.reshape(len(outputs), -1)
    return flat[:, 0].astype(np.int64) if kind == "label" else flat.argmax(axis=1)


def output_kind(ctx: Context, hw_output: np.ndarray | None) -> str:
    """``label`` or ``accumulator``: from dataflow.onnx's metadata, else from the width of the outputs."""
    try:
        model = ctx.files.onnx("dataflow.onnx")
    except Unreadable:
        model = None
    if model is not None:
        props = {p.key: p.value for p in model.metadata_props}
        if "bnnflow.output_kind" in props:
            return "label" if props["bnnflow.output_kind"] == "label" else "accumulator"
    if hw_output is not None and hw_output.reshape(len(hw_output), -1).shape[1] == 1:
        return "label"
    return "accumulator"


def _load(read: Callable[[str], Any], rel: str, level: Level, *keys: str) -> Any:
    """``read(rel)``, checked for ``keys``; an unreadable file is recorded on ``level`` and reads as None."""
    try:
        value = read(rel)
        if value is not None:
            missing = [k for k in keys if k not in value]
            if missing:
                raise Unreadable(f"{rel} lacks {', '.join(missing)}")
        return value
    except Unreadable as err:
        level.problem = str(err)
        return None


def _score(level: Level, labels: np.ndarray | None) -> None:
    """Accuracy of ``level.predicted`` against the first labels (the stages verify a prefix of the test split)."""
    if level.predicted is None:
        return
    level.samples = len(level.predicted)
    if labels is not None and len(labels) >= level.samples:
        level.correct = int((level.predicted == labels[: level.samples]).sum())
        level.accuracy = level.correct / level.samples if level.samples else None


def build_ladder(ctx: Context) -> Ladder:
    """Every level of the run, in order; levels whose stage has not run are there without figures."""
    files, stages = ctx.files, ctx.stages
    torch_level = Level("PyTorch", "the trained Brevitas model, eval forward", "export")
    qonnx_level = Level("model.qonnx", "qonnx's executor", "compile" if ctx.bare_model else "export",
                        before="" if ctx.bare_model else "PyTorch")
    streamlined = Level("streamlined.onnx", "qonnx's executor, standard ops", "compile", before="model.qonnx")
    dataflow = Level("dataflow.onnx", "qonnx's executor, bnnflow.hw ops", "compile",
                     before="streamlined.onnx at the accelerator's boundary")
    simulator = Level("simulator", "bnnflow's bit-exact simulator", "simulate", before="dataflow.onnx")
    rtl = Level("RTL", "Verilator cosimulation of the Verilog", "rtl", before="simulator")

    labels, unlabelled = None, ""
    if ctx.bare_model:
        unlabelled = "compiled from a QONNX file: its inputs (verify/inputs.npy) have no labels"
    export = _load(files.arrays, "verify/export.npz", qonnx_level, "torch", "qonnx", "labels")
    torch_level.problem = qonnx_level.problem
    if export is not None:
        labels = export["labels"].reshape(-1).astype(np.int64)
        torch_level.predicted = classes(export["torch"], "scores")
        qonnx_level.predicted = classes(export["qonnx"], "scores")
        # the export check's own verdict where recorded: a network with float layers is compared within a tolerance
        recorded = stages.entry("export").get("mismatches")
        qonnx_level.mismatches = recorded if is_number(recorded) else differing(export["torch"], export["qonnx"])
    elif not ctx.bare_model and stages.ran("export"):
        unlabelled = "verify/export.npz is missing (export ran without verification), so no labels were kept"

    compiled = _load(files.arrays, "verify/compile.npz", dataflow, "qonnx", "streamlined", "hw_expected", "hw_output")
    streamlined.problem = dataflow.problem
    kind = "accumulator"
    if compiled is not None:
        kind = output_kind(ctx, compiled["hw_output"])
        streamlined.predicted = classes(compiled["streamlined"], "scores")
        streamlined.mismatches = differing(compiled["qonnx"], compiled["streamlined"])
        dataflow.predicted = classes(compiled["hw_output"], kind)
        dataflow.mismatches = differing(compiled["hw_expected"], compiled["hw_output"])
        if ctx.bare_model:
            qonnx_level.predicted = classes(compiled["qonnx"], "scores")
        if kind == "label":
            dataflow.notes.append("the accelerator ends in a label select: its output is the class index")

    outputs = _load(files.arrays, "sim/outputs.npy", simulator)
    report = _load(files.json, "sim/report.json", simulator)
    if outputs is not None:
        if compiled is None:
            kind = output_kind(ctx, outputs[""])
        simulator.predicted = classes(outputs[""], kind)
        comparison = (report or {}).get("comparison")
        if isinstance(comparison, dict) and is_number(comparison.get("mismatches")):
            simulator.mismatches = comparison["mismatches"]
        elif compiled is not None:
            simulator.mismatches = differing(compiled["hw_output"], outputs[""])

    cosim = _load(files.json, "rtl/cosim.json", rtl, "samples", "mismatches")
    if cosim is not None:
        rtl.samples, rtl.mismatches = int(cosim["samples"]), int(cosim["mismatches"])
        if rtl.mismatches == 0 and simulator.predicted is not None and labels is not None \
                and rtl.samples <= min(len(simulator.predicted), len(labels)):
            rtl.correct = int((simulator.predicted[: rtl.samples] == labels[: rtl.samples]).sum())
            rtl.accuracy = rtl.correct / rtl.samples if rtl.samples else None
            rtl.notes.append(f"on the {rtl.samples:,} cosimulated samples, whose outputs equal the simulator's")

    top = [qonnx_level] if ctx.bare_model else [torch_level, qonnx_level]
    levels = [*top, streamlined, dataflow, simulator, rtl]
    for level in levels:
        _score(level, labels)
    return Ladder([*levels, *edge_levels(ctx)], labels, unlabelled)


def edge_levels(ctx: Context) -> list[Level]:
    """The ONNX Runtime variants as ``edge/export.json`` reports them (one placeholder level before they exist)."""
    placeholder = Level("edge variants", "ONNX Runtime", "edge")
    report = _load(ctx.files.json, "edge/export.json", placeholder, "variants")
    if report is None or not isinstance(report["variants"], dict):
        return [placeholder]
    levels = []
    for variant, entry in report["variants"].items():
        entry = entry if isinstance(entry, dict) else {}
        level = Level(f"edge {variant}", "ONNX Runtime", "edge", before=str(report.get("checked_against", "")),
                      samples=report.get("samples"), mismatches=entry.get("mismatches"),
                      accuracy=entry.get("test_accuracy"))
        if entry.get("exact") is False:
            level.exact = False
            changes = entry.get("label_changes")
            level.notes.append("requantized to 8 bits, so not required to match"
                               + (f"; {changes:,} predicted labels changed" if is_number(changes) else ""))
        levels.append(level)
    return levels
