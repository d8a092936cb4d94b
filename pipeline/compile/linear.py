"""Linear layers (Conv, MatMul, Gemm) on integer codes: their weights as codes, their accumulators, the zero
padding of bipolar maps, and whether model.qonnx's float result equals the integer one exactly.

A binary layer's input bits stand for ``2 b - 1``. A zero-padded convolution puts 0 at the border, which no bit
stands for, so the window pads with a fixed bit ``p`` (value ``2 p - 1``) and the accumulator gets a correction
per output position and channel: ``-(2 p - 1) * sum of the weights whose taps fall on padding``. It depends on
the weights and on which taps of the window are outside the map, nothing else, so it is a constant
(OH, OW, C) table, added to the accumulator (``Add`` in streamlined.onnx; the MVTU's correction table in
hardware, compressed to the window's border classes). A model trained with +1 or -1 padding (``pad_value``) pads
with that bit and needs no correction.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from qonnx.core.datatype import DataType


@dataclass(frozen=True)
class Weights:
    """A quantized weight tensor: integer ``codes`` and the ``scale`` per output channel (float64) that makes
    model.qonnx's weight values, and its datatype (``BIPOLAR`` for +-1)."""

    codes: np.ndarray
    scale: np.ndarray
    dtype: DataType


def conv_matrix(codes: np.ndarray) -> np.ndarray:
    """(Cout, Cin, kh, kw) weights as the (kh * kw * Cin, Cout) matrix that multiplies qonnx Im2Col's patches,
    whose values come in (kh, kw, Cin) order, channels fastest."""
    cout = codes.shape[0]
    return codes.transpose(2, 3, 1, 0).reshape(-1, cout)


def padding_mask(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                 pads: list[int]) -> np.ndarray:
    """(OH, OW, kh, kw): True where a window tap falls on padding. ``pads`` are ONNX's (top, left, bottom,
    right)."""
    (h, w), (kh, kw), (sh, sw) = in_hw, kernel, stride
    top, left, bottom, right = pads
    oh, ow = (h + top + bottom - kh) // sh + 1, (w + left + right - kw) // sw + 1
    rows = np.arange(oh)[:, None] * sh + np.arange(kh)[None, :] - top  # (OH, kh) input row of each tap
    cols = np.arange(ow)[:, None] * sw + np.arange(kw)[None, :] - left
    outside_r = (rows < 0) | (rows >= h)
    outside_c = (cols < 0) | (cols >= w)
    return outside_r[:, None, :, None] | outside_c[None, :, None, :]


def padding_correction(weights: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(OH, OW, Cout): the sum of each output channel's weights over the taps on padding."""
    per_tap = weights.sum(axis=1)  # (Cout, kh, kw): summed over input channels, every channel pads alike
    return np.einsum("yxij,cij->yxc", mask.astype(np.int64), per_tap.astype(np.int64))


def is_power_of_two(values: np.ndarray) -> bool:
    """Whether every value is +-2**k: such scales keep products exact in float32."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    if not (values > 0).all():
        return False
    mantissa, _ = np.frexp(values)
    return bool((mantissa == 0.5).all())


#: float32 holds every integer below this exactly
FLOAT32_EXACT = 2**24


def exact_sum(input_scale: np.ndarray, weight_scale: np.ndarray, bound: float) -> bool:
    """Whether model.qonnx computes a layer's sums exactly in float32: inputs and weights are integers times
    powers of two, and no partial sum exceeds float32's exact integers (``bound`` is the largest possible sum of
    |code| * |weight code|)."""
    return is_power_of_two(input_scale) and is_power_of_two(weight_scale) and bound < FLOAT32_EXACT
