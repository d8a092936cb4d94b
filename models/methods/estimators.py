"""Sign with a chosen backward pass: the pseudo-gradients of the training methods, as pure functions.

Every estimator has the same forward, ``sign(x)`` with sign(0) = +1 (bnnflow's convention everywhere, where the
papers' ``torch.sign`` gives 0), and differs only in the derivative it uses in the backward pass:

- ``clipped_ste`` (BinaryNet, Courbariaux et al. 2016):  d = 1{|x| <= 1}
- ``approx_sign`` (Bi-Real Net, Liu et al. 2018; used by ReActNet, ReBNN, RBONN, DWR for activations):
  the derivative of F(x) = -1 (x < -1), x^2 + 2x (-1 <= x < 0), -x^2 + 2x (0 <= x < 1), 1 (x >= 1):
  d = 2 - 2|x| for |x| < 1, else 0
- ``training_aware`` (RBNN, Lin et al. 2020): d = k * max(0, sqrt(2) t - t^2 |x|), t and k from ``rbnn_schedule``
- ``ede`` (IR-Net's error decay estimator, Qin et al. 2020): d = k t (1 - tanh(t x)^2), t and k from ``ede_schedule``

``surrogate_sign(x, derivative)`` applies one. Its output is exactly +-1, so a Brevitas binary quantizer placed
after it returns the same values and passes the gradient through unchanged (its clipped STE is 1 on [-1, 1]):
that is how the methods put their estimator in front of Brevitas without touching its quantizers, and why the
exported graph is the same as plain Brevitas's once the method is frozen.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

Derivative = Callable[[torch.Tensor], torch.Tensor]


class _SurrogateSign(torch.autograd.Function):
    """sign(x) (sign(0) = +1) forward, ``grad * derivative(x)`` backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, derivative: Derivative) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.derivative = derivative
        # 2 [x >= 0] - 1 in x's dtype, in place on one new tensor: a sixth of the time of a where() between two
        # constant tensors on an activation map, the same values
        return (x >= 0).to(x.dtype).mul_(2).sub_(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        return grad * ctx.derivative(x), None


def surrogate_sign(x: torch.Tensor, derivative: Derivative) -> torch.Tensor:
    """``sign(x)`` in {-1, +1} whose backward pass multiplies the incoming gradient by ``derivative(x)``."""
    return _SurrogateSign.apply(x, derivative)


def clipped_ste(x: torch.Tensor) -> torch.Tensor:
    """1 where |x| <= 1, else 0: the straight-through estimator of BinaryNet and Brevitas."""
    return (x.abs() <= 1).to(x.dtype)


def approx_sign(x: torch.Tensor) -> torch.Tensor:
    """2 - 2|x| where |x| < 1, else 0: Bi-Real Net's piecewise-quadratic ApproxSign."""
    return torch.clamp(2 - 2 * x.abs(), min=0)


def training_aware(t: float, k: float) -> Derivative:
    """RBNN's ``k * max(0, sqrt(2) t - t^2 |x|)``: about 1.41 wide early in training, a narrow spike late."""
    return lambda x: k * torch.clamp(math.sqrt(2) * t - t * t * x.abs(), min=0)


def ede(t: float, k: float) -> Derivative:
    """IR-Net's error decay estimator ``k t (1 - tanh(t x)^2)``, the derivative of ``k tanh(t x)``."""
    return lambda x: k * t * (1 - torch.tanh(t * x) ** 2)


def _log_schedule(epoch: int, epochs: int, t_min: float, t_max: float) -> float:
    """t rising geometrically from t_min at epoch 0 to t_max at the last epoch."""
    progress = epoch / max(epochs, 1)
    return 10 ** (math.log10(t_min) + (math.log10(t_max) - math.log10(t_min)) * progress)


def rbnn_schedule(epoch: int, epochs: int, t_min: float = 1e-2, t_max: float = 10.0) -> tuple[float, float]:
    """(t, k) of RBNN's training-aware approximation at an epoch (``main.py``: Tmin 1e-2, Tmax 10)."""
    t = _log_schedule(epoch, epochs, t_min, t_max)
    return t, max(1 / t, 1.0)


def ede_schedule(epoch: int, epochs: int, t_min: float = 0.1, t_max: float = 10.0) -> tuple[float, float]:
    """(t, k) of IR-Net's EDE at an epoch (Tmin 0.1, Tmax 10)."""
    t = _log_schedule(epoch, epochs, t_min, t_max)
    return t, max(1 / t, 1.0)
