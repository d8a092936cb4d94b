"""Section: edge latencies from ``edge/bench.json``: p50 / p90 / p99 per ONNX Runtime variant at batch 1, and each
one's speed-up over the float model of the same architecture."""

from __future__ import annotations

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import esc, note, table

ID = "edge"
TITLE = "Edge latency"


def _bar(p50: object, p99: object, longest: float) -> str:
    """p50 as a bar, with a thin whisker on to p99, scaled to the longest p99."""
    if not (fmt.is_number(p50) and longest > 0):
        return ""
    tail = max(0.0, p99 - p50) if fmt.is_number(p99) else 0.0
    return (f"<div class='latency'><span class='p50' style='width:{100 * p50 / longest:.1f}%'></span>"
            f"<span class='whisker' style='width:{100 * tail / longest:.1f}%'></span></div>")


def render(ctx: Context) -> str:
    notices = "".join(ctx.stages.notice(stage, what) for stage, what in (
        ("edge", "the ONNX Runtime variants (edge/export.json)"), ("bench", "their latencies (edge/bench.json)"))
        if ctx.stages.status(stage) != "ok")
    bench = ctx.files.json("edge/bench.json")
    if bench is None or not isinstance(bench.get("models"), dict):
        return notices or note("info", "edge/bench.json lists no model.")
    models = {name: entry for name, entry in bench["models"].items() if isinstance(entry, dict)}
    longest = max((e["p99_ms"] for e in models.values() if fmt.is_number(e.get("p99_ms"))), default=0.0)
    rows = []
    for name, entry in models.items():
        speedup = entry.get("speedup_vs_float")
        css = "good" if fmt.is_number(speedup) and speedup > 1 else ""
        rows.append([esc(name), fmt.latency_ms(entry.get("p50_ms")), fmt.latency_ms(entry.get("p90_ms")),
                     fmt.latency_ms(entry.get("p99_ms")), fmt.integer(entry.get("frames_per_second")),
                     f"<span class='{css}'>{fmt.ratio(speedup)}</span>",
                     _bar(entry.get("p50_ms"), entry.get("p99_ms"), longest)])
    providers = sorted({str(e.get("provider")) for e in models.values() if e.get("provider")})
    lead = (f"<p class='lead'>ONNX Runtime ({esc(', '.join(providers) or '?')}), batch {esc(bench.get('batch', 1))}, "
            f"{esc(bench.get('threads', '?'))} thread(s), {esc(bench.get('runs', '?'))} timed rounds interleaving the "
            "models; speed-up is over the float model's p50.</p>")
    headers = ["model", "p50", "p90", "p99", "frames/s", "speed-up vs float", "p50 (bar) to p99 (whisker)"]
    return notices + lead + table(headers, rows, numeric=[1, 2, 3, 4, 5], css="edge")
