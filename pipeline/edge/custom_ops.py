"""ONNX Runtime custom ops ``BinaryConv2d``, ``BinaryConv2dAffine``, ``BinaryConv2dChain`` and ``BinaryMatMul``
(domain ``ai.onnx.contrib``) over the C kernel.

They go through onnxruntime-extensions' Python custom-op route: importing this module registers the ops with
``onnx_op``, and a session built with ``session_options()`` loads the extensions library that calls them back.
That keeps the edge path a pip install (no ORT C++ build on the boards), at a cost per call of about 15 us
(the GIL, the attribute dict) plus one copy of each input and output (0.1 ms for a 64x56x56 feature map here).

``Wp`` holds the packed weight signs of ``kernel.pack_weights_conv`` / ``kernel.pack_weights_matmul`` as a uint64
initializer; the outputs are float32, exact integers: the sums of sign(x) * sign(w). ``BinaryConv2dAffine`` adds a
float tail in the same pass: ``conv * Scale + Bias`` (a folded BatchNorm, per output channel), plus ``X`` itself
when ``residual`` is 1 (a Bi-Real block), which spares a BatchNormalization and an Add node, each a pass over the
feature map, and a round of copies through the Python route. ``BinaryConv2dChain`` runs ``layers`` residual
``BinaryConv2dAffine`` layers of one geometry back to back (their ``Wp``, ``Scale`` and ``Bias`` stacked), the
intermediate maps in this thread's scratch buffers: one round of copies and one Python call for the whole run.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
from onnxruntime_extensions import PyOp, _ocos, get_library_path, onnx_op

from bnnflow.pipeline.edge import kernel

DOMAIN = "ai.onnx.contrib"
OPSET = onnx.helper.make_opsetid(DOMAIN, 1)  # add to a model's opset_import beside the standard domain

CONV_ATTRIBUTES = ("in_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")
CONV_OUTPUT = "conv output"  # the scratch slot a conv op's result leaves in (see _conv)


def _conv(x: np.ndarray, wp: np.ndarray, attrs: dict[str, int], slot: str = CONV_OUTPUT, **epilogue) -> np.ndarray:
    """The kernel's convolution into a per-thread buffer: ``_invoke`` hands the one in ``CONV_OUTPUT`` to the
    extensions library, which copies it into ONNX Runtime's output before this thread runs another op."""
    (kh, kw), (sh, sw), (ph, pw) = ((attrs[f"{k}_h"], attrs[f"{k}_w"]) for k in ("kernel", "stride", "pad"))
    n, _, h, w = x.shape
    shape = (n, wp.shape[0], (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1)
    return kernel.binary_conv2d(x, wp, attrs["in_channels"], kh, kw, (sh, sw), (ph, pw),
                                out=kernel.scratch(shape, np.float32, slot), **epilogue)


@onnx_op(op_type="BinaryConv2d", inputs=[PyOp.dt_float, PyOp.dt_uint64], outputs=[PyOp.dt_float],
         attrs={name: PyOp.dt_int64 for name in CONV_ATTRIBUTES})
def binary_conv2d_op(x: np.ndarray, wp: np.ndarray, **attrs: int) -> np.ndarray:
    """X float NCHW, Wp uint64 [M, kernel_h * kernel_w * ceil(in_channels / 64)] -> Y float NCHW."""
    return _conv(x, wp, attrs)


@onnx_op(op_type="BinaryConv2dAffine", inputs=[PyOp.dt_float, PyOp.dt_uint64, PyOp.dt_float, PyOp.dt_float],
         outputs=[PyOp.dt_float], attrs={name: PyOp.dt_int64 for name in (*CONV_ATTRIBUTES, "residual")})
def binary_conv2d_affine_op(x: np.ndarray, wp: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                            **attrs: int) -> np.ndarray:
    """As BinaryConv2d, then ``* Scale + Bias`` (float [M] each), then ``+ X`` when ``residual`` is 1."""
    return _conv(x, wp, attrs, scale=scale, bias=bias, residual=bool(attrs["residual"]))


@onnx_op(op_type="BinaryConv2dChain", inputs=[PyOp.dt_float, PyOp.dt_uint64, PyOp.dt_float, PyOp.dt_float],
         outputs=[PyOp.dt_float], attrs={name: PyOp.dt_int64 for name in (*CONV_ATTRIBUTES, "layers")})
def binary_conv2d_chain_op(x: np.ndarray, wp: np.ndarray, scale: np.ndarray, bias: np.ndarray,
                           **attrs: int) -> np.ndarray:
    """``layers`` residual BinaryConv2dAffine layers in a row: Wp uint64 [layers, M, words], Scale and Bias float
    [layers, M]; each layer reads the one before's output. The outputs alternate between two scratch slots, so
    no layer writes the buffer it reads, and the last lands in ``CONV_OUTPUT``."""
    layers = attrs["layers"]
    if not wp.shape[0] == scale.shape[0] == bias.shape[0] == layers:
        raise ValueError(f"a chain of {layers} layers got Wp, Scale, Bias of {wp.shape}, {scale.shape}, {bias.shape}")
    for layer in range(layers):
        slot = CONV_OUTPUT if (layers - layer) % 2 == 1 else "chain step"
        x = _conv(x, wp[layer], attrs, slot, scale=scale[layer], bias=bias[layer], residual=True)
    return x


@onnx_op(op_type="BinaryMatMul", inputs=[PyOp.dt_float, PyOp.dt_uint64], outputs=[PyOp.dt_float],
         attrs={"in_features": PyOp.dt_int64})
def binary_matmul_op(x: np.ndarray, wp: np.ndarray, in_features: int) -> np.ndarray:
    """X float [N, K], Wp uint64 [M, ceil(K / 64)] -> Y float [N, M]."""
    return kernel.binary_matmul(x, wp, in_features)


def _invoke(op_id: int, feed: list[np.ndarray], attributes: dict[str, str]) -> tuple:
    """The extensions library's op hook, returning our outputs as arrays rather than as Python lists.

    The stock hook (``_ocos._on_pyop_invocation``, onnxruntime-extensions 0.15.2) flattens every output with
    ``tolist()``, which costs 20 ms for one 64x56x56 feature map, 40 times the kernel; the library copies an
    array of the declared type straight into the output tensor instead. Every other Python op keeps the stock hook.
    """
    op = _OWN_OPS.get(op_id)
    if op is None:
        return _ocos._on_pyop_invocation(op_id, feed, attributes)
    y = op.body(*feed, **op.cast_attributes(attributes))
    return op_id, y.shape, np.ascontiguousarray(y, dtype=np.float32).reshape(-1)


_OWN_OPS = {op._nativedef.obj_id: op for op in (binary_conv2d_op, binary_conv2d_affine_op, binary_conv2d_chain_op,
                                                 binary_matmul_op)}
PyOp.install_hooker(_invoke)


def session_options() -> onnxruntime.SessionOptions:
    """Session options that load the extensions library, without which ORT rejects the ops as unknown."""
    options = onnxruntime.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    return options


def binary_conv2d_node(x: str, wp: str, y: str, in_channels: int, kernel_shape: int | tuple[int, int],
                       stride: int | tuple[int, int] = 1, pad: int | tuple[int, int] = 0,
                       name: str = "") -> onnx.NodeProto:
    """A ``BinaryConv2d`` node reading tensors ``x`` and ``wp`` (packed weights) and writing ``y``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel.as_pair(kernel_shape), kernel.as_pair(stride), kernel.as_pair(pad)
    return onnx.helper.make_node("BinaryConv2d", [x, wp], [y], name=name, domain=DOMAIN, in_channels=in_channels,
                                 kernel_h=kh, kernel_w=kw, stride_h=sh, stride_w=sw, pad_h=ph, pad_w=pw)


def binary_conv2d_affine_node(conv: onnx.NodeProto, scale: str, bias: str, y: str, residual: bool) -> onnx.NodeProto:
    """``conv`` (a BinaryConv2d node) with its BatchNorm (``scale``, ``bias``) and, if ``residual``, the Add of its
    own input folded in, writing ``y``."""
    node = onnx.helper.make_node("BinaryConv2dAffine", [*conv.input, scale, bias], [y], name=conv.name, domain=DOMAIN,
                                 residual=int(residual))
    node.attribute.extend(conv.attribute)
    return node


def binary_conv2d_chain_node(x: str, wp: str, scale: str, bias: str, y: str, layers: int, in_channels: int,
                             kernel_shape: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                             pad: int | tuple[int, int] = 0, name: str = "") -> onnx.NodeProto:
    """A ``BinaryConv2dChain`` node: ``layers`` residual layers from ``x`` to ``y``, their packed weights,
    scales and biases stacked in ``wp``, ``scale`` and ``bias``."""
    (kh, kw), (sh, sw), (ph, pw) = kernel.as_pair(kernel_shape), kernel.as_pair(stride), kernel.as_pair(pad)
    return onnx.helper.make_node("BinaryConv2dChain", [x, wp, scale, bias], [y], name=name, domain=DOMAIN,
                                 layers=layers, in_channels=in_channels, kernel_h=kh, kernel_w=kw, stride_h=sh,
                                 stride_w=sw, pad_h=ph, pad_w=pw)


def binary_matmul_node(x: str, wp: str, y: str, in_features: int, name: str = "") -> onnx.NodeProto:
    """A ``BinaryMatMul`` node reading ``x`` [N, in_features] and ``wp`` (packed weights) and writing ``y``."""
    return onnx.helper.make_node("BinaryMatMul", [x, wp], [y], name=name, domain=DOMAIN, in_features=in_features)
