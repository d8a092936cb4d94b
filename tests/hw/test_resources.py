"""The calibrated LUT model of the RTL (``bnnflow.hw.rtl.resources``): the committed coefficients are the fit of
the committed yosys samples, every module's model follows its samples, the placed designs are within 20 %, and
the ECP5 estimates of a compiled network are the model's figures for the instances its RTL has."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.calibrate_resources import PLACED, SAMPLES, fit
from bnnflow.hw.boards import ECP5, XILINX
from bnnflow.hw.estimates import estimate, hw_ops, lut_memory_bits, memory_cost
from bnnflow.hw.folding import fold_for_fps
from bnnflow.hw.rtl.layers import rtl_layer
from bnnflow.hw.rtl.resources import FEATURES, calibration_file, features, load_calibration
from tests.hw.conftest import build_dataflow

ROWS = [json.loads(line) for line in SAMPLES.read_text().splitlines()]
DESIGNS = [json.loads(line) for line in PLACED.read_text().splitlines()]


def test_the_committed_model_is_the_fit_of_the_committed_samples(tmp_path: Path) -> None:
    refit = fit(SAMPLES, PLACED, tmp_path / "ecp5.json")
    committed = json.loads(Path(str(calibration_file("ecp5"))).read_text())
    assert refit == committed


def test_the_samples_cover_every_module_the_rtl_builds() -> None:
    modules = {row["module"] for row in ROWS}
    assert modules == set(FEATURES), "collect designs that instantiate the missing modules"
    for row in ROWS:
        assert row["lut4"] >= 0 and row["ff"] >= 0 and set(features(row["module"], row["params"], row["lut_memory_bits"]))


@pytest.mark.parametrize("measure", ["lut4", "ff"])
@pytest.mark.parametrize("module", sorted(FEATURES))
def test_each_module_model_follows_its_samples(module: str, measure: str) -> None:
    """Over a module's instances, the model's total within 12 % of yosys's, and the big instances (the ones that
    decide a design's size: 1,000 or more) each within 35 %."""
    calibration = load_calibration("ecp5")
    model_of = calibration.luts if measure == "lut4" else calibration.flip_flops
    samples = [row for row in ROWS if row["module"] == module]
    model = np.array([model_of(module, s["params"], s["lut_memory_bits"]) for s in samples])
    measured = np.array([s[measure] for s in samples], float)
    assert abs(model.sum() / measured.sum() - 1) <= 0.12
    big = measured >= 1000
    assert np.all(np.abs(model[big] / measured[big] - 1) <= 0.35), list(zip(model[big], measured[big]))


@pytest.mark.parametrize("measure", ["lut4", "ff"])
def test_placed_designs_are_within_20_percent_of_nextpnr(measure: str) -> None:
    calibration = load_calibration("ecp5")
    factor, model_of = ((calibration.placed_per_lut4, calibration.luts) if measure == "lut4"
                        else (calibration.placed_per_ff, calibration.flip_flops))
    assert DESIGNS
    for row in DESIGNS:
        model = factor * sum(model_of(i["module"], i["params"], i["lut_memory_bits"]) for i in row["instances"])
        assert abs(model / row[f"placed_{measure}"] - 1) <= 0.20, (row["design"], model, row[f"placed_{measure}"])


def test_ecp5_estimates_are_the_model_of_the_rtl_instances() -> None:
    """Each layer's LUTs on the ECP5 are the calibrated figure of the instance its RTL builds; the total adds the
    width converters and the board wrapper; Xilinx keeps the ops' analytic models."""
    dataflow = build_dataflow("tfc", (1, 28, 28))
    fold_for_fps(dataflow, 200_000, 100.0, ECP5)
    calibration = load_calibration("ecp5")
    est = estimate(dataflow, 100.0, ECP5)
    for (node, op), layer in zip(hw_ops(dataflow), est["layers"]):
        instance = rtl_layer(dataflow, node, op)
        bits = lut_memory_bits(op.memories(dataflow), ECP5)
        assert layer["luts"] == calibration.placed(instance.module, instance.params, bits) > 0
        assert layer["flip_flops"] == calibration.placed_ff(instance.module, instance.params, bits) > 0
    assert est["wrapper"]["luts"] > 0 and est["join_fifos"]["width_converters"] > 0
    for key in ("luts", "flip_flops"):
        assert est[key] == sum(layer[key] for layer in est["layers"]) + est["join_fifos"][key] + est["wrapper"][key]
    xilinx = estimate(dataflow, 100.0, XILINX)
    assert xilinx["wrapper"] == {"luts": 0, "flip_flops": 0} and xilinx["flip_flops"] is None
    for (_, op), layer in zip(hw_ops(dataflow), xilinx["layers"]):
        rom = sum(memory_cost(memory, XILINX)[1] for memory in op.memories(dataflow))
        assert layer["luts"] == op.lut_estimate(6) + rom


def test_hierarchy_cells_counts_each_instance_through_its_submodules(tmp_path: Path) -> None:
    """The instances of a netlist that keeps them as modules: LUT4s as nextpnr counts them (a carry cell two, a LUT
    RAM cell six) and flip-flops, through submodules, per instance even where two instances share a module."""
    from benchmarks.calibrate_resources import hierarchy_cells

    def module(**cells: str) -> dict:
        return {"attributes": {}, "cells": {name: {"type": kind} for name, kind in cells.items()}}

    mvtu = "$paramod$0123\\bnn_mvtu"
    netlist = {"modules": {
        "bnnflow_system": module(u_accel="bnnflow_accel", u_uart="uart_bridge"),
        "bnnflow_accel": module(u_mvtu_0=mvtu, u_mvtu_1=mvtu, u_dwc_mvtu_1_in0="bnn_dwc"),
        mvtu: module(a="LUT4", b="CCU2C", c="TRELLIS_FF", d="TRELLIS_FF", e="PFUMX", u_sum="bnn_sum_tree"),
        "bnn_sum_tree": module(a="LUT4", b="LUT4", c="TRELLIS_FF"),
        "bnn_dwc": module(a="TRELLIS_DPR16X4", b="TRELLIS_FF"),
        "uart_bridge": module(a="LUT4", b="DP16KD"),
    }}
    path = tmp_path / "hier.json"
    path.write_text(json.dumps(netlist))
    assert hierarchy_cells(path) == {"u_mvtu_0": {"lut4": 5, "ff": 3}, "u_mvtu_1": {"lut4": 5, "ff": 3},
                                     "u_dwc_mvtu_1_in0": {"lut4": 6, "ff": 1}, "u_uart": {"lut4": 1, "ff": 0}}


def test_weight_registers_are_three_words_in_logic_and_one_in_block_ram() -> None:
    """CNV at 3,000 frames/s has both kinds of weight ROM: where the estimates put the weights in block RAM (the
    first memory of each MVTU), the model counts one register word per bank (the second hold: the read and the
    first hold are in the block RAM), and three where they are logic."""
    from bnnflow.hw.rtl.resources import weight_register_bits

    dataflow = build_dataflow("cnv", (3, 32, 32))
    fold_for_fps(dataflow, 3000, 100.0, ECP5)
    kinds = set()
    for node, op in hw_ops(dataflow):
        if node.op_type != "MVTU":
            continue
        p = rtl_layer(dataflow, node, op).params
        in_blocks = memory_cost(op.memories(dataflow)[0], ECP5)[0] > 0
        banks = -(-(p["MW"] // p["SIMD"]) * (p["MH"] // p["PE"]) // p["WBANK_DEPTH"])
        word = p["PE"] * p["SIMD"] * p["W_BITS"]
        kinds.add(in_blocks)
        assert weight_register_bits(p) == (banks * word if in_blocks else 3 * banks * word), node.name
        assert features("bnn_mvtu", p, 0)["w_reg_bits"] == weight_register_bits(p)
    assert kinds == {True, False}
