"""The binary and input quantizers: sign(0) = +1, exact {-1, +1} outputs, the clipped STE, k-bit input codes on
the power-of-two step 2**-k and their export as Relu -> Quant."""

from __future__ import annotations

import brevitas.nn as qnn
import numpy as np
import pytest
import torch

from bnnflow.models import create_model
from bnnflow.models.layers import input_quant
from bnnflow.models.quantizers import (
    BinaryActQuant,
    BinaryWeightQuant,
    IntActQuant,
    IntWeightQuant,
    act_quant,
    weight_quant,
)
from bnnflow.pipeline.execute import execute
from bnnflow.pipeline.export import export_model
from tests.models.exported import check_input_quant

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


def _input_quant_codes(bits: int, x: np.ndarray) -> np.ndarray:
    """The documented input quantizer: ``clamp(round(x * 2**k), 0, 2**k - 1)``, round half to even, in float64."""
    return np.clip(np.round(x.astype(np.float64) * 2**bits), 0, 2**bits - 1).astype(np.int64)


@pytest.mark.parametrize("training", [True, False])
def test_input_quant_8bit_pixel_maps_to_its_code(training):
    """On the step 1/256 a pixel p / 255 lands on p below 128 and on p + 1 from 128 up, clamped to 255: the two
    brightest levels, 254 and 255, share the top code; every other pixel keeps a code of its own."""
    pixels = np.arange(256, dtype=np.int64)
    x = (pixels / 255.0).astype(np.float32)  # exactly as the data loaders scale pixels
    quant = input_quant(8, return_quant_tensor=True)
    quant.train(training)
    out = quant(torch.from_numpy(x))
    got = out.int().numpy().astype(np.int64)
    expected = np.where(pixels < 128, pixels, np.minimum(pixels + 1, 255))
    np.testing.assert_array_equal(got, expected)
    np.testing.assert_array_equal(got, _input_quant_codes(8, x))
    assert len(np.unique(got)) == 255  # only 254 and 255 share a code (255): the clamp at the top
    codes = (out.value / out.scale).detach().numpy()
    np.testing.assert_array_equal(codes, expected.astype(np.float32))  # codes times a power of two: exact
    assert float(out.bit_width) == 8.0
    assert not out.signed
    assert float(out.zero_point) == 0.0
    assert float(out.scale) == 2.0**-8


def test_input_quant_digits_grey_levels_map_to_sixteen_times_their_level():
    """The digits set's 17 levels p / 16 land on 16 p; the top one, 1.0, clamps to 255 (16 p would be 256)."""
    levels = np.arange(17)
    out = input_quant(8, return_quant_tensor=True)(torch.from_numpy((levels / 16.0).astype(np.float32)))
    np.testing.assert_array_equal(out.int().numpy().astype(np.int64), np.minimum(16 * levels, 255))


@pytest.mark.parametrize("bits", INPUT_BITS + [1])
def test_input_quant_kbit_levels_map_to_codes(bits):
    """The grid points c / 2**k are the codes c exactly; the old levels c / (2**k - 1) round to the nearest
    grid point, and 1.0 clamps to the top code."""
    codes = np.arange(2**bits)
    quant = input_quant(bits, return_quant_tensor=True)
    out = quant(torch.from_numpy((codes / 2**bits).astype(np.float32)))
    np.testing.assert_array_equal(out.int().numpy().astype(np.int64), codes)
    assert float(out.scale) == 2.0**-bits
    levels = (codes / (2**bits - 1)).astype(np.float32)
    got = quant(torch.from_numpy(levels)).int().numpy().astype(np.int64)
    np.testing.assert_array_equal(got, _input_quant_codes(bits, levels))
    assert got[0] == 0 and got[-1] == 2**bits - 1


@pytest.mark.parametrize("bits", INPUT_BITS)
def test_input_quant_rounds_half_to_even_on_its_grid(bits):
    """Midpoints between grid points go to the even code, as ``round`` in qonnx's Quant does."""
    midpoints = (np.arange(2**bits - 1) + 0.5) / 2**bits
    out = input_quant(bits, return_quant_tensor=True)(torch.from_numpy(midpoints.astype(np.float32)))
    got = out.int().numpy().astype(np.int64)
    np.testing.assert_array_equal(got, _input_quant_codes(bits, midpoints))
    assert np.all(got % 2 == 0)


def test_input_quant_is_a_relu_quantizer_and_refuses_other_bit_widths():
    assert isinstance(input_quant(8), qnn.QuantReLU)
    for bits in (0, 9):
        with pytest.raises(ValueError, match="input_bits"):
            input_quant(bits)


def test_input_quant_exports_relu_then_unsigned_power_of_two_quant():
    """FINN's QONNX conversion takes an unsigned quantizer after a Relu: the export is Relu -> Quant with scale
    2**-k, and qonnx's execution of it gives the codes PyTorch does."""
    for bits in (8, 2):
        torch.manual_seed(0)
        model = create_model("digits_mlp", input_shape=(1, 8, 8), num_classes=10, hidden=16, depth=1,
                             input_bits=bits).eval()
        wrapper = export_model(model, (1, 8, 8))
        quant = check_input_quant(wrapper.graph, bits)
        x = np.random.default_rng(bits).uniform(-0.1, 1.1, size=(8, 1, 8, 8)).astype(np.float32)
        got = execute(wrapper, x, outputs=[quant.output[0]], batch=8)[quant.output[0]]
        with torch.no_grad():
            expected = model.input_quant(torch.from_numpy(x)).value.numpy()
        np.testing.assert_array_equal(got.reshape(expected.shape), expected)


def test_input_quant_clamps_to_unit_range():
    quant = input_quant(8, return_quant_tensor=True)
    out = quant(torch.tensor([-0.5, 0.0, 1.0, 1.5]))
    np.testing.assert_array_equal(out.int().numpy().astype(np.int64), [0, 0, 255, 255])
