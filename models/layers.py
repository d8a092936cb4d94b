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
        return x * self.log_scale.exp()
