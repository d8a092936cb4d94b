"""Importing a QONNX file made elsewhere: one normal form for what other tools write, before the strict check.

bnnflow's own exports are already in that form; files from the qonnx model zoo, older Brevitas releases, qonnx's
converters and FINN's examples spell the same graphs in other ways. ``normalise_qonnx`` rewrites each such
spelling into the one the compiler reads, with qonnx's and onnx's own tools where they exist, and returns what it
changed (a run records it in summary.json):

- custom ops in a legacy domain (``onnx.brevitas``, ``finn``, ``finn.custom_op.general``) move to qonnx's
  ``qonnx.custom_op.general``, and every custom domain a node uses gets its opset import (old exports have none);
- a default opset below 13 (the zoo's files are opset 9) is raised to 13 with onnx's version converter, since the
  compiler writes opset-13 forms (``ReduceSum`` axes as an input) into the same graph;
- initializers also listed as graph inputs (IR version < 4) leave the inputs;
- ``BinaryQuant`` (the name FINN's builder looks for) and a signed 1-bit ``Quant`` without a zero point, which
  qonnx executes as ``x >= 0 ? +1 : -1`` (``int_quant``'s 1-bit case), become ``BipolarQuant``;
- the dynamo exporter's forms: a ``Conv`` without ``kernel_shape`` gets it from its weights, a bias-less ``Gemm``
  becomes ``MatMul`` (with a ``Transpose`` of its weights for ``transB``, the TorchScript exporter's form);
- a quantizer of a constant bias (QKeras's form) is folded into its values, with qonnx's ``FoldConstantsFiltered``;
- a channels-last graph (qonnx's ``ConvertToChannelsLastAndClean``) goes back to channels first
  (``channels_first.RevertChannelsLast``);
- then qonnx's ``cleanup_model`` (shape inference, constant folding, readable names) and onnx's strict checker.

A file that is still not valid ONNX after all that is refused in one line naming the checker's first complaint.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from google.protobuf.message import DecodeError
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.util.basic import get_by_name

from bnnflow.errors import InputError
from bnnflow.pipeline.compile.emitter import QONNX_DOMAIN
from bnnflow.pipeline.onnx_files import require_file

LEGACY_DOMAINS = ("onnx.brevitas", "finn", "finn.custom_op.general")
CHANNELS_LAST_DOMAIN = "qonnx.custom_op.channels_last"
#: the lowest default opset the compiler's own nodes are valid in
MIN_OPSET = 13


def read_onnx(path: Path) -> onnx.ModelProto:
    """The file's protobuf as written, unchecked; a missing or unreadable file is one ``InputError``."""
    path = require_file(path, "give the path of a .onnx file")
    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, OSError) as err:
        raise InputError(f"{path} is not an ONNX file ({_first_line(err)}); give a complete .onnx model "
                         "(a Git LFS pointer or a truncated download is not one)") from None
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise InputError(f"{path} holds no ONNX graph (no nodes, inputs or outputs); give a complete .onnx model")
    return model


def import_qonnx(path: Path) -> tuple[ModelWrapper, list[str]]:
    """Read a QONNX file made elsewhere and normalise it; returns the model and what the import changed."""
    path = Path(path)
    model, changes = normalise_qonnx(read_onnx(path), str(path))
    return model, changes


def normalise_qonnx(proto: onnx.ModelProto, name: str = "the model") -> tuple[ModelWrapper, list[str]]:
    """The normal form of a foreign QONNX graph (see the module docstring), and a list of what changed.

    Raises:
        InputError: the graph is not valid ONNX even after normalising (the checker's first complaint).
    """
    from qonnx.util.cleanup import cleanup_model

    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # the caller's copy stays as it was
    changes = [*_map_legacy_domains(proto), *_add_opset_imports(proto), *_static_inputs(proto)]
    try:
        proto, upgraded = _upgrade_opset(proto)
        changes += upgraded
        changes += _bipolar_spellings(proto)
        model = ModelWrapper(proto)
        if any(node.domain == CHANNELS_LAST_DOMAIN for node in model.graph.node):
            from bnnflow.pipeline.channels_first import RevertChannelsLast

            count = sum(node.domain == CHANNELS_LAST_DOMAIN for node in model.graph.node)
            model = model.transform(RevertChannelsLast())
            changes.append(f"{count} channels-last nodes ({CHANNELS_LAST_DOMAIN}) put back in channels-first form")
        model = cleanup_model(model)
        dynamo = _dynamo_forms(model)  # after cleanup: a Conv's weights have a shape once constants are folded
        if dynamo:
            changes += dynamo
            model = cleanup_model(model)  # folds a Gemm's weight Transpose into its quantizer's initializer
        model, folded = _fold_bias_quantizers(model)
        changes += folded
    except InputError:
        raise
    except Exception as err:  # qonnx's and onnx's tools assert or raise bare exceptions on graphs they cannot read
        raise InputError(f"{name} cannot be read as QONNX ({type(err).__name__}: {_first_line(err)}); check that "
                         "qonnx's executor runs it") from err  # --debug shows the tool's own traceback
    _drop_unused_opsets(model.model)
    try:
        onnx.checker.check_model(model.model)
    except (onnx.checker.ValidationError, ValueError) as err:
        raise InputError(f"{name} is not a valid ONNX model ({_first_line(err)}), even after the QONNX import's "
                         "fixes; repair or re-export it") from None
    return model, changes


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _map_legacy_domains(proto: onnx.ModelProto) -> list[str]:
    from qonnx.custom_op.registry import get_ops_in_domain

    # "Quant" is registered as IntQuant (and resolved by name at execution); BinaryQuant is rewritten below
    qonnx_ops = {name for name, _ in get_ops_in_domain(QONNX_DOMAIN)} | {"Quant", "BinaryQuant"}
    moved: dict[str, int] = {}
    for node in proto.graph.node:
        if node.domain in LEGACY_DOMAINS and node.op_type in qonnx_ops:
            moved[node.domain] = moved.get(node.domain, 0) + 1
            node.domain = QONNX_DOMAIN
    return [f"{count} nodes moved from domain {domain} to {QONNX_DOMAIN}" for domain, count in moved.items()]


def _add_opset_imports(proto: onnx.ModelProto) -> list[str]:
    imported = {opset.domain for opset in proto.opset_import}
    changes = []
    for domain in sorted({node.domain for node in proto.graph.node} - imported - {"ai.onnx"}):
        if domain == "":
            continue  # a graph without a default opset is not ONNX; the checker says so
        # Trunc's six-input form is opset 2 of qonnx's domain; everything else reads the same in 1 and 2
        trunc_v2 = any(n.op_type == "Trunc" and len(n.input) == 6 for n in proto.graph.node if n.domain == domain)
        version = 2 if trunc_v2 else 1
        if domain == CHANNELS_LAST_DOMAIN:
            version = _default_opset(proto)
        proto.opset_import.append(helper.make_opsetid(domain, version))
        changes.append(f"opset import added for domain {domain} (version {version})")
    return changes


def _default_opset(proto: onnx.ModelProto) -> int:
    return next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), 0)


def _static_inputs(proto: onnx.ModelProto) -> list[str]:
    constants = {init.name for init in proto.graph.initializer}
    static = [i for i in proto.graph.input if i.name in constants]
    for info in static:
        proto.graph.input.remove(info)
    return [f"{len(static)} initializers removed from the graph inputs (older exporters list them there)"] \
        if static else []


def _upgrade_opset(proto: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    from onnx import version_converter

    version = _default_opset(proto)
    if not version or version >= MIN_OPSET:
        return proto, []
    upgraded = version_converter.convert_version(proto, MIN_OPSET)
    return upgraded, [f"default opset {version} raised to {MIN_OPSET} with onnx's version converter"]


def _bipolar_spellings(proto: onnx.ModelProto) -> list[str]:
    """``BinaryQuant`` and signed 1-bit ``Quant`` without a zero point, written as qonnx's ``BipolarQuant``."""
    constants = {init.name: onnx.numpy_helper.to_array(init) for init in proto.graph.initializer}
    renamed, one_bit = 0, 0
    for node in proto.graph.node:
        if node.domain != QONNX_DOMAIN:
            continue
        if node.op_type == "BinaryQuant":
            node.op_type = "BipolarQuant"
            del node.input[2:]
            renamed += 1
        elif node.op_type == "Quant" and len(node.input) >= 4:
            zero, bits = constants.get(node.input[2]), constants.get(node.input[3])
            signed = get_by_name(node.attribute, "signed")
            if bits is not None and bits.size == 1 and float(bits) == 1 and (signed is None or signed.i) and \
                    zero is not None and not np.any(zero):
                node.op_type = "BipolarQuant"
                del node.input[2:]
                del node.attribute[:]
                one_bit += 1
    return _counted([(renamed, "BinaryQuant nodes written as BipolarQuant"),
                     (one_bit, "signed 1-bit Quant nodes written as BipolarQuant (qonnx executes both as sign)")])


def _counted(counts: list[tuple[int, str]]) -> list[str]:
    """One change line, ``"N what"``, per rewrite that happened."""
    return [f"{count} {what}" for count, what in counts if count]


def _dynamo_forms(model: ModelWrapper) -> list[str]:
    """The torch dynamo exporter's node forms, written as the TorchScript exporter writes them."""
    graph = model.graph
    kernels, gemms = 0, 0
    for node in graph.node:
        if node.op_type == "Conv" and get_by_name(node.attribute, "kernel_shape") is None:
            weights = model.get_tensor_shape(node.input[1])
            if weights is None:
                continue
            node.attribute.append(helper.make_attribute("kernel_shape", list(weights[2:])))
            kernels += 1
    for node in list(graph.node):
        if node.op_type != "Gemm" or (len(node.input) > 2 and node.input[2]):
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0:
            continue
        weights = node.input[1]
        position = list(graph.node).index(node)
        if attrs.get("transB", 0):
            weights = model.make_new_valueinfo_name()
            graph.node.insert(position, helper.make_node("Transpose", [node.input[1]], [weights], perm=[1, 0],
                                                         name=f"{node.name or 'Gemm'}_weights_transposed"))
            position += 1
        matmul = helper.make_node("MatMul", [node.input[0], weights], list(node.output), name=node.name)
        graph.node.remove(node)
        graph.node.insert(position, matmul)
        gemms += 1
    return _counted([(kernels, "Conv nodes given kernel_shape from their weights"),
                     (gemms, "Gemm nodes without a bias written as MatMul")])


def _is_bias_quantizer(model: ModelWrapper, node) -> bool:
    """A quantizer of a constant that no layer reads as its weights: a quantized bias or offset (QKeras's form)."""
    if node.op_type not in ("Quant", "BipolarQuant") or model.get_initializer(node.input[0]) is None:
        return False
    readers = model.find_consumers(node.output[0])
    return bool(readers) and all(r.op_type in ("Add", "Sub", "Mul", "Div") or
                                 (r.op_type in ("Conv", "Gemm") and list(r.input).index(node.output[0]) == 2)
                                 for r in readers)


def _fold_bias_quantizers(model: ModelWrapper) -> tuple[ModelWrapper, list[str]]:
    """Quantized biases as the constants qonnx computes for them, with qonnx's own folding (weights keep their
    quantizers: their codes are the layer's)."""
    from qonnx.transformation.fold_constants import FoldConstantsFiltered

    count = sum(_is_bias_quantizer(model, node) for node in model.graph.node)
    if not count:
        return model, []
    model = model.transform(FoldConstantsFiltered(_is_bias_quantizer))
    return model, [f"{count} quantizers of constant biases folded into their values"]


def _drop_unused_opsets(proto: onnx.ModelProto) -> None:
    used = {node.domain for node in proto.graph.node}
    for opset in [o for o in proto.opset_import if o.domain not in ("", "ai.onnx") and o.domain not in used]:
        proto.opset_import.remove(opset)
