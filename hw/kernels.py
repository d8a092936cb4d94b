"""The integer semantics of every hardware op, as plain numpy functions.

These are the reference: the hardware ops' ``execute_node`` calls them, the tests call them, and the fast
simulator must agree with them bit for bit. Conventions (docs/architecture.md, the bit-exact contract):

- a binary tensor holds bits, 1 for +1 and 0 for -1;
- ``xnor_popcount_matmul`` returns ``acc = popcount(xnor(x, w))`` in [0, K]; the bipolar dot product is
  ``2 * acc - K``;
- ``multithreshold`` returns, per channel, how many thresholds ``T_i <= acc`` (an accumulator exactly on a
  threshold counts);
- feature maps are channels-last (N, H, W, C), and a sliding window emits each patch as (kh, kw, C), channels
  fastest, the order qonnx's ``Im2Col`` uses.

All arithmetic is in int64 (windows and pools keep their input's dtype): no floating point on the hardware path,
and nothing clever, since this is the reference the fast simulator is checked against.
"""

from __future__ import annotations

import numpy as np


def _int(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.int64)



def xnor_popcount_matmul(bits: np.ndarray, weight_bits: np.ndarray) -> np.ndarray:
    """``popcount(xnor(x, w))`` over the last axis of ``bits`` (..., K) against ``weight_bits`` (K, N)."""
    x, w = _int(bits), _int(weight_bits)
    ones = x @ w  # positions where both are 1
    zeros = (1 - x) @ (1 - w)  # positions where both are 0
    return ones + zeros


def int_matmul(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Integer matrix product over the last axis: (..., K) x (K, N) -> (..., N)."""
    return _int(values) @ _int(weights)


def multithreshold(acc: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Per channel (last axis), the number of thresholds at or below the accumulator.

    Args:
        acc: integer accumulators (..., C).
        thresholds: (C, T) or (1, T) integer thresholds, each row ascending.
    """
    acc, t = _int(acc), _int(thresholds)
    if t.shape[0] == 1:
        t = np.broadcast_to(t, (acc.shape[-1], t.shape[1]))
    return (acc[..., None] >= t).sum(axis=-1)


def sliding_window(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kh * kw * C): each output pixel's patch, channels fastest."""
    kh, kw = kernel
    sh, sw = stride
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(x), (kh, kw), axis=(1, 2))  # N, OH', OW', C, kh, kw
    windows = windows[:, ::sh, ::sw]
    n, oh, ow, c = windows.shape[:4]
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(n, oh, ow, kh * kw * c)


def maxpool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Max over (kh, kw) windows of an (N, H, W, C) map; on bits this is an OR."""
    kh, kw = kernel
    sh, sw = stride
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(x), (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    return windows.max(axis=(-2, -1))


def label_select(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores (last axis), largest first; ties go to the lower index."""
    order = np.argsort(-_int(scores), axis=-1, kind="stable")
    return order[..., :k]
