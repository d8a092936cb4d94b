"""DWR (Xue et al., "Fast and Accurate Binary Neural Networks based on Depth-Width Reshaping", AAAI 2023; code
pingxue-hfut/DWR).

Binarization errors accumulate with depth, so a BNN backbone should be shallower and wider than a full-precision
one at the same compute. DWR has three parts; the first two are offline tools, the third a ``Method``:

1. ``reshape_depth_width``: binary compute grows as depth x width^2 and the activation volume as depth x width,
   so dividing the depth by s and multiplying the widths by sqrt(s) keeps the compute and cuts the activations
   by sqrt(s). The released models use s = 2 (CIFAR ResNet-18 [2,2,2,2] -> [1,1,1,1]) and s = 3 (ResNet-20
   [3,3,3] -> [1,1,1]).
2. ``width_search`` (``Pruning/clustest-cifar.py``): after a short pre-training of the reshaped network, hook
   every binary layer, average each layer's output feature maps over some images (400 CIFAR test images in the
   code), take each channel's flattened map as a point and cluster the points with DBSCAN under the cosine
   metric (min_samples 5; eps 0.021 for CIFAR, 0.008 for ImageNet). Channels in one cluster are redundant, so
   the layer's new width is the number of clusters plus the number of noise points: its distinct channels.
   The final network is built with these widths and trained with any BNN method.
3. The ``dwr`` method, the binarization of the CIFAR ``IRConv2d`` of the code: weights sign(w) with **no scale**
   and the clipped STE 1{|w| <= 1}; activations sign(a) with Bi-Real's ApproxSign backward, 2 - 2|a| on |a| < 1.

Where this differs from the released code, and why:

- Depth rounds half up and never below one block; each stage's width is then multiplied by sqrt(b / b'), with
  b' the rounded depth, not by sqrt(s), so that the stage's compute b w^2 is kept even when s does not divide
  its depth (the same factor as sqrt(s) when it does); widths round to the nearest integer.
- The width search runs on the binary layers followed by a BatchNorm (``scalable_layers``): the class layer's
  width is the number of classes. The code hooks every ``IRConv2d`` (its class layer is full precision).
- A binary linear layer has no spatial map to average: its points are each unit's responses to the images
  (averaging would leave one number per channel, whose cosine distance to another is only ever 0 or 2).
- sign(0) = +1 (``torch.sign`` gives 0). The weight estimator is a parametrization, so unlike plain Brevitas
  the latent weights are not clamped to [-1, 1] after each step: as in ``IRConv2d``, a weight past +-1 stops
  receiving gradient.
- The ImageNet variants (mean |W| per channel, LearnableBias) are ``reactnet``'s; the SD-BNN variants (an SE-style
  data-dependent bias before each sign) are not implemented: no static threshold can express them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn

from bnnflow.models.methods import estimators, register_method
from bnnflow.models.methods.base import (
    Method,
    binary_acts,
    binary_layers,
    scalable_layers,
    set_act_estimator,
    set_weight_estimator,
)


def reshape_depth_width(blocks: list[int], widths: list[int], s: float) -> tuple[list[int], list[int]]:
    """Stage depths divided by ``s`` (half up, at least 1) and widths scaled to keep each stage's depth x width^2.

    ``blocks[i]`` and ``widths[i]`` are stage i's number of blocks and channels."""
    if len(blocks) != len(widths):
        raise ValueError(f"one width per stage: {len(blocks)} stages of blocks, {len(widths)} widths")
    if s <= 0 or min(blocks, default=1) < 1 or min(widths, default=1) < 1:
        raise ValueError(f"s, blocks and widths must be positive, got s={s}, blocks={blocks}, widths={widths}")
    new_blocks = [max(1, math.floor(b / s + 0.5)) for b in blocks]
    new_widths = [round(w * math.sqrt(b / nb)) for b, nb, w in zip(blocks, new_blocks, widths)]
    return new_blocks, new_widths


def distinct_channels(points: np.ndarray, eps: float, min_samples: int = 5) -> int:
    """Clusters plus noise points of DBSCAN (cosine metric) over ``points`` [channels, features]."""
    from sklearn.cluster import DBSCAN

    labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit(points).labels_
    return len(set(labels) - {-1}) + int(np.sum(labels == -1))


@torch.no_grad()
def width_search(model: nn.Module, images: torch.Tensor, eps: float, min_samples: int = 5,
                 batch_size: int = 256) -> dict[str, int]:
    """The number of distinct output channels of every binary layer followed by a BatchNorm, by name.

    A conv layer's points are its channels' output maps averaged over ``images``; a linear layer's are its
    units' responses to each image. ``eps`` is DBSCAN's cosine-distance radius (0.021 in the CIFAR script)."""
    layers = scalable_layers(model)
    outputs: dict[str, list[torch.Tensor]] = {name: [] for name, _ in layers}

    def keep(name: str):
        def hook(layer: nn.Module, args: tuple, y: Any) -> None:
            y = getattr(y, "value", y).detach().cpu().double()  # a QuantTensor's values, summed in float64
            outputs[name].append(y.sum(0) if isinstance(layer, nn.Conv2d) else y)
        return hook

    handles = [layer.register_forward_hook(keep(name)) for name, layer in layers]
    device = next(model.parameters()).device  # the images go where the model is
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(images), batch_size):
            model(images[start: start + batch_size].to(device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    widths = {}
    for name, layer in layers:
        chunks = outputs[name]
        if isinstance(layer, nn.Conv2d):  # per batch, the summed maps [C, H, W]: the mean map per channel
            points = (torch.stack(chunks).sum(0) / len(images)).flatten(1)
        else:  # per batch, the responses [N, C]: each unit's responses to all images
            points = torch.cat(chunks).T
        widths[name] = distinct_channels(points.numpy(), eps, min_samples)
    return widths


@register_method
class DWR(Method):
    """DWR's CIFAR binarization (``IRConv2d``): sign weights without scale, clipped STE; ApproxSign activations."""

    name = "dwr"

    def prepare(self, model: nn.Module) -> None:
        for _, layer in binary_layers(model):
            set_weight_estimator(layer, estimators.clipped_ste)
        for _, act in binary_acts(model):
            set_act_estimator(act, estimators.approx_sign)
