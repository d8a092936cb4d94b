"""RBNN, the Rotated Binary Neural Network (Lin et al., NeurIPS 2020, arXiv:2009.13055; code lmbxmu/RBNN).

A per-channel scale only closes the *norm* gap between a weight vector and its sign; RBNN also closes the *angle*
by rotating each filter towards its binary vertex. Per binary layer (conv or linear), with n = C_in k k (or
in_features) = a b, a the largest divisor of n <= sqrt(n):

- weight standardization per filter: w2 = (w - mean) / std, and X_i = w2_i reshaped to a x b;
- bi-rotation: R = R1 (x) R2, applied as R1^T X_i R2 with R1 (a x a) and R2 (b x b) orthogonal and shared by all
  filters of the layer (buffers, random orthogonal at start);
- rotation update, once per epoch, three alternating iterations on the detached X:
  B_i = sign(R1^T X_i R2);  D1 = sum_i B_i R2^T X_i^T = U S V^T, R1 <- V U^T;
  D2 = sum_i X_i^T R1 B_i = U S V^T, R2 <- U V^T;
- adjustable rotation: w3 = w2 + |sin theta_c| (sg[R1^T X R2] - w2), theta learnable per output channel,
  sg = stop-gradient, so dw3/dw2 = 1 - |sin theta| and theta learns through |sin theta|. theta starts uniform in
  [0, pi/2), as in the released ``BinarizeConv2d`` (``torch.rand(...) * pi / 2``). Starting every theta at pi/2
  (full rotation, as a reading of the paper suggests) trains nothing: both dw3/dw2 = 1 - |sin theta| and
  d|sin theta|/dtheta = cos theta are 0 there, so only weight decay and the per-epoch rotation would move the
  weights (measured: 8 % on digits after 30 epochs of SGD);
- forward: y_c = alpha_c (sign(a) . sign(w3_c)), alpha learnable per output channel, init mean |w_c|;
- backward of both signs: the training-aware derivative k max(0, sqrt(2) t - t^2 |x|), t rising from 1e-2 to 10
  over the epochs (``estimators.rbnn_schedule``), k = max(1/t, 1) for weights; k = 1, t = max(t, 1) for
  activations (``BinaryQuantize_a``).

Where this differs from the released code, and why:

- The released code rotates on the first batch of each epoch (``module.epoch`` set before the epoch, reset to -1
  after). The update reads only the weights, so running it in ``on_epoch_start`` gives the same R1, R2.
- R1, R2 start as the QR factor of a ``torch.randn`` matrix (signs fixed by diag(R)) instead of
  ``scipy.stats.ortho_group``: the same Haar distribution, seeded by torch's RNG so runs are reproducible.
- sign(0) = +1 (``torch.sign`` gives 0 there).
- alpha is not put on the class layer: a per-class scale would change the argmax the hardware computes on integers
  (``scalable_layers``); a frozen alpha is folded into the BatchNorm after its layer.
- The released code standardizes every binary layer's input per sample over (C, H, W) before the sign; the paper
  does not. ``act_standardize`` turns it on: since dividing by the std never changes a sign, only the per-sample
  mean is subtracted, right before each binary activation (after the BatchNorm and any nonlinearity in front of it,
  where the released code subtracts it from the conv's input). The threshold then depends on the data, so such a
  model cannot be compiled to static thresholds (``limits``).
"""

from __future__ import annotations

import contextlib
import math

import torch
from torch import nn

from bnnflow.models.methods import estimators, register_method
from bnnflow.models.methods.base import (
    BinaryLayer,
    ChannelScale,
    Method,
    StandardizeFilters,
    binary_acts,
    binary_layers,
    latent_weight,
    mean_abs_per_channel,
    scalable_layers,
    set_act_estimator,
    set_channel_scale,
    set_weight_estimator,
)

ACT_STANDARDIZE_LIMITS = ("act_standardize subtracts each sample's mean from every binary activation's input, so "
                          "the sign threshold depends on the data: the model runs on the edge path, but cannot be "
                          "compiled to the hardware's static thresholds")


def rotation_shape(n: int) -> tuple[int, int]:
    """(a, b) with a * b = n and a the largest divisor of n not above sqrt(n) (``get_ab``)."""
    a = next(d for d in range(math.isqrt(n), 0, -1) if n % d == 0)
    return a, n // a


def random_orthogonal(n: int) -> torch.Tensor:
    """A Haar-random n x n orthogonal matrix from torch's RNG: Q of QR(randn) with the signs of diag(R) fixed."""
    q, r = torch.linalg.qr(torch.randn(n, n))
    return q * torch.where(torch.diagonal(r) >= 0, 1.0, -1.0)


def _sign(x: torch.Tensor) -> torch.Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _full_precision(device_type: str) -> contextlib.AbstractContextManager:
    """Autocast switched off on the device (no-op where there is no autocast, e.g. ``meta``)."""
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type, enabled=False)
    return contextlib.nullcontext()


class RotateFilters(nn.Module):
    """The weight transform of an RBNN layer: standardize, bi-rotate, blend by |sin theta| (the module docstring).

    R1, R2 are buffers and theta a parameter of this module, so they live in the layer's parametrization and are
    saved with the model; freezing bakes sign(w3) in and drops them."""

    def __init__(self, out_channels: int, fan_in: int) -> None:
        super().__init__()
        self.a, self.b = rotation_shape(fan_in)
        self.standardize = StandardizeFilters()
        self.register_buffer("R1", random_orthogonal(self.a))
        self.register_buffer("R2", random_orthogonal(self.b))
        self.theta = nn.Parameter(torch.rand(out_channels) * (math.pi / 2))

    def rotate(self, w2: torch.Tensor) -> torch.Tensor:
        """R1^T X_i R2 for every filter X_i of the standardized weight, in the weight's shape."""
        x = w2.reshape(w2.shape[0], self.a, self.b)
        return (self.R1.t() @ x @ self.R2).reshape_as(w2)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with _full_precision(w.device.type):  # rotated in float32 under amp: bf16 would move signs
            w2 = self.standardize(w)
            blend = self.theta.sin().abs().reshape((-1,) + (1,) * (w.dim() - 1))
            return w2 + blend * (self.rotate(w2).detach() - w2)

    @torch.no_grad()
    def update(self, w: torch.Tensor, iterations: int) -> None:
        """Alternate B, R1, R2 (spec §2.2 step 3) to bring R1^T X_i R2 close to its sign, for all filters at once."""
        x = self.standardize(w).reshape(w.shape[0], self.a, self.b)
        r1, r2 = self.R1.clone(), self.R2.clone()
        for _ in range(iterations):
            b = _sign(r1.t() @ x @ r2)
            u, _, vh = torch.linalg.svd(torch.einsum("iab,icb->ac", b, x @ r2))  # sum_i B_i R2^T X_i^T
            r1 = vh.t() @ u.t()
            u, _, vh = torch.linalg.svd(torch.einsum("iab,iac->bc", x, r1 @ b))  # sum_i X_i^T R1 B_i
            r2 = u @ vh
        self.R1.copy_(r1)
        self.R2.copy_(r2)


def rotation(layer: BinaryLayer) -> RotateFilters:
    """The ``RotateFilters`` of a layer prepared by RBNN."""
    return layer.parametrizations.weight[0].transform


def subtract_sample_mean(module: nn.Module, args: tuple) -> tuple:
    """A forward pre-hook: ``x - mean(x)`` over everything but the batch dimension (RBNN code's standardization;
    the division by the std is left out, as it never changes the sign)."""
    x = args[0]
    return (x - x.mean(dim=tuple(range(1, x.dim())), keepdim=True), *args[1:])


@register_method
class RBNN(Method):
    """RBNN: per-epoch bi-rotation of the standardized weights, |sin theta| blend, learned alpha, training-aware
    sign derivative."""

    name = "rbnn"

    def __init__(self, rotation_iterations: int = 3, act_standardize: bool = False) -> None:
        if rotation_iterations < 0:
            raise ValueError(f"rotation_iterations must be >= 0, got {rotation_iterations}")
        self.rotation_iterations = rotation_iterations
        self.act_standardize = act_standardize
        self.limits = ACT_STANDARDIZE_LIMITS if act_standardize else ""
        self.t, self.k = estimators.rbnn_schedule(0, 1)
        self.layers: list[BinaryLayer] = []

    def weight_derivative(self, x: torch.Tensor) -> torch.Tensor:
        return estimators.training_aware(self.t, self.k)(x)

    def act_derivative(self, x: torch.Tensor) -> torch.Tensor:
        return estimators.training_aware(max(self.t, 1.0), 1.0)(x)

    def prepare(self, model: nn.Module) -> None:
        self.layers = [layer for _, layer in binary_layers(model)]
        for _, layer in scalable_layers(model):
            w = latent_weight(layer)
            set_channel_scale(layer, ChannelScale(w.shape[0], init=mean_abs_per_channel(w)))
        for layer in self.layers:
            w = latent_weight(layer)
            set_weight_estimator(layer, self.weight_derivative, RotateFilters(w.shape[0], w[0].numel()))
        for _, act in binary_acts(model):
            if self.act_standardize:
                act.register_forward_pre_hook(subtract_sample_mean)  # before the estimator's hook; kept when frozen
            set_act_estimator(act, self.act_derivative)

    def on_epoch_start(self, model: nn.Module, epoch: int, epochs: int) -> None:
        self.t, self.k = estimators.rbnn_schedule(epoch, epochs)
        for layer in self.layers:
            rotation(layer).update(latent_weight(layer), self.rotation_iterations)
