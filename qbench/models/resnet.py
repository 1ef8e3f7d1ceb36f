"""ResNets (He et al. 2016) with basic blocks, one definition for every depth.

resnet18: stages (2,2,2,2) x (64,128,256,512). Stem by input size: 3x3/1 conv and no max-pool for
  inputs up to 64 px (the usual CIFAR adaptation), 7x7/2 conv + 3x3/2 max-pool for ImageNet.
resnet20 / resnet56: the CIFAR ResNets of He et al. section 4.2: 3x3 stem, stages (n,n,n) x (16,32,64),
  n = 3 / 9. Shortcut option A (parameter-free: stride-2 subsample + zero channel padding, as in the
  paper's CIFAR experiments) or B (1x1 conv + BN projection).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qbench.errors import UserError
from qbench.models.registry import activation as make_act, register_model


class PadShortcut(nn.Module):
    """Option A shortcut: subsample by ``stride`` and zero-pad the new channels."""

    def __init__(self, stride: int, extra_channels: int):
        super().__init__()
        self.stride, self.extra = stride, extra_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, ::self.stride, ::self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, activation: str, shortcut: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.act1 = make_act(activation)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.act2 = make_act(activation)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            if shortcut == "A":
                self.shortcut = PadShortcut(stride, c_out - c_in)
            else:
                self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act2(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, blocks: list[int], channels: list[int], in_channels: int, num_classes: int,
                 imagenet_stem: bool, activation: str, shortcut: str):
        super().__init__()
        if shortcut not in ("A", "B"):
            raise UserError(f"model.shortcut must be 'A' (zero-padding) or 'B' (1x1 projection), got {shortcut!r}")
        c = channels[0]
        if imagenet_stem:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 7, 2, 3, bias=False), nn.BatchNorm2d(c),
                                      make_act(activation), nn.MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(nn.Conv2d(in_channels, c, 3, 1, 1, bias=False), nn.BatchNorm2d(c),
                                      make_act(activation))
        stages = []
        for i, (n, c_out) in enumerate(zip(blocks, channels)):
            stride = 1 if i == 0 else 2
            stage = []
            for j in range(n):
                stage.append(BasicBlock(c, c_out, stride if j == 0 else 1, activation, shortcut))
                c = c_out
            stages.append(nn.Sequential(*stage))
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(self.pool(x), 1))


def _widths(base: list[int], width: float) -> list[int]:
    return [max(1, round(c * width)) for c in base]


@register_model("resnet18")
def resnet18(in_channels: int, num_classes: int, image_size: int, width: float = 1.0,
             activation: str = "relu", shortcut: str = "B") -> nn.Module:
    return ResNet([2, 2, 2, 2], _widths([64, 128, 256, 512], width), in_channels, num_classes,
                  imagenet_stem=image_size > 64, activation=activation, shortcut=shortcut)


def _cifar_resnet(depth: int):
    n = (depth - 2) // 6

    def build(in_channels: int, num_classes: int, image_size: int, width: float = 1.0,
              activation: str = "relu", shortcut: str = "A") -> nn.Module:
        return ResNet([n, n, n], _widths([16, 32, 64], width), in_channels, num_classes,
                      imagenet_stem=False, activation=activation, shortcut=shortcut)

    build.__name__ = f"resnet{depth}"
    return build


for _depth in (20, 56):
    register_model(f"resnet{_depth}", max_image_size=64)(_cifar_resnet(_depth))
