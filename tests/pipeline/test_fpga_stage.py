"""The rtl and bitstream stages of a run, and the fpga-run command's errors, through the real steps and CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest


def one_error_line(stderr: str) -> bool:
    """One ``error:`` line and no traceback (progress lines such as ``[bitstream]`` may come before it)."""
    return sum(line.startswith("error: ") for line in stderr.splitlines()) == 1 and "Traceback" not in stderr


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A trained digits run (3 epochs) folded for 50,000 frames/s, compiled, simulated and turned into RTL."""
    from bnnflow.pipeline.config import Config
    from bnnflow.pipeline.steps import prepare_run, run_steps, validate

    cfg = validate(Config().with_overrides({"train.epochs": 3, "train.threads": 1, "compile.target_fps": 50_000,
                                            "compile.label_select": True, "fpga.cosim_samples": 0}))
    run = prepare_run(cfg, tmp_path_factory.mktemp("fpga") / "run")
    run_steps(cfg, run, ["train", "export", "compile", "simulate", "rtl"])
    return run.root


def test_rtl_stage_cosimulates_the_whole_test_split(run_dir: Path) -> None:
    rtl = json.loads((run_dir / "summary.json").read_text())["stages"]["rtl"]
    assert rtl["status"] == "ok" and rtl["lint"] == "clean"
    assert rtl["cosim_samples"] == 360 and rtl["mismatches"] == 0  # every digits test image
    assert rtl["cycles_error"] <= 0.05
    cosim = json.loads((run_dir / "rtl" / "cosim.json").read_text())
    assert cosim["samples"] == 360 and cosim["back_pressure"]["p_valid"] < 1
    interface = json.loads((run_dir / "rtl" / "interface.json").read_text())
    assert interface["output_kind"] == "label" and interface["output"]["beats"] == 1
    assert all((run_dir / "rtl" / name).is_file() for name in interface["system_sources"])


def test_bitstream_for_icebreaker_and_skip_for_xilinx(cli, run_dir: Path) -> None:
    done = cli("bitstream", str(run_dir), "--board", "icebreaker")
    assert done.returncode == 0, done.stderr
    stage = json.loads((run_dir / "summary.json").read_text())["stages"]["bitstream"]
    assert stage["board"] == "icebreaker" and stage["luts"] > 0 and stage["fmax_mhz"] > 0
    assert (run_dir / stage["bitstream"]).stat().st_size > 1000
    report = json.loads((run_dir / "fpga" / "icebreaker" / "report.json").read_text())
    assert report["throughput"]["frames_per_second_at_fmax"] == stage["frames_per_second_at_fmax"]
    xilinx = cli("bitstream", str(run_dir), "--board", "pynq-z1")
    assert xilinx.returncode == 0 and "FINN" in xilinx.stderr


def test_bitstream_refuses_stale_rtl(cli, run_dir: Path, tmp_path: Path) -> None:
    interface = run_dir / "rtl" / "interface.json"
    before = interface.stat().st_mtime
    try:
        os.utime(interface, (before - 3600, before - 3600))
        stale = cli("bitstream", str(run_dir), "--board", "icebreaker")
    finally:
        os.utime(interface, (before, before))
    assert stale.returncode == 2 and one_error_line(stale.stderr)
    assert "older than" in stale.stderr and "bnnflow rtl" in stale.stderr


def test_fpga_run_without_a_board_is_one_line(cli, run_dir: Path, tmp_path: Path) -> None:
    missing = cli("fpga-run", str(run_dir), "--port", str(tmp_path / "ttyUSB9"))
    assert missing.returncode == 2 and one_error_line(missing.stderr)
    assert "not found" in missing.stderr and "ls /dev/ttyUSB" in missing.stderr


def test_rtl_on_a_run_without_dataflow_is_one_line(cli, tmp_path: Path) -> None:
    empty = cli("rtl", str(tmp_path))
    assert empty.returncode == 2 and one_error_line(empty.stderr) and "bnnflow" in empty.stderr
