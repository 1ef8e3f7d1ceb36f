"""Weight quantizers that quantize only part of a tensor, the part chosen by a method's schedule.

Both hold a boolean ``mask`` (per output channel, or the weight's own shape) that a callback sets; the mask
is plain data, not a buffer: the callback that owns the schedule saves it with its own state.
"""
from __future__ import annotations

import torch
from torch import nn

from qbench.nn.layers import describe_quantizer


def _broadcast(mask: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (w.dim() - 1))) if mask.dim() == 1 and w.dim() > 1 else mask


class StochasticQuantizer(nn.Module):
    """SQ's hybrid weight: quantized where ``mask`` is set (gradient through ``quantizer``'s STE), full
    precision elsewhere. ``mask=None`` quantizes everything (SQ ratio 100%). ``draw``: a function (W, Q) -> mask
    called at every forward, training and evaluation alike, as the official layers re-draw in their
    Forward_gpu (``selection=code``); None: the schedule sets ``mask``."""

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = quantizer
        self.mask: torch.Tensor | None = None
        self.draw = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        q = self.quantizer(w)
        if self.draw is not None:
            with torch.no_grad():
                self.mask = self.draw(w.detach(), q.detach())
        return q if self.mask is None else torch.where(_broadcast(self.mask, w), q, w)

    def describe(self) -> str:
        return f"sq({describe_quantizer(self.quantizer)})"


class FrozenWeights(nn.Module):
    """INQ's partially quantized weight: entries under ``mask`` already hold their quantized value and are
    frozen (no gradient); the rest is full precision and trains. ``mask=None``: nothing frozen yet."""

    def __init__(self, bits: int = 5):
        super().__init__()
        self.bits = bits
        self.mask: torch.Tensor | None = None

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w if self.mask is None else torch.where(self.mask, w.detach(), w)

    exact_in_bf16 = True  # frozen entries are powers of two (or 0); the rest is float

    def describe(self) -> str:
        return f"inq(bits={self.bits})"


class Gated(nn.Module):
    """A weight quantizer that a schedule switches on (``enabled``); until then the weight is used in full
    precision (Two-Step Quantization's step 1 trains float weights with quantized activations)."""

    def __init__(self, quantizer):
        super().__init__()
        self.quantizer = quantizer
        self.enabled = False

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.quantizer(w) if self.enabled else w

    def describe(self) -> str:
        return f"gated({describe_quantizer(self.quantizer)})"
