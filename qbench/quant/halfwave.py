"""HWGQ: the half-wave Gaussian quantizer of Cai, He, Sun, Vasconcelos (CVPR 2017), used by Two-Step
Quantization for its k-bit activations."""
from __future__ import annotations

from functools import lru_cache

import torch

from qbench.quant.dorefa import _check_bits
from qbench.quant.ste import straight_through


@lru_cache(maxsize=None)
def hwgq_step(k: int) -> float:
    """The step Delta of the k-bit uniform half-wave quantizer (2^k - 1 positive levels Delta, 2 Delta, ...)
    that minimises E[(Q(x) - x)^2 ; x > 0] for x ~ N(0, 1), i.e. batch-normalised pre-activations.

    Computed here by numerical integration and bounded 1-D minimisation (scipy); the paper fits its levels
    to the same half-normal density. Values: k=1 1.224, k=2 0.651, k=3 0.353, k=4 0.193.
    """
    from scipy import integrate, optimize, stats

    levels = 2 ** _check_bits(k) - 1

    def mse(step: float) -> float:
        edges = [0.0] + [(i + 0.5) * step for i in range(levels)] + [float("inf")]
        return sum(integrate.quad(lambda x, q=i * step: (x - q) ** 2 * stats.norm.pdf(x), edges[i], edges[i + 1])[0]
                   for i in range(levels + 1))

    return float(optimize.minimize_scalar(mse, bounds=(1e-3, 4.0), method="bounded",
                                          options={"xatol": 1e-7}).x)


def hwgq(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    """HWGQ forward: Q(x) = 0 for x <= 0, else the nearest of {0, Delta, 2 Delta, ..., (2^k - 1) Delta}
    (x above the top level maps to it). Backward: the paper's clipped-ReLU STE, 1[0 < x <= (2^k - 1) Delta].
    k = 32 is the identity."""
    if _check_bits(k) == 32:
        return x
    step = hwgq_step(k)
    top = (2 ** k - 1) * step
    q = torch.round(x.clamp(0, top) / step) * step
    return straight_through(q, torch.where((x > 0) & (x <= top), x, x.detach()))
