"""HTML building blocks of the report. Everything that comes from a run file goes through ``esc``."""

from __future__ import annotations

import html
from typing import Iterable


def esc(value: object) -> str:
    """Text for HTML (element content and quoted attributes alike)."""
    return html.escape(str(value), quote=True)


def badge(status: str, text: str | None = None) -> str:
    """A coloured status word: ok, failed, stale, skipped, interrupted, not-run."""
    css = status.replace(" ", "-")
    return f"<span class='badge {esc(css)}'>{esc(text or status)}</span>"


def note(kind: str, html_text: str) -> str:
    """A boxed paragraph: ``pending`` (not run yet), ``error``, ``stale``, ``unreadable`` or ``info``."""
    return f"<div class='note {kind}'>{html_text}</div>"


def table(headers: Iterable[str], rows: Iterable[Iterable[str]], numeric: Iterable[int] = (), css: str = "") -> str:
    """A table of ready-made HTML cells; the ``numeric`` columns are right-aligned in tabular figures."""
    right = set(numeric)

    def cells(tag: str, contents: Iterable[str]) -> str:
        return "".join(f"<{tag} class='num'>{c}</{tag}>" if i in right else f"<{tag}>{c}</{tag}>"
                       for i, c in enumerate(contents))

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in rows)
    return f"<table class='{css}'><thead><tr>{cells('th', headers)}</tr></thead><tbody>{body}</tbody></table>"


def key_values(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list of (label, HTML value) pairs, laid out as a grid."""
    return "<dl class='kv'>" + "".join(f"<div><dt>{esc(k)}</dt><dd>{v}</dd></div>" for k, v in pairs) + "</dl>"
