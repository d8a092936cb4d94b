"""FINN build of a bnnflow accelerator. Run it with a Python that has FINN, e.g. inside the bnnflow image:

    python build.py              # everything dataflow_build_config.json asks for (Vivado needed past estimates)
    python build.py --estimate   # FINN's analytical estimates only; no Vivado or Vitis HLS needed

The folder holds what FINN's ``build_dataflow`` directory holds (``model.onnx``, ``dataflow_build_config.json``)
plus the verification vectors bnnflow's simulator wrote (``input.npy``, ``expected_output.npy``) and
``bnnflow.json``. This script puts bnnflow's steps into FINN's default list (``build_steps``); each leaves a
graph it does not concern as it is:

- ``step_bnnflow_qonnx_to_finn`` replaces ``step_qonnx_to_finn``: FINN's step only converts a model that has
  "Quant", "Trunc" or "BinaryQuant" nodes, so a model whose quantizers are all BipolarQuant (Brevitas's TFC)
  would reach streamlining unconverted; this one converts any QONNX quantizer, drops omitted optional inputs, and
  appends TopK when the bnnflow accelerator ends in a label select.
- ``step_bnnflow_channel_pads`` and ``step_bnnflow_binary_pads`` (after ``step_tidy_up``): option-A shortcuts as
  1 x 1 strided convolutions with 0 / 1 weights, and a -1 border of a binary map as its convolution's padding.
- ``step_bnnflow_streamline_branches`` (before ``step_streamline``), ``step_bnnflow_prepare_hw`` (before
  ``step_convert_to_hw``) and ``step_bnnflow_convert_branches`` (after it): what a residual graph needs that
  FINN's default steps do not do (scales past forks and joins, layout transposes off the residual stream,
  AddStreams and DuplicateStreams).
- ``step_bnnflow_check_hw`` runs after ``step_convert_to_hw``: when FINN left nodes in software between its
  hardware layers (a pattern no FINN layer takes), it stops in one line naming them; FINN's own partitioning
  would stop on them with an assertion that names nothing.
- ``step_bnnflow_folding`` runs before ``step_apply_folding_config``: it matches FINN's hardware layers (their
  names and kinds as FINN's graph has them, along its edges) to bnnflow's layers, stops in one line when one of
  bnnflow's has no FINN layer, and writes ``output/folding_config.json``: bnnflow's PE / SIMD under FINN's
  names, and for the layers FINN adds around bnnflow's (the input quantizer, the float tail, which bnnflow
  leaves to the host) the folding FINN's SetFolding picks for bnnflow's slowest layer's cycles.

After a build that made the deployment package, it writes ``deploy/driver/bnnflow_input.npy`` and
``bnnflow_expected.npy``: the accelerator's own input and output for the verification inputs, computed by FINN's
executor, which ``bnnflow finn --check-on-board`` compares with what the board returns.

This file runs in FINN's environment, not bnnflow's: it imports only FINN, qonnx, onnx and numpy.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: FINN's folding attributes, read off SetFolding's choice for the layers bnnflow has none for
FOLDING_ATTRS = ("PE", "SIMD", "parallel_window")


class BnnflowError(Exception):
    """A network this FINN cannot build as bnnflow laid it out; bnnflow shows the message as its one line."""


def settings() -> dict:
    return json.loads((HERE / "bnnflow.json").read_text())


def layer_kind(op_type: str) -> str:
    """FINN's layer kind: the op type without the implementation style step_specialize_layers appended."""
    for style in ("_hls", "_rtl"):
        if op_type.endswith(style):
            return op_type[: -len(style)]
    return op_type


#: one FINN layer as match_layers takes it: name, op type, input tensors, output tensors
FinnNode = tuple[str, str, list[str], list[str]]


def match_layers(finn: list[FinnNode], layers: list[dict]) -> tuple[dict[str, dict], list[str]]:
    """FINN's layers (in graph order) matched to bnnflow's (bnnflow.json's, in graph order, each naming the
    bnnflow layers it reads): each bnnflow layer becomes one of its FINN sequences, a chain of FINN layers that
    reads what the layers before it became (at a fork, whichever of FINN's branches fits). Returns the attributes
    to give each matched FINN layer, and the FINN layers bnnflow has none for, which may only come before
    bnnflow's first layer or after its last (the input quantizer, the float tail). Anything else is a
    ``BnnflowError`` naming the first bnnflow layer FINN's graph has nothing for."""
    kinds = {name: layer_kind(op) for name, op, _, _ in finn}
    producer = {t: name for name, _, _, outs in finn for t in outs}
    before = {name: [producer[t] for t in ins if t in producer] for name, _, ins, _ in finn}
    after: dict[str, list[str]] = {name: [] for name in kinds}
    for name, sources in before.items():
        for source in sources:
            after[source].append(name)
    lead = []  # where bnnflow's first layer may start: FINN's first chain
    node = finn[0][0] if finn else None
    while node is not None and node not in lead:
        lead.append(node)
        node = after[node][0] if len(after[node]) == 1 and len(before[after[node][0]]) == 1 else None
    taken: dict[str, list[str]] = {}  # bnnflow layer -> its FINN layers
    tail: dict[str, str] = {}  # bnnflow layer -> the FINN layer its output leaves (its own last, or its input's)
    claimed: set[str] = set()
    furthest: list = [-1, "", []]  # the deepest bnnflow layer tried, after what, and the FINN layers there

    def chain(start: str, sequence: list[dict]) -> list[str] | None:
        names = [start]
        while len(names) < len(sequence) and len(after[names[-1]]) == 1 and len(before[after[names[-1]][0]]) == 1:
            names.append(after[names[-1]][0])
        if len(names) < len(sequence) or any(n in claimed for n in names):
            return None
        return names if [kinds[n] for n in names] == [s["op"] for s in sequence] else None

    def fits(index: int) -> bool:
        if index == len(layers):
            return not in_between()
        layer = layers[index]
        inputs = [tail[name] for name in layer.get("inputs", [layers[index - 1]["bnnflow"]] if index else [])]
        if inputs:
            starts = [n for n in kinds if n not in claimed and sorted(before[n]) == sorted(inputs)]
        else:
            starts = [n for n in lead if n not in claimed]
        if index > furthest[0]:
            furthest[:] = [index, inputs[0] if inputs else "", starts]
        for start in starts:  # the earliest FINN layer first (no FINN layer of bnnflow's left out before it)
            for sequence in filter(None, layer["finn"]):
                names = chain(start, sequence)
                if names is None:
                    continue
                taken[layer["bnnflow"]], tail[layer["bnnflow"]] = names, names[-1]
                claimed.update(names)
                if fits(index + 1):
                    return True
                claimed.difference_update(names)
        if [] in layer["finn"] and len(inputs) == 1:  # a layer FINN merges into the one before (last resort)
            taken[layer["bnnflow"]], tail[layer["bnnflow"]] = [], inputs[0]
            return fits(index + 1)
        return False

    def in_between() -> list[str]:
        """FINN layers bnnflow has none for between two of bnnflow's (some matched layer before and after)."""
        def reaches(node: str, edges: dict[str, list[str]]) -> bool:
            seen, todo = set(), list(edges[node])
            while todo:
                n = todo.pop()
                if n in claimed:
                    return True
                if n not in seen:
                    seen.add(n)
                    todo.extend(edges[n])
            return False
        return [n for n in kinds if n not in claimed and reaches(n, before) and reaches(n, after)]

    if fits(0):
        folding = {}
        for layer in layers:
            for name, node in zip(taken[layer["bnnflow"]], next(s for s in layer["finn"] if [
                    n["op"] for n in s] == [kinds[t] for t in taken[layer["bnnflow"]]])):
                folding[name] = {k: v for k, v in node.items() if k != "op"}
        return folding, [name for name, *_ in finn if name not in claimed]
    index, source, starts = furthest
    layer = layers[max(index, 0)]
    wanted = " or ".join(" + ".join(n["op"] for n in s) for s in layer["finn"] if s)
    where = f"after {source} (there: {', '.join(starts) or 'none'})" if source else "anywhere"
    raise BnnflowError(f"FINN's graph has no {wanted} for bnnflow's {layer['bnnflow']} ({layer['op']}) {where}; "
                       f"FINN's layers: {', '.join(name for name, *_ in finn) or 'none'}")


def step_bnnflow_qonnx_to_finn(model, cfg):
    """QONNX to FINN-ONNX for any QONNX quantizer (BipolarQuant included), without omitted optional inputs, then
    TopK if the accelerator has one."""
    from finn.builder.build_dataflow_config import VerificationStepType
    from finn.builder.build_dataflow_steps import verify_step
    from finn.transformation.qonnx.convert_qonnx_to_finn import ConvertQONNXtoFINN
    from finn.transformation.qonnx.quant_act_to_multithreshold import default_filter_function_generator
    from qonnx.transformation.insert_topk import InsertTopK
    from qonnx.util.cleanup import cleanup_model

    if {n.op_type for n in model.graph.node} & {"Quant", "BipolarQuant", "BinaryQuant", "Trunc"}:
        model = cleanup_model(model)
        model = model.transform(ConvertQONNXtoFINN(filter_function=default_filter_function_generator(
            max_multithreshold_bit_width=cfg.max_multithreshold_bit_width)))
    for node in model.graph.node:  # an omitted optional input ("" as the Pad's value) FINN's executor cannot take
        while node.input and not node.input[-1]:
            del node.input[-1]
    if settings()["label_select"]:
        model = model.transform(InsertTopK(k=1))
    if VerificationStepType.QONNX_TO_FINN_PYTHON in cfg._resolve_verification_steps():
        verify_step(model, cfg, "qonnx_to_finn_python", need_parent=False)
    return model


def selection_matrix(weights) -> bool:
    """True when every output of a 1 x 1 convolution or MatMul with these weights is one input or 0 (0 / 1 entries,
    at most one 1 per output): its outputs keep its input's data type."""
    import numpy as np

    w = np.asarray(weights)
    if w.ndim == 4:  # Conv: (out, in, 1, 1)
        w = w.reshape(w.shape[0], -1)
    elif w.ndim == 2:  # MatMul: (in, out)
        w = w.T
    else:
        return False
    return bool(np.isin(w, (0, 1)).all() and (w.sum(axis=1) <= 1).all())


def shortcut_conv(model, pad):
    """The option-A shortcut ending in channel zero-padding ``pad`` (NCHW: zero or more Slices taking every s-th
    row or column from 0, then a constant-0 Pad on the channel axis only) as (the first node, the stride, the
    1 x 1 weights) of the strided convolution with 0 / 1 weights that computes it, or None when it is not one."""
    import numpy as np

    pads = model.get_initializer(pad.input[1]) if len(pad.input) > 1 else None
    value = model.get_initializer(pad.input[2]) if len(pad.input) > 2 and pad.input[2] else None
    mode = next((a.s for a in pad.attribute if a.name == "mode"), b"constant")
    if pads is None or mode != b"constant" or (value is not None and np.any(value != 0)) or len(pads) != 8:
        return None
    if np.any(np.delete(pads, [1, 5]) != 0):
        return None  # rows or columns padded too: FINN's FMPadding's job, not this
    strides, first, node = {}, pad, model.find_producer(pad.input[0])
    while node is not None and node.op_type == "Slice" and not model.is_fork_node(node):
        params = [model.get_initializer(t) for t in node.input[1:]]  # starts, ends, axes, steps
        if len(params) != 4 or any(v is None for v in params) or len(params[2]) != 1 or int(params[2][0]) not in (2, 3):
            return None
        starts, ends, axes, steps = params
        shape = model.get_tensor_shape(node.input[0])
        if int(starts[0]) != 0 or int(ends[0]) < shape[int(axes[0])] or int(axes[0]) in strides:
            return None
        strides[int(axes[0])] = int(steps[0])
        first, node = node, model.find_producer(node.input[0])
    if len(set(strides.values())) > 1 or len(strides) == 1:
        return None  # one stride for rows and columns, as a convolution has here
    c_in = model.get_tensor_shape(first.input[0])[1]
    c_out = c_in + int(pads[1]) + int(pads[5])
    weights = np.zeros((c_out, c_in, 1, 1), dtype=np.float32)
    weights[np.arange(c_in) + int(pads[1]), np.arange(c_in)] = 1
    return first, max(strides.values(), default=1), weights


def step_bnnflow_channel_pads(model, cfg):
    """Option-A shortcuts (ResNet-20's: every other row and column, channels zero-extended) as 1 x 1 strided
    convolutions with 0 / 1 weights: FINN has no channel-padding layer, but streamlines such a convolution like any
    other and makes it a DownSampler + MVAU whose outputs are its inputs or 0 (bit-exact)."""
    from onnx import helper
    from qonnx.core.datatype import DataType
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    changed = False
    for pad in [n for n in model.graph.node if n.op_type == "Pad"]:
        found = shortcut_conv(model, pad)
        if found is None:
            continue
        first, stride, weights = found
        name = model.make_new_valueinfo_name()
        model.set_initializer(name, weights)
        model.set_tensor_datatype(name, DataType["BINARY"])
        conv = helper.make_node("Conv", [first.input[0], name], [pad.output[0]], kernel_shape=[1, 1],
                                strides=[stride, stride], pads=[0, 0, 0, 0], group=1, dilations=[1, 1])
        chain, node = [pad], pad
        while node is not first:
            node = model.find_producer(node.input[0])
            chain.append(node)
        model.graph.node.insert(list(model.graph.node).index(first), conv)
        for node in chain:
            model.graph.node.remove(node)
        changed = True
    if changed:
        for transformation in (InferShapes(), InferDataTypes(), GiveUniqueNodeNames(), GiveReadableTensorNames()):
            model = model.transform(transformation)
    return model


def step_bnnflow_binary_pads(model, cfg):
    """A binary convolution padded with -1 (``Pad(-1) -> Conv``, bnnflow's ``pad_value = -1``) as the convolution's
    own padding: FINN pads a binary map with bit 0, which is -1, once its XNOR conversion in step_streamline has made
    the map binary (its streamlined verification checks the result). A zero- or +1-padded binary map has no such
    form; bnnflow refuses it before FINN runs."""
    import numpy as np
    from onnx import helper
    from qonnx.core.datatype import DataType
    from qonnx.util.basic import get_by_name

    for pad in model.get_nodes_by_op_type("Pad"):
        conv = model.find_consumer(pad.output[0])
        pads = model.get_initializer(pad.input[1]) if len(pad.input) > 1 else None
        value = model.get_initializer(pad.input[2]) if len(pad.input) > 2 else None
        if (conv is None or conv.op_type != "Conv" or model.is_fork_node(pad) or pads is None or value is None
                or len(pads) != 8 or np.any(pads[[0, 1, 4, 5]] != 0) or float(value) != -1.0
                or model.get_tensor_datatype(pad.input[0]) != DataType["BIPOLAR"]
                or model.get_tensor_datatype(conv.input[1]) != DataType["BIPOLAR"]):
            continue
        own = get_by_name(conv.attribute, "pads")
        if own is not None and any(own.ints):
            continue
        if own is not None:
            conv.attribute.remove(own)
        conv.attribute.append(helper.make_attribute("pads", [int(p) for p in (pads[2], pads[3], pads[6], pads[7])]))
        conv.input[0] = pad.input[0]
        model.graph.node.remove(pad)
    return model


def has_branches(model) -> bool:
    """A graph with a fork, a join of two streams or a global average pool: what FINN's default steps leave alone."""
    return any(model.is_fork_node(n) or model.is_join_node(n) or n.op_type == "GlobalAveragePool"
               for n in model.graph.node)


def step_bnnflow_streamline_branches(model, cfg):
    """Before FINN's step_streamline on a residual graph: move every scale and bias past the joins and forks and
    into the thresholds (FINN's ResNet-50 example's loop), and the global average pool into FINN's GlobalAccPool
    (an integer sum) with its 1/N moved on like any other scale."""
    from finn.transformation.fpgadataflow.convert_to_hw_layers import InferGlobalAccPoolLayer
    from finn.transformation.streamline import Streamline
    from finn.transformation.streamline.absorb import AbsorbSignBiasIntoMultiThreshold
    from finn.transformation.streamline.reorder import MoveLinearPastFork
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames, SortGraph
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes

    try:
        from finn.transformation.streamline.reorder import MoveLinearPastEltwiseAdd

        joins = [MoveLinearPastEltwiseAdd()]
    except ImportError:  # FINN's dev branch has one transformation per op (since 2024)
        from finn.transformation.streamline.reorder import MoveAddPastJoinAdd, MoveMulPastJoinAdd

        joins = [MoveMulPastJoinAdd(), MoveAddPastJoinAdd()]
    if not has_branches(model):
        return model
    for _ in range(8):
        before = model.model.SerializeToString()
        # a signed quantizer's bias into its thresholds before Streamline moves it past a pool (FINN's step_streamline
        # starts so too); forks before joins: FINN's MoveLinearPastEltwiseAdd moves a Mul past a join even when the
        # Mul feeds a fork too
        for transformation in (AbsorbSignBiasIntoMultiThreshold(), Streamline(), MoveLinearPastFork(), *joins,
                               InferDataLayouts(), InferGlobalAccPoolLayer()):
            model = model.transform(transformation)
            model = model.transform(GiveUniqueNodeNames())
            model = model.transform(GiveReadableTensorNames())
            model = model.transform(InferDataTypes())
        model = model.transform(SortGraph())
        if model.model.SerializeToString() == before:
            break
    return model


def integer_thresholds(model) -> None:
    """Give integer thresholds on an integer input an integer type. FINN's RoundAndClipThresholds types only the
    thresholds it rounds (at the Dockerfile's commit), so thresholds that are integers already (a sign behind a
    residual join) stay FLOAT32, which step_convert_to_hw refuses."""
    import numpy as np
    from qonnx.core.datatype import DataType

    for node in model.get_nodes_by_op_type("MultiThreshold"):
        thresholds = model.get_initializer(node.input[1])
        if thresholds is None or model.get_tensor_datatype(node.input[1]).is_integer():
            continue
        if model.get_tensor_datatype(node.input[0]).is_integer() and np.all(thresholds == np.round(thresholds)):
            low, high = int(thresholds.min()), int(thresholds.max())
            types = [DataType.get_smallest_possible(v) for v in (low, high)]
            if low < 0:
                bits = max(t.bitwidth() + (0 if t.signed() else 1) for t in types)
                model.set_tensor_datatype(node.input[1], DataType[f"INT{bits}"])
            else:
                model.set_tensor_datatype(node.input[1], max(types, key=lambda t: t.bitwidth()))


def drop_pixel_transposes(model) -> bool:
    """Remove each NHWC-to-NCHW Transpose of a 1 x 1 map that only a Flatten or 2-D Reshape reads: on one pixel it
    moves no data, and FINN's RemoveCNVtoFCFlatten removes such a transpose only before an MVAU (a global pool's
    output goes to a threshold first)."""
    changed = False
    for node in model.get_nodes_by_op_type("Transpose"):
        shape = model.get_tensor_shape(node.input[0])
        consumers = model.find_consumers(node.output[0])
        if len(shape) == 4 and shape[1] == shape[2] == 1 and consumers and all(
                c.op_type in ("Flatten", "Reshape") and len(model.get_tensor_shape(c.output[0])) == 2 for c in consumers):
            for consumer in consumers:
                consumer.input[0] = node.input[0]
            model.graph.node.remove(node)
            changed = True
    return changed


def step_bnnflow_prepare_hw(model, cfg):
    """Before FINN's step_convert_to_hw on a residual graph: move the layout Transposes that lowering left on the
    residual stream (kept in NCHW between the convolutions) down through its thresholds, forks and joins until
    they cancel, so FINN's layers meet in NHWC with nothing in software between them; then type the thresholds."""
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes, AbsorbTransposeIntoMultiThreshold
    from finn.transformation.streamline.reorder import MoveTransposePastFork, MoveTransposePastJoinAdd
    from qonnx.transformation.general import GiveReadableTensorNames, GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes
    from qonnx.transformation.infer_shapes import InferShapes

    if has_branches(model):
        for _ in range(64):
            before = model.model.SerializeToString()
            for transformation in (AbsorbTransposeIntoMultiThreshold(), MoveTransposePastFork(),
                                   MoveTransposePastJoinAdd(), AbsorbConsecutiveTransposes()):
                model = model.transform(transformation)
            drop_pixel_transposes(model)
            for transformation in (InferShapes(), InferDataTypes(), InferDataLayouts(), GiveUniqueNodeNames(),
                                   GiveReadableTensorNames()):
                model = model.transform(transformation)
            if model.model.SerializeToString() == before:
                break
    integer_thresholds(model)
    return model


def step_bnnflow_convert_branches(model, cfg):
    """After FINN's step_convert_to_hw on a residual graph: joins to AddStreams and forks to DuplicateStreams
    (FINN's default step has neither at the Dockerfile's commit). An MVAU with 0 / 1 selection weights (an
    option-A shortcut) keeps its input's data type, as the other input of its join has."""
    from finn.transformation.fpgadataflow.convert_to_hw_layers import (
        InferAddStreamsLayer,
        InferDuplicateStreamsLayer,
        InferThresholdingLayer,
    )
    from finn.transformation.move_reshape import RemoveCNVtoFCFlatten
    from finn.transformation.streamline.absorb import AbsorbConsecutiveTransposes
    from qonnx.custom_op.registry import getCustomOp
    from qonnx.transformation.general import GiveUniqueNodeNames
    from qonnx.transformation.infer_data_layouts import InferDataLayouts
    from qonnx.transformation.infer_datatypes import InferDataTypes

    if not has_branches(model):
        return model
    for node in model.graph.node:
        if node.op_type.startswith("MVAU") and selection_matrix(model.get_initializer(node.input[1])):
            op = getCustomOp(node)
            if op.get_nodeattr("noActivation"):
                op.set_nodeattr("outputDataType", op.get_nodeattr("inputDataType"))
    model = model.transform(InferDataTypes())
    for transformation in (InferAddStreamsLayer(), InferThresholdingLayer(), InferDuplicateStreamsLayer(),
                           AbsorbConsecutiveTransposes(), RemoveCNVtoFCFlatten()):
        model = model.transform(transformation)
        model = model.transform(InferDataLayouts())
        model = model.transform(GiveUniqueNodeNames())
        model = model.transform(InferDataTypes())
    return model


def software_between(nodes: list[tuple[str, str, bool, list[str], list[str]]]) -> list[tuple[str, str]]:
    """The nodes (name, op type) FINN left in software between two of its hardware layers, given each node as
    (name, op type, is a hardware layer, inputs, outputs) in graph order (topologically sorted)."""
    producer = {t: i for i, (*_, outs) in enumerate(nodes) for t in outs}
    after_hw = [False] * len(nodes)  # a hardware layer feeds it (directly or not)
    for i, (_, _, _, ins, _) in enumerate(nodes):
        after_hw[i] = any(nodes[producer[t]][2] or after_hw[producer[t]] for t in ins if t in producer)
    consumers: dict[str, list[int]] = {}
    for i, (_, _, _, ins, _) in enumerate(nodes):
        for t in ins:
            consumers.setdefault(t, []).append(i)
    before_hw = [False] * len(nodes)  # it feeds a hardware layer
    for i in reversed(range(len(nodes))):
        before_hw[i] = any(nodes[j][2] or before_hw[j] for t in nodes[i][4] for j in consumers.get(t, []))
    return [(name, op) for (name, op, hw, _, _), a, b in zip(nodes, after_hw, before_hw) if not hw and a and b]


def step_bnnflow_check_hw(model, cfg):
    """Stop in one line when FINN's step_convert_to_hw left nodes in software between its hardware layers: FINN
    makes one dataflow partition of consecutive hardware layers, and on such a graph its partitioning stops with
    an assertion ("cycle-free graph violated") that names nothing."""
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = model.transform(GiveUniqueNodeNames())
    nodes = [(n.name, n.op_type, n.domain.startswith("finn.custom_op.fpgadataflow"), list(n.input), list(n.output))
             for n in model.graph.node]
    left = software_between(nodes)
    if left:
        kinds = sorted({op for _, op in left})
        raise BnnflowError(f"FINN has no hardware layer for {', '.join(kinds)} here: its step_convert_to_hw left "
                           f"{len(left)} node(s) in software between its hardware layers "
                           f"({', '.join(name for name, _ in left[:6])}{', ...' if len(left) > 6 else ''})")
    return model


def step_bnnflow_folding(model, cfg):
    """Match FINN's layers to bnnflow's and, unless FINN folds for target_fps, write bnnflow's folding under
    FINN's names as the folding config step_apply_folding_config applies."""
    from qonnx.transformation.general import GiveUniqueNodeNames

    model = model.transform(GiveUniqueNodeNames())  # the names step_apply_folding_config gives
    nodes = [(n.name, n.op_type, list(n.input), list(n.output)) for n in model.graph.node]
    folding, extra = match_layers(nodes, settings()["layers"])
    if cfg.target_fps:
        return model
    path = Path(cfg.output_dir) / "folding_config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {"Defaults": {}, **folding, **fold_extra(model, folding, extra)}
    path.write_text(json.dumps(config, indent=2) + "\n")
    cfg.folding_config_file = str(path)
    return model


def fold_extra(model, folding: dict[str, dict], extra: list[str]) -> dict[str, dict]:
    """The folding FINN's SetFolding gives the ``extra`` layers when every layer may take as many cycles as
    bnnflow's slowest, so FINN's additions do not slow bnnflow's accelerator down."""
    if not extra:
        return {}
    from finn.transformation.fpgadataflow.set_folding import SetFolding
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.custom_op.registry import getCustomOp

    trial = ModelWrapper(copy.deepcopy(model.model))
    for node in trial.graph.node:
        for attr, value in folding.get(node.name, {}).items():
            getCustomOp(node).set_nodeattr(attr, value)
    cycles = max(getCustomOp(n).get_exp_cycles() for n in trial.graph.node if n.name in folding)
    trial = trial.transform(SetFolding(target_cycles_per_frame=cycles + 1, two_pass_relaxation=False))
    chosen = {}
    for node in trial.graph.node:
        if node.name in extra:
            op = getCustomOp(node)
            chosen[node.name] = {a: op.get_nodeattr(a) for a in FOLDING_ATTRS if a in op.get_nodeattr_types()}
    return chosen


def build_steps(estimate_only: bool) -> list:
    """FINN's default steps with bnnflow's put in (see the module's docstring)."""
    from finn.builder.build_dataflow_config import default_build_dataflow_steps, estimate_only_dataflow_steps

    replace = {"step_qonnx_to_finn": [step_bnnflow_qonnx_to_finn]}
    before = {"step_streamline": [step_bnnflow_streamline_branches],
              "step_convert_to_hw": [step_bnnflow_prepare_hw],
              "step_apply_folding_config": [step_bnnflow_folding]}
    after = {"step_tidy_up": [step_bnnflow_channel_pads, step_bnnflow_binary_pads],
             "step_convert_to_hw": [step_bnnflow_convert_branches, step_bnnflow_check_hw]}
    steps: list = []
    for name in estimate_only_dataflow_steps if estimate_only else default_build_dataflow_steps:
        steps += before.get(name, []) + replace.get(name, [name]) + after.get(name, [])
    return steps


def write_board_vectors(cfg) -> None:
    """The accelerator's input and expected output for the verification inputs, next to FINN's PYNQ driver."""
    import numpy as np
    from finn.util.test import execute_parent
    from qonnx.core.modelwrapper import ModelWrapper

    out = Path(cfg.output_dir)
    driver = out / "deploy" / "driver"
    parent_path = out / "intermediate_models" / "dataflow_parent.onnx"
    child_path = out / "intermediate_models" / "step_minimize_bit_width.onnx"
    if not (driver.is_dir() and parent_path.is_file() and child_path.is_file()):
        return
    parent = ModelWrapper(str(parent_path))
    partition = parent.get_nodes_by_op_type("StreamingDataflowPartition")[0]
    ishape = parent.get_tensor_shape(parent.graph.input[0].name)
    inputs, outputs = [], []
    for x in np.load(HERE / "input.npy"):
        ctx = execute_parent(str(parent_path), str(child_path), x.reshape(ishape), return_full_ctx=True)
        inputs.append(ctx[partition.input[0]])
        outputs.append(ctx[partition.output[0]])
    np.save(driver / "bnnflow_input.npy", np.concatenate(inputs))
    np.save(driver / "bnnflow_expected.npy", np.concatenate(outputs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--estimate", action="store_true", help="FINN's estimate reports only (no Vivado)")
    args = parser.parse_args()
    try:
        from finn.builder.build_dataflow import build_dataflow_cfg
        from finn.builder.build_dataflow_config import DataflowBuildConfig, DataflowOutputType
    except ImportError as err:
        sys.exit(f"build.py: FINN is not importable here ({err}); run this inside the bnnflow image or a FINN "
                 "environment (FINN_ROOT set, FINN's src on the path)")
    os.chdir(HERE)  # the config's paths are relative to this folder, as in FINN's build_dataflow -d
    cfg = DataflowBuildConfig.from_json((HERE / "dataflow_build_config.json").read_text())
    if args.estimate:
        cfg.generate_outputs = [DataflowOutputType.ESTIMATE_REPORTS]
        cfg.verify_steps = [s for s in cfg.verify_steps or [] if str(getattr(s, "value", s)).endswith("_python")]
    cfg.steps = build_steps(args.estimate)
    status = build_dataflow_cfg(str(HERE / "model.onnx"), cfg)
    if status == 0 and DataflowOutputType.DEPLOYMENT_PACKAGE in cfg.generate_outputs:
        write_board_vectors(cfg)
    sys.exit(status)


if __name__ == "__main__":
    main()
