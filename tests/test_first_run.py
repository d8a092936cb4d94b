"""The front door, as a new user walks through it: the README's `make run` in a fresh copy of the repository, and
the installed `bnnflow run` with a relative --out from another working directory, through every default stage
(training, export, compile, simulate, RTL cosimulation and a ULX3S bitstream).

Every other test writes under absolute temporary paths; these two are the ones that would catch a stage that
depends on the working directory (the relative Verilator build folder that once broke `make run`).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BNNFLOW = Path(sys.executable).parent / "bnnflow"
DEFAULT_STAGES = ["train", "export", "compile", "simulate", "rtl", "bitstream"]


def _environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("BNNFLOW_DEBUG", "MAKEFLAGS", "MAKELEVEL")}


def _check_run(root: Path, min_accuracy: float) -> dict:
    summary = json.loads((root / "summary.json").read_text())
    stages = summary["stages"]
    assert list(stages) == DEFAULT_STAGES and all(s["status"] == "ok" for s in stages.values()), stages
    assert stages["train"]["test_accuracy"] >= min_accuracy
    assert stages["export"]["mismatches"] == 0 and stages["export"]["verified_samples"] == 360
    assert stages["compile"]["streamlined_mismatches"] == 0 and stages["compile"]["dataflow_mismatches"] == 0
    assert stages["simulate"]["mismatches"] == 0 and stages["rtl"]["mismatches"] == 0
    assert stages["rtl"]["cosim_samples"] > 0 and stages["rtl"]["cycles_error"] <= 0.05
    assert stages["bitstream"]["timing_met"] and (root / stages["bitstream"]["bitstream"]).stat().st_size > 100_000
    assert (root / "report.html").is_file()
    return stages


def test_run_with_a_relative_out_from_another_working_directory(tmp_path: Path) -> None:
    work = tmp_path / "home" / "work"
    work.mkdir(parents=True)
    args = [str(BNNFLOW), "run", "--out", "../runs/small", "--epochs", "3", "--set", "model.args.hidden=32",
            "--set", "model.args.depth=2", "--set", "fpga.cosim_samples=40", "--set", "train.threads=1"]
    done = subprocess.run(args, cwd=work, env=_environment(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    root = tmp_path / "home" / "runs" / "small"
    stages = _check_run(root, min_accuracy=0.5)
    assert stages["rtl"]["cosim_samples"] == 40
    from bnnflow.pipeline.manifest import Manifest

    assert Manifest(root).foreign() == []  # every file the stages wrote is known, so --force can remove them
    # the same run, addressed from another folder with another relative path: every stage is up to date
    again = subprocess.run([*args[:3], "home/runs/small", *args[4:]], cwd=tmp_path, env=_environment(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stderr.count("skipped: up to date") == len(DEFAULT_STAGES)


def test_readme_make_run_in_a_fresh_copy(tmp_path: Path) -> None:
    """`make run` exactly as the README has it, in a copy of the repository, reusing this environment (VENV)."""
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    copy = tmp_path / "bnnflow"
    shutil.copytree(REPO, copy, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "build", "__pycache__",
                                                              "*.egg-info", ".pytest_cache", ".hypothesis"))
    venv = Path(sys.prefix)
    # -o: the environment is installed already; never reinstall it from the copy (that would repoint it there)
    command = ["make", "-o", str(venv / ".bnnflow-installed"), "run", f"VENV={venv}"]
    done = subprocess.run(command, cwd=copy, env=_environment(), capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, (done.stdout[-2000:], done.stderr[-3000:])
    _check_run(copy / "runs" / "default", min_accuracy=0.95)
    rerun = subprocess.run(command, cwd=copy, env=_environment(), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0 and rerun.stderr.count("skipped: up to date") == len(DEFAULT_STAGES), rerun.stderr
