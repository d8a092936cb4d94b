"""``bnnflow inspect``: what a QONNX file is and whether it compiles, without writing anything.

It reads the file as given (producer, IR version, opsets, domains, inputs and outputs), normalises it in memory
as ``bnnflow compile`` would (``qonnx_import``), lists each layer with its weight and input bit widths, and runs
the compiler's own passes in memory (streamlining and the dataflow conversion; with a board, folding and the
estimate too). A model the compiler refuses gets the compiler's own one-line refusal: the first node that stops
it and what would make it compile.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import get_by_name

from bnnflow.errors import BnnflowError, UnsupportedGraphError
from bnnflow.pipeline.qonnx_import import normalise_qonnx, read_onnx

LAYER_OPS = ("Conv", "MatMul", "Gemm")
#: ops that move values without arithmetic: a layer's input keeps the bit width of the quantizer before them
MOVES = ("MaxPool", "Flatten", "Reshape", "Transpose", "Pad", "Slice", "Identity", "Squeeze", "Unsqueeze")
#: layers listed on the screen; the rest are counted (``--json`` has them all)
SHOWN_LAYERS = 24


def inspect_file(path: Path, board: str | None = None) -> dict[str, Any]:
    """The facts ``bnnflow inspect`` shows, as a JSON-ready dict.

    Raises:
        InputError: the file is missing, not ONNX, or not valid ONNX even after the import's fixes.
        ConfigError: ``board`` is not a known board.
    """
    from bnnflow.hw.boards import get_board

    if board is not None:
        get_board(board)  # an unknown board is a usage error, before any work
    proto = read_onnx(path)
    opsets = {(o.domain or "ai.onnx"): o.version for o in proto.opset_import}
    domains = sorted({node.domain or "ai.onnx" for node in proto.graph.node})
    facts: dict[str, Any] = {
        "file": str(path),
        "producer": " ".join(p for p in (proto.producer_name, proto.producer_version) if p) or "unknown",
        "ir_version": proto.ir_version,
        "opsets": opsets,
        "domains": domains,
        "missing_opset_imports": [d for d in domains if d not in opsets],
        "nodes": len(proto.graph.node),
    }
    model, changes = normalise_qonnx(proto, str(path))
    facts["inputs"] = [_tensor(model, i.name) for i in model.graph.input]
    facts["outputs"] = [_tensor(model, o.name) for o in model.graph.output]
    facts["import_changes"] = changes
    facts["layers"] = [_layer(model, node) for node in model.graph.node if node.op_type in LAYER_OPS]
    facts.update(_compile_check(model, board))
    return facts


def _tensor(model: ModelWrapper, name: str) -> dict[str, Any]:
    return {"name": name, "shape": list(model.get_tensor_shape(name) or [])}


def _quantizer_bits(model: ModelWrapper, tensor: str) -> int | None:
    """The bit width of the quantizer that last set ``tensor``'s values, through data movement; None for float."""
    producer = model.find_producer(tensor)
    while producer is not None and producer.op_type in MOVES:
        producer = model.find_producer(producer.input[0])
    if producer is None:
        return None
    if producer.op_type == "BipolarQuant":
        return 1
    position = {"Quant": 3, "Trunc": 5}.get(producer.op_type)
    if position is not None and len(producer.input) > position:
        bits = model.get_initializer(producer.input[position])
        return int(bits.reshape(-1)[0]) if bits is not None and bits.size == 1 else None
    if producer.op_type == "MultiThreshold":
        thresholds = model.get_initializer(producer.input[1])
        return int(np.ceil(np.log2(thresholds.shape[-1] + 1))) if thresholds is not None else None
    return None


def _layer(model: ModelWrapper, node) -> dict[str, Any]:
    weights = model.get_tensor_shape(node.input[1]) or []
    if node.op_type == "Conv":
        size = f"{weights[1]} -> {weights[0]} channels, {'x'.join(map(str, weights[2:]))} kernel" if weights else "?"
    else:
        trans_b = node.op_type == "Gemm" and get_by_name(node.attribute, "transB") is not None and \
            get_by_name(node.attribute, "transB").i
        rows, cols = (weights[::-1] if trans_b else weights) if len(weights) == 2 else ("?", "?")
        size = f"{rows} -> {cols}"
    return {"name": node.name, "op": node.op_type, "size": size,
            "weight_bits": _quantizer_bits(model, node.input[1]), "input_bits": _quantizer_bits(model, node.input[0])}


def _compile_check(model: ModelWrapper, board: str | None) -> dict[str, Any]:
    """The compiler's passes in memory: whether the model compiles, and with a board, its estimate there."""
    from bnnflow.hw.convert import to_dataflow
    from bnnflow.pipeline.compile.stage import compile_model
    from bnnflow.pipeline.compile.streamline import streamline_model
    from bnnflow.pipeline.config import CompileConfig

    try:
        if board is None:
            dataflow = to_dataflow(streamline_model(model))
        else:
            _, dataflow, estimates = compile_model(model, CompileConfig(board=board))
    except UnsupportedGraphError as err:
        return {"compiles": False, "stops_at": str(err)}
    except BnnflowError as err:  # it compiles, but no folding fits the board
        return {"compiles": True, "hardware_layers": None, "estimate": {"board": board, "fits": False,
                                                                        "problem": str(err)}}
    ops = [node.op_type for node in dataflow.graph.node if node.domain == "bnnflow.hw"]
    result: dict[str, Any] = {"compiles": True, "hardware_layers": len(ops),
                              "hardware_ops": {op: ops.count(op) for op in dict.fromkeys(ops)}}
    if board is not None:
        result["estimate"] = {"board": board, "fits": estimates["board"]["fits"],
                              "frames_per_second": round(estimates["frames_per_second"], 1),
                              "clock_mhz": estimates["clock_mhz"], "luts": estimates["luts"],
                              "board_luts": estimates["board"]["luts"], "ram_blocks": estimates["ram_blocks"],
                              "board_ram_blocks": estimates["board"]["ram_blocks"],
                              "bottleneck": estimates["bottleneck"]}
        if estimates["folding"].get("problem"):
            result["estimate"]["problem"] = estimates["folding"]["problem"]
    return result


def _bits(value: int | None) -> str:
    return "float" if value is None else f"{value} bit"


def format_facts(facts: dict[str, Any]) -> str:
    """The one-screen text ``bnnflow inspect`` prints."""
    opsets = ", ".join(f"{domain} {version}" for domain, version in facts["opsets"].items())
    lines = [f"{facts['file']}",
             f"  made by     {facts['producer']}; IR version {facts['ir_version']}; {facts['nodes']} nodes",
             f"  opsets      {opsets}" + (f"; no import for {', '.join(facts['missing_opset_imports'])}"
                                          if facts["missing_opset_imports"] else ""),
             f"  domains     {', '.join(facts['domains'])}"]
    for kind in ("inputs", "outputs"):
        for tensor in facts[kind]:
            lines.append(f"  {kind[:-1]:<11} {tensor['name']} {tensor['shape']}")
    if facts["import_changes"]:
        lines.append(f"  import      {len(facts['import_changes'])} fixes (`bnnflow compile` makes them too):")
        lines += [f"                {change}" for change in facts["import_changes"]]
    else:
        lines.append("  import      nothing to change")
    layers = facts["layers"]
    lines.append(f"  layers      {len(layers)}")
    width = max([len(layer["name"]) for layer in layers[:SHOWN_LAYERS]] + [4])
    for layer in layers[:SHOWN_LAYERS]:
        lines.append(f"    {layer['name']:<{width}}  {layer['op']:<6}  {layer['size']:<30} weights "
                     f"{_bits(layer['weight_bits']):<6} inputs {_bits(layer['input_bits'])}")
    if len(layers) > SHOWN_LAYERS:
        lines.append(f"    ... {len(layers) - SHOWN_LAYERS} more (--json lists them all)")
    if not facts["compiles"]:
        lines.append("  compiles    no")
        lines.append(f"  stops at    {facts['stops_at']}")
        return "\n".join(lines)
    if facts.get("hardware_layers") is not None:
        ops = ", ".join(f"{count} {op}" for op, count in facts["hardware_ops"].items())
        lines.append(f"  compiles    yes: {facts['hardware_layers']} hardware units ({ops})")
    else:
        lines.append("  compiles    yes")
    estimate = facts.get("estimate")
    if estimate is not None and "problem" in estimate:
        lines.append(f"  {estimate['board']:<11} does not fit: {estimate['problem']}")
    elif estimate is not None:
        lines.append(f"  {estimate['board']:<11} {estimate['frames_per_second']:,.0f} frames/s at "
                     f"{estimate['clock_mhz']:g} MHz, {estimate['luts']:,} of {estimate['board_luts']:,} LUTs, "
                     f"{estimate['ram_blocks']} of {estimate['board_ram_blocks']} block RAMs, bottleneck "
                     f"{estimate['bottleneck']}" + ("" if estimate["fits"] else " (does not fit)"))
    else:
        lines.append("              (--board B adds the folding estimate for a board)")
    return "\n".join(lines)
