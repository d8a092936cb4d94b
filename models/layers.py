"""Building blocks shared by the model families."""

from __future__ import annotations

import math

import brevitas.nn as qnn
import torch
from torch import nn

from bnnflow.models.quantizers import InputQuant, act_quant, weight_quant


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


class _OnnxRuntimeInference:
    """In eval mode, BatchNorm as onnxruntime computes it, in float32: ``x * c + d`` with
    ``c = gamma * (1 / sqrt(var + eps))`` and ``d = beta - mean * c``.

    PyTorch's own inference kernel rounds differently in the last bit, which is harmless before a sign but flips
    a code now and then before an 8-bit quantizer on a fine-grained accumulator; with this, the exported graph (a
    Mul and an Add) computes in onnxruntime exactly what PyTorch does, so export is checked bit for bit.
    """

    def forward(self, x):
        if self.training or self.running_var is None:
            return super().forward(x)
        scale = self.weight * (1.0 / torch.sqrt(self.running_var + self.eps))
        shift = self.bias - self.running_mean * scale
        shape = (1, -1, *[1] * (x.dim() - 2))
        return x * scale.reshape(shape) + shift.reshape(shape)


class ExactBatchNorm1d(_OnnxRuntimeInference, nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose inference onnxruntime reproduces bit for bit."""


class ExactBatchNorm2d(_OnnxRuntimeInference, nn.BatchNorm2d):
    """``nn.BatchNorm2d`` whose inference onnxruntime reproduces bit for bit."""


def batch_norm(channels: int, hw: bool, dims: int = 2) -> nn.Module:
    """BatchNorm for a ``dims``-d feature map; with ``hw`` (integer graphs with multi-bit streams), the form whose
    inference onnxruntime computes exactly as PyTorch does."""
    if hw:
        return ExactBatchNorm2d(channels) if dims == 2 else ExactBatchNorm1d(channels)
    return nn.BatchNorm2d(channels) if dims == 2 else nn.BatchNorm1d(channels)


def input_quant(input_bits: int, return_quant_tensor: bool = False) -> qnn.QuantReLU:
    """The k-bit unsigned input quantizer (``InputQuant``) behind a ReLU, which exports as ``Relu -> Quant``."""
    if not 1 <= input_bits <= 8:
        raise ValueError(f"input_bits must be between 1 and 8, got {input_bits}")
    return qnn.QuantReLU(act_quant=InputQuant, bit_width=input_bits, return_quant_tensor=return_quant_tensor)


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
