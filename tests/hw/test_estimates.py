"""Estimates of real dataflow graphs (TFC and CNV, exported from Brevitas, streamlined, converted): the pipeline
figures follow from the layers', memories map onto LUT ROM or the fewest block RAMs, and estimating never
changes the graph."""

from __future__ import annotations

import math

import pytest
from onnx import TensorProto, helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.boards import ECP5, ICE40, RAMB18_SHAPES, XILINX
from bnnflow.hw.estimates import LUTROM_MAX_BITS, estimate, hw_ops, memory_cost
from bnnflow.hw.ops.base import Memory
from tests.hw.conftest import build_dataflow, fresh

FABRICS = {"xilinx": XILINX, "ecp5": ECP5, "ice40": ICE40}

# hand-picked legal foldings (PE | MH, SIMD | MW, a window's SIMD = its MVTU's SIMD)
TFC_FOLDING = {"MVTU_0": {"PE": 16, "SIMD": 49}, "MVTU_1": {"PE": 8, "SIMD": 16}, "MVTU_2": {"PE": 4, "SIMD": 8},
               "MVTU_3": {"PE": 5, "SIMD": 4}}
CNV_FOLDING = {"MVTU_0": {"PE": 16, "SIMD": 3}, "SlidingWindow_0": {"SIMD": 3},
               "MVTU_1": {"PE": 32, "SIMD": 32}, "SlidingWindow_1": {"SIMD": 32},
               "StreamingMaxPool_0": {"PE": 4},
               "MVTU_2": {"PE": 16, "SIMD": 16}, "SlidingWindow_2": {"SIMD": 16},
               "MVTU_3": {"PE": 8, "SIMD": 32}, "SlidingWindow_3": {"SIMD": 32},
               "MVTU_7": {"PE": 2, "SIMD": 8}}


def folded(model: ModelWrapper, folding: dict[str, dict[str, int]]) -> ModelWrapper:
    model = fresh(model)
    for name, fold in folding.items():
        op = getCustomOp(model.get_node_from_name(name))
        assert fold in op.legal_foldings()
        for key, value in fold.items():
            op.set_nodeattr(key, value)
    return model


@pytest.fixture(scope="module")
def graphs() -> dict[str, ModelWrapper]:
    tfc = build_dataflow("tfc", (1, 28, 28))
    cnv = build_dataflow("cnv", (3, 32, 32))
    return {"tfc": tfc, "tfc_folded": folded(tfc, TFC_FOLDING), "cnv": cnv, "cnv_folded": folded(cnv, CNV_FOLDING)}


def hw_nodes(model: ModelWrapper) -> list:
    return [n for n in model.graph.node if n.domain == "bnnflow.hw"]


def my_memory_cost(memory: Memory, fabric) -> tuple[int, int]:
    """Independent: LUTs up to LUTROM_MAX_BITS of the declared size, when read asynchronously or for a weight ROM of
    up to 32 words (2**k bits per
    k-input LUT, of the bits that vary), else the fewest blocks holding the bits that vary, slices of the width
    side by side each in one port shape (found by a search over the slices, widest shapes first)."""
    width = memory.width if memory.used_width is None else memory.used_width
    if memory.width * memory.depth <= LUTROM_MAX_BITS or memory.asynchronous or (
            memory.logic_when_shallow and memory.depth <= 32):
        return 0, memory.count * -(-width * memory.depth // (2 ** fabric.lut_inputs))

    fewest = [0] + [None] * width  # fewest[b]: blocks for the first b bits of the width
    for bits in range(1, width + 1):
        for w, depth in sorted(fabric.ram_shapes, reverse=True):
            blocks = -(-memory.depth // depth) + fewest[max(0, bits - w)]
            fewest[bits] = blocks if fewest[bits] is None else min(fewest[bits], blocks)
    return memory.count * fewest[width], 0


# ------------------------------------------------------------------------------------- pipeline figures


@pytest.mark.parametrize("graph", ["tfc", "tfc_folded", "cnv", "cnv_folded"])
@pytest.mark.parametrize(("fabric", "clock"), [("xilinx", 100.0), ("ecp5", 50.0), ("ice40", 24.0)])
def test_pipeline_figures_follow_from_layers(graphs, graph, fabric, clock):
    model = graphs[graph]
    est = estimate(model, clock, FABRICS[fabric])
    nodes = hw_nodes(model)
    layers = est["layers"]
    assert [layer["name"] for layer in layers] == [n.name for n in nodes]  # every hardware op, no reshape
    assert [layer["op"] for layer in layers] == [n.op_type for n in nodes]
    cycles = [getCustomOp(n).get_exp_cycles() for n in nodes]
    assert [layer["cycles"] for layer in layers] == cycles
    assert est["initiation_interval_cycles"] == max(cycles)
    assert est["frames_per_second"] == pytest.approx(clock * 1e6 / max(cycles), rel=1e-12)
    bottleneck = next(layer for layer in layers if layer["name"] == est["bottleneck"])
    assert bottleneck["cycles"] == max(cycles)
    if cycles.count(max(cycles)) == 1:
        assert est["bottleneck"] == nodes[cycles.index(max(cycles))].name
    assert est["latency_cycles"] == sum(cycles)
    assert est["latency_us"] == pytest.approx(sum(cycles) / clock, rel=1e-12)
    extra = est["join_fifos"]
    assert est["luts"] == sum(layer["luts"] for layer in layers) + extra["luts"] + est["wrapper"]["luts"]
    assert est["ram_blocks"] == sum(layer["ram_blocks"] for layer in layers) + extra["ram_blocks"]
    assert est["clock_mhz"] == clock and est["fabric"] == fabric
    for node, layer in zip(nodes, layers):  # each layer's LUTs and blocks: logic plus its memories
        op = getCustomOp(node)
        costs = [my_memory_cost(m, FABRICS[fabric]) for m in op.memories(model)]
        if fabric != "ecp5":  # the ECP5's are its calibrated model's (tests/hw/test_resources.py)
            assert layer["luts"] == op.lut_estimate(FABRICS[fabric].lut_inputs) + sum(c[1] for c in costs)
        assert layer["ram_blocks"] == sum(c[0] for c in costs)
        assert layer["memory_bits"] == sum(m.width * m.depth * m.count for m in op.memories(model))
        assert {k: layer[k] for k in ("PE", "SIMD") if k in layer} == op.folding()


def test_cnv_fully_folded_bottleneck_is_the_second_conv(graphs):
    est = estimate(graphs["cnv"], 100.0, XILINX)
    assert est["bottleneck"] == "MVTU_1"
    assert est["initiation_interval_cycles"] == 28 * 28 * 576 * 64  # OH * OW * MW * MH at PE = SIMD = 1
    assert est["frames_per_second"] == pytest.approx(100e6 / (28 * 28 * 576 * 64))


def test_tfc_folded_figures_by_hand(graphs):
    est = estimate(graphs["tfc_folded"], 100.0, XILINX)
    by_name = {layer["name"]: layer for layer in est["layers"]}
    expected = {"MVTU_0": (784 // 49) * (64 // 16), "MVTU_1": (64 // 16) * (64 // 8), "MVTU_2": (64 // 8) * (64 // 4),
                "MVTU_3": (64 // 4) * (10 // 5)}
    assert {name: layer["cycles"] for name, layer in by_name.items()} == expected
    assert est["bottleneck"] == "MVTU_2" and est["initiation_interval_cycles"] == 128
    assert est["frames_per_second"] == pytest.approx(100e6 / 128)
    assert est["latency_cycles"] == 64 + 32 + 128 + 32


def test_tfc_first_layer_memories_by_hand(graphs):
    """MVTU_0 fully folded: 784 x 64 one-bit weights in bnn_mvtu's banks of a block each (16384 x 1), 3 of them, and
    the rest (1024 words, at most 4096 bits) as LUT ROM (64 bits per 6-input LUT); the input double buffer, two
    vectors of 1024 words (784 rounded up) of 8 bits, is one block; 64 thresholds of accDataType bits (at most 4096
    bits: LUT ROM)."""
    model = graphs["tfc"]
    op = getCustomOp(model.get_node_from_name("MVTU_0"))
    acc_bits = op.acc_bits()
    weights = [Memory(1, 16384, 3, logic_when_shallow=True), Memory(1, 1024, logic_when_shallow=True)]
    assert op.memories() == [*weights, Memory(8, 2048), Memory(acc_bits, 64)]
    layer = next(layer for layer in estimate(model, 100.0, XILINX)["layers"] if layer["name"] == "MVTU_0")
    assert layer["ram_blocks"] == 3 + 1
    t_bits = op.memories(model)[-1].used_width  # the thresholds' bits that vary
    assert layer["luts"] == op.lut_estimate(6) + 1024 // 64 + math.ceil(64 * t_bits / 64)


def test_folding_a_bottleneck_moves_it(graphs):
    model = fresh(graphs["tfc"])
    before = estimate(model, 100.0, XILINX)
    assert before["bottleneck"] == "MVTU_0"
    op = getCustomOp(model.get_node_from_name("MVTU_0"))
    op.set_nodeattr("PE", 64)
    op.set_nodeattr("SIMD", 784)
    after = estimate(model, 100.0, XILINX)
    assert after["bottleneck"] in ("MVTU_1", "MVTU_2")  # both at 64 * 64 cycles
    assert after["initiation_interval_cycles"] == 64 * 64
    assert after["frames_per_second"] > before["frames_per_second"]
    assert after["luts"] > before["luts"]


# ------------------------------------------------------------------------------------- memory mapping


@pytest.mark.parametrize(("width", "depth", "blocks"), [
    (36, 512, 1),  # exactly one RAMB18 as 36 x 512
    (1, 16384, 1),  # exactly one RAMB18 as 1 x 16384
    (72, 1024, 4),  # 2 x 2 of 36 x 512, or 4 x 1 of 18 x 1024
    (9, 2048, 1),
    (37, 512, 2),  # one bit too wide for 36 x 512: two blocks (three as 18 x 1024)
    (1, 50176, 4),  # TFC's first layer fully folded
    (128, 64, 4),  # wide and shallow: 4 x 36 x 512
])
def test_memory_cost_blocks_on_ramb18(width, depth, blocks):
    assert memory_cost(Memory(width, depth), XILINX) == (blocks, 0)
    assert memory_cost(Memory(width, depth), ECP5) == (blocks, 0)  # ECP5 EBR has the same shapes
    assert my_memory_cost(Memory(width, depth), XILINX) == (blocks, 0)


def test_memory_cost_block_count_is_minimal_over_shapes():
    for width, depth in [(36, 512), (72, 1024), (5, 3000), (100, 100), (3, 9000), (20, 2000)]:
        memory = Memory(width, depth)
        blocks, luts = memory_cost(memory, XILINX)
        assert luts == 0
        assert blocks * XILINX.ram_block_bits >= memory.bits  # enough bits
        for w, d in RAMB18_SHAPES:  # and no port shape does it in fewer blocks
            assert blocks <= math.ceil(width / w) * math.ceil(depth / d)


@pytest.mark.parametrize(("memory", "fabric", "luts"), [
    (Memory(8, 64), XILINX, 8),  # 512 bits, 64 bits per 6-input LUT
    (Memory(8, 64), ECP5, 32),  # 16 bits per 4-input LUT
    (Memory(7, 10), XILINX, 2),  # 70 bits: rounded up
    (Memory(64, 64), XILINX, 64),  # exactly LUTROM_MAX_BITS still goes to LUTs
    (Memory(16, 256), ICE40, 256),
])
def test_memory_cost_small_memories_go_to_luts(memory, fabric, luts):
    assert memory.bits <= LUTROM_MAX_BITS
    assert memory_cost(memory, fabric) == (0, luts)


def test_memory_cost_shallow_weight_roms_go_to_luts():
    """A weight ROM of up to 32 words is logic at any width; one word deeper, or any other memory, is block RAM."""
    assert memory_cost(Memory(2048, 18, logic_when_shallow=True), ECP5) == (0, 2048 * 18 // 16)
    assert memory_cost(Memory(2048, 32, logic_when_shallow=True), ECP5) == (0, 2048 * 2)
    assert memory_cost(Memory(2048, 33, logic_when_shallow=True), ECP5) == (57, 0)
    assert memory_cost(Memory(2048, 18), ECP5) == (57, 0)


def test_memory_cost_ice40_blocks():
    assert memory_cost(Memory(1, 16384), ICE40) == (8, 0)  # 2 x 2048 shape, 8 deep
    assert memory_cost(Memory(16, 512), ICE40) == (2, 0)
    assert memory_cost(Memory(36, 512), ICE40) == (5, 0)  # 5 x 8 x 512
    assert memory_cost(Memory(1, LUTROM_MAX_BITS + 1), XILINX) == (1, 0)


# ------------------------------------------------------------------------------------- purity and errors


@pytest.mark.parametrize("graph", ["tfc_folded", "cnv_folded"])
def test_estimate_is_pure(graphs, graph):
    model = graphs[graph]
    before = model.model.SerializeToString()
    first = estimate(model, 100.0, XILINX)
    assert model.model.SerializeToString() == before
    second = model.analysis(lambda m: estimate(m, 100.0, XILINX))
    assert model.model.SerializeToString() == before
    assert first == second
    for node, op in hw_ops(model):
        op.get_exp_cycles(), op.memories(), op.lut_estimate(6), op.legal_foldings()
    assert model.model.SerializeToString() == before


def test_hw_ops_rejects_non_hardware_node(graphs):
    model = fresh(graphs["tfc"])
    last = model.graph.output[0].name
    model.graph.node.append(helper.make_node("Relu", [last], ["relu_out"], name="Relu_0"))
    with pytest.raises(UnsupportedGraphError) as err:
        hw_ops(model)
    assert "Relu_0" in str(err.value) and "Relu" in str(err.value)
    with pytest.raises(UnsupportedGraphError):
        estimate(model, 100.0, XILINX)


def test_hw_ops_lists_hardware_nodes_and_skips_reshapes(graphs):
    model = graphs["cnv"]
    ops = hw_ops(model)
    assert [node.name for node, _ in ops] == [n.name for n in hw_nodes(model)]
    assert any(n.op_type == "Reshape" for n in model.graph.node)  # present, and not an error
    assert all(type(op).__name__ == node.op_type for node, op in ops)


def test_hw_ops_rejects_graph_without_hardware():
    node = helper.make_node("Reshape", ["x", "shape"], ["y"], name="Reshape_0")
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    model = ModelWrapper(helper.make_model(graph))
    with pytest.raises(UnsupportedGraphError, match="no hardware op"):
        hw_ops(model)
