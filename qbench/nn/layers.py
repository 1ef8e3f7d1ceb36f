"""QConv2d and QLinear: nn.Conv2d / nn.Linear that quantize their weight and their input.

A quantizer is any function tensor -> tensor (``qbench.quant``), applied in the forward pass:
``y = output_quantizer(conv(input_quantizer(x), weight_quantizer(W)))``. An output quantizer is typically
identity in the forward pass and quantizes the gradient flowing back (DoReFa's gradients, WAGE's errors). The
real-valued ``weight`` stays the parameter the optimizer updates (BinaryConnect Algorithm 1). With both
quantizers None the layer computes exactly what the full-precision layer computes. Under bf16 autocast a layer
computes in bf16 only where its quantized values are exact in bf16 (+-1, WAGE grids, fixed point), else in
float32 (``qbench.quant.facts.exact_in_bf16``). A quantizer whose function takes ``training`` is told whether
the layer is training: stochastic binarization is a train-time rule (BinaryConnect's code tests stochastic nets
with the real-valued weights; BNN samples activations at train time only).
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

Quantizer = Callable[[torch.Tensor], torch.Tensor]


def takes_training(q: Quantizer | None) -> bool:
    """Whether ``q`` (a function or partial, not a module: a module knows its own mode) accepts ``training``."""
    if q is None or isinstance(q, nn.Module):
        return False
    try:
        return "training" in inspect.signature(q).parameters
    except (TypeError, ValueError):
        return False


def describe_quantizer(q: Quantizer | None) -> str:
    """Short human-readable name: 'fp', 'ste_sign', 'binaryconnect(mode=stoch)'."""
    if q is None:
        return "fp"
    if hasattr(q, "describe"):
        return q.describe()
    if isinstance(q, functools.partial):
        args = ",".join(f"{k}={v}" for k, v in q.keywords.items())
        return f"{describe_quantizer(q.func)}({args})" if args else describe_quantizer(q.func)
    return getattr(q, "__name__", type(q).__name__)


class _QuantizedMixin:
    """What QConv2d and QLinear share; each adds only its operation ``_op(x, w)``."""

    weight_quantizer: Quantizer | None
    input_quantizer: Quantizer | None
    output_quantizer: Quantizer | None = None
    input_scale: Callable[..., torch.Tensor] | None = None  # f(real input, **geometry) -> output scale (XNOR K)
    # a submodule "input_dropout", if present, drops units after the input quantizer (policy.dropout_after_quantizer)

    def __init__(self, *args, weight_quantizer: Quantizer | None = None, input_quantizer: Quantizer | None = None,
                 output_quantizer: Quantizer | None = None, input_scale=None, **kwargs):
        super().__init__(*args, **kwargs)
        self._set_quantizers(weight_quantizer, input_quantizer, output_quantizer, input_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.low_precision_exact and torch.is_autocast_enabled(x.device.type):
            # bf16 would round this layer's quantized values (a scale like mean|W|, levels like i/3): float32
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.float())
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self._scale(x)
        x, w = self._quantize(x)
        return self._output(self._op(x, w), scale)

    def _quantize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.quantize_input(x)
        if "input_dropout" in self._modules:
            x = self._modules["input_dropout"](x)
        return x, self.quantize_weight(self.weight)

    def quantize_input(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_quantizer is None:
            return x
        return self.input_quantizer(x, training=self.training) if self._takes_training[1] else self.input_quantizer(x)

    def quantize_weight(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` through the weight quantizer (the layer's own weight, or QAT's BN-folded one)."""
        if self.weight_quantizer is None:
            return w
        return self.weight_quantizer(w, training=self.training) if self._takes_training[0] else self.weight_quantizer(w)

    def set_weight_quantizer(self, q: Quantizer | None) -> None:
        """Swap the weight quantizer during training (BinaryRelax's growing lambda)."""
        self.weight_quantizer = q
        self._takes_training = (takes_training(q), self._takes_training[1])

    def quantized_weight(self) -> torch.Tensor:
        """The weight the forward pass uses (for inspection and tests)."""
        with torch.no_grad():
            return self.quantize_weight(self.weight)

    def _scale(self, x: torch.Tensor):
        """The input scale is computed from the real-valued input, before it is quantized."""
        if self.input_scale is None:
            return None
        if isinstance(self, nn.Conv2d):
            return self.input_scale(x, kernel_size=self.kernel_size, stride=self.stride, padding=self.padding,
                                    dilation=self.dilation)
        return self.input_scale(x)

    def _output(self, y: torch.Tensor, scale: torch.Tensor | None) -> torch.Tensor:
        if scale is not None:
            y = y * scale
        return y if self.output_quantizer is None else self.output_quantizer(y)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", weight_quantizer={describe_quantizer(self.weight_quantizer)}"
                f", input_quantizer={describe_quantizer(self.input_quantizer)}"
                f", output_quantizer={describe_quantizer(self.output_quantizer)}")

    @classmethod
    def from_float(cls, layer, weight_quantizer: Quantizer | None = None, input_quantizer: Quantizer | None = None,
                   output_quantizer: Quantizer | None = None, input_scale=None):
        """Wrap an existing float layer, sharing its parameters (no copy)."""
        q = cls.__new__(cls)
        q.__dict__.update(layer.__dict__)  # same Parameters, buffers, hooks and hyper-parameters
        q._parameters = layer._parameters
        q._buffers = layer._buffers
        q._modules = layer._modules
        q._set_quantizers(weight_quantizer, input_quantizer, output_quantizer, input_scale)
        return q

    def _set_quantizers(self, weight_quantizer, input_quantizer, output_quantizer, input_scale) -> None:
        from qbench.quant.facts import exact_in_bf16

        self.weight_quantizer, self.input_quantizer = weight_quantizer, input_quantizer
        self._takes_training = (takes_training(weight_quantizer), takes_training(input_quantizer))  # once, not per call
        self.output_quantizer, self.input_scale = output_quantizer, input_scale
        # under bf16 autocast the conv runs in bf16 only if that cannot change a quantized value
        self.low_precision_exact = exact_in_bf16(weight_quantizer) and exact_in_bf16(input_quantizer)


class QConv2d(_QuantizedMixin, nn.Conv2d):
    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, w, self.bias)


class QLinear(_QuantizedMixin, nn.Linear):
    def _op(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return F.linear(x, w, self.bias)


def is_quantized(module: nn.Module) -> bool:
    return isinstance(module, _QuantizedMixin) and any(
        q is not None for q in (module.weight_quantizer, module.input_quantizer, module.output_quantizer))
