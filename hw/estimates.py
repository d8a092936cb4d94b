"""Estimates of a dataflow graph: cycles, throughput, latency, LUTs and block RAM per layer.

Pure analysis functions of ``dataflow.onnx`` (they never change the graph), called as
``model.analysis(lambda m: estimate(m, clock_mhz, fabric))`` or directly. The model:

- each op's cycles per frame come from its folding (``HWOp.get_exp_cycles``); the pipeline's initiation
  interval is the slowest op's, so frames/s = clock / max(cycles), and that op is the bottleneck;
- latency of one frame through the empty pipeline is bounded by the longest path's sum of cycles (each op is
  assumed to need its whole frame before the next finishes; FIFOs between ops are not counted; the branches of
  a residual block run side by side);
- LUTs: the ops' logic models, plus memories small enough to sit in LUTs as ROMs;
- block RAM: each memory goes to the fewest blocks over the fabric's port shapes (``width x depth``); memories
  of up to ``LUTROM_MAX_BITS`` bits (and those read asynchronously) go to LUTs instead. The RTL declares every
  memory with the yosys attribute (``rom_style`` / ``ram_style``) of the same rule, so synthesis maps them so;
- the FIFOs before residual joins, sized by the RTL's rule (``bnnflow.hw.rtl.fifos``), count as memories too
  (``join_fifos``; they belong to the graph, not to an op).
"""

from __future__ import annotations

import math
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.boards import Fabric, blocks
from bnnflow.hw.ops.base import DOMAIN, HWOp, Memory
from bnnflow.nodes import node_ref

#: memories up to this size are mapped to LUTs (a quarter of an 18 Kbit block)
LUTROM_MAX_BITS = 4096


def hw_ops(model: ModelWrapper) -> list[tuple[Any, HWOp]]:
    """(node, op) for every hardware op; a node of another domain other than a reshape is an error."""
    ops = []
    for node in model.graph.node:
        if node.domain == DOMAIN:
            ops.append((node, getCustomOp(node)))
        elif node.op_type != "Reshape":
            raise UnsupportedGraphError(f"node {node_ref(model, node)} is not a hardware op; compile the "
                                        "model with `bnnflow compile` to get a dataflow graph")
    if not ops:
        raise UnsupportedGraphError("the graph holds no hardware op; is this a dataflow.onnx?")
    return ops


def memory_cost(memory: Memory, fabric: Fabric) -> tuple[int, int]:
    """(block RAMs, LUTs) that a group of identical memories takes on a fabric."""
    width = memory.width if memory.used_width is None else memory.used_width  # what synthesis keeps of a word
    if memory.width * memory.depth <= LUTROM_MAX_BITS or memory.asynchronous:  # the RTL's rule, on its declared size
        return 0, memory.count * math.ceil(width * memory.depth / fabric.rom_bits_per_lut)
    return memory.count * blocks(width, memory.depth, fabric.ram_shapes), 0


def layer_estimate(node, op: HWOp, fabric: Fabric, model: ModelWrapper | None = None) -> dict[str, Any]:
    """One op's estimates; with its ``model``, its memories are sized exactly as the RTL's (``HWOp.memories``)."""
    blocks, rom_luts = 0, 0
    memories = op.memories(model)
    for memory in memories:
        b, luts = memory_cost(memory, fabric)
        blocks, rom_luts = blocks + b, rom_luts + luts
    return {
        "name": node.name,
        "op": node.op_type,
        **op.folding(),
        "cycles": op.get_exp_cycles(),
        "luts": op.lut_estimate(fabric.lut_inputs) + rom_luts,
        "ram_blocks": blocks,
        "memory_bits": sum(m.bits for m in memories),
    }


def _longest_path(model: ModelWrapper, cycles: dict[str, int]) -> int:
    """The most cycles along any path from the input to the output (nodes come in topological order)."""
    done: dict[str, int] = {model.graph.input[0].name: 0}
    for node in model.graph.node:
        start = max((done.get(name, 0) for name in node.input), default=0)
        for name in node.output:
            done[name] = start + cycles.get(node.name, 0)
    return done.get(model.graph.output[0].name, max(done.values()))


def _pipeline(model: ModelWrapper, layers: list[dict[str, Any]], clock_mhz: float) -> dict[str, Any]:
    bottleneck = max(layers, key=lambda layer: layer["cycles"])
    ii = bottleneck["cycles"]
    latency = _longest_path(model, {layer["name"]: layer["cycles"] for layer in layers})
    return {
        "clock_mhz": clock_mhz,
        "layers": layers,
        "initiation_interval_cycles": ii,
        "latency_cycles": latency,
        "frames_per_second": clock_mhz * 1e6 / ii,
        "latency_us": latency / clock_mhz,
        "bottleneck": bottleneck["name"],
    }


def timing(model: ModelWrapper, clock_mhz: float) -> dict[str, Any]:
    """The timing model alone: cycles per frame per op, initiation interval, fill latency, frames/s, bottleneck."""
    layers = [{"name": node.name, "op": node.op_type, **op.folding(), "cycles": op.get_exp_cycles()}
              for node, op in hw_ops(model)]
    return _pipeline(model, layers, clock_mhz)


def join_fifo_estimate(model: ModelWrapper, fabric: Fabric) -> dict[str, int]:
    """The FIFOs the RTL puts before residual joins (``bnnflow.hw.rtl.fifos``), which belong to no single op."""
    from bnnflow.hw.rtl.fifos import join_fifo_memories  # the RTL's layers are built from this module's hw_ops

    fifos = join_fifo_memories(model)
    memories = [memory for fifo in fifos for memory in fifo]
    costs = [memory_cost(memory, fabric) for memory in memories]
    return {"count": len(fifos), "ram_blocks": sum(c[0] for c in costs), "luts": sum(c[1] for c in costs),
            "memory_bits": sum(memory.bits for memory in memories)}


def estimate(model: ModelWrapper, clock_mhz: float, fabric: Fabric) -> dict[str, Any]:
    """Per-layer and whole-pipeline estimates at a clock, on a fabric; the totals include the join FIFOs."""
    layers = [layer_estimate(node, op, fabric, model) for node, op in hw_ops(model)]
    fifos = join_fifo_estimate(model, fabric)
    return {
        **_pipeline(model, layers, clock_mhz),
        "fabric": fabric.name,
        "luts": sum(layer["luts"] for layer in layers) + fifos["luts"],
        "ram_blocks": sum(layer["ram_blocks"] for layer in layers) + fifos["ram_blocks"],
        "join_fifos": fifos,
    }
