"""The seed papers' older nets.

lenet5 (TWN, WAGE on MNIST): 32C5-MP2-64C5-MP2-512FC-10, unpadded 5x5 convs (28 -> 24 -> 12 -> 8 -> 4);
  ``bn=true`` puts batch norm after each conv / hidden FC (TWN's conv -> BN -> ReLU), ``bn=false`` is
  WAGE's form. Inputs above 64 px are average-pooled to the 32 px net's 5x5 before the classifier.
alexnet_bn (XNOR-Net, DoReFa, SQ ImageNet tables): AlexNet with batch norm after every conv and hidden FC,
  no LRN, no grouped convs: 96C11/4-MP3/2-256C5-MP3/2-384C3-384C3-256C3-MP3/2-4096FC-4096FC-classes.
  For inputs up to 64 px a CIFAR-sized variant keeps the widths with 5x5 / 3x3 convs at stride 1 and
  2x2 pools (32 -> 16 -> 8 -> 4) for quick runs.
alexnet_dorefa (DoReFa-Net's ImageNet AlexNet, as tensorpack's examples/DoReFa-Net/alexnet-dorefa.py defines
  it): 96C12/4 (valid) - act - 256C5 (2 groups) - BN - MP3/2 - act - 384C3 - BN - MP3/2 - act - 384C3 (2 groups)
  - BN - act - 256C3 (2 groups) - BN - MP3/2 - act - 4096FC - BN - act - 4096FC - BN - act - classes. No BN
  after the first conv; convs without bias, fc0 and the classifier with one.
darknet_extraction (XNOR-Net Table 2's "GoogLeNet variant": Darknet's extraction.cfg with batch norm):
  64C7/2-MP2-192C3-MP2-128C1-256C3-256C1-512C3-MP2-4x(256C1-512C3)-512C1-1024C3-MP2-2x(512C1-1024C3), each
  conv -> BN -> leaky ReLU (0.1), then a 1x1 conv to the classes (with bias, no BN, leaky as in the cfg),
  global average pool. 20 convs with BN and the classifier conv: the paper's 21 layers.
"""
from __future__ import annotations

from torch import nn

from qbench.models.registry import activation as make_act, register_model


@register_model("lenet5")
def lenet5(in_channels: int, num_classes: int, image_size: int, bn: bool = True, activation: str = "relu",
           width: float = 1.0, bias: bool | None = None) -> nn.Module:
    """``bias``: null gives the hidden layers a bias only without batch norm and the classifier one always;
    false: no layer has one (WAGE's official code)."""
    c1, c2, f = (max(1, round(c * width)) for c in (32, 64, 512))
    hidden_bias, out_bias = (not bn, True) if bias is None else (bias, bias)
    norm2d = nn.BatchNorm2d if bn else (lambda c: nn.Identity())
    size = ((image_size - 4) // 2 - 4) // 2
    squeeze = []
    if image_size > 64:  # ImageNet-sized inputs: pooled to the 32 px net's 5x5, the same classifier
        squeeze, size = [nn.AdaptiveAvgPool2d(5)], 5
    return nn.Sequential(
        nn.Conv2d(in_channels, c1, 5, bias=hidden_bias), norm2d(c1), make_act(activation), nn.MaxPool2d(2),
        nn.Conv2d(c1, c2, 5, bias=hidden_bias), norm2d(c2), make_act(activation), nn.MaxPool2d(2), *squeeze,
        nn.Flatten(),
        nn.Linear(c2 * size * size, f, bias=hidden_bias), nn.BatchNorm1d(f) if bn else nn.Identity(),
        make_act(activation),
        nn.Linear(f, num_classes, bias=out_bias))


@register_model("alexnet_bn")
def alexnet_bn(in_channels: int, num_classes: int, image_size: int, activation: str = "relu",
               width: float = 1.0, dropout: float = 0.0) -> nn.Module:
    c = [max(1, round(x * width)) for x in (96, 256, 384, 384, 256)]
    fc = max(1, round(4096 * width))
    small = image_size <= 64
    if small:
        geo = [(5, 1, 2, True), (5, 1, 2, True), (3, 1, 1, False), (3, 1, 1, False), (3, 1, 1, True)]
        pool, side = (lambda: nn.MaxPool2d(2)), image_size // 8
    else:
        geo = [(11, 4, 2, True), (5, 1, 2, True), (3, 1, 1, False), (3, 1, 1, False), (3, 1, 1, True)]
        pool, side = (lambda: nn.MaxPool2d(3, 2)), 6
    layers, c_in = [], in_channels
    for c_out, (k, s, p, pooled) in zip(c, geo):
        layers += [nn.Conv2d(c_in, c_out, k, s, p, bias=False), nn.BatchNorm2d(c_out), make_act(activation)]
        if pooled:
            layers.append(pool())
        c_in = c_out
    if not small:
        layers.append(nn.AdaptiveAvgPool2d(side))  # 224 px gives 6x6 already; other sizes are pooled to it
    layers.append(nn.Flatten())
    f_in = c_in * side * side
    for _ in range(2):
        layers += [nn.Linear(f_in, fc, bias=False), nn.BatchNorm1d(fc), make_act(activation)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        f_in = fc
    layers.append(nn.Linear(f_in, num_classes))
    return nn.Sequential(*layers)


@register_model("alexnet_dorefa")
def alexnet_dorefa(in_channels: int, num_classes: int, image_size: int, activation: str = "clip01",
                   width: float = 1.0) -> nn.Module:
    """224 px: 96C12/4 gives 54x54; pool1 pads its end as TF's SAME (ceil mode) -> 27, pool2 pads one each
    side -> 14, pool4 is valid -> 6, so fc0 sees 256x6x6. Other large sizes are pooled to 6x6 before fc0;
    up to 64 px a quick-run variant has a 5x5 stride-1 first conv (32 -> 16 -> 8 -> 3).
    ``activation`` (clip01: clip to [0, 1], the script's nonlinearity whenever activations are quantized)
    also ends the last hidden layer, whose output the float classifier reads unquantized."""
    c0, c1, c2, c3, c4 = (max(2, 2 * round(x * width / 2)) for x in (96, 256, 384, 384, 256))
    fc = max(1, round(4096 * width))
    small = image_size <= 64
    side = 3 if small else 6
    first = nn.Conv2d(in_channels, c0, 5, 1, 2, bias=False) if small else nn.Conv2d(in_channels, c0, 12, 4, bias=False)
    layers = [first, make_act(activation),
              nn.Conv2d(c0, c1, 5, padding=2, groups=2, bias=False), nn.BatchNorm2d(c1),
              nn.MaxPool2d(3, 2, ceil_mode=True), make_act(activation),
              nn.Conv2d(c1, c2, 3, padding=1, bias=False), nn.BatchNorm2d(c2), nn.MaxPool2d(3, 2, padding=1),
              make_act(activation),
              nn.Conv2d(c2, c3, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(c3), make_act(activation),
              nn.Conv2d(c3, c4, 3, padding=1, groups=2, bias=False), nn.BatchNorm2d(c4), nn.MaxPool2d(3, 2),
              make_act(activation), nn.AdaptiveMaxPool2d(side), nn.Flatten(),
              nn.Linear(c4 * side * side, fc), nn.BatchNorm1d(fc), make_act(activation),
              nn.Linear(fc, fc, bias=False), nn.BatchNorm1d(fc), make_act(activation),
              nn.Linear(fc, num_classes)]
    return nn.Sequential(*layers)


@register_model("darknet_extraction")
def darknet_extraction(in_channels: int, num_classes: int, image_size: int, activation: str = "leaky",
                       width: float = 1.0) -> nn.Module:
    pairs = [(256, 512)] * 4 + [(512, 1024)]
    spec = [(64, 7, 2), "M", (192, 3, 1), "M", (128, 1, 1), (256, 3, 1), (256, 1, 1), (512, 3, 1), "M",
            *[(c, k, 1) for a, b in pairs for c, k in ((a, 1), (b, 3))], "M",
            *[(c, k, 1) for _ in range(2) for c, k in ((512, 1), (1024, 3))]]
    layers, c_in = [], in_channels
    for item in spec:
        if item == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        c, k, stride = item
        c = max(1, round(c * width))
        layers += [nn.Conv2d(c_in, c, k, stride, k // 2, bias=False), nn.BatchNorm2d(c), make_act(activation)]
        c_in = c
    layers += [nn.Conv2d(c_in, num_classes, 1), make_act(activation), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(*layers)
