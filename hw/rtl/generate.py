"""The Verilog generator: ``dataflow.onnx`` -> a folder of Verilog, ROM images and ``interface.json``.

Each hardware op becomes one instance of a parameterised library module (``hw/rtl/verilog/bnn_*.v``, built by
``bnnflow.hw.rtl.layers``): its folding and shape are module parameters, its weights and thresholds ROM images.
The layers are joined by valid/ready streams along the graph's edges, forks and joins included; where a
producer's lanes differ from its consumer's a width converter (``bnn_dwc``) sits between them, and a join's
inputs get the FIFOs ``bnnflow.hw.rtl.fifos`` sizes. The stitched top module is ``bnnflow_accel``;
``bnnflow_system`` puts the UART bridge in front of it for a board.

FIFO sizing rule along a chain: every layer ends in a small output FIFO (4 to 16 words) and issues work only
while that FIFO has room for everything in its own pipeline, so back-pressure never stalls a pipeline mid-way.
No deeper FIFOs are needed between layers because the layers that reuse an input (the MVTU over its NF passes,
the sliding window over overlapping patches) hold it in buffers of their own, so the producer before them keeps
streaming while they reuse it. Joins are the exception, with their own rule (``bnnflow.hw.rtl.fifos``). The
cosimulation measures the resulting cycles per frame against the timing model (``bnnflow.hw.estimates.timing``).
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from qonnx.core.modelwrapper import ModelWrapper

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.ops.base import bank_depth
from bnnflow.hw.rtl.fifos import join_fifo_depths
from bnnflow.hw.rtl.layers import Layer, layers_of, stream_of
from bnnflow.hw.rtl.stream import StreamFormat

ACCEL_TOP = "bnnflow_accel"
SYSTEM_TOP = "bnnflow_system"
UART_MODULES = ("uart_rx.v", "uart_tx.v", "uart_bridge.v")


def library_file(name: str) -> Path:
    """A file of the Verilog library shipped with the package."""
    return Path(str(resources.files("bnnflow.hw.rtl") / "verilog" / name))


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


@dataclass
class Edge:
    """A stream from a producer's port to a consumer's: what it carries, and what sits on it."""

    tensor: str
    source: StreamFormat  #: as the producer writes it
    target: StreamFormat  #: as the consumer reads it
    fifo_depth: int = 0  #: beats of the join FIFO before the consumer (0: none)


def fifo_bank(edge: Edge) -> int:
    """Words per bank of a join FIFO's RAM (its ``BANK``)."""
    return bank_depth(edge.target.width, max(2, edge.fifo_depth - 2))


def _verilog_value(value: Any) -> str:
    """A parameter's literal: a string, an integer, or above 32 bits a 64-bit hex literal (SEARCH_BANKS)."""
    if isinstance(value, str):
        return f'"{value}"'
    return str(int(value)) if int(value) < 2**31 else f"64'h{int(value):x}"


def _wire(tensor: str) -> str:
    return "s_" + re.sub(r"[^0-9a-zA-Z_]", "_", tensor).lower()


def _connect(port: str, wires: list[str]) -> str:
    """A port's three signals bound to one stream, or (a fork's packed ``out``) to several, lane 0 lowest."""
    if len(wires) == 1:
        w = wires[0]
        return f".{port}_data({w}_data), .{port}_valid({w}_valid), .{port}_ready({w}_ready)"
    cat = lambda suffix: "{" + ", ".join(f"{w}_{suffix}" for w in reversed(wires)) + "}"  # noqa: E731
    return f".{port}_data({cat('data')}), .{port}_valid({cat('valid')}), .{port}_ready({cat('ready')})"


def _instance(module: str, name: str, params: dict[str, Any], ports: list[tuple[str, list[str]]]) -> str:
    lines = [f"    {module} #("]
    lines.append(",\n".join(f"        .{key}({_verilog_value(value)})" for key, value in params.items()))
    lines.append(f"    ) u_{name.lower()} (")
    lines.append("        .clk(clk), .rst(rst),")
    lines.append(",\n".join(f"        {_connect(port, wires)}" for port, wires in ports) + ");")
    return "\n".join(lines)


def _wires(name: str, width: int) -> str:
    return f"    wire [{width - 1}:0] {name}_data;\n    wire {name}_valid;\n    wire {name}_ready;"


def edges_of(model: ModelWrapper, layers: list[Layer]) -> dict[tuple[str, int], Edge]:
    """Every layer input port's stream, keyed (layer, port index)."""
    produced: dict[str, StreamFormat] = {model.graph.input[0].name: layers[0].input}
    for layer in layers:
        produced.update((name, layer.output) for name in layer.outputs)
    edges = {}
    for layer in layers:
        for port, (tensor, target) in enumerate(zip(layer.inputs, layer.input_formats)):
            tensor = stream_of(model, tensor)
            source = produced[tensor]
            if (source.elem_bits, source.signed, source.elements) != (target.elem_bits, target.signed, target.elements):
                raise UnsupportedGraphError(
                    f"{tensor} carries {source.elements} {source.elem_bits}-bit values per frame but {layer.name} takes "
                    f"{target.elements} of {target.elem_bits} bits; the dataflow graph is inconsistent, recompile it")
            edges[(layer.name, port)] = Edge(tensor, source, target)
    for key, depth in join_fifo_depths(model, layers).items():
        edges[key].fifo_depth = depth
    return edges


def top_module(layers: list[Layer], edges: dict[tuple[str, int], Edge], input_tensor: str, output_tensor: str) -> str:
    """The Verilog of ``bnnflow_accel``: the layers along the graph's streams, with width converters where lanes
    differ and FIFOs before joins."""
    first = layers[0].input
    last = next(layer.output for layer in layers if output_tensor in layer.outputs)  # a stream_of tensor
    body: list[str] = [_wires(_wire(input_tensor), first.width),
                       f"    assign {_wire(input_tensor)}_data = in_data;\n    assign {_wire(input_tensor)}_valid = "
                       f"in_valid;\n    assign in_ready = {_wire(input_tensor)}_ready;"]
    for layer in layers:
        ports = []
        for port, target in enumerate(layer.input_formats):
            edge = edges[(layer.name, port)]
            src = _wire(edge.tensor)
            tag = f"{layer.name.lower()}_in{port}"
            if edge.source.lanes != target.lanes:
                conv = f"s_{tag}_dwc"
                body.append(_wires(conv, target.width))
                body.append(_instance("bnn_dwc", f"dwc_{tag}", {"IN_L": edge.source.lanes, "OUT_L": target.lanes,
                                                                "EB": target.elem_bits}, [("in", [src]), ("out", [conv])]))
                src = conv
            if edge.fifo_depth:
                fifo = f"s_{tag}_fifo"
                body.append(_wires(fifo, target.width))
                params = {"WIDTH": target.width, "DEPTH": edge.fifo_depth, "BANK": fifo_bank(edge)}
                body.append(_instance("bnn_stream_fifo", f"fifo_{tag}", params,
                                      [("in", [src]), ("out", [fifo])]))
                src = fifo
            ports.append(("in" if port == 0 else f"in{port + 1}", [src]))
        outs = [_wire(name) for name in layer.outputs]
        body.extend(_wires(w, layer.output.width) for w in outs)
        body.append(_instance(layer.module, layer.name, layer.params, [*ports, ("out", outs)]))
    out = _wire(output_tensor)
    body.append(f"    assign out_data = {out}_data;\n    assign out_valid = {out}_valid;\n"
                f"    assign {out}_ready = out_ready;")
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
        edges = edges_of(model, layers)
        graph_in, graph_out = model.graph.input[0].name, stream_of(model, model.graph.output[0].name)
        last = next(layer for layer in layers if graph_out in layer.outputs)
        modules = {"bnn_fifo", "bnn_sum_tree", *(layer.module for layer in layers)}
        if "bnn_mvtu" in modules:
            modules.add("bnn_sum_stage")
        if any(layer.params.get("SEARCH") for layer in layers):
            modules.add("bnn_thr_search")
        if any(layer.params.get("N_THR") for layer in layers):
            modules.add("bnn_thr_count")
        if any(edge.source.lanes != edge.target.lanes for edge in edges.values()):
            modules.add("bnn_dwc")
        if any(edge.fifo_depth for edge in edges.values()):
            modules.add("bnn_stream_fifo")
        library = sorted(f"{m}.v" for m in modules)
        for name in [*library, *UART_MODULES]:
            shutil.copyfile(library_file(name), tmp / name)
        (tmp / f"{ACCEL_TOP}.v").write_text(top_module(layers, edges, graph_in, graph_out))
        (tmp / f"{SYSTEM_TOP}.v").write_text(system_module(layers[0].input, last.output))
        design = RtlDesign(out_dir, [*library, f"{ACCEL_TOP}.v"], layers[0].input, last.output,
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
                        "inputs": layer.inputs, "outputs": layer.outputs,
                        "input": layer.input.to_json(), "output": layer.output.to_json(),
                        "join_fifos": [{"port": port, "width": edge.target.width, "depth": edge.fifo_depth}
                                       for port in range(len(layer.inputs))
                                       if (edge := edges[(layer.name, port)]).fifo_depth]} for layer in layers],
        }
        (tmp / "interface.json").write_text(json.dumps(interface, indent=2) + "\n")
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return design
