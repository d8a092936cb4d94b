"""The edge kernel (pipeline/edge/kernel.py, xnor_conv.c) and its ONNX Runtime custom ops, against float references.

- binary_conv2d vs torch's float conv2d on +-1 tensors with zero padding: channel counts below, at and past
  multiples of 64, strides 1 and 2, padding 0 to 2 (including windows wholly in the padding), kernels 1 to 5;
- binary_matmul vs a float matrix product, k not a multiple of 64;
- the packing layouts bit by bit, sign(0) = +1 everywhere;
- a small ONNX graph (BinaryConv2d -> Flatten -> BinaryMatMul) run by onnxruntime equals the kernel;
- a missing or failing compiler is one clear ToolchainError.
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest
import torch
from onnx import TensorProto, checker, helper, numpy_helper

from bnnflow.errors import ToolchainError
from bnnflow.pipeline.edge import custom_ops, kernel


def _signs(a: np.ndarray) -> np.ndarray:
    return np.where(a >= 0, 1.0, -1.0)


def _with_zeros(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Gaussian values with about a fifth of them exactly 0, where sign(0) = +1 must hold."""
    a = rng.standard_normal(shape).astype(np.float32)
    a[rng.random(shape) < 0.2] = 0.0
    return a


def _torch_conv(x: np.ndarray, w: np.ndarray, stride: tuple[int, int], pad: tuple[int, int]) -> np.ndarray:
    xs, ws = torch.from_numpy(_signs(x)), torch.from_numpy(_signs(w))
    return torch.nn.functional.conv2d(xs, ws, stride=stride, padding=pad).numpy()


# n, c, m, h, w, (kh, kw), stride, pad
CONV_CASES = [
    (1, 3, 8, 9, 9, (3, 3), 1, 1),
    (2, 3, 5, 8, 11, (3, 3), 2, 1),
    (1, 1, 4, 5, 5, (3, 3), 1, 2),
    (1, 17, 6, 7, 6, (5, 5), 1, 2),
    (1, 63, 16, 6, 6, (3, 3), 2, 0),
    (2, 64, 16, 8, 8, (3, 3), 1, 1),
    (1, 64, 33, 9, 9, (3, 3), 2, 1),
    (1, 65, 20, 5, 7, (1, 1), 1, 0),
    (1, 100, 17, 6, 6, (1, 1), 2, 2),  # pad 2 with a 1x1 kernel: border outputs have no taps at all
    (1, 130, 24, 5, 5, (5, 5), 1, 2),
    (1, 128, 32, 7, 7, (3, 3), 1, 1),
    (1, 200, 40, 4, 4, (3, 3), 2, 1),
    (1, 70, 9, 3, 5, (5, 3), (1, 2), (2, 1)),
    (1, 2100, 3, 3, 3, (3, 3), 1, 1),  # 33 words a tap: the NEON path's byte counters widen every 31 words
]


@pytest.mark.parametrize("n,c,m,h,w,kernel_shape,stride,pad", CONV_CASES, ids=str)
def test_conv_matches_torch(n, c, m, h, w, kernel_shape, stride, pad):
    rng = np.random.default_rng(c * 1000 + m)
    x = _with_zeros(rng, (n, c, h, w))
    weights = _with_zeros(rng, (m, c, *kernel_shape))
    y = kernel.binary_conv2d(x, kernel.pack_weights_conv(weights), c, *kernel_shape, stride, pad)
    ref = _torch_conv(x, weights, kernel.as_pair(stride), kernel.as_pair(pad))
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, ref)


@pytest.mark.parametrize("k", [1, 10, 63, 64, 65, 200, 513])
def test_matmul_matches_float(k):
    rng = np.random.default_rng(k)
    x, w = _with_zeros(rng, (5, k)), _with_zeros(rng, (19, k))
    y = kernel.binary_matmul(x, kernel.pack_weights_matmul(w), k)
    np.testing.assert_array_equal(y, _signs(x) @ _signs(w).T)


def test_weight_packing_layout():
    """Word (ky * kw + kx) * CW + cw, bit b = sign of channel 64 * cw + b; the unused high bits stay 0."""
    rng = np.random.default_rng(1)
    w = _with_zeros(rng, (3, 70, 2, 3))
    wp = kernel.pack_weights_conv(w)
    assert wp.dtype == np.uint64 and wp.shape == (3, 2 * 3 * 2)
    for m, ch, ky, kx in np.ndindex(w.shape):
        word = int(wp[m, (ky * 3 + kx) * 2 + ch // 64])
        assert (word >> (ch % 64)) & 1 == (w[m, ch, ky, kx] >= 0)
    assert not (wp[:, 1::2] >> np.uint64(6)).any()  # channels 70..127 of the second word
    assert kernel.pack_weights_matmul(np.array([[0.0, -1.0, 2.0]]))[0, 0] == 0b101


def test_activation_packing_layout():
    """bnn_pack_nhwc: out[(n * h + y) * w + x, cw] bit b = sign of x[n, 64 * cw + b, y, x]."""
    rng = np.random.default_rng(2)
    x = _with_zeros(rng, (2, 66, 3, 4))
    out = np.empty((2, 3, 4, 2), dtype=np.uint64)
    kernel.load_library().bnn_pack_nhwc(x.ctypes.data, 2, 66, 3, 4, out.ctypes.data)
    expected = kernel.pack_weights_matmul(x.transpose(0, 2, 3, 1).reshape(-1, 66)).reshape(out.shape)
    np.testing.assert_array_equal(out, expected)


def test_wrong_shapes_are_value_errors():
    wp = kernel.pack_weights_conv(np.ones((4, 8, 3, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="channels"):
        kernel.binary_conv2d(np.ones((1, 9, 5, 5), dtype=np.float32), wp, 8, 3, 3)
    with pytest.raises(ValueError, match="expected"):
        kernel.binary_conv2d(np.ones((1, 8, 5, 5), dtype=np.float32), wp, 8, 1, 1)
    with pytest.raises(ValueError, match="does not fit"):
        kernel.binary_conv2d(np.ones((1, 8, 2, 2), dtype=np.float32), wp, 8, 3, 3)


def test_custom_ops_in_onnxruntime_equal_the_kernel():
    rng = np.random.default_rng(3)
    conv_w, fc_w = _with_zeros(rng, (12, 70, 3, 3)), _with_zeros(rng, (10, 12 * 4 * 4))
    conv_wp, fc_wp = kernel.pack_weights_conv(conv_w), kernel.pack_weights_matmul(fc_w)
    nodes = [custom_ops.binary_conv2d_node("x", "conv_wp", "c", 70, 3, stride=2, pad=1, name="conv"),
             helper.make_node("Flatten", ["c"], ["f"]),
             custom_ops.binary_matmul_node("f", "fc_wp", "y", 12 * 4 * 4, name="fc")]
    graph = helper.make_graph(nodes, "edge", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 70, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 10])],
                              [numpy_helper.from_array(conv_wp, "conv_wp"), numpy_helper.from_array(fc_wp, "fc_wp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), custom_ops.OPSET], ir_version=10)
    checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), custom_ops.session_options(),
                                           providers=["CPUExecutionProvider"])
    x = _with_zeros(rng, (2, 70, 8, 8))
    (y,) = session.run(None, {"x": x})
    c = kernel.binary_conv2d(x, conv_wp, 70, 3, 3, 2, 1)
    assert y.dtype == np.float32
    np.testing.assert_array_equal(y, kernel.binary_matmul(c.reshape(2, -1), fc_wp, 12 * 4 * 4))
    np.testing.assert_array_equal(c, _torch_conv(x, conv_w, (2, 2), (1, 1)))


@pytest.fixture
def fresh_build(tmp_path, monkeypatch):
    """An empty kernel cache, so the next load_library() compiles; the real library is reloaded afterwards."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    kernel.load_library.cache_clear()
    yield tmp_path
    kernel.load_library.cache_clear()


def test_missing_compiler_is_a_toolchain_error(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", "bnnflow-no-such-cc")
    with pytest.raises(ToolchainError, match="install gcc or clang, or set CC") as err:
        kernel.binary_matmul(np.ones((1, 3), dtype=np.float32), np.zeros((1, 1), dtype=np.uint64), 3)
    assert "\n" not in str(err.value) and "bnnflow-no-such-cc" in str(err.value)


def test_failing_compiler_names_its_log(fresh_build, monkeypatch):
    monkeypatch.setenv("CC", "false")
    with pytest.raises(ToolchainError, match="could not build") as err:
        kernel.load_library()
    assert "\n" not in str(err.value) and str(fresh_build) in str(err.value)
    assert list(fresh_build.glob("bnnflow/*.log"))


def test_kernel_source_ships_beside_the_module():
    assert kernel.kernel_source().name == "xnor_conv.c" and kernel.kernel_source().is_file()
