"""Shared test helpers: running the real ``bnnflow`` command in a subprocess, as a user would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "bnnflow.pipeline.cli"]


def run_cli(*args: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``bnnflow ARGS`` in ``cwd`` and capture its output (no debug tracebacks)."""
    env = {k: v for k, v in os.environ.items() if k != "BNNFLOW_DEBUG"}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """``cli(*args)`` runs bnnflow's ``main()`` in this process, in a fresh temporary folder.

    The same entry point as the installed command, without paying for a new interpreter and the torch import
    on every call; exit codes, stdout and stderr are captured as a subprocess would return them.
    """
    from bnnflow.pipeline.cli import main
    from bnnflow.pipeline.console import out

    def _run(*args: str) -> subprocess.CompletedProcess:
        monkeypatch.chdir(tmp_path)
        monkeypatch.setattr(sys, "argv", ["bnnflow", *args])
        os.environ.pop("BNNFLOW_DEBUG", None)
        capsys.readouterr()
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        finally:
            out.quiet = False
            os.environ.pop("BNNFLOW_DEBUG", None)
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(list(args), code, captured.out, captured.err)

    return _run
