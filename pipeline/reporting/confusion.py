"""Section: the confusion matrix on the test split, of the deepest ladder level with predictions and labels."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import esc, note, table

ID = "confusion"
TITLE = "Confusion matrix"

#: CIFAR-10's classes, in the order of its label numbers (as pipeline/data.py reads them)
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
#: above this many classes a matrix is unreadable; the most frequent confusions are listed instead
MAX_MATRIX_CLASSES = 30


def class_names(ctx: Context) -> list[str]:
    """The data set's class names where the configuration tells them cheaply (no data is loaded), else []."""
    name = ctx.setting("data", "name")
    if name in ("digits", "mnist"):
        return [str(i) for i in range(10)]
    if name == "cifar10":
        return list(CIFAR10_CLASSES)
    if name == "imagefolder":
        train = Path(str(ctx.setting("data", "root", ""))).expanduser() / "train"
        if train.is_dir():
            return sorted(p.name for p in train.iterdir() if p.is_dir())
    return []


def _cell(count: int, row_total: int, diagonal: bool) -> str:
    share = count / row_total if row_total else 0.0
    if count == 0:
        return "<td class='num cm zero'>0</td>"
    # diagonal in blue by the share of the class it gets right; errors in red, made visible even when rare
    alpha = share if diagonal else min(1.0, 0.15 + 2 * share)
    rgb = "37, 99, 235" if diagonal else "220, 38, 38"
    ink = " style='color:#fff;" if alpha > 0.55 else " style='"
    return f"<td class='num cm'{ink}background:rgba({rgb}, {alpha:.2f})' title='{share:.1%} of the row'>{count:,}</td>"


def matrix(labels: np.ndarray, predicted: np.ndarray, names: list[str]) -> str:
    """Rows are the true classes, columns the predicted ones; the last column is each class's recall."""
    n = len(names)
    counts = np.zeros((n, n), dtype=np.int64)
    np.add.at(counts, (labels, predicted), 1)
    head = "<tr><th class='corner'>true \\ predicted</th>" + "".join(
        f"<th class='num'>{esc(name)}</th>" for name in names) + "<th class='num'>recall</th></tr>"
    rows = []
    for i, name in enumerate(names):
        total = int(counts[i].sum())
        cells = "".join(_cell(int(counts[i, j]), total, i == j) for j in range(n))
        recall = fmt.percent(counts[i, i] / total) if total else fmt.NONE
        rows.append(f"<tr><th scope='row'>{esc(name)}</th>{cells}<td class='num'>{recall}</td></tr>")
    return f"<table class='confusion'><thead>{head}</thead><tbody>{''.join(rows)}</tbody></table>"


def top_confusions(labels: np.ndarray, predicted: np.ndarray, names: list[str], count: int = 15) -> str:
    """The most frequent (true, predicted) pairs among the errors."""
    wrong = labels != predicted
    pairs, freq = np.unique(np.stack([labels[wrong], predicted[wrong]], axis=1), axis=0, return_counts=True)
    order = np.argsort(-freq, kind="stable")[:count]
    rows = [[esc(names[pairs[k][0]]), esc(names[pairs[k][1]]), fmt.integer(freq[k])] for k in order]
    return table(["true class", "predicted as", "samples"], rows, numeric=[2])


def render(ctx: Context) -> str:
    ladder = ctx.ladder
    level = ladder.deepest_labelled()
    if level is None:
        if ladder.unlabelled:
            return note("info", f"No confusion matrix: {esc(ladder.unlabelled)}.")
        return ctx.stages.notice("export", "the predictions and labels of the test split (verify/export.npz)") or \
            note("info", "No level kept per-sample predictions with labels.")
    predicted = level.predicted
    labels = ladder.labels[: len(predicted)]
    valid = (predicted >= 0) & (labels >= 0)
    known = class_names(ctx)
    count = max(int(max(labels.max(initial=0), predicted.max(initial=0))) + 1, len(known))
    names = known if len(known) == count else [str(i) for i in range(count)]
    lead = (f"<p class='lead'>Level: <b>{esc(level.name)}</b> ({esc(level.engine)}), {fmt.integer(level.samples)} "
            f"test samples, {fmt.integer(level.samples - level.correct)} misclassified. Rows are the true class.</p>")
    if count > MAX_MATRIX_CLASSES:
        return lead + f"<p>{count} classes: the most frequent confusions.</p>" + \
            top_confusions(labels[valid], predicted[valid], names)
    return lead + "<div class='scroll'>" + matrix(labels[valid], predicted[valid], names) + "</div>"
