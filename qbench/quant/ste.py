"""The straight-through estimator as one expression.

``straight_through(value, surrogate)`` returns ``value`` in the forward pass and the gradient of
``surrogate`` in the backward pass. Written as ``value.detach() + (surrogate - surrogate.detach())``:
the bracket is exactly zero in IEEE arithmetic (x - x == 0 for every finite x), so the forward value is
bit-exact -- a binary weight is exactly +-1, never 0.99999994 -- unlike the common
``x + (q - x).detach()``, which rounds. Plain tensor ops also keep the quantizers traceable by
``torch.compile``.
"""
from __future__ import annotations

import torch


def straight_through(value: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """Forward: ``value``. Backward: d(surrogate)/dx."""
    return value.detach() + (surrogate - surrogate.detach())


class _QuantizeBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, fn, bits):
        ctx.fn, ctx.bits = fn, bits
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return ctx.fn(grad, ctx.bits), None, None


def quantize_backward(x: torch.Tensor, fn, bits: int) -> torch.Tensor:
    """Forward: ``x``. Backward: ``fn(grad, bits)`` -- a gradient or error quantizer placed on a tensor
    (DoReFa's gradients, WAGE's errors)."""
    return _QuantizeBackward.apply(x, fn, bits)
