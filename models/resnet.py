"""Residual networks for the ONNX Runtime edge path: Bi-Real Net 18 and the float ResNet-18 it is timed against.

Bi-Real Net (Liu et al., ECCV 2018; arXiv:1808.00278) is ResNet-18 with a real-valued identity shortcut around
*every* binary 3x3 conv instead of every pair, so each sign sees the sum of all earlier real-valued outputs and the
representational capacity lost to binarization comes back through cheap float adds. Its unit, as in the official
code (liuzechun/Bi-Real-net, ``pytorch_implementation/BiReal18_34/birealnet.py``)::

    x -> sign -> binary conv3x3 -> BatchNorm -> + x            (x is the unit's real-valued input)

where the unit changes resolution and width, the shortcut is ``AvgPool2d(2) -> float conv1x1 -> BatchNorm``
(a strided 1x1 conv would drop three of every four positions). The stem (one conv + BatchNorm, no ReLU, then the
ImageNet max-pool), the 1x1 downsample convs and the classifier stay full precision, as in the paper and the
official code: they are a small share of the operations, and binarizing them costs accuracy. Two departures
from the official training code, both training-only: activations use the repo's clipped straight-through
estimator rather than Bi-Real's ApproxSign (same forward), and binary weights have scale 1 rather than the
detached per-channel mean |W|, which the BatchNorm that follows absorbs at inference.

Both networks take an ImageNet stem (7x7/2 conv, 3x3/2 max-pool) for inputs of at least 64 px and the usual
CIFAR stem (3x3/1 conv, no pool) below that, so one name serves 224x224 and 32x32 data.
"""

from __future__ import annotations

import brevitas.nn as qnn
from torch import nn

from bnnflow.models.layers import quant_act
from bnnflow.models.quantizers import InputQuant, weight_quant
from bnnflow.models.registry import register_model

STAGE_CHANNELS = (64, 128, 256, 512)
BLOCKS_PER_STAGE = 2  # ResNet-18: [2, 2, 2, 2] basic blocks; a Bi-Real basic block is two units
IMAGENET_STEM_MIN_SIZE = 64  # smaller inputs get the CIFAR stem: a 7x7/2 conv and a pool would leave too little


def _stem(in_channels: int, input_shape: tuple[int, ...]) -> tuple[nn.Conv2d, nn.Module]:
    """The full-precision first conv and the pool after it: 7x7/2 and 3x3/2 max-pool for ImageNet-sized inputs."""
    if min(input_shape[1:]) >= IMAGENET_STEM_MIN_SIZE:
        return (nn.Conv2d(in_channels, STAGE_CHANNELS[0], kernel_size=7, stride=2, padding=3, bias=False),
                nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
    return nn.Conv2d(in_channels, STAGE_CHANNELS[0], kernel_size=3, stride=1, padding=1, bias=False), nn.Identity()


def _stages(block: type[nn.Module]) -> list[nn.Module]:
    """Four stages of ``BLOCKS_PER_STAGE`` blocks, ``block(in, out, stride)``, stride 2 at the start of 2-4."""
    stages: list[nn.Module] = []
    channels = STAGE_CHANNELS[0]
    for i, out_channels in enumerate(STAGE_CHANNELS):
        blocks = []
        for j in range(BLOCKS_PER_STAGE):
            blocks.append(block(channels, out_channels, 2 if i > 0 and j == 0 else 1))
            channels = out_channels
        stages.append(nn.Sequential(*blocks))
    return stages


def _check_image_shape(name: str, input_shape: tuple[int, ...]) -> None:
    if len(input_shape) != 3 or min(input_shape) < 1:
        raise ValueError(f"{name} takes images (C, H, W), got input shape {tuple(input_shape)}")


class BiRealUnit(nn.Module):
    """sign -> binary conv3x3 -> BatchNorm, plus the real-valued input: Bi-Real's shortcut around each conv."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.act = quant_act(1)
        self.conv = qnn.QuantConv2d(in_channels, out_channels, kernel_size=3, stride=stride, padding=1, bias=False,
                                    weight_quant=weight_quant(1), weight_bit_width=1)
        self.bn = nn.BatchNorm2d(out_channels)
        self.downsample: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            # ceil_mode keeps the shortcut the size of the padded strided conv on odd maps (e.g. 7x7 at 28 px);
            # on even maps it is the official AvgPool2d(2).
            pool = [nn.AvgPool2d(kernel_size=stride, ceil_mode=True)] if stride > 1 else []
            self.downsample = nn.Sequential(*pool, nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
                                            nn.BatchNorm2d(out_channels))

    def forward(self, x):
        return self.bn(self.conv(self.act(x))) + self.downsample(x)


class BiRealBlock(nn.Sequential):
    """A ResNet basic block's two 3x3 convs, each its own Bi-Real unit; the first may stride and widen."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__(BiRealUnit(in_channels, out_channels, stride), BiRealUnit(out_channels, out_channels, 1))


class BiRealNet(nn.Module):
    """k-bit image input, float stem, 16 binary Bi-Real units in four stages, float average-pool classifier.

    Top-level names follow the official code (conv1, bn1, maxpool, layer1-4, fc).
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, input_bits: int) -> None:
        super().__init__()
        _check_image_shape("birealnet18", input_shape)
        if not 1 <= input_bits <= 8:
            raise ValueError(f"input_bits must be between 1 and 8, got {input_bits}")
        self.input_shape = tuple(input_shape)
        # 8 bits turns the loader's p / 255 back into the pixel p, so the deployed graph can take raw pixels.
        self.input_quant = qnn.QuantIdentity(act_quant=InputQuant, bit_width=input_bits, return_quant_tensor=False)
        self.conv1, self.maxpool = _stem(input_shape[0], input_shape)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])  # no ReLU: the official stem is conv, BN, max-pool
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(BiRealBlock)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_CHANNELS[-1], num_classes)

    def forward(self, x):
        x = self.maxpool(self.bn1(self.conv1(self.input_quant(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


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


class ResNet18(nn.Module):
    """The float ResNet-18 (He et al., CVPR 2016) of torchvision, written out: the latency baseline.

    Parameter names and shapes are torchvision's, so its ``resnet18`` state dict loads as it is.
    """

    def __init__(self, input_shape: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        _check_image_shape("resnet18", input_shape)
        self.input_shape = tuple(input_shape)
        self.conv1, self.maxpool = _stem(input_shape[0], input_shape)
        self.bn1 = nn.BatchNorm2d(STAGE_CHANNELS[0])
        self.relu = nn.ReLU(inplace=True)
        self.layer1, self.layer2, self.layer3, self.layer4 = _stages(BasicBlock)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(STAGE_CHANNELS[-1], num_classes)
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


@register_model
def birealnet18(*, input_shape: tuple[int, ...], num_classes: int, input_bits: int = 8) -> BiRealNet:
    """Bi-Real Net 18: binary 3x3 convs with a real-valued shortcut around each, float stem/downsample/head."""
    return BiRealNet(input_shape, num_classes, input_bits)


@register_model
def resnet18(*, input_shape: tuple[int, ...], num_classes: int) -> ResNet18:
    """Float ResNet-18 (torchvision's layout): the full-precision comparison for latency benchmarks."""
    return ResNet18(input_shape, num_classes)
