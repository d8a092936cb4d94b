"""FTBNN (Su et al., "FTBNN: Rethinking Non-linearity for 1-bit CNNs and Going Beyond", arXiv:2010.09294).

Earlier BNNs shrink the quantization error with scaling factors; FTBNN argues that this makes the binary
convolution ever more linear, and puts explicit, tuned non-linear modules back instead. It then widens the binary
convs and splits them into groups ("group execution") to add capacity at the same binary OPs.

No code was ever released (zhuogege1943/ftbnn holds only a README), and the paper's result tables and exact
module forms were not available when this was written: everything below is a reconstruction from the abstract
and our reading of the paper, and the choices marked (ours) are bnnflow's, to be checked against the PDF (v4).

- Weights: w_b = sign(w), **no scaling factor** (the BatchNorm after the layer absorbs the scale); Brevitas's
  binary quantizer as it is (clipped STE, latent weights clamped to [-1, 1]) (ours: the paper names no weight
  estimator).
- Activations: a_b = sign(a) with Bi-Real's ApproxSign backward, d = 2 - 2|a| on |a| < 1, else 0.
- FPReLU, the "fully parametric" ReLU, per channel c, with z = x + b_in_c:

      FPReLU(x)_c = p_c max(z, 0) + n_c min(z, 0) + b_out_c

  learnable positive slope p (init 1), negative slope n (init ``negative_slope``, 0.25 as PyTorch's PReLU),
  shifts b_in and b_out before and after (init 0), like ReActNet's RPReLU but with a learnable positive slope
  too (the inits are ours). It goes on the output of the BatchNorm after every binary layer that has one, as a
  forward hook on that BatchNorm, so it works on any backbone. The paper puts it after the residual addition;
  a hook on the BatchNorm puts it *before* the addition in a residual unit (ours: the position a method can
  reach without editing the backbone). In a plain chain it is BN -> FPReLU -> next sign. Its parameters are
  not weight-decayed (ours, as is usual for PReLU slopes). It is part of the network, so ``freeze`` keeps it.
- Group execution (``groups`` = G > 1): every binary conv becomes a grouped conv with G groups, at the width
  the backbone was built with. A conv's binary OPs are C_out (C_in / G) k^2 per output position, so widening
  both C_in and C_out by sqrt(G) keeps them: build the backbone with ``group_width(width, G)`` channels per
  binary conv (``binary_ops`` counts them). There is no channel shuffle between groups (ours; not retrieved):
  channels mix in the layers that are not grouped (full-precision shortcuts and downsampling, the class layer).
"""

from __future__ import annotations

import math
from typing import Any

import brevitas.nn as qnn
import torch
from torch import nn

from bnnflow.errors import ConfigError
from bnnflow.models.methods import estimators, register_method
from bnnflow.models.methods.base import (
    Method,
    binary_acts,
    binary_layers,
    next_batchnorm,
    set_act_estimator,
)


class FPReLU(nn.Module):
    """``p max(x + b_in, 0) + n min(x + b_in, 0) + b_out`` per channel (dimension 1), all four learnable."""

    def __init__(self, channels: int, negative_slope: float = 0.25) -> None:
        super().__init__()
        self.shift_in = nn.Parameter(torch.zeros(channels))
        self.slope_pos = nn.Parameter(torch.ones(channels))
        self.slope_neg = nn.Parameter(torch.full((channels,), negative_slope))
        self.shift_out = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        z = x + self.shift_in.reshape(shape)
        return (self.slope_pos.reshape(shape) * torch.relu(z) - self.slope_neg.reshape(shape) * torch.relu(-z)
                + self.shift_out.reshape(shape))


def _apply_fprelu(bn: nn.Module, args: tuple, y: torch.Tensor) -> torch.Tensor:
    return bn.fprelu(y)


def add_fprelu(bn: nn.BatchNorm1d | nn.BatchNorm2d, negative_slope: float) -> None:
    """Put an FPReLU on ``bn``'s output (a module registered as ``bn.fprelu``, applied by a forward hook)."""
    hooked = hasattr(bn, "fprelu")
    bn.fprelu = FPReLU(bn.num_features, negative_slope)
    if not hooked:
        bn.register_forward_hook(_apply_fprelu)


def group_width(width: int, groups: int) -> int:
    """The width that keeps a binary conv's OPs when it is split into ``groups`` groups: ``width * sqrt(groups)``
    rounded to the nearest multiple of ``groups`` (so the groups divide it), at least ``groups``."""
    if width < 1 or groups < 1:
        raise ValueError(f"width and groups must be positive, got width={width}, groups={groups}")
    return max(groups, groups * round(width * math.sqrt(groups) / groups))


def group_binary_convs(model: nn.Module, groups: int) -> None:
    """Make every binary conv a grouped conv with ``groups`` groups, at its width, with fresh weights."""
    for name, layer in binary_layers(model):
        if not isinstance(layer, qnn.QuantConv2d):
            continue
        if layer.groups != 1:
            raise ConfigError(f"ftbnn: {name} is already grouped ({layer.groups} groups); build it ungrouped")
        if layer.in_channels % groups or layer.out_channels % groups:
            raise ConfigError(f"ftbnn: groups={groups} does not divide the {layer.in_channels} -> "
                              f"{layer.out_channels} channels of {name}; build the backbone with widths from "
                              "group_width(width, groups)")
        shape = (layer.out_channels, layer.in_channels // groups, *layer.kernel_size)
        layer.groups = groups
        layer.weight = nn.Parameter(torch.empty(shape, dtype=layer.weight.dtype, device=layer.weight.device))
        layer.reset_parameters()
        layer.weight_quant.init_tensor_quant()  # a quantizer with weight statistics re-reads the new weight


@torch.no_grad()
def binary_ops(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """Binary multiply-accumulates for one sample: per binary layer, outputs x fan-in (C_in / G k^2 for a conv)."""
    total = 0

    def count(layer: nn.Module, args: tuple, y: Any) -> None:
        nonlocal total
        y = getattr(y, "value", y)  # a QuantTensor's values
        total += y[0].numel() * layer.weight[0].numel()

    handles = [layer.register_forward_hook(count) for _, layer in binary_layers(model)]
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, *input_shape, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total


FTBNN_LIMITS = (
    "FPReLU stays in the exported graph (Add, Relu, Neg, Mul, Sub after each binary layer's BatchNorm); the "
    "compiler folds it into the next quantizer's thresholds while it is monotone in every channel (both slopes of "
    "one sign) and refuses, naming the quantizer, a channel whose slopes differ in sign (its sign's preimage is an "
    "interval, two thresholds). With groups > 1 the compiler also refuses the grouped convs, and the edge path runs "
    "them as float convs rather than on its XNOR kernel."
)


@register_method
class FTBNN(Method):
    """FTBNN: sign weights without scale, ApproxSign activations, FPReLU after each binary layer's BatchNorm,
    optional group execution."""

    name = "ftbnn"
    limits = FTBNN_LIMITS

    def __init__(self, groups: int = 1, negative_slope: float = 0.25) -> None:
        if groups < 1:
            raise ValueError(f"groups must be at least 1, got {groups}")
        self.groups = groups
        self.negative_slope = negative_slope

    def prepare(self, model: nn.Module) -> None:
        if self.groups > 1:
            group_binary_convs(model, self.groups)
        bns = [bn for _, layer in binary_layers(model) if (bn := next_batchnorm(model, layer)) is not None]
        if not bns:
            raise ConfigError("ftbnn puts an FPReLU on the BatchNorm after each binary layer, and no binary layer of "
                              "this model is followed by one")
        for bn in bns:
            add_fprelu(bn, self.negative_slope)
        for _, act in binary_acts(model):
            set_act_estimator(act, estimators.approx_sign)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        slopes = [p for m in model.modules() if isinstance(m, FPReLU) for p in m.parameters()]
        ids = {id(p) for p in slopes}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in ids]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        return groups + ([{"params": slopes, "lr": lr, "weight_decay": 0.0}] if slopes else [])
