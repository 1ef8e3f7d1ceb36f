"""Shift-based batch normalization (BNN, Hubara et al. 2016, Algorithm 3), as the authors' Torch7 code
(``BatchNormalizationShiftPow2`` / ``SpatialBatchNormalizationShiftPow2``) computes it.

Forward, per feature over the batch (and the pixels of a feature map):

    C(x)   = x - mean(x)
    var    = mean(C(x) * AP2(C(x)))                  (AP2: ``qbench.quant.ap2``)
    s      = AP2(1 / sqrt(var + eps))
    x_hat  = C(x) * s
    y      = AP2(gamma) * x_hat + beta

Backward, as the code's (BN's own gradient with AP2(C(x)) in its projection term and the shifted s, AP2(gamma)):

    dx     = AP2(gamma) * s * (dy - mean(dy) - AP2(C(x)) * mean(AP2(C(x)) * dy) * s^2)
    dgamma = sum(AP2(x_hat) * dy),   dbeta = sum(dy)

The code normalizes with the batch's statistics at test time too (its running averages are kept but never
used), so evaluation batches should be as large as the code's (``trainer.eval_batch_size``).
"""
from __future__ import annotations

import torch
from torch import nn

from qbench.quant.shift import ap2


class _ShiftBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, gamma, beta, eps, dims):
        shape = [1, -1] + [1] * (x.dim() - 2)
        c = x - x.mean(dims, keepdim=True)
        c_ap2 = ap2(c)
        s = ap2((c * c_ap2).mean(dims, keepdim=True).add(eps).rsqrt())
        g = ap2(gamma).view(shape)
        ctx.save_for_backward(c, c_ap2, s, g)
        ctx.dims = dims
        return c * s * g + beta.view(shape)

    @staticmethod
    def backward(ctx, dy):
        c, c_ap2, s, g = ctx.saved_tensors
        dims = ctx.dims
        dx = g * s * (dy - dy.mean(dims, keepdim=True) - c_ap2 * (c_ap2 * dy).mean(dims, keepdim=True) * s * s)
        dgamma = (ap2(c * s) * dy).sum(dims)
        return dx, dgamma, dy.sum(dims), None, None


class ShiftBatchNorm(nn.Module):
    """Algorithm 3 for (N, C) and (N, C, H, W) inputs; gamma starts at 1, beta at 0."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.num_features, self.eps = num_features, float(eps)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 4):
            raise ValueError(f"ShiftBatchNorm takes (N, C) or (N, C, H, W) inputs, got {tuple(x.shape)}")
        dims = (0,) if x.dim() == 2 else (0, 2, 3)
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return _ShiftBatchNorm.apply(x.float(), self.weight, self.bias, self.eps, dims)
        return _ShiftBatchNorm.apply(x, self.weight, self.bias, self.eps, dims)

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}"


def shift_batch_norms(model: nn.Module) -> list[str]:
    """Each batch norm of ``model`` before its last conv / linear layer becomes a ShiftBatchNorm (keeping its
    eps): the authors' Torch7 models use the shift-based one after every hidden layer and a plain
    ``nn.BatchNormalization`` after the output layer. Returns the names of the replaced modules."""
    modules = list(model.named_modules())
    last = max((i for i, (_, m) in enumerate(modules) if isinstance(m, (nn.Conv2d, nn.Linear))), default=-1)
    hidden = [(n, m) for n, m in modules[:last] if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d))]
    for name, bn in hidden:
        model.set_submodule(name, ShiftBatchNorm(bn.num_features, bn.eps))
    return [n for n, _ in hidden]
