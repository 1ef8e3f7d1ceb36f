"""QConv2d and QLinear: nn.Conv2d / nn.Linear that quantize their weight and their input.

A quantizer is any function tensor -> tensor (``qbench.quant``), applied in the forward pass:
``y = conv(input_quantizer(x), weight_quantizer(W))``. The real-valued ``weight`` stays the parameter the
optimizer updates (BinaryConnect Algorithm 1). With both quantizers None the layer computes exactly what the
full-precision layer computes.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Quantizer = Callable[[torch.Tensor], torch.Tensor]


def describe_quantizer(q: Quantizer | None) -> str:
    """Short human-readable name: 'fp', 'ste_sign', 'binaryconnect(mode=stoch)'."""
    if q is None:
        return "fp"
    if isinstance(q, functools.partial):
        args = ",".join(f"{k}={v}" for k, v in q.keywords.items())
        return f"{describe_quantizer(q.func)}({args})" if args else describe_quantizer(q.func)
    return getattr(q, "__name__", type(q).__name__)


class _QuantizedMixin:
    weight_quantizer: Quantizer | None
    input_quantizer: Quantizer | None

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        w = self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)
        return x, w

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses (for inspection and tests)."""
        with torch.no_grad():
            return self.weight if self.weight_quantizer is None else self.weight_quantizer(self.weight)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", weight_quantizer={describe_quantizer(self.weight_quantizer)}"
                f", input_quantizer={describe_quantizer(self.input_quantizer)}")

    @classmethod
    def from_float(cls, layer, weight_quantizer: Quantizer | None = None, input_quantizer: Quantizer | None = None):
        """Wrap an existing float layer, sharing its parameters (no copy)."""
        q = cls.__new__(cls)
        q.__dict__.update(layer.__dict__)  # same Parameters, buffers, hooks and hyper-parameters
        q._parameters = layer._parameters
        q._buffers = layer._buffers
        q._modules = layer._modules
        q.weight_quantizer = weight_quantizer
        q.input_quantizer = input_quantizer
        return q


class QConv2d(_QuantizedMixin, nn.Conv2d):
    def __init__(self, *args, weight_quantizer: Quantizer | None = None,
                 input_quantizer: Quantizer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._quantize(x)
        return self._conv_forward(x, w, self.bias)


class QLinear(_QuantizedMixin, nn.Linear):
    def __init__(self, *args, weight_quantizer: Quantizer | None = None,
                 input_quantizer: Quantizer | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.weight_quantizer = weight_quantizer
        self.input_quantizer = input_quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x, w = self._quantize(x)
        return F.linear(x, w, self.bias)


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, _QuantizedMixin) and (
        module.weight_quantizer is not None or module.input_quantizer is not None)
