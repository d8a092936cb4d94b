"""Weight oscillation, measured: the fraction of binary weights whose sign changed in an optimizer step.

ReBNN (Xu et al., AAAI 2023) names the late-training sign flipping of latent weights "weight oscillation" and
reports it as this rate; the training loop and the benchmarks use ``FlipRate`` to compare methods on it.

What is compared is the binary weight each layer actually uses, ``sign(layer.weight)`` (sign(0) = +1), not the
latent weight: for a parametrized weight (``base.SurrogateWeight``) ``layer.weight`` is the parametrization's
output, whose sign differs from the latent weight's when the method transforms the weight before the sign
(IR-Net and RBNN standardize or rotate it, RBONN adds its recurrent step). For a plain Brevitas layer the two
are the same tensor (``base.latent_weight``). RBONN's recurrent step only acts in training mode, so call
``update`` while the model is in training mode, right after the optimizer step.
"""

from __future__ import annotations

from collections import deque

import torch
from torch import nn

from bnnflow.models.methods.base import binary_layers


class FlipRate:
    """Tracks sign flips of a model's binary weights from one optimizer step to the next.

    The layers are found once, here: build it after ``method.prepare`` and before ``on_epoch_start`` (ReActNet's
    first step disables the weight quantizers, and a disabled layer no longer reports 1 bit; its weights' signs
    are still tracked, as the binary weights they will become).

    Args:
        model: the prepared model; the signs it has now are the reference for the first ``update``.
        window: how many of the latest steps ``mean`` averages over.
    """

    def __init__(self, model: nn.Module, window: int = 100) -> None:
        if window < 1:
            raise ValueError(f"window must be positive, got {window}")
        self.layers = [layer for _, layer in binary_layers(model)]
        self.window: deque[float] = deque(maxlen=window)
        self.last = float("nan")
        self._positive = self._signs()

    @torch.no_grad()
    def _signs(self) -> list[torch.Tensor]:
        return [(layer.weight >= 0).detach().clone() for layer in self.layers]

    def update(self) -> float:
        """Call after each optimizer step: the fraction of binary weights whose sign changed since the last call."""
        positive = self._signs()
        if not positive:
            self.last = 0.0
            self.window.append(self.last)
            return self.last
        # one read of the device for all layers (a read per layer would wait for a GPU once per layer)
        flipped = int(torch.stack([(new != old).sum() for new, old in zip(positive, self._positive)]).sum())
        total = sum(p.numel() for p in positive)
        self._positive = positive
        self.last = flipped / total if total else 0.0
        self.window.append(self.last)
        return self.last

    def mean(self) -> float:
        """The mean flip rate over the window's steps (nan before the first ``update``)."""
        return sum(self.window) / len(self.window) if self.window else float("nan")
