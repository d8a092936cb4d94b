"""BNN-PYNQ's CNV: a VGG-like binary CNN for 32x32 images (Umuroglu et al., FINN, FPGA 2017).

Six unpadded 3x3 convolutions (64, 64, pool, 128, 128, pool, 256, 256), then two hidden fully connected layers
of 512 and the class layer. On 32x32 inputs the last convolution leaves a 1x1 map, so the flattening is a
reshape the hardware does not see. Every conv and hidden FC layer is ``Quant* (no bias) -> BatchNorm -> sign``;
max-pooling follows the sign, where it is an OR over bipolar values and stays exact in integers.
"""

from __future__ import annotations

import brevitas.nn as qnn
from torch import nn

from bnnflow.models.layers import input_quant, linear_head, quant_act
from bnnflow.models.quantizers import weight_quant
from bnnflow.models.registry import register_model

CNV_CONV_CHANNELS = (64, 64, 128, 128, 256, 256)
CNV_POOL_AFTER = (1, 3)  # indices of the convs followed by a 2x2 max-pool
CNV_FC_WIDTHS = (512, 512)


class CNV(nn.Module):
    """k-bit image input, binary (by default) convolutions and FC layers, integer class scores."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, weight_bits: int, act_bits: int,
                 input_bits: int) -> None:
        super().__init__()
        if len(input_shape) != 3:
            raise ValueError(f"cnv takes images (C, H, W), got input shape {tuple(input_shape)}")
        for name, bits in (("weight_bits", weight_bits), ("act_bits", act_bits), ("input_bits", input_bits)):
            if not 1 <= bits <= 8:
                raise ValueError(f"{name} must be between 1 and 8, got {bits}")
        channels, height, width = input_shape
        self.input_shape = tuple(input_shape)
        self.input_quant = input_quant(input_bits, return_quant_tensor=True)
        convs: list[nn.Module] = []
        for i, out_channels in enumerate(CNV_CONV_CHANNELS):
            convs += [
                qnn.QuantConv2d(channels, out_channels, kernel_size=3, bias=False,
                                weight_quant=weight_quant(weight_bits), weight_bit_width=weight_bits),
                nn.BatchNorm2d(out_channels),
                quant_act(act_bits),
            ]
            channels, height, width = out_channels, height - 2, width - 2
            if i in CNV_POOL_AFTER:
                convs.append(nn.MaxPool2d(2))
                height, width = height // 2, width // 2
        if height < 1 or width < 1:
            raise ValueError(f"cnv needs images of at least 32x32, got {input_shape[1]}x{input_shape[2]}")
        self.conv_features = nn.Sequential(*convs)
        fcs = linear_head(channels * height * width, list(CNV_FC_WIDTHS), num_classes, weight_bits, act_bits)
        self.fc_features = nn.Sequential(*fcs)

    def forward(self, x):
        x = self.conv_features(self.input_quant(x))
        return self.fc_features(x.flatten(1))


@register_model
def cnv(*, input_shape: tuple[int, ...], num_classes: int, weight_bits: int = 1, act_bits: int = 1,
        input_bits: int = 8) -> CNV:
    """BNN-PYNQ CNV for 32x32 images (CIFAR-10, SVHN, GTSRB)."""
    return CNV(input_shape, num_classes, weight_bits, act_bits, input_bits)
