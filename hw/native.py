"""The C kernel library (``xnor_kernel.c``), compiled on first use for this machine and loaded with ctypes.

It is built with the system C compiler (``$CC``, default ``cc``) at ``-O3 -march=native``, so the popcount is
the processor's own instruction, into a per-user cache (``$XDG_CACHE_HOME/bnnflow`` or ``~/.cache/bnnflow``)
keyed by the source's hash; later runs load it at once. Without a compiler, ``xnor_popcount_gemm`` falls back to
numpy's ``bitwise_count``: the same results, several times slower.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

SOURCE = Path(__file__).with_name("xnor_kernel.c")
THREADS = max(1, min(4, os.cpu_count() or 1))


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "bnnflow"


@lru_cache(maxsize=1)
def load_library() -> ctypes.CDLL | None:
    """The compiled kernel library, building it if needed; None when no C compiler works here."""
    source = SOURCE.read_bytes()
    key = hashlib.sha256(source + platform.machine().encode() + platform.python_version().encode()).hexdigest()[:16]
    target = _cache_dir() / f"xnor_kernel-{key}.so"
    if not target.is_file():
        compiler = os.environ.get("CC", "cc")
        if shutil.which(compiler) is None:
            return None
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(dir=target.parent) as tmp:  # build beside, then rename: atomic
                built = Path(tmp) / target.name
                flags = ["-O3", "-march=native", "-shared", "-fPIC"]
                result = subprocess.run([compiler, *flags, str(SOURCE), "-o", str(built)], capture_output=True)
                if result.returncode != 0:
                    return None
                os.replace(built, target)
        except OSError:  # an unwritable cache: fall back to numpy rather than fail
            return None
    library = ctypes.CDLL(str(target))
    library.xnor_popcount_gemm.restype = None
    library.xnor_popcount_gemm.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64,
                                           ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    library.int_gemm.restype = None
    library.int_gemm.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                 ctypes.c_void_p]
    return library


def _split_rows(rows: int, call) -> None:
    """Run ``call(lo, hi)`` over row ranges on ``THREADS`` threads; ctypes releases the GIL during each call."""
    step = -(-rows // THREADS) if rows else 1
    chunks = [(i, min(rows, i + step)) for i in range(0, rows, step)]
    if len(chunks) <= 1:
        for lo, hi in chunks:
            call(lo, hi)
        return
    with ThreadPoolExecutor(len(chunks)) as pool:
        list(pool.map(lambda bounds: call(*bounds), chunks))


def xnor_popcount_gemm(x: np.ndarray, w: np.ndarray, k: int) -> np.ndarray:
    """``popcount(xnor(x_r, w_c))`` for packed rows ``x`` (R, words) and ``w`` (C, words) over ``k`` real bits.

    Returns an (R, C) int32 array. Rows are split across threads; ctypes releases the GIL during each call.
    """
    x = np.ascontiguousarray(x, dtype=np.uint64)
    w = np.ascontiguousarray(w, dtype=np.uint64)
    rows, words = x.shape
    cols = w.shape[0]
    out = np.empty((rows, cols), dtype=np.int32)
    library = load_library()
    if library is None:
        for start in range(0, rows, 1024):
            xor = x[start: start + 1024, None, :] ^ w[None, :, :]
            out[start: start + 1024] = k - np.bitwise_count(xor).sum(axis=-1, dtype=np.int64)
        return out

    def run(lo: int, hi: int) -> None:
        library.xnor_popcount_gemm(x[lo:].ctypes.data, w.ctypes.data, hi - lo, cols, words, k, out[lo:].ctypes.data)

    _split_rows(rows, run)
    return out


def int_gemm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Exact integer product of codes ``x`` (R, K) and weights ``w`` (K, C), as int64 (R, C)."""
    library = load_library()
    if library is None:
        return x.astype(np.int64) @ w.astype(np.int64)
    x = np.ascontiguousarray(x, dtype=np.int32)
    wt = np.ascontiguousarray(w.T, dtype=np.int32)
    rows, k = x.shape
    cols = wt.shape[0]
    out = np.empty((rows, cols), dtype=np.int64)

    def run(lo: int, hi: int) -> None:
        library.int_gemm(x[lo:].ctypes.data, wt.ctypes.data, hi - lo, cols, k, out[lo:].ctypes.data)

    _split_rows(rows, run)
    return out
