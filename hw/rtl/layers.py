"""The layers of the generated RTL: one library module instance per hardware op of ``dataflow.onnx``.

A builder per op type (``BUILDERS``) turns a node into a ``Layer``: its module (``hw/rtl/verilog/bnn_*.v``), the
module's parameters (shape and folding), the stream formats of its ports, and the ROM images (``$readmemh`` hex
files) of its weights and thresholds, written into the design folder. ``bnnflow.hw.rtl.generate`` stitches the
layers into the top module. Port names: a module reads ``in`` (a join also ``in2``) and writes ``out``; a fork
writes all its copies on ``out``, one lane of ``out_valid`` / ``out_ready`` per copy.

``held_beats`` is what a layer can hold of its input stream, in input beats, before it must send something on:
its input buffers, pipeline and output FIFO. The join FIFOs are sized from it (``bnnflow.hw.rtl.fifos``).
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.estimates import hw_ops
from bnnflow.hw.ops.base import PARALLEL_THRESHOLDS, bank_depth
from bnnflow.hw.rtl.resources import threshold_hold_bits
from bnnflow.hw.rtl.stream import StreamFormat, encode, write_hex


def element(dtype: DataType) -> tuple[int, bool]:
    """(bits, signed) of one stream element of a datatype; bipolar values travel as bits (1 = +1)."""
    if dtype.name in ("BINARY", "BIPOLAR"):
        return 1, False
    if not dtype.is_integer():
        raise UnsupportedGraphError(f"datatype {dtype.name} has no hardware representation; only integers and bits")
    return dtype.bitwidth(), dtype.signed()


def signed_width(low: int, high: int) -> int:
    """Bits of a two's complement number holding every integer in [low, high]."""
    return max(int(low).bit_length() if low >= 0 else (-int(low) - 1).bit_length(), int(high).bit_length()) + 1


@dataclass
class Layer:
    """One instance in the top module: its module, parameters, and the streams it reads and writes."""

    name: str
    module: str
    params: dict[str, Any]
    input: StreamFormat  #: the ``in`` port
    output: StreamFormat  #: the ``out`` port (each copy of a fork)
    roms: list[str] = field(default_factory=list)
    held_beats: int = 0  #: input beats the layer can hold before it must send (input buffers, pipeline, FIFO)
    input2: StreamFormat | None = None  #: a join's ``in2`` port
    inputs: list[str] = field(default_factory=list)  #: the tensors on its input ports, in port order
    outputs: list[str] = field(default_factory=list)  #: the tensors it writes (a fork's copies in lane order)

    @property
    def input_formats(self) -> list[StreamFormat]:
        return [self.input] if self.input2 is None else [self.input, self.input2]


#: while ``rom_used_bits`` runs a builder: ROM name -> bits of its word that differ between words
_USED_BITS: ContextVar[dict[str, int] | None] = ContextVar("_USED_BITS", default=None)


def used_bits(values: np.ndarray, bits: int) -> int:
    """Bits of a ROM's words of ``values`` (words, lanes; ``bits`` each, two's complement) that are not the same in
    every word: yosys drops the others (``removing const-0 lane`` / ``const-1 lane``), so they take no block RAM."""
    codes = np.asarray(values, dtype=np.int64) & ((1 << bits) - 1)  # (words, lanes)
    planes = (codes[..., None] >> np.arange(bits)) & 1  # (words, lanes, bits)
    return int((planes.min(axis=0) != planes.max(axis=0)).sum())


def rom_used_bits(model: ModelWrapper, node) -> dict[str, int]:
    """The ROMs the RTL of ``node`` gets, by file name, with the bits of their words that vary (``used_bits``):
    what its op's ``memories(model)`` counts block RAM by. Nothing is written."""
    from qonnx.custom_op.registry import getCustomOp

    found: dict[str, int] = {}
    token = _USED_BITS.set(found)
    try:
        BUILDERS[node.op_type](None, model, node, getCustomOp(node))
    finally:
        _USED_BITS.reset(token)
    return found


def _rom(folder: Path | None, name: str, values: np.ndarray, lanes: int, bits: int, signed: bool) -> str:
    """Write a ROM image: one word per row of ``values`` (words, lanes), lane 0 in the lowest bits, signed lanes in
    two's complement, each word in exactly as many hex digits as its ``lanes * bits`` width needs. Without a
    folder nothing is written (the layers are wanted for their shapes only)."""
    found = _USED_BITS.get()
    if found is not None:
        found[name] = used_bits(np.asarray(values).reshape(len(values), lanes), bits)
    if folder is not None:
        fmt = StreamFormat(lanes, bits, signed, 1)
        write_hex(folder / name, encode(values.reshape(len(values), lanes), fmt), fmt.width)
    return name


def _search_levels(op) -> int:
    """Levels of the threshold search tree (``bnn_thr_search``) when the op's estimate model says its thresholds
    are searched (more than ``PARALLEL_THRESHOLDS``: a code of b bits has 2^b - 1, a tree of b levels), else 0."""
    n_thr = op.num_thresholds()
    return (n_thr + 1).bit_length() - 1 if n_thr > PARALLEL_THRESHOLDS else 0


def _search_roms(folder: Path, prefix: str, thresholds: np.ndarray, pe: int, levels: int, top: int,
                 acc_w: int) -> tuple[list[str], int]:
    """The memories of a threshold search (``bnn_thr_search``) and its BANK_LOG2 (4 bits a level): per level s and
    PE lane p, word nf * 2^s + i holding threshold (2i + 1) * 2^(levels-1-s) - 1 of channel nf*PE + p's sorted
    thresholds, padded to 2^levels - 1 with ``top`` (above every reachable value, so it never counts), in banks
    (``bank_depth`` of the bits that vary over the level: synthesis keeps only those, and a requantization's
    shared thresholds vary in few bits near the root), bank b in ``prefix_ss_ppp_bb.hex``."""
    channels, n_thr = thresholds.shape
    tree = np.full((channels, (1 << levels) - 1), top, dtype=np.int64)
    tree[:, :n_thr] = np.sort(thresholds, axis=1)
    nf = channels // pe
    files, log2 = [], 0
    for s in range(levels):
        nodes = (2 * np.arange(1 << s) + 1) * (1 << (levels - 1 - s)) - 1
        bank = bank_depth(max(1, used_bits(tree[:, nodes].reshape(-1, 1), acc_w)), nf << s)
        log2 |= (bank.bit_length() - 1) << (4 * s)
        for p in range(pe):
            words = tree[np.arange(nf) * pe + p][:, nodes].reshape(-1, 1)
            for b in range(0, len(words), bank):
                rows = words[b: b + bank]
                if len(rows) == 1:  # a 1-word memory is declared 2 words deep, and $readmemh expects every word
                    rows = np.concatenate([rows, rows])
                files.append(_rom(folder, f"{prefix}_{s:02d}_{p:03d}_{b // bank:02d}.hex", rows, 1, acc_w, True))
    return files, log2


def _out_fifo_depth(stages: int, room: int, smallest: int) -> int:
    """The output FIFO depth bnn_mvtu / bnn_threshold (search) choose: a power of two, at least ``smallest``,
    with room for ``stages`` in flight and ``room`` results more."""
    return smallest if stages + room <= smallest else 1 << (stages + room - 1).bit_length()


def mvtu_accumulator(model: ModelWrapper, node, op) -> tuple[int, int, int, np.ndarray | None]:
    """bnn_mvtu's ACC_W for an MVTU node, with the range (low, high) its thresholds are clipped to and its padding
    corrections as the RTL adds them (None without padCorrection); ``MVTU.memories`` sizes its memories by it."""
    mw = op.get_nodeattr("MW")
    xnor = bool(op.get_nodeattr("binaryXnorMode"))
    in_bits = element(op.input_datatype())[0]
    out_bits = element(op.output_datatype())[0]
    weights = np.asarray(model.get_initializer(node.input[1]), dtype=np.float64)
    wtype = DataType[op.get_nodeattr("weightDataType")]
    w_bits = 1 if xnor or wtype.name == "BIPOLAR" else element(wtype)[0]
    if xnor:  # the unit counts agreements (0 .. MW); the op's accumulator is the bipolar 2 * count - MW
        low, high = -mw, mw
    else:
        lo_in, hi_in = float(op.input_datatype().min()), float(op.input_datatype().max())
        low = int(np.minimum(weights * lo_in, weights * hi_in).sum(axis=0).min())
        high = int(np.maximum(weights * lo_in, weights * hi_in).sum(axis=0).max())
    corrections = None
    bounds = [low, high + 1]
    if op.get_nodeattr("padCorrection"):  # the corrected accumulator; in XNOR mode bnn_mvtu adds correction - MW
        table = np.asarray(model.get_initializer(node.input[-1])).astype(np.int64)  # (classes, MH)
        corrections = table - mw if xnor else table
        low, high = low + int(table.min()), high + int(table.max())
        bounds = [low, high + 1, int(corrections.min()), int(corrections.max())]
    # bnn_mvtu sums groups of 8 bits (or 4 products) first; its adder trees need ACC_W above a group's width
    group_width = 5 if xnor else in_bits + w_bits + 4
    acc_w = max(signed_width(min(bounds), max(bounds)), group_width + 1)
    if op.get_nodeattr("noActivation"):  # the accumulator leaves as its low OUT_BITS bits: at least that wide
        acc_w = max(acc_w, out_bits)
    return acc_w, low, high, corrections


def _mvtu(folder: Path, model: ModelWrapper, node, op) -> Layer:
    mw, mh = op.get_nodeattr("MW"), op.get_nodeattr("MH")
    pe, simd = op.get_nodeattr("PE"), op.get_nodeattr("SIMD")
    sf, nf = mw // simd, mh // pe
    vectors = int(np.prod(op.get_nodeattr("numInputVectors"))) if op.get_nodeattr("numInputVectors") else 1
    xnor = bool(op.get_nodeattr("binaryXnorMode"))
    in_bits, in_signed = element(op.input_datatype())
    out_bits, out_signed = element(op.output_datatype())
    weights = np.asarray(model.get_initializer(node.input[1]), dtype=np.float64)
    wtype = DataType[op.get_nodeattr("weightDataType")]
    bipolar = wtype.name == "BIPOLAR"
    if xnor or bipolar:
        w_bits, codes = 1, (weights > 0).astype(np.int64)
    else:
        w_bits, codes = element(wtype)[0], weights.astype(np.int64)
    acc_w, low, high, corrections = mvtu_accumulator(model, node, op)
    pad = corrections is not None
    # word (nf, sf), lane (p, s) holds the weight of input sf*SIMD + s for output channel nf*PE + p
    words = codes.reshape(sf, simd, nf, pe).transpose(2, 0, 3, 1).reshape(nf * sf, pe * simd)
    # bnn_mvtu reads the weights in banks (bank_depth)
    bank = bank_depth(pe * simd * w_bits, nf * sf)
    roms = []
    for b in range(0, nf * sf, bank):
        rows = words[b: b + bank]
        if len(rows) == 1:  # bnn_mvtu declares a 1-word bank 2 words deep, and $readmemh expects every word
            rows = np.concatenate([rows, np.zeros_like(rows)])
        roms.append(_rom(folder, f"{node.name}_weights_{b // bank:02d}.hex", rows, pe * simd, w_bits,
                         not (xnor or bipolar)))
    n_thr = 0
    if not op.get_nodeattr("noActivation"):
        thresholds = np.asarray(model.get_initializer(node.input[2]), dtype=np.float64)
        thresholds = np.broadcast_to(thresholds, (mh, thresholds.shape[1]))
        n_thr = thresholds.shape[1]
        thresholds = np.ceil(thresholds)
        if xnor and not pad:  # 2 * count - MW >= t  <=>  count >= ceil((t + MW) / 2)
            thresholds, low, high = np.ceil((thresholds + mw) / 2), 0, mw
        # thresholds outside the reachable range act like the range's ends; clipping keeps them in ACC_W bits
        clipped = np.clip(thresholds, low, high + 1).astype(np.int64)
    levels = _search_levels(op)
    params = {"MW": mw, "MH": mh, "PE": pe, "SIMD": simd, "IN_BITS": in_bits, "IN_SIGNED": int(in_signed),
              "W_BITS": w_bits, "W_BIPOLAR": int(bipolar), "XNOR": int(xnor), "ACC_W": acc_w, "N_THR": n_thr,
              "OUT_BITS": out_bits, "OUT_BIAS": op.get_nodeattr("outputBias"), "WBANK_DEPTH": bank,
              "WEIGHT_FILE": f"{node.name}_weights"}
    if n_thr and levels:
        files, banks = _search_roms(folder, f"{node.name}_search", clipped, pe, levels, high + 1, acc_w)
        roms += files
        params.update(SEARCH=levels, SEARCH_BANKS=banks, SEARCH_FILE=f"{node.name}_search")
    elif n_thr:
        roms.append(_rom(folder, f"{node.name}_thresholds.hex", clipped.reshape(nf, pe * n_thr), pe * n_thr, acc_w,
                         True))
        params["THRESH_FILE"] = roms[-1]
    if pad:
        rows, cols = op.get_nodeattr("correctionRows"), op.get_nodeattr("correctionCols")
        n_cols = max(cols) + 1
        classes = (max(rows) + 1) * n_cols
        address_bits = max(1, (classes * nf - 1).bit_length())
        # a row's and a column's first correction word, and the corrections: word class * NF + nf, lane p
        roms.append(_rom(folder, f"{node.name}_corr_rows.hex", np.asarray(rows) * n_cols * nf, 1, address_bits, False))
        roms.append(_rom(folder, f"{node.name}_corr_cols.hex", np.asarray(cols) * nf, 1, address_bits, False))
        roms.append(_rom(folder, f"{node.name}_corrections.hex", corrections.reshape(classes * nf, pe), pe, acc_w,
                         True))
        params.update(PAD=1, OH=len(rows), OWD=len(cols), NCLS=classes, ROW_FILE=roms[-3], COL_FILE=roms[-2],
                      CORR_FILE=roms[-1])
    # two input vectors (the double buffer), and the output FIFO (NF beats a vector) that also holds the pipeline
    stages = 10 + (not xnor) + 2 * pad + (4 * levels - 1 if n_thr and levels else 0) + bool(threshold_hold_bits(params))
    held = sf * (2 + -(-_out_fifo_depth(stages, 5, 16) // nf))
    return Layer(node.name, "bnn_mvtu", params, StreamFormat(simd, in_bits, in_signed, vectors * sf),
                 StreamFormat(pe, out_bits, out_signed, vectors * nf), roms, held)


def _sliding_window(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, simd = op.get_nodeattr("IFMChannels"), op.get_nodeattr("SIMD")
    (ih, iw), (oh, ow) = op.get_nodeattr("IFMDim"), op.get_nodeattr("OFMDim")
    (kh, kw), (sh, sw) = op.get_nodeattr("ConvKernelDim"), op.get_nodeattr("Stride")
    top, left = op.get_nodeattr("Padding")[:2]  # the bottom and right padding follow from OFMDim
    bits, signed = element(op.input_datatype())
    cf = c // simd
    params = {"C": c, "SIMD": simd, "IH": ih, "IWD": iw, "OH": oh, "OWD": ow, "KH": kh, "KW": kw, "SH": sh, "SW": sw,
              "PT": top, "PL": left, "EB": bits, "PAD": op.get_nodeattr("PadValue") & ((1 << bits) - 1),
              "NR": op.ring_rows()}
    # the ring of input rows, the input register, and the 8-beat output FIFO
    held = op.ring_rows() * iw * cf + 1 + 8
    return Layer(node.name, "bnn_swg", params, StreamFormat(simd, bits, signed, ih * iw * cf),
                 StreamFormat(simd, bits, signed, oh * ow * kh * kw * cf), held_beats=held)


def _pool(node, op, mode: str) -> Layer:
    """A ``bnn_pool`` over non-overlapping windows: ``mode`` "max" (as wide as its input) or "sum"."""
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    (ih, iw), (kh, kw) = op.get_nodeattr("ImgDim"), op.get_nodeattr("PoolDim")
    in_bits, in_signed = element(op.input_datatype())
    out_bits, out_signed = (in_bits, in_signed) if mode == "max" else element(op.output_datatype())
    params = {"MODE": mode, "C": c, "PE": pe, "IH": ih, "IWD": iw, "KH": kh, "KW": kw, "IN_BITS": in_bits,
              "IN_SIGNED": int(in_signed), "IN_BIPOLAR": int(mode == "sum" and op.input_datatype().name == "BIPOLAR"),
              "OUT_BITS": out_bits}
    # a row of windows in progress, and its 4-beat output FIFO (a beat out per window of kh * kw pixels)
    held = (kh * iw + 4 * kh * kw) * (c // pe)
    return Layer(node.name, "bnn_pool", params, StreamFormat(pe, in_bits, in_signed, ih * iw * (c // pe)),
                 StreamFormat(pe, out_bits, out_signed, (ih // kh) * (iw // kw) * (c // pe)), held_beats=held)


def _maxpool(folder: Path, model: ModelWrapper, node, op) -> Layer:
    kh, kw = op.get_nodeattr("PoolDim")
    if list(op.get_nodeattr("Stride")) != [kh, kw]:
        raise UnsupportedGraphError(f"node {node.name} (StreamingMaxPool) has stride {op.get_nodeattr('Stride')} "
                                    f"and kernel {[kh, kw]}; the RTL pools non-overlapping windows (stride = kernel)")
    return _pool(node, op, "max")


def _thresholding(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    vectors = int(np.prod(op.get_nodeattr("numInputVectors"))) if op.get_nodeattr("numInputVectors") else 1
    in_bits, in_signed = element(op.input_datatype())
    out_bits, out_signed = element(op.output_datatype())
    low, high = int(op.input_datatype().min()), int(op.input_datatype().max())
    signs = bool(op.get_nodeattr("inputSigns"))
    if signs:  # negated channels: the values to threshold span the input's range and its negation
        low, high = min(low, -high), max(high, -low)
    thresholds = np.asarray(model.get_initializer(node.input[1]), dtype=np.float64)
    thresholds = np.broadcast_to(thresholds, (c, thresholds.shape[1]))
    n_thr = thresholds.shape[1]
    acc_w = max(signed_width(low, high + 1), in_bits + 1)
    clipped = np.clip(np.ceil(thresholds), low, high + 1).astype(np.int64)
    params = {"C": c, "PE": pe, "IN_BITS": in_bits, "IN_SIGNED": int(in_signed), "ACC_W": acc_w, "N_THR": n_thr,
              "OUT_BITS": out_bits, "OUT_BIAS": op.get_nodeattr("outputBias")}
    levels = _search_levels(op)
    if levels:
        roms, banks = _search_roms(folder, f"{node.name}_search", clipped, pe, levels, high + 1, acc_w)
        params.update(SEARCH=levels, SEARCH_BANKS=banks, SEARCH_FILE=f"{node.name}_search")
    else:
        roms = [_rom(folder, f"{node.name}_thresholds.hex", clipped.reshape(c // pe, pe * n_thr), pe * n_thr, acc_w,
                     True)]
        params["THRESH_FILE"] = roms[0]
    if signs:  # a bit per channel, 1 for -1
        negative = (np.asarray(model.get_initializer(node.input[2])) < 0).astype(np.int64)
        roms.append(_rom(folder, f"{node.name}_signs.hex", negative.reshape(c // pe, pe), pe, 1, False))
        params.update(SIGNS=1, SIGN_FILE=roms[-1])
    # the pipeline and output FIFO hold a result per input beat: the FIFO's depth (it has room for the pipeline)
    held = _out_fifo_depth(1 + 4 * levels, 4, 16) if levels else 8 if threshold_hold_bits(params) else 4
    return Layer(node.name, "bnn_threshold", params, StreamFormat(pe, in_bits, in_signed, vectors * (c // pe)),
                 StreamFormat(pe, out_bits, out_signed, vectors * (c // pe)), roms, held_beats=held)


def _label_select(folder: Path, model: ModelWrapper, node, op) -> Layer:
    labels, pe = op.get_nodeattr("Labels"), op.get_nodeattr("PE")
    bits, signed = element(op.input_datatype())
    out_bits, _ = element(op.output_datatype())
    params = {"LABELS": labels, "PE": pe, "EB": bits, "SIGNED": int(signed), "OUT_BITS": out_bits}
    return Layer(node.name, "bnn_label_select", params, StreamFormat(pe, bits, signed, labels // pe),
                 StreamFormat(1, out_bits, False, 1))


def _vectors(op) -> int:
    return int(np.prod(op.get_nodeattr("numInputVectors"))) if op.get_nodeattr("numInputVectors") else 1


def _duplicate(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, pe, copies = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE"), op.get_nodeattr("NumOutputStreams")
    bits, signed = element(op.input_datatype())
    fmt = StreamFormat(pe, bits, signed, _vectors(op) * (c // pe))
    # a two-beat buffer per copy
    return Layer(node.name, "bnn_dup", {"N": copies, "W": pe * bits}, fmt, fmt, held_beats=2)


def _add_streams(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    beats = _vectors(op) * (c // pe)
    a, b = op.input_datatype(), DataType[op.get_nodeattr("input2DataType")]
    (a_bits, a_signed), (b_bits, b_signed) = element(a), element(b)
    out_bits, out_signed = element(op.output_datatype())
    params = {"PE": pe, "A_BITS": a_bits, "A_SIGNED": int(a_signed), "A_BIPOLAR": int(a.name == "BIPOLAR"),
              "B_BITS": b_bits, "B_SIGNED": int(b_signed), "B_BIPOLAR": int(b.name == "BIPOLAR"), "OUT_BITS": out_bits}
    # its output register and 4-beat output FIFO, a beat out per pair of beats in
    return Layer(node.name, "bnn_add", params, StreamFormat(pe, a_bits, a_signed, beats),
                 StreamFormat(pe, out_bits, out_signed, beats), held_beats=4,
                 input2=StreamFormat(pe, b_bits, b_signed, beats))


def _downsample(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    (ih, iw), (oh, ow) = op.get_nodeattr("ImgDim"), op.get_nodeattr("OutDim")
    (oy, ox), (sy, sx) = op.get_nodeattr("Offset"), op.get_nodeattr("Stride")
    bits, signed = element(op.input_datatype())
    cf = c // pe
    params = {"C": c, "PE": pe, "IH": ih, "IWD": iw, "OH": oh, "OWD": ow, "OY": oy, "OX": ox, "SY": sy, "SX": sx,
              "EB": bits}
    # its 4-beat output FIFO (with the output register), a kept beat for every ih*iw / (oh*ow) read
    return Layer(node.name, "bnn_downsample", params, StreamFormat(pe, bits, signed, ih * iw * cf),
                 StreamFormat(pe, bits, signed, oh * ow * cf), held_beats=4 * (ih * iw) // (oh * ow))


def _channel_pad(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    before, after, value = op.get_nodeattr("PadBefore"), op.get_nodeattr("PadAfter"), op.get_nodeattr("PadValue")
    bits, signed = element(op.input_datatype())
    code = int(value > 0) if op.input_datatype().name == "BIPOLAR" else int(value) & ((1 << bits) - 1)
    params = {"C": c, "PE": pe, "PB": before, "PA": after, "EB": bits, "PAD": code}
    cf, of = c // pe, op.out_channels() // pe
    # its 4-beat output FIFO (with the output register), cf beats in for every of out; and the beat kept for the
    # lanes that straddle two input beats
    return Layer(node.name, "bnn_channel_pad", params, StreamFormat(pe, bits, signed, _vectors(op) * cf),
                 StreamFormat(pe, bits, signed, _vectors(op) * of),
                 held_beats=-(-4 * cf // of) + int(before % pe != 0))


def _sum_pool(folder: Path, model: ModelWrapper, node, op) -> Layer:
    return _pool(node, op, "sum")  # _rtl_gap has refused overlapping windows


def _rtl_gap(node, op) -> str:
    """What of a hardware op the Verilog library lacks ('' when it has everything the op uses)."""
    if node.op_type not in BUILDERS:
        return "has no Verilog module yet"
    if node.op_type == "SumPool":
        (kh, kw), stride = op.get_nodeattr("PoolDim"), list(op.get_nodeattr("Stride"))
        # along an axis the window spans whole, there is one window whatever the stride
        if any(s != k and k != n for s, k, n in zip(stride, (kh, kw), op.get_nodeattr("ImgDim"))):
            return (f"sums windows {[kh, kw]} at stride {stride}, which the Verilog sum pool does not do (it takes "
                    "stride = kernel, or a global pool)")
    return ""


def stream_of(model: ModelWrapper, tensor: str) -> str:
    """The stream a tensor is: a ``Reshape`` keeps the stream's element order, so its output is its input renamed."""
    alias = {node.output[0]: node.input[0] for node in model.graph.node if node.op_type == "Reshape"}
    while tensor in alias:
        tensor = alias[tensor]
    return tensor


BUILDERS: dict[str, Callable[[Path, ModelWrapper, Any, Any], Layer]] = {
    "MVTU": _mvtu,
    "SlidingWindow": _sliding_window,
    "StreamingMaxPool": _maxpool,
    "Thresholding": _thresholding,
    "LabelSelect": _label_select,
    "DuplicateStreams": _duplicate,
    "AddStreams": _add_streams,
    "Downsample": _downsample,
    "ChannelPad": _channel_pad,
    "SumPool": _sum_pool,
}


def rtl_layer(model: ModelWrapper, node, op, folder: Path | None = None) -> Layer:
    """The layer of one node, its ROM images written into ``folder`` (none without one: for the module and
    parameters alone)."""
    missing = _rtl_gap(node, op)
    if missing:
        raise UnsupportedGraphError(f"node {node.name} ({node.op_type}) {missing}; `bnnflow simulate` runs this "
                                    "graph bit-exactly")
    return BUILDERS[node.op_type](folder, model, node, op)


def layers_of(model: ModelWrapper, folder: Path | None) -> list[Layer]:
    """The layers of a dataflow graph in graph order (each after the layers it reads), with their ROM images
    written into ``folder``; a ``Reshape`` is no layer (it keeps the stream's element order, so it only renames)."""
    layers = []
    for node, op in hw_ops(model):
        layer = rtl_layer(model, node, op, folder)
        layer.inputs = [name for name in node.input if model.get_initializer(name) is None]
        layer.outputs = list(node.output)
        layers.append(layer)
    return layers
