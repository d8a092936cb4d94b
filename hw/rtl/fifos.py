"""FIFO sizing for joins: the rule that keeps a residual block from deadlocking.

A join (``AddStreams``) takes a beat only when both its inputs have one, and the fork before it (a
``DuplicateStreams``) sends a beat only when both its outputs can take it. The long branch (a sliding window,
an MVTU, thresholds) must take in part of the frame before the first of its results comes out; while it does,
the fork keeps feeding the short branch, whose beats wait at the join. If the short branch cannot hold them, the
fork stops, the long branch starves, and nothing moves again: a deadlock.

The rule: measure what each stream can be *ahead* of the graph's input, in frames of data held in flight. Every
layer adds what it can hold before it must send (``Layer.held_beats``: input buffers, pipeline and output FIFO,
in its input's beats) over its input's beats per frame; a width converter adds its few elements. At a join, the
input that holds less gets a FIFO of the difference, in its own beats, plus ``MARGIN`` beats for the join's own
handshake; past the join both inputs hold the same. The short branch can then take everything the long branch
can hold, so the fork never stops while the long branch still waits for input: no deadlock whatever the
back-pressure, and the fork is never slowed below the long branch's pace. The cosimulation checks both under
random back-pressure (``bnnflow.hw.rtl.cosim``).
"""

from __future__ import annotations

import math

from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.ops.base import Memory, bank_depth, grouped
from bnnflow.hw.rtl.layers import Layer, layers_of, stream_of

#: beats a join FIFO holds beyond the difference of its branches: the join's handshake and rounding
MARGIN = 4


def _dwc_elements(in_lanes: int, out_lanes: int) -> int:
    """Elements a width converter (``bnn_dwc``) can hold: a gearbox keeps up to 2 * (in + out)."""
    if in_lanes == out_lanes:
        return 0
    if out_lanes % in_lanes == 0 or in_lanes % out_lanes == 0:
        return in_lanes + out_lanes
    return 2 * (in_lanes + out_lanes)


def join_fifo_depths(model: ModelWrapper, layers: list[Layer]) -> dict[tuple[str, int], int]:
    """FIFO depth in beats for every join input that needs one, keyed (layer name, input port)."""
    produced = {name: layer for layer in layers for name in layer.outputs}
    ahead: dict[str, float] = {model.graph.input[0].name: 0.0}  # frames each stream can be ahead of the input

    depths: dict[tuple[str, int], int] = {}
    for layer in layers:
        arrive = []
        for tensor, fmt in zip(layer.inputs, layer.input_formats):
            tensor = stream_of(model, tensor)
            source = produced[tensor].output if tensor in produced else layers[0].input
            arrive.append(ahead[tensor] + _dwc_elements(source.lanes, fmt.lanes) / fmt.elements)
        if len(arrive) > 1:
            longest = max(arrive)
            for port, (value, fmt) in enumerate(zip(arrive, layer.input_formats)):
                if value < longest:
                    depths[(layer.name, port)] = math.ceil((longest - value) * fmt.beats) + MARGIN
            arrive = [longest + MARGIN / min(fmt.beats for fmt in layer.input_formats)]
        held = layer.held_beats / layer.input.beats if layer.held_beats else 1.0  # unstated: a whole frame
        for name in layer.outputs:
            ahead[name] = arrive[0] + held
    return depths


def join_fifo_memories(model: ModelWrapper) -> list[list[Memory]]:
    """The join FIFOs the RTL of ``model`` at its current folding gets, each as its memories (for the estimates and
    the board fit); none for a graph the RTL generator refuses (it has no RTL to count)."""
    try:
        layers = layers_of(model, None)
    except UnsupportedGraphError:
        return []
    formats = {layer.name: layer.input_formats for layer in layers}
    return [stream_fifo_memories(formats[name][port].width, depth)
            for (name, port), depth in join_fifo_depths(model, layers).items()]


def stream_fifo_memories(width: int, depth: int) -> list[Memory]:
    """The memories of a ``bnn_stream_fifo`` of ``depth`` beats: when its ``depth - 2`` beats of RAM hold over
    ``LUTROM_MAX_BITS``, that RAM in banks of ``bank_depth`` words (the last one shorter; the skid at its output is
    a few LUTs), else LUT RAM of ``depth`` beats read asynchronously."""
    from bnnflow.hw.estimates import LUTROM_MAX_BITS  # the estimates import this module's callers

    if depth >= 16 and (depth - 2) * width > LUTROM_MAX_BITS:
        bank = bank_depth(width, depth - 2)
        return grouped([Memory(width, max(2, min(bank, depth - 2 - start))) for start in range(0, depth - 2, bank)])
    return [Memory(width, depth, asynchronous=True)]
