"""The generated RTL: lint clean under ``verilator -Wall``, equal to the simulator bit for bit under random
back-pressure, and as fast per frame as the timing model says (within 5 %).

Networks come from the simulator's property tests (random MLPs and CNNs, folded at random, so width converters
of every kind appear) and from the zoo. Each cosimulation compiles a real Verilator model of the design.
"""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.boards import ECP5
from bnnflow.hw.convert import to_dataflow
from bnnflow.hw.estimates import timing
from bnnflow.hw.folding import _units, fold_for_fps
from bnnflow.hw.rtl import cosim, verilator
from bnnflow.hw.rtl.generate import ACCEL_TOP, generate_rtl
from bnnflow.hw.rtl.stream import StreamFormat, decode, encode, read_hex, write_hex
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model
from tests.hw.conftest import build_dataflow, threshold_pool_label_chain
from tests.hw.test_simulator_property import conv_networks, networks


def random_inputs(simulator: Simulator, count: int, seed: int = 0) -> np.ndarray:
    dtype = simulator.input_type
    rng = np.random.default_rng(seed)
    return rng.integers(int(dtype.min()), int(dtype.max()) + 1, (count, *simulator.input_shape))


def check_design(model, folder: Path, frames: int = 24, seed: int = 0) -> dict:
    """Generate, lint, cosimulate: every output equal to the simulator's, cycles per frame within 5 %."""
    design = generate_rtl(model, folder)
    verilator.lint(design.source_paths, ACCEL_TOP, folder)
    simulator = Simulator(model)
    inputs = random_inputs(simulator, frames, seed)
    report = cosim.cosimulate(design, inputs, simulator.run(inputs), timing(model, 100.0)["initiation_interval_cycles"],
                              seed=seed)
    layers = [(layer.name, layer.params, layer.input.beats, layer.output.beats) for layer in design.layers]
    assert report["mismatches"] == 0, (report, layers)
    assert report["cycles_error"] <= 0.05, (report, layers)
    return report


# no shrinking: every example compiles a Verilator model, and the failing one is reported whole
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(networks())
def test_random_mlps_cosimulate_exactly(tmp_path: Path, example) -> None:
    model, _, fold_seed = example
    chooser = random.Random(fold_seed)
    dataflow = to_dataflow(streamline_model(model), label_select=chooser.random() < 0.5)
    for unit in _units(dataflow):
        unit.apply(chooser.choice(unit.options))
    check_design(dataflow, tmp_path / f"mlp{fold_seed}", seed=fold_seed % 1000)


@settings(max_examples=3, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(conv_networks())
def test_random_cnns_cosimulate_exactly(tmp_path: Path, example) -> None:
    model, _, fold_seed = example
    dataflow = to_dataflow(streamline_model(model))
    chooser = random.Random(fold_seed)
    for unit in _units(dataflow):
        unit.apply(chooser.choice(unit.options))
    check_design(dataflow, tmp_path / f"cnn{fold_seed}", frames=8, seed=fold_seed % 1000)


def test_brevitas_tfc_w1a1_at_finn_rate(tmp_path: Path) -> None:
    """Brevitas's own TFC_1W1A (binary input, so the first layer is XNOR too), folded for 1 M frames/s."""
    from brevitas_examples.bnn_pynq.models import model_with_cfg

    torch.manual_seed(0)
    model, _ = model_with_cfg("TFC_1W1A", pretrained=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataflow = to_dataflow(streamline_model(export_model(model.eval(), (1, 28, 28))), label_select=True)
    fold_for_fps(dataflow, 1e6, 100.0, ECP5)
    report = check_design(dataflow, tmp_path / "tfc", frames=40)
    assert report["model_cycles_per_frame"] <= 100


def test_cnv_cosimulates_exactly(tmp_path: Path) -> None:
    dataflow = build_dataflow("cnv", (3, 32, 32))
    fold_for_fps(dataflow, 3000, 100.0, ECP5)
    check_design(dataflow, tmp_path / "cnv", frames=4)


def test_weight_rom_layout_round_trips(tmp_path: Path) -> None:
    """Word nf*SF + sf, lane p*SIMD + s holds W[sf*SIMD + s, nf*PE + p], as bnn_mvtu.v documents."""
    dataflow = build_dataflow("digits_mlp", (1, 8, 8))
    node = dataflow.graph.node[1]
    op = getCustomOp(node)
    op.set_nodeattr("PE", 4)
    op.set_nodeattr("SIMD", 8)
    design = generate_rtl(dataflow, tmp_path / "rtl")
    weights = dataflow.get_initializer(node.input[1]).astype(np.int64)
    mw, mh = weights.shape
    fmt = StreamFormat(4 * 8, 1, False, 1)
    banks = sorted(design.folder.glob(f"{node.name}_weights_*.hex"))
    words = np.concatenate([decode(read_hex(bank, fmt), fmt) for bank in banks])
    rebuilt = words.reshape(mh // 4, mw // 8, 4, 8).transpose(1, 3, 0, 2).reshape(mw, mh)
    assert np.array_equal(rebuilt, weights)


def test_overlapping_pool_is_refused_and_old_design_kept(tmp_path: Path) -> None:
    """An overlapping pool is a legal dataflow graph (the simulator runs it) that the RTL cannot build."""
    folder = tmp_path / "rtl"
    generate_rtl(threshold_pool_label_chain(), folder)
    before = sorted(p.name for p in folder.iterdir())
    overlapping = threshold_pool_label_chain(pool_stride=1)
    Simulator(overlapping)
    with pytest.raises(UnsupportedGraphError, match="StreamingMaxPool_0.*stride = kernel"):
        generate_rtl(overlapping, folder)
    assert sorted(p.name for p in folder.iterdir()) == before
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


@pytest.mark.parametrize(("lanes", "bits", "signed"), [(1, 1, False), (3, 5, True), (49, 1, False), (10, 8, True)])
def test_stream_encoding_round_trips(tmp_path: Path, lanes: int, bits: int, signed: bool) -> None:
    fmt = StreamFormat(lanes, bits, signed, 4)
    low, high = (-(1 << (bits - 1)), 1 << (bits - 1)) if signed else (0, 1 << bits)
    values = np.random.default_rng(lanes).integers(low, high, (5, fmt.elements))
    write_hex(tmp_path / "beats.hex", encode(values, fmt))
    assert np.array_equal(decode(read_hex(tmp_path / "beats.hex", fmt), fmt), values)
    first = np.zeros((1, fmt.elements), dtype=np.int64)
    first[0, 0] = 1
    assert encode(first, fmt)[0, 0] == 1  # the first element sits in the lowest bits of the first byte


def test_uart_system_runs_the_real_accelerator(tmp_path: Path) -> None:
    """bnnflow_system (UART bridge + digits accelerator with label select): frames sent bit by bit on the serial
    line come back as the simulator's labels, through the testbench's file mode and through fpga-run's pyserial
    host code talking to the simulated board on a pseudo-terminal."""
    from bnnflow.hw.fpga_run import run_on_board
    from bnnflow.hw.rtl import uart_cosim

    dataflow = to_dataflow(streamline_model(_digits_qonnx()), label_select=True)
    fold_for_fps(dataflow, 200_000, 100.0, ECP5)
    design = generate_rtl(dataflow, tmp_path / "rtl")
    verilator.lint(design.system_sources, "bnnflow_system", design.folder)
    simulator = Simulator(dataflow)
    inputs = random_inputs(simulator, 12)
    expected = simulator.run(inputs)
    bench = uart_cosim.build_testbench(design.system_sources, tmp_path / "uart_build", clks_per_bit=8)
    result = uart_cosim.run_file(bench, inputs, design.input, design.output, tmp_path / "uart", lockstep=False)
    assert not result.error
    assert np.array_equal(result.outputs, expected.reshape(len(expected), -1))
    interface = {"input": design.input.to_json(), "output": design.output.to_json()}
    with uart_cosim.pty_session(bench) as port:
        got = run_on_board(port, interface, inputs[:4], timeout=30.0)
    assert np.array_equal(got, expected[:4].reshape(4, -1))


def _digits_qonnx():
    from bnnflow.models import create_model

    torch.manual_seed(0)
    model = create_model("digits_mlp", input_shape=(1, 8, 8), num_classes=10).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return export_model(model, (1, 8, 8))


def test_threshold_pool_and_label_chain_cosimulates(tmp_path: Path) -> None:
    """The ops no zoo network uses this way: standalone multi-threshold on signed values (thresholds below, on
    and above the range), max-pooling of 2-bit codes, and label select over many ties, joined by a gearbox width
    converter (3 lanes into 2)."""
    model = threshold_pool_label_chain()
    report = check_design(model, tmp_path / "chain", frames=30, seed=3)
    interface = json.loads((tmp_path / "chain" / "interface.json").read_text())
    modules = {name.removesuffix(".v") for name in interface["sources"]}
    assert {"bnn_threshold", "bnn_maxpool", "bnn_dwc", "bnn_label_select"} <= modules
    assert report["samples"] == 30
