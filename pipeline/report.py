"""The run's human-readable outputs: training curves (PNG) and ``report.html``.

``report.html`` is the page an engineer opens after a run: the run and its stages' statuses, accuracy at every
level of the verification ladder, the confusion matrix, training curves, the accelerator as a diagram, resources
estimated and placed, and edge latencies. It is one self-contained file (inline CSS and SVG, no script, nothing
fetched), so it works offline and can be mailed. Each section lives in ``pipeline/reporting/``.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any

from bnnflow.pipeline.reporting import accelerator, accuracy, confusion, edge, header, resources, training
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import esc, note
from bnnflow.pipeline.reporting.runfiles import RunFiles, Unreadable
from bnnflow.pipeline.rundir import RunDir, atomic_path, atomic_write_text


def save_png(fig, path: Path) -> None:
    """Lay out ``fig``, write it to ``path`` as PNG (whole or not at all), and free it."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    """Loss and accuracy per epoch, train and test."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] + 1 for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_loss.plot(epochs, [r["train_loss"] for r in history], label="train")
    ax_loss.plot(epochs, [r["test_loss"] for r in history], label="test")
    ax_loss.set_xlabel("epoch")
    ax_loss.set_ylabel("cross-entropy")
    ax_loss.legend()
    ax_acc.plot(epochs, [100 * r["train_accuracy"] for r in history], label="train")
    ax_acc.plot(epochs, [100 * r["test_accuracy"] for r in history], label="test")
    ax_acc.set_xlabel("epoch")
    ax_acc.set_ylabel("accuracy (%)")
    ax_acc.legend()
    save_png(fig, path)


SECTIONS: tuple[ModuleType, ...] = (accuracy, confusion, training, accelerator, resources, edge)

STYLE = """
:root { --ink: #1f2937; --muted: #6b7280; --line: #e5e7eb; --soft: #f8fafc; --blue: #2563eb; --red: #dc2626;
        --green: #15803d; --amber: #b45309; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); margin: 0;
       background: #f1f5f9; }
main { max-width: 1180px; margin: 0 auto; padding: 20px 28px 40px; }
header.top { background: #0f172a; color: #e2e8f0; }
header.top .inner { max-width: 1180px; margin: 0 auto; padding: 18px 28px 14px; }
header.top h1 { margin: 0 0 2px; font-size: 22px; font-weight: 650; }
header.top nav a { color: #93c5fd; margin-right: 16px; text-decoration: none; font-size: 14px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 18px 22px; margin: 16px 0; }
h2 { font-size: 18px; margin: 0 0 12px; }
small { display: block; color: var(--muted); font-size: 12px; font-weight: normal; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, monospace; }
.muted { color: var(--muted); } .small { font-size: 13px; } .good { color: var(--green); font-weight: 600; }
.bad { color: var(--red); font-weight: 600; } .lead { margin: 0 0 12px; }
table { border-collapse: collapse; width: 100%; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 6px 10px; text-align: left; vertical-align: top; }
thead th { font-size: 12px; text-transform: uppercase; letter-spacing: .03em; color: var(--muted); font-weight: 600; }
.num { text-align: right; white-space: nowrap; } td.num small { display: inline; margin-left: 6px; }
tbody th small { margin-top: 1px; }
dl.kv { display: grid; grid-template-columns: repeat(auto-fill, minmax(250px, 1fr)); gap: 8px 18px; margin: 0 0 14px; }
dl.kv div { min-width: 0; } dl.kv dt { font-size: 12px; color: var(--muted); text-transform: uppercase; }
dl.kv dd { margin: 0; overflow-wrap: anywhere; } dl.kv dd small { display: inline; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(220px, 1fr)); gap: 12px; margin: 4px 0 14px; }
.card { border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; background: var(--soft); }
.card .label { font-size: 12px; color: var(--muted); text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 24px; font-weight: 650; } .card .sub { font-size: 13px; color: var(--muted); }
ol.stages { list-style: none; padding: 0; margin: 0; display: flex; flex-wrap: wrap; gap: 8px; }
ol.stages li { border: 1px solid var(--line); border-radius: 8px; padding: 5px 10px; display: flex; gap: 8px;
               align-items: baseline; background: #fff; }
ol.stages li small { display: inline; }
.badge { font-size: 12px; font-weight: 600; padding: 1px 7px; border-radius: 999px; background: #e5e7eb;
         color: #374151; white-space: nowrap; }
.badge.ok { background: #dcfce7; color: #166534; } .badge.failed, .badge.interrupted { background: #fee2e2;
         color: #991b1b; } .badge.stale { background: #fef3c7; color: #92400e; }
.badge.skipped { background: #e0e7ff; color: #3730a3; } .badge.not-run { background: #fff; color: var(--muted);
         border: 1px dashed #cbd5e1; }
.note { border-left: 4px solid #94a3b8; background: var(--soft); padding: 8px 12px; margin: 10px 0; border-radius: 4px; }
.note.pending { color: var(--muted); } .note.error { border-color: var(--red); background: #fef2f2; }
.note.stale { border-color: #f59e0b; background: #fffbeb; } .note.unreadable { border-color: #a855f7;
         background: #faf5ff; }
.note pre { white-space: pre-wrap; margin: 6px 0 0; font-size: 13px; }
table.ladder td:last-child div { font-size: 12px; margin-top: 3px; }
.scroll { overflow-x: auto; }
table.confusion { width: auto; } table.confusion td, table.confusion th { padding: 4px 8px; border: 1px solid #fff; }
table.confusion td.cm { min-width: 38px; text-align: center; } table.confusion td.zero { color: #cbd5e1; }
table.confusion th.corner { font-size: 11px; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 16px; }
svg.chart { width: 100%; height: auto; background: #fff; }
svg.chart .title { font-size: 13px; font-weight: 600; fill: var(--ink); }
svg.chart .tick { font-size: 11px; fill: var(--muted); } svg.chart .label { font-size: 12px; fill: var(--ink); }
svg.chart .grid { stroke: #eef2f7; } svg.chart .axis { stroke: #94a3b8; }
.flow { display: flex; flex-wrap: wrap; align-items: stretch; gap: 6px 0; margin: 8px 0; }
.flow .io { align-self: center; background: #0f172a; color: #fff; border-radius: 999px; padding: 5px 10px;
            font-size: 13px; font-weight: 600; text-align: center; }
.flow .io small { color: #cbd5e1; }
.flow .link { display: flex; flex-direction: column; align-items: center; justify-content: center; min-width: 56px;
              padding: 0 3px; text-align: center; }
.flow .link .arrow { font-size: 22px; color: #94a3b8; line-height: 1; }
.flow .link small { font-size: 11px; }
.flow .dwc { margin-top: 4px; font-size: 11px; white-space: nowrap; background: #fef3c7; border: 1px solid #f59e0b;
             border-radius: 4px;
             padding: 1px 5px; }
.layer { border: 1.5px solid #93c5fd; background: #eff6ff; border-radius: 8px; padding: 8px 10px; width: 152px;
         font-size: 13px; position: relative; }
.layer.bottleneck { border-color: var(--red); background: #fef2f2; }
.layer .op { font-weight: 700; font-size: 14px; } .layer .op .name { font-weight: 400; color: var(--muted);
             margin-left: 6px; font-size: 12px; }
.layer .fold { font-family: ui-monospace, monospace; font-size: 12px; margin-top: 2px; }
.layer .cycles { margin-top: 4px; } .layer .res { color: var(--muted); font-size: 12px; }
.layer .tag { position: absolute; top: -9px; right: 8px; background: var(--red); color: #fff; font-size: 11px;
              padding: 0 6px; border-radius: 999px; }
.bar { height: 6px; background: #e2e8f0; border-radius: 3px; margin: 3px 0; overflow: hidden; min-width: 80px; }
.bar span { display: block; height: 100%; background: var(--blue); }
.layer.bottleneck .bar span, .bar.bad span { background: var(--red); } .bar.warn span { background: #f59e0b; }
table.resources td b { display: block; } table.resources td small { margin-bottom: 2px; }
.latency { display: flex; height: 10px; min-width: 160px; align-items: center; }
.latency .p50 { height: 10px; background: var(--blue); border-radius: 2px 0 0 2px; }
.latency .whisker { height: 2px; background: #64748b; }
footer { color: var(--muted); font-size: 12px; text-align: center; margin-top: 20px; }
"""


def _section(module: ModuleType, ctx: Context) -> str:
    """One section of the page; a file it cannot use makes it say so instead of failing the report."""
    try:
        body = module.render(ctx)
    except Exception as err:  # a damaged run file of any kind: the page is still written, this part says why
        reason = str(err) if isinstance(err, Unreadable) else f"{type(err).__name__}: {err}"
        body = note("unreadable", f"<b>Unreadable</b>: this part could not be drawn from the run's files "
                                  f"({esc(reason)}).")
    title = f"<h2>{esc(module.TITLE)}</h2>" if module.TITLE else ""
    return f"<section id='{module.ID}'>{title}{body}</section>"


def render_page(root: Path) -> str:
    """The whole page for the run folder ``root``, from its files alone."""
    ctx = Context(RunFiles(root))
    nav = "".join(f"<a href='#{m.ID}'>{esc(m.TITLE.split(' ')[0].lower())}</a>" for m in SECTIONS)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>bnnflow · {esc(root.resolve().name)}</title>
<style>{STYLE}</style></head><body>
<header class="top"><div class="inner"><h1>bnnflow run <code>{esc(root.resolve().name)}</code></h1>
<nav>{nav}</nav></div></header>
<main>
{_section(header, ctx)}
{"".join(_section(m, ctx) for m in SECTIONS)}
<footer>Written by bnnflow from the files of this run folder, without running any model; the figures are also in
summary.json, the configuration in config.toml.</footer>
</main></body></html>
"""


def write_report(run: RunDir) -> Path:
    """(Re)write ``report.html``: cheap (it reads files, runs no model) and never fails on a damaged run file."""
    atomic_write_text(run.report_path, render_page(run.root))
    return run.report_path
