"""RevertChannelsLast: a channels-last QONNX graph (qonnx's ``ConvertToChannelsLastAndClean``) back in the
channels-first form the compiler reads.

qonnx converts one way only. Its channels-last form wraps ``Conv``, ``MaxPool`` and ``BatchNormalization`` in the
domain ``qonnx.custom_op.channels_last`` (NHWC in and out, a Conv's weights OHWI), moves the ``Transpose`` nodes
around them as far as they go, folds transposed weights into their quantizers' initializers and permutes the
rows of a ``MatMul`` after a flatten of an NHWC map (``AbsorbChanFirstIntoMatMul``). The way back, one rewrite per
``apply`` (qonnx's fixed-point loop does the rest):

1. a channels-last node becomes the standard one between a ``Transpose`` to NCHW (its data input, and a Conv's
   weights) and a ``Transpose`` back to NHWC (its output): the same function, now in standard ops;
2. past a node that acts on each value alike (a quantizer or an arithmetic op whose other inputs are scalars,
   ``Relu``), ``f(T(x)) = T(f(x))``: a ``Transpose`` to NHWC moves downstream, one to NCHW upstream (so they
   meet their inverses, and none moves back and forth);
3. two ``Transpose`` nodes that undo each other disappear;
4. a ``Transpose`` NCHW -> NHWC read only by a flatten into a ``MatMul`` on constant (or quantized constant)
   weights disappears, the weight rows permuted back from (h, w, c) order to (c, h, w) order.

Transposes left at the graph's ends (an NHWC input) are host work in front of or after the accelerator.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.channels_last.base_wrapped_op import to_channels_first_args, to_channels_last_args
from qonnx.transformation.base import Transformation
from qonnx.transformation.infer_shapes import InferShapes
from qonnx.util.basic import get_by_name

CHANNELS_LAST_DOMAIN = "qonnx.custom_op.channels_last"
#: ops that act on every value alike when their other inputs are scalars
ELEMENTWISE = ("Quant", "BipolarQuant", "Trunc", "Relu", "Mul", "Add", "Sub", "Div", "Identity")
TO_CHANNELS_LAST, TO_CHANNELS_FIRST = list(to_channels_last_args(4)), list(to_channels_first_args(4))


def _perm(node) -> list[int]:
    return list(helper.get_attribute_value(get_by_name(node.attribute, "perm")))


class RevertChannelsLast(Transformation):
    """Channels-last QONNX back to channels first (see the module docstring)."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for rewrite in (self._unwrap, self._cancel, self._absorb_into_matmul, self._move_down, self._move_up):
            for node in list(model.graph.node):
                if rewrite(model, node):
                    return model.transform(InferShapes()), True
        return model, False

    @staticmethod
    def _unwrap(model: ModelWrapper, node) -> bool:
        if node.domain != CHANNELS_LAST_DOMAIN:
            return False
        graph = model.graph
        position = list(graph.node).index(node)
        ndim = len(model.get_tensor_shape(node.input[0]))
        transposed = [0, 1] if node.op_type == "Conv" else [0]
        for i in transposed:
            name = model.make_new_valueinfo_name()
            graph.node.insert(position, helper.make_node("Transpose", [node.input[i]], [name],
                                                         perm=list(to_channels_first_args(ndim))))
            node.input[i] = name
            position += 1
        for i, out in enumerate(list(node.output)):
            name = model.make_new_valueinfo_name()
            node.output[i] = name
            graph.node.insert(position + 1, helper.make_node("Transpose", [name], [out],
                                                             perm=list(to_channels_last_args(ndim))))
        node.domain = ""
        return True

    @staticmethod
    def _single_reader(model: ModelWrapper, tensor: str):
        readers = model.find_consumers(tensor)
        if len(readers) != 1 or tensor in [o.name for o in model.graph.output]:
            return None
        return readers[0]

    def _cancel(self, model: ModelWrapper, node) -> bool:
        if node.op_type != "Transpose":
            return False
        after = self._single_reader(model, node.output[0])
        if after is None or after.op_type != "Transpose":
            return False
        first, second = _perm(node), _perm(after)
        if [first[i] for i in second] != list(range(len(first))):
            return False
        for reader in model.find_consumers(after.output[0]):
            reader.input[:] = [node.input[0] if name == after.output[0] else name for name in reader.input]
        for out in model.graph.output:
            if out.name == after.output[0]:  # keep the graph's output name: its producer writes it instead
                producer = model.find_producer(node.input[0])
                if producer is None:
                    return False
                producer.output[list(producer.output).index(node.input[0])] = out.name
        model.graph.node.remove(node)
        model.graph.node.remove(after)
        return True

    @staticmethod
    def _per_value(model: ModelWrapper, node) -> bool:
        """``node`` acts on each value of its first input alike: its other inputs are scalar constants."""
        others = [name for name in node.input[1:] if name]
        return node.op_type in ELEMENTWISE and len(node.output) == 1 and \
            all(model.get_initializer(name) is not None and model.get_initializer(name).size == 1 for name in others)

    def _move_down(self, model: ModelWrapper, node) -> bool:
        if node.op_type != "Transpose" or _perm(node) != TO_CHANNELS_LAST:
            return False
        after = self._single_reader(model, node.output[0])
        if after is None or after.input[0] != node.output[0] or not self._per_value(model, after):
            return False
        # T -> f  becomes  f -> T: f reads T's input, and a new Transpose writes f's old output
        moved = model.make_new_valueinfo_name()
        old_out = after.output[0]
        after.input[0] = node.input[0]
        after.output[0] = moved
        graph = model.graph
        graph.node.remove(node)
        graph.node.insert(list(graph.node).index(after) + 1, helper.make_node("Transpose", [moved], [old_out],
                                                                              perm=_perm(node)))
        for info in [v for v in graph.value_info if v.name == old_out]:
            graph.value_info.remove(info)  # its shape is now the transposed one; shape inference sets it
        return True

    def _move_up(self, model: ModelWrapper, node) -> bool:
        if node.op_type != "Transpose" or _perm(node) != TO_CHANNELS_FIRST:
            return False
        before = model.find_producer(node.input[0])
        if before is None or not self._per_value(model, before) or \
                self._single_reader(model, before.output[0]) is not node:
            return False
        # f -> T  becomes  T -> f: T reads f's input, f writes T's old output
        moved = model.make_new_valueinfo_name()
        graph = model.graph
        graph.node.remove(node)
        graph.node.insert(list(graph.node).index(before), helper.make_node("Transpose", [before.input[0]], [moved],
                                                                          perm=_perm(node)))
        old_out = before.output[0]
        before.input[0] = moved
        before.output[0] = node.output[0]
        for info in [v for v in graph.value_info if v.name == old_out]:
            graph.value_info.remove(info)
        return True

    def _absorb_into_matmul(self, model: ModelWrapper, node) -> bool:
        if node.op_type != "Transpose" or _perm(node) != TO_CHANNELS_LAST:
            return False
        flatten = self._single_reader(model, node.output[0])
        if flatten is None or flatten.op_type not in ("Flatten", "Reshape"):
            return False
        matmul = self._single_reader(model, flatten.output[0])
        shape = model.get_tensor_shape(node.input[0])
        flat = model.get_tensor_shape(flatten.output[0])
        if matmul is None or matmul.op_type != "MatMul" or shape is None or flat is None or \
                list(flat) != [shape[0], int(np.prod(shape[1:]))]:
            return False
        weights = matmul.input[1]
        quant = model.find_producer(weights)
        if quant is not None:
            if quant.op_type not in ("Quant", "BipolarQuant") or model.get_initializer(quant.input[0]) is None:
                return False
            scales = [model.get_initializer(name) for name in quant.input[1:] if name]
            if any(s is None or (s.ndim == 2 and s.shape[0] != 1) for s in scales):
                return False  # a parameter that varies along the rows would need permuting too
            weights = quant.input[0]
        matrix = model.get_initializer(weights)
        if matrix is None or matrix.ndim != 2:
            return False
        _, c, h, w = shape
        # row (h, w, c) of the channels-last flatten is row (c, h, w) of the channels-first one
        order = np.arange(c * h * w).reshape(h, w, c).transpose(2, 0, 1).reshape(-1)
        model.set_initializer(weights, matrix[order])
        flatten.input[0] = node.input[0]
        model.graph.node.remove(node)
        return True
