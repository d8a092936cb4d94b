"""FINN's boards: the names its builder takes, their parts, and the shell flow that makes a bitstream for them.

Parts and Alveo platforms are those of ``finn.util.basic`` (``pynq_part_map``, ``alveo_part_map``,
``alveo_default_platform``) at the FINN commit the Docker image pins. Zynq boards are built with the
``vivado_zynq`` shell flow and run through PYNQ; Alveo cards with ``vitis_alveo``, which also needs Vitis and XRT.
"""

from __future__ import annotations

from dataclasses import dataclass

from bnnflow.errors import ConfigError

VIVADO_ZYNQ = "vivado_zynq"
VITIS_ALVEO = "vitis_alveo"


@dataclass(frozen=True)
class FinnBoard:
    name: str  #: FINN's name, as DataflowBuildConfig.board takes it
    part: str
    shell_flow: str  #: ShellFlowType value: "vivado_zynq" or "vitis_alveo"
    platform: str = ""  #: Vitis platform (Alveo only)

    @property
    def is_zynq(self) -> bool:
        return self.shell_flow == VIVADO_ZYNQ


FINN_BOARDS: dict[str, FinnBoard] = {b.name: b for b in (
    FinnBoard("Pynq-Z1", "xc7z020clg400-1", VIVADO_ZYNQ),
    FinnBoard("Pynq-Z2", "xc7z020clg400-1", VIVADO_ZYNQ),
    FinnBoard("Ultra96", "xczu3eg-sbva484-1-e", VIVADO_ZYNQ),
    FinnBoard("Ultra96-V2", "xczu3eg-sbva484-1-i", VIVADO_ZYNQ),
    FinnBoard("ZCU102", "xczu9eg-ffvb1156-2-e", VIVADO_ZYNQ),
    FinnBoard("ZCU104", "xczu7ev-ffvc1156-2-e", VIVADO_ZYNQ),
    FinnBoard("ZCU111", "xczu28dr-ffvg1517-2-e", VIVADO_ZYNQ),
    FinnBoard("RFSoC2x2", "xczu28dr-ffvg1517-2-e", VIVADO_ZYNQ),
    FinnBoard("RFSoC4x2", "xczu48dr-ffvg1517-2-e", VIVADO_ZYNQ),
    FinnBoard("KV260_SOM", "xck26-sfvc784-2LV-c", VIVADO_ZYNQ),
    FinnBoard("U50", "xcu50-fsvh2104-2L-e", VITIS_ALVEO, "xilinx_u50_gen3x16_xdma_5_202210_1"),
    FinnBoard("U200", "xcu200-fsgd2104-2-e", VITIS_ALVEO, "xilinx_u200_gen3x16_xdma_2_202110_1"),
    FinnBoard("U250", "xcu250-figd2104-2L-e", VITIS_ALVEO, "xilinx_u250_gen3x16_xdma_2_1_202010_1"),
    FinnBoard("U280", "xcu280-fsvh2892-2L-e", VITIS_ALVEO, "xilinx_u280_gen3x16_xdma_1_202211_1"),
    FinnBoard("U55C", "xcu55c-fsvh2892-2L-e", VITIS_ALVEO, "xilinx_u55c_gen3x16_xdma_3_202210_1"),
)}

#: bnnflow's board names (``bnnflow boards``) for the FINN boards they are
ALIASES = {"pynq-z1": "Pynq-Z1", "pynq-z2": "Pynq-Z2", "ultra96": "Ultra96", "zcu104": "ZCU104",
           "kv260": "KV260_SOM", "u250": "U250"}


def get_finn_board(name: str) -> FinnBoard:
    """A FINN board by FINN's name or bnnflow's (any case); an unknown one is a ConfigError listing the known."""
    key = ALIASES.get(name.lower(), name)
    by_lower = {n.lower(): b for n, b in FINN_BOARDS.items()}
    if key.lower() not in by_lower:
        raise ConfigError(f"unknown FINN board {name!r} (known: {', '.join(FINN_BOARDS)}); open-toolchain boards "
                          "such as the ULX3S are built with `bnnflow bitstream`")
    return by_lower[key.lower()]


def finn_board_for(bnnflow_board: str) -> FinnBoard | None:
    """The FINN board a bnnflow board name stands for, or None (an open-toolchain board)."""
    name = ALIASES.get(bnnflow_board.lower())
    return FINN_BOARDS[name] if name else None
