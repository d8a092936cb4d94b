"""Section: loss and accuracy per epoch from ``train/metrics.jsonl``, as inline SVG charts."""

from __future__ import annotations

from typing import Any

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import esc, key_values, note
from bnnflow.pipeline.reporting.svg import Series, line_chart

ID = "training"
TITLE = "Training"

TRAIN_COLOR, TEST_COLOR = "#2563eb", "#ea580c"


def _points(rows: list[dict[str, Any]], key: str, scale: float = 1.0) -> list[tuple[float, float]]:
    """(epoch counted from 1, value) for the rows that have a number under ``key``."""
    return [(row["epoch"] + 1, scale * row[key]) for row in rows
            if fmt.is_number(row.get("epoch")) and fmt.is_number(row.get(key))]


def render(ctx: Context) -> str:
    rows = ctx.files.jsonl("train/metrics.jsonl")
    if not rows and ctx.bare_model:
        return note("info", "No training: the model was compiled from a QONNX file made elsewhere.")
    notice = ctx.stages.notice("train", "the loss and accuracy of every epoch (train/metrics.jsonl)")
    if not rows:
        return notice or note("info", "train/metrics.jsonl holds no epoch yet.")
    entry = ctx.stages.entry("train")
    last = rows[-1]
    tested = [r for r in rows if fmt.is_number(r.get("test_accuracy")) and fmt.is_number(r.get("epoch"))]
    best = max(tested, key=lambda r: r["test_accuracy"], default=None)
    planned = ctx.setting("train", "epochs")
    epochs = f"{len(rows):,}" + (f" of {planned:,}" if fmt.is_number(planned) and planned != len(rows) else "")
    seconds = entry.get("train_seconds", sum(r.get("seconds", 0) for r in rows if fmt.is_number(r.get("seconds"))))
    figures = [
        ("epochs", epochs),
        ("final test accuracy", fmt.percent(last.get("test_accuracy"))),
        ("best test accuracy", f"{fmt.percent(best['test_accuracy'])} (epoch {best['epoch'] + 1:,})" if best else fmt.NONE),
        ("final train accuracy", fmt.percent(last.get("train_accuracy"))),
        ("training time", fmt.seconds(seconds)),
        ("optimizer", esc(f"{ctx.setting('train', 'optimizer', '?')}, lr {ctx.setting('train', 'lr', '?')}, "
                          f"{ctx.setting('train', 'schedule', '?')} schedule")),
    ]
    loss = line_chart("Loss per epoch", [
        Series("train", _points(rows, "train_loss"), TRAIN_COLOR),
        Series("test", _points(rows, "test_loss"), TEST_COLOR)], x_label="epoch", y_label="cross-entropy")
    accuracy = line_chart("Accuracy per epoch", [
        Series("train", _points(rows, "train_accuracy", 100), TRAIN_COLOR),
        Series("test", _points(rows, "test_accuracy", 100), TEST_COLOR)], x_label="epoch", y_label="accuracy (%)")
    return f"{notice}{key_values(figures)}<div class='charts'>{loss}{accuracy}</div>"
