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


TIES = ("down", "up")


def power_of_two(w: torch.Tensor, bits: int = 5, n1: int | None = None, ties: str = "down") -> torch.Tensor:
    """Eq. 3: each weight to the nearest level of P_l in INQ's sense (n1 from ``w`` unless given, e.g. fixed
    from the pre-trained weights). No gradient: INQ freezes quantized weights.

    ``ties``: a weight exactly halfway between two levels (|W| = 0.75 * 2^k, or 2^n2 / 2 between 0 and 2^n2)
    goes ``down`` to the smaller level, as the official code's nearest-level search does (src/caffe/util/
    power2.cpp 38-64 at c7f6a60, weightCluster_zero: candidates 0, then 2^(M-7) .. 2^M, a strictly smaller
    distance needed to move on), or ``up``, as eq. 3's half-open intervals [(alpha + beta)/2, 3 beta/2) read."""
    if ties not in TIES:
        raise ValueError(f"ties={ties!r} is invalid; valid: {', '.join(TIES)}")
    if n1 is None:
        n1, n2 = inq_exponents(w, bits)
    else:
        n2 = n1 + 1 - 2 ** (bits - 1) // 2
    a = w.detach().abs().double()
    k = torch.floor(torch.log2(a.clamp_min(1e-300) / 0.75))
    # the interval of 2^k: [0.75, 1.5) * 2^k with ties up, (0.75, 1.5] * 2^k with ties down; log2's rounding
    # at the edges is repaired by the comparisons
    below = (lambda x, edge: x < edge) if ties == "up" else (lambda x, edge: x <= edge)
    k = torch.where(below(a, 0.75 * torch.exp2(k)), k - 1, k)
    k = torch.where(~below(a, 1.5 * torch.exp2(k)), k + 1, k)
    k = k.clamp(n2, n1)
    mag = torch.where(~below(a, 2.0 ** n2 / 2), torch.exp2(k), torch.zeros_like(a))
    return (torch.sign(w.detach()) * mag).to(w.dtype)
