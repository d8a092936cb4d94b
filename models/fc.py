"""Fully connected binary networks: the digits default and BNN-PYNQ's TFC, SFC and LFC (Umuroglu et al.,
FINN, FPGA 2017; arXiv:1612.07119).

Each hidden layer is ``QuantLinear (no bias) -> BatchNorm1d -> sign``, which streamlines to an XNOR-popcount
unit with one integer threshold per neuron. The input layer takes k-bit unsigned inputs (8 by default)
against binary weights, as FINN's TFC does, and the last layer's integer accumulators go through a
positive scalar (``LogitScale``) so the argmax stays exact in hardware.
"""

from __future__ import annotations

import math

from torch import nn

from bnnflow.models.layers import input_quant, linear_head
from bnnflow.models.registry import register_model


class BinaryMLP(nn.Module):
    """k-bit input, then binary (by default) hidden layers, then a linear layer to the class scores."""

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        hidden: list[int],
        weight_bits: int,
        act_bits: int,
        input_bits: int,
        dropout: float,
    ) -> None:
        super().__init__()
        for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits), ("input_bits", input_bits)):
            if not 1 <= bits <= 8:
                raise ValueError(f"{name} must be between 1 and 8, got {bits}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.input_shape = tuple(input_shape)
        in_features = math.prod(self.input_shape)
        self.input_quant = input_quant(input_bits, return_quant_tensor=True)
        layers = linear_head(in_features, hidden, num_classes, weight_bits, act_bits, dropout)
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(self.input_quant(x.flatten(1)))


def _create_fc(hidden: list[int], **kwargs) -> BinaryMLP:
    """Variants differ only in their hidden widths; everything else is the entry point's arguments."""
    return BinaryMLP(hidden=hidden, **kwargs)


@register_model
def digits_mlp(
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    hidden: int = 128,
    depth: int = 3,
    weight_bits: int = 1,
    act_bits: int = 1,
    input_bits: int = 8,
    dropout: float = 0.0,
) -> BinaryMLP:
    """The bundled default: ``depth`` binary hidden layers of ``hidden`` neurons on 8-bit inputs."""
    if hidden < 1 or depth < 1:
        raise ValueError(f"hidden and depth must be positive, got hidden={hidden}, depth={depth}")
    return _create_fc([hidden] * depth, input_shape=input_shape, num_classes=num_classes, weight_bits=weight_bits,
                      act_bits=act_bits, input_bits=input_bits, dropout=dropout)


@register_model
def tfc(*, input_shape: tuple[int, ...], num_classes: int, weight_bits: int = 1, act_bits: int = 1,
        input_bits: int = 8, dropout: float = 0.2) -> BinaryMLP:
    """BNN-PYNQ TFC: three hidden layers of 64 neurons."""
    return _create_fc([64] * 3, **locals())


@register_model
def sfc(*, input_shape: tuple[int, ...], num_classes: int, weight_bits: int = 1, act_bits: int = 1,
        input_bits: int = 8, dropout: float = 0.2) -> BinaryMLP:
    """BNN-PYNQ SFC: three hidden layers of 256 neurons."""
    return _create_fc([256] * 3, **locals())


@register_model
def lfc(*, input_shape: tuple[int, ...], num_classes: int, weight_bits: int = 1, act_bits: int = 1,
        input_bits: int = 8, dropout: float = 0.2) -> BinaryMLP:
    """BNN-PYNQ LFC: three hidden layers of 1024 neurons."""
    return _create_fc([1024] * 3, **locals())
