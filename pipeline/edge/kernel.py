"""The bit-packed XNOR-popcount kernels of the edge runtime (``xnor_conv.c``), compiled on first use and loaded with ctypes.

Built like ``bnnflow.hw.native``: the system C compiler (``$CC``, default ``cc``) at ``-O3 -march=native``, so the
popcount is the processor's own instruction (VPOPCNTQ here, NEON ``cnt`` on the Raspberry Pi and Jetson boards),
into the per-user cache (``$XDG_CACHE_HOME/bnnflow`` or ``~/.cache/bnnflow``) keyed by the source's hash. There
is no numpy fallback: the edge path exists to be fast, so a missing compiler is a ``ToolchainError``.

Packing (shared with the C file): bit ``b`` of word ``i`` holds channel ``64 * i + b``, 1 for sign +1 (sign(0) =
+1), and unused high bits are 0. Convolution weights are ``[m, kh * kw * CW]`` with word ``(ky * kw + kx) * CW + cw``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

from bnnflow.errors import ToolchainError

SOURCE = Path(__file__).with_name("xnor_conv.c")
# -march=native first; some compilers for the boards reject it, and the portable build is still correct.
FLAG_SETS = (["-O3", "-march=native"], ["-O3"])

_INT = ctypes.c_int
_PTR = ctypes.c_void_p
SIGNATURES = {
    "bnn_pack_nhwc": [_PTR, _INT, _INT, _INT, _INT, _PTR],
    "bnn_conv2d": [_PTR, _INT, _INT, _INT, _INT, _PTR, _INT, _INT, _INT, _INT, _INT, _INT, _INT, _PTR, _PTR, _PTR, _PTR],
    "bnn_matmul": [_PTR, _INT, _INT, _PTR, _INT, _PTR],
}


def kernel_source() -> Path:
    """The C source, for deploy bundles that build the kernel on the board itself."""
    return SOURCE


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bnnflow"


def _build(compiler: str, target: Path) -> None:
    """Compile SOURCE into ``target``, beside it then renamed, so a concurrent loader never sees half a file."""
    if shutil.which(compiler) is None:
        raise ToolchainError(f"no C compiler '{compiler}' for the edge kernel: install gcc or clang, or set CC")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        for flags in FLAG_SETS:
            cmd = [compiler, "-std=c99", *flags, "-shared", "-fPIC", str(SOURCE), "-o", str(built), "-lm"]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode == 0:
                os.replace(built, target)
                return
    log = target.with_suffix(".log")
    log.write_text(result.stderr)
    raise ToolchainError(f"'{compiler}' could not build the edge kernel {SOURCE.name}; see {log}")


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL:
    """The compiled kernel library, building it on first use; a ``ToolchainError`` when no compiler works."""
    compiler = os.environ.get("CC", "cc")
    recipe = f"{compiler} {FLAG_SETS} {platform.machine()}".encode()
    key = hashlib.sha256(SOURCE.read_bytes() + recipe).hexdigest()[:16]
    target = _cache_dir() / f"xnor_conv-{key}.so"
    if not target.is_file():
        _build(compiler, target)
    library = ctypes.CDLL(str(target))
    for name, argtypes in SIGNATURES.items():
        getattr(library, name).restype = None
        getattr(library, name).argtypes = argtypes
    return library


def _pack_bits(signs: np.ndarray) -> np.ndarray:
    """Boolean [..., k] (True = +1) -> uint64 [..., ceil(k / 64)], bit ``j % 64`` of word ``j // 64`` = element j."""
    k = signs.shape[-1]
    padded = np.zeros((*signs.shape[:-1], -(-k // 64) * 64), dtype=bool)
    padded[..., :k] = signs
    return np.packbits(padded, axis=-1, bitorder="little").view("<u8").astype(np.uint64)


def pack_weights_conv(w: np.ndarray) -> np.ndarray:
    """Float weights [m, c, kh, kw] -> their signs as uint64 [m, kh * kw * CW], CW = ceil(c / 64)."""
    w = np.asarray(w)
    return _pack_bits(w.transpose(0, 2, 3, 1) >= 0).reshape(w.shape[0], -1)


def pack_weights_matmul(w: np.ndarray) -> np.ndarray:
    """Float weights [m, k] -> their signs as uint64 [m, ceil(k / 64)]."""
    return _pack_bits(np.asarray(w) >= 0)


def as_pair(value: int | tuple[int, int]) -> tuple[int, int]:
    """A stride, padding or kernel size given as one int or an (h, w) pair, as a pair."""
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def _checked(y: np.ndarray) -> np.ndarray:
    """The C kernel fills its output with NaN when it cannot allocate its scratch buffers; results are integers."""
    if y.size and np.isnan(y.flat[0]):
        raise MemoryError("the edge kernel could not allocate its scratch buffers")
    return y


def _words(wp: np.ndarray, words: int, what: str) -> np.ndarray:
    """The packed weights as a contiguous uint64 [m, words] array, the layout the C kernel reads."""
    wp = np.ascontiguousarray(wp, dtype=np.uint64)
    if wp.ndim != 2 or wp.shape[1] != words:
        raise ValueError(f"{what} weights have shape {wp.shape}, expected [m, {words}]")
    return wp


def scratch(shape: tuple[int, ...], dtype: type, slot: str) -> np.ndarray:
    """A buffer of this thread's, reused while the shape stays the same: fresh pages cost more than the kernel's
    own work on small feature maps. The caller must be done with it before its thread asks for ``slot`` again."""
    buffers = _SCRATCH.__dict__.setdefault("buffers", {})
    buffer = buffers.get(slot)
    if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
        buffer = buffers[slot] = np.empty(shape, dtype=dtype)
    return buffer


_SCRATCH = threading.local()


def _channel_vector(value: np.ndarray | None, m: int, what: str) -> np.ndarray | None:
    """A per-output-channel float32 vector of length m (or None), contiguous for the C kernel."""
    if value is None:
        return None
    value = np.ascontiguousarray(value, dtype=np.float32).reshape(-1)
    if value.size != m:
        raise ValueError(f"{what} has {value.size} values for {m} output channels")
    return value


def binary_conv2d(x: np.ndarray, wp: np.ndarray, c: int, kh: int, kw: int, stride: int | tuple[int, int] = 1,
                  pad: int | tuple[int, int] = 0, out: np.ndarray | None = None, scale: np.ndarray | None = None,
                  bias: np.ndarray | None = None, residual: bool = False) -> np.ndarray:
    """``conv2d(sign(x), sign(w))`` with zero padding, for float NCHW ``x`` and packed weights ``wp``; float32 NCHW
    (written into ``out`` when given: a C-contiguous float32 array of the output's shape).

    With ``scale`` and ``bias`` (per output channel) the result is ``conv * scale + bias``, a folded BatchNorm,
    and with ``residual`` ``x`` is added after that: a Bi-Real block's whole float tail in the kernel's own pass."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    n, cx, h, w = x.shape
    if cx != c:
        raise ValueError(f"input has {cx} channels, the weights {c}")
    (sh, sw), (ph, pw) = as_pair(stride), as_pair(pad)
    oh, ow = (h + 2 * ph - kh) // sh + 1, (w + 2 * pw - kw) // sw + 1
    if oh <= 0 or ow <= 0:
        raise ValueError(f"a {kh}x{kw} kernel with padding {(ph, pw)} does not fit a {h}x{w} input")
    cw = -(-c // 64)
    wp = _words(wp, kh * kw * cw, "convolution")
    m = wp.shape[0]
    if (scale is None) != (bias is None):
        raise ValueError("scale and bias go together (a folded BatchNorm)")
    scale, bias = _channel_vector(scale, m, "scale"), _channel_vector(bias, m, "bias")
    if residual and (n, m, oh, ow) != x.shape:
        raise ValueError(f"a residual needs the output's shape {(n, m, oh, ow)} to equal the input's {x.shape}")
    library = load_library()
    xp = scratch((n, h, w, cw), np.uint64, "packed input")
    library.bnn_pack_nhwc(x.ctypes.data, n, c, h, w, xp.ctypes.data)
    y = np.empty((n, m, oh, ow), dtype=np.float32) if out is None else out
    if y.shape != (n, m, oh, ow) or y.dtype != np.float32 or not y.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous float32 array of shape {(n, m, oh, ow)}")
    library.bnn_conv2d(xp.ctypes.data, n, c, h, w, wp.ctypes.data, m, kh, kw, sh, sw, ph, pw,
                       _address(scale), _address(bias), x.ctypes.data if residual else None, y.ctypes.data)
    return _checked(y)


def _address(array: np.ndarray | None) -> int | None:
    return None if array is None else array.ctypes.data


def binary_matmul(x: np.ndarray, wp: np.ndarray, k: int) -> np.ndarray:
    """``sign(x) @ sign(w).T`` for float ``x`` [n, k] and packed weights ``wp`` [m, ceil(k / 64)]; float32 [n, m]."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != k:
        raise ValueError(f"input has shape {x.shape}, expected [n, {k}]")
    wp = _words(wp, -(-k // 64), "matmul")
    y = np.empty((x.shape[0], wp.shape[0]), dtype=np.float32)
    load_library().bnn_matmul(x.ctypes.data, x.shape[0], k, wp.ctypes.data, wp.shape[0], y.ctypes.data)
    return _checked(y)
