"""Building blocks shared by the model families."""

from __future__ import annotations

import math

import torch
from torch import nn


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
