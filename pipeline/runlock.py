"""One bnnflow process at a time per run folder.

The lock is ``flock`` on ``RUN/.bnnflow.lock``. The kernel drops it when its holder exits, however it exits, so
a lock file left by a killed run (a dead pid) is simply taken over. The file names its holder (pid, host,
command, start time) so that a refused second process can say who has the folder. A process may take the lock
of a folder it already holds (nested stages), which costs nothing.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from bnnflow.errors import RunBusyError

LOCK_NAME = ".bnnflow.lock"

_held: dict[Path, int] = {}  # lock path -> nesting depth, for the locks this process holds


def _holder(path: Path) -> str:
    """Who holds the lock, from its file, for the refusal message."""
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
        since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info["since"]))
        host = "" if info.get("host") == socket.gethostname() else f" on {info.get('host')}"
        return f"pid {info['pid']}{host}, `{info['command']}`, since {since}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that has not written its name yet"


def _acquire(path: Path) -> int:
    """Lock ``path`` for this process; returns its open descriptor, or raises ``RunBusyError``."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunBusyError(f"{path.parent} is in use by another bnnflow process ({_holder(path)}); wait for it to "
                               "finish or stop it, or choose another --out") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:  # else the previous holder removed the file between our open and our lock: lock the new one
            return fd
        os.close(fd)


@contextmanager
def run_lock(root: Path, command: str | None = None) -> Iterator[None]:
    """Hold the run folder ``root`` (which must exist) for the duration of the block."""
    path = Path(root).absolute() / LOCK_NAME
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    fd = _acquire(path)
    info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
            "command": command or " ".join(["bnnflow", *sys.argv[1:]])}
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    _held[path] = 1
    try:
        yield
    finally:
        del _held[path]
        path.unlink(missing_ok=True)
        os.close(fd)
