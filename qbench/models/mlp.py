"""The permutation-invariant MNIST MLP of BinaryConnect and BNN: [dropout] (FC -> BN -> act [-> dropout])
x L -> FC -> BN. Hidden sizes 3x1024 (BinaryConnect 2015 code) or 3x4096 (BNN Theano)."""
from __future__ import annotations

from torch import nn

from qbench.models.registry import activation as make_act, batch_norm_gamma_init, register_model


@register_model("mlp", max_image_size=64)
def mlp(in_channels: int, num_classes: int, image_size: int, hidden: list[int] = (1024, 1024, 1024),
        activation: str = "relu", dropout_in: float = 0.0, dropout_hidden: float = 0.0,
        out_bn: bool = True, bn_eps: float = 1e-4, bn_momentum: float | None = None,
        bn_gamma_init: str | None = None) -> nn.Module:
    """``bn_momentum``: the weight of each batch in the batch norms' running statistics (None: PyTorch's 0.1;
    BinaryConnect's code: 0.33 for batches of 200). ``bn_gamma_init``: see ``batch_norm_gamma_init``."""
    if bn_momentum is not None and (isinstance(bn_momentum, bool) or not isinstance(bn_momentum, (int, float))
                                    or not 0 < bn_momentum <= 1):
        raise ValueError(f"bn_momentum must be a number in (0, 1] or null, got {bn_momentum!r}")

    gamma_init = batch_norm_gamma_init(bn_gamma_init)

    def bn(n: int) -> nn.Module:
        return gamma_init(nn.BatchNorm1d(n, eps=bn_eps, momentum=0.1 if bn_momentum is None else bn_momentum))

    layers: list[nn.Module] = [nn.Flatten()]
    if dropout_in:
        layers.append(nn.Dropout(dropout_in))
    width = in_channels * image_size * image_size
    for h in hidden:
        layers += [nn.Linear(width, h, bias=False), bn(h), make_act(activation)]
        if dropout_hidden:
            layers.append(nn.Dropout(dropout_hidden))
        width = h
    layers.append(nn.Linear(width, num_classes, bias=not out_bn))
    if out_bn:  # BC/BNN put batch norm on the output too (before the squared hinge loss)
        layers.append(bn(num_classes))
    return nn.Sequential(*layers)
