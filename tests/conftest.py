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
def cli(tmp_path: Path):
    """``cli(*args)`` runs bnnflow in a fresh temporary folder."""

    def _run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        return run_cli(*args, cwd=tmp_path, timeout=timeout)

    return _run
