"""The resource model of the generated RTL, calibrated against yosys: the LUTs and flip-flops a module instance of
given parameters takes.

Each library module (``hw/rtl/verilog/bnn_*.v``, and the UART bridge of a board build) gets a linear model in a
few features of its parameters: the logic that scales with them (lanes of the XNOR-popcount or multiply-add,
accumulator and comparison bits, counters, bank-select multiplexers, stream registers) and the bits of its
memories that sit in LUTs (``bnnflow.hw.estimates.memory_cost``). The coefficients, one set for LUT4s and one
for flip-flops, are fitted, non-negative, to what ``synth_ecp5`` makes of every instance of a sweep of designs,
each instance kept a module and flattened inside (``benchmarks/calibrate_resources.py``, which keeps its data in
``calibration/ecp5_samples.jsonl`` beside this file and writes ``calibration/ecp5.json``); LUT4s are counted as
nextpnr's "Total LUT4s" counts them (a carry cell is two, a LUT RAM cell six). A design's placed TRELLIS_COMB
(TRELLIS_FF) count is then ``placed_per_lut4`` (``placed_per_ff``) times the sum over its instances: that factor,
fitted over whole-design builds, takes in what packing adds and what synthesis shares between instances.

The model is of the ECP5; Xilinx's LUT6 and the iCE40's LUT4 figures stay the ops' own analytic models
(``HWOp.lut_estimate``), without flip-flops.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from importlib import resources
from typing import Any, Callable

#: nextpnr's "Total LUT4s" of a yosys ECP5 netlist: a LUT4 is one, a carry cell (CCU2C) two, and a LUT RAM cell
#: (TRELLIS_DPR16X4) four RAM LUTs and two of its write port
LUT4_WEIGHTS = {"LUT4": 1, "CCU2C": 2, "TRELLIS_DPR16X4": 6}


def _log2(n: int) -> int:
    return max(1, math.ceil(math.log2(max(n, 2))))


def _search_bank_bits(p: dict[str, Any], words_at_root: int) -> int:
    """Bits selected between banks over a threshold search's levels (per PE lane): a level of ``words << s`` words
    in banks of 2^BANK_LOG2 (4 bits a level of SEARCH_BANKS) multiplexes its (banks - 1) extra ACC_W-bit outputs."""
    levels, banks, extra = p.get("SEARCH", 0), int(p.get("SEARCH_BANKS", 0)), 0
    for s in range(levels):
        depth = 1 << ((banks >> (4 * s)) & 15)
        extra += math.ceil((words_at_root << s) / depth) - 1
    return extra * p["ACC_W"]


def threshold_hold_bits(p: dict[str, Any]) -> int:
    """Flip-flops of ``bnn_thr_count``'s second hold on thresholds compared at once from block RAM (over
    ``LUTROM_MAX_BITS`` in all): the word, and the value delayed to meet it; 0 when the thresholds are logic or
    searched. ``p``: a ``bnn_mvtu`` or ``bnn_threshold`` instance's parameters."""
    from bnnflow.hw.estimates import LUTROM_MAX_BITS  # the estimates import this module

    n_thr = p.get("N_THR", 0)
    word = p["PE"] * n_thr * p["ACC_W"]
    folds = p.get("MH", p.get("C", 0)) // p["PE"]
    if not n_thr or p.get("SEARCH", 0) or word * folds <= LUTROM_MAX_BITS:
        return 0
    return word + p["PE"] * p["ACC_W"]


def weight_register_bits(p: dict[str, Any]) -> int:
    """Flip-flops of ``bnn_mvtu``'s weight words between its ROM and the bank select: three words (read, two holds)
    for a ROM or bank in logic, one (the second hold) for a bank in block RAM, which holds the read and, on an ECP5,
    the first hold in its output register (``bnnflow.hw.block_ram_registers``). The RTL's rule, on its parameters."""
    from bnnflow.hw.estimates import LUTROM_MAX_BITS, SHALLOW_ROM_WORDS  # the estimates import this module

    word = p["PE"] * p["SIMD"] * p["W_BITS"]
    depth = (p["MW"] // p["SIMD"]) * (p["MH"] // p["PE"])
    bank = min(p["WBANK_DEPTH"], 1 << max(1, math.ceil(math.log2(max(depth, 2)))))
    total = 0
    for start in range(0, depth, bank):
        words = max(2, min(bank, depth - start))
        in_logic = word * words <= LUTROM_MAX_BITS or words <= SHALLOW_ROM_WORDS
        total += word * (3 if in_logic else 1)
    return total


def _mvtu(p: dict[str, Any]) -> dict[str, float]:
    pe, simd, acc = p["PE"], p["SIMD"], p["ACC_W"]
    sf, nf = p["MW"] // simd, p["MH"] // pe
    banks = math.ceil(nf * sf / p["WBANK_DEPTH"])
    search = p.get("SEARCH", 0)
    lanes = pe * simd
    return {
        "const": 1,
        "xnor_lanes": lanes if p["XNOR"] else 0,
        "in_bits": simd * p["IN_BITS"],  # the input buffer's word and the registers it passes through
        "mac_bits": 0 if p["XNOR"] else lanes * (p["IN_BITS"] + p["W_BITS"] + _log2(simd)),
        "acc_bits": pe * acc,
        "pad_bits": pe * acc if p.get("PAD") else 0,
        "pad_count_bits": _log2(p.get("NCLS", 1) * nf) + _log2(p.get("OH", 1)) + _log2(p.get("OWD", 1))
        if p.get("PAD") else 0,
        "compare_bits": pe * acc * (0 if search else p["N_THR"]),
        "search_bits": pe * acc * search,
        "search_bank_bits": pe * _search_bank_bits(p, nf),
        "thr_hold_bits": threshold_hold_bits(p),
        "bank_select_bits": lanes * p["W_BITS"] * (banks - 1),
        "w_reg_bits": weight_register_bits(p),
        "out_bits": pe * p["OUT_BITS"],
        "counter_bits": _log2(sf) + _log2(nf) + _log2(nf * sf),
    }


def _swg(p: dict[str, Any]) -> dict[str, float]:
    cf = p["C"] // p["SIMD"]
    return {"const": 1, "address_bits": _log2(p["NR"] * p["IWD"] * cf),
            "count_bits": _log2(cf) + _log2(p["KW"]) + _log2(p["KH"]) + _log2(p["OWD"]) + _log2(p["OH"]),
            "lane_bits": p["SIMD"] * p["EB"]}


def _threshold(p: dict[str, Any]) -> dict[str, float]:
    pe, acc, search = p["PE"], p["ACC_W"], p.get("SEARCH", 0)
    nf = p["C"] // pe
    return {"const": 1, "compare_bits": pe * acc * (0 if search else p["N_THR"]), "search_bits": pe * acc * search,
            "search_bank_bits": pe * _search_bank_bits(p, nf), "thr_hold_bits": threshold_hold_bits(p),
            "sign_bits": pe * p["IN_BITS"] * p.get("SIGNS", 0),
            "out_bits": pe * p["OUT_BITS"], "counter_bits": _log2(nf)}


def _pool(p: dict[str, Any]) -> dict[str, float]:
    cf = p["C"] // p["PE"]
    return {"const": 1, "lane_bits": p["PE"] * p["OUT_BITS"], "in_bits": p["PE"] * p["IN_BITS"],
            "count_bits": _log2(cf) + _log2(p["IWD"]) + _log2(p["IH"]) + _log2(p["KW"]) + _log2(p["KH"]),
            "row_words": _log2(cf * max(1, p["IWD"] // p["KW"]))}


def _add(p: dict[str, Any]) -> dict[str, float]:
    return {"const": 1, "lane_bits": p["PE"] * p["OUT_BITS"]}


def _dup(p: dict[str, Any]) -> dict[str, float]:
    return {"const": 1, "lane_bits": p["N"] * p["W"]}


def _dwc(p: dict[str, Any]) -> dict[str, float]:
    iw, ow = p["IN_L"] * p["EB"], p["OUT_L"] * p["EB"]
    divides = p["OUT_L"] % p["IN_L"] == 0 or p["IN_L"] % p["OUT_L"] == 0
    # an upsizer writes each output slot on its count: a decode of log2(OUT_L / IN_L) bits per output bit
    up = p["OUT_L"] // p["IN_L"] if p["OUT_L"] % p["IN_L"] == 0 else 0
    return {"const": 1, "up_bits": ow * max(1, _log2(up) - 1) if up else 0,
            "down_bits": iw if p["IN_L"] % p["OUT_L"] == 0 and p["IN_L"] != p["OUT_L"] else 0,
            "gearbox_bits": 0 if divides else 2 * (iw + ow) * _log2(2 * (p["IN_L"] + p["OUT_L"]))}


def _stream_fifo(p: dict[str, Any]) -> dict[str, float]:
    width, depth = p["WIDTH"], p["DEPTH"]
    deep = depth >= 16 and (depth - 2) * width > 4096
    banks = math.ceil((depth - 2) / p["BANK"]) if deep else 1
    return {"const": 1, "width_bits": width, "deep_bits": width if deep else 0,
            "bank_select_bits": width * (banks - 1), "count_bits": _log2(depth + 1)}


def _downsample(p: dict[str, Any]) -> dict[str, float]:
    return {"const": 1, "count_bits": _log2(p["IH"]) + _log2(p["IWD"]) + _log2(p["C"] // p["PE"]),
            "lane_bits": p["PE"] * p["EB"]}


def _channel_pad(p: dict[str, Any]) -> dict[str, float]:
    return {"const": 1, "lane_bits": p["PE"] * p["EB"], "count_bits": _log2((p["C"] + p["PB"] + p["PA"]) // p["PE"])}


def _label_select(p: dict[str, Any]) -> dict[str, float]:
    return {"const": 1, "compare_bits": p["PE"] * (p["EB"] + _log2(p["LABELS"])),
            "out_bits": p["OUT_BITS"]}


def _uart(p: dict[str, Any]) -> dict[str, float]:
    return {"const": 1, "frame_bits": p["IN_W"] + p["OUT_W"]}


#: module -> its features from its parameters (every model also has ``lut_memory_bits``, from the op's memories)
FEATURES: dict[str, Callable[[dict[str, Any]], dict[str, float]]] = {
    "bnn_mvtu": _mvtu, "bnn_swg": _swg, "bnn_threshold": _threshold, "bnn_pool": _pool, "bnn_add": _add,
    "bnn_dup": _dup, "bnn_dwc": _dwc, "bnn_stream_fifo": _stream_fifo, "bnn_downsample": _downsample,
    "bnn_channel_pad": _channel_pad, "bnn_label_select": _label_select, "uart_bridge": _uart,
}


def features(module: str, params: dict[str, Any], lut_memory_bits: int) -> dict[str, float]:
    """The model's features of an instance: its module's, and the bits of its memories in LUTs."""
    return {**FEATURES[module](params), "lut_memory_bits": lut_memory_bits}


@dataclass(frozen=True)
class Calibration:
    """Fitted coefficients per module, for LUT4s and for flip-flops, and the factors from their sums to placed
    figures."""

    family: str
    coefficients: dict[str, dict[str, float]]
    placed_per_lut4: float
    ff_coefficients: dict[str, dict[str, float]]
    placed_per_ff: float

    def luts(self, module: str, params: dict[str, Any], lut_memory_bits: int = 0) -> float:
        """LUT4s yosys makes of one instance, by the fitted model (before the placed-design factor); 0 for a module
        the calibration has no samples of."""
        return _apply(self.coefficients.get(module, {}), features(module, params, lut_memory_bits))

    def flip_flops(self, module: str, params: dict[str, Any], lut_memory_bits: int = 0) -> float:
        """Flip-flops yosys makes of one instance, by the fitted model (before the placed-design factor)."""
        return _apply(self.ff_coefficients.get(module, {}), features(module, params, lut_memory_bits))

    def placed(self, module: str, params: dict[str, Any], lut_memory_bits: int = 0) -> int | None:
        """Placed LUTs (TRELLIS_COMB) of one instance in a whole design; None for a module without a model."""
        if module not in self.coefficients:
            return None
        return round(self.placed_per_lut4 * self.luts(module, params, lut_memory_bits))

    def placed_ff(self, module: str, params: dict[str, Any], lut_memory_bits: int = 0) -> int | None:
        """Placed flip-flops (TRELLIS_FF) of one instance in a whole design; None for a module without a model."""
        if module not in self.ff_coefficients:
            return None
        return round(self.placed_per_ff * self.flip_flops(module, params, lut_memory_bits))


def _apply(weights: dict[str, float], values: dict[str, float]) -> float:
    return sum(weights.get(name, 0.0) * value for name, value in values.items())


def calibration_file(family: str) -> Any:
    return resources.files("bnnflow.hw.rtl") / "calibration" / f"{family}.json"


@functools.cache
def load_calibration(family: str) -> Calibration | None:
    """The fitted model of a family, or None where there is none (Xilinx: the ops' analytic models)."""
    path = calibration_file(family)
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    return Calibration(data["family"], data["coefficients"], data["placed_per_lut4"], data["ff_coefficients"],
                       data["placed_per_ff"])
