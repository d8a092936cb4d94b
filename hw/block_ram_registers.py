"""Move the register after an ECP5 block RAM into the block RAM's own output register (``REGMODE = OUTREG``).

yosys maps every DP16KD with ``REGMODE = NOREG`` (its ``brams_map_16kd.v``; the memory mapper has no output
register stage), so a read's data leaves the block RAM 5.6-5.8 ns after the clock and must reach the next
register in what is left of the period; nextpnr often places that register dozens of columns away (CNV's weight
block RAMs were routed 4.3-5.5 ns to it, missing 100 MHz). The block RAM has an output register of its own,
whose data comes out far sooner. This pass runs on yosys's JSON netlist between synthesis and place and route:
where every used data output of a read port drives only the data input of a plain flip-flop (same clock and edge,
no enable, no reset, powering up 0 as the output register does), it sets that port's ``REGMODE`` to ``OUTREG``,
connects the flip-flops' outputs to the block RAM and removes the flip-flops. The design's behaviour, cycle for
cycle, is unchanged: the data passes one register after the array either way.

A 36-bit pseudo-dual-port block RAM (``DATA_WIDTH_A = 36``) reads both halves (DOA and DOB) on port B's clock:
both halves are absorbed or neither, and both ports get ``OUTREG``, as Lattice's own ``PDPW16KD`` sets them. Its
output-enable OCEA is tied high too, so the upper half's register loads whichever enable the silicon uses.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bnnflow.pipeline.rundir import atomic_write_text

_FF = "TRELLIS_FF"
_BRAM = "DP16KD"
_DATA_OUT = 18  #: DOA0..17, DOB0..17


@dataclass(frozen=True)
class Absorbed:
    """What the pass changed: block RAMs now reading through their output register, and flip-flops removed."""

    block_rams: int
    flip_flops: int


def _param(cell: dict[str, Any], name: str, default: str) -> str:
    """A cell parameter as text; yosys writes integers as 32-bit binary strings (``DATA_WIDTH_A``)."""
    value = str(cell.get("parameters", {}).get(name, default)).strip()
    if len(value) == 32 and set(value) <= {"0", "1"}:
        return str(int(value, 2))
    return value


def _loads(module: dict[str, Any]) -> dict[int, list[tuple[str, str]]]:
    """Every net bit's loads in ``module``: (cell, input port), and ("", port) for the module's own outputs."""
    loads: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for name, cell in module.get("cells", {}).items():
        directions = cell.get("port_directions", {})
        for port, bits in cell.get("connections", {}).items():
            if directions.get(port, "input") != "output":
                for bit in bits:
                    if isinstance(bit, int):
                        loads[bit].append((name, port))
    for port, info in module.get("ports", {}).items():
        if info.get("direction") != "input":
            for bit in info.get("bits", []):
                if isinstance(bit, int):
                    loads[bit].append(("", port))
    return loads


def _plain_register(cell: dict[str, Any], clock: list[Any], inverted: bool) -> bool:
    """Whether ``cell`` is a flip-flop on ``clock`` (at the edge given), with no enable or reset, powering up 0."""
    connections = cell.get("connections", {})
    return (cell["type"] == _FF
            and connections.get("CLK") == clock
            and _param(cell, "CLKMUX", "CLK") == ("INV" if inverted else "CLK")
            and _param(cell, "CEMUX", "1") == "1"
            and connections.get("LSR", ["0"]) == ["0"]
            and _param(cell, "REGSET", "RESET") == "RESET")


def _absorb_group(module: dict[str, Any], loads: dict[int, list[tuple[str, str]]], bram: dict[str, Any],
                  sides: str, clock_side: str) -> list[tuple[str, str]]:
    """The (data output, flip-flop) pairs to absorb for a read port that drives ``sides``' outputs, or [] if any
    used output of it drives something else."""
    connections = bram.get("connections", {})
    clock = connections.get(f"CLK{clock_side}")
    if not clock or not isinstance(clock[0], int):
        return []
    inverted = _param(bram, f"CLK{clock_side}MUX", f"CLK{clock_side}") == "INV"
    if any(connections.get(f"RST{side}", ["0"]) != ["0"] or connections.get(f"OCE{side}", ["1"]) not in (["1"], ["0"])
           for side in sides):
        return []
    if connections.get(f"OCE{clock_side}", ["1"]) != ["1"]:
        return []
    pairs = []
    for side in sides:
        for i in range(_DATA_OUT):
            port = f"DO{side}{i}"
            bits = connections.get(port, [])
            if not bits or not isinstance(bits[0], int) or not loads.get(bits[0]):
                continue  # unused output: its register holds nothing anyone reads
            users = loads[bits[0]]
            if len(users) != 1 or users[0][1] != "DI" or not users[0][0]:
                return []
            flop = users[0][0]
            if not _plain_register(module["cells"][flop], clock, inverted):
                return []
            pairs.append((port, flop))
    return pairs


def absorb_output_registers(netlist: dict[str, Any]) -> Absorbed:
    """Absorb plain registers after DP16KD read ports into their output registers, in every module of a yosys
    JSON ``netlist`` (changed in place); returns what changed."""
    block_rams = flip_flops = 0
    for module in netlist.get("modules", {}).values():
        cells = module.get("cells", {})
        brams = [cell for cell in cells.values() if cell.get("type") == _BRAM]
        if not brams:
            continue
        loads = _loads(module)
        for bram in brams:
            pdp = _param(bram, "DATA_WIDTH_A", "18") == "36"
            groups = [("AB", "B")] if pdp else [("A", "A"), ("B", "B")]
            changed = False
            for sides, clock_side in groups:
                if any(_param(bram, f"REGMODE_{side}", "NOREG") != "NOREG" for side in sides):
                    continue
                pairs = _absorb_group(module, loads, bram, sides, clock_side)
                if not pairs:
                    continue
                for port, flop in pairs:
                    bram["connections"][port] = cells.pop(flop)["connections"]["Q"]
                for side in sides:
                    bram["parameters"][f"REGMODE_{side}"] = "OUTREG"
                if pdp:
                    bram["connections"]["OCEA"] = ["1"]
                flip_flops += len(pairs)
                changed = True
            block_rams += changed
    return Absorbed(block_rams, flip_flops)


def absorb_in_netlist_file(netlist: Path) -> Absorbed:
    """``absorb_output_registers`` on a yosys JSON netlist file, rewritten in place (atomically) if it changed."""
    data = json.loads(netlist.read_text())
    absorbed = absorb_output_registers(data)
    if absorbed.flip_flops:
        atomic_write_text(netlist, json.dumps(data))
    return absorbed
