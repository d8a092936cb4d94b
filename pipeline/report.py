"""The run's human-readable outputs: training curves (PNG) and ``report.html``, a static page with the summary
and every plot a stage has written, with the images inlined so the page can be mailed or moved on its own.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path
from typing import Any

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


def _figure(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return html.escape(json.dumps(value))
    return html.escape(str(value))


def write_report(run: RunDir) -> Path:
    """(Re)write ``report.html`` from summary.json and the plots found in the run directory."""
    summary = run.read_summary()
    rows = []
    for stage, entry in summary.get("stages", {}).items():
        figures = ", ".join(f"{k}: {_figure(v)}" for k, v in entry.items() if k not in ("status", "seconds"))
        rows.append(f"<tr><td>{html.escape(stage)}</td><td class='{html.escape(str(entry.get('status')))}'>"
                    f"{html.escape(str(entry.get('status')))}</td><td>{_figure(entry.get('seconds', ''))}</td>"
                    f"<td>{figures}</td></tr>")
    images = []
    for png in sorted(run.root.rglob("*.png")):
        data = base64.b64encode(png.read_bytes()).decode("ascii")
        caption = html.escape(str(png.relative_to(run.root)))
        images.append(f"<figure><img src='data:image/png;base64,{data}' alt='{caption}'>"
                      f"<figcaption>{caption}</figcaption></figure>")
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>bnnflow run {html.escape(run.root.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; max-width: 70em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: .3em .6em; text-align: left; }}
.ok {{ color: #070; }} .failed {{ color: #b00; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>bnnflow run <code>{html.escape(str(run.root))}</code></h1>
<p>bnnflow {html.escape(str(summary.get('bnnflow_version', '')))}; the same figures are in
<code>summary.json</code>, the configuration in <code>config.toml</code>.</p>
<table><tr><th>stage</th><th>status</th><th>seconds</th><th>figures</th></tr>
{''.join(rows)}
</table>
{''.join(images)}
</body></html>
"""
    atomic_write_text(run.report_path, page)
    return run.report_path
