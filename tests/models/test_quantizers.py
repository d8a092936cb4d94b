"""The binary and input quantizers: sign(0) = +1, exact {-1, +1} outputs, the clipped STE, 8-bit pixel codes."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch

from bnnflow.models.quantizers import (
    BinaryActQuant,
    BinaryWeightQuant,
    InputQuant,
    IntActQuant,
    IntWeightQuant,
    act_quant,
    weight_quant,
)

# Values at and around the interesting points: zeros of both signs, the clip edges +-1 exactly, and beyond.
EDGE_VALUES = [-3.0, -1.0000001, -1.0, -0.9999999, -0.5, -1e-30, -0.0, 0.0, 1e-30, 0.5, 0.9999999, 1.0,
               1.0000001, 3.0]

INPUT_BITS = [8, 4, 2]


def _edge_and_random(seed: int = 0, n: int = 200) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([np.asarray(EDGE_VALUES, dtype=np.float32),
                           (rng.standard_normal(n) * 1.5).astype(np.float32)])


def _sign(x: np.ndarray) -> np.ndarray:
    """sign with sign(0) = sign(-0.0) = +1."""
    return np.where(x >= 0, 1.0, -1.0).astype(np.float32)


def test_quantizer_factories_pick_binary_for_one_bit():
    assert weight_quant(1) is BinaryWeightQuant
    assert act_quant(1) is BinaryActQuant
    assert weight_quant(4) is IntWeightQuant
    assert act_quant(2) is IntActQuant


def test_binary_weight_quant_maps_zero_to_plus_one():
    values = _edge_and_random()
    layer = qnn.QuantLinear(len(values), 1, bias=False, weight_quant=BinaryWeightQuant)
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(values)[None])
    qw = layer.quant_weight()
    got = qw.value.detach().numpy()[0]
    assert set(np.unique(got).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(got, _sign(values))
    assert got[EDGE_VALUES.index(-0.0)] == 1.0
    assert got[EDGE_VALUES.index(0.0)] == 1.0
    assert float(qw.scale) == 1.0
    assert float(qw.bit_width) == 1.0
    np.testing.assert_array_equal(qw.int().numpy()[0], _sign(values).astype(np.int64))


def test_binary_weight_quant_clamps_latent_weights():
    layer = qnn.QuantLinear(4, 1, bias=False, weight_quant=BinaryWeightQuant)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[-2.5, -0.3, 0.3, 2.5]]))
    layer(torch.ones(1, 4))
    assert float(layer.weight.abs().max()) <= 1.0
    np.testing.assert_array_equal(layer.weight.detach().numpy(), np.float32([[-1.0, -0.3, 0.3, 1.0]]))


@pytest.mark.parametrize("training", [True, False])
def test_binary_act_quant_maps_zero_to_plus_one(training):
    values = _edge_and_random(seed=1)
    quant = qnn.QuantIdentity(act_quant=BinaryActQuant, return_quant_tensor=True)
    quant.train(training)
    out = quant(torch.from_numpy(values))
    got = out.value.detach().numpy()
    assert set(np.unique(got).tolist()) == {-1.0, 1.0}
    np.testing.assert_array_equal(got, _sign(values))
    assert got[EDGE_VALUES.index(-0.0)] == 1.0
    assert got[EDGE_VALUES.index(0.0)] == 1.0
    assert float(out.scale) == 1.0
    assert float(out.bit_width) == 1.0
    assert out.signed


def test_binary_act_quant_ste_gradient_is_clipped():
    values = _edge_and_random(seed=2)
    upstream = np.random.default_rng(3).uniform(0.5, 2.0, size=values.shape).astype(np.float32)
    x = torch.from_numpy(values.copy()).requires_grad_(True)
    quant = qnn.QuantIdentity(act_quant=BinaryActQuant, return_quant_tensor=False)
    y = quant(x)
    y.backward(torch.from_numpy(upstream))
    expected = np.where(np.abs(values) <= 1.0, upstream, 0.0).astype(np.float32)
    np.testing.assert_array_equal(x.grad.numpy(), expected)
    # the edges explicitly: zeros and +-1 pass the gradient, just beyond does not
    for v in (-1.0, -0.0, 0.0, 1.0):
        assert x.grad[EDGE_VALUES.index(v)] == upstream[EDGE_VALUES.index(v)]
    for v in (-3.0, -1.0000001, 1.0000001, 3.0):
        assert x.grad[EDGE_VALUES.index(v)] == 0.0


@pytest.mark.parametrize("training", [True, False])
def test_input_quant_8bit_pixel_maps_to_its_code(training):
    pixels = np.arange(256, dtype=np.uint8)
    x = (pixels / 255.0).astype(np.float32)  # exactly as the data loaders scale pixels
    quant = qnn.QuantIdentity(act_quant=InputQuant, bit_width=8, return_quant_tensor=True)
    quant.train(training)
    out = quant(torch.from_numpy(x))
    np.testing.assert_array_equal(out.int().numpy().astype(np.int64), pixels.astype(np.int64))
    codes = (out.value / out.scale).detach().numpy()
    np.testing.assert_array_equal(np.round(codes), pixels.astype(np.float32))
    np.testing.assert_allclose(codes, pixels, atol=1e-3)
    assert float(out.bit_width) == 8.0
    assert not out.signed
    assert float(out.zero_point) == 0.0
    assert float(out.scale) == pytest.approx(1 / 255, rel=1e-6)


@pytest.mark.parametrize("bits", INPUT_BITS)
def test_input_quant_kbit_levels_map_to_codes(bits):
    levels = 2**bits - 1
    codes = np.arange(levels + 1)
    x = (codes / levels).astype(np.float32)
    quant = qnn.QuantIdentity(act_quant=InputQuant, bit_width=bits, return_quant_tensor=True)
    out = quant(torch.from_numpy(x))
    np.testing.assert_array_equal(out.int().numpy().astype(np.int64), codes)
    assert float(out.scale) == pytest.approx(1 / levels, rel=1e-6)


def test_input_quant_clamps_to_unit_range():
    quant = qnn.QuantIdentity(act_quant=InputQuant, bit_width=8, return_quant_tensor=True)
    out = quant(torch.tensor([-0.5, 0.0, 1.0, 1.5]))
    np.testing.assert_array_equal(out.int().numpy().astype(np.int64), [0, 0, 255, 255])
