"""The ONNX Runtime models of a network: ``reference`` (standard ops) and ``bitpacked`` (our XNOR kernel).

Both start from the QONNX export (model.qonnx), whose quantizers are qonnx custom ops ONNX Runtime cannot run:

- ``reference``: weight quantizers are folded into constants; a binary activation ``BipolarQuant(x, s)``
  becomes ``Where(x >= 0, s, -s)`` (sign(0) = +1, as everywhere in bnnflow) and a k-bit ``Quant`` becomes
  ``(Clip(Round(x / s + z), lo, hi) - z) * s`` with ONNX's round-half-to-even, which is qonnx's ROUND. Every
  node computes what qonnx's executor computes for it, so the outputs are those of model.qonnx.
- ``bitpacked``: every Conv and MatMul whose input is a binary activation and whose weights are a per-channel
  scale times signs becomes our ``BinaryConv2d`` / ``BinaryMatMul`` (domain ai.onnx.contrib) on the
  activation's input, with the weights stored packed 64 to a word, followed by a Mul with the two scales. The
  kernel counts exactly what the float Conv sums (zero padding contributes 0), so the outputs are the reference's.
  A float BatchNorm after a binary conv (a real-valued residual stream) and the shortcut Add of the conv's own
  input run inside the kernel (``BinaryConv2dAffine``), to float rounding of the reference's. A run of such
  residual layers, each feeding only the next, is one ``BinaryConv2dChain`` node: the same calls of the kernel.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.transformation.fold_constants import FoldConstants
from qonnx.transformation.general import GiveUniqueNodeNames, RemoveUnusedTensors, SortGraph
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name

from bnnflow.errors import UnsupportedGraphError
from bnnflow.nodes import node_ref
from bnnflow.pipeline.edge.integer_steps import BatchNormSignToInteger, MoveScalarMulPastLinear


def _const(model: ModelWrapper, value: np.ndarray | float, dtype=np.float32) -> str:
    name = model.make_new_valueinfo_name()
    model.set_initializer(name, np.asarray(value, dtype=dtype))
    return name


def _attr(node, name: str, default):
    attr = get_by_name(node.attribute, name)
    return helper.get_attribute_value(attr) if attr is not None else default


class QuantToStandardOps(Transformation):
    """Activation quantizers (BipolarQuant, Quant) as standard ONNX ops with the same arithmetic."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        graph = model.graph
        for index, node in enumerate(list(graph.node)):
            if node.op_type == "BipolarQuant":
                scale = model.get_initializer(node.input[1])
                if scale is None:
                    raise UnsupportedGraphError(f"{node_ref(model, node)} has a computed scale")
                positive = model.make_new_valueinfo_name()
                new = [helper.make_node("GreaterOrEqual", [node.input[0], _const(model, 0.0)], [positive]),
                       helper.make_node("Where", [positive, _const(model, scale), _const(model, -scale)],
                                        [node.output[0]])]
            elif node.op_type == "Quant":
                new = self._quant(model, node)
            else:
                continue
            graph.node.remove(node)
            for offset, item in enumerate(new):
                graph.node.insert(index + offset, item)
            return model, True
        return model, False

    @staticmethod
    def _quant(model: ModelWrapper, node) -> list:
        scale, zeropt, bits = (model.get_initializer(name) for name in node.input[1:4])
        if scale is None or zeropt is None or bits is None:
            raise UnsupportedGraphError(f"{node_ref(model, node)} has a computed scale, zero point or bit width")
        if _attr(node, "rounding_mode", b"ROUND") not in (b"ROUND", "ROUND"):
            raise UnsupportedGraphError(f"{node_ref(model, node)} rounds with {_attr(node, 'rounding_mode', '')!r}; "
                                        "only ROUND (half to even) has a standard ONNX op")
        bits = int(bits)
        signed, narrow = _attr(node, "signed", 1), _attr(node, "narrow", 0)
        lo = (-(2 ** (bits - 1)) + narrow) if signed else 0
        hi = (2 ** (bits - 1) - 1) if signed else (2**bits - 1 - narrow)
        names = [model.make_new_valueinfo_name() for _ in range(5)]
        shifted = np.any(zeropt != 0)  # without a zero point the codes come straight out of the Clip
        return [
            helper.make_node("Div", [node.input[0], node.input[1]], [names[0]]),
            *([helper.make_node("Add", [names[0], node.input[2]], [names[1]])] if shifted else []),
            helper.make_node("Round", [names[1] if shifted else names[0]], [names[2]]),
            helper.make_node("Clip", [names[2], _const(model, lo), _const(model, hi)], [names[3]]),
            *([helper.make_node("Sub", [names[3], node.input[2]], [names[4]])] if shifted else []),
            helper.make_node("Mul", [names[4] if shifted else names[3], node.input[1]], [node.output[0]]),
        ]


class FloorModePooling(Transformation):
    """AveragePool / MaxPool with ``ceil_mode`` where no window is partial: floor mode is the same computation, and
    ONNX Runtime's ceil-mode AveragePool with padding counted is a slow path (3.5x here on a 64x56x56 map)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            ceil = get_by_name(node.attribute, "ceil_mode")
            if node.op_type not in ("AveragePool", "MaxPool") or ceil is None or ceil.i == 0:
                continue
            dims = model.get_tensor_shape(node.input[0])[2:]
            kernel = _attr(node, "kernel_shape", [])
            strides = _attr(node, "strides", [1] * len(kernel))
            pads = _attr(node, "pads", [0] * 2 * len(kernel))
            if all((d + pads[i] + pads[i + len(kernel)] - k) % st == 0
                   for i, (d, k, st) in enumerate(zip(dims, kernel, strides))):
                ceil.i = 0
                return model, True
        return model, False


def reference_model(qonnx_model: ModelWrapper) -> ModelWrapper:
    """model.qonnx in standard ONNX ops (see the module docstring)."""
    model = qonnx_model.transform(FoldConstants(exclude_op_types=[]))
    model = model.transform(QuantToStandardOps())
    model = model.transform(MoveScalarMulPastLinear()).transform(BatchNormSignToInteger())
    leftover = sorted({n.op_type for n in model.graph.node if n.domain not in ("", "ai.onnx")})
    if leftover:
        raise UnsupportedGraphError(f"the edge path has no standard form of {', '.join(leftover)}")
    model = model.transform(InferShapes()).transform(FloorModePooling()).transform(RemoveUnusedTensors())
    model = model.transform(GiveUniqueNodeNames())
    del model.graph.quantization_annotation[:]  # qonnx's datatype notes; nothing in ONNX Runtime reads them
    return model


#: ops that commute with sign: sign(op(x)) = op(sign(x)) (shape ops move values; max-pooling is monotonic)
SIGN_COMMUTING = ("Reshape", "Flatten", "Transpose", "MaxPool")


def binary_source(model: ModelWrapper, tensor: str) -> tuple[str, float, list] | None:
    """(x, s, ops) when ``tensor`` is ``ops(Where(x >= 0, s, -s))``, ``ops`` a chain of sign-commuting nodes."""
    chain = []
    producer = model.find_producer(tensor)
    while producer is not None and producer.op_type in SIGN_COMMUTING:
        chain.insert(0, producer)
        producer = model.find_producer(producer.input[0])
    where = producer
    if where is None or where.op_type != "Where":
        return None
    compare = model.find_producer(where.input[0])
    if compare is None or compare.op_type != "GreaterOrEqual":
        return None
    zero = model.get_initializer(compare.input[1])
    hi, lo = model.get_initializer(where.input[1]), model.get_initializer(where.input[2])
    if zero is None or np.any(zero != 0) or hi is None or lo is None or np.size(hi) != 1 or hi != -lo or hi <= 0:
        return None
    return compare.input[0], float(np.asarray(hi).reshape(-1)[0]), chain


def _replay(model: ModelWrapper, x: str, chain: list) -> tuple[str, list]:
    """Copies of the sign-commuting ``chain`` applied to ``x`` (the activation before its sign)."""
    nodes = []
    for node in chain:
        out = model.make_new_valueinfo_name()
        copy = helper.make_node(node.op_type, [x, *node.input[1:]], [out])
        copy.attribute.extend(node.attribute)
        nodes.append(copy)
        x = out
    return x, nodes


def _signs_and_scales(w: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(signs, per-output-channel scale) when every row of ``w`` (axis 0) is one magnitude times signs."""
    flat = w.reshape(w.shape[0], -1)
    scale = np.abs(flat[:, :1])
    if np.any(scale == 0) or not np.array_equal(np.abs(flat), np.broadcast_to(scale, flat.shape)):
        return None
    return np.sign(flat).reshape(w.shape), scale[:, 0]


class BinaryLayersToKernel(Transformation):
    """Conv / MatMul on a binary activation with binary weights -> our packed kernel plus a scale."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from bnnflow.pipeline.edge.custom_ops import binary_conv2d_node, binary_matmul_node
        from bnnflow.pipeline.edge.kernel import pack_weights_conv, pack_weights_matmul

        graph = model.graph
        for index, node in enumerate(list(graph.node)):
            if node.op_type not in ("Conv", "MatMul"):
                continue
            source = binary_source(model, node.input[0])
            weights = model.get_initializer(node.input[1])
            if source is None or weights is None:
                continue
            x, act_scale, chain = source
            x, replayed = _replay(model, x, chain)
            if node.op_type == "Conv":
                if _attr(node, "group", 1) != 1 or any(d != 1 for d in _attr(node, "dilations", [1, 1])):
                    continue
                pads = list(_attr(node, "pads", [0, 0, 0, 0]))
                if len(weights.shape) != 4 or pads[:2] != pads[2:]:
                    continue
                split = _signs_and_scales(weights)
                if split is None:
                    continue
                signs, scales = split
                strides = list(_attr(node, "strides", [1, 1]))
                packed = _const(model, pack_weights_conv(signs), np.uint64)
                raw = model.make_new_valueinfo_name()
                kernel = binary_conv2d_node(x, packed, raw, in_channels=weights.shape[1],
                                            kernel_shape=tuple(weights.shape[2:]), stride=tuple(strides),
                                            pad=tuple(pads[:2]))
                scale_shape = (1, -1, 1, 1)
            else:
                split = _signs_and_scales(weights.T) if weights.ndim == 2 else None
                if split is None:
                    continue
                signs, scales = split
                packed = _const(model, pack_weights_matmul(signs), np.uint64)
                raw = model.make_new_valueinfo_name()
                kernel = binary_matmul_node(x, packed, raw, in_features=weights.shape[0])
                scale_shape = (1, -1)
            scaled = node.output[0] if len(node.input) < 3 else model.make_new_valueinfo_name()
            scale = _const(model, (scales * act_scale).reshape(scale_shape))
            new = [*replayed, kernel, helper.make_node("Mul", [raw, scale], [scaled])]
            if len(node.input) >= 3:  # a Conv bias
                bias = model.get_initializer(node.input[2]).reshape(scale_shape)
                new.append(helper.make_node("Add", [scaled, _const(model, bias)], [node.output[0]]))
            graph.node.remove(node)
            for offset, item in enumerate(new):
                graph.node.insert(index + offset, item)
            return model, True
        return model, False


class RemoveDeadNodes(Transformation):
    """Nodes none of whose outputs is read (the float signs the kernel's layers no longer take)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        outputs = {o.name for o in model.graph.output}
        read = {name for node in model.graph.node for name in node.input} | outputs
        dead = [node for node in model.graph.node if not any(o in read for o in node.output)]
        for node in dead:
            model.graph.node.remove(node)
        return model, bool(dead)


class FoldScaleIntoBatchNorm(Transformation):
    """``Mul(y, s) -> BatchNormalization`` (s per channel, positive) becomes one BatchNormalization with
    ``gamma * s`` and ``mean / s``: the kernel's scale costs no pass over the feature map. Only a float
    BatchNorm (a real-valued residual stream) is left to take it; the ones before a sign are integer steps."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for mul in model.graph.node:
            scale = model.get_initializer(mul.input[1]) if mul.op_type == "Mul" else None
            consumers = model.find_consumers(mul.output[0]) if scale is not None else []
            if len(consumers) != 1 or consumers[0].op_type != "BatchNormalization" or np.any(scale <= 0):
                continue
            bn = consumers[0]
            gamma, mean = model.get_initializer(bn.input[1]), model.get_initializer(bn.input[3])
            if gamma is None or mean is None:
                continue
            flat = np.broadcast_to(scale.reshape(-1), gamma.shape).astype(np.float32)
            model.set_initializer(bn.input[1], (gamma * flat).astype(np.float32))
            model.set_initializer(bn.input[3], (mean / flat).astype(np.float32))
            bn.input[0] = mul.input[0]
            model.graph.node.remove(mul)
            return model, True
        return model, False


class FuseBatchNormIntoKernel(Transformation):
    """``BinaryConv2d -> BatchNormalization`` (and a following ``Add`` of the conv's own input, a Bi-Real block's
    shortcut) becomes one ``BinaryConv2dAffine``: the kernel applies the BatchNorm as ``sum * scale + bias`` with
    ONNX Runtime's own folding of it (float32 ``gamma / sqrt(var + eps)``), then adds the input, in the pass that
    writes its output. Runs after ``FoldScaleIntoBatchNorm``, so the kernel's scale is in the BatchNorm already."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        from bnnflow.pipeline.edge.custom_ops import binary_conv2d_affine_node

        graph_outputs = {o.name for o in model.graph.output}
        for index, conv in enumerate(model.graph.node):
            consumers = model.find_consumers(conv.output[0]) if conv.op_type == "BinaryConv2d" else []
            if len(consumers) != 1 or consumers[0].op_type != "BatchNormalization" or conv.output[0] in graph_outputs:
                continue
            bn = consumers[0]
            params = [model.get_initializer(name) for name in bn.input[1:5]]
            if any(p is None for p in params):
                continue
            gamma, beta, mean, var = (np.asarray(p, dtype=np.float32).reshape(-1) for p in params)
            scale = gamma * (np.float32(1) / np.sqrt(var + np.float32(_attr(bn, "epsilon", 1e-5))))
            bias = beta - mean * scale
            tail, out = [bn], bn.output[0]
            adds = model.find_consumers(out) if out not in graph_outputs else []
            if len(adds) == 1 and adds[0].op_type == "Add" and sorted(adds[0].input) == sorted([out, conv.input[0]]) \
                    and self._keeps_shape(model, conv):
                tail, out = [bn, adds[0]], adds[0].output[0]
            fused = binary_conv2d_affine_node(conv, _const(model, scale), _const(model, bias), out,
                                              residual=len(tail) == 2)
            for node in (conv, *tail):
                model.graph.node.remove(node)
            model.graph.node.insert(index, fused)
            return model, True
        return model, False

    @staticmethod
    def _keeps_shape(model: ModelWrapper, conv) -> bool:
        """Whether the conv's output has its input's shape: stride 1, 'same' padding, as many filters as channels."""
        kh, kw, ph, pw, sh, sw = (_attr(conv, name, 0) for name in
                                  ("kernel_h", "kernel_w", "pad_h", "pad_w", "stride_h", "stride_w"))
        filters = model.get_initializer(conv.input[1]).shape[0]
        return (sh, sw) == (1, 1) and (kh - 1, kw - 1) == (2 * ph, 2 * pw) and filters == _attr(conv, "in_channels", 0)


class ChainResidualLayers(Transformation):
    """A run of residual ``BinaryConv2dAffine`` layers of one geometry, each one's output read only by the next
    (its conv and its shortcut), becomes one ``BinaryConv2dChain`` with the layers' parameters stacked. Every call
    through the Python custom-op route copies its input into a fresh numpy array and its output back into ONNX
    Runtime, plus some 15 us of Python; a chain pays that once for the run, its intermediate maps staying in the
    kernel's scratch buffers (Bi-Real-18's stages are such runs: 13 of its 16 binary convs). Runs after
    ``FuseBatchNormIntoKernel`` and ``RemoveDeadNodes``."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        outputs = {o.name for o in model.graph.output}
        for index, node in enumerate(model.graph.node):
            if not self._chainable(model, node) or self._next(model, model.find_producer(node.input[0]), outputs) == node:
                continue  # not a residual layer, or not the first of its run
            run = [node]
            while (following := self._next(model, run[-1], outputs)) is not None:
                run.append(following)
            if len(run) >= 2:
                for layer in run:
                    model.graph.node.remove(layer)
                model.graph.node.insert(index, self._chain(model, run))
                return model, True
        return model, False

    @staticmethod
    def _chainable(model: ModelWrapper, node) -> bool:
        """A residual BinaryConv2dAffine whose weights, scale and bias are constants, which a chain stacks."""
        return node.op_type == "BinaryConv2dAffine" and _attr(node, "residual", 0) == 1 \
            and all(model.get_initializer(name) is not None for name in node.input[1:4])

    @classmethod
    def _next(cls, model: ModelWrapper, node, outputs: set[str]):
        """The layer after ``node`` (None: a graph input) in a run: the only reader of its output, no graph
        output, and a chainable layer with the same attributes, whose input it is."""
        if node is None or not cls._chainable(model, node) or node.output[0] in outputs:
            return None
        consumers = model.find_consumers(node.output[0])
        if len(consumers) != 1 or consumers[0].input[0] != node.output[0] or not cls._chainable(model, consumers[0]):
            return None
        return consumers[0] if _attributes(consumers[0]) == _attributes(node) else None

    @staticmethod
    def _chain(model: ModelWrapper, run: list):
        """The BinaryConv2dChain node of ``run``, its layers' parameters stacked into new initializers."""
        from bnnflow.pipeline.edge.custom_ops import binary_conv2d_chain_node

        wp, scale, bias = (np.stack([model.get_initializer(layer.input[i]) for layer in run]) for i in (1, 2, 3))
        attrs = _attributes(run[0])
        return binary_conv2d_chain_node(
            run[0].input[0], _const(model, wp, np.uint64), _const(model, scale.reshape(len(run), -1)),
            _const(model, bias.reshape(len(run), -1)), run[-1].output[0], len(run), attrs["in_channels"],
            (attrs["kernel_h"], attrs["kernel_w"]), (attrs["stride_h"], attrs["stride_w"]),
            (attrs["pad_h"], attrs["pad_w"]), name=run[0].name)


def _attributes(node) -> dict:
    """A node's attributes by name, as values."""
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def bitpacked_model(reference: ModelWrapper) -> tuple[ModelWrapper, int]:
    """The reference model with its binary layers on our kernel; also returns how many layers were replaced."""
    from bnnflow.pipeline.edge.custom_ops import DOMAIN, OPSET

    model = reference.transform(BinaryLayersToKernel(), make_deepcopy=True)
    replaced = sum(n.domain == DOMAIN for n in model.graph.node)
    if replaced and all(o.domain != DOMAIN for o in model.model.opset_import):
        model.model.opset_import.append(OPSET)
    model = model.transform(FoldScaleIntoBatchNorm()).transform(FuseBatchNormIntoKernel())
    # the dead float signs still read the residual layers' outputs; chains need those read by the next layer only
    model = model.transform(RemoveDeadNodes()).transform(ChainResidualLayers()).transform(RemoveUnusedTensors())
    model = model.transform(SortGraph())
    return model.transform(GiveUniqueNodeNames()), replaced
