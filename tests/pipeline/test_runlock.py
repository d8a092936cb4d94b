"""One bnnflow process per run folder: a second is refused at once, naming the first; a dead holder's lock is
taken over."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bnnflow.errors import RunBusyError
from bnnflow.pipeline.runlock import LOCK_NAME, run_lock

HOLD = """
import sys, time
from pathlib import Path
from bnnflow.pipeline.runlock import run_lock
with run_lock(Path(sys.argv[1]), "bnnflow run --out somewhere"):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_process_is_refused_at_once_naming_the_first(tmp_path: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.perf_counter()
        with pytest.raises(RunBusyError) as err:
            with run_lock(tmp_path):
                pass
        assert time.perf_counter() - started < 5  # refused, not queued
        assert f"pid {holder.pid}" in str(err.value) and "bnnflow run --out somewhere" in str(err.value)
    finally:
        holder.kill()
        holder.wait()
    with run_lock(tmp_path):  # the kernel dropped the dead holder's lock
        info = json.loads((tmp_path / LOCK_NAME).read_text())
        assert info["pid"] != holder.pid
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_stale_lock_file_of_a_dead_process_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": int(dead.stdout), "host": "x", "since": 0, "command": "c"}))
    with run_lock(tmp_path, "bnnflow export RUN"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "bnnflow export RUN"


def test_the_lock_is_reentrant_within_a_process(tmp_path: Path) -> None:
    with run_lock(tmp_path):
        with run_lock(tmp_path):
            assert (tmp_path / LOCK_NAME).exists()
        assert (tmp_path / LOCK_NAME).exists()  # still held by the outer block
    assert not (tmp_path / LOCK_NAME).exists()
