"""Numbers as people read them on the report: thousands separators, units, a fixed number of decimals.

The number and its unit are joined by a no-break space so a table cell never splits ``312,500`` from
``frames/s``. Tests format the summary's figures with these same functions to find them on the page.
"""

from __future__ import annotations

import math

NBSP = "\u00a0"
#: what the page shows where a figure is unknown
NONE = "—"


def is_number(value: object) -> bool:
    """A finite int or float (bool excluded): what the formatters accept."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def integer(value: object, unit: str = "") -> str:
    """``312,500 frames/s``: rounded to a whole number, thousands separated."""
    if not is_number(value):
        return NONE
    text = f"{round(value):,}"
    return f"{text}{NBSP}{unit}" if unit else text


def percent(fraction: object) -> str:
    """``97.5 %`` from 0.975."""
    if not is_number(fraction):
        return NONE
    return f"{100 * fraction:.1f}{NBSP}%"


def mhz(value: object) -> str:
    """``129.4 MHz``; a round clock as ``100 MHz``."""
    if not is_number(value):
        return NONE
    text = f"{value:.1f}".removesuffix(".0")
    return f"{text}{NBSP}MHz"


def seconds(value: object) -> str:
    """``0.31 s``, ``2.1 s``, ``2 min 14 s``, ``1 h 05 min``: a stage's or a training's wall time."""
    if not is_number(value) or value < 0:
        return NONE
    if value < 1:
        return f"{value:.2f}{NBSP}s"
    if value < 60:
        return f"{value:.1f}{NBSP}s"
    whole = round(value)
    if whole < 3600:
        return f"{whole // 60}{NBSP}min {whole % 60:02d}{NBSP}s"
    return f"{whole // 3600}{NBSP}h {whole % 3600 // 60:02d}{NBSP}min"


def latency_ms(value: object) -> str:
    """A latency given in milliseconds, in µs below 1 ms (``36.0 µs``, ``1.25 ms``), three significant digits."""
    if not is_number(value):
        return NONE
    if value < 1:
        return f"{value * 1000:#.3g}".rstrip(".") + f"{NBSP}µs"
    return f"{value:#.3g}".rstrip(".") + f"{NBSP}ms"


def ratio(value: object) -> str:
    """``3.52×``: a speed-up."""
    if not is_number(value):
        return NONE
    return f"{value:.2f}×"
