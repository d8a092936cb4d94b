"""Section: resources and clock, estimated (``compile/estimates.json``) beside place and route
(``fpga/BOARD/report.json``), each against the board's capacity, with frames/s at the clock and at Fmax."""

from __future__ import annotations

from typing import Any

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import esc, note
from bnnflow.pipeline.reporting.runfiles import Unreadable

ID = "resources"
TITLE = "Resources and timing"

#: nextpnr's resources (report.json ``utilization``) as the rows name them; estimates cover LUTs and block RAM
ROWS = (("lut4", "LUTs"), ("ff", "flip-flops"), ("bram", "block RAM"), ("dsp", "DSP"), ("spram", "SPRAM"))
LUT_UNIT = {"ecp5": "LUT4", "ice40": "LUT4", "xilinx": "LUT6"}


def usage(used: Any, available: Any, unit: str = "") -> str:
    """``3,946 LUT4`` over ``of 83,640 · 4.7 %`` with a bar."""
    if not fmt.is_number(used):
        return fmt.NONE
    if not fmt.is_number(available) or available <= 0:
        return fmt.integer(used, unit)
    share = used / available
    level = "bad" if share > 1 else "warn" if share > 0.8 else ""
    return (f"<b>{fmt.integer(used, unit)}</b><small>of {fmt.integer(available)} · {fmt.percent(share)}</small>"
            f"<div class='bar {level}'><span style='width:{min(100.0, 100 * share):.1f}%'></span></div>")


def _estimate_cells(estimates: dict[str, Any]) -> dict[str, str]:
    board = estimates.get("board") if isinstance(estimates.get("board"), dict) else {}
    unit = LUT_UNIT.get(str(estimates.get("fabric")), "LUT")
    clock = estimates.get("clock_mhz")
    return {
        "lut4": usage(estimates.get("luts"), board.get("luts"), unit),
        "ff": "<span class='muted'>not estimated</span>",
        "bram": usage(estimates.get("ram_blocks"), board.get("ram_blocks")),
        "clock": fmt.mhz(clock),
        "fmax": "<span class='muted'>not estimated</span>",
        "fps": f"<b>{fmt.integer(estimates.get('frames_per_second'), 'frames/s')}</b><small>at {fmt.mhz(clock)}</small>",
    }


def _build_cells(report: dict[str, Any]) -> dict[str, str]:
    used = report.get("utilization") if isinstance(report.get("utilization"), dict) else {}
    cells = {key: usage(v.get("used"), v.get("available"), "LUT4" if key == "lut4" else "")
             for key, v in used.items() if isinstance(v, dict)}
    clock = report.get("clock", {}).get("achieved_mhz") if isinstance(report.get("clock"), dict) else None
    met = report.get("met")
    verdict = ("<span class='good'>✓ timing met</span>" if met else "<span class='bad'>✗ timing not met</span>"
               if met is False else "")
    throughput = report.get("throughput") if isinstance(report.get("throughput"), dict) else {}
    cells["clock"] = fmt.mhz(clock)
    cells["fmax"] = f"<b>{fmt.mhz(report.get('fmax_mhz'))}</b><small>{verdict}</small>"
    cells["fps"] = (f"<b>{fmt.integer(throughput.get('frames_per_second'), 'frames/s')}</b><small>at "
                    f"{fmt.mhz(clock)}</small><b>{fmt.integer(throughput.get('frames_per_second_at_fmax'), 'frames/s')}"
                    "</b><small>at Fmax</small>")
    return cells


def _build_note(report: dict[str, Any]) -> str:
    seconds = report.get("seconds") if isinstance(report.get("seconds"), dict) else {}
    steps = ", ".join(f"{esc(k.replace('_', ' '))} {fmt.seconds(v)}" for k, v in seconds.items())
    tools = report.get("tools") if isinstance(report.get("tools"), dict) else {}
    total = sum(v for v in seconds.values() if fmt.is_number(v))
    text = f"{esc(report.get('board', '?'))} ({esc(report.get('part', '?'))}): built in {fmt.seconds(total)}"
    text += f" ({steps})" if steps else ""
    text += f" with {esc(', '.join(f'{k} {v}' for k, v in tools.items()))}" if tools else ""
    return f"<p class='muted small'>{text}.</p>"


def render(ctx: Context) -> str:
    notices = ctx.stages.notice("compile", "the resource estimates (compile/estimates.json)")
    estimates = ctx.files.json("compile/estimates.json")
    builds: list[tuple[str, dict[str, Any]]] = []
    problems = []
    for rel in ctx.files.glob("fpga/*/report.json"):
        try:
            builds.append((rel.split("/")[1], ctx.files.json(rel) or {}))
        except Unreadable as err:
            problems.append(str(err))
    if not builds:
        notices += ctx.stages.notice("bitstream", "the place-and-route figures (fpga/BOARD/report.json)")
    elif ctx.stages.status("bitstream") not in ("ok", "not run"):
        notices += ctx.stages.notice("bitstream", "")
    if estimates is None and not builds:
        return notices + "".join(note("unreadable", esc(p)) for p in problems)
    columns: list[tuple[str, dict[str, str]]] = []
    if estimates is not None:
        board = estimates.get("board") if isinstance(estimates.get("board"), dict) else {}
        columns.append((f"estimate for {esc(board.get('name', '?'))}<small>bnnflow's model (compile)</small>",
                        _estimate_cells(estimates)))
    columns += [(f"place and route on {esc(name)}<small>yosys + nextpnr (bitstream)</small>", _build_cells(report))
                for name, report in builds]
    rows = [(key, label) for key, label in ROWS if any(key in cells for _, cells in columns)]
    rows += [("clock", "clock"), ("fmax", "Fmax"), ("fps", "throughput")]
    head = "<tr><th></th>" + "".join(f"<th>{title}</th>" for title, _ in columns) + "</tr>"
    body = "".join(f"<tr><th scope='row'>{esc(label)}</th>"
                   + "".join(f"<td>{cells.get(key, fmt.NONE)}</td>" for _, cells in columns) + "</tr>"
                   for key, label in rows)
    fits = (estimates or {}).get("board", {})
    warning = note("error", "The estimate does not fit the board.") if isinstance(fits, dict) and \
        fits.get("fits") is False else ""
    extra = "".join(_build_note(report) for _, report in builds)
    return (f"{notices}{warning}<table class='resources'><thead>{head}</thead><tbody>{body}</tbody></table>{extra}"
            + "".join(note("unreadable", esc(p)) for p in problems))
