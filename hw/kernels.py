"""The integer semantics of every hardware op, as plain numpy functions.

These are the reference: the hardware ops' ``execute_node`` calls them, the tests call them, and the fast
simulator must agree with them bit for bit. Conventions (docs/architecture.md, the bit-exact contract):

- a binary tensor holds bits, 1 for +1 and 0 for -1;
- ``bipolar_dot`` returns an XNOR unit's accumulator, the bipolar dot product ``2 * popcount(xnor(x, w)) - K``
  in [-K, K], to which the zero-padding correction of its output position is added;
- ``multithreshold`` returns, per channel, how many thresholds ``T_i <= acc`` (an accumulator exactly on a
  threshold counts);
- feature maps are channels-last (N, H, W, C), and a sliding window emits each patch as (kh, kw, C), channels
  fastest, the order qonnx's ``Im2Col`` uses.

All arithmetic is integer (windows and pools keep their input's dtype; matrix products go through float64 BLAS,
exact for sums below 2**53, far beyond any layer here): nothing clever, since this is the reference the fast
simulator is checked against.
"""

from __future__ import annotations

import numpy as np

#: above this many thresholds a channel, ``multithreshold`` searches them instead of comparing with each
SEARCH_FROM = 8
#: the largest table of counts (values x channels) ``multithreshold`` builds to look counts up
LOOKUP_MAX = 1 << 22


def _int(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.int64, copy=False)



def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """An integer matrix product through float64 BLAS: exact, since every sum here stays far below 2**53."""
    return np.rint(np.asarray(a, dtype=np.float64) @ np.asarray(b, dtype=np.float64)).astype(np.int64)


def int_matmul(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Integer matrix product over the last axis: (..., K) x (K, N) -> (..., N)."""
    return _exact_matmul(values, weights)


def multithreshold(acc: np.ndarray, thresholds: np.ndarray, bias: int = 0, signs: np.ndarray | None = None
                   ) -> np.ndarray:
    """Per channel (last axis), the number of thresholds at or below the accumulator, plus ``bias``.

    Args:
        acc: integer accumulators (..., C).
        thresholds: (C, T) or (1, T) integer thresholds, each row ascending.
        bias: added to every count (a signed code's lowest value).
        signs: per channel +1 or -1: the accumulator's sign in the comparison (-1 for a channel whose activation
            decreases as its accumulator grows).
    """
    acc, t = _int(acc), _int(thresholds)
    if signs is not None:
        acc = acc * _int(signs)
    if t.shape[0] == 1:
        t = np.broadcast_to(t, (acc.shape[-1], t.shape[1]))
    if t.shape[1] <= SEARCH_FROM or acc.size == 0:
        return (acc[..., None] >= t).sum(axis=-1) + int(bias)
    # Many thresholds (a multi-bit code): a count per value instead of a compare per threshold. Each channel's
    # sorted thresholds, clipped to the accumulators' range (which changes no count), are shifted into a band of
    # their own; a table of the count at every value of every band is looked up when it is small, else searched.
    low, high = int(acc.min()), int(acc.max())
    band = high - low + 2
    channels = np.arange(t.shape[0], dtype=np.int64)
    table = (np.sort(np.clip(t, low, high + 1), axis=1) - low + (channels * band)[:, None]).ravel()
    keys = acc + (channels * band - low)
    if band * t.shape[0] <= LOOKUP_MAX:
        values = np.arange(band * t.shape[0])
        lookup = np.searchsorted(table, values, side="right") - (values // band) * t.shape[1] + int(bias)
        return lookup[keys]
    return np.searchsorted(table, keys, side="right") - channels * t.shape[1] + int(bias)


def bipolar_dot(bits: np.ndarray, weight_bits: np.ndarray) -> np.ndarray:
    """The bipolar dot product ``sum (2x - 1)(2w - 1) = 2 * popcount(xnor(x, w)) - K`` of bit vectors."""
    return _exact_matmul(2.0 * np.asarray(bits, dtype=np.float64) - 1, 2.0 * np.asarray(weight_bits, np.float64) - 1)


def padding_correction(acc: np.ndarray, table: np.ndarray, rows: list[int], cols: list[int]) -> np.ndarray:
    """``acc`` (N, OH, OW, C) plus, at each output position (r, c), the row ``rows[r] * len(set(cols)) +
    cols[c]`` of ``table`` (classes, C): the correction of a window that padded with bit 0 where the model padded
    with zeros."""
    n_cols = max(cols) + 1
    index = np.asarray(rows)[:, None] * n_cols + np.asarray(cols)[None, :]  # (OH, OW) class of each position
    return _int(acc) + _int(table)[index]


def sliding_window(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                   padding: tuple[int, int, int, int] = (0, 0, 0, 0), pad_value: int = 0) -> np.ndarray:
    """(N, H, W, C) -> (N, OH, OW, kh * kw * C): each output pixel's patch, channels fastest, the map first padded
    by ``padding`` (top, left, bottom, right) with ``pad_value``."""
    kh, kw = kernel
    sh, sw = stride
    top, left, bottom, right = padding
    x = np.asarray(x)
    if any(padding):
        x = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=pad_value)
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(1, 2))  # N, OH', OW', C, kh, kw
    windows = windows[:, ::sh, ::sw]
    n, oh, ow, c = windows.shape[:4]
    return np.ascontiguousarray(windows.transpose(0, 1, 2, 4, 5, 3)).reshape(n, oh, ow, kh * kw * c)


def maxpool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Max over (kh, kw) windows of an (N, H, W, C) map; on bits this is an OR."""
    kh, kw = kernel
    sh, sw = stride
    windows = np.lib.stride_tricks.sliding_window_view(np.asarray(x), (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    return windows.max(axis=(-2, -1))


def sum_pool(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int]) -> np.ndarray:
    """Sum over (kh, kw) windows of an (N, H, W, C) map: an average pool whose 1 / (kh kw) is left to the layer
    that reads it."""
    kh, kw = kernel
    sh, sw = stride
    windows = np.lib.stride_tricks.sliding_window_view(_int(x), (kh, kw), axis=(1, 2))[:, ::sh, ::sw]
    return windows.sum(axis=(-2, -1))


def downsample(x: np.ndarray, offset: tuple[int, int], stride: tuple[int, int], out: tuple[int, int]) -> np.ndarray:
    """Every ``stride``-th pixel from ``offset`` of an (N, H, W, C) map, ``out`` of them per axis."""
    (oy, ox), (sy, sx), (h, w) = offset, stride, out
    return np.asarray(x)[:, oy: oy + sy * (h - 1) + 1: sy, ox: ox + sx * (w - 1) + 1: sx]


def channel_pad(x: np.ndarray, before: int, after: int, value: int) -> np.ndarray:
    """The channels (last axis) extended by ``before`` and ``after`` channels holding ``value``."""
    x = np.asarray(x)
    widths = [(0, 0)] * (x.ndim - 1) + [(before, after)]
    return np.pad(x, widths, constant_values=value)


def add_streams(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Two integer streams added element by element (a residual join of codes of one scale)."""
    return _int(a) + _int(b)


def label_select(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest scores (last axis), largest first; ties go to the lower index."""
    order = np.argsort(-_int(scores), axis=-1, kind="stable")
    return order[..., :k]
