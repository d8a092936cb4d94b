"""Estimates of a dataflow graph: cycles, throughput, latency, LUTs and block RAM per layer.

Pure analysis functions of ``dataflow.onnx`` (they never change the graph), called as
``model.analysis(lambda m: estimate(m, clock_mhz, fabric))`` or directly. The model:

- each op's cycles per frame come from its folding (``HWOp.get_exp_cycles``); the pipeline's initiation
  interval is the slowest op's, so frames/s = clock / max(cycles), and that op is the bottleneck;
- latency of one frame through the empty pipeline is bounded by the longest path's sum of cycles (each op is
  assumed to need its whole frame before the next finishes; FIFOs between ops are not counted; the branches of
  a residual block run side by side);
- LUTs and flip-flops: on a fabric with a calibrated model (``bnnflow.hw.rtl.resources``, the ECP5) that model's
  figures for each RTL instance, the width converters and the board wrapper; elsewhere the ops' logic models
  plus the memories in LUTs, and no flip-flops;
- block RAM: each memory goes to the fewest blocks over the fabric's port shapes (``width x depth``); memories
  of up to ``LUTROM_MAX_BITS`` bits, those read asynchronously and weight ROMs of up to ``SHALLOW_ROM_WORDS``
  words go to LUTs instead. The RTL declares every memory with the yosys attribute (``rom_style`` /
  ``ram_style``) of the same rule, so synthesis maps them so;
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
from bnnflow.hw.rtl.resources import load_calibration
from bnnflow.nodes import node_ref

#: memories up to this size are mapped to LUTs (a quarter of an 18 Kbit block)
LUTROM_MAX_BITS = 4096
#: a weight ROM this shallow is logic at any width: each bit of its word is at most two LUT4s (a 5-input function),
#: 72 LUT4s per 36-bit slice against a whole block RAM, where the ECP5-85F has about 400 LUT4s per block (CNV's
#: second layer at 6,000 frames/s: 18 words of 2,048 bits, 57 blocks of 208, or about 4,100 LUT4s)
SHALLOW_ROM_WORDS = 32


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
    shallow = memory.logic_when_shallow and memory.depth <= SHALLOW_ROM_WORDS
    if memory.width * memory.depth <= LUTROM_MAX_BITS or memory.asynchronous or shallow:  # the RTL's rule
        return 0, memory.count * math.ceil(width * memory.depth / fabric.rom_bits_per_lut)
    return memory.count * blocks(width, memory.depth, fabric.ram_shapes), 0


def lut_memory_bits(memories: list[Memory], fabric: Fabric) -> int:
    """Bits of ``memories`` that ``memory_cost`` puts in LUTs (what synthesis keeps of their words)."""
    return sum(memory.count * (memory.width if memory.used_width is None else memory.used_width) * memory.depth
               for memory in memories if memory_cost(memory, fabric)[0] == 0)


def layer_estimate(node, op: HWOp, fabric: Fabric, model: ModelWrapper | None = None) -> dict[str, Any]:
    """One op's estimates; with its ``model``, its memories are sized exactly as the RTL's (``HWOp.memories``).
    Flip-flops are counted only where the fabric has a calibrated model (None elsewhere)."""
    blocks, rom_luts = 0, 0
    memories = op.memories(model)
    for memory in memories:
        b, luts = memory_cost(memory, fabric)
        blocks, rom_luts = blocks + b, rom_luts + luts
    calibrated = _calibrated(node, op, fabric, model, memories)
    return {
        "name": node.name,
        "op": node.op_type,
        **op.folding(),
        "cycles": op.get_exp_cycles(),
        "luts": op.lut_estimate(fabric.lut_inputs) + rom_luts if calibrated is None else calibrated[0],
        "flip_flops": None if calibrated is None else calibrated[1],
        "ram_blocks": blocks,
        "memory_bits": sum(m.bits for m in memories),
    }


def _calibrated(node, op: HWOp, fabric: Fabric, model: ModelWrapper | None,
                memories: list[Memory]) -> tuple[int, int] | None:
    """Placed (LUTs, flip-flops) of the op's RTL instance by the fabric's calibrated model
    (``bnnflow.hw.rtl.resources``); None without one (no model of the fabric, no graph to build the instance from,
    or no RTL for the op)."""
    calibration = load_calibration(fabric.name)
    if calibration is None or model is None:
        return None
    from bnnflow.hw.rtl.layers import rtl_layer  # the RTL's layers are built from this module's hw_ops

    try:
        layer = rtl_layer(model, node, op)
    except UnsupportedGraphError:
        return None
    bits = lut_memory_bits(memories, fabric)
    luts, ffs = calibration.placed(layer.module, layer.params, bits), calibration.placed_ff(layer.module, layer.params, bits)
    return None if luts is None else (luts, ffs or 0)


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
    """What the RTL puts on the streams between layers, which belongs to no single op: the FIFOs before residual
    joins (``bnnflow.hw.rtl.fifos``) and, where the fabric has a calibrated model, the width converters."""
    from bnnflow.hw.rtl.fifos import stream_fifo_memories  # the RTL's layers are built from this module's hw_ops
    from bnnflow.hw.rtl.generate import edges_of, fifo_bank
    from bnnflow.hw.rtl.layers import layers_of

    try:
        edges = list(edges_of(model, layers_of(model, None)).values())
    except UnsupportedGraphError:  # no RTL, so nothing on its streams
        edges = []
    calibration = load_calibration(fabric.name)
    result = {"count": 0, "ram_blocks": 0, "luts": 0, "flip_flops": 0, "memory_bits": 0, "width_converters": 0}
    for edge in edges:
        if edge.fifo_depth:
            memories = stream_fifo_memories(edge.target.width, edge.fifo_depth)
            costs = [memory_cost(memory, fabric) for memory in memories]
            luts = sum(c[1] for c in costs)
            if calibration is not None:
                params = {"WIDTH": edge.target.width, "DEPTH": edge.fifo_depth, "BANK": fifo_bank(edge)}
                bits = lut_memory_bits(memories, fabric)
                luts = calibration.placed("bnn_stream_fifo", params, bits) or luts
                result["flip_flops"] += calibration.placed_ff("bnn_stream_fifo", params, bits) or 0
            result["count"] += 1
            result["ram_blocks"] += sum(c[0] for c in costs)
            result["luts"] += luts
            result["memory_bits"] += sum(memory.bits for memory in memories)
        if edge.source.lanes != edge.target.lanes and calibration is not None:
            params = {"IN_L": edge.source.lanes, "OUT_L": edge.target.lanes, "EB": edge.target.elem_bits}
            result["luts"] += calibration.placed("bnn_dwc", params, 0) or 0
            result["flip_flops"] += calibration.placed_ff("bnn_dwc", params, 0) or 0
            result["width_converters"] += 1
    return result


def wrapper_estimate(model: ModelWrapper, fabric: Fabric) -> dict[str, int]:
    """Placed LUTs and flip-flops of the open-toolchain board wrapper (the UART bridge and the reset), on a
    calibrated fabric; 0 elsewhere (FINN's builds have their own shell)."""
    calibration = load_calibration(fabric.name)
    none = {"luts": 0, "flip_flops": 0}
    if calibration is None:
        return none
    from bnnflow.hw.rtl.layers import layers_of, stream_of

    try:
        layers = layers_of(model, None)
    except UnsupportedGraphError:
        return none
    out = stream_of(model, model.graph.output[0].name)
    last = next(layer for layer in layers if out in layer.outputs)
    params = {"IN_W": layers[0].input.width, "OUT_W": last.output.width}
    return {"luts": calibration.placed("uart_bridge", params) or 0,
            "flip_flops": calibration.placed_ff("uart_bridge", params) or 0}


def estimate(model: ModelWrapper, clock_mhz: float, fabric: Fabric) -> dict[str, Any]:
    """Per-layer and whole-pipeline estimates at a clock, on a fabric; the totals include the join FIFOs, the width
    converters and the board wrapper where the fabric has a calibrated model (which alone counts flip-flops: None
    elsewhere)."""
    layers = [layer_estimate(node, op, fabric, model) for node, op in hw_ops(model)]
    fifos = join_fifo_estimate(model, fabric)
    wrapper = wrapper_estimate(model, fabric)
    calibrated = all(layer["flip_flops"] is not None for layer in layers)
    return {
        **_pipeline(model, layers, clock_mhz),
        "fabric": fabric.name,
        "luts": sum(layer["luts"] for layer in layers) + fifos["luts"] + wrapper["luts"],
        "flip_flops": sum(layer["flip_flops"] for layer in layers) + fifos["flip_flops"] + wrapper["flip_flops"]
        if calibrated else None,
        "ram_blocks": sum(layer["ram_blocks"] for layer in layers) + fifos["ram_blocks"],
        "join_fifos": fifos,
        "wrapper": wrapper,
    }
