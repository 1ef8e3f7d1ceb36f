"""DoReFa-Net (Zhou et al. 2016): k-bit weights, activations and gradients from one rounding function.

Where the paper and its official code (tensorpack examples/DoReFa-Net) differ, the code is followed and the
docstring says so.
"""
from __future__ import annotations

import torch

from qbench.quant.binary import sign
from qbench.quant.facts import quantizer
from qbench.quant.ste import quantize_backward, straight_through


def _check_bits(k) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= 32:
        raise ValueError(f"bit width must be an integer from 1 to 32, got {k!r}")
    return k


def quantize_k(x: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa eq. 5: quantize_k(r) = round((2^k - 1) r) / (2^k - 1) for r in [0, 1].

    backward: identity (dc/dr_i = dc/dr_o). Rounding is half-to-even, as tf.round in the official code.
    """
    n = float(2 ** _check_bits(k) - 1)
    return straight_through(torch.round(x * n) / n, x)


@quantizer(bits=lambda a: a["k"], alias="dorefa_weight")
def dorefa_weight(w: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa eq. 9 (k > 1) and eq. 7-8 (k = 1); k = 32 leaves w unchanged.

    k > 1: w_q = 2 * quantize_k(tanh(w) / (2 max|tanh(w)|) + 1/2) - 1  (gradient through tanh and max)
    k = 1: w_q = sign(w) * E|w|, E over the whole layer and held constant: backward identity.
    """
    if _check_bits(k) == 32:
        return w
    if k == 1:
        scale = w.abs().mean().detach()
        return straight_through(sign(w) * scale, w)
    t = torch.tanh(w)
    return 2 * quantize_k(t / (2 * t.abs().max()) + 0.5, k) - 1


@quantizer(bits=lambda a: a["k"], alias="dorefa_activation")
def dorefa_activation(x: torch.Tensor, k: int) -> torch.Tensor:
    """DoReFa eq. 10: quantize_k(clip(x, 0, 1)); gradient 1 inside [0, 1], 0 outside. k = 32: unchanged
    (the official code then uses plain ReLU, which is the model's own activation here)."""
    if _check_bits(k) == 32:
        return x
    return quantize_k(x.clamp(0, 1), k)


def dorefa_gradient(g: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """DoReFa eq. 12: stochastic k-bit quantization of a gradient tensor (the backward of a layer output).

    g_q = 2 max|g| * (quantize_k(clip(g / (2 max|g|) + 1/2 + N(k), 0, 1)) - 1/2),
    N(k) ~ U(-0.5, 0.5) / (2^k - 1), max over every axis but the batch axis (one scale per example).
    The clip is the official code's (the paper leaves it implicit). Unbiased: E[g_q] = g.
    """
    if _check_bits(k) == 32:
        return g
    n = float(2 ** k - 1)
    dims = tuple(range(1, g.dim()))
    gmax = g.abs().amax(dim=dims, keepdim=True) if dims else g.abs().max()
    safe = torch.where(gmax > 0, gmax, torch.ones_like(gmax))
    noise = (torch.rand(g.shape, generator=generator, device=g.device, dtype=g.dtype) - 0.5) / n
    x = (g / (2 * safe) + 0.5 + noise).clamp(0, 1)
    return 2 * safe * (torch.round(x * n) / n - 0.5) * (gmax > 0)


@quantizer(bits=lambda a: a["k"])
def dorefa_gradient_ste(x: torch.Tensor, k: int) -> torch.Tensor:
    """Identity in the forward pass; quantizes the gradient flowing back through ``x`` with
    ``dorefa_gradient``. Applied to the output of each quantized layer."""
    if _check_bits(k) == 32:
        return x
    return quantize_backward(x, dorefa_gradient, k)
