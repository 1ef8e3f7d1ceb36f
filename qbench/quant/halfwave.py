"""HWGQ: the half-wave Gaussian quantizer of Cai, He, Sun, Vasconcelos (CVPR 2017), and the sparse variant
Two-Step Quantization (Wang et al., CVPR 2018, sec. 3.2) learns its codes with: every value at or below a
threshold epsilon is zero, so that a chosen share of the (batch-normalised, ~N(0, 1)) pre-activations is
zero; epsilon = 0 (sparsity 0.5) is plain HWGQ."""
from __future__ import annotations

import functools

import torch

from qbench.quant.dorefa import _check_bits
from qbench.quant.facts import quantizer
from qbench.quant.ste import straight_through

MAX_BITS = 8  # the step is fitted over 2^k - 1 levels by numerical integration; HWGQ and TSQ use 1-4 bits


_FITTED: dict[tuple, float] = {}


def _fitted(fn):
    """Remember ``fn``'s number for each setting in a plain dict, filled on first use (the method's probe call,
    before any training step). torch.compile reads a filled entry as a constant; through functools.lru_cache it
    would trace into scipy and break the graph on every call."""
    @functools.wraps(fn)
    def remembered(*args):
        key = (fn.__name__, *args)
        if key not in _FITTED:
            _FITTED[key] = fn(*args)
        return _FITTED[key]
    return remembered


def _check_hwgq_bits(k) -> int:
    if _check_bits(k) != 32 and k > MAX_BITS:
        raise ValueError(f"HWGQ bit width must be an integer from 1 to {MAX_BITS}, or 32 (off), got {k!r}")
    return k


@_fitted
def sparse_threshold(sparsity: float) -> float:
    """epsilon such that a share ``sparsity`` of N(0, 1) values lies at or below it: Phi^-1(sparsity).
    0.5 (a ReLU's share of zeros) gives 0; allowed: 0.5 <= sparsity < 1."""
    from scipy import stats

    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0.5 <= sparsity < 1:
        raise ValueError(f"sparsity={sparsity!r} is invalid; allowed: 0.5 <= sparsity < 1 (0.5: plain HWGQ)")
    return 0.0 if sparsity == 0.5 else float(stats.norm.ppf(sparsity))


@_fitted
def hwgq_step(k: int, sparsity: float = 0.5) -> float:
    """The step Delta of the k-bit uniform half-wave quantizer (2^k - 1 positive levels Delta, 2 Delta, ...)
    that minimises E[(Q(x) - x)^2 ; x > 0] for x ~ N(0, 1), i.e. batch-normalised pre-activations; with
    ``sparsity`` > 0.5 the values at or below epsilon = Phi^-1(sparsity) are zero and Delta is fitted for that.

    Computed here by numerical integration and bounded 1-D minimisation (scipy); the paper fits its levels
    to the same half-normal density. Values: k=1 1.224, k=2 0.651, k=3 0.353, k=4 0.193.
    """
    from scipy import integrate, optimize, stats

    levels = 2 ** _check_hwgq_bits(k) - 1
    eps = sparse_threshold(sparsity)

    def mse(step: float) -> float:
        # Q is constant between consecutive breakpoints: epsilon and the midpoints between levels
        cuts = sorted({eps, *((i + 0.5) * step for i in range(levels))} - {0.0})
        edges = [0.0] + [c for c in cuts if c > 0] + [float("inf")]
        total = 0.0
        for a, b in zip(edges, edges[1:]):
            mid = a + 1.0 if b == float("inf") else (a + b) / 2
            q = 0.0 if mid <= eps else min(round(mid / step), levels) * step
            total += integrate.quad(lambda x, q=q: (x - q) ** 2 * stats.norm.pdf(x), a, b)[0]
        return total

    return float(optimize.minimize_scalar(mse, bounds=(1e-3, 4.0), method="bounded",
                                          options={"xatol": 1e-7}).x)


@quantizer(bits=lambda a: a["k"], alias="hwgq")
def hwgq(x: torch.Tensor, k: int = 2, sparsity: float = 0.5) -> torch.Tensor:
    """HWGQ forward: Q(x) = 0 for x <= epsilon (epsilon = 0 at sparsity 0.5), else the nearest of
    {0, Delta, 2 Delta, ..., (2^k - 1) Delta} (x above the top level maps to it). Backward: the paper's
    clipped-ReLU STE, 1[epsilon < x <= (2^k - 1) Delta]. k = 32 is the identity."""
    if _check_hwgq_bits(k) == 32:
        return x
    eps = sparse_threshold(sparsity)
    step = hwgq_step(k, sparsity)
    top = (2 ** k - 1) * step
    q = torch.where(x > eps, torch.round(x.clamp(0, top) / step) * step, torch.zeros_like(x))
    return straight_through(q, torch.where((x > eps) & (x <= top), x, x.detach()))


def hwgq_bins(k: int, sparsity: float = 0.5) -> tuple[torch.Tensor, torch.Tensor]:
    """The sparse HWGQ as a piecewise-constant map: (values q_0 < ... < q_m, thresholds t_1 <= ... <= t_m),
    Q(x) = q_j for t_j < x <= t_(j+1) (t_0 = -inf, t_(m+1) = +inf). t_1 = max(epsilon, Delta/2) and
    t_j = max(epsilon, (j - 1/2) Delta): a level that epsilon passes over gets an empty bin."""
    levels = 2 ** _check_hwgq_bits(k) - 1
    eps, step = sparse_threshold(sparsity), hwgq_step(k, sparsity)
    values = torch.arange(levels + 1, dtype=torch.float64) * step
    thresholds = torch.tensor([max(eps, (j - 0.5) * step) for j in range(1, levels + 1)], dtype=torch.float64)
    return values, thresholds
