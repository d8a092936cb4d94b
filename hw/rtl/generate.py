"""The Verilog generator: ``dataflow.onnx`` -> a folder of Verilog, ROM images and ``interface.json``.

Each hardware op becomes one instance of a parameterised library module (``hw/rtl/verilog/bnn_*.v``): its
folding and shape are module parameters, its weights and thresholds ROM images (``$readmemh`` hex files) that
this module writes. Consecutive layers are joined by valid/ready streams; where one layer's output lanes differ
from the next one's input lanes a width converter (``bnn_dwc``) sits between them. The stitched top module is
``bnnflow_accel``; ``bnnflow_system`` puts the UART bridge in front of it for a board.

FIFO sizing rule: every layer ends in a small output FIFO (4 to 16 words) and issues work only while that FIFO
has room for everything in its own pipeline, so back-pressure never stalls a pipeline mid-way. No deeper FIFOs
are needed between layers because the layers that reuse an input (the MVTU over its NF passes, the sliding
window over overlapping patches) hold it in a double buffer of their own, so the producer before them keeps
streaming while they reuse it. The cosimulation measures the resulting cycles per frame against the timing
model (``bnnflow.hw.estimates.timing``).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.estimates import hw_ops
from bnnflow.hw.rtl.stream import StreamFormat, encode, write_hex

ACCEL_TOP = "bnnflow_accel"
SYSTEM_TOP = "bnnflow_system"
UART_MODULES = ("uart_rx.v", "uart_tx.v", "uart_bridge.v")
#: words per weight ROM bank of bnn_mvtu (one 2048 x 9 block RAM per 9 bits of width on ECP5)
WEIGHT_BANK_DEPTH = 2048


def library_file(name: str) -> Path:
    """A file of the Verilog library shipped with the package."""
    return Path(str(resources.files("bnnflow.hw.rtl") / "verilog" / name))


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
    input: StreamFormat
    output: StreamFormat
    roms: list[str] = field(default_factory=list)


@dataclass
class RtlDesign:
    """A generated design: where it is, what it consists of, and its stream interface."""

    folder: Path
    sources: list[str]  #: Verilog files of bnnflow_accel, relative to ``folder``
    input: StreamFormat
    output: StreamFormat
    output_kind: str
    layers: list[Layer]

    @property
    def source_paths(self) -> list[Path]:
        return [self.folder / name for name in self.sources]

    @property
    def system_sources(self) -> list[Path]:
        """The accelerator's sources plus the UART bridge and ``bnnflow_system.v``, for a board build."""
        return [*self.source_paths, *(self.folder / name for name in UART_MODULES), self.folder / "bnnflow_system.v"]


def _rom(folder: Path, name: str, values: np.ndarray, lanes: int, bits: int, signed: bool) -> str:
    """Write a ROM image: one word per row of ``values`` (words, lanes), lane 0 in the lowest bits, signed lanes in
    two's complement, each word in exactly as many hex digits as its ``lanes * bits`` width needs."""
    fmt = StreamFormat(lanes, bits, signed, 1)
    write_hex(folder / name, encode(values.reshape(len(values), lanes), fmt), fmt.width)
    return name


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
    if xnor:  # the unit counts agreements (0 .. MW); the op's accumulator is the bipolar 2 * count - MW
        low, high = -mw, mw
    else:
        lo_in, hi_in = float(op.input_datatype().min()), float(op.input_datatype().max())
        low = int(np.minimum(weights * lo_in, weights * hi_in).sum(axis=0).min())
        high = int(np.maximum(weights * lo_in, weights * hi_in).sum(axis=0).max())
    # bnn_mvtu sums groups of 8 bits (or 4 products) first; its adder trees need ACC_W above a group's width
    group_width = 5 if xnor else in_bits + w_bits + 4
    acc_w = max(signed_width(low, high + 1), group_width + 1)
    # word (nf, sf), lane (p, s) holds the weight of input sf*SIMD + s for output channel nf*PE + p
    words = codes.reshape(sf, simd, nf, pe).transpose(2, 0, 3, 1).reshape(nf * sf, pe * simd)
    # bnn_mvtu reads the weights in banks of WEIGHT_BANK_DEPTH words (fewer when the ROM is smaller)
    address_bits = max(1, (nf * sf - 1).bit_length())
    bank = 1 << min(address_bits, WEIGHT_BANK_DEPTH.bit_length() - 1)
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
        if xnor:  # 2 * count - MW >= t  <=>  count >= ceil((t + MW) / 2)
            thresholds, low, high = np.ceil((thresholds + mw) / 2), 0, mw
        # thresholds outside the reachable range act like the range's ends; clipping keeps them in ACC_W bits
        clipped = np.clip(thresholds, low, high + 1).astype(np.int64)
        roms.append(_rom(folder, f"{node.name}_thresholds.hex", clipped.reshape(nf, pe * n_thr), pe * n_thr, acc_w,
                         True))
    params = {"MW": mw, "MH": mh, "PE": pe, "SIMD": simd, "IN_BITS": in_bits, "IN_SIGNED": int(in_signed),
              "W_BITS": w_bits, "W_BIPOLAR": int(bipolar), "XNOR": int(xnor), "ACC_W": acc_w, "N_THR": n_thr,
              "OUT_BITS": out_bits, "OUT_BIAS": op.get_nodeattr("outputBias"), "WBANK_DEPTH": WEIGHT_BANK_DEPTH,
              "WEIGHT_FILE": f"{node.name}_weights"}
    if n_thr:
        params["THRESH_FILE"] = roms[-1]
    return Layer(node.name, "bnn_mvtu", params, StreamFormat(simd, in_bits, in_signed, vectors * sf),
                 StreamFormat(pe, out_bits, out_signed, vectors * nf), roms)


def _sliding_window(node, op) -> Layer:
    c, simd = op.get_nodeattr("IFMChannels"), op.get_nodeattr("SIMD")
    (ih, iw), (oh, ow) = op.get_nodeattr("IFMDim"), op.get_nodeattr("OFMDim")
    (kh, kw), (sh, sw) = op.get_nodeattr("ConvKernelDim"), op.get_nodeattr("Stride")
    bits, signed = element(op.input_datatype())
    cf = c // simd
    params = {"C": c, "SIMD": simd, "IH": ih, "IWD": iw, "OH": oh, "OWD": ow, "KH": kh, "KW": kw, "SH": sh, "SW": sw,
              "EB": bits}
    return Layer(node.name, "bnn_swg", params, StreamFormat(simd, bits, signed, ih * iw * cf),
                 StreamFormat(simd, bits, signed, oh * ow * kh * kw * cf))


def _maxpool(node, op) -> Layer:
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    (ih, iw), (kh, kw) = op.get_nodeattr("ImgDim"), op.get_nodeattr("PoolDim")
    if list(op.get_nodeattr("Stride")) != [kh, kw]:
        raise UnsupportedGraphError(f"node {node.name} (StreamingMaxPool) has stride {op.get_nodeattr('Stride')} "
                                    f"and kernel {[kh, kw]}; the RTL pools non-overlapping windows (stride = kernel)")
    bits, signed = element(op.input_datatype())
    params = {"C": c, "PE": pe, "IH": ih, "IWD": iw, "KH": kh, "KW": kw, "EB": bits, "SIGNED": int(signed)}
    return Layer(node.name, "bnn_maxpool", params, StreamFormat(pe, bits, signed, ih * iw * (c // pe)),
                 StreamFormat(pe, bits, signed, (ih // kh) * (iw // kw) * (c // pe)))


def _thresholding(folder: Path, model: ModelWrapper, node, op) -> Layer:
    c, pe = op.get_nodeattr("NumChannels"), op.get_nodeattr("PE")
    vectors = int(np.prod(op.get_nodeattr("numInputVectors"))) if op.get_nodeattr("numInputVectors") else 1
    in_bits, in_signed = element(op.input_datatype())
    out_bits, out_signed = element(op.output_datatype())
    low, high = int(op.input_datatype().min()), int(op.input_datatype().max())
    thresholds = np.asarray(model.get_initializer(node.input[1]), dtype=np.float64)
    thresholds = np.broadcast_to(thresholds, (c, thresholds.shape[1]))
    n_thr = thresholds.shape[1]
    acc_w = max(signed_width(low, high + 1), in_bits + 1)
    clipped = np.clip(np.ceil(thresholds), low, high + 1).astype(np.int64)
    rom = _rom(folder, f"{node.name}_thresholds.hex", clipped.reshape(c // pe, pe * n_thr), pe * n_thr, acc_w, True)
    params = {"C": c, "PE": pe, "IN_BITS": in_bits, "IN_SIGNED": int(in_signed), "ACC_W": acc_w, "N_THR": n_thr,
              "OUT_BITS": out_bits, "OUT_BIAS": op.get_nodeattr("outputBias"), "THRESH_FILE": rom}
    return Layer(node.name, "bnn_threshold", params, StreamFormat(pe, in_bits, in_signed, vectors * (c // pe)),
                 StreamFormat(pe, out_bits, out_signed, vectors * (c // pe)), [rom])


def _label_select(node, op) -> Layer:
    labels, pe = op.get_nodeattr("Labels"), op.get_nodeattr("PE")
    bits, signed = element(op.input_datatype())
    out_bits, _ = element(op.output_datatype())
    params = {"LABELS": labels, "PE": pe, "EB": bits, "SIGNED": int(signed), "OUT_BITS": out_bits}
    return Layer(node.name, "bnn_label_select", params, StreamFormat(pe, bits, signed, labels // pe),
                 StreamFormat(1, out_bits, False, 1))


def _rtl_gap(node, op) -> str:
    """What of a hardware op the Verilog library lacks ('' when it has everything the op uses)."""
    if node.op_type not in ("MVTU", "SlidingWindow", "StreamingMaxPool", "Thresholding", "LabelSelect"):
        return "has no Verilog module yet"
    if node.op_type == "MVTU" and op.get_nodeattr("padCorrection"):
        return "corrects zero padding per border position, which the Verilog MVTU does not do yet"
    if node.op_type == "Thresholding" and op.get_nodeattr("inputSigns"):
        return "thresholds negated channels (inputSigns), which the Verilog thresholds do not do yet"
    if node.op_type == "SlidingWindow" and any(op.get_nodeattr("Padding")):
        return f"pads its input by {list(op.get_nodeattr('Padding'))}, which the Verilog window does not do yet"
    return ""


def layers_of(model: ModelWrapper, folder: Path) -> list[Layer]:
    """The layers of a dataflow graph, in stream order, with their ROM images written into ``folder``."""
    ops = dict((node.name, (node, op)) for node, op in hw_ops(model))
    layers, previous = [], None
    for node in model.graph.node:
        if node.op_type == "Reshape":
            continue  # a reshape keeps the stream's element order, so it is only a rename
        node, op = ops[node.name]
        missing = _rtl_gap(node, op)
        if missing:
            raise UnsupportedGraphError(f"node {node.name} ({node.op_type}) {missing}; `bnnflow simulate` runs this "
                                        "graph bit-exactly")
        if node.op_type == "MVTU":
            layer = _mvtu(folder, model, node, op)
        elif node.op_type == "SlidingWindow":
            layer = _sliding_window(node, op)
        elif node.op_type == "StreamingMaxPool":
            layer = _maxpool(node, op)
        elif node.op_type == "Thresholding":
            layer = _thresholding(folder, model, node, op)
        elif node.op_type == "LabelSelect":
            layer = _label_select(node, op)
        else:
            raise UnsupportedGraphError(f"node {node.name} ({node.op_type}) has no RTL module")
        if previous is not None:
            a, b = previous.output, layer.input
            if (a.elem_bits, a.signed, a.elements) != (b.elem_bits, b.signed, b.elements):
                raise UnsupportedGraphError(
                    f"{previous.name} sends {a.elements} {a.elem_bits}-bit values per frame but {layer.name} takes "
                    f"{b.elements} of {b.elem_bits} bits; the dataflow graph is inconsistent, recompile it")
        layers.append(layer)
        previous = layer
    return layers


def _verilog_value(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else str(int(value))


def _instance(module: str, name: str, params: dict[str, Any], src: str, dst: str) -> str:
    lines = [f"    {module} #("]
    lines.append(",\n".join(f"        .{key}({_verilog_value(value)})" for key, value in params.items()))
    lines.append(f"    ) u_{name.lower()} (")
    lines.append("        .clk(clk), .rst(rst),")
    lines.append(f"        .in_data({src}_data), .in_valid({src}_valid), .in_ready({src}_ready),")
    lines.append(f"        .out_data({dst}_data), .out_valid({dst}_valid), .out_ready({dst}_ready));")
    return "\n".join(lines)


def _wires(name: str, width: int) -> str:
    return f"    wire [{width - 1}:0] {name}_data;\n    wire {name}_valid;\n    wire {name}_ready;"


def top_module(layers: list[Layer]) -> str:
    """The Verilog of ``bnnflow_accel``: the layers in a chain, with width converters where lanes differ."""
    first, last = layers[0].input, layers[-1].output
    body: list[str] = [_wires("s_in", first.width)]
    body.append("    assign s_in_data = in_data;\n    assign s_in_valid = in_valid;\n    assign in_ready = s_in_ready;")
    src = "s_in"
    previous: StreamFormat | None = None
    for layer in layers:
        if previous is not None and previous.lanes != layer.input.lanes:
            conv = f"s_{layer.name.lower()}_in"
            body.append(_wires(conv, layer.input.width))
            body.append(_instance("bnn_dwc", f"dwc_{layer.name}", {"IN_L": previous.lanes, "OUT_L": layer.input.lanes,
                                                                   "EB": layer.input.elem_bits}, src, conv))
            src = conv
        dst = f"s_{layer.name.lower()}"
        body.append(_wires(dst, layer.output.width))
        body.append(_instance(layer.module, layer.name, layer.params, src, dst))
        src, previous = dst, layer.output
    body.append(f"    assign out_data = {src}_data;\n    assign out_valid = {src}_valid;\n"
                f"    assign {src}_ready = out_ready;")
    header = (
        "// bnnflow_accel: generated by bnnflow from dataflow.onnx; one instance per hardware layer.\n"
        "`default_nettype none\n\n"
        f"module {ACCEL_TOP} (\n"
        "    input  wire clk,\n    input  wire rst,\n"
        f"    input  wire [{first.width - 1}:0] in_data,\n    input  wire in_valid,\n    output wire in_ready,\n"
        f"    output wire [{last.width - 1}:0] out_data,\n    output wire out_valid,\n    input  wire out_ready\n);\n"
    )
    return header + "\n\n".join(body) + "\nendmodule\n\n`default_nettype wire\n"


def system_module(design_in: StreamFormat, design_out: StreamFormat) -> str:
    """``bnnflow_system``: the UART bridge feeding the accelerator, for a board with a serial port."""
    return (
        "// bnnflow_system: generated by bnnflow; frames arrive on the UART and results leave on it.\n"
        "`default_nettype none\n\n"
        f"module {SYSTEM_TOP} #(\n    parameter integer CLKS_PER_BIT = 868\n) (\n"
        "    input  wire clk,\n    input  wire rst,\n    input  wire uart_rx,\n    output wire uart_tx,\n"
        "    output wire error\n);\n"
        f"    wire [{design_in.width - 1}:0] in_data;\n    wire in_valid;\n    wire in_ready;\n"
        f"    wire [{design_out.width - 1}:0] out_data;\n    wire out_valid;\n    wire out_ready;\n\n"
        f"    uart_bridge #(.IN_W({design_in.width}), .OUT_W({design_out.width}), .CLKS_PER_BIT(CLKS_PER_BIT)) u_uart (\n"
        "        .clk(clk), .rst(rst), .rx(uart_rx), .tx(uart_tx), .error(error),\n"
        "        .m_data(in_data), .m_valid(in_valid), .m_ready(in_ready),\n"
        "        .s_data(out_data), .s_valid(out_valid), .s_ready(out_ready));\n\n"
        f"    {ACCEL_TOP} u_accel (\n"
        "        .clk(clk), .rst(rst),\n"
        "        .in_data(in_data), .in_valid(in_valid), .in_ready(in_ready),\n"
        "        .out_data(out_data), .out_valid(out_valid), .out_ready(out_ready));\n"
        "endmodule\n\n`default_nettype wire\n"
    )


def generate_rtl(model: ModelWrapper, out_dir: Path) -> RtlDesign:
    """Write the Verilog of a folded dataflow graph into ``out_dir`` (replaced whole, never left half-written);
    a graph that breaks the ops' contract (``bnnflow.hw.check``) is refused before anything is written."""
    check_dataflow(model)
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        layers = layers_of(model, tmp)
        modules = {"bnn_fifo", "bnn_sum_tree", *(layer.module for layer in layers)}
        if "bnn_mvtu" in modules:
            modules.add("bnn_sum_stage")
        if any(a.output.lanes != b.input.lanes for a, b in zip(layers, layers[1:])):
            modules.add("bnn_dwc")
        library = sorted(f"{m}.v" for m in modules)
        for name in [*library, *UART_MODULES]:
            shutil.copyfile(library_file(name), tmp / name)
        (tmp / f"{ACCEL_TOP}.v").write_text(top_module(layers))
        (tmp / f"{SYSTEM_TOP}.v").write_text(system_module(layers[0].input, layers[-1].output))
        design = RtlDesign(out_dir, [*library, f"{ACCEL_TOP}.v"], layers[0].input, layers[-1].output,
                           model.get_metadata_prop("bnnflow.output_kind") or "accumulator", layers)
        interface = {
            "top": ACCEL_TOP,
            "system_top": SYSTEM_TOP,
            "sources": design.sources,
            "system_sources": [*design.sources, *UART_MODULES, f"{SYSTEM_TOP}.v"],
            "input": design.input.to_json(),
            "output": design.output.to_json(),
            "output_kind": design.output_kind,
            "layers": [{"name": layer.name, "module": layer.module, "params": layer.params,
                        "input": layer.input.to_json(), "output": layer.output.to_json()} for layer in layers],
        }
        (tmp / "interface.json").write_text(json.dumps(interface, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return design
