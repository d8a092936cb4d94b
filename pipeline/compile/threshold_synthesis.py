"""Integer thresholds for an activation quantizer that reads a monotone function of integer codes.

A quantizer (``Quant`` or ``BipolarQuant``) after BatchNorm, a clip, a PReLU or a scale reads ``f(real(q))``
where ``q`` is an integer accumulator or code and ``f`` is monotone per channel. Its output code is then a
monotone step function of ``q`` alone, so it is exactly ``qmin + (number of thresholds t_j <= q)`` for integer
thresholds ``t_j = min{q : code(q) >= qmin + j}``: qonnx's ``MultiThreshold`` on the integer ``q``. The
thresholds are found by evaluating ``code(q)`` itself (a vectorised binary search over each channel's integer
range), not by inverting ``f`` with algebra, so every detail of the quantizer holds as it is written: round half
to even, clamping, a zero point, a clip before it, a BatchNorm with a negative or zero slope (a channel that
decreases is thresholded on ``-q``; a constant one gets thresholds that always or never fire).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from qonnx.core.datatype import DataType

ROUNDING = {"ROUND": np.round, "FLOOR": np.floor, "CEIL": np.ceil, "ROUND_TO_ZERO": np.trunc}


@dataclass(frozen=True)
class Quantizer:
    """An activation quantizer's integer output and how a ``MultiThreshold`` makes it from a count of fired
    thresholds (``code = count * out_scale + out_bias``); its float output is ``scale * code + offset``.

    ``Quant``: ``code = clamp(rounding(x / scale + zero), qmin, qmax)``, one threshold per code above ``qmin``.
    ``BipolarQuant``: ``code = +1 if x >= 0 else -1``, one threshold.
    ``Trunc``: the integer part of a sum of codes at a coarser step (``Quantizer.trunc``).
    """

    levels: np.ndarray
    out_scale: float
    out_bias: float
    dtype: DataType
    scale: float
    offset: float
    code: Callable[[np.ndarray], np.ndarray]

    @classmethod
    def bipolar(cls, scale: float) -> "Quantizer":
        return cls(np.asarray([1]), 2.0, -1.0, DataType["BIPOLAR"], scale, 0.0,
                   lambda x: np.where(x >= 0, 1, -1).astype(np.int64))

    @classmethod
    def integer(cls, scale: float, zero: float, bits: int, signed: bool, narrow: bool, rounding: str) -> "Quantizer":
        if signed:
            qmin, qmax = -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
            dtype = DataType[f"INT{bits}"]
        else:
            qmin, qmax = 0, 2**bits - 1 - int(narrow)
            dtype = DataType["BINARY"] if bits == 1 else DataType[f"UINT{bits}"]
        round_fn = ROUNDING[rounding]

        def code(x: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", over="ignore"):
                return np.clip(round_fn(x / scale + zero), qmin, qmax).astype(np.int64)

        return cls(np.arange(qmin + 1, qmax + 1), 1.0, float(qmin), dtype, scale, -zero * scale, code)

    @classmethod
    def trunc(cls, scale: np.ndarray, zero: np.ndarray, output_scale: np.ndarray, bits: int, signed: bool,
              narrow: bool, rounding: str) -> "Quantizer":
        """qonnx's ``Trunc`` (v2, Brevitas's ``TruncAvgPool2d``): ``code = clamp(rounding(round(x / scale + zero) /
        t), qmin, qmax)`` with ``t = 2**round(log2(output_scale / scale))``; its float output is
        ``(code - zero / t) * output_scale``. The arithmetic is qonnx's ``trunc_v2``, in its float32 parameters."""
        from qonnx.custom_op.general.quant import max_int, min_int, resolve_rounding_mode

        qmin, qmax = min_int(signed, narrow, bits), max_int(signed, narrow, bits)
        dtype = DataType[f"INT{bits}"] if signed else DataType["BINARY"] if bits == 1 else DataType[f"UINT{bits}"]
        t = 2 ** np.round(np.log2(output_scale / scale))
        round_fn = resolve_rounding_mode(rounding)

        def code(x: np.ndarray) -> np.ndarray:
            with np.errstate(invalid="ignore", over="ignore"):
                y = np.round(x / scale + zero) / t
                return round_fn(np.clip(y, qmin, qmax)).astype(np.int64)

        out_scale = float(output_scale.reshape(-1)[0])
        offset = -float((zero / t).reshape(-1)[0]) * out_scale
        return cls(np.arange(qmin + 1, qmax + 1), 1.0, float(qmin), dtype, out_scale, offset, code)


def synthesize(code_of: Callable[[np.ndarray], np.ndarray], direction: np.ndarray, low: int, high: int,
               quantizer: Quantizer) -> np.ndarray:
    """Thresholds (C, levels) on ``direction * q`` for codes ``q`` in [low, high]: threshold j is the first
    ``q`` whose output code reaches ``quantizer.levels[j]``.

    ``code_of`` maps integer codes shaped (C, L) to the quantizer's output codes; it must be non-decreasing in
    ``direction[c] * q`` for each channel c. A threshold past the range (``high' + 1``) never fires; the lowest one
    (``low'``) always does.
    """
    channels = len(direction)
    levels = np.asarray(quantizer.levels, dtype=np.int64)[None, :]
    sign = np.asarray(direction, dtype=np.int64)[:, None]
    # the oriented domain q' = sign * q: [low, high] for +1, [-high, -low] for -1
    lo = np.where(sign > 0, low, -high) * np.ones((channels, levels.shape[1]), dtype=np.int64)
    hi = np.where(sign > 0, high, -low) + 1 + np.zeros_like(lo)
    while True:
        open_ = lo < hi
        if not open_.any():
            return lo
        mid = (lo + hi) // 2
        fires = code_of(sign * mid) >= levels
        hi = np.where(open_ & fires, mid, hi)
        lo = np.where(open_ & ~fires, mid + 1, lo)
