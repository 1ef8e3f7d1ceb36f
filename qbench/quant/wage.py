"""WAGE (Wu, Li, Chen, Shi. "Training and Inference with Integers in Deep Neural Networks", ICLR 2018):
weights, activations, gradients and errors as k-bit integers (times a power of two).

    sigma(k) = 2^(1-k)                                              (eq. 1, the k-bit step)
    Q(x, k)  = clip(sigma(k) * round(x / sigma(k)), -1 + sigma(k), 1 - sigma(k))   (eq. 2)
    Shift(x) = 2^round(log2 x)                                      (eq. 4)
    init:    W = Q(U(-L, L), k_W), L = max(L_min, L0), L_min = beta sigma(k_W), beta = 1.5   (eq. 5)
    scale:   alpha = max(Shift(L_min / L0), 1); a layer's output is divided by alpha (eq. 6)
    W_q = Q(W, k_W)                                                 (eq. 7; backward: identity)
    a_q = Q(a, k_A)                                                 (eq. 8; backward: clip's mask)
    e_q = Q(e / Shift(max|e|), k_E)                                 (eq. 9-10, errors)
    e_q = Q(gamma e / Shift(max|e|), k_E)      (section 4.3, Table 2: window's right boundary max|e| / gamma)
    dW  = sigma(k_G) * sr(lr * g / Shift(max|g|))                   (eq. 11-13, sr: stochastic rounding)
    W  <- clip(W - dW, -1 + sigma(k_W), 1 - sigma(k_W))             (eq. 14)

L0 is sqrt(3 / fan_in) as in the official code (its logs print alpha = 2, 16, 16, 16, 16, 32, 32, 16 for VGG-7
and 2, 16, 16, 8 for LeNet-5;
the paper's text writes sqrt(6 / fan_in)). The code passes lr * g / Shift(max|g|) through Q(., bitsR = 16) before
the stochastic rounding, but its Q returns x unchanged for more than 15 bits (boluoweifenda/WAGE
source/Quantize.py, ``Q``: ``if bits > 15: return x``, at 9d57688): nothing is rounded there, and qbench rounds
nothing either.
"""
from __future__ import annotations

import functools
import math

import torch

from qbench.quant.facts import quantizer
from qbench.quant.ste import quantize_backward, straight_through

BETA = 1.5


def wage_sigma(k: int) -> float:
    """sigma(k) = 2^(1-k), the smallest step of a k-bit value in (-1, 1)."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 2:
        raise ValueError(f"WAGE bit width must be an integer >= 2, got {k!r}")
    return 2.0 ** (1 - k)


def wage_quantize(x: torch.Tensor, k: int) -> torch.Tensor:
    """Eq. 2: Q(x, k) = clip(sigma(k) round(x / sigma(k)), -1 + sigma(k), 1 - sigma(k)). No gradient rule of
    its own: each use below says how the gradient passes."""
    s = wage_sigma(k)
    return torch.clamp(torch.round(x / s) * s, -1 + s, 1 - s)


def wage_shift(x: torch.Tensor) -> torch.Tensor:
    """Eq. 4: Shift(x) = 2^round(log2 x), the power of two nearest to x in log scale."""
    return torch.exp2(torch.round(torch.log2(x)))


def wage_init_limit(fan_in: int, k: int) -> float:
    """Eq. 5: L = max(beta sigma(k_W), sqrt(3 / fan_in))."""
    return max(BETA * wage_sigma(k), math.sqrt(3.0 / fan_in))


def wage_scale(fan_in: int, k: int) -> float:
    """Eq. 6: alpha = max(Shift(L_min / L0), 1), a power of two fixed by the layer's fan-in."""
    ratio = BETA * wage_sigma(k) / math.sqrt(3.0 / fan_in)
    return max(2.0 ** round(math.log2(ratio)), 1.0)


def _fan_in(w: torch.Tensor) -> int:
    return w[0].numel() if w.dim() > 1 else w.numel()


def wage_init(w: torch.Tensor, bits: int = 2) -> torch.Tensor:
    """Fill ``w`` in place from U(-L, L) (eq. 5), then put it on the k_W-bit grid, Q(W, k_W): weights are stored
    as integers from the start. With k_W = 2 and L = 1.5 sigma = 0.75 the three ternary values come out
    equally likely, which is why beta = 1.5 (section 4). The official code does the same once before training
    (``W_q_op``), then clips to the weight range before each update."""
    limit = wage_init_limit(_fan_in(w), bits)
    with torch.no_grad():
        return w.copy_(wage_quantize(w.uniform_(-limit, limit), bits))


@quantizer(bits=lambda a: a["bits"], exact_in_bf16=True)
def wage_weight(w: torch.Tensor, bits: int = 2) -> torch.Tensor:
    """Eq. 6-7: Q(W, k_W) / alpha, alpha from the layer's fan-in (a shift in hardware). Backward: identity
    (the official code skips the derivative of both quantization and clipping)."""
    q = wage_quantize(w.detach(), bits) / wage_scale(_fan_in(w), bits)
    return straight_through(q, w)


@quantizer(bits=lambda a: a["bits"], exact_in_bf16=True)
def wage_activation(x: torch.Tensor, bits: int = 8, error_bits: int | None = None, gamma: float | None = None
                    ) -> torch.Tensor:
    """Eq. 8: a_q = Q(a, k_A). Backward: the clip's derivative (1 inside (-1 + sigma, 1 - sigma), 0 outside),
    rounding skipped. With ``error_bits`` the error reaching ``x`` is then quantized too (eq. 9, ``wage_error``):
    the official code's order relu -> Q_E -> Q_A, so Q_E sees the error after Q_A's clip and before the ReLU's
    and the pooling's masks."""
    if error_bits is not None:
        x = wage_error(x, error_bits, gamma)
    s = wage_sigma(bits)
    clipped = torch.clamp(x, -1 + s, 1 - s)
    return straight_through(wage_quantize(x.detach(), bits), clipped)


def quantize_error(e: torch.Tensor, bits: int = 8, gamma: float = 1.0) -> torch.Tensor:
    """Eq. 9-10: e_q = Q(e / Shift(max|e|), k_E). The scale is dropped: what follows (the next error's and
    the gradient's own normalization) does not depend on it. ``gamma`` > 1 left-shifts the window (section
    4.3, Table 2): its right boundary becomes max|e| / gamma, so the largest errors saturate and the small ones
    gain resolution."""
    m = e.abs().max()
    if m == 0:
        return e
    return wage_quantize(gamma * e / wage_shift(m), bits)


def wage_error(x: torch.Tensor, bits: int = 8, gamma: float | None = None) -> torch.Tensor:
    """Identity forward; backward quantizes the error flowing through (eq. 9-10; ``gamma``: Table 2's window
    shift, None for 1). A layer's output quantizer."""
    wage_sigma(bits)
    if gamma is None:
        gamma = 1
    elif not (isinstance(gamma, (int, float)) and not isinstance(gamma, bool) and math.isfinite(gamma)
            and gamma >= 1):
        raise ValueError(f"WAGE's error-window shift gamma must be null or a number >= 1 (Table 2: 2, 4, 8), "
                         f"got {gamma!r}")
    if gamma == 1:
        return quantize_backward(x, quantize_error, bits)
    return quantize_backward(x, functools.partial(quantize_error, gamma=gamma), bits)


def wage_gradient(g: torch.Tensor, bits: int = 8, lr: float = 8.0, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Eq. 11-13: dW = sigma(k_G) * sr(lr * g / Shift(max|g|)), sr(x) = sign(x) (floor|x| + Bernoulli(|x| -
    floor|x|)). ``lr`` is a power of two in WAGE (8, 1, 1/8), so dW stays on the k_G-bit grid."""
    s = wage_sigma(bits)
    m = g.abs().max()
    if m == 0:
        return torch.zeros_like(g)
    x = lr * g / wage_shift(m)
    a = x.abs()
    floor = torch.floor(a)
    u = torch.rand(g.shape, generator=generator, device=g.device, dtype=g.dtype)
    return s * torch.sign(x) * (floor + (u < a - floor).to(g.dtype))
