"""Folding: choosing each hardware op's parallelism (PE, SIMD) for a target.

Two targets:

- ``fold_for_fps``: a frame rate at a clock. Every op gets the cheapest legal folding (fewest LUTs, then fewest
  block RAMs) whose cycles per frame fit the budget ``clock / fps``; when some op cannot reach it even fully
  parallel, nothing is changed and the error says the fastest rate any folding reaches.
- ``fold_for_board``: the fastest pipeline that fits a board. Starting fully folded (PE = SIMD = 1, the
  smallest design), the bottleneck op repeatedly takes the next-faster legal folding while the whole design
  still fits the board's LUT share and block RAMs; it stops at the first step that would not fit, or once the
  pipeline reaches an optional frame-rate cap. On a fabric with a measured timing limit (``Fabric.max_array_bits``)
  no matrix unit grows wider than it, since a wider array's input word does not reach its farthest PE within a
  clock cycle. A design that does not fit even fully folded stays fully folded and is marked ``fits: False`` with
  the reason: it still gets its RTL and cosimulation, and the bitstream stage refuses it before synthesis.

A sliding window is folded with the matrix unit it feeds: they must stream the same SIMD lanes, so that unit's
SIMD is limited to divisors of the window's channel count.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import BnnflowError
from bnnflow.hw.boards import LUT_BUDGET_SHARE, Board, Fabric
from bnnflow.hw.estimates import hw_ops, join_fifo_estimate, layer_estimate, wrapper_estimate
from bnnflow.hw.ops.base import HWOp, divisors


class FoldingError(BnnflowError):
    """No legal folding meets the target (exit code 2: change the target, the clock or the board)."""

    exit_code = 2


@dataclass
class _Unit:
    """An op folded on its own, or a matrix unit with the sliding window that feeds it."""

    node: Any
    op: HWOp
    model: ModelWrapper | None = None  #: sizes the memories exactly, as the RTL builds them (``HWOp.memories``)
    window: tuple[Any, HWOp] | None = None
    options: list[dict[str, int]] = field(default_factory=list)
    _costs: dict[tuple, tuple[int, int, int, int]] = field(default_factory=dict)

    def apply(self, fold: dict[str, int]) -> None:
        for key, value in fold.items():
            self.op.set_nodeattr(key, value)
        if self.window is not None:
            self.window[1].set_nodeattr("SIMD", fold["SIMD"])

    def current(self) -> dict[str, int]:
        return self.op.folding()

    def cost(self, fabric: Fabric) -> tuple[int, int, int, int]:
        """(cycles, LUTs, block RAMs, flip-flops) at the current folding, the window included; flip-flops are 0
        where the fabric has no calibrated model."""
        parts = [layer_estimate(self.node, self.op, fabric, self.model)]
        if self.window is not None:
            parts.append(layer_estimate(*self.window, fabric, self.model))
        return (max(p["cycles"] for p in parts), sum(p["luts"] for p in parts), sum(p["ram_blocks"] for p in parts),
                sum(p["flip_flops"] or 0 for p in parts))

    def cost_of(self, fold: dict[str, int], fabric: Fabric) -> tuple[int, int, int, int]:
        """The cost of a folding, computed once per folding (the search asks for the same ones many times)."""
        key = tuple(sorted(fold.items()))
        if key not in self._costs:
            before = self.current()
            self.apply(fold)
            try:
                self._costs[key] = self.cost(fabric)
            finally:
                self.apply(before)
        return self._costs[key]


def array_bits(op: HWOp, fold: dict[str, int]) -> int:
    """Product bits a matrix unit takes in each cycle at ``fold`` (PE x SIMD x input bits x weight bits; 0 for other
    ops): its input word fans out to PE lanes across an array that grows with them, which sets how far it travels."""
    if not hasattr(op, "weight_bits"):
        return 0
    return fold["PE"] * fold["SIMD"] * op.input_datatype().bitwidth() * op.weight_bits()


def _units(model: ModelWrapper) -> list[_Unit]:
    ops = hw_ops(model)
    producers = {node.output[0]: (node, op) for node, op in ops}
    units = []
    for node, op in ops:
        if node.op_type == "SlidingWindow":
            continue
        window = producers.get(node.input[0])
        unit = _Unit(node, op, model)
        unit.options = op.legal_foldings()
        if window is not None and window[0].op_type == "SlidingWindow":
            unit.window = window
            channels = window[1].get_nodeattr("IFMChannels")
            unit.options = [f for f in unit.options if channels % f["SIMD"] == 0]
        units.append(unit)
    for node, op in ops:  # a window whose consumer is not a matrix unit is folded on its own
        if node.op_type == "SlidingWindow" and not any(u.window and u.window[0] is node for u in units):
            units.append(_Unit(node, op, model, options=[{"SIMD": s} for s in divisors(op.get_nodeattr("IFMChannels"))]))
    return units


def fold_for_fps(model: ModelWrapper, target_fps: float, clock_mhz: float, fabric: Fabric) -> dict[str, Any]:
    """Fold every op as cheaply as possible while reaching ``target_fps`` at ``clock_mhz``."""
    budget = clock_mhz * 1e6 / target_fps
    units = _units(model)
    choices, fastest = [], []
    for unit in units:
        costs = [(unit.cost_of(f, fabric), f) for f in unit.options]
        fastest.append((min(c[0] for c, _ in costs), unit.node.name))
        feasible = [(c[1], c[2], sum(f.values()), f) for c, f in costs if c[0] <= budget]
        choices.append(min(feasible, key=lambda t: t[:3])[3] if feasible else None)
    if any(choice is None for choice in choices):
        cycles, name = max(fastest)
        raise FoldingError(
            f"no legal folding reaches {target_fps:g} frames/s at {clock_mhz:g} MHz: {name} needs at least {cycles} "
            f"cycles per frame fully parallel, so the fastest is {clock_mhz * 1e6 / cycles:,.0f} frames/s; lower "
            "the target or raise the clock"
        )
    for unit, fold in zip(units, choices):
        unit.apply(fold)
    limit = fabric.max_array_bits
    wide = [unit.node.name for unit, fold in zip(units, choices) if limit and array_bits(unit.op, fold) > limit]
    return {"mode": "target_fps", "target_fps": target_fps, "met": True, "max_array_bits": limit,
            "over_timing_limit": wide}


def fold_for_board(model: ModelWrapper, board: Board, clock_mhz: float, fps_cap: float = 0.0) -> dict[str, Any]:
    """The fastest folding, stepping up the bottleneck, that fits ``board`` (and stops at ``fps_cap`` if > 0)."""
    fabric = board.fabric
    units = _units(model)
    budget = (int(board.luts * LUT_BUDGET_SHARE), board.ram_blocks, int(board.flip_flops * LUT_BUDGET_SHARE))
    current = [min(unit.options, key=lambda f: sum(f.values())) for unit in units]  # fully folded
    costs = [unit.cost_of(fold, fabric) for unit, fold in zip(units, current)]
    for unit, fold in zip(units, current):
        unit.apply(fold)
    # the FIFOs before residual joins, the width converters and the board wrapper count too
    fifos, wrapper = join_fifo_estimate(model, fabric), wrapper_estimate(model, fabric)
    need = [sum(c[1] for c in costs) + fifos["luts"] + wrapper["luts"], sum(c[2] for c in costs) + fifos["ram_blocks"],
            sum(c[3] for c in costs) + fifos["flip_flops"] + wrapper["flip_flops"]]
    result = {"mode": "board", "board": board.name, "lut_budget": budget[0], "ram_budget": budget[1],
              "ff_budget": budget[2], "fps_cap": fps_cap, "max_array_bits": fabric.max_array_bits, "steps": 0}
    if any(n > b for n, b in zip(need, budget)):
        # the smallest design (applied above): it still gets its RTL and cosimulation; the bitstream stage refuses it
        return {**result, "fits": False, "problem": (
            f"the design does not fit {board.name} even fully folded: it needs {need[0]:,} LUTs (budget {budget[0]:,}), "
            f"{need[2]:,} flip-flops (budget {budget[2]:,}) and {need[1]} block RAMs (the board has {budget[1]}); use a "
            "bigger board or a smaller network")}
    steps = 0
    while True:
        slowest = max(range(len(units)), key=lambda i: costs[i][0])
        unit = units[slowest]
        if fps_cap and clock_mhz * 1e6 / costs[slowest][0] >= fps_cap:
            stop = f"the rate reached fps_cap ({fps_cap:g} frames/s)"
            break
        faster = [(unit.cost_of(f, fabric), f) for f in unit.options]
        faster = [(c, f) for c, f in faster if c[0] < costs[slowest][0]]
        if not faster:
            stop = f"the bottleneck {unit.node.name} is fully parallel"
            break
        limit = fabric.max_array_bits
        if limit and all(array_bits(unit.op, f) > limit for _, f in faster):
            stop = (f"the bottleneck {unit.node.name} is at the {fabric.name.upper()}'s timing limit of {limit:,} "
                    "product bits per cycle")
            break
        faster = [(c, f) for c, f in faster if not limit or array_bits(unit.op, f) <= limit]
        cost, fold = max(faster, key=lambda cf: (cf[0][0], -cf[0][1]))  # the smallest step, cheapest first
        new = [n - costs[slowest][k] + cost[k] for n, k in zip(need, (1, 2, 3))]
        # the width converters, join FIFOs and the wrapper (as wide as the first and last streams) follow the lanes
        unit.apply(fold)
        moved, rewrapped = join_fifo_estimate(model, fabric), wrapper_estimate(model, fabric)
        new = [n + moved[key] - fifos[key] + rewrapped.get(key, 0) - wrapper.get(key, 0)
               for n, key in zip(new, ("luts", "ram_blocks", "flip_flops"))]
        if any(n > b for n, b in zip(new, budget)):
            unit.apply(current[slowest])
            stop = f"speeding up the bottleneck {unit.node.name} would not fit {board.name}"
            break
        current[slowest], costs[slowest], need, fifos, wrapper = fold, cost, new, moved, rewrapped
        steps += 1
    for unit, fold in zip(units, current):
        unit.apply(fold)
    return {**result, "steps": steps, "fits": True, "stopped": stop}
