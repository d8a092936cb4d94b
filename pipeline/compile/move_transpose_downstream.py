"""MoveTransposeDownstream: channels-last all the way, by pushing NHWC->NCHW transposes towards the output.

Lowering a convolution (qonnx's ``LowerConvsToMatMul``) leaves ``Transpose(perm=0,3,1,2)`` after each MatMul
and ``Transpose(perm=0,2,3,1)`` before each Im2Col. One step moves an NCHW transpose past its single consumer:

- ``Mul``/``Add``/``Sub``/``Div`` by a constant: the constant is laid out channels-last;
- ``MultiThreshold``: its ``data_layout`` becomes ``NHWC``;
- ``MaxPool``: becomes qonnx's ``MaxPoolNHWC``;
- ``Transpose(perm=0,2,3,1)``: the pair cancels;
- ``Reshape``/``Flatten`` to (N, C*H*W) feeding a ``MatMul`` with constant weights: the transpose disappears and
  the weight rows are permuted from C,H,W order into H,W,C order.

The result is a graph whose hardware part streams pixels in raster order with channels innermost, as the
sliding-window and matrix-vector units expect.
"""

from __future__ import annotations

import numpy as np
from onnx import helper
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from bnnflow.pipeline.compile._graph import bypass, constant, only_consumer

TO_NCHW = [0, 3, 1, 2]
TO_NHWC = [0, 2, 3, 1]
ELEMENTWISE = {"Mul", "Add", "Sub", "Div"}


def _perm(node) -> list[int] | None:
    attr = get_by_name(node.attribute, "perm")
    return list(attr.ints) if attr is not None else None


class MoveTransposeDownstream(Transformation):
    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        for node in model.graph.node:
            if node.op_type != "Transpose" or _perm(node) != TO_NCHW:
                continue
            nxt = only_consumer(model, node.output[0])
            if nxt is None or nxt.input[0] != node.output[0]:
                continue
            if self._move(model, node, nxt):
                return model, True
        return model, False

    def _move(self, model: ModelWrapper, trans, nxt) -> bool:
        op = nxt.op_type
        if op in ELEMENTWISE:
            c = constant(model, nxt.input[1])
            if c is None or c.ndim not in (0, 1, 3, 4) or (c.ndim == 1 and c.size != 1):
                return False
            if c.ndim == 4:
                model.set_initializer(nxt.input[1], c.transpose(TO_NHWC))
            elif c.ndim == 3:
                model.set_initializer(nxt.input[1], c.transpose(1, 2, 0))
        elif op == "MultiThreshold":
            layout = get_by_name(nxt.attribute, "data_layout")
            if layout is not None and layout.s.decode() not in ("", "NCHW"):
                return False
            if layout is not None:
                nxt.attribute.remove(layout)
            nxt.attribute.append(helper.make_attribute("data_layout", "NHWC"))
        elif op == "MaxPool":
            attrs = {a.name: list(a.ints) for a in nxt.attribute if a.name in ("kernel_shape", "strides", "pads")}
            ceil = get_by_name(nxt.attribute, "ceil_mode")
            pool = helper.make_node("MaxPoolNHWC", list(nxt.input), list(nxt.output), domain="qonnx.custom_op.general",
                                    name=nxt.name, kernel_shape=attrs["kernel_shape"],
                                    strides=attrs.get("strides", [1, 1]),
                                    pads=attrs.get("pads", [0, 0, 0, 0]), ceil_mode=ceil.i if ceil else 0)
            index = list(model.graph.node).index(nxt)
            model.graph.node.remove(nxt)
            model.graph.node.insert(index, pool)
            nxt = model.graph.node[index]  # protobuf stores a copy
        elif op == "Transpose" and _perm(nxt) == TO_NHWC:
            bypass(model, nxt)
            bypass(model, trans)
            return True
        elif op in ("Reshape", "Flatten"):
            return self._fold_into_matmul(model, trans, nxt)
        else:
            return False
        # x -> T -> y -> Next -> z   becomes   x -> Next -> y' -> T -> z
        x, y, z = trans.input[0], trans.output[0], nxt.output[0]
        out_shape = model.get_tensor_shape(z)
        nxt.input[0] = x
        nxt.output[0] = y
        trans.input[0] = y
        trans.output[0] = z
        if out_shape is not None and len(out_shape) == 4:
            model.set_tensor_shape(y, [out_shape[i] for i in TO_NHWC])
        nodes = model.graph.node
        after = list(nodes).index(nxt)
        nodes.remove(trans)
        nodes.insert(after, trans)
        return True

    @staticmethod
    def _fold_into_matmul(model: ModelWrapper, trans, reshape) -> bool:
        _, c, h, w = model.get_tensor_shape(trans.output[0])
        flat = model.get_tensor_shape(reshape.output[0])
        matmul = only_consumer(model, reshape.output[0])
        if len(flat) != 2 or flat[1] != c * h * w or matmul is None or matmul.op_type != "MatMul":
            return False
        weights = constant(model, matmul.input[1])
        if weights is None:
            return False
        # Row r of the NHWC-flattened input is pixel (y, x), channel ch; it was row ch*h*w + y*w + x before.
        nchw_rows = np.arange(c * h * w).reshape(c, h, w).transpose(1, 2, 0).reshape(-1)
        model.set_initializer(matmul.input[1], weights[nchw_rows])
        if reshape.op_type == "Reshape":
            model.set_initializer(reshape.input[1], np.asarray([-1, c * h * w], dtype=np.int64))
        bypass(model, trans)
        return True
