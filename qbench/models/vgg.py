"""VGG-style nets of the seed papers, from one spec table.

vgg_small (BinaryConnect / BNN CIFAR-10): 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-2x1024FC-10, every layer
  followed by BN (the output too), pooling before BN as in the BNN code: conv -> MP -> BN -> act.
vgg7 (TWN, WAGE): 2x128C3-MP2-2x256C3-MP2-2x512C3-MP2-1024FC-10; ``bn=false`` is WAGE's form (no batch
  norm anywhere, which WAGE replaces by constant layer scales).
vgg9 (Stochastic Quantization, Dong et al. 2017, official prototxt): 2x64C3-MP2-D.25-2x128C3-MP2-D.25-
  2x256C3-MP2-D.25-512FC-D.5-512FC-D.5-10FC; conv/FC -> BN -> ReLU, pool after; last FC with bias, no BN.
vgg11 (BinaryRelax, Yin et al. 2018, the authors' VGG11-Cifar10 notebook): 64C3-MP2-128C3-MP2-2x256C3-MP2-
  2x512C3-MP2-2x512C3-MP2-10FC, conv -> BN -> ReLU, pool after (the notebook's conv biases, which BN cancels,
  are left out).
Inputs above 64 px (ImageNet) are average-pooled to the 32 px net's last map (4x4; vgg11 1x1) before the
classifier, so the FC layers are those of the 32 px net.
"""
from __future__ import annotations

from torch import nn

from qbench.models.registry import activation as make_act, batch_norm_gamma_init, register_model

# stage = (channels, convs); every stage ends with a 2x2 max-pool
SPECS = {
    "vgg_small": dict(stages=[(128, 2), (256, 2), (512, 2)], fc=[1024, 1024], pool_before_bn=True,
                      out_bn=True, conv_dropout=0.0, fc_dropout=0.0),
    "vgg7": dict(stages=[(128, 2), (256, 2), (512, 2)], fc=[1024], pool_before_bn=False,
                 out_bn=False, conv_dropout=0.0, fc_dropout=0.0),
    "vgg9": dict(stages=[(64, 2), (128, 2), (256, 2)], fc=[512, 512], pool_before_bn=False,
                 out_bn=False, conv_dropout=0.25, fc_dropout=0.5),
    "vgg11": dict(stages=[(64, 1), (128, 1), (256, 2), (512, 2), (512, 2)], fc=[], pool_before_bn=False,
                  out_bn=False, conv_dropout=0.0, fc_dropout=0.0),
}


def _vgg(spec: dict, in_channels: int, num_classes: int, image_size: int, width: float, activation: str,
         bn_eps: float, out_bn: bool, conv_dropout: float, fc_dropout: float, bn: bool = True,
         fc_width: float | None = None, bias: bool | None = None, bn_gamma_init: str | None = None) -> nn.Module:
    hidden_bias = not bn if bias is None else bias  # null: only without batch norm; false: none (WAGE's code)
    out_bias = not (out_bn and bn) if bias is None else bias
    gamma_init = batch_norm_gamma_init(bn_gamma_init)
    norm2d = (lambda c: gamma_init(nn.BatchNorm2d(c, eps=bn_eps))) if bn else (lambda c: nn.Identity())
    norm1d = (lambda c: gamma_init(nn.BatchNorm1d(c, eps=bn_eps))) if bn else (lambda c: nn.Identity())
    layers: list[nn.Module] = []
    c_in, size = in_channels, image_size
    for channels, convs in spec["stages"]:
        c = max(1, round(channels * width))
        for j in range(convs):
            pool = j == convs - 1
            layers.append(nn.Conv2d(c_in, c, 3, padding=1, bias=hidden_bias))
            if pool and spec["pool_before_bn"]:
                layers.append(nn.MaxPool2d(2))
            layers += [norm2d(c), make_act(activation)]
            if pool and not spec["pool_before_bn"]:
                layers.append(nn.MaxPool2d(2))
            c_in = c
        size //= 2
        if conv_dropout:
            layers.append(nn.Dropout(conv_dropout))
    if image_size > 64:  # ImageNet-sized inputs: pooled to the 32 px net's last map so the classifier is the same
        size = 32 >> len(spec["stages"])
        layers.append(nn.AdaptiveAvgPool2d(size))
    layers.append(nn.Flatten())
    f_in = c_in * size * size
    for f in spec["fc"]:
        f = max(1, round(f * (width if fc_width is None else fc_width)))
        layers += [nn.Linear(f_in, f, bias=hidden_bias), norm1d(f), make_act(activation)]
        if fc_dropout:
            layers.append(nn.Dropout(fc_dropout))
        f_in = f
    layers.append(nn.Linear(f_in, num_classes, bias=out_bias))
    if out_bn and bn:
        layers.append(norm1d(num_classes))
    return nn.Sequential(*layers)


def _register(name: str):
    spec = SPECS[name]

    def build(in_channels: int, num_classes: int, image_size: int, width: float = 1.0,
              activation: str = "relu", bn_eps: float = 1e-5, out_bn: bool = spec["out_bn"],
              conv_dropout: float = spec["conv_dropout"], fc_dropout: float = spec["fc_dropout"], bn: bool = True,
              fc_width: float | None = None, bias: bool | None = None, bn_gamma_init: str | None = None):
        return _vgg(spec, in_channels, num_classes, image_size, width, activation, bn_eps, out_bn,
                    conv_dropout, fc_dropout, bn, fc_width, bias, bn_gamma_init)

    build.__name__ = name
    register_model(name)(build)


for _name in SPECS:
    _register(_name)
