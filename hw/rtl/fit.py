"""Whether a generated design can fit a board, decided before synthesis: synthesis and place-and-route of a design
that cannot fit take many minutes to say so.

The need is the estimate of ``dataflow.onnx`` on the board's fabric (``bnnflow.hw.estimates``): every weight,
threshold and window memory in the fewest block RAMs of the fabric's port shapes, the FIFOs the RTL puts before
residual joins (by the same rule as the generator, ``bnnflow.hw.rtl.fifos``), and the ops' logic: on a fabric with
a calibrated model (the ECP5) its LUTs and flip-flops, the width converters' and the board wrapper's included.
Block RAMs are what synthesis uses; the logic is a fitted estimate, so a design just inside the board may still
fail in nextpnr, which then says so in its log.
"""

from __future__ import annotations

from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import ConfigError
from bnnflow.hw.boards import Board
from bnnflow.hw.estimates import estimate


def design_needs(dataflow: ModelWrapper, board: Board) -> dict[str, int | None]:
    """LUTs, flip-flops (None where the fabric has no calibrated model), block RAMs and memory bits the design
    needs on ``board``."""
    est = estimate(dataflow, board.clock_mhz, board.fabric)
    bits = sum(layer["memory_bits"] for layer in est["layers"]) + est["join_fifos"]["memory_bits"]
    return {"luts": int(est["luts"]), "flip_flops": est["flip_flops"], "ram_blocks": int(est["ram_blocks"]),
            "memory_bits": bits}


def check_fits(dataflow: ModelWrapper, board: Board) -> dict[str, int | None]:
    """``design_needs``, or a one-line ``ConfigError`` saying what the design needs against what the board has."""
    need = design_needs(dataflow, board)
    short = []
    if need["ram_blocks"] > board.ram_blocks:
        has = board.ram_blocks * board.fabric.ram_block_bits / 1e6
        short.append(f"{need['ram_blocks']} block RAMs ({need['memory_bits'] / 1e6:.2f} Mbit of weights, thresholds "
                     f"and buffers) against the {board.ram_blocks} ({has:.2f} Mbit) of its {board.part}")
    if need["luts"] > board.luts:
        short.append(f"about {need['luts']:,} LUTs against its {board.luts:,}")
    if need["flip_flops"] is not None and need["flip_flops"] > board.flip_flops:
        short.append(f"about {need['flip_flops']:,} flip-flops against its {board.flip_flops:,}")
    if short:
        raise ConfigError(f"bitstream: the design does not fit {board.name}: it needs {' and '.join(short)}; fold it "
                          "for the board (`compile.board` with board-budget folding), train a smaller network, or pick "
                          "a larger board; the RTL and its cosimulation are unaffected")
    return need
