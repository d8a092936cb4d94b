"""Brevitas quantizers for bnnflow's networks, with the math they implement written down.

Every quantizer has a constant scale, so that a trained network's integer codes map one to one onto the
hardware's: a binary tensor is exactly {-1, +1}, a k-bit tensor is ``scale * q`` with integer ``q``.

Binary (bit width 1), forward and pseudo-gradient (the clipped straight-through estimator, Courbariaux et al.,
BinaryNet, arXiv:1602.02830)::

    q(x) = +1 if x >= 0 else -1          # sign(0) = +1, as in hw/ (docs/architecture.md's bit-exact contract)
    dq/dx = 1 if |x| <= 1 else 0

Binary weights are also clipped in place to [-1, 1] after each step (BinaryConnect), so the latent weights
stay where the estimator passes gradient.

k-bit (bit width k > 1), signed narrow range for weights and signed for activations, every scale a power of
two (``s = 2**-(k-1)`` on [-1, 1], or ``max_val / 2**(k-1)`` for activations)::

    q(x) = clamp(round(x / s), lo, hi) * s          # round half to even; lo, hi the code range
    dq/dx = 1 inside the clamp range, 0 outside (straight-through through round)

The unsigned input quantizer maps [0, 1] onto the codes 0 .. 2**k - 1 with the step 2**-k (``round(x * 2**k)``,
clamped): the digits set's 17 grey levels p / 16 become the codes 16 p (the top level, 16 / 16 = 1, clamps to
255), an 8-bit pixel p / 255 becomes p (p + 1 from p = 128 up, clamped: 254 and 255 both become 255).

Why powers of two: a product of two of them is exact in float32, so the float graph that model.qonnx describes
(and that qonnx's executor runs) computes every layer's sum exactly, and the integer accelerator is equal to it
by construction rather than up to float rounding.

These are thin subclasses of Brevitas's own quantizers that only pin the scale; Brevitas exports them as
qonnx ``BipolarQuant`` (bit width 1) or ``Quant`` nodes.
"""

from __future__ import annotations

from brevitas.inject.enum import RestrictValueType, ScalingImplType
from brevitas.quant import (
    Int8ActPerTensorFloat,
    Int8WeightPerTensorFloat,
    SignedBinaryActPerTensorConst,
    SignedBinaryWeightPerTensorConst,
    Uint8ActPerTensorFloat,
)


class BinaryWeightQuant(SignedBinaryWeightPerTensorConst):
    """Weights in {-1, +1}: sign with sign(0) = +1, clipped STE, latent weights clamped to [-1, 1]."""

    scaling_const = 1.0


class BinaryActQuant(SignedBinaryActPerTensorConst):
    """Activations in {-1, +1}: sign with sign(0) = +1, clipped STE (gradient zero where |x| > 1)."""

    min_val = -1.0
    max_val = 1.0


class IntWeightQuant(Int8WeightPerTensorFloat):
    """k-bit signed narrow-range weights on the fixed power-of-two grid ``2**-(k-1)`` (codes +-(2**(k-1) - 1))."""

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.POWER_OF_TWO
    scaling_const = 1.0


class IntActQuant(Int8ActPerTensorFloat):
    """k-bit signed activations on a fixed grid over [-1, 1]."""

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.FP
    min_val = -1.0
    max_val = 1.0


class InputQuant(Uint8ActPerTensorFloat):
    """k-bit unsigned input codes on [0, 1]: ``q = clamp(round(x * 2**k), 0, 2**k - 1)``, scale ``2**-k``.

    Used through ``QuantReLU`` (``models.layers.input_quant``): the ReLU is a no-op on images, and it is the form
    FINN's QONNX conversion takes an unsigned quantizer in (after a Relu, never on an identity).
    """

    scaling_impl_type = ScalingImplType.CONST
    restrict_scaling_type = RestrictValueType.POWER_OF_TWO
    max_val = 1.0


def weight_quant(bit_width: int) -> type:
    """The weight quantizer for a bit width: binary for 1, k-bit integer otherwise."""
    return BinaryWeightQuant if bit_width == 1 else IntWeightQuant


def act_quant(bit_width: int) -> type:
    """The activation quantizer for a bit width: binary for 1, k-bit integer otherwise."""
    return BinaryActQuant if bit_width == 1 else IntActQuant
