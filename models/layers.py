"""Building blocks shared by the model families."""

from __future__ import annotations

import math

import brevitas.nn as qnn
import torch
from torch import nn

from bnnflow.models.quantizers import act_quant, weight_quant


class LogitScale(nn.Module):
    """Multiply the last layer's integer accumulators by a learned positive scalar.

    Softmax needs logits of a sensible size, but hardware wants the last layer's integer accumulators and an
    argmax over them. A positive scalar ``exp(log_scale)`` does both: it never changes the argmax, so label
    select stays exact on integers, and it exports as a single ``Mul`` that the compiler can drop. (A per-class
    affine would change the argmax; a scalar bias does nothing under softmax.)
    """

    def __init__(self, fan_in: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.tensor(-0.5 * math.log(fan_in)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.log_scale.exp()
        if not self.training:
            # A constant holding PyTorch's own float: exported as an Exp node, the scale would be folded by
            # onnxruntime's exp, which differs from PyTorch's in the last bit for some values.
            scale = torch.tensor(scale.item(), dtype=x.dtype)
        return x * scale


def quant_act(act_bits: int) -> nn.Module:
    """The activation quantizer module of a layer: sign for 1 bit."""
    return qnn.QuantIdentity(act_quant=act_quant(act_bits), bit_width=act_bits, return_quant_tensor=True)


def linear_head(in_features: int, hidden: list[int], num_classes: int, weight_bits: int, act_bits: int,
                dropout: float = 0.0) -> list[nn.Module]:
    """``QuantLinear (no bias) -> BatchNorm1d -> sign`` per hidden width, then the class layer and its scale."""
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [
            qnn.QuantLinear(in_features, width, bias=False, weight_quant=weight_quant(weight_bits),
                            weight_bit_width=weight_bits),
            nn.BatchNorm1d(width),
            quant_act(act_bits),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        in_features = width
    layers += [
        qnn.QuantLinear(in_features, num_classes, bias=False, weight_quant=weight_quant(weight_bits),
                        weight_bit_width=weight_bits),
        LogitScale(in_features),
    ]
    return layers
