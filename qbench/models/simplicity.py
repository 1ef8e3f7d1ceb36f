"""The nets of "Back to Simplicity: How to Train Accurate BNNs from Scratch?" (Bethge et al. 2019),
following the authors' and larq zoo's definitions (the paper gives the blocks, not every size).

resnete18: ResNet-18's 8 basic blocks split into 16 single-conv residual units, x + BN(binary 3x3 conv(x));
  where channels change, the shortcut is downsampled (``downsample``, see below); full-precision stem
  (32x32 inputs: 3x3 conv; ImageNet: 7x7/2 conv-BN-ReLU-maxpool-BN) and classifier (ReLU, GAP, FC).
binarydensenet28 / 37 / 37_dilated: dense layers x -> concat(x, binary 3x3 conv(BN(x))) with growth rate
  64; transitions BN -> MaxPool2 -> ReLU -> FP 1x1 conv to round(C // reduction / 32) * 32 channels;
  the dilated variant uses dilation (1, 1, 2, 4) and leaves out the pooling before its dilated blocks.

Downsampling choices the paper compares (``model.downsample``):
  fp_conv_avgpool      AvgPool2 -> full-precision 1x1 conv -> BN   (ResNetE's)
  maxpool_relu_fp_conv MaxPool2 -> ReLU -> full-precision 1x1 conv (BinaryDenseNet's transition)
  binary_conv          binary 1x1 conv, stride 2 -> BN
"""
from __future__ import annotations

import torch
from torch import nn

from qbench.errors import UserError
from qbench.models.registry import register_model

DOWNSAMPLE = ("fp_conv_avgpool", "maxpool_relu_fp_conv", "binary_conv")


def _fp(conv: nn.Module, keep: bool = True) -> nn.Module:
    conv.qbench_keep_fp = keep  # the layer policy leaves it in full precision
    return conv


def downsample(kind: str, c_in: int, c_out: int, stride: int) -> nn.Sequential:
    if kind == "fp_conv_avgpool":
        return nn.Sequential(nn.AvgPool2d(stride), _fp(nn.Conv2d(c_in, c_out, 1, bias=False)), nn.BatchNorm2d(c_out))
    if kind == "maxpool_relu_fp_conv":
        return nn.Sequential(nn.MaxPool2d(stride), nn.ReLU(), _fp(nn.Conv2d(c_in, c_out, 1, bias=False)))
    if kind == "binary_conv":
        return nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
    raise UserError(f"model.downsample={kind!r} is invalid; valid: {', '.join(DOWNSAMPLE)}")


def stem(in_channels: int, channels: int, image_size: int, bn_after_pool: bool, keep_fp: bool) -> nn.Sequential:
    if image_size < 50:  # CIFAR-sized inputs keep their resolution
        return nn.Sequential(_fp(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False), keep_fp))
    layers = [_fp(nn.Conv2d(in_channels, channels, 7, 2, 3, bias=False), keep_fp), nn.BatchNorm2d(channels), nn.ReLU(),
              nn.MaxPool2d(3, 2, 1)]
    return nn.Sequential(*layers, *([nn.BatchNorm2d(channels)] if bn_after_pool else []))


class ResidualUnit(nn.Module):
    """x + BN(conv3x3(x)): one binary conv per shortcut (ResNetE)."""

    def __init__(self, c_in: int, c_out: int, stride: int, downsample_kind: str, bottleneck: bool):
        super().__init__()
        if bottleneck:  # 1x1 -> 3x3 -> 1x1 at a quarter of the width (the paper argues against it)
            mid = max(1, c_out // 4)
            self.body = nn.Sequential(nn.Conv2d(c_in, mid, 1, bias=False), nn.BatchNorm2d(mid),
                                      nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid),
                                      nn.Conv2d(mid, c_out, 1, bias=False), nn.BatchNorm2d(c_out))
        else:
            self.body = nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = (downsample(downsample_kind, c_in, c_out, stride) if (stride != 1 or c_in != c_out)
                         else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


class Head(nn.Sequential):
    """(BN ->) ReLU -> global average pool -> full-precision FC."""

    def __init__(self, channels: int, num_classes: int, bn: bool, keep_fp: bool):
        super().__init__(*([nn.BatchNorm2d(channels)] if bn else []), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), _fp(nn.Linear(channels, num_classes), keep_fp))


@register_model("resnete18")
def resnete18(in_channels: int, num_classes: int, image_size: int, downsample: str = "fp_conv_avgpool",
              bottleneck: bool = False, keep_first_fp: bool = True, keep_last_fp: bool = True,
              activation: str = "identity") -> nn.Module:
    """``activation`` is accepted for a uniform interface; ResNetE has no nonlinearity inside its units
    (the sign of the next conv's input quantizer is the only one)."""
    if downsample not in DOWNSAMPLE:
        raise UserError(f"model.downsample={downsample!r} is invalid; valid: {', '.join(DOWNSAMPLE)}")
    units, c = [], 64
    for stage, channels in enumerate((64, 128, 256, 512)):
        for i in range(4):  # 2 basic blocks x 2 convs, each conv its own residual unit
            stride = 2 if (stage > 0 and i == 0) else 1
            units.append(ResidualUnit(c, channels, stride, downsample, bottleneck))
            c = channels
    return nn.Sequential(stem(in_channels, 64, image_size, bn_after_pool=True, keep_fp=keep_first_fp), *units,
                         Head(c, num_classes, bn=False, keep_fp=keep_last_fp))


class DenseLayer(nn.Module):
    def __init__(self, c_in: int, growth: int, dilation: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c_in)
        self.conv = nn.Conv2d(c_in, growth, 3, padding=dilation, dilation=dilation, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.conv(self.bn(x))], dim=1)


def _transition(c: int, reduction: float, pool: bool, kind: str) -> tuple[nn.Sequential, int]:
    c_out = round(c // reduction / 32) * 32
    if kind == "maxpool_relu_fp_conv" or not pool:
        layers = [nn.BatchNorm2d(c), *([nn.MaxPool2d(2)] if pool else []), nn.ReLU(),
                  _fp(nn.Conv2d(c, c_out, 1, bias=False))]
        return nn.Sequential(*layers), c_out
    return nn.Sequential(nn.BatchNorm2d(c), downsample(kind, c, c_out, 2)), c_out


SPECS = {  # blocks, reduction, dilation
    "binarydensenet28": ((6, 6, 6, 5), (2.7, 2.7, 2.2), (1, 1, 1, 1)),
    "binarydensenet37": ((6, 8, 12, 6), (3.3, 3.3, 4.0), (1, 1, 1, 1)),
    "binarydensenet37_dilated": ((6, 8, 12, 6), (3.3, 3.3, 4.0), (1, 1, 2, 4)),
}


def _binarydensenet(name: str):
    blocks, reduction, dilation = SPECS[name]

    def build(in_channels: int, num_classes: int, image_size: int, growth_rate: int = 64,
              downsample: str = "maxpool_relu_fp_conv", keep_first_fp: bool = True, keep_last_fp: bool = True,
              activation: str = "identity") -> nn.Module:
        if downsample not in DOWNSAMPLE:
            raise UserError(f"model.downsample={downsample!r} is invalid; valid: {', '.join(DOWNSAMPLE)}")
        layers, c = [stem(in_channels, 64, image_size, bn_after_pool=False, keep_fp=keep_first_fp)], 64
        for b, n in enumerate(blocks):
            for _ in range(n):
                layers.append(DenseLayer(c, growth_rate, dilation[b]))
                c += growth_rate
            if b < len(blocks) - 1:
                t, c = _transition(c, reduction[b], pool=dilation[b + 1] == 1, kind=downsample)
                layers.append(t)
        layers.append(Head(c, num_classes, bn=True, keep_fp=keep_last_fp))
        return nn.Sequential(*layers)

    build.__name__ = name
    register_model(name)(build)


for _name in SPECS:
    _binarydensenet(_name)
