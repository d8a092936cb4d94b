"""What FINN can build of a run, checked before FINN runs: its QONNX conversion's rule for unsigned quantizers,
and the FINN layers each bnnflow layer becomes.

FINN names its layers only when it builds (``<op>_<impl>_<i>`` after ``step_specialize_layers``), and the names
change between FINN commits (FINN's dev branch turned ``StreamingMaxPool`` into ``ConvolutionInputGenerator`` +
``Pool`` at 8637b91f1), so bnnflow does not predict them: ``bnnflow.json`` lists, per bnnflow layer, the kinds of
FINN layer it may become (a few alternatives, one per FINN generation) with the folding to give them, and
``build.py`` matches them against FINN's own graph. A bnnflow op with no FINN kind at all is refused here, in one
line naming the FINN layer it would need when FINN has none (``FINN_LACKS``: the channel zero-padding of ResNet-20's
option-A shortcuts) before any other (the forks, joins and pools of a residual network, which FINN's default build
steps leave in software).
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
    "SlidingWindow": ((("ConvolutionInputGenerator", {"SIMD": "SIMD"}),),),
    "StreamingMaxPool": (
        (("StreamingMaxPool", {"PE": "PE"}),),  # FINN's main branch
        (("ConvolutionInputGenerator", {"SIMD": "PE"}), ("Pool", {"PE": "PE"})),  # dev since 8637b91f1
    ),
    "Thresholding": ((("Thresholding", {"PE": "PE"}),),),
    "LabelSelect": ((("LabelSelect", {"PE": "PE"}),),),
}

#: bnnflow ops FINN has no layer for at all, at its main (39f0c9a6b) and dev (73ba5ed64) branches alike: the FINN
#: layer a build would need, as the refusal names it
FINN_LACKS: dict[str, str] = {
    # option-A shortcuts (ResNet-20's): FINN's FMPadding pads rows and columns only, its Concat joins streams, not
    # constants, and none of its transformations converts a Pad on the channel axis
    "ChannelPad": "a channel zero-padding layer (FMPadding pads rows and columns only)",
}

#: the producers FINN takes an unsigned activation Quant after (its QuantReluHandler's valid predecessors)
RELU_OPS = ("Relu", "Selu")


def finn_layers(dataflow: ModelWrapper, folding: bool) -> list[dict[str, Any]]:
    """bnnflow's layers in order, each with the FINN layer sequences it may become (and, with ``folding``, the
    PE / SIMD to give them), as bnnflow.json lists them for build.py; a graph that breaks the ops' contract
    (``bnnflow.hw.check``) or holds an op FINN has no layer for is refused in one line."""
    check_dataflow(dataflow)
    lacking = [node for node in dataflow.graph.node if node.domain == DOMAIN and node.op_type in FINN_LACKS]
    if lacking:
        node = lacking[0]
        raise UnsupportedGraphError(f"FINN has no layer for node {node_ref(dataflow, node)}: FINN lacks "
                                    f"{FINN_LACKS[node.op_type]}, so FINN cannot build this network")
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
        layers.append({"bnnflow": node.name, "op": node.op_type, "finn": alternatives})
    return layers


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
