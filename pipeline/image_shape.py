"""``data.image_size`` and ``data.channels`` for the in-memory image sets (digits, MNIST, CIFAR-10): one rule.

Why one rule for all: a backbone's input shape is a setting of the run, not of the data set, so the bundled 8x8
digits can stand in for CIFAR-10 (3x32x32) in a quick check of CNV, VGG-Small or a ResNet, and a data set gives the
same tensors whichever tool (the CLI, ``benchmarks/methods.py``) asks for them.

- **Resize** to ``size x size``: bilinear with antialiasing, half-pixel centres (``align_corners=False``), the edge
  pixels repeated outwards: PIL's ``BILINEAR`` filter, which the image-folder loader uses too, computed by
  ``torch.nn.functional.interpolate(..., antialias=True)`` in float32 on the CPU. No randomness and no
  reduction whose order depends on threads, so the same images give the same bits on every run. Every output
  pixel is a convex combination of input pixels, so values stay in [0, 1] (clamped against float rounding).
  Upsampling (digits 8 -> 32) is plain bilinear interpolation; downsampling averages over the filter's wider
  support instead of aliasing. The result is not rounded to a grid: the models' 8-bit input quantizer does that.
  Bilinear rather than nearest-neighbour, because it handles any ratio (MNIST 28 -> 32) and was what the
  methods benchmark already trained on.
- **Channels**: grey to 3 repeats the grey level on every channel (after resizing, which commutes with it);
  colour to 1 is the ITU-R 601 luma ``0.299 R + 0.587 G + 0.114 B`` (PIL's ``"L"`` weights, without its rounding
  to 8 bits), taken before resizing.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn import functional as F

#: PIL's "L" conversion weights (ITU-R 601-2 luma)
LUMA = (0.299, 0.587, 0.114)
#: the side length ``image_size = 0`` gives an image folder, whose images have no one size (bnnflow's old default)
IMAGEFOLDER_SIZE = 32


def to_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """(N, C, H, W) images with ``channels`` channels (0 = unchanged): grey repeated, or colour to its luma."""
    have = images.shape[1]
    if channels in (0, have):
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=1)
    if have == 3 and channels == 1:
        weights = np.asarray(LUMA, dtype=images.dtype).reshape(1, 3, 1, 1)
        return np.clip((images * weights).sum(axis=1, keepdims=True), 0.0, 1.0)
    raise ValueError(f"cannot convert {have}-channel images to {channels} channels")


def resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, C, H, W) float images in [0, 1] resized to size x size by the rule above (0 or the same size = as is)."""
    if size == 0 or images.shape[-2:] == (size, size):
        return images
    resized = F.interpolate(torch.from_numpy(np.ascontiguousarray(images)), size=(size, size), mode="bilinear",
                            align_corners=False, antialias=True)
    return resized.clamp_(0.0, 1.0).numpy()


def reshape_images(images: np.ndarray, image_size: int, channels: int) -> np.ndarray:
    """Images in the configured size and channels; colour is reduced before resizing and grey expanded after, so
    the resize runs on one channel whenever it can."""
    if channels == 1:
        return resize(to_channels(images, 1), image_size)
    return to_channels(resize(images, image_size), channels)
