"""RBONN, Recurrent Bilinear Optimization for BNNs (Xu et al., ECCV 2022, arXiv:2209.01542): the bilinear
coupling of the latent weights and their scale, with a recurrent step that revives sparse filters.

On every binary layer followed by a BatchNorm (``scalable_layers``), for output channel i:

- recurrent module (a weight parametrization, training mode only):
  w_tilde_i = w_i - u_i * DReLU(alpha)_i * g_prev_i, where g_prev is the latent weight's gradient of the previous
  step (a buffer filled in ``after_backward``), u a learned per-channel step (init 0.2, trained at 0.1x the base
  lr: ``param_groups``), and DReLU(alpha) the per-channel gate that is 1 on the floor((1 - tau) C) channels with
  the smallest |alpha|: the sparse filters the paper backtracks. tau = 1 turns the module off. The gradient
  reaches w unchanged (dw_tilde/dw = I); u gets -sum_j dL/dw_tilde_ij * gate_i * g_prev_ij.
- forward: w_hat_i = alpha_i * sign(w_tilde_i) (sign(0) = +1, clipped-STE backward), alpha_i learned (a
  ``ChannelScale``, init mean |w_i|, folded into the BatchNorm when frozen); activations: ApproxSign.
- loss: the task loss plus the bilinear term lam / 2 * sum_i ||w_tilde_i - alpha_i b_i||^2 with b = sign(w_tilde)
  detached and a constant lam = 1e-4 (ReBNN's ``reconstruction_loss``; spec §7.2).

The gate is recomputed in ``after_step`` from the updated alpha, so the next forward uses the current scales, as
the released code (which computes it in the forward) does. Freezing bakes in sign(w), the weight an eval-mode
forward uses: the recurrent step, u, g_prev and the gate vanish with the parametrization.

Where we deviate from the released code (``2_step2_rbonn/rbonn.py``, spec §4.2), and why:

- DReLU selects by rank. The released ``drelu`` compares the argsort indices, not the ranks, with floor(0.4 C),
  so it gates a set of the right size but a scrambled choice of channels, not the smallest-alpha ones;
  ``drelu_rule = "released"`` trains with that gate, for comparing with the released code.
- g_prev is kept in a buffer rather than read from ``w.grad`` before ``zero_grad``, so the module also acts under
  data-parallel training (replicas there have no ``.grad``, which silently disables it in the released code).
- alpha starts at mean |w| (the released ``randn`` init comes from loading stage 1 non-strictly), the weights'
  backward keeps the 1{|w| <= 1} mask, and the class layer keeps a plain clipped-STE sign, as in ReBNN.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from bnnflow.models.methods import estimators, register_method
from bnnflow.models.methods.base import BinaryLayer, Method, SurrogateWeight, latent_weight
from bnnflow.models.methods.rebnn import (
    LayerCache,
    channel_shape,
    parametrized_layers,
    prepare_scaled_binary,
    reconstruction_loss,
)

U_INIT = 0.2
U_LR_SCALE = 0.1
DRELU_RULES = ("rank", "released")


def drelu(alpha: torch.Tensor, tau: float, released: bool = False) -> torch.Tensor:
    """Density-ReLU: 1 on the floor((1 - tau) C) channels with the smallest |alpha| (ties: lower index), else 0.

    ``released``: the released code's gate instead, which compares the argsort indices (not the ranks) with the
    count and puts the k-th comparison on channel k: a gate of the same size on a scrambled set of channels."""
    count = math.floor((1 - tau) * alpha.numel() + 1e-9)
    order = torch.argsort(alpha.abs(), stable=True)
    chosen = order if released else torch.argsort(order)  # the indices, or the ranks
    return (chosen < count).to(alpha.dtype)


class RecurrentStep(nn.Module):
    """w - u * gate * g_prev in training mode, w in eval mode: the weight transform of RBONN's parametrization."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        channels = weight.shape[0]
        self.u = nn.Parameter(torch.full((channels,), U_INIT, dtype=weight.dtype))
        self.register_buffer("gate", torch.zeros(channels, dtype=weight.dtype))
        self.register_buffer("grad_prev", torch.zeros_like(weight))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return w
        return w - (self.u * self.gate).reshape(channel_shape(w)) * self.grad_prev


def recurrent_layers(model: nn.Module) -> Iterator[tuple[BinaryLayer, RecurrentStep]]:
    """(layer, its ``RecurrentStep``) for every layer RBONN scales."""
    for layer, param in parametrized_layers(model):
        if isinstance(getattr(param, "transform", None), RecurrentStep):
            yield layer, param.transform


@register_method
class RBONN(Method):
    """RBONN: learned alpha, constant-weight bilinear reconstruction term, recurrent step on the sparse filters."""

    name = "rbonn"
    amp = ("bf16",)  # g_prev is the raw gradient: fp16's loss scaling scales it, and an overflow would store inf

    def __init__(self, lam: float = 1e-4, tau: float = 0.6, drelu_rule: str = "rank") -> None:
        if lam < 0:
            raise ValueError(f"lam must be non-negative, got {lam}")
        if not 0 <= tau <= 1:
            raise ValueError(f"tau must be in [0, 1], got {tau}")
        if drelu_rule not in DRELU_RULES:
            raise ValueError(f"drelu_rule must be one of {', '.join(DRELU_RULES)}, got {drelu_rule!r}")
        self.lam, self.tau = lam, tau
        self.released_gate = drelu_rule == "released"
        self.layers = LayerCache(recurrent_layers)

    def prepare(self, model: nn.Module) -> None:
        prepare_scaled_binary(model, lambda w: SurrogateWeight(estimators.clipped_ste, RecurrentStep(w)))
        self.layers.reset()
        self.after_step(model)

    def param_groups(self, model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """u at 0.1x the lr and without weight decay (a step size, not a weight); everything else as given."""
        steps = [step.u for _, step in self.layers(model)]
        taken = {id(u) for u in steps}
        rest = [p for p in model.parameters() if p.requires_grad and id(p) not in taken]
        groups = [{"params": rest, "lr": lr, "weight_decay": weight_decay}]
        if steps:
            groups.append({"params": steps, "lr": lr * U_LR_SCALE, "weight_decay": 0.0})
        return groups

    def extra_loss(self, model: nn.Module) -> torch.Tensor | None:
        terms = []
        for layer, step in self.layers(model):
            w_tilde = step(latent_weight(layer))
            lam = torch.full((w_tilde.shape[0],), self.lam, dtype=w_tilde.dtype, device=w_tilde.device)
            terms.append(reconstruction_loss(w_tilde, layer.channel_scale.alpha, lam))
        return torch.stack(terms).sum() if terms else None

    @torch.no_grad()
    def after_backward(self, model: nn.Module) -> None:
        for layer, step in self.layers(model):
            grad = latent_weight(layer).grad
            if grad is not None:
                step.grad_prev.copy_(grad)

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for layer, step in self.layers(model):
            step.gate.copy_(drelu(layer.channel_scale.alpha, self.tau, self.released_gate))

    def freeze(self, model: nn.Module) -> None:
        for _, step in self.layers(model):
            step.grad_prev.zero_()  # bake in sign(w), what eval mode uses, whatever mode the model is in
        self.layers.reset()
        super().freeze(model)
