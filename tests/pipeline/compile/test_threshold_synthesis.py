"""``synthesize`` against brute force: for random monotone maps of integer codes (a float32 affine per channel,
increasing, decreasing or constant, optionally clipped) into a random quantizer, the thresholds equal the first
integer of each level found by trying every integer in range, and ``MultiThreshold``'s count over them
reproduces the quantizer's code at every integer input."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnnflow.pipeline.compile.threshold_synthesis import Quantizer, synthesize


@st.composite
def cases(draw):
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    channels = draw(st.integers(1, 6))
    low = draw(st.integers(-300, 50))
    high = low + draw(st.integers(0, 400))
    slope = rng.normal(0, 1, channels).astype(np.float32) * np.float32(10.0 ** draw(st.integers(-3, 0)))
    slope[rng.random(channels) < 0.2] = 0  # constant channels
    offset = rng.normal(0, 2, channels).astype(np.float32)
    clip = draw(st.sampled_from([None, None, 0.25, 1.0, 2.5]))
    if draw(st.booleans()):
        quantizer = Quantizer.bipolar(scale=draw(st.sampled_from([1.0, 0.5, 0.3])))
    else:
        bits = draw(st.integers(2, 8))
        quantizer = Quantizer.integer(scale=draw(st.sampled_from([2.0 ** -(bits - 1), 1 / 16, 0.1, 0.75])),
                                      zero=draw(st.sampled_from([0.0, 0.0, 1.0, -2.0])), bits=bits,
                                      signed=draw(st.booleans()), narrow=draw(st.booleans()),
                                      rounding=draw(st.sampled_from(["ROUND", "FLOOR", "CEIL", "ROUND_TO_ZERO"])))
    return slope, offset, clip, quantizer, low, high


def real(q: np.ndarray, slope: np.ndarray, offset: np.ndarray, clip) -> np.ndarray:
    """The float32 values the quantizer reads for integer codes ``q`` (C, L)."""
    x = slope[:, None] * q.astype(np.float32) + offset[:, None]
    return x if clip is None else np.clip(x, np.float32(-clip), np.float32(clip))


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(case=cases())
def test_thresholds_equal_brute_force(case):
    slope, offset, clip, quantizer, low, high = case
    channels = len(slope)
    direction = np.where(slope < 0, -1, 1)

    def code_of(q):
        return quantizer.code(real(q, slope, offset, clip))

    thresholds = synthesize(code_of, direction, low, high, quantizer)
    assert thresholds.shape == (channels, len(quantizer.levels))

    q = np.arange(low, high + 1)
    codes = code_of(np.broadcast_to(q, (channels, len(q))))  # (C, L): the quantizer at every integer
    oriented = direction[:, None] * q[None, :]
    for c in range(channels):
        for j, level in enumerate(quantizer.levels):
            reached = oriented[c][codes[c] >= level]
            expected = reached.min() if len(reached) else oriented[c].max() + 1
            assert thresholds[c, j] == expected, (c, j, level)
    # MultiThreshold's semantics on the oriented integer: out_bias + out_scale * (number of thresholds <= q')
    counts = (oriented[:, :, None] >= thresholds[:, None, :]).sum(axis=-1)
    assert np.array_equal(quantizer.out_bias + quantizer.out_scale * counts, codes)


def test_decreasing_channel_is_thresholded_on_the_negated_code():
    """A sign after a BatchNorm with slope -1: code +1 for q <= 0, so on -q the threshold is 0."""
    quantizer = Quantizer.bipolar(scale=1.0)
    thresholds = synthesize(lambda q: quantizer.code(-q.astype(np.float32)), np.array([-1]), -5, 5, quantizer)
    assert thresholds.tolist() == [[0]]
