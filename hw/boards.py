"""Target boards and their FPGA fabrics: the budgets folding fits into and the geometry estimates count in.

LUT and block-RAM counts are the devices' datasheet totals: Xilinx DS190 (Zynq-7000), DS891 (Zynq UltraScale+
MPSoC), DS962 (Alveo U250), DS987 (Kria K26); Lattice FPGA-DS-02012 (ECP5, table 1.1) and FPGA-DS-02008
(iCE40 UltraPlus, table 1.1). Block-RAM port aspect ratios: Xilinx UG473 table 1-5 (RAMB18E1) and UG573
(RAMB18E2), the same six shapes as ECP5's sysMEM EBR (FPGA-TN-02204); iCE40 EBR: FPGA-TN-02002.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

from bnnflow.errors import ConfigError


@dataclass(frozen=True)
class Fabric:
    """What the estimates need to know of an FPGA family."""

    name: str
    lut_inputs: int  #: 6 (Xilinx) or 4 (Lattice)
    ram_block_bits: int  #: bits of one block RAM (18 Kbit, or 4 Kbit on iCE40)
    ram_shapes: tuple[tuple[int, int], ...]  #: (width, depth) configurations of one block
    ffs_per_lut: float  #: flip-flops beside each LUT (a Xilinx slice: 4 LUT6, 8 FF; an ECP5 or iCE40 one: 1 for 1)
    #: the widest matrix unit board folding builds, in product bits per cycle (PE x SIMD x input bits x weight
    #: bits), where wider ones were measured to miss the board clock; 0 = no limit measured
    max_array_bits: int = 0

    @property
    def rom_bits_per_lut(self) -> int:
        """Bits of constant data one LUT holds as a ROM (a LUT with k inputs is a 2**k x 1 table)."""
        return 1 << self.lut_inputs


RAMB18_SHAPES = ((1, 16384), (2, 8192), (4, 4096), (9, 2048), (18, 1024), (36, 512))
XILINX = Fabric("xilinx", 6, 18432, RAMB18_SHAPES, 2)
#: ECP5-85 at 100 MHz (nextpnr): CNV's binary second layer with 2,048 products per cycle (PE 32 x SIMD 64) placed
#: at 105.5-109.9 MHz over three seeds; with 4,096 (PE 64 x SIMD 64) at 85.6 and 88.2 MHz, its input word routed
#: 6.8 ns to the farthest of the 64 PEs. Multi-bit products count by their bits, as their cells are wider
#: (an assumption: no wide multi-bit unit has been placed)
ECP5 = Fabric("ecp5", 4, 18432, RAMB18_SHAPES, 1, max_array_bits=2048)
ICE40 = Fabric("ice40", 4, 4096, ((2, 2048), (4, 1024), (8, 512), (16, 256)), 1)


@functools.lru_cache(maxsize=4096)
def blocks(width: int, depth: int, shapes: tuple[tuple[int, int], ...]) -> int:
    """The fewest blocks that hold ``width`` x ``depth`` bits: slices of the width side by side, each slice in the
    blocks of one port shape (yosys's ``memory_libmap`` mixes shapes so: 11 x 8192 is 4 blocks of 9 x 2048 and
    one of 2 x 8192)."""
    best = [0] * (width + 1)
    for w in range(1, width + 1):
        best[w] = min(math.ceil(depth / d) + best[max(0, w - sw)] for sw, d in shapes)
    return best[width]


@dataclass(frozen=True)
class Board:
    name: str
    part: str
    fabric: Fabric
    luts: int
    ram_blocks: int  #: blocks of ``fabric.ram_block_bits`` (RAMB18 halves on Xilinx)
    clock_mhz: float  #: the clock the board's build targets by default

    @property
    def flip_flops(self) -> int:
        return int(self.luts * self.fabric.ffs_per_lut)


BOARDS: dict[str, Board] = {b.name: b for b in (
    Board("pynq-z1", "xc7z020clg400-1", XILINX, 53_200, 280, 100.0),
    Board("pynq-z2", "xc7z020clg400-1", XILINX, 53_200, 280, 100.0),
    Board("ultra96", "xczu3eg-sbva484-1-e", XILINX, 70_560, 432, 100.0),
    Board("zcu104", "xczu7ev-ffvc1156-2-e", XILINX, 230_400, 624, 100.0),
    Board("kv260", "xck26-sfvc784-2LV-c", XILINX, 117_120, 288, 100.0),
    Board("u250", "xcu250-figd2104-2L-e", XILINX, 1_728_000, 5_376, 200.0),
    Board("ulx3s", "LFE5U-85F-6BG381C", ECP5, 83_640, 208, 100.0),
    Board("orangecrab", "LFE5U-25F-8MG285C", ECP5, 24_288, 56, 100.0),
    Board("colorlight-i5", "LFE5U-25F-6BG381C", ECP5, 24_288, 56, 100.0),
    Board("icebreaker", "iCE40UP5K-SG48", ICE40, 5_280, 30, 24.0),
)}

#: share of the board's LUTs (and flip-flops) the accelerator may take: placement and routing need slack, and
#: where the fabric has no calibrated model the estimates leave out the board wrapper and width converters
LUT_BUDGET_SHARE = 0.8


def get_board(name: str) -> Board:
    """A board by name, in any case (FINN writes Pynq-Z1, bnnflow pynq-z1); an unknown name is a ``ConfigError``
    listing the known ones."""
    by_lower = {key.lower(): board for key, board in BOARDS.items()}
    if name.lower() not in by_lower:
        raise ConfigError(f"unknown board {name!r} (known: {', '.join(BOARDS)})")
    return by_lower[name.lower()]
