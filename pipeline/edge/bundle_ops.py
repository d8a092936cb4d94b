"""bnnflow's BinaryConv2d / BinaryConv2dAffine / BinaryConv2dChain / BinaryMatMul ops for ONNX Runtime, standalone
for a deploy bundle (``kernel/bnn_ops.py``).

Needs numpy, onnxruntime-extensions and ``libbnn_xnor.so`` built beside this file from ``xnor_conv.c`` (the
README's build line). Importing the module registers the ops; sessions must load the extensions library
(``options.register_custom_ops_library(onnxruntime_extensions.get_library_path())``). The output hook is the
one bnnflow's own runtime installs (``bnnflow/pipeline/edge/custom_ops.py``): it hands arrays to the library
instead of Python lists, which onnxruntime-extensions 0.15.2's stock hook builds at 20 ms per feature map.
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np
from onnxruntime_extensions import PyOp, _ocos, onnx_op

_LIB = ctypes.CDLL(str(Path(__file__).with_name("libbnn_xnor.so")))
_I, _P = ctypes.c_int, ctypes.c_void_p
_LIB.bnn_pack_nhwc.argtypes = [_P, _I, _I, _I, _I, _P]
_LIB.bnn_conv2d.argtypes = [_P, _I, _I, _I, _I, _P, _I, _I, _I, _I, _I, _I, _I, _P, _P, _P, _P]
_LIB.bnn_matmul.argtypes = [_P, _I, _I, _P, _I, _P]
ATTRS = ("in_channels", "kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")


def _conv(x, wp, in_channels, kernel_h, kernel_w, stride_h, stride_w, pad_h, pad_w, scale=None, bias=None,
          residual=0):
    x, wp = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(wp, np.uint64)
    n, c, h, w = x.shape
    packed = np.empty((n, h, w, -(-c // 64)), np.uint64)
    _LIB.bnn_pack_nhwc(x.ctypes.data, n, c, h, w, packed.ctypes.data)
    y = np.empty((n, wp.shape[0], (h + 2 * pad_h - kernel_h) // stride_h + 1, (w + 2 * pad_w - kernel_w) // stride_w + 1),
                 np.float32)
    if scale is not None:
        scale, bias = np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(bias, np.float32)
    _LIB.bnn_conv2d(packed.ctypes.data, n, c, h, w, wp.ctypes.data, wp.shape[0], kernel_h, kernel_w, stride_h,
                    stride_w, pad_h, pad_w, None if scale is None else scale.ctypes.data,
                    None if bias is None else bias.ctypes.data, x.ctypes.data if residual else None, y.ctypes.data)
    return y


@onnx_op(op_type="BinaryConv2d", inputs=[PyOp.dt_float, PyOp.dt_uint64], outputs=[PyOp.dt_float],
         attrs={name: PyOp.dt_int64 for name in ATTRS})
def binary_conv2d(x, wp, **attrs):
    return _conv(x, wp, **attrs)


@onnx_op(op_type="BinaryConv2dAffine", inputs=[PyOp.dt_float, PyOp.dt_uint64, PyOp.dt_float, PyOp.dt_float],
         outputs=[PyOp.dt_float], attrs={name: PyOp.dt_int64 for name in (*ATTRS, "residual")})
def binary_conv2d_affine(x, wp, scale, bias, **attrs):
    return _conv(x, wp, scale=scale, bias=bias, **attrs)


@onnx_op(op_type="BinaryConv2dChain", inputs=[PyOp.dt_float, PyOp.dt_uint64, PyOp.dt_float, PyOp.dt_float],
         outputs=[PyOp.dt_float], attrs={name: PyOp.dt_int64 for name in (*ATTRS, "layers")})
def binary_conv2d_chain(x, wp, scale, bias, layers, **attrs):
    for layer in range(layers):  # residual BinaryConv2dAffine layers, their Wp, Scale and Bias stacked
        x = _conv(x, wp[layer], scale=scale[layer], bias=bias[layer], residual=1, **attrs)
    return x


@onnx_op(op_type="BinaryMatMul", inputs=[PyOp.dt_float, PyOp.dt_uint64], outputs=[PyOp.dt_float],
         attrs={"in_features": PyOp.dt_int64})
def binary_matmul(x, wp, in_features):
    x, wp = np.ascontiguousarray(x, np.float32), np.ascontiguousarray(wp, np.uint64)
    y = np.empty((x.shape[0], wp.shape[0]), np.float32)
    _LIB.bnn_matmul(x.ctypes.data, x.shape[0], in_features, wp.ctypes.data, wp.shape[0], y.ctypes.data)
    return y


_OWN = {op._nativedef.obj_id: op for op in (binary_conv2d, binary_conv2d_affine, binary_conv2d_chain, binary_matmul)}


def _invoke(op_id, feed, attributes):
    op = _OWN.get(op_id)
    if op is None:
        return _ocos._on_pyop_invocation(op_id, feed, attributes)
    y = op.body(*feed, **op.cast_attributes(attributes))
    return op_id, y.shape, y.reshape(-1)


PyOp.install_hooker(_invoke)
