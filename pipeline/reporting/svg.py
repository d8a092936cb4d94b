"""Inline SVG line charts: the page carries its plots itself, with no script and no external file."""

from __future__ import annotations

import math
from dataclasses import dataclass

from bnnflow.pipeline.reporting.markup import esc


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str
    dashed: bool = False


def nice_step(span: float, target: int = 5) -> float:
    """A 1, 2, 2.5 or 5 times a power of ten step giving about ``target`` intervals over ``span``."""
    raw = span / target if span > 0 else 1.0
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw * 0.999)


def _ticks(lo: float, hi: float, step: float) -> list[float]:
    first = math.ceil(lo / step - 1e-9)
    return [round(k * step, 10) for k in range(first, math.floor(hi / step + 1e-9) + 1)]


def line_chart(title: str, series: list[Series], *, x_label: str, y_label: str, width: int = 520,
               height: int = 260) -> str:
    """A chart of ``series`` with axes, grid, a legend and one tooltip per line; the y axis spans the data on
    round ticks."""
    points = [p for s in series for p in s.points]
    if not points:
        return ""
    left, right, top, bottom = 56, 14, 34, 42
    plot_w, plot_h = width - left - right, height - top - bottom
    x_lo, x_hi = min(p[0] for p in points), max(p[0] for p in points)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = min(p[1] for p in points), max(p[1] for p in points)
    step = nice_step(y_hi - y_lo or abs(y_hi) or 1.0)
    y_lo, y_hi = math.floor(y_lo / step) * step, math.ceil(y_hi / step) * step
    if y_hi == y_lo:
        y_hi = y_lo + step

    def sx(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * plot_h

    parts = [f"<svg class='chart' viewBox='0 0 {width} {height}' role='img' aria-label='{esc(title)}' "
             f"xmlns='http://www.w3.org/2000/svg'>",
             f"<text class='title' x='{left}' y='18'>{esc(title)}</text>"]
    for y in _ticks(y_lo, y_hi, step):
        parts.append(f"<line class='grid' x1='{left}' x2='{left + plot_w}' y1='{sy(y):.1f}' y2='{sy(y):.1f}'/>"
                     f"<text class='tick' x='{left - 6}' y='{sy(y) + 4:.1f}' text-anchor='end'>{y:g}</text>")
    for x in _ticks(x_lo, x_hi, max(1.0, nice_step(x_hi - x_lo, 6))):
        parts.append(f"<line class='axis' x1='{sx(x):.1f}' x2='{sx(x):.1f}' y1='{top + plot_h}' y2='{top + plot_h + 4}'/>"
                     f"<text class='tick' x='{sx(x):.1f}' y='{top + plot_h + 17}' text-anchor='middle'>{x:g}</text>")
    parts.append(f"<line class='axis' x1='{left}' x2='{left + plot_w}' y1='{top + plot_h}' y2='{top + plot_h}'/>")
    parts.append(f"<text class='label' x='{left + plot_w / 2:.0f}' y='{height - 6}' text-anchor='middle'>"
                 f"{esc(x_label)}</text>")
    parts.append(f"<text class='label' transform='translate(13 {top + plot_h / 2:.0f}) rotate(-90)' "
                 f"text-anchor='middle'>{esc(y_label)}</text>")
    legend_x = width - right
    for s in reversed(series):
        label_w = 7 * len(s.label) + 26
        legend_x -= label_w
        dash = " stroke-dasharray='5 3'" if s.dashed else ""
        parts.append(f"<line x1='{legend_x}' x2='{legend_x + 18}' y1='14' y2='14' stroke='{s.color}' stroke-width='2.5'"
                     f"{dash}/><text class='tick' x='{legend_x + 22}' y='18'>{esc(s.label)}</text>")
    for s in series:
        if not s.points:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s.points)
        dash = " stroke-dasharray='5 3'" if s.dashed else ""
        last_x, last_y = s.points[-1]
        parts.append(f"<polyline points='{path}' fill='none' "
                     f"stroke='{s.color}' stroke-width='2' stroke-linejoin='round'{dash}>"
                     f"<title>{esc(s.label)}: {last_y:.4g} at {last_x:g}</title></polyline>")
    parts.append("</svg>")
    return "".join(parts)
