"""LowerToIntegers: model.qonnx as an integer graph, with the host's float parts around it.

In: a cleaned QONNX graph (Brevitas's export): ``Quant`` / ``BipolarQuant`` on weights and activations, ``Trunc``
(after an average pool), ``Conv``,
``MatMul``, ``Gemm``, ``BatchNormalization``, ``Mul``/``Add``/``Sub``/``Div`` by constants, ``Clip``, ``Relu``,
``PRelu``, ``MaxPool``, ``AveragePool``, ``GlobalAveragePool``, residual ``Add``, ``Slice``, ``Pad``, ``Flatten``,
``Reshape``, in any branching (DAG) form.

Out: the same function as three parts of one graph, in model.qonnx's own (NCHW) layout:

- host head: model.qonnx's float nodes up to its first activation quantizer, whose integer codes (``Quant`` with
  scale 1, or a one-threshold ``MultiThreshold`` for +-1) are the accelerator's input;
- integer body, where every tensor holds integers: ``Conv`` / ``MatMul`` of codes by integer weight codes (exact in
  float32 below 2**24), ``MultiThreshold`` for each activation quantizer (everything monotone before it folded
  into integer thresholds; a ``Mul`` by -1 in front for channels whose map decreases), ``MaxPool``, ``Add`` of two
  code tensors (a residual join, both of one scale), sum pools (``ReduceSum``, a depthwise ``Conv`` of ones),
  ``Slice``, ``Pad``, ``Flatten``;
- host tail: the float nodes after the last tensor whose float value the integers reproduce exactly, replayed as
  model.qonnx has them, from that value.

Binary activations are codes +-1, so zero padding is the model's own; the hardware's bits and the correction
they need are the dataflow conversion's (``hw/convert.py``). Every op here runs batched in qonnx's executor.

It follows model.qonnx node by node keeping what each tensor is (``values``): a float on the host, integer codes
with an affine meaning per channel, or a monotone function of codes; see ``values.py``. What cannot be made exact
is refused (``UnsupportedGraphError``) naming the node and what would make it compile.
"""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace
from typing import Callable

import numpy as np
from onnx import helper
from qonnx.core.datatype import DataType
from qonnx.core.modelwrapper import ModelWrapper
from qonnx.custom_op.registry import getCustomOp
from qonnx.transformation.base import Transformation
from qonnx.util.basic import get_by_name

from bnnflow.errors import UnsupportedGraphError
from bnnflow.nodes import node_ref
from bnnflow.pipeline.compile.emitter import QONNX_DOMAIN, Emitter
from bnnflow.pipeline.compile.linear import FLOAT32_EXACT, Weights, exact_sum, is_power_of_two
from bnnflow.pipeline.compile.threshold_synthesis import Quantizer, synthesize
from bnnflow.pipeline.compile.values import (
    Codes,
    Exact,
    Host,
    Monotone,
    Step,
    Value,
    channel_vector,
    integer_range,
    per_channel,
    smallest_type,
)

IGNORED = {"Identity", "Dropout"}


def _attr(node, name: str, default=None):
    attr = get_by_name(node.attribute, name)
    return helper.get_attribute_value(attr) if attr is not None else default


class LowerToIntegers(Transformation):
    """Replace the model by its integer form (see the module docstring); metadata ``bnnflow.streamlined_input`` /
    ``bnnflow.streamlined_output`` name the body's first and last integer tensors."""

    def apply(self, model: ModelWrapper) -> tuple[ModelWrapper, bool]:
        if any(not node.name for node in model.graph.node):  # ONNX allows it; the lowering follows nodes by name
            model = ModelWrapper(deepcopy(model.model))
            taken = {node.name for node in model.graph.node}
            for index, node in enumerate(model.graph.node):
                if not node.name:
                    node.name = next(name for name in (f"{node.op_type}_{index}{suffix}" for suffix in
                                                       ("", *(f"_{k}" for k in range(1, len(taken) + 2))))
                                     if name not in taken)
                    taken.add(node.name)
        return _Lowering(model).run(), False


class _Lowering:
    def __init__(self, model: ModelWrapper) -> None:
        self.src = model
        taken = {name for node in model.graph.node for name in [*node.input, *node.output, node.name]}
        taken |= {i.name for i in model.graph.input} | {o.name for o in model.graph.output}
        self.out = Emitter(taken)
        self.values: dict[str, Value] = {i.name: Host(i.name) for i in model.graph.input}
        self.weights: dict[str, Weights] = {}
        self.conv_pads: dict[str, tuple[list[int], float]] = {}
        self.hw_input: str | None = None
        self.unbuildable: dict[str, str] = {}  # accumulator -> why no hardware computes it

    # -- driving --------------------------------------------------------------------------------------------------

    def run(self) -> ModelWrapper:
        handlers: dict[str, Callable] = {
            "Quant": self.quant, "BipolarQuant": self.quant, "Trunc": self.quant, "Conv": self.conv, "MatMul": self.matmul,
            "Gemm": self.matmul, "BatchNormalization": self.batchnorm, "Mul": self.arithmetic,
            "Div": self.arithmetic, "Add": self.arithmetic, "Sub": self.arithmetic, "Clip": self.clip,
            "Relu": self.clip, "PRelu": self.prelu, "Neg": self.neg, "MaxPool": self.maxpool, "AveragePool": self.avgpool,
            "GlobalAveragePool": self.avgpool, "Slice": self.slice, "Pad": self.pad, "Flatten": self.flatten,
            "Reshape": self.flatten,
        }
        for node in self.src.graph.node:
            if self._all_host(node):
                if node.op_type in ("Quant", "BipolarQuant") and self._is_constant(node.input[0]):
                    self.weight_quant(node)
                elif node.op_type in ("Quant", "BipolarQuant"):
                    self.input_quant(node)
                else:
                    self.out.copy(node, self.src)
                    for name in node.output:
                        self.values[name] = Host(name)
                continue
            if node.op_type in IGNORED:
                self.values[node.output[0]] = self.values[node.input[0]]
                continue
            handler = handlers.get(node.op_type)
            if handler is None:
                self._refuse(node, "is not supported between quantized layers; the compiler takes Conv, MatMul, "
                             "Gemm, BatchNorm, quantizers, Trunc, Clip/ReLU/PReLU, pooling, residual Add, Slice, Pad, "
                             "Flatten")
            handler(node)
        return self._finish()

    def _is_constant(self, name: str) -> bool:
        return self.src.get_initializer(name) is not None

    def _all_host(self, node) -> bool:
        """A node on the host: nothing it reads is an integer tensor yet."""
        return all(not name or self._is_constant(name) or isinstance(self.values.get(name), Host)
                   for name in node.input)

    def _value(self, name: str) -> Value:
        return self.values[name]

    def _refuse(self, node, problem: str):
        raise UnsupportedGraphError(f"node {node_ref(self.src, node)} {problem}")

    # -- quantizers -----------------------------------------------------------------------------------------------

    def weight_quant(self, node) -> None:
        """A quantizer on constant weights: its integer codes and scale, for the layer that reads them."""
        context = {name: self.src.get_initializer(name) for name in node.input}
        op = getCustomOp(node)
        op.execute_node(context, self.src.graph)
        values = context[node.output[0]].astype(np.float64)
        scale = self.src.get_initializer(node.input[1]).astype(np.float64)
        codes = values / scale
        if node.op_type == "Quant" and np.any(self.src.get_initializer(node.input[2]) != 0):
            self._refuse(node, "quantizes weights with a zero point; use a symmetric weight quantizer")
        if not np.array_equal(codes, np.round(codes)):
            self._refuse(node, "leaves weights that are not integer multiples of its scale in float32 (a scale that "
                         "is not a power of two rounds scale * code); use power-of-two weight scales (Brevitas: "
                         "restrict_scaling_type = POWER_OF_TWO)")
        dtype = DataType["BIPOLAR"] if node.op_type == "BipolarQuant" else op.get_integer_datatype(self.src)
        self.weights[node.output[0]] = Weights(np.round(codes).astype(np.int64), scale, dtype)
        self.values[node.output[0]] = Host(node.output[0])  # as a float, for a layer that stays on the host
        self.out.copy(node, self.src)

    def _quantizer(self, node) -> Quantizer:
        scale, zero, bits = (self.src.get_initializer(name) if name else None for name in [*node.input[1:4], "", ""][:3])
        if scale is None or scale.size != 1:
            self._refuse(node, "has a computed or per-channel scale; activation quantizers take one constant scale")
        if node.op_type == "BipolarQuant":
            return Quantizer.bipolar(float(scale.reshape(-1)[0]))
        if node.op_type == "Trunc":
            return self._trunc(node, scale)
        if zero is None or bits is None or zero.size != 1:
            self._refuse(node, "has a computed zero point or bit width")
        bits = int(bits.reshape(-1)[0])
        rounding = _attr(node, "rounding_mode", b"ROUND")
        rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
        if not 1 <= bits <= 16 or rounding not in ("ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO"):
            self._refuse(node, f"quantizes to {bits} bits with rounding {rounding}; the compiler takes 1 to 16 bits "
                         "and ROUND, FLOOR, CEIL or ROUND_TO_ZERO")
        return Quantizer.integer(float(scale.reshape(-1)[0]), float(zero.reshape(-1)[0]), bits,
                                 bool(_attr(node, "signed", 1)), bool(_attr(node, "narrow", 0)), rounding)

    def _trunc(self, node, scale: np.ndarray) -> Quantizer:
        """A ``Trunc`` (after an average pool: Brevitas's ``TruncAvgPool2d``) as the quantizer it is."""
        if len(node.input) != 6:
            self._refuse(node, "is the first form of qonnx's Trunc (5 inputs, opset 1 of qonnx.custom_op.general), "
                         "which has no output range; export it with a Brevitas that writes Trunc with 6 inputs")
        zero, output_scale, bits = (self.src.get_initializer(name) for name in node.input[2:3] + node.input[4:6])
        if zero is None or output_scale is None or bits is None or max(zero.size, output_scale.size, bits.size) != 1:
            self._refuse(node, "has a computed or per-channel zero point, output scale or bit width")
        bits = int(bits.reshape(-1)[0])
        rounding = _attr(node, "rounding_mode", b"FLOOR")
        rounding = rounding.decode() if isinstance(rounding, bytes) else rounding
        if not 1 <= bits <= 16:
            self._refuse(node, f"truncates to {bits} bits; the compiler takes 1 to 16 bits")
        return Quantizer.trunc(scale, zero, output_scale, bits, bool(_attr(node, "signed", 1)),
                               bool(_attr(node, "narrow", 0)), rounding)

    def input_quant(self, node) -> None:
        """The first activation quantizer: its codes, computed on the host, are the accelerator's input."""
        if self.hw_input is not None:
            self._refuse(node, "is a second quantizer of host values; the accelerator takes one input stream")
        quantizer = self._quantizer(node)
        x = node.input[0]
        shape = tuple(self.src.get_tensor_shape(x))
        if len(shape) not in (2, 4):
            self._refuse(node, f"quantizes a tensor of shape {list(shape)}; the accelerator takes vectors or images")
        if node.op_type == "BipolarQuant":
            codes = self.out.node("MultiThreshold", [x, self.out.const(np.zeros((1, 1)), "threshold")], "codes",
                                  domain=QONNX_DOMAIN, shape=shape, dtype=quantizer.dtype, out_dtype="BIPOLAR",
                                  out_scale=2.0, out_bias=-1.0)
        else:
            scaled = self.out.node("Div", [x, node.input[1]], "scaled", shape=shape)
            codes = self.out.node("Quant", [scaled, self.out.const(1.0, "one"), node.input[2], node.input[3]],
                                  "codes", domain=QONNX_DOMAIN, shape=shape, dtype=quantizer.dtype,
                                  signed=int(_attr(node, "signed", 1)), narrow=int(_attr(node, "narrow", 0)),
                                  rounding_mode=_attr(node, "rounding_mode", b"ROUND"))
            for name in node.input[1:4]:
                self.out.initializers[name] = self.src.get_initializer(name)
        channels = shape[1]
        self.hw_input = codes
        scale, offset = np.full(channels, quantizer.scale), np.full(channels, quantizer.offset)
        self.values[node.output[0]] = Codes(codes, quantizer.dtype, scale, offset, shape,
                                            Exact(node.output[0], scale, offset))

    def quant(self, node) -> None:
        """An activation quantizer on codes: integer thresholds on them (``threshold_synthesis``)."""
        value = self._value(node.input[0])
        quantizer = self._quantizer(node)
        base = value.base if isinstance(value, Monotone) else value
        direction = value.direction() if isinstance(value, Monotone) else np.where(value.scale < 0, -1, 1)
        if direction is None:
            self._refuse(node, "quantizes a function that rises and falls (a PReLU with a negative slope, an FPReLU "
                         "whose two slopes differ in sign); integer thresholds take monotone activations: keep "
                         "the slopes >= 0")
        evaluate = value.evaluate if isinstance(value, Monotone) else value.real
        low, high = integer_range(base.dtype)
        if max(abs(low), abs(high)) >= FLOAT32_EXACT:
            self._refuse(node, f"quantizes accumulators of {base.dtype.name}, beyond the integers float32 holds "
                         "exactly; use fewer input bits or a narrower layer")
        thresholds = synthesize(lambda q: quantizer.code(evaluate(q)), direction, low, high, quantizer)
        source = base.name
        if (direction < 0).any():
            dtype = smallest_type(-high, -low) if (direction < 0).all() else \
                smallest_type(min(low, -high), max(high, -low))
            source = self.out.node("Mul", [base.name, self._channel_const(direction, base, "sign")], "oriented",
                                   shape=base.shape, dtype=dtype)
        out = self.out.node("MultiThreshold", [source, self.out.const(thresholds.astype(np.float32), "thresholds")],
                            "act", domain=QONNX_DOMAIN, shape=base.shape, dtype=quantizer.dtype,
                            out_dtype=quantizer.dtype.name, out_scale=quantizer.out_scale,
                            out_bias=quantizer.out_bias)
        channels = base.channels
        scale, offset = np.full(channels, quantizer.scale), np.full(channels, quantizer.offset)
        self.values[node.output[0]] = Codes(out, quantizer.dtype, scale, offset, base.shape,
                                            Exact(node.output[0], scale, offset))

    def _channel_const(self, vector: np.ndarray, codes: Codes, hint: str) -> str:
        return self.out.const(per_channel(np.asarray(vector, dtype=np.float32), len(codes.shape)), hint)

    # -- linear layers -------------------------------------------------------------------------------------------

    def _layer_weights(self, node, name: str) -> Weights:
        if name not in self.weights:
            self._refuse(node, "has float weights between quantized layers; quantize them (weight_bits, or hw=true "
                         "for the stem, shortcut and classifier convs)")
        return self.weights[name]

    def _input_codes(self, node) -> Codes:
        value = self._value(node.input[0])
        if isinstance(value, Monotone):
            self._refuse(node, "reads a real-valued tensor that no quantizer made integer (a BatchNorm, clip or "
                         "PReLU output); put an activation quantizer before the layer")
        if not np.allclose(value.scale, value.scale[0], rtol=0, atol=0):
            self._refuse(node, "reads codes whose scale differs between channels; quantize its input with one "
                         "quantizer")
        return value

    def conv(self, node) -> None:
        x = self._input_codes(node)
        w = self._layer_weights(node, node.input[1])
        if _attr(node, "group", 1) != 1 or set(_attr(node, "dilations", [1, 1])) != {1}:
            self._refuse(node, "is grouped or dilated; use group=1, dilation=1")
        if len(x.shape) != 4:
            self._refuse(node, f"reads a tensor of shape {list(x.shape)}; convolutions take images")
        kernel = list(_attr(node, "kernel_shape", list(w.codes.shape[2:])))
        strides = list(_attr(node, "strides", [1, 1]))
        pads, fill = self.conv_pads.get(node.name, (list(_attr(node, "pads", [0, 0, 0, 0])), 0.0))
        source = x.name
        n, _, h, wd = x.shape
        if any(pads) and fill != 0.0:  # padding with a nonzero value (+-1 for Larq-style models): a Pad first
            code = (fill - x.offset[0]) / x.scale[0]
            if code != round(code) or not x.dtype.allowed(round(code)):
                self._refuse(node, f"pads {x.dtype.name} codes with {fill}, which is no code of its input")
            source = self.out.node("Pad", [source, self.out.const(np.asarray([0, 0, pads[0], pads[1], 0, 0, pads[2],
                                                                               pads[3]]), "pads", numpy_dtype=np.int64),
                                           self.out.const(np.float32(round(code)), "fill")],
                                   "padded", shape=(n, x.channels, h + pads[0] + pads[2], wd + pads[1] + pads[3]),
                                   dtype=x.dtype, mode="constant")
            h, wd, pads = h + pads[0] + pads[2], wd + pads[1] + pads[3], [0, 0, 0, 0]
        elif any(pads) and np.any(x.offset != 0):
            self._refuse(node, "zero-pads codes with an offset (a zero point); quantize its input symmetrically")
        oh = (h + pads[0] + pads[2] - kernel[0]) // strides[0] + 1
        ow = (wd + pads[1] + pads[3] - kernel[1]) // strides[1] + 1
        cout = w.codes.shape[0]
        acc_type = self._matmul_type(x, w.codes.reshape(cout, -1).T)
        weights = self.out.const(w.codes.astype(np.float32), "weights", w.dtype)
        acc = self.out.node("Conv", [source, weights], "acc", shape=(n, cout, oh, ow), dtype=acc_type,
                            kernel_shape=kernel, strides=strides, pads=list(pads), dilations=[1, 1], group=1)
        self._linear(node, x, w, acc, acc_type, w.codes.reshape(cout, -1).T)

    def matmul(self, node) -> None:
        x = self._input_codes(node)
        if len(x.shape) != 2:
            self._refuse(node, f"reads a tensor of shape {list(x.shape)}; flatten it first")
        w = self._layer_weights(node, node.input[1])
        matrix = w.codes
        if node.op_type == "Gemm":
            if _attr(node, "transA", 0) or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
                self._refuse(node, "has transA, alpha or beta; the compiler takes Gemm(A, B, C) as A @ B + C")
            if _attr(node, "transB", 0):
                matrix = matrix.T
        acc_type = self._matmul_type(x, matrix)
        acc = self.out.node("MatMul", [x.name, self.out.const(matrix.astype(np.float32), "weights", w.dtype)], "acc",
                            shape=(x.shape[0], matrix.shape[1]), dtype=acc_type)
        self._linear(node, x, w, acc, acc_type, matrix)

    def _linear(self, node, x: Codes, w: Weights, acc: str, acc_type: DataType, matrix: np.ndarray) -> None:
        """What the integer accumulator ``acc`` of ``codes @ matrix`` (K, N) stands for, per output channel."""
        if x.dtype == DataType["BIPOLAR"] and w.dtype != DataType["BIPOLAR"]:
            # no hardware for it; refused in the user's terms if it ends up in the accelerator (_finish), not when
            # it stays in the host tail (a classifier whose float result the integers cannot reproduce)
            if w.dtype.bitwidth() == 1:  # unsigned 1-bit weights, 0 and 1
                problem = (f"multiplies binary activations by {w.dtype.name} (0/1) weights; the hardware multiplies "
                           "bits by bipolar (+-1) weights only: quantize its weights signed (BipolarQuant)")
            else:
                problem = (f"multiplies binary activations by {w.dtype.name} weights ({w.dtype.bitwidth()}-bit); the "
                           "hardware multiplies bits by 1-bit weights only: quantize this layer's weights to 1 bit "
                           "(weight_bits=1) or its input to 2 bits or more")
            self.unbuildable[acc] = f"node {node_ref(self.src, node)} {problem}"
        cout = matrix.shape[1]
        w_scale = w.scale.reshape(-1) if w.scale.size > 1 else np.full(cout, float(w.scale.reshape(-1)[0]))
        scale = x.scale[0] * w_scale
        offset = np.zeros(cout)
        if np.any(x.offset != 0):  # a zero point: sum_k w_k (s q_k + o_k) = s acc + sum_k w_k o_k
            offset = (matrix * np.resize(x.offset, matrix.shape[0])[:, None]).sum(axis=0) * w_scale
        low, high = integer_range(acc_type)
        has_bias = len(node.input) > 2 and bool(node.input[2])
        exact = None
        if x.exact is not None and not has_bias and not offset.any() and \
                exact_sum(x.scale, w_scale, max(abs(low), abs(high))):
            exact = Exact(node.output[0], scale, offset)
        codes = Codes(acc, acc_type, scale, offset, tuple(self.out.shapes[acc]), exact, parent=x)
        self.values[node.output[0]] = codes
        if has_bias:
            bias = self.src.get_initializer(node.input[2])
            if bias is None:
                self._refuse(node, "has a computed bias")
            self.values[node.output[0]] = Monotone(codes, (Step("add", c=bias.astype(np.float32).reshape(-1)),),
                                                   node.name)

    @staticmethod
    def _matmul_type(x: Codes, matrix: np.ndarray) -> DataType:
        """The range of ``codes @ matrix`` for codes anywhere in their datatype's range."""
        lo, hi = integer_range(x.dtype)
        low = np.minimum(matrix * lo, matrix * hi).sum(axis=0).min()
        high = np.maximum(matrix * lo, matrix * hi).sum(axis=0).max()
        return smallest_type(float(low), float(high))

    # -- elementwise ----------------------------------------------------------------------------------------------

    def _per_channel(self, node, value: Value, constant: np.ndarray) -> np.ndarray:
        base = value.base if isinstance(value, Monotone) else value
        vector = channel_vector(constant, base.shape)
        if vector is None:
            self._refuse(node, f"applies a constant of shape {list(constant.shape)}, not one value per channel")
        return vector

    def _step(self, node, step: Step, source: str | None = None) -> None:
        """An elementwise float op on codes or on a monotone value (``source``, default the node's first input):
        one more step of a monotone value."""
        value = self._value(source or node.input[0])
        if isinstance(value, Codes):
            value = Monotone(value, (), node.name)
        self.values[node.output[0]] = value.then(step)

    def batchnorm(self, node) -> None:
        gamma, beta, mean, var = (self.src.get_initializer(name).astype(np.float32) for name in node.input[1:5])
        # onnxruntime's own float32 arithmetic: scale = gamma * (1 / sqrt(var + eps)), shift = beta - mean * scale
        scale = gamma * (np.float32(1) / np.sqrt(var + np.float32(_attr(node, "epsilon", 1e-5))))
        self._step(node, Step("bn", c=scale, d=beta - mean * scale))

    def arithmetic(self, node) -> None:
        left, right = node.input[0], node.input[1]
        if node.op_type in ("Add", "Sub") and not self._is_constant(left) and not self._is_constant(right):
            if self._branches(node):
                return None
            if node.op_type == "Add":
                return self.join(node)
        constant_first = self._is_constant(left)
        computed, constant = (right, left) if constant_first else (left, right)
        if self._is_constant(computed) or not self._is_constant(constant) or \
                (constant_first and node.op_type == "Div"):
            self._refuse(node, "combines two computed tensors, or divides a constant by one; between quantized "
                         "layers only a residual Add joins two tensors")
        c = self._per_channel(node, self._value(computed), self.src.get_initializer(constant))
        kind = {"Mul": "mul", "Div": "div", "Add": "add", "Sub": "rsub" if constant_first else "sub"}[node.op_type]
        self._step(node, Step(kind, c=c), computed)

    def _branches(self, node) -> bool:
        """An Add or Sub of two functions of the same codes (an activation exported as two branches): one step that
        evaluates both branches and combines them. False when the inputs are not two such functions."""
        a, b = (self._value(name) for name in node.input)
        if not all(isinstance(v, (Codes, Monotone)) for v in (a, b)):
            return False
        base_a, base_b = (v.base if isinstance(v, Monotone) else v for v in (a, b))
        if base_a.name != base_b.name:
            return False
        steps_a, steps_b = (v.steps if isinstance(v, Monotone) else () for v in (a, b))
        shared = 0
        while shared < min(len(steps_a), len(steps_b)) and steps_a[shared] is steps_b[shared]:
            shared += 1
        branches = (steps_a[shared:], steps_b[shared:])
        kind = "add2" if node.op_type == "Add" else "sub2"
        self.values[node.output[0]] = Monotone(base_a, (*steps_a[:shared], Step(kind, branches=branches)), node.name)
        return True

    def neg(self, node) -> None:
        """``-x``: in float32 exactly ``x * -1``."""
        value = self._value(node.input[0])
        channels = (value.base if isinstance(value, Monotone) else value).channels
        self._step(node, Step("mul", c=np.full(channels, -1, dtype=np.float32)))

    def join(self, node) -> None:
        """A residual Add: two code tensors of one scale add as integers."""
        a, b = (self._value(name) for name in node.input)
        if not (isinstance(a, Codes) and isinstance(b, Codes)):
            self._refuse(node, "adds a real-valued tensor that no quantizer made integer; quantize both inputs of "
                         "a residual add, with one scale (the hw=true models do)")
        if a.shape != b.shape:
            self._refuse(node, f"adds tensors of shapes {a.shape} and {b.shape}")
        if not np.array_equal(a.scale, b.scale):
            self._refuse(node, f"adds codes of scales {a.scale[0]:g} and {b.scale[0]:g}; quantize both inputs with "
                         "one scale so the add is an integer add")
        lo_a, hi_a = integer_range(a.dtype)
        lo_b, hi_b = integer_range(b.dtype)
        dtype = smallest_type(lo_a + lo_b, hi_a + hi_b)
        out = self.out.node("Add", [a.name, b.name], "sum", shape=a.shape, dtype=dtype)
        exact = None
        if a.exact is not None and b.exact is not None and np.array_equal(a.exact.a, b.exact.a):
            exact = Exact(node.output[0], a.exact.a, a.exact.b + b.exact.b)
        self.values[node.output[0]] = Codes(out, dtype, a.scale, a.offset + b.offset, a.shape, exact)

    def clip(self, node) -> None:
        value = self._value(node.input[0])
        channels = (value.base if isinstance(value, Monotone) else value).channels
        if node.op_type == "Relu":
            return self._step(node, Step("relu"))
        bounds = []
        for index, default in ((1, -np.inf), (2, np.inf)):
            name = node.input[index] if len(node.input) > index else ""
            bound = self.src.get_initializer(name) if name else None
            if name and bound is None:
                self._refuse(node, "has computed bounds")
            bounds.append(np.full(channels, bound.reshape(-1)[0] if bound is not None else default, dtype=np.float32))
        self._step(node, Step("clip", c=bounds[0], d=bounds[1]))

    def prelu(self, node) -> None:
        slope = self.src.get_initializer(node.input[1])
        if slope is None:
            self._refuse(node, "has a computed slope")
        self._step(node, Step("prelu", c=self._per_channel(node, self._value(node.input[0]), slope)))

    # -- pooling and data movement -------------------------------------------------------------------------------

    def _oriented(self, codes: Codes, direction: np.ndarray) -> Codes:
        """``codes`` with the channels of ``direction`` -1 negated (so a max-pool is a max of what rises)."""
        if (direction > 0).all():
            return codes
        low, high = integer_range(codes.dtype)
        dtype = smallest_type(min(low, -high), max(high, -low))
        name = self.out.node("Mul", [codes.name, self._channel_const(direction, codes, "sign")], "oriented",
                             shape=codes.shape, dtype=dtype)
        exact = None if codes.exact is None else replace(codes.exact, a=codes.exact.a * direction)
        return replace(codes, name=name, dtype=dtype, scale=codes.scale * direction, exact=exact)

    def _moved(self, node, value: Value, name: str, shape: tuple[int, ...], **changes) -> None:
        """The output of a data-movement node (pool, slice, pad, flatten) of ``value``, now in tensor ``name``;
        a monotone value moves its codes and keeps its steps (which act per channel)."""
        codes = value.base if isinstance(value, Monotone) else value
        moved = replace(codes, name=name, shape=tuple(shape), **changes)
        self.values[node.output[0]] = moved if isinstance(value, Codes) else replace(value, base=moved)

    def _exact_moved(self, node, value: Value, codes: Codes) -> Exact | None:
        """A data-movement node keeps the exact reproduction of what it moves (values are copied, not computed)."""
        if isinstance(value, Codes) and codes.exact is not None:
            return replace(codes.exact, origin=node.output[0])
        return None

    def maxpool(self, node) -> None:
        value = self._value(node.input[0])
        if any(_attr(node, "pads", [0, 0, 0, 0])) or _attr(node, "ceil_mode", 0) or \
                set(_attr(node, "dilations", [1, 1])) != {1}:
            self._refuse(node, "is padded, dilated or in ceil mode; use plain max-pooling")
        base = value.base if isinstance(value, Monotone) else value
        if len(base.shape) != 4:
            self._refuse(node, "pools a tensor that is not an image")
        direction = value.direction() if isinstance(value, Monotone) else np.where(value.scale < 0, -1, 1)
        if direction is None:
            self._refuse(node, "pools a function that rises and falls (a PReLU with a negative slope)")
        base = self._oriented(base, direction)
        kernel = list(_attr(node, "kernel_shape"))
        strides = list(_attr(node, "strides", kernel))
        n, c, h, w = base.shape
        shape = (n, c, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1)
        name = self.out.node("MaxPool", [base.name], "pooled", shape=shape, dtype=base.dtype, kernel_shape=kernel,
                             strides=strides)
        exact = self._exact_moved(node, value, base)
        if exact is not None and not (exact.a > 0).all():
            exact = None
        self._moved(node, value if isinstance(value, Monotone) else base, name, shape, exact=exact)

    def avgpool(self, node) -> None:
        value = self._value(node.input[0])
        if not isinstance(value, Codes) or len(value.shape) != 4:
            self._refuse(node, "averages a tensor that is not an image of integer codes; quantize its input")
        n, c, h, w = value.shape
        if node.op_type == "GlobalAveragePool":
            kernel, strides = [h, w], [h, w]
        else:
            if any(_attr(node, "pads", [0, 0, 0, 0])):
                self._refuse(node, "is padded; use unpadded average pooling")
            kernel = list(_attr(node, "kernel_shape"))
            strides = list(_attr(node, "strides", kernel))
            if (h - kernel[0]) % strides[0] or (w - kernel[1]) % strides[1]:
                self._refuse(node, f"has windows that do not tile the {h}x{w} map (a partial window divides by "
                             "fewer values); use a map size the pool divides")
        shape = (n, c, (h - kernel[0]) // strides[0] + 1, (w - kernel[1]) // strides[1] + 1)
        count = kernel[0] * kernel[1]
        low, high = integer_range(value.dtype)
        dtype = smallest_type(low * count, high * count)
        if kernel == [h, w]:
            axes = self.out.const(np.asarray([2, 3]), "axes", numpy_dtype=np.int64)
            summed = self.out.node("ReduceSum", [value.name, axes], "pool_sum", shape=shape, dtype=dtype, keepdims=1)
        else:  # a window sum: a depthwise convolution with weights 1
            ones = self.out.const(np.ones((c, 1, *kernel), dtype=np.float32), "ones")
            summed = self.out.node("Conv", [value.name, ones], "pool_sum", shape=shape, dtype=dtype,
                                   kernel_shape=kernel, strides=strides, pads=[0, 0, 0, 0], dilations=[1, 1], group=c)
        exact = None
        if value.exact is not None and is_power_of_two(np.asarray([count])):
            exact = Exact(node.output[0], value.exact.a / count, value.exact.b)
        self.values[node.output[0]] = replace(value, name=summed, dtype=dtype, scale=value.scale / count,
                                              shape=shape, exact=exact)

    def slice(self, node) -> None:
        value = self._value(node.input[0])
        codes = value.base if isinstance(value, Monotone) else value
        starts, ends, axes, steps = [self.src.get_initializer(node.input[i]) if len(node.input) > i and node.input[i]
                                     else None for i in range(1, 5)]
        if starts is None or ends is None:
            self._refuse(node, "has computed bounds")
        rank = len(codes.shape)
        axes = list(range(len(starts))) if axes is None else [int(a) % rank for a in axes]
        steps = [1] * len(starts) if steps is None else [int(s) for s in steps]
        if rank != 4 or any(a not in (2, 3) for a in axes) or any(s < 1 for s in steps):
            self._refuse(node, "slices other than the image's rows and columns (or backwards); the hardware "
                         "subsamples maps only")
        shape = list(codes.shape)
        for axis, start, end, step in zip(axes, starts, ends, steps):
            shape[axis] = len(range(*slice(int(start), int(end), step).indices(shape[axis])))
        name = self.out.node("Slice", [codes.name, *(self.out.const(np.asarray(v), hint, numpy_dtype=np.int64)
                                                      for v, hint in ((starts, "starts"), (ends, "ends"),
                                                                      (axes, "axes"), (steps, "steps")))],
                             "sliced", shape=shape, dtype=codes.dtype)
        self._moved(node, value, name, tuple(shape), exact=self._exact_moved(node, value, codes))

    def pad(self, node) -> None:
        value = self._value(node.input[0])
        pads = self.src.get_initializer(node.input[1])
        fill = self.src.get_initializer(node.input[2]) if len(node.input) > 2 and node.input[2] else np.zeros(1)
        if pads is None or fill is None or _attr(node, "mode", b"constant") not in (b"constant", "constant"):
            self._refuse(node, "is not a constant pad by constant amounts")
        pads, fill = [int(p) for p in pads], float(fill.reshape(-1)[0])
        consumers = self.src.find_consumers(node.output[0])
        spatial_only = len(pads) == 8 and not any(pads[i] for i in (0, 1, 4, 5))
        if spatial_only and len(consumers) == 1 and consumers[0].op_type == "Conv" and \
                not any(_attr(consumers[0], "pads", [0, 0, 0, 0])):
            # the conv's own padding, with this value: the window pads as it reads
            self.conv_pads[consumers[0].name] = ([pads[2], pads[3], pads[6], pads[7]], fill)
            self.values[node.output[0]] = value
            return
        if not isinstance(value, Codes) or len(value.shape) != 4 or any(pads[i] for i in (0, 2, 3, 4, 6, 7)):
            self._refuse(node, "pads something other than the channels of integer codes (or the image in front of "
                         "a conv); the hardware extends channels with a constant")
        if not (np.all(value.scale == value.scale[0]) and np.all(value.offset == value.offset[0])):
            self._refuse(node, "pads channels of codes whose scales differ")
        code = (fill - value.offset[0]) / value.scale[0]
        if code != round(code) or not value.dtype.allowed(round(code)):
            self._refuse(node, f"pads {value.dtype.name} codes with {fill}, which is no code of its input")
        before, after = pads[1], pads[5]
        n, c, h, w = value.shape
        shape = (n, c + before + after, h, w)
        name = self.out.node("Pad", [value.name, self.out.const(np.asarray([0, before, 0, 0, 0, after, 0, 0]),
                                                                "pads", numpy_dtype=np.int64),
                                     self.out.const(np.float32(round(code)), "fill")],
                             "padded", shape=shape, dtype=value.dtype, mode="constant")
        widen = lambda v: np.concatenate([np.full(before, v[0]), v, np.full(after, v[-1])])  # noqa: E731
        exact = None
        if value.exact is not None and fill == 0 and not value.exact.b.any():
            exact = Exact(node.output[0], widen(value.exact.a), widen(value.exact.b))
        self.values[node.output[0]] = replace(value, name=name, shape=shape, scale=widen(value.scale),
                                              offset=widen(value.offset), exact=exact)

    def flatten(self, node) -> None:
        value = self._value(node.input[0])
        if node.op_type == "Flatten" and _attr(node, "axis", 1) != 1:
            self._refuse(node, "flattens from an axis other than 1")
        codes = value.base if isinstance(value, Monotone) else value
        shape = self.src.get_tensor_shape(node.output[0])
        if shape is None or len(shape) != 2 or shape[1] != int(np.prod(codes.shape[1:])):
            self._refuse(node, f"reshapes to {shape}; between quantized layers only a flatten to (N, C*H*W) is free")
        if len(codes.shape) == 2:
            self.values[node.output[0]] = value
            return
        spatial = int(np.prod(codes.shape[2:]))
        flat = lambda v: np.repeat(v, spatial)  # noqa: E731  (features c * H * W + position: channel-major)
        name = self.out.node("Flatten", [codes.name], "flat", shape=shape, dtype=codes.dtype, axis=1)
        exact = None
        if isinstance(value, Codes) and codes.exact is not None:
            exact = Exact(node.output[0], flat(codes.exact.a), flat(codes.exact.b))
        moved = replace(codes, name=name, shape=tuple(shape), scale=flat(codes.scale), offset=flat(codes.offset),
                        exact=exact)
        if isinstance(value, Codes):
            self.values[node.output[0]] = moved
            return
        self.values[node.output[0]] = Monotone(moved, tuple(s.repeated(spatial) for s in value.steps), value.node)

    # -- the end ---------------------------------------------------------------------------------------------------

    def _finish(self) -> ModelWrapper:
        outputs = list(self.src.graph.output)
        if len(outputs) != 1:
            raise UnsupportedGraphError(f"the graph has {len(outputs)} outputs; the compiler takes one")
        value = self._value(outputs[0].name)
        if isinstance(value, Host) or self.hw_input is None:
            raise UnsupportedGraphError("the graph has no quantized layer to put in hardware; export a quantized model")
        codes = value.base if isinstance(value, Monotone) else value
        while codes.exact is None and codes.parent is not None:
            codes = codes.parent  # a layer whose float result is not reproducible stays on the host
        if codes.exact is None:
            raise UnsupportedGraphError("the integer part of the graph ends in a value whose float result cannot be "
                                        "reproduced exactly; end the network with a quantizer or a layer on integers")
        upstream, todo = set(), [codes.name]
        producers = {out: node for node in self.out.nodes for out in node.output}
        while todo:
            name = todo.pop()
            if name not in upstream:
                upstream.add(name)
                todo.extend(producers[name].input if name in producers else [])
        for acc, problem in self.unbuildable.items():
            if acc in upstream:
                raise UnsupportedGraphError(problem)
        self._tail(codes)
        model = self.out.model(self.src, list(self.src.graph.input), outputs)
        model = _prune(model, outputs[0].name)
        model.set_metadata_prop("bnnflow.streamlined_input", self.hw_input)
        model.set_metadata_prop("bnnflow.streamlined_output", codes.name)
        return model

    def _tail(self, codes: Codes) -> None:
        """Rebuild model.qonnx's tensor ``codes.exact.origin`` from the codes exactly, then replay its float
        nodes from there to the output."""
        origin = codes.exact.origin
        shape = self.src.get_tensor_shape(origin)
        rank = len(codes.shape)
        a = per_channel(codes.exact.a, rank).astype(np.float32)
        b = per_channel(codes.exact.b, rank).astype(np.float32)
        scaled = self.out.node("Mul", [codes.name, self.out.const(a, "scale")], "dequant", shape=shape)
        self.out.node("Add", [scaled, self.out.const(b, "offset")], "dequant", output=origin, shape=shape)
        tail = _downstream(self.src, origin)
        for node in self.src.graph.node:
            if node.name in tail:
                for name in node.input:
                    producer = self.src.find_producer(name) if name else None
                    if name and name != origin and not isinstance(self.values.get(name), Host) and \
                            producer is not None and producer.name not in tail:
                        raise UnsupportedGraphError(f"node {node_ref(self.src, node)} after the last integer layer "
                                                    f"reads {name} as well as {origin}; the host tail takes one input")
                self.out.copy(node, self.src)


def _downstream(model: ModelWrapper, tensor: str) -> set[str]:
    """Names of the nodes that depend on ``tensor``."""
    names, frontier = set(), [tensor]
    while frontier:
        for consumer in model.find_consumers(frontier.pop()):
            if consumer.name not in names:
                names.add(consumer.name)
                frontier.extend(consumer.output)
    return names


def _prune(model: ModelWrapper, output: str) -> ModelWrapper:
    """Drop the nodes and constants the output does not depend on (a host layer's integer twin, say)."""
    needed, frontier = set(), [output]
    producers = {name: node for node in model.graph.node for name in node.output}
    while frontier:
        name = frontier.pop()
        node = producers.get(name)
        if node is not None and node.name not in needed:
            needed.add(node.name)
            frontier.extend(i for i in node.input if i)
    for node in [n for n in model.graph.node if n.name not in needed]:
        model.graph.node.remove(node)
    used = {i for node in model.graph.node for i in node.input}
    for init in [i for i in model.graph.initializer if i.name not in used]:
        model.graph.initializer.remove(init)
    return model
