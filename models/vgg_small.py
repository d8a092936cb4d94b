"""VGG-Small, the CIFAR-10 plain binary CNN of LQ-Nets, IR-Net, RBNN and DWR (RBNN's ``vgg_small_1w1a``).

A full-precision ``conv3x3 (128) -> BatchNorm -> hardtanh``, then five binary 3x3 convs (128, 256, 256, 512,
512; padding 1), each ``sign -> binary conv -> [max-pool 2] -> BatchNorm -> hardtanh`` with a pool after the
first, third and fifth, then one float ``Linear(512 * 4 * 4 -> classes)`` on 32x32 inputs.

Max-pooling comes **before** the BatchNorm, as in the papers' code. The BatchNorm is still registered right after
its conv (the methods fold a per-channel weight scale into "the BatchNorm after the layer"); that fold and the
hardware both rest on max commuting with the map in between: ``max(a z) = a max(z)`` only for a > 0. In hardware
the pool runs on the popcount integers and BatchNorm + hardtanh + sign become one threshold after it, exact when
every channel's folded BatchNorm slope (gamma / sigma, times the scale) is positive; a channel with a negative
slope needs a min-pool there instead (or the sign taken before the pool, which changes the network). BNN-PYNQ's
CNV sidesteps this by pooling after the sign.

``hw=True``: the first conv and the classifier get 8-bit weights, and the classifier's input (the last
hardtanh's output) is 8-bit fixed point on [-1, 1). Everything else is already a chain of ``binary conv ->
threshold``: with ``hw`` the whole network is integer and has no residual adds, the form a dataflow compiler
takes (spec §7.3). bnnflow's compiler does not yet take zero-padded binary convs (a padded 0 has no bipolar
value), the hardtanh (``Clip``) before a sign, or an 8-bit activation into the classifier; until it does,
VGG-Small runs on the edge path.
"""

from __future__ import annotations

from torch import nn

from bnnflow.models.layers import batch_norm, input_quant, quant_act
from bnnflow.models.registry import register_model
from bnnflow.models.resnet import (
    BOUNDED_RANGE,
    binary_conv,
    check_image_shape,
    check_pad_value,
    hardtanh,
    real_conv,
    real_linear,
    stream_quant,
)

POOL_AFTER = (0, 2, 4)  # the binary convs (0-based) followed by a 2x2 max-pool


class PooledBinaryConv(nn.Module):
    """sign -> binary conv3x3 -> [max-pool] -> BatchNorm -> hardtanh, the BatchNorm registered after the conv."""

    def __init__(self, in_channels: int, out_channels: int, pool: bool, pad_value: int = 0, hw: bool = False) -> None:
        super().__init__()
        self.act = quant_act(1)
        self.conv = binary_conv(in_channels, out_channels, kernel_size=3, padding=1, pad_value=pad_value)
        self.bn = batch_norm(out_channels, hw)
        self.pool = nn.MaxPool2d(2) if pool else nn.Identity()
        self.htanh = hardtanh(hw)

    def forward(self, x):
        return self.htanh(self.bn(self.pool(self.conv(self.act(x)))))


class VGGSmall(nn.Module):
    """k-bit image input, float (8-bit with ``hw``) first conv, five binary convs, float (8-bit) classifier."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, widths: list[int], input_bits: int,
                 hw: bool, pad_value: int = 0) -> None:
        super().__init__()
        check_image_shape("vgg_small", input_shape)
        check_pad_value("vgg_small", pad_value)
        if len(widths) != 6 or not all(isinstance(w, int) and not isinstance(w, bool) and w >= 1 for w in widths):
            raise ValueError(f"vgg_small: widths needs 6 positive integers (first conv, five binary), got {widths}")
        channels, height, width = input_shape
        if min(height, width) < 2 ** len(POOL_AFTER):
            raise ValueError(f"vgg_small pools three times: needs images of at least 8x8, got {height}x{width}")
        self.input_shape = tuple(input_shape)
        self.input_quant = input_quant(input_bits)
        self.conv0 = real_conv(channels, widths[0], kernel_size=3, padding=1, hw=hw)
        self.bn0 = batch_norm(widths[0], hw)
        convs = []
        for i, (in_channels, out_channels) in enumerate(zip(widths[:-1], widths[1:])):
            convs.append(PooledBinaryConv(in_channels, out_channels, pool=i in POOL_AFTER, pad_value=pad_value, hw=hw))
            if i in POOL_AFTER:
                height, width = height // 2, width // 2
        self.features = nn.Sequential(*convs)
        self.head_quant = stream_quant(hw, BOUNDED_RANGE)
        self.htanh = hardtanh(hw)
        self.fc = real_linear(widths[-1] * height * width, num_classes, hw)

    def forward(self, x):
        x = self.features(self.htanh(self.bn0(self.conv0(self.input_quant(x)))))
        return self.fc(self.head_quant(x.flatten(1)))


@register_model
def vgg_small(*, input_shape: tuple[int, ...], num_classes: int, widths: list[int] = [128, 128, 256, 256, 512, 512],
              input_bits: int = 8, hw: bool = False, pad_value: int = 0) -> VGGSmall:
    """VGG-Small (RBNN, IR-Net, DWR): float conv, five binary 3x3 convs with pre-BatchNorm max-pools, float FC."""
    return VGGSmall(input_shape, num_classes, list(widths), input_bits, hw, pad_value)
