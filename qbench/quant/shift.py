"""BNN's shift-based arithmetic (Hubara et al. 2016, section 1.3 and Algorithms 3-4).

    AP2(x) = sign(x) * 2^round(log2 |x|)        (the power of two nearest to x in log scale; AP2(0) = 0)

so that a multiplication by AP2(y) is a binary shift ("<<>>" in the paper). Used by shift-based batch
normalization (``qbench.nn.ShiftBatchNorm``) and shift-based AdaMax (``qbench.optim.ShiftAdaMax``).
"""
from __future__ import annotations

import math

import torch


def ap2(x: torch.Tensor) -> torch.Tensor:
    """AP2(x) = sign(x) 2^round(log2|x|); 0 stays 0. No gradient of its own: the callers say what passes."""
    return ap2_(x.abs()).mul_(torch.sign(x))


def ap2_(x: torch.Tensor) -> torch.Tensor:
    """AP2 in place, for x >= 0 (sign(x) is 1, or x is 0 and log2 -> round -> exp2 keeps it 0): no temporary
    tensors, which on a CPU cost more than the arithmetic (shift-based AdaMax's v, every weight's size)."""
    return x.log2_().round_().exp2_()


def ap2_scalar(x: float) -> float:
    """AP2 of a positive number (a learning rate, a Glorot scale)."""
    return 2.0 ** round(math.log2(x))
