"""A network too large for the board gets its RTL, and the bitstream stage refuses it in one line before synthesis,
naming what it needs against what the board has; a network that fits passes the same check."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from bnnflow.errors import ConfigError
from bnnflow.hw.boards import get_board
from bnnflow.hw.rtl.fit import check_fits, design_needs
from bnnflow.models import create_model
from bnnflow.pipeline.export import export_model
from bnnflow.pipeline.onnx_files import load_model


def exported(tmp_path: Path, name: str, **kwargs) -> Path:
    """The registry's network (hw) with random weights, exported to model.qonnx in ``tmp_path``."""
    torch.manual_seed(0)
    model = create_model(name, input_shape=(3, 32, 32), num_classes=10, hw=True, **kwargs).eval()
    path = tmp_path / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_model(model, (3, 32, 32)).save(str(path))
    return path


def test_vgg_small_gets_rtl_and_the_bitstream_stage_refuses_it_before_synthesis(cli, tmp_path: Path) -> None:
    from bnnflow.hw.rtl.generate import generate_rtl

    source = exported(tmp_path, "vgg_small")
    run = tmp_path / "run"
    compiled = cli("compile", str(source), "--out", str(run), "--no-verify")
    assert compiled.returncode == 0, compiled.stderr
    assert "does not fit ulx3s" in compiled.stderr  # the compile step warns and keeps the smallest folding
    generate_rtl(load_model(run / "dataflow.onnx", "compile"), run / "rtl")  # what `bnnflow rtl` writes first
    refused = cli("bitstream", str(run), "--board", "ulx3s")
    assert refused.returncode == 2
    errors = [line for line in refused.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert "does not fit ulx3s" in errors[0] and "block RAMs" in errors[0] and "208" in errors[0]
    assert not (run / "fpga" / "ulx3s" / "yosys.log").exists()  # refused before synthesis started


@pytest.mark.parametrize("name,kwargs", [("cifar_resnet18", {}), ("vgg_small", {})])
def test_networks_whose_weights_exceed_the_ecp5_85f_are_refused(tmp_path: Path, name: str, kwargs: dict) -> None:
    from bnnflow.pipeline.compile.stage import compile_model
    from bnnflow.pipeline.config import CompileConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, dataflow, estimates = compile_model(load_model(exported(tmp_path, name, **kwargs), "export"),
                                               CompileConfig(board="ulx3s"))
    board = get_board("ulx3s")
    need = design_needs(dataflow, board)
    assert need["memory_bits"] > board.ram_blocks * board.fabric.ram_block_bits  # more bits than all its block RAM
    with pytest.raises(ConfigError, match=r"block RAMs .* against the 208"):
        check_fits(dataflow, board)
    assert estimates["board"]["fits"] is False


def small_resnet(tmp_path: Path):
    """A narrow ResNet-20 (widths 4-8-16), compiled and folded for the ULX3S: its dataflow graph."""
    from bnnflow.pipeline.compile.stage import compile_model
    from bnnflow.pipeline.config import CompileConfig

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, dataflow, _ = compile_model(load_model(exported(tmp_path, "resnet20", widths=[4, 8, 16], stem_width=4),
                                                  "export"), CompileConfig(board="ulx3s"))
    return dataflow


def test_a_residual_network_that_fits_passes_with_its_join_fifos_counted(tmp_path: Path) -> None:
    from bnnflow.hw.estimates import estimate
    from bnnflow.hw.rtl.generate import generate_rtl

    dataflow = small_resnet(tmp_path)
    board = get_board("ulx3s")
    need = check_fits(dataflow, board)
    est = estimate(dataflow, 100.0, board.fabric)
    # the FIFOs the generator builds are the ones the estimate counts
    interface = json.loads((generate_rtl(dataflow, tmp_path / "rtl").folder / "interface.json").read_text())
    fifos = [fifo for layer in interface["layers"] for fifo in layer["join_fifos"]]
    assert len(fifos) == est["join_fifos"]["count"] == 9  # one per residual block
    listed = sum(f["width"] * f["depth"] for f in fifos)
    # a deep FIFO keeps two of its beats in registers, outside its RAM
    assert listed - 2 * sum(f["width"] for f in fifos) <= est["join_fifos"]["memory_bits"] <= listed
    assert need["memory_bits"] == sum(layer["memory_bits"] for layer in est["layers"]) + est["join_fifos"]["memory_bits"]


def test_a_design_short_of_flip_flops_is_refused_naming_them(tmp_path: Path) -> None:
    """On a made-up ECP5 board with the ULX3S's LUTs and block RAM but few flip-flops, the same small ResNet is
    refused for its flip-flops alone, in one line giving what it needs against what the board has."""
    from dataclasses import replace

    from bnnflow.hw.boards import ECP5, Board

    dataflow = small_resnet(tmp_path)
    ulx3s = get_board("ulx3s")
    need = design_needs(dataflow, ulx3s)
    assert 0 < need["flip_flops"] <= ulx3s.flip_flops and need["luts"] <= ulx3s.luts
    short = Board("ff-short", ulx3s.part, replace(ECP5, ffs_per_lut=need["flip_flops"] / 2 / ulx3s.luts), ulx3s.luts,
                  ulx3s.ram_blocks, ulx3s.clock_mhz)
    with pytest.raises(ConfigError) as err:
        check_fits(dataflow, short)
    message = str(err.value)
    assert "\n" not in message and "flip-flops" in message and f"{short.flip_flops:,}" in message
    assert "LUTs against" not in message and "block RAMs" not in message
