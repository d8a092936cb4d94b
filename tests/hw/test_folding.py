"""Folding real dataflow graphs (TFC and CNV, exported from Brevitas, streamlined, converted): frame-rate
targets are met as cheaply as possible, unreachable targets are refused without touching the graph, board
folding fits the board, and sliding windows stream the same SIMD lanes as the matrix units they feed."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import ConfigError
from bnnflow.hw.boards import BOARDS, ECP5, LUT_BUDGET_SHARE, XILINX, Board, Fabric, get_board
from bnnflow.hw.estimates import estimate, memory_cost
from bnnflow.hw.folding import FoldingError, array_bits, fold_for_board, fold_for_fps
from tests.hw.conftest import build_dataflow, fresh

CLOCK_MHZ = 100.0


def serialized(model: ModelWrapper) -> bytes:
    return model.model.SerializeToString()


@pytest.fixture(scope="module")
def tfc() -> ModelWrapper:
    return build_dataflow("tfc", (1, 28, 28))


@pytest.fixture(scope="module")
def cnv() -> ModelWrapper:
    return build_dataflow("cnv", (3, 32, 32))


@pytest.fixture(scope="module")
def fps_folded(tfc, cnv):
    """``fps_folded(name, target)``: a copy of the graph folded by fold_for_fps at CLOCK_MHZ on Xilinx (cached)."""
    cache: dict[tuple[str, float], ModelWrapper] = {}
    graphs = {"tfc": tfc, "cnv": cnv}

    def get(name: str, target: float) -> ModelWrapper:
        if (name, target) not in cache:
            model = fresh(graphs[name])
            result = fold_for_fps(model, target, CLOCK_MHZ, XILINX)
            assert result["mode"] == "target_fps" and result["met"] is True
            cache[name, target] = model
        return cache[name, target]

    return get


@pytest.fixture(scope="module")
def board_folded(tfc):
    cache: dict[str, tuple[ModelWrapper, dict]] = {}

    def get(board: str) -> tuple[ModelWrapper, dict]:
        if board not in cache:
            model = fresh(tfc)
            cache[board] = model, fold_for_board(model, get_board(board), CLOCK_MHZ)
        return cache[board]

    return get


# ------------------------------------------------------------------------------------- independent helpers


def hw_nodes(model: ModelWrapper) -> list:
    return [n for n in model.graph.node if n.domain == "bnnflow.hw"]


def divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def feeding_window(model: ModelWrapper, node):
    producer = model.find_producer(node.input[0])
    return producer if producer is not None and producer.op_type == "SlidingWindow" else None


def my_options(model: ModelWrapper, node) -> list[dict[str, int]]:
    """A unit's legal foldings, enumerated here: divisor pairs for a matrix unit (SIMD also dividing the
    channels of the window feeding it), PE divisors of the channel / label count otherwise."""
    op = getCustomOp(node)
    if node.op_type == "MVTU":
        window = feeding_window(model, node)
        channels = getCustomOp(window).get_nodeattr("IFMChannels") if window is not None else None
        return [{"PE": pe, "SIMD": simd} for pe in divisors(op.get_nodeattr("MH"))
                for simd in divisors(op.get_nodeattr("MW")) if channels is None or channels % simd == 0]
    size = op.get_nodeattr({"StreamingMaxPool": "NumChannels", "Thresholding": "NumChannels",
                            "LabelSelect": "Labels"}[node.op_type])
    return [{"PE": pe} for pe in divisors(size)]


def op_cost(op, fabric: Fabric) -> tuple[int, int]:
    """(cycles, LUTs incl. ROM LUTs) of one op at its current folding."""
    rom_luts = sum(memory_cost(m, fabric)[1] for m in op.memories())
    return op.get_exp_cycles(), op.lut_estimate(fabric.lut_inputs) + rom_luts


def unit_costs(model: ModelWrapper, node_name: str, fabric: Fabric) -> list[tuple[dict, int, int]]:
    """(folding, cycles, LUTs) of every legal folding of one unit, on a private copy of the graph."""
    model = fresh(model)
    node = model.get_node_from_name(node_name)
    op = getCustomOp(node)
    window = feeding_window(model, node) if node.op_type == "MVTU" else None
    rows = []
    for fold in my_options(model, node):
        for key, value in fold.items():
            op.set_nodeattr(key, value)
        cycles, luts = op_cost(op, fabric)
        if window is not None:
            wop = getCustomOp(window)
            wop.set_nodeattr("SIMD", fold["SIMD"])
            w_cycles, w_luts = op_cost(wop, fabric)
            cycles, luts = max(cycles, w_cycles), luts + w_luts
        rows.append((fold, cycles, luts))
    return rows


def unit_names(model: ModelWrapper) -> list[str]:
    return [n.name for n in hw_nodes(model) if n.op_type != "SlidingWindow"]


def assert_minimal(model: ModelWrapper, folded: ModelWrapper, node_name: str, budget: float) -> None:
    rows = unit_costs(model, node_name, XILINX)
    chosen_op = getCustomOp(folded.get_node_from_name(node_name))
    chosen = chosen_op.folding()
    match = [r for r in rows if r[0] == chosen]
    assert len(match) == 1, f"{node_name}: folding {chosen} is not one of its legal foldings"
    _, cycles, luts = match[0]
    assert cycles <= budget
    cheapest = min(r[2] for r in rows if r[1] <= budget)
    assert luts == cheapest, f"{node_name}: {chosen} takes {luts} LUTs, but a legal folding meets {budget:g} " \
                             f"cycles with {cheapest}"


def assert_windows_match(model: ModelWrapper) -> int:
    """Every SlidingWindow's SIMD equals its consumer MVTU's; returns how many windows were checked."""
    checked = 0
    for node in hw_nodes(model):
        if node.op_type == "SlidingWindow":
            consumers = model.find_consumers(node.output[0])
            assert [c.op_type for c in consumers] == ["MVTU"]
            window_simd = getCustomOp(node).get_nodeattr("SIMD")
            assert window_simd == getCustomOp(consumers[0]).get_nodeattr("SIMD"), node.name
            assert getCustomOp(node).get_nodeattr("IFMChannels") % window_simd == 0
            checked += 1
    return checked


# ------------------------------------------------------------------------------------- fold_for_fps


@pytest.mark.parametrize("target", [1e3, 1e5, 1e6])
def test_tfc_fold_for_fps_meets_target_minimally(tfc, fps_folded, target):
    folded = fps_folded("tfc", target)
    est = estimate(folded, CLOCK_MHZ, XILINX)
    assert est["frames_per_second"] >= target
    budget = CLOCK_MHZ * 1e6 / target
    assert est["initiation_interval_cycles"] <= budget
    for name in unit_names(tfc):  # every unit takes the fewest LUTs that meet the budget
        assert_minimal(tfc, folded, name, budget)
    # the input graph is untouched (folding works on its own copy here)
    assert all(getCustomOp(n).get_nodeattr("PE") == 1 for n in hw_nodes(tfc))


def test_tfc_fold_for_fps_parallelizes_more_for_higher_targets(fps_folded):
    luts = [estimate(fps_folded("tfc", t), CLOCK_MHZ, XILINX)["luts"] for t in (1e3, 1e5, 1e6)]
    assert luts[0] < luts[1] < luts[2]
    # 1e6 frames/s at 100 MHz leaves 100 cycles for a 784 x 64 layer: PE * SIMD >= 502
    op = getCustomOp(fps_folded("tfc", 1e6).get_node_from_name("MVTU_0"))
    assert op.get_nodeattr("PE") * op.get_nodeattr("SIMD") >= math.ceil(784 * 64 / 100)


def test_tfc_already_fast_enough_stays_fully_folded(tfc, fps_folded):
    # fully folded TFC runs at 100e6 / (784 * 64) = 1993 frames/s, so 1e3 needs no parallelism at all
    folded = fps_folded("tfc", 1e3)
    assert all(v == 1 for n in hw_nodes(folded) for v in getCustomOp(n).folding().values())
    assert serialized(folded) == serialized(tfc)


@pytest.mark.parametrize("target", [1e2, 1e3])
def test_cnv_fold_for_fps_meets_target(cnv, fps_folded, target):
    folded = fps_folded("cnv", target)
    est = estimate(folded, CLOCK_MHZ, XILINX)
    assert est["frames_per_second"] >= target
    budget = CLOCK_MHZ * 1e6 / target
    assert all(layer["cycles"] <= budget for layer in est["layers"])
    for name in ("MVTU_1", "MVTU_7", "StreamingMaxPool_0"):  # a windowed conv, a dense layer, a pool
        assert_minimal(cnv, folded, name, budget)
    assert assert_windows_match(folded) == 6


def test_cnv_fold_for_fps_folds_windows_with_their_units(fps_folded):
    folded = fps_folded("cnv", 1e3)
    simds = [getCustomOp(n).get_nodeattr("SIMD") for n in hw_nodes(folded) if n.op_type == "SlidingWindow"]
    assert max(simds) > 1  # 1e3 frames/s needs parallel windows (SlidingWindow_1 alone takes 455424 cycles at 1)
    assert assert_windows_match(folded) == len(simds)


def test_unreachable_target_tfc_raises_and_leaves_graph_unchanged(fps_folded):
    model = fresh(fps_folded("tfc", 1e5))  # an already folded graph, so "unchanged" is not just the default
    before = serialized(model)
    with pytest.raises(FoldingError) as err:
        fold_for_fps(model, 1e12, CLOCK_MHZ, XILINX)
    message = str(err.value)
    # every TFC layer reaches 1 cycle per frame fully parallel: 100e6 frames/s at 100 MHz
    assert "100,000,000" in message
    assert any(f"MVTU_{i}" in message for i in range(4))
    assert serialized(model) == before
    assert err.value.exit_code == 2


def test_unreachable_target_cnv_names_bottleneck_and_fastest_rate(cnv):
    model = fresh(cnv)
    before = serialized(model)
    # independently: each op's fewest cycles over its own legal foldings; the slowest of those bounds the rate
    fastest = {}
    for node in hw_nodes(model):
        op = getCustomOp(node)
        cycles = []
        for fold in op.legal_foldings():
            for key, value in fold.items():
                op.set_nodeattr(key, value)
            cycles.append(op.get_exp_cycles())
        fastest[node.name] = min(cycles)
    model = fresh(cnv)  # the probing above changed the copy's attributes
    bottleneck = max(fastest, key=fastest.get)
    assert bottleneck == "SlidingWindow_0" and fastest[bottleneck] == 30 * 30 * 9
    with pytest.raises(FoldingError) as err:
        fold_for_fps(model, 1e12, CLOCK_MHZ, XILINX)
    message = str(err.value)
    assert f"{CLOCK_MHZ * 1e6 / fastest[bottleneck]:,.0f}" in message  # 12,346 frames/s at 100 MHz
    # the bottleneck is the window, folded together with the MVTU it feeds: either name identifies the layer
    assert "SlidingWindow_0" in message or "MVTU_0" in message
    assert serialized(model) == before


# ------------------------------------------------------------------------------------- fold_for_board


@pytest.mark.parametrize("board", ["ulx3s", "pynq-z1", "icebreaker"])
def test_tfc_fold_for_board_fits(tfc, board_folded, board):
    spec = get_board(board)
    model, result = board_folded(board)
    est = estimate(model, CLOCK_MHZ, spec.fabric)
    assert est["luts"] <= spec.luts * LUT_BUDGET_SHARE
    assert est["ram_blocks"] <= spec.ram_blocks
    assert est["flip_flops"] is None or est["flip_flops"] <= spec.flip_flops * LUT_BUDGET_SHARE
    assert (est["flip_flops"] is None) == (spec.fabric.name != "ecp5")  # the calibrated fabric counts them
    assert result["board"] == board and result["steps"] > 0
    assert spec.fabric.max_array_bits == 0 or _widest(model) <= spec.fabric.max_array_bits
    assert result["lut_budget"] == int(spec.luts * LUT_BUDGET_SHARE) and result["ram_budget"] == spec.ram_blocks
    # it made the design faster than fully folded
    baseline = estimate(tfc, CLOCK_MHZ, spec.fabric)
    assert est["frames_per_second"] > baseline["frames_per_second"]
    for node in hw_nodes(model):  # only legal foldings
        assert getCustomOp(node).folding() in my_options(model, node)


def test_fps_cap_stops_at_the_first_folding_that_reaches_it(tfc, board_folded):
    board = get_board("ulx3s")
    uncapped = estimate(board_folded("ulx3s")[0], CLOCK_MHZ, board.fabric)
    cap = uncapped["frames_per_second"] / 8
    model = fresh(tfc)
    result = fold_for_board(model, board, CLOCK_MHZ, fps_cap=cap)
    capped = estimate(model, CLOCK_MHZ, board.fabric)
    assert result["fps_cap"] == cap and cap <= capped["frames_per_second"] < uncapped["frames_per_second"]
    assert result["stopped"].startswith("the rate reached fps_cap")
    assert capped["luts"] < uncapped["luts"]


def test_fold_for_board_keeps_to_the_flip_flops(tfc, board_folded):
    """On a made-up ECP5 board with the ULX3S's LUTs and block RAM but a quarter of its flip-flops, the folding
    stops where the flip-flops run out: within their budget, with LUTs to spare, and slower than the ULX3S's."""
    ulx3s = get_board("ulx3s")
    wide = replace(ECP5, max_array_bits=0)  # no timing limit, so only the budgets stop the folding
    board = Board("ff-bound", "none", replace(wide, ffs_per_lut=0.25), ulx3s.luts, ulx3s.ram_blocks, CLOCK_MHZ)
    model = fresh(tfc)
    result = fold_for_board(model, board, CLOCK_MHZ)
    est = estimate(model, CLOCK_MHZ, board.fabric)
    assert result["fits"] and result["ff_budget"] == int(board.flip_flops * LUT_BUDGET_SHARE)
    assert result["stopped"].endswith("would not fit ff-bound")
    assert est["flip_flops"] <= result["ff_budget"] and est["luts"] < result["lut_budget"]
    full = fresh(tfc)
    fold_for_board(full, replace(ulx3s, fabric=wide), CLOCK_MHZ)
    assert est["frames_per_second"] < estimate(full, CLOCK_MHZ, wide)["frames_per_second"]


def _widest(model) -> int:
    return max(array_bits(getCustomOp(n), getCustomOp(n).folding()) for n in hw_nodes(model) if n.op_type == "MVTU")


def test_fold_for_board_keeps_matrix_units_within_the_fabrics_timing_limit(cnv):
    """CNV's ULX3S folding stops growing its second layer at ECP5's measured limit; without the limit the same
    budget builds a wider, faster one, so the limit is what stopped it."""
    ulx3s = get_board("ulx3s")
    limited, unlimited = fresh(cnv), fresh(cnv)
    result = fold_for_board(limited, ulx3s, CLOCK_MHZ)
    fold_for_board(unlimited, replace(ulx3s, fabric=replace(ECP5, max_array_bits=0)), CLOCK_MHZ)
    assert result["fits"] and result["max_array_bits"] == ECP5.max_array_bits > 0
    assert "timing limit of 2,048 product bits per cycle" in result["stopped"]
    assert _widest(limited) <= ECP5.max_array_bits < _widest(unlimited)
    fps = [estimate(m, CLOCK_MHZ, ECP5)["frames_per_second"] for m in (limited, unlimited)]
    assert fps[0] < fps[1]


def test_bigger_board_is_at_least_as_fast(board_folded):
    small = estimate(board_folded("icebreaker")[0], CLOCK_MHZ, get_board("icebreaker").fabric)
    big = estimate(board_folded("ulx3s")[0], CLOCK_MHZ, get_board("ulx3s").fabric)
    assert big["frames_per_second"] >= small["frames_per_second"]


def test_cnv_does_not_fit_icebreaker_and_stays_fully_folded(cnv):
    model = fresh(cnv)
    result = fold_for_board(model, get_board("icebreaker"), CLOCK_MHZ)
    assert result["fits"] is False and result["steps"] == 0
    assert "icebreaker" in result["problem"] and "even fully folded" in result["problem"]
    assert all(v == 1 for node in hw_nodes(model) for v in getCustomOp(node).folding().values())


def test_cnv_fold_for_board_on_a_small_budget_fits_and_keeps_windows_matched(cnv):
    # a made-up Xilinx board a little bigger than fully folded CNV, so the stepping loop ends quickly
    base = estimate(cnv, CLOCK_MHZ, XILINX)
    board = Board("test-board", "none", XILINX, luts=int((base["luts"] + 600) / LUT_BUDGET_SHARE), ram_blocks=280,
                  clock_mhz=CLOCK_MHZ)
    model = fresh(cnv)
    result = fold_for_board(model, board, CLOCK_MHZ)
    est = estimate(model, CLOCK_MHZ, XILINX)
    assert est["luts"] <= board.luts * LUT_BUDGET_SHARE and est["ram_blocks"] <= board.ram_blocks
    assert result["steps"] > 0 and est["frames_per_second"] > base["frames_per_second"]
    assert assert_windows_match(model) == 6
    simds = [getCustomOp(n).get_nodeattr("SIMD") for n in hw_nodes(model) if n.op_type == "SlidingWindow"]
    assert max(simds) > 1  # the windows were folded (with their MVTUs), not left at 1


def test_windows_match_before_folding(cnv):
    assert assert_windows_match(cnv) == 6


def test_get_board_unknown_raises_config_error_listing_boards():
    from bnnflow.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        get_board("nope")
    message = str(err.value)
    assert "nope" in message
    assert all(name in message for name in BOARDS)
    assert get_board("pynq-z1").luts == 53_200


def test_boards_are_found_in_any_case() -> None:
    """FINN names boards Pynq-Z1, bnnflow pynq-z1: `--board` takes either; an unknown name still lists the known."""
    assert get_board("Pynq-Z1") is get_board("pynq-z1") is BOARDS["pynq-z1"]
    assert get_board("ULX3S") is BOARDS["ulx3s"]
    with pytest.raises(ConfigError, match="unknown board 'pynq-z9'"):
        get_board("pynq-z9")


def test_fold_for_fps_names_matrix_units_past_the_timing_limit(cnv):
    """A frame rate is folded as asked, past the limit too, and the units past it are named for compile's warning."""
    within, past = fresh(cnv), fresh(cnv)
    assert fold_for_fps(within, 6000, CLOCK_MHZ, ECP5)["over_timing_limit"] == []
    result = fold_for_fps(past, 9000, CLOCK_MHZ, ECP5)
    wide = [n.name for n in hw_nodes(past) if n.op_type == "MVTU"
            and array_bits(getCustomOp(n), getCustomOp(n).folding()) > ECP5.max_array_bits]
    assert result["over_timing_limit"] == wide and "MVTU_1" in wide
    assert fold_for_fps(fresh(cnv), 9000, CLOCK_MHZ, XILINX)["over_timing_limit"] == []  # no limit measured there
