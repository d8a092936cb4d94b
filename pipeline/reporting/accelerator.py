"""Section: the accelerator as a diagram: dataflow.onnx's layers in stream order with their folding, shapes and
cycles per frame (``compile/estimates.json``), the streams and width converters between them
(``rtl/interface.json``), and the bottleneck marked."""

from __future__ import annotations

import math
from typing import Any

from bnnflow.pipeline.reporting import fmt
from bnnflow.pipeline.reporting.context import Context
from bnnflow.pipeline.reporting.markup import esc, note
from bnnflow.pipeline.reporting.runfiles import Unreadable

ID = "accelerator"
TITLE = "Accelerator"


def graph_layers(model: Any) -> list[dict[str, Any]]:
    """The hardware nodes of a dataflow graph, in stream order, with their attributes (reshapes are skipped)."""
    from onnx import helper

    layers = []
    for node in model.graph.node:
        if node.domain.startswith("bnnflow"):
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            layers.append({"name": node.name, "op": node.op_type,
                           **{k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}})
    return layers


def _dims(xs: Any) -> str:
    return "×".join(str(x) for x in xs) if isinstance(xs, (list, tuple)) else str(xs)


def shape_text(layer: dict[str, Any]) -> list[str]:
    """What the layer computes, in one or two short lines."""
    op = layer.get("op")
    if op == "MVTU":
        vectors = math.prod(layer.get("numInputVectors") or [1])
        lines = [f"{layer.get('MW')} → {layer.get('MH')}" + (f", {vectors:,} vectors" if vectors > 1 else "")]
        if layer.get("binaryXnorMode"):
            kind = "XNOR-popcount"
        else:
            kind = f"{str(layer.get('inputDataType', '')).lower()} × {str(layer.get('weightDataType', '')).lower()}"
        lines.append(kind + ("" if layer.get("noActivation") else " + thresholds"))
        return lines
    if op == "SlidingWindow":
        return [f"{layer.get('IFMChannels')} ch, {_dims(layer.get('IFMDim'))}",
                f"{_dims(layer.get('ConvKernelDim'))} window, stride {_dims(layer.get('Stride'))}"]
    if op == "StreamingMaxPool":
        return [f"{layer.get('NumChannels')} ch, {_dims(layer.get('ImgDim'))}", f"{_dims(layer.get('PoolDim'))} max-pool"]
    if op == "Thresholding":
        return [f"{layer.get('NumChannels')} ch thresholds"]
    if op == "LabelSelect":
        return [f"top-1 of {layer.get('Labels')}"]
    return []


def _stream(fmt_json: Any) -> list[str]:
    """``64 × 1 bit`` and ``2 beats``: a stream's lanes and element width, and its beats per frame (interface.json)."""
    if not isinstance(fmt_json, dict):
        return []
    lines = [f"{fmt_json.get('lanes')} × {fmt_json.get('elem_bits')}\u00a0bit"]
    if fmt.is_number(fmt_json.get("beats")):
        lines.append(f"{fmt_json['beats']:,} {'beat' if fmt_json['beats'] == 1 else 'beats'}")
    return lines


def _link(stream: list[str], converter: str) -> str:
    chip = f"<span class='dwc' title='width converter: {esc(converter)} lanes'>DWC {esc(converter)}</span>" \
        if converter else ""
    labels = "".join(f"<small>{esc(line)}</small>" for line in stream)
    return f"<div class='link'><span class='arrow'>→</span>{labels}{chip}</div>"


def _box(layer: dict[str, Any], estimate: dict[str, Any], slowest: float, bottleneck: str) -> str:
    name = str(layer.get("name"))
    folding = " · ".join(f"{k} {layer.get(k, estimate.get(k))}" for k in ("PE", "SIMD")
                         if k in layer or k in estimate)
    cycles = estimate.get("cycles")
    share = cycles / slowest if fmt.is_number(cycles) and slowest else 0
    resources = [f"{fmt.integer(estimate['luts'])} LUT" if fmt.is_number(estimate.get("luts")) else "",
                 f"{fmt.integer(estimate['ram_blocks'])} BRAM" if fmt.is_number(estimate.get("ram_blocks")) else ""]
    is_slowest = name == bottleneck
    lines = "".join(f"<div class='dims'>{esc(line)}</div>" for line in shape_text(layer))
    return (f"<div class='layer{' bottleneck' if is_slowest else ''}' data-layer='{esc(name)}'>"
            f"<div class='op'>{esc(layer.get('op', '?'))}<span class='name'>{esc(name)}</span></div>{lines}"
            f"<div class='fold'>{esc(folding)}</div>"
            f"<div class='cycles'><b>{fmt.integer(cycles)}</b> cycles/frame</div>"
            f"<div class='bar'><span style='width:{100 * share:.0f}%'></span></div>"
            f"<div class='res'>{' · '.join(r for r in resources if r) or fmt.NONE}</div>"
            + ("<div class='tag'>bottleneck</div>" if is_slowest else "") + "</div>")


def _lead(estimates: dict[str, Any], cosim: dict[str, Any] | None, layers: int) -> str:
    clock, ii = estimates.get("clock_mhz"), estimates.get("initiation_interval_cycles")
    latency = estimates.get("latency_cycles")
    text = (f"{layers} layers in one stream at {fmt.mhz(clock)}: a frame every <b>{fmt.integer(ii)} cycles</b> "
            f"(set by {esc(estimates.get('bottleneck', '?'))}), <b>{fmt.integer(estimates.get('frames_per_second'))}"
            f"\u00a0frames/s</b>; latency {fmt.integer(latency)} cycles")
    if fmt.is_number(estimates.get("latency_us")):
        text += f" ({estimates['latency_us']:.1f}\u00a0µs)"
    text += " through the empty pipeline (timing model)."
    if cosim and fmt.is_number(cosim.get("cycles_per_frame")):
        text += (f" Measured in cosimulation: {fmt.integer(cosim['cycles_per_frame'])} cycles per frame, latency "
                 f"{fmt.integer(cosim.get('latency_cycles'))} cycles.")
    return f"<p class='lead'>{text}</p>"


def render(ctx: Context) -> str:
    notice = ctx.stages.notice("compile", "dataflow.onnx and its estimates (compile/estimates.json)")
    estimates = ctx.files.json("compile/estimates.json")
    problems = []
    try:
        model = ctx.files.onnx("dataflow.onnx")
    except Unreadable as err:
        model, problems = None, [str(err)]
    if estimates is None and model is None:
        return notice or note("info", "The run has no dataflow.onnx.")
    estimates = estimates or {}
    per_layer = {str(e.get("name")): e for e in estimates.get("layers", []) if isinstance(e, dict)}
    layers = graph_layers(model) if model is not None else [dict(e) for e in per_layer.values()]
    try:
        interface = ctx.files.json("rtl/interface.json") or {}
    except Unreadable as err:
        interface, problems = {}, [*problems, str(err)]
    streams = {str(s.get("name")): s for s in interface.get("layers", []) if isinstance(s, dict)}
    cosim = None
    try:
        cosim = ctx.files.json("rtl/cosim.json")
    except Unreadable as err:
        problems.append(str(err))
    cycles = [e["cycles"] for e in per_layer.values() if fmt.is_number(e.get("cycles"))]
    slowest = max(cycles, default=0)
    bottleneck = str(estimates.get("bottleneck", ""))

    parts = ["<div class='io' title='the host sends the input stream'>in</div>"]
    previous: dict[str, Any] | None = None
    for layer in layers:
        name = str(layer.get("name"))
        stream = streams.get(name, {})
        converter = ""
        lanes_in, lanes_out = stream.get("input", {}).get("lanes"), (previous or {}).get("output", {}).get("lanes")
        if previous is not None and stream and lanes_out != lanes_in:
            converter = f"{lanes_out}→{lanes_in}"
        parts.append(_link(_stream(stream.get("input")), converter))
        parts.append(_box(layer, per_layer.get(name, {}), slowest, bottleneck))
        previous = stream or None
    kind = interface.get("output_kind")
    parts.append(_link(_stream(interface.get("output")), ""))
    what = "label" if kind == "label" else "scores"
    parts.append(f"<div class='io' title='the accelerator returns the class {what}'>out<small>{what}</small></div>")
    legend = ("<p class='muted small'>Boxes: op, name, what it computes, folding (PE output channels, SIMD input "
              "lanes per cycle), cycles per frame with a bar against the slowest layer, estimated LUTs and block RAMs."
              + (" Arrows: the stream between layers (lanes × element width, beats per frame); a width converter "
                 "(DWC) joins layers whose lanes differ." if interface else " Stream widths appear once the rtl stage "
                                                                      "has run.") + "</p>")
    notes = "".join(note("unreadable", esc(p)) for p in problems)
    lead = _lead(estimates, cosim, len(layers)) if estimates else ""
    return f"{notice}{lead}<div class='flow'>{''.join(parts)}</div>{legend}{notes}"
