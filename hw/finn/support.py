"""What FINN can build of a run, checked before FINN runs: its QONNX conversion's rule for unsigned quantizers,
and the FINN layers each bnnflow layer becomes.

FINN names its layers only when it builds (``<op>_<impl>_<i>`` after ``step_specialize_layers``), and the names
change between FINN commits (FINN's dev branch turned ``StreamingMaxPool`` into ``ConvolutionInputGenerator`` +
``Pool`` at 8637b91f1), so bnnflow does not predict them: ``bnnflow.json`` lists, per bnnflow layer, the kinds of
FINN layer it may become (a few alternatives, one per FINN generation) with the folding to give them, and
``build.py`` matches them against FINN's own graph, following its forks and joins. A layer FINN has nothing for
is refused here, in one line naming what FINN lacks (``finn_lacks``), before anything is computed: FINN pads a
binary map with bit 0, a -1, and has no correction for the zero padding the papers train with, nor a +1 border.
"""

from __future__ import annotations

from typing import Any

from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.util.basic import get_by_name

from bnnflow.errors import UnsupportedGraphError
from bnnflow.hw.check import check_dataflow
from bnnflow.hw.ops.base import DOMAIN
from bnnflow.nodes import node_ref

#: one FINN layer: its kind (op type without ``_hls``/``_rtl``) and {FINN folding attribute: bnnflow attribute}
FinnLayer = tuple[str, dict[str, str]]

#: bnnflow op -> the FINN layer sequences it becomes after FINN's conversion and specialisation (alternatives)
FINN_LAYERS: dict[str, tuple[tuple[FinnLayer, ...], ...]] = {
    "MVTU": ((("MVAU", {"PE": "PE", "SIMD": "SIMD"}),),),
    "SlidingWindow": (
        (("ConvolutionInputGenerator", {"SIMD": "SIMD"}),),
        (("FMPadding", {"SIMD": "SIMD"}), ("ConvolutionInputGenerator", {"SIMD": "SIMD"})),  # a padded window
        (("DownSampler", {"SIMD": "SIMD"}),),  # a strided 1 x 1 window on FINN's main branch
    ),
    "StreamingMaxPool": (
        (("StreamingMaxPool", {"PE": "PE"}),),  # FINN's main branch
        (("ConvolutionInputGenerator", {"SIMD": "PE"}), ("Pool", {"PE": "PE"})),  # dev since 8637b91f1
    ),
    "Thresholding": ((("Thresholding", {"PE": "PE"}),),),
    "LabelSelect": ((("LabelSelect", {"PE": "PE"}),),),
    "DuplicateStreams": ((("DuplicateStreams", {"PE": "PE"}),),),
    "AddStreams": (
        (("AddStreams", {"PE": "PE"}),),  # FINN's main branch
        (("ElementwiseAdd", {"PE": "PE"}),),  # dev: any elementwise Add
    ),
    "SumPool": ((("GlobalAccPool", {"PE": "PE"}),),),
    # an option-A shortcut: bnnflow subsamples rows and columns in two Downsamples, FINN in one DownSampler; build.py
    # turns the channel zero-padding into a 1 x 1 convolution with 0 / 1 weights, which FINN makes an MVAU
    "Downsample": (
        (("DownSampler", {"SIMD": "PE"}),),  # FINN's main branch
        (("ConvolutionInputGenerator", {"SIMD": "PE"}),),  # dev: a 1 x 1 window with a stride
        (),  # the second axis: FINN's one layer subsamples both
    ),
    "ChannelPad": ((("MVAU", {"PE": "PE", "SIMD": "NumChannels"}),),),
}

#: the producers FINN takes an unsigned activation Quant after (its QuantReluHandler's valid predecessors)
RELU_OPS = ("Relu", "Selu")


def finn_layers(dataflow: ModelWrapper, folding: bool) -> list[dict[str, Any]]:
    """bnnflow's layers in order, each with the FINN layer sequences it may become (and, with ``folding``, the
    PE / SIMD to give them), as bnnflow.json lists them for build.py; a graph that breaks the ops' contract
    (``bnnflow.hw.check``) or holds an op FINN has no layer for is refused in one line."""
    check_dataflow(dataflow)
    for node in dataflow.graph.node:
        lack = finn_lacks(node) if node.domain == DOMAIN else None
        if lack:
            raise UnsupportedGraphError(f"FINN has no layer for node {node_ref(dataflow, node)}: FINN lacks {lack}, "
                                        "so FINN cannot build this network; export the model with "
                                        "model.args.pad_value = -1 (a -1 border, which FINN pads exactly) and retrain")
    layers = []
    for node in dataflow.graph.node:
        if node.domain != DOMAIN:
            continue  # reshapes between layers: FINN has no layer for them either
        if node.op_type not in FINN_LAYERS:
            raise UnsupportedGraphError(f"FINN has no layer for node {node_ref(dataflow, node)}, so FINN cannot "
                                        f"build this network (FINN layers bnnflow maps to: "
                                        f"{', '.join(sorted(FINN_LAYERS))})")
        op = getCustomOp(node)
        alternatives = [[{"op": kind, **({attr: int(op.get_nodeattr(ours)) for attr, ours in attrs.items()}
                                         if folding else {})} for kind, attrs in sequence]
                        for sequence in FINN_LAYERS[node.op_type]]
        layers.append({"bnnflow": node.name, "op": node.op_type, "inputs": layer_inputs(dataflow, node),
                       "finn": alternatives})
    return layers


def finn_lacks(node) -> str | None:
    """What FINN lacks to build this bnnflow layer exactly, or None. FINN's
    FMPadding pads with 0, which on a binary map is bit 0, a -1: exact for a -1 border (``pad_value = -1``), not
    for a +1 border or for zero padding, whose per-position correction (bnnflow's ``padCorrection``) FINN has no
    layer for."""
    op = getCustomOp(node)
    if node.op_type == "MVTU" and op.get_nodeattr("padCorrection"):
        return "a zero-padding correction for binary maps (FINN pads them with -1)"
    if node.op_type == "SlidingWindow" and any(op.get_nodeattr("Padding")) and op.get_nodeattr("PadValue") != 0:
        return f"padding with {op.get_nodeattr('PadValue')} (its FMPadding pads with 0)"
    return None


def layer_inputs(dataflow: ModelWrapper, node) -> list[str]:
    """The bnnflow layers ``node`` reads, through any reshape between them (none for the first layer)."""
    found, todo = [], list(node.input)
    while todo:
        producer = dataflow.find_producer(todo.pop(0))
        if producer is None:
            continue
        if producer.domain == DOMAIN:
            found.append(producer.name)
        else:
            todo.extend(t for t in producer.input if dataflow.get_initializer(t) is None)
    return found


def check_quantizers(model: ModelWrapper) -> None:
    """Refuse an unsigned activation Quant that does not follow a ReLU: FINN's QONNX conversion takes it as an
    identity activation and stops ("FINN only supports signed Quant nodes for identity activations")."""
    for node in model.graph.node:
        if node.op_type != "Quant" or model.get_initializer(node.input[0]) is not None:
            continue  # weight quantizers are folded into constants, signed or not
        signed = get_by_name(node.attribute, "signed")
        producer = model.find_producer(node.input[0])
        if (signed is None or signed.i) or (producer is not None and producer.op_type in RELU_OPS):
            continue
        raise UnsupportedGraphError(f"quantizer {node_ref(model, node)} is unsigned and follows "
                                    f"{producer.op_type if producer else 'the graph input'}, not a ReLU, which "
                                    "FINN's QONNX conversion refuses (it takes unsigned quantizers only as ReLU "
                                    "activations); re-export the run with `bnnflow export RUN` (bnnflow's models "
                                    "quantize their input behind a ReLU)")
