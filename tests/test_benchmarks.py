"""Benchmarks run in CI only as smoke tests: tiny sizes, checking they run and their outputs are exact."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

CUDA = torch.cuda.is_available()


def test_simulator_benchmark_smoke(tmp_path: Path) -> None:
    from benchmarks.simulator import main

    result = main(["--frames", "8", "--qonnx-frames", "2", "--repeats", "1", "--out", str(tmp_path)])
    assert result["simulator_equals_qonnx"] and set(result["networks"]) == {"cnv", "resnet20"}
    written = json.loads((tmp_path / "simulator.json").read_text())
    assert written["frames"] == 8
    assert all(row["simulator_fps"] > 0 and row["pytorch_fps"] > 0 and row["ratio_vs_qonnx"] > 0
               and row["simulator_equals_qonnx"] for row in written["networks"].values())


def test_fpga_benchmark_smoke(tmp_path: Path) -> None:
    """TFC-w1a1 as the benchmark folds it (1 M frames/s), cosimulated on a few frames; the build is left to the
    benchmark itself (minutes)."""
    from benchmarks.fpga import main

    (result,) = main(["--networks", "tfc", "--frames", "30", "--no-build", "--out", str(tmp_path)])
    assert result["cosim_mismatches"] == 0 and result["cosim_frames"] == 30
    assert result["initiation_interval_cycles"] <= 100  # 1 M frames/s at 100 MHz


def test_fpga_benchmark_finn_figures() -> None:
    """FINN's estimate reports (as ``collect_reports`` reads them) become fpga.json's figures, frames/s per 1000 of
    FINN's LUTs included, and the line beside ours says both at the same clock, built or only estimated."""
    from benchmarks.fpga import finn_figures, finn_line

    reports = {"estimated_fps": 3051.8, "estimated_resources": {"LUT": 22670.0, "BRAM_18K": 147.0, "URAM": 0.0}}
    figures = finn_figures(reports, 100.0)
    assert figures == {"finn_clock_mhz": 100.0, "finn_estimated_fps": 3051.8, "finn_estimated_luts": 22670.0,
                       "finn_estimated_bram_18k": 147.0,
                       "finn_estimated_fps_per_1000_luts": pytest.approx(3051.8 / 22.67)}
    row = {"network": "cnv", "initiation_interval_cycles": 32768, "luts_estimated": 28700, "ram_blocks_estimated": 151,
           "fps_per_1000_luts_estimated": 106.3, **figures}
    assert finn_line(row) == ("cnv: FINN estimates 3,051.8 frames/s at 100 MHz, 22,670 LUT (Xilinx LUT6) and 147 "
                              "BRAM_18K at this folding: 135 frames/s per 1k LUT; we estimate 3,051.8 frames/s, "
                              "28,700 LUT4 and 151 DP16KD: 106 per 1k LUT4")
    built = finn_line({**row, "luts": 22111, "ram_blocks": 143, "fps_per_1000_luts": 141.3})
    assert built.endswith("we place 22,111 LUT4 and 143 DP16KD: 138 frames/s per 1k LUT4 at 100 MHz (141 at Fmax)")
    assert finn_line({"network": "cnv"}) is None


@pytest.mark.skipif(not (os.environ.get("FINN_ROOT") and os.environ.get("FINN_PYTHON")),
                    reason="needs FINN (FINN_ROOT, FINN_PYTHON), which is not on PyPI")
def test_fpga_benchmark_finn_estimate(tmp_path: Path) -> None:
    """With FINN: FINN's estimate of TFC at the benchmark's folding equals our frame rate, its Python verification
    passes, and fpga.json keeps the figures (about a minute: FINN's estimate steps, no Vivado)."""
    from benchmarks.fpga import main

    (result,) = main(["--networks", "tfc", "--frames", "5", "--no-build", "--finn", "--out", str(tmp_path)])
    assert result["finn_estimated_fps"] == pytest.approx(100e6 / result["initiation_interval_cycles"], abs=0.1)
    assert result["finn_estimated_luts"] > 0 and result["finn_estimated_bram_18k"] >= 0
    verified = list((tmp_path / "tfc" / "finn" / "output" / "verification_output").glob("verify_*"))
    assert verified and all("SUCCESS" in p.name for p in verified)
    assert json.loads((tmp_path / "fpga.json").read_text())[0]["finn_estimated_fps"] == result["finn_estimated_fps"]


def test_edge_benchmark_smoke(tmp_path: Path) -> None:
    """Bi-Real Net 18 at 32x32 (the CIFAR stem), a few rounds: all three models run, the kernel's agree."""
    from benchmarks.edge import main

    report = main(["--size", "32", "--runs", "3", "--warmup", "1", "--out", str(tmp_path)])
    assert report["bitpacked_equals_reference"]
    assert set(report["models"]) == {"float_resnet18", "reference", "int8", "bitpacked"}
    from bnnflow.pipeline.edge.runtime import providers

    assert all(entry["p50_ms"] > 0 and entry["provider"] in providers() for entry in report["models"].values())
    assert json.loads((tmp_path / "edge.json").read_text())["runs"] == 3


def test_methods_benchmark_smoke(tmp_path: Path) -> None:
    """Two methods, one seed, one epoch, two timed steps: the table, the CIFAR-shaped run and the speed rows."""
    from benchmarks.methods import main

    report = main(["--epochs", "1", "--seeds", "1", "--cifar-epochs", "0", "--methods", "ste,rebnn",
                   "--speed-rounds", "2", "--out", str(tmp_path)])
    assert set(report["digits"]) == {"ste", "rebnn"}
    assert all(0 <= r["accuracy_mean"] <= 1 and r["flip_rate_mean"] >= 0 for r in report["digits"].values())
    assert all(s["conv"]["bnnflow"] > 0 and s["conv"]["plain"] > 0 for s in report["speed"].values())
    assert json.loads((tmp_path / "methods.json").read_text())["epochs"] == 1


def test_train_benchmark_smoke(tmp_path: Path) -> None:
    """Two methods, one tiny epoch: every run trains through the loop and the overheads are the plain binary net's
    images/s over each one's."""
    from benchmarks.train import main

    report = main(["--images", "32", "--batch", "16", "--epochs", "1", "--size", "16", "--repeats", "1",
                   "--methods", "ste,rebnn", "--out", str(tmp_path)])
    written = json.loads((tmp_path / "train.json").read_text())
    assert set(written["methods"]) == {"ste", "rebnn"} and written["device"] == "cpu"
    plain = written["methods"]["ste"]["images_per_second"]
    for result in [*written["methods"].values(), written["float"]]:
        assert result["images_per_second"] > 0 and result["device"] == "cpu"
        assert abs(result["overhead"] - plain / result["images_per_second"]) < 1e-2
    assert report["max_overhead"] == max(r["overhead"] for r in written["methods"].values())


@pytest.mark.skipif(CUDA, reason="this machine has a GPU: test_gpu_check_passes_on_the_gpus runs the check")
def test_gpu_check_fails_in_one_line_without_a_gpu(tmp_path: Path, capsys) -> None:
    from benchmarks.gpu_check import main

    assert main(["--out", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert "no CUDA device" in err and len(err.splitlines()) == 1
    assert json.loads((tmp_path / "gpu_check.json").read_text())["ok"] is False


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU (PyTorch sees none here)")
def test_gpu_check_passes_on_the_gpus(tmp_path: Path) -> None:
    """The one command a user with CUDA runs: DDP over all GPUs with amp, a checkpoint, exported on the CPU."""
    from benchmarks.gpu_check import main

    assert main(["--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["ok"] and result["gpus"] == torch.cuda.device_count() and result["export"]["mismatches"] == 0
