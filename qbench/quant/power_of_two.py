"""Incremental Network Quantization (Zhou et al., ICLR 2017): weights as powers of two or zero.

    P_l = {+-2^n1, ..., +-2^n2, 0}                           (eq. 1)
    n1 = floor(log2(4 s / 3)),  s = max |W_l|                 (eq. 2)
    n2 = n1 + 1 - 2^(b-1) / 2                                 (b: the bit width)
    W^_l(i,j) = beta * sgn(W_l(i,j))  if (alpha + beta)/2 <= |W_l(i,j)| < 3 beta / 2,   else 0   (eq. 3)

with alpha, beta adjacent elements of the sorted non-negative part of P_l (alpha < beta; alpha = 0 next to
the smallest power). For beta = 2^k > 2^n2 the interval is [0.75 * 2^k, 1.5 * 2^k); for beta = 2^n2 it is
[2^n2 / 2, 1.5 * 2^n2). n1 is chosen so that every |W| <= s falls under 1.5 * 2^n1.
"""
from __future__ import annotations

import math

import torch


def inq_exponents(w: torch.Tensor, bits: int = 5) -> tuple[int, int]:
    """(n1, n2) of eq. 2 for the weights ``w`` and bit width ``bits``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or bits < 2:
        raise ValueError(f"INQ bit width must be an integer >= 2, got {bits!r}")
    s = float(w.detach().abs().max())
    if s == 0:
        raise ValueError("INQ cannot place a codebook for an all-zero weight tensor")
    n1 = math.floor(math.log2(4.0 * s / 3.0))
    return n1, n1 + 1 - 2 ** (bits - 1) // 2


def power_of_two(w: torch.Tensor, bits: int = 5, n1: int | None = None) -> torch.Tensor:
    """Eq. 3: each weight to the nearest level of P_l in INQ's sense (n1 from ``w`` unless given, e.g. fixed
    from the pre-trained weights). No gradient: INQ freezes quantized weights."""
    if n1 is None:
        n1, n2 = inq_exponents(w, bits)
    else:
        n2 = n1 + 1 - 2 ** (bits - 1) // 2
    a = w.detach().abs().double()
    k = torch.floor(torch.log2(a.clamp_min(1e-300) / 0.75))
    level = torch.exp2(k)
    k = torch.where(a < 0.75 * level, k - 1, k)  # repair log2's rounding at the interval edges
    k = torch.where(a >= 1.5 * torch.exp2(k), k + 1, k)
    k = k.clamp(n2, n1)
    mag = torch.where(a >= 2.0 ** n2 / 2, torch.exp2(k), torch.zeros_like(a))
    return (torch.sign(w.detach()) * mag).to(w.dtype)
