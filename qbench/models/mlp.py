"""The permutation-invariant MNIST MLP of BinaryConnect and BNN: [dropout] (FC -> BN -> act [-> dropout])
x L -> FC -> BN. Hidden sizes 3x1024 (BinaryConnect 2015 code) or 3x4096 (BNN Theano)."""
from __future__ import annotations

from torch import nn

from qbench.models.registry import activation as make_act, register_model


@register_model("mlp", max_image_size=64)
def mlp(in_channels: int, num_classes: int, image_size: int, hidden: list[int] = (1024, 1024, 1024),
        activation: str = "relu", dropout_in: float = 0.0, dropout_hidden: float = 0.0,
        out_bn: bool = True, bn_eps: float = 1e-4) -> nn.Module:
    layers: list[nn.Module] = [nn.Flatten()]
    if dropout_in:
        layers.append(nn.Dropout(dropout_in))
    width = in_channels * image_size * image_size
    for h in hidden:
        layers += [nn.Linear(width, h, bias=False), nn.BatchNorm1d(h, eps=bn_eps), make_act(activation)]
        if dropout_hidden:
            layers.append(nn.Dropout(dropout_hidden))
        width = h
    layers.append(nn.Linear(width, num_classes, bias=not out_bn))
    if out_bn:  # BC/BNN put batch norm on the output too (before the squared hinge loss)
        layers.append(nn.BatchNorm1d(num_classes, eps=bn_eps))
    return nn.Sequential(*layers)
