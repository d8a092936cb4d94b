"""The CIFAR ResNets of the BNN papers: ResNet-18 (64-128-256-512) and ResNet-20 (16-32-64), binary inside.

Both follow RBNN's ``cifar/models_cifar`` and DWR's ``CIFAR-10/ResNet-{18,20}`` code (also IR-Net's layout): a
full-precision stem ``conv3x3 -> BatchNorm -> hardtanh``, stages of binary blocks, then ``global average pool ->
BatchNorm1d -> float Linear``. Every binary conv takes the sign of its input and is followed by its own
BatchNorm. Two block forms:

- ``BasicBlock`` (``cifar_resnet18``, ``resnet20``)::

      x -> sign -> binconv3x3 -> BN -> hardtanh -> sign -> binconv3x3 -> BN -> + shortcut(x) -> hardtanh

- ``BiRealBasicBlock`` (``resnet20_bireal``; RBNN's ``resnet20_bireal_1w1a``, DWR's ResNet-20): the same two
  convs, each with its own shortcut and hardtanh, so the second conv's input is added back after it::

      x -> sign -> binconv3x3 -> BN -> + shortcut(x) -> hardtanh = h -> sign -> binconv3x3 -> BN -> + h -> hardtanh

The shortcut on a change of shape is one of ``option_a`` (He et al.'s option A, the CIFAR ResNet-20 default:
keep every second position and zero-pad the new channels, no parameters), ``conv`` (float 1x1 conv + BatchNorm,
DWR's ResNet-18) or ``binary`` (sign -> binary 1x1 conv -> BatchNorm: RBNN's ResNet-18, whose shortcut convs are
``BinarizeConv2d`` too). Zero padding puts the extra channels half in front and half behind, as both codes do.

Left out, as training choices rather than architecture: RBNN's BatchNorm gamma initialised to 1e-8 and the
per-sample mean subtraction inside its ``BinarizeConv2d`` (a method's business, and not a static threshold).

``hw=True``: the stem and classifier get 8-bit weights (the ``conv`` shortcuts too), and every tensor a
multi-bit layer or a shortcut reads is 8-bit fixed point: the stem output and each block's output on [-1, 1)
(they come out of a hardtanh, so the range costs nothing) and the classifier's input after the BatchNorm1d.
Paths: every form has residual adds of real-valued streams, so the trained model runs on the edge path (ONNX
Runtime, the bit-packed kernel). With ``hw`` and option-A shortcuts the whole graph is integer: binary convs,
BatchNorm-hardtanh-sign thresholds, and 8-bit adds of a parameter-free shortcut, which a dataflow compiler with a
residual adder can take (spec §7.3); bnnflow's compiler does not take residual adds or padded binary convs yet.
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from bnnflow.models.layers import batch_norm, input_quant, quant_act
from bnnflow.models.registry import register_model
from bnnflow.models.resnet import (
    BOUNDED_RANGE,
    UNBOUNDED_RANGE,
    binary_conv,
    check_image_shape,
    check_pad_value,
    check_stages,
    hardtanh,
    join_quant,
    make_stages,
    real_conv,
    real_linear,
    stream_quant,
)

SHORTCUTS = ("option_a", "conv", "binary")


class OptionAShortcut(nn.Module):
    """He et al.'s option A: every ``stride``-th position, new channels zero-padded; no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        if out_channels < in_channels:
            raise ValueError(f"an option-A shortcut pads channels and cannot narrow {in_channels} to {out_channels}; "
                             "use shortcut='conv' or non-decreasing widths")
        self.stride = stride
        extra = out_channels - in_channels
        self.pad = (extra // 2, extra - extra // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride > 1:
            x = x[:, :, ::self.stride, ::self.stride]
        if any(self.pad):
            x = F.pad(x, (0, 0, 0, 0, *self.pad))
        return x


def _shortcut(kind: str, in_channels: int, out_channels: int, stride: int, hw: bool) -> nn.Module:
    """Identity when the shape is kept; otherwise option A, a float (8-bit) or a binary 1x1 conv + BatchNorm."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    if kind == "option_a":
        return OptionAShortcut(in_channels, out_channels, stride)
    if kind == "conv":
        return nn.Sequential(real_conv(in_channels, out_channels, kernel_size=1, stride=stride, hw=hw),
                             batch_norm(out_channels, hw), join_quant(hw, BOUNDED_RANGE))
    return nn.Sequential(quant_act(1), binary_conv(in_channels, out_channels, kernel_size=1, stride=stride),
                         batch_norm(out_channels, hw), join_quant(hw, BOUNDED_RANGE))


class BasicBlock(nn.Module):
    """Two binary 3x3 convs, each with its BatchNorm, one shortcut around both, hardtanh after each BatchNorm."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, hw: bool,
                 pad_value: int = 0) -> None:
        super().__init__()
        self.act1 = quant_act(1)
        self.conv1 = binary_conv(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                                 pad_value=pad_value)
        self.bn1 = batch_norm(out_channels, hw)
        self.act2 = quant_act(1)
        self.conv2 = binary_conv(out_channels, out_channels, kernel_size=3, padding=1, pad_value=pad_value)
        self.bn2 = batch_norm(out_channels, hw)
        self.join = join_quant(hw, BOUNDED_RANGE)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride, hw)
        self.quant = stream_quant(hw, BOUNDED_RANGE)
        self.htanh = hardtanh(hw)

    def forward(self, x):
        out = self.htanh(self.bn1(self.conv1(self.act1(x))))
        out = self.join(self.bn2(self.conv2(self.act2(out)))) + self.shortcut(x)
        return self.quant(self.htanh(out))


class BiRealBasicBlock(nn.Module):
    """The same two binary convs, each with its own shortcut (the first may change shape) and hardtanh."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, shortcut: str, hw: bool,
                 pad_value: int = 0) -> None:
        super().__init__()
        self.act1 = quant_act(1)
        self.conv1 = binary_conv(in_channels, out_channels, kernel_size=3, stride=stride, padding=1,
                                 pad_value=pad_value)
        self.bn1 = batch_norm(out_channels, hw)
        self.join1 = join_quant(hw, BOUNDED_RANGE)
        self.shortcut = _shortcut(shortcut, in_channels, out_channels, stride, hw)
        self.quant1 = stream_quant(hw, BOUNDED_RANGE)
        self.act2 = quant_act(1)
        self.conv2 = binary_conv(out_channels, out_channels, kernel_size=3, padding=1, pad_value=pad_value)
        self.bn2 = batch_norm(out_channels, hw)
        self.join2 = join_quant(hw, BOUNDED_RANGE)
        self.quant2 = stream_quant(hw, BOUNDED_RANGE)
        self.htanh = hardtanh(hw)

    def forward(self, x):
        out = self.quant1(self.htanh(self.join1(self.bn1(self.conv1(self.act1(x)))) + self.shortcut(x)))
        return self.quant2(self.htanh(self.join2(self.bn2(self.conv2(self.act2(out)))) + out))


class CifarResNet(nn.Module):
    """k-bit image input, float (8-bit with ``hw``) stem, stages of binary blocks, BatchNorm1d + float classifier."""

    def __init__(self, block: type[nn.Module], name: str, stages: int, input_shape: tuple[int, ...], num_classes: int,
                 widths: list[int], blocks: list[int], stem_width: int, shortcut: str, input_bits: int,
                 hw: bool, pad_value: int = 0) -> None:
        super().__init__()
        check_image_shape(name, input_shape)
        check_stages(name, widths, blocks, stages)
        check_pad_value(name, pad_value)
        if shortcut not in SHORTCUTS:
            raise ValueError(f"{name}: shortcut must be one of {', '.join(SHORTCUTS)}, got {shortcut!r}")
        self.input_shape = tuple(input_shape)
        self.input_quant = input_quant(input_bits)
        self.conv1 = real_conv(input_shape[0], stem_width, kernel_size=3, padding=1, hw=hw)
        self.bn1 = batch_norm(stem_width, hw)
        self.stem_quant = stream_quant(hw, BOUNDED_RANGE)
        self.htanh = hardtanh(hw)
        self.layers = nn.Sequential(*make_stages(partial(block, shortcut=shortcut, hw=hw, pad_value=pad_value),
                                                 stem_width, widths, blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.bn2 = batch_norm(widths[-1], hw, dims=1)
        self.head_quant = stream_quant(hw, UNBOUNDED_RANGE)
        self.fc = real_linear(widths[-1], num_classes, hw)

    def forward(self, x):
        x = self.stem_quant(self.htanh(self.bn1(self.conv1(self.input_quant(x)))))
        x = self.bn2(self.avgpool(self.layers(x)).flatten(1))
        return self.fc(self.head_quant(x))


@register_model
def cifar_resnet18(*, input_shape: tuple[int, ...], num_classes: int, widths: list[int] = [64, 128, 256, 512],
                   blocks: list[int] = [2, 2, 2, 2], stem_width: int = 64, binary_shortcut: bool = False,
                   input_bits: int = 8, hw: bool = False, pad_value: int = 0) -> CifarResNet:
    """CIFAR ResNet-18 (IR-Net, RBNN, DWR): 16 binary 3x3 convs; 1x1 shortcuts float, or binary as in RBNN."""
    return CifarResNet(BasicBlock, "cifar_resnet18", 4, input_shape, num_classes, list(widths), list(blocks), stem_width,
                       "binary" if binary_shortcut else "conv", input_bits, hw, pad_value)


@register_model
def resnet20(*, input_shape: tuple[int, ...], num_classes: int, widths: list[int] = [16, 32, 64],
             blocks: list[int] = [3, 3, 3], stem_width: int = 16, shortcut: str = "option_a", input_bits: int = 8,
             hw: bool = False, pad_value: int = 0) -> CifarResNet:
    """Binary CIFAR ResNet-20 (IR-Net, RBNN): 18 binary 3x3 convs, one shortcut per pair."""
    return CifarResNet(BasicBlock, "resnet20", 3, input_shape, num_classes, list(widths), list(blocks), stem_width,
                       shortcut, input_bits, hw, pad_value)


@register_model
def resnet20_bireal(*, input_shape: tuple[int, ...], num_classes: int, widths: list[int] = [16, 32, 64],
                    blocks: list[int] = [3, 3, 3], stem_width: int = 16, shortcut: str = "option_a",
                    input_bits: int = 8, hw: bool = False, pad_value: int = 0) -> CifarResNet:
    """Binary CIFAR ResNet-20, Bi-Real form (RBNN, DWR): a shortcut around each of the 18 binary convs."""
    return CifarResNet(BiRealBasicBlock, "resnet20_bireal", 3, input_shape, num_classes, list(widths), list(blocks),
                       stem_width, shortcut, input_bits, hw, pad_value)
