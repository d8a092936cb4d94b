"""All user-facing output: one-line messages and progress bars, silenced by ``--quiet``.

Progress goes to stderr through rich, which falls back to plain lines when stderr is not a terminal (as in CI),
so logs stay readable. Library code reports through ``out``; it never prints directly.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


class Output:
    """Messages and progress for the CLI; ``quiet`` keeps only errors."""

    def __init__(self) -> None:
        self.quiet = False
        self.console = Console(stderr=True, highlight=False, soft_wrap=True)  # one message, one line

    def info(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, markup=False)

    def error(self, message: str) -> None:
        print(f"error: {message}", file=sys.stderr)

    @contextmanager
    def progress(self) -> Iterator[Progress]:
        """A rich Progress that renders nothing in quiet mode; callers add tasks and advance them."""
        progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
            disable=self.quiet,
            transient=False,
        )
        with progress:
            yield progress


out = Output()
