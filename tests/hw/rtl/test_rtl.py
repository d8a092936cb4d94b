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
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.boards import ECP5
from bnnflow.hw.convert import to_dataflow
from bnnflow.hw.estimates import hw_ops, timing
from bnnflow.hw.folding import _units, fold_for_fps
from bnnflow.hw.rtl import cosim, verilator
from bnnflow.hw.rtl.generate import ACCEL_TOP, generate_rtl
from bnnflow.hw.rtl.layers import _rtl_gap
from bnnflow.hw.rtl.stream import StreamFormat, decode, encode, read_hex, write_hex
from bnnflow.hw.simulator import Simulator
from bnnflow.pipeline.compile.streamline import streamline_model
from bnnflow.pipeline.export import export_model
from tests.hw.conftest import build_dataflow, graph_of, hw_node, threshold_pool_label_chain
from tests.hw.test_simulator_property import conv_networks, in_hardware, networks


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
    assert not list((folder / "obj_dir").glob("*.gch")), "the Verilator build kept its precompiled headers"
    return report


# no shrinking: every example compiles a Verilator model, and the failing one is reported whole
@settings(max_examples=6, deadline=None, derandomize=True, phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture])
@given(networks())
def test_random_mlps_cosimulate_exactly(tmp_path: Path, example) -> None:
    model, _, fold_seed = example
    chooser = random.Random(fold_seed)
    streamlined = streamline_model(model)
    if not in_hardware(streamlined):
        return  # one 8-bit layer with a float output stays on the host: no accelerator to build
    dataflow = to_dataflow(streamlined, label_select=chooser.random() < 0.5)
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
    assert {"bnn_threshold", "bnn_thr_count", "bnn_pool", "bnn_dwc", "bnn_label_select"} <= modules
    assert report["samples"] == 30


def _mvtu_chain(first: dict, second: dict, seed: int) -> ModelWrapper:
    """x (BINARY, MW bits) -> MVTU_0 (XNOR) -> MVTU_1, by hand: thresholds drawn over and beyond the reachable
    accumulators, odd and even (a bipolar dot product of MW bits has MW's parity), so the RTL's mapping onto
    popcounts meets every rounding case."""
    rng = np.random.default_rng(seed)
    nodes, initializers = [], {}
    tensors = {"x": ([first["MW"]], "BINARY")}
    source = "x"
    for i, spec in enumerate((first, second)):
        spec = dict(spec)
        thresholds = spec.pop("thresholds", 0)
        mw, mh = spec["MW"], spec["MH"]
        if spec.get("binaryXnorMode"):
            initializers[f"w{i}"], wtype = rng.integers(0, 2, (mw, mh)), "BINARY"
        else:
            initializers[f"w{i}"], wtype = rng.choice([-1, 1], (mw, mh)), "BIPOLAR"
        inputs = [source, f"w{i}"]
        if thresholds:
            initializers[f"t{i}"] = np.sort(rng.integers(-mw - 2, mw + 3, (mh, thresholds)), axis=1)
            inputs.append(f"t{i}")
        nodes.append(hw_node("MVTU", inputs, [f"y{i}"], name=f"MVTU_{i}", noActivation=int(not thresholds),
                             inputDataType=tensors[source][1], weightDataType=wtype, accDataType="INT12", **spec))
        tensors[f"y{i}"] = ([mh], spec["outputDataType"])
        source = f"y{i}"
    return graph_of(nodes, tensors, ["x"], [source], initializers)


XNOR_CHAINS = {
    # thresholds on the bipolar accumulator, then the accumulator itself as a signed output
    "thresholds-then-accumulator": (
        {"MW": 32, "MH": 16, "PE": 4, "SIMD": 8, "binaryXnorMode": 1, "thresholds": 1, "outputDataType": "BINARY"},
        {"MW": 16, "MH": 10, "PE": 2, "SIMD": 4, "binaryXnorMode": 1, "outputDataType": "INT6"}),
    # three thresholds from outputBias -2 (signed 2-bit codes) into a layer of bipolar weights on those codes
    "signed-codes": (
        {"MW": 24, "MH": 8, "PE": 8, "SIMD": 3, "binaryXnorMode": 1, "thresholds": 3, "outputBias": -2,
         "outputDataType": "INT2"},
        {"MW": 8, "MH": 5, "PE": 1, "SIMD": 2, "outputDataType": "INT6"}),
}


@pytest.mark.parametrize("chain", list(XNOR_CHAINS))
def test_xnor_mvtu_with_and_without_thresholds_cosimulates_exactly(tmp_path: Path, chain: str) -> None:
    model = _mvtu_chain(*XNOR_CHAINS[chain], seed=len(chain))
    simulator = Simulator(model)
    inputs = random_inputs(simulator, 30, seed=5)
    outputs = simulator.run(inputs)
    assert (outputs < 0).any() and (outputs > 0).any()  # signed outputs: the bipolar accumulator, the biased codes
    report = check_design(model, tmp_path / chain, frames=30, seed=5)
    assert report["samples"] == 30


def _one_op(node, tensors: dict, initializers: dict | None = None, outputs: list[str] | None = None) -> ModelWrapper:
    return graph_of([node], tensors, [node.input[0]], outputs or [node.output[0]], initializers)


def _refused_graphs() -> dict[str, tuple[ModelWrapper, str]]:
    """One legal dataflow graph per op (or option) the Verilog library lacks, that op first in it; the text its
    refusal must hold."""
    return {
        "SumPool-overlapping": (_one_op(hw_node("SumPool", ["x"], ["y"], NumChannels=3, ImgDim=[4, 4], PoolDim=[2, 2],
                                                Stride=[1, 1], inputDataType="UINT2", outputDataType="UINT4"),
                                        {"x": ([4, 4, 3], "UINT2"), "y": ([3, 3, 3], "UINT4")}),
                                "SumPool_0 (SumPool) sums windows [2, 2] at stride [1, 1], which the Verilog sum pool "
                                "does not do (it takes stride = kernel, or a global pool)"),
    }


@pytest.mark.parametrize("case", list(_refused_graphs()))
def test_rtl_generator_refuses_what_the_verilog_library_lacks_in_one_line(tmp_path: Path, case: str) -> None:
    model, needle = _refused_graphs()[case]
    Simulator(model)  # a legal dataflow graph: the simulator runs it
    with pytest.raises(UnsupportedGraphError) as refused:
        generate_rtl(model, tmp_path / "rtl")
    message = str(refused.value)
    assert message.startswith(f"node {needle}") and "\n" not in message
    assert message.endswith("`bnnflow simulate` runs this graph bit-exactly")
    assert list(tmp_path.iterdir()) == []  # nothing written, no temporary folder left


def test_rtl_generator_takes_forks_joins_and_the_shortcut_ops() -> None:
    """The ops of a residual block have Verilog modules (tests/hw/rtl/test_stream_ops.py cosimulates them); so does
    a non-overlapping sum pool."""
    fork = hw_node("DuplicateStreams", ["x"], ["a", "b"], NumChannels=4, NumOutputStreams=2, numInputVectors=[2],
                   inputDataType="INT3", outputDataType="INT3")
    join = hw_node("AddStreams", ["a", "b"], ["y"], NumChannels=4, numInputVectors=[2], inputDataType="INT3",
                   input2DataType="INT3", outputDataType="INT4")
    model = graph_of([fork, join], {name: ([2, 4], "INT3") for name in "xab"} | {"y": ([2, 4], "INT4")}, ["x"], ["y"])
    pool = _one_op(hw_node("SumPool", ["x"], ["y"], NumChannels=3, ImgDim=[4, 4], PoolDim=[2, 2], Stride=[2, 2],
                           inputDataType="UINT2", outputDataType="UINT4"),
                   {"x": ([4, 4, 3], "UINT2"), "y": ([2, 2, 3], "UINT4")})
    for node, op in [*hw_ops(model), *hw_ops(pool), *hw_ops(_mvtu_chain(*XNOR_CHAINS["signed-codes"], seed=0))]:
        assert _rtl_gap(node, op) == ""  # what the library has passes
