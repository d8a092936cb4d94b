"""The edge kernel (pipeline/edge/kernel.py, xnor_conv.c) and its ONNX Runtime custom ops, against float references.

- binary_conv2d vs torch's float conv2d on +-1 tensors with zero padding: channel counts below, at and past
  multiples of 64, strides 1 and 2, padding 0 to 2 (including windows wholly in the padding), kernels 1 to 5,
  rows of more than one 8-pixel pass (full, short and side-padded passes), filter counts off a 16-filter block;
- the fused epilogue (a folded BatchNorm, then the residual input) against the same arithmetic in numpy;
- the portable C build (no -march=native) and the aarch64 NEON build under qemu-user on the same cases;
- binary_matmul vs a float matrix product, k not a multiple of 64;
- the packing layouts bit by bit, sign(0) = +1 everywhere;
- a small ONNX graph (BinaryConv2d -> Flatten -> BinaryMatMul) run by onnxruntime equals the kernel, and so does a
  BinaryConv2dChain node equal its residual layers one kernel call at a time;
- a missing or failing compiler is one clear ToolchainError.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

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
    (1, 64, 40, 12, 30, (3, 3), 1, 1),  # rows of 30: three full passes, one short, side padding on both ends
    (2, 130, 24, 11, 21, (3, 3), 2, 1),
    (1, 20, 16, 3, 40, (5, 5), 1, 2),  # two padded columns each side
    (1, 256, 20, 9, 17, (1, 1), 1, 0),
    (1, 8, 8, 6, 13, (3, 3), 1, 4),  # padding past the kernel: whole rows and columns of windows in the padding
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


def _affine_case(residual: bool, seed: int = 4) -> tuple:
    """A 70-channel 3x3 'same' conv with a per-channel scale and bias, and what it must return."""
    rng = np.random.default_rng(seed)
    x, weights = _with_zeros(rng, (2, 70, 9, 21)), _with_zeros(rng, (70, 70, 3, 3))
    scale, bias = rng.uniform(0.1, 2.0, 70).astype(np.float32), rng.standard_normal(70).astype(np.float32)
    want = _torch_conv(x, weights, (1, 1), (1, 1)) * scale[:, None, None] + bias[:, None, None]
    return x, weights, scale, bias, want + x if residual else want


@pytest.mark.parametrize("residual", [False, True])
def test_conv_epilogue_is_batchnorm_then_residual(residual):
    x, weights, scale, bias, want = _affine_case(residual)
    y = kernel.binary_conv2d(x, kernel.pack_weights_conv(weights), 70, 3, 3, 1, 1, scale=scale, bias=bias,
                             residual=residual)
    np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-5)


def test_conv_epilogue_arguments_are_checked():
    wp = kernel.pack_weights_conv(np.ones((4, 8, 3, 3), dtype=np.float32))
    x = np.ones((1, 8, 5, 5), dtype=np.float32)
    with pytest.raises(ValueError, match="go together"):
        kernel.binary_conv2d(x, wp, 8, 3, 3, 1, 1, scale=np.ones(4))
    with pytest.raises(ValueError, match="3 values for 4 output channels"):
        kernel.binary_conv2d(x, wp, 8, 3, 3, 1, 1, scale=np.ones(3), bias=np.ones(3))
    with pytest.raises(ValueError, match="residual needs"):
        kernel.binary_conv2d(x, wp, 8, 3, 3, 1, 1, residual=True)  # 4 filters on 8 channels


def test_conv_counts_long_runs_of_mismatches():
    """Every bit a mismatch, 33 words a tap: the NEON path's per-byte counters must widen before 256."""
    x, weights = np.ones((1, 2100, 3, 3), dtype=np.float32), -np.ones((3, 2100, 3, 3), dtype=np.float32)
    y = kernel.binary_conv2d(x, kernel.pack_weights_conv(weights), 2100, 3, 3, 1, 1)
    np.testing.assert_array_equal(y, _torch_conv(x, weights, (1, 1), (1, 1)))


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


def test_chain_op_in_onnxruntime_equals_the_layers_one_by_one():
    """Three residual layers on 70 channels (two words a pixel) and rows of 21 (a short 8-pixel pass)."""
    layers, rng = 3, np.random.default_rng(5)
    wp = np.stack([kernel.pack_weights_conv(_with_zeros(rng, (70, 70, 3, 3))) for _ in range(layers)])
    scale = rng.uniform(0.1, 2.0, (layers, 70)).astype(np.float32)
    bias = rng.standard_normal((layers, 70)).astype(np.float32)
    node = custom_ops.binary_conv2d_chain_node("x", "wp", "scale", "bias", "y", layers, 70, 3, pad=1, name="chain")
    graph = helper.make_graph([node], "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 70, 9, 21])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 70, 9, 21])],
                              [numpy_helper.from_array(a, name) for a, name in ((wp, "wp"), (scale, "scale"),
                                                                                (bias, "bias"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), custom_ops.OPSET], ir_version=10)
    checker.check_model(model)
    session = onnxruntime.InferenceSession(model.SerializeToString(), custom_ops.session_options(),
                                           providers=["CPUExecutionProvider"])
    x = _with_zeros(rng, (2, 70, 9, 21))
    want = x
    for layer in range(layers):
        want = kernel.binary_conv2d(want, wp[layer], 70, 3, 3, 1, 1, scale=scale[layer], bias=bias[layer],
                                    residual=True)
    for _ in range(2):  # a second run reuses this thread's scratch buffers
        (y,) = session.run(None, {"x": x})
        np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-5)


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


def _all_cases_match(conv) -> None:
    """``conv(x, weights, n, c, m, kernel_shape, stride, pad, scale, bias, residual)`` on every case equals torch."""
    for n, c, m, h, w, kernel_shape, stride, pad in CONV_CASES:
        rng = np.random.default_rng(c * 1000 + m)
        x, weights = _with_zeros(rng, (n, c, h, w)), _with_zeros(rng, (m, c, *kernel_shape))
        want = _torch_conv(x, weights, kernel.as_pair(stride), kernel.as_pair(pad))
        np.testing.assert_array_equal(conv(x, weights, kernel_shape, stride, pad), want, err_msg=str((c, m, h, w)))
    x, weights = np.ones((1, 2100, 3, 3), dtype=np.float32), -np.ones((3, 2100, 3, 3), dtype=np.float32)
    np.testing.assert_array_equal(conv(x, weights, (3, 3), 1, 1), _torch_conv(x, weights, (1, 1), (1, 1)),
                                  err_msg="every bit a mismatch: per-byte counters must not overflow")
    for residual in (False, True):
        x, weights, scale, bias, want = _affine_case(residual)
        got = conv(x, weights, (3, 3), 1, 1, scale=scale, bias=bias, residual=residual)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-5)


def test_portable_build_matches_torch(fresh_build, monkeypatch):
    """The build for a compiler that rejects -march=native: the scalar popcount path, on every case."""
    monkeypatch.setattr(kernel, "FLAG_SETS", (["-O3"],))
    _all_cases_match(lambda x, w, ks, stride, pad, **epilogue: kernel.binary_conv2d(
        x, kernel.pack_weights_conv(w), x.shape[1], *ks, stride, pad, **epilogue))
    assert list(fresh_build.glob("bnnflow/xnor_conv-*.so"))


DRIVER = Path(__file__).with_name("data") / "conv_driver.c"


@pytest.fixture(scope="module")
def aarch64_driver(tmp_path_factory) -> tuple[str, Path]:
    """The kernel built for aarch64 (the NEON path of the Raspberry Pi and Jetson boards), run under qemu-user."""
    gcc, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if gcc is None or qemu is None:
        pytest.skip("no aarch64-linux-gnu-gcc or qemu-aarch64 (make test installs them where apt-get works)")
    driver = tmp_path_factory.mktemp("aarch64") / "conv_driver"
    subprocess.run([gcc, "-std=c99", "-O3", "-static", str(DRIVER), str(kernel.kernel_source()), "-o", str(driver),
                    "-lm"], check=True, capture_output=True)
    return qemu, driver


def test_neon_build_matches_torch(aarch64_driver, tmp_path):
    qemu, driver = aarch64_driver

    def conv(x, w, kernel_shape, stride, pad, scale=None, bias=None, residual=False):
        (kh, kw), (sh, sw), (ph, pw) = kernel_shape, kernel.as_pair(stride), kernel.as_pair(pad)
        n, c, h, width = x.shape
        header = np.array([n, c, h, width, w.shape[0], kh, kw, sh, sw, ph, pw, scale is not None, residual], "<i4")
        parts = [header, x.astype("<f4"), kernel.pack_weights_conv(w).astype("<u8")]
        parts += [] if scale is None else [scale.astype("<f4"), bias.astype("<f4")]
        (tmp_path / "case").write_bytes(b"".join(part.tobytes() for part in parts))
        ran = subprocess.run([qemu, str(driver), str(tmp_path / "case"), str(tmp_path / "y")], capture_output=True,
                             text=True, check=True)
        assert ran.stdout.strip() == "neon"
        shape = (n, w.shape[0], (h + 2 * ph - kh) // sh + 1, (width + 2 * pw - kw) // sw + 1)
        return np.fromfile(tmp_path / "y", dtype="<f4").reshape(shape)

    _all_cases_match(conv)
