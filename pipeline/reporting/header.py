"""The page's header: which run this is (folder, model, method, data, board, version), its headline figures, and
the status of every stage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import badge, esc, key_values, note
from bnnflow.pipeline.reporting.resources import LUT_UNIT
from bnnflow.pipeline.reporting.runfiles import Unreadable

ID = "run"
TITLE = ""  #: the page's title bar names the run
#: stages whose problems a section of the page shows; the header shows the others' (finn, bundle, ...)
SHOWN_IN_SECTIONS = frozenset({"train", "export", "compile", "simulate", "rtl", "bitstream", "edge", "bench"})


def _settings(values: object) -> str:
    """``hidden=128, depth=3``: a model's arguments or a method's options."""
    return ", ".join(f"{k}={v}" for k, v in values.items()) if isinstance(values, dict) else ""


def _identity(ctx: Context) -> list[tuple[str, str]]:
    if ctx.bare_model:
        source = ctx.stages.entry("import").get("source")
        model = f"<b>{esc(Path(str(source)).name) if source else 'a QONNX file'}</b> <small>made elsewhere</small>"
        method = data = f"{fmt.NONE} <small>compiled from a QONNX file</small>"
    else:
        args = _settings(ctx.setting("model", "args"))
        model = f"<b>{esc(ctx.setting('model', 'name', '?'))}</b>" + (f" <small>{esc(args)}</small>" if args else "")
        options = _settings(ctx.setting("method", "options"))
        method = f"<b>{esc(ctx.setting('method', 'name', 'ste'))}</b>" + (
            f" <small>{esc(options)}</small>" if options else "")
        data = f"<b>{esc(ctx.setting('data', 'name', '?'))}</b>"
        samples = ctx.stages.entry("train").get("test_samples")
        if fmt.is_number(samples):
            data += f" <small>{fmt.integer(samples)} test samples</small>"
    board = f"<b>{esc(ctx.setting('compile', 'board', '?'))}</b>"
    try:
        estimates = ctx.files.json("compile/estimates.json") or {}
    except Unreadable:
        estimates = {}
    part = estimates.get("board", {}).get("part") if isinstance(estimates.get("board"), dict) else None
    details = [esc(part) if part else "", f"{fmt.mhz(estimates['clock_mhz'])} clock"
               if fmt.is_number(estimates.get("clock_mhz")) else ""]
    if any(details):
        board += f" <small>{', '.join(d for d in details if d)}</small>"
    return [("run folder", f"<code>{esc(ctx.files.root.resolve())}</code>"), ("model", model), ("method", method),
            ("data set", data), ("board", board), ("bnnflow", esc(ctx.stages.version or "?"))]


def _card(label: str, value: str, sub: str) -> str:
    return f"<div class='card'><div class='label'>{esc(label)}</div><div class='value'>{value}</div>" \
           f"<div class='sub'>{sub}</div></div>"


def _cards(ctx: Context) -> list[str]:
    """Accuracy, throughput, LUTs and Fmax: each from the deepest stage that has it."""
    cards = []
    level = ctx.ladder.deepest_labelled()
    if level is not None:
        cards.append(_card("test accuracy", fmt.percent(level.accuracy),
                           f"{esc(level.name)}, {fmt.integer(level.samples)} test samples"))
    elif fmt.is_number(ctx.stages.entry("train").get("test_accuracy")):
        cards.append(_card("test accuracy", fmt.percent(ctx.stages.entry("train")["test_accuracy"]),
                           "PyTorch, last epoch"))
    built: dict[str, Any] = ctx.stages.entry("bitstream") if ctx.stages.status("bitstream") == "ok" else {}
    compiled = ctx.stages.entry("compile")
    if fmt.is_number(built.get("frames_per_second")):
        cards.append(_card("throughput", fmt.integer(built["frames_per_second"], "frames/s"),
                           f"at {fmt.mhz(built.get('clock_mhz'))} on {esc(built.get('board', '?'))}"))
    elif fmt.is_number(compiled.get("frames_per_second")):
        cards.append(_card("throughput", fmt.integer(compiled["frames_per_second"], "frames/s"),
                           f"estimate at {fmt.mhz(compiled.get('clock_mhz'))}"))
    if fmt.is_number(built.get("luts")):
        cards.append(_card("logic", fmt.integer(built["luts"], "LUT4"),
                           f"placed and routed, {fmt.integer(built.get('ram_blocks'))} block RAM"))
    elif fmt.is_number(compiled.get("luts")):
        try:
            fabric = (ctx.files.json("compile/estimates.json") or {}).get("fabric")
        except Unreadable:
            fabric = None
        cards.append(_card("logic", fmt.integer(compiled["luts"], LUT_UNIT.get(str(fabric), "LUT")),
                           f"estimate, {fmt.integer(compiled.get('ram_blocks'))} block RAM"))
    if fmt.is_number(built.get("fmax_mhz")):
        met = built.get("timing_met")
        cards.append(_card("Fmax", fmt.mhz(built["fmax_mhz"]),
                           "<span class='good'>timing met</span>" if met else "<span class='bad'>timing not met</span>"))
    return cards


def _stage_strip(ctx: Context) -> str:
    items = []
    for name in ctx.stages.listed(ctx.bare_model):
        status = ctx.stages.status(name)
        entry = ctx.stages.entry(name)
        shown = "not run yet" if status == "not run" else status
        seconds = f"<small>{fmt.seconds(entry.get('seconds'))}</small>" if fmt.is_number(entry.get("seconds")) else ""
        items.append(f"<li data-stage='{esc(name)}'><b>{esc(name)}</b>{badge(status, shown)}"
                     f"{seconds}</li>")
    return f"<ol class='stages'>{''.join(items)}</ol>"


def render(ctx: Context) -> str:
    problems = [ctx.stages.notice(name, "") for name in ctx.stages.entries
                if name not in SHOWN_IN_SECTIONS and ctx.stages.status(name) not in ("ok", "not run")]
    if ctx.stages.problem:
        problems.insert(0, note("unreadable", f"{esc(ctx.stages.problem)}: stage statuses are unknown."))
    if ctx.config_problem:
        problems.insert(0, note("unreadable", f"{esc(ctx.config_problem)}: the run's settings are unknown."))
    try:
        cards = _cards(ctx)
    except Exception:  # a damaged file is reported by its own section; the header keeps what it could read
        cards = []
    return (f"{key_values(_identity(ctx))}<div class='cards'>{''.join(cards)}</div>{_stage_strip(ctx)}"
            f"{''.join(problems)}")
