"""Residual networks in the ImageNet layout: Bi-Real Net 18/34, the ReActNet block form 18/34, and the float
ResNet-18/34 they are timed against and distil from; also the layer helpers every binary family here shares
(``binary_conv``, ``real_conv``, ``real_linear``, ``stream_quant``).

Bi-Real Net (Liu et al., ECCV 2018; arXiv:1808.00278) is ResNet with a real-valued identity shortcut around
*every* binary 3x3 conv instead of every pair, so each sign sees the sum of all earlier real-valued outputs and the
representational capacity lost to binarization comes back through cheap float adds. Its unit, as in the official
code (liuzechun/Bi-Real-net, ``pytorch_implementation/BiReal18_34/birealnet.py``, ``[4, 4, 4, 4]`` units for
18 layers, ``[6, 8, 12, 6]`` for 34)::

    x -> sign -> binary conv3x3 -> BatchNorm -> + x            (x is the unit's real-valued input)

ReActNet's ResNet form (Liu et al., ECCV 2020; the block of ReBNN's and RBONN's released ``2_step2_*`` code and of
DWR's ImageNet models) wraps the same unit in learnable per-channel shifts: RSign = LearnableBias -> sign, and
RPReLU = LearnableBias -> PReLU(C) -> LearnableBias on the sum::

    x -> move0 -> sign -> binary conv3x3 -> BatchNorm -> + x -> move1 -> PReLU -> move2

Where a unit changes resolution or width, the shortcut is ``AvgPool2d(2) -> float conv1x1 -> BatchNorm`` (a
strided 1x1 conv would drop three of every four positions). The stem (one conv + BatchNorm, no nonlinearity,
then the ImageNet max-pool), the 1x1 downsample convs and the classifier stay full precision, as in the papers:
they are a small share of the operations, and binarizing them costs accuracy. Departures from the official
training code, all training-only and supplied by a training method (``models/methods``) instead: activations
use the clipped straight-through estimator rather than ApproxSign (same forward), and binary weights have scale 1
rather than the per-channel mean |W|, which the BatchNorm that follows absorbs at inference.

``hw=True`` makes the graph fixed point: the stem, downsample convs and classifier get 8-bit weights, and the
residual stream (every unit's sum), the stem output and the classifier input go through an 8-bit quantizer with
a power-of-two step (the AvgPool before a downsample conv divides by 4, which stays fixed point). The binary parts
are unchanged. Which path a trained model takes: the residual float adds,
PReLU and the multi-bit layers between binary ones are not a chain of ``binary layer -> threshold``, so these
networks run on the edge path (ONNX Runtime, the bit-packed kernel), with or without ``hw``; the dataflow
compiler takes plain chains only.

All networks take an ImageNet stem (7x7/2 conv, 3x3/2 max-pool) for inputs of at least 64 px and the usual CIFAR
stem (3x3/1 conv, no pool) below that, so one name serves 224x224 and 32x32 data.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import brevitas.nn as qnn
import torch
import torch.nn.functional as F
from torch import nn

from bnnflow.models.layers import batch_norm, input_quant, quant_act
from bnnflow.models.quantizers import act_quant, weight_quant
from bnnflow.models.registry import register_model

STAGE_CHANNELS = (64, 128, 256, 512)
RESNET18_UNITS = [4, 4, 4, 4]  # binary 3x3 convs per stage: ResNet-18's [2, 2, 2, 2] basic blocks, two convs each
RESNET34_UNITS = [6, 8, 12, 6]  # ResNet-34's [3, 4, 6, 3]
IMAGENET_STEM_MIN_SIZE = 64  # smaller inputs get the CIFAR stem: a 7x7/2 conv and a pool would leave too little
HW_BITS = 8  # weights of the multi-bit layers and the fixed-point stream with hw=True
PAD_VALUES = (0, 1, -1)  # how a binary conv pads its +-1 input: zeros, or +1 / -1 (Larq's pad_values)
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision's normalization of its pretrained weights' inputs
IMAGENET_STD = (0.229, 0.224, 0.225)
BOUNDED_RANGE = 1.0  # a stream that has just been through hardtanh
UNBOUNDED_RANGE = 8.0  # a sum of k BatchNorm outputs spreads like sqrt(k): a range of 8 at a step of 1/16


# ---------------------------------------------------------------------------------------------------------------
# Layers shared by the binary families (cifar_resnet, vgg_small)


class PaddedBinaryConv2d(qnn.QuantConv2d):
    """A binary conv whose +-1 input is padded with a constant +-1 (Larq's ``pad_values``) instead of zeros.

    A zero has no bipolar value, so hardware that pads with zeros needs a per-position correction; a +-1 border is
    an ordinary input bit and costs nothing. Exports as ``Pad(value) -> Conv`` without padding.
    """

    def __init__(self, *args, padding: int, pad_value: float, **kwargs) -> None:
        super().__init__(*args, padding=0, **kwargs)
        self.pad_amount, self.pad_value = padding, float(pad_value)

    def forward(self, x):
        x = x.value if hasattr(x, "value") else x  # a QuantTensor's values: +-1 stays +-1 after the pad
        return super().forward(F.pad(x, (self.pad_amount,) * 4, value=self.pad_value))


def check_pad_value(name: str, pad_value: object) -> None:
    if pad_value not in PAD_VALUES or isinstance(pad_value, bool):
        raise ValueError(f"{name}: pad_value must be one of {PAD_VALUES} (0 pads with zeros, +-1 with that bipolar "
                         f"value), got {pad_value!r}")


def binary_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                padding: int = 0, pad_value: int = 0) -> qnn.QuantConv2d:
    """A conv with weights in {-1, +1} and no bias; put ``quant_act(1)`` before it and its BatchNorm right after.
    ``pad_value`` +-1 pads with that bipolar value instead of zeros (``PaddedBinaryConv2d``)."""
    kwargs = dict(kernel_size=kernel_size, stride=stride, bias=False, weight_quant=weight_quant(1), weight_bit_width=1)
    if pad_value and padding:
        return PaddedBinaryConv2d(in_channels, out_channels, padding=padding, pad_value=pad_value, **kwargs)
    return qnn.QuantConv2d(in_channels, out_channels, padding=padding, **kwargs)


def real_conv(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
              hw: bool = False) -> nn.Conv2d:
    """A multi-bit conv (stem, downsample shortcut): float, or 8-bit weights on the fixed grid with ``hw``."""
    if not hw:
        return nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)
    return qnn.QuantConv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False,
                           weight_quant=weight_quant(HW_BITS), weight_bit_width=HW_BITS)


def real_linear(in_features: int, out_features: int, hw: bool = False) -> nn.Linear:
    """The classifier: float, or 8-bit weights with ``hw`` (its bias stays float: it adds once per class)."""
    if not hw:
        return nn.Linear(in_features, out_features)
    return qnn.QuantLinear(in_features, out_features, bias=True, weight_quant=weight_quant(HW_BITS),
                           weight_bit_width=HW_BITS)


def stream_quant(hw: bool, max_val: float, bits: int = HW_BITS) -> nn.Module:
    """With ``hw``, signed fixed point on [-max_val, max_val) (step max_val / 2**(bits-1), a power of two for the
    ranges here) for a real-valued tensor read by a multi-bit layer or a shortcut; otherwise nothing."""
    if not hw:
        return nn.Identity()
    return qnn.QuantIdentity(act_quant=act_quant(bits), bit_width=bits, min_val=-max_val, max_val=max_val,
                             return_quant_tensor=False)


def hardtanh(hw: bool) -> nn.Module:
    """The blocks' hardtanh. With ``hw`` a quantizer always reads its output (a sign, or a stream quantizer on
    [-1, 1)) whose clamp is the same function with the same gradient, so the module is left out: the exported
    graph then has no ``Clip``, which FINN's QONNX conversion has no layer for."""
    return nn.Identity() if hw else nn.Hardtanh()


def join_quant(hw: bool, max_val: float) -> nn.Module:
    """With ``hw``, the quantizer of a residual branch before its add: the stream's own quantizer (its range
    ``max_val``, its step), so both inputs of the add are codes of one scale and their sum is an integer add in
    hardware. A wider branch (more bits over a larger range, unclipped) would cost a threshold per code in every
    channel of the unit before the add: at 10 bits ResNet-20's thresholds alone exceed an ECP5-85F's block RAM;
    otherwise nothing."""
    return stream_quant(hw, max_val, HW_BITS)


def check_image_shape(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"{name} takes images (C, H, W), got input shape {tuple(input_shape)}")


def check_stages(name: str, widths: list[int], blocks: list[int], stages: int) -> None:
    """``widths`` and ``blocks`` have one positive integer per stage (a config file may hold anything)."""
    if len(widths) != stages or len(blocks) != stages:
        raise ValueError(f"{name} has {stages} stages: widths and blocks need {stages} entries each, got "
                         f"widths={widths}, blocks={blocks}")
    if not all(_positive_int(v) for v in [*widths, *blocks]):
        raise ValueError(f"{name}: widths and blocks must be positive integers, got widths={widths}, blocks={blocks}")


def _positive_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def make_stages(make_block: Callable[[int, int, int], nn.Module], in_channels: int, widths: list[int],
                blocks: list[int]) -> list[nn.Sequential]:
    """One ``nn.Sequential`` of ``blocks[i]`` blocks ``make_block(in, out, stride)`` per stage; the first block
    of every stage after the first has stride 2."""
    stages = []
    for i, (out_channels, count) in enumerate(zip(widths, blocks)):
        stage = []
        for j in range(count):
            stage.append(make_block(in_channels, out_channels, 2 if i > 0 and j == 0 else 1))
            in_channels = out_channels
        stages.append(nn.Sequential(*stage))
    return stages


# ---------------------------------------------------------------------------------------------------------------
# The ImageNet family


def _stem(in_channels: int, out_channels: int, input_shape: tuple[int, ...],
          hw: bool = False) -> tuple[nn.Conv2d, nn.Module]:
    """The first conv and the pool after it: 7x7/2 and 3x3/2 max-pool for ImageNet-sized inputs."""
    if min(input_shape[1:]) >= IMAGENET_STEM_MIN_SIZE:
        return (real_conv(in_channels, out_channels, kernel_size=7, stride=2, padding=3, hw=hw),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return real_conv(in_channels, out_channels, kernel_size=3, stride=1, padding=1, hw=hw), nn.Identity()


def _downsample(in_channels: int, out_channels: int, stride: int, hw: bool) -> nn.Module:
    """The unit's shortcut: identity, or ``AvgPool2d(stride) -> 1x1 conv -> BatchNorm`` on a shape change."""
    if stride == 1 and in_channels == out_channels:
        return nn.Identity()
    # ceil_mode keeps the shortcut the size of the padded strided conv on odd maps (e.g. 7x7 at 28 px); on even
    # maps it is the official AvgPool2d(2).
    pool = [nn.AvgPool2d(kernel_size=stride, ceil_mode=True)] if stride > 1 else []
    return nn.Sequential(*pool, real_conv(in_channels, out_channels, kernel_size=1, hw=hw),
                         batch_norm(out_channels, hw), join_quant(hw, UNBOUNDED_RANGE))


class LearnableBias(nn.Module):
    """ReActNet's per-channel shift ``x + b_c`` (b initialised to 0): RSign's threshold, RPReLU's two shifts."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.bias.reshape(1, -1, 1, 1)


class BiRealUnit(nn.Module):
    """sign -> binary conv3x3 -> BatchNorm, plus the real-valued input: Bi-Real's shortcut around each conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, hw: bool = False, pad_value: int = 0) -> None:
        super().__init__()
        self.act = quant_act(1)
        self.conv = binary_conv(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, pad_value=pad_value)
        self.bn = batch_norm(out_channels, hw)
        self.join = join_quant(hw, UNBOUNDED_RANGE)
        self.downsample = _downsample(in_channels, out_channels, stride, hw)
        self.quant = stream_quant(hw, UNBOUNDED_RANGE)

    def forward(self, x):
        return self.quant(self.join(self.bn(self.conv(self.act(x)))) + self.downsample(x))


class ReActUnit(nn.Module):
    """RSign -> binary conv3x3 -> BatchNorm, plus the shortcut, then RPReLU: ReActNet's ResNet block."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, hw: bool = False, pad_value: int = 0) -> None:
        super().__init__()
        self.move0 = LearnableBias(in_channels)
        self.act = quant_act(1)
        self.conv = binary_conv(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, pad_value=pad_value)
        self.bn = batch_norm(out_channels, hw)
        self.join = join_quant(hw, UNBOUNDED_RANGE)
        self.move1 = LearnableBias(out_channels)
        self.prelu = nn.PReLU(out_channels)
        self.move2 = LearnableBias(out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride, hw)
        self.quant = stream_quant(hw, UNBOUNDED_RANGE)

    def forward(self, x):
        out = self.join(self.bn(self.conv(self.act(self.move0(x))))) + self.downsample(x)
        return self.quant(self.move2(self.prelu(self.move1(out))))


class BinaryResNet(nn.Module):
    """k-bit image input, float (8-bit with ``hw``) stem, four stages of binary units, average-pool classifier.

    Top-level names follow the official code (conv1, bn1, maxpool, layer1-4, fc).
    """

    def __init__(self, unit: type[nn.Module], name: str, input_shape: tuple[int, ...], num_classes: int,
                 widths: list[int], blocks: list[int], stem_width: int, input_bits: int, hw: bool,
                 pad_value: int = 0) -> None:
        super().__init__()
        check_image_shape(name, input_shape)
        check_stages(name, widths, blocks, 4)
        check_pad_value(name, pad_value)
        self.input_shape = tuple(input_shape)
        self.input_quant = input_quant(input_bits)
        self.conv1, self.maxpool = _stem(input_shape[0], stem_width, input_shape, hw)
        self.bn1 = batch_norm(stem_width, hw)  # no nonlinearity: the official stem is conv, BN, max-pool
        self.stem_quant = stream_quant(hw, UNBOUNDED_RANGE)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_stages(
            partial(unit, hw=hw, pad_value=pad_value), stem_width, widths, blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head_quant = stream_quant(hw, UNBOUNDED_RANGE)
        self.fc = real_linear(widths[-1], num_classes, hw)

    def forward(self, x):
        x = self.stem_quant(self.maxpool(self.bn1(self.conv1(self.input_quant(x)))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.head_quant(self.avgpool(x).flatten(1)))


class BasicBlock(nn.Module):
    """torchvision's ResNet basic block: two float 3x3 convs, strided 1x1 conv + BatchNorm on a shape change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.downsample(x))


class FloatResNet(nn.Module):
    """The float ResNet-18 / ResNet-34 (He et al., CVPR 2016) of torchvision, written out: the latency baseline
    and the real-valued teachers of the distillation recipes.

    Parameter names and shapes are torchvision's, so its ``resnet18`` / ``resnet34`` state dict loads as it is.
    torchvision's pretrained weights expect inputs normalized with ImageNet's mean and standard deviation, which
    ``normalize`` applies to bnnflow's [0, 1] images first (constants, not in the state dict).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, blocks: list[int] = [2, 2, 2, 2],
                 name: str = "resnet18", normalize: bool = False) -> None:
        super().__init__()
        check_image_shape(name, input_shape)
        if normalize and input_shape[0] != 3:
            raise ValueError(f"normalize uses ImageNet's RGB statistics and needs 3 channels, got {input_shape[0]}")
        self.input_shape = tuple(input_shape)
        self.normalize = normalize
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).reshape(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).reshape(1, 3, 1, 1), persistent=False)
        self.conv1, self.maxpool = _stem(input_shape[0], STAGE_CHANNELS[0], input_shape)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1, self.layer2, self.layer3, self.layer4 = make_stages(BasicBlock, STAGE_CHANNELS[0],
                                                                         list(STAGE_CHANNELS), list(blocks))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_CHANNELS[-1], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        if self.normalize:
            x = (x - self.mean) / self.std
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@register_model
def birealnet18(*, input_shape: tuple[int, ...], num_classes: int, input_bits: int = 8,
                widths: list[int] = [64, 128, 256, 512], blocks: list[int] = RESNET18_UNITS, stem_width: int = 64,
                hw: bool = False, pad_value: int = 0) -> BinaryResNet:
    """Bi-Real Net 18: binary 3x3 convs with a real-valued shortcut around each (``blocks`` counts convs)."""
    return BinaryResNet(BiRealUnit, "birealnet18", input_shape, num_classes, list(widths), list(blocks), stem_width,
                        input_bits, hw, pad_value)


@register_model
def birealnet34(*, input_shape: tuple[int, ...], num_classes: int, input_bits: int = 8,
                widths: list[int] = [64, 128, 256, 512], blocks: list[int] = RESNET34_UNITS, stem_width: int = 64,
                hw: bool = False, pad_value: int = 0) -> BinaryResNet:
    """Bi-Real Net 34: ResNet-34's 32 binary 3x3 convs, each with its own real-valued shortcut."""
    return BinaryResNet(BiRealUnit, "birealnet34", input_shape, num_classes, list(widths), list(blocks), stem_width,
                        input_bits, hw, pad_value)


@register_model
def reactnet18(*, input_shape: tuple[int, ...], num_classes: int, input_bits: int = 8,
               widths: list[int] = [64, 128, 256, 512], blocks: list[int] = RESNET18_UNITS, stem_width: int = 64,
               hw: bool = False, pad_value: int = 0) -> BinaryResNet:
    """ReActNet's ResNet-18 form (ReBNN, RBONN): Bi-Real units with RSign and RPReLU."""
    return BinaryResNet(ReActUnit, "reactnet18", input_shape, num_classes, list(widths), list(blocks), stem_width,
                        input_bits, hw, pad_value)


@register_model
def reactnet34(*, input_shape: tuple[int, ...], num_classes: int, input_bits: int = 8,
               widths: list[int] = [64, 128, 256, 512], blocks: list[int] = RESNET34_UNITS, stem_width: int = 64,
               hw: bool = False, pad_value: int = 0) -> BinaryResNet:
    """ReActNet's ResNet-34 form: 32 units with RSign and RPReLU."""
    return BinaryResNet(ReActUnit, "reactnet34", input_shape, num_classes, list(widths), list(blocks), stem_width,
                        input_bits, hw, pad_value)


@register_model
def resnet18(*, input_shape: tuple[int, ...], num_classes: int, normalize: bool = False) -> FloatResNet:
    """Float ResNet-18 (torchvision's layout): the full-precision comparison for latency benchmarks, a teacher."""
    return FloatResNet(input_shape, num_classes, [2, 2, 2, 2], "resnet18", normalize)


@register_model
def resnet34(*, input_shape: tuple[int, ...], num_classes: int, normalize: bool = False) -> FloatResNet:
    """Float ResNet-34 (torchvision's layout): the real-valued teacher ReBNN, RBONN, DWR and ReActNet distil from."""
    return FloatResNet(input_shape, num_classes, [3, 4, 6, 3], "resnet34", normalize)
