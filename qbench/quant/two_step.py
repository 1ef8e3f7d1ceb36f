"""Two-Step Quantization (Wang, Hu, Zhang, Zhang, Liu, Cheng; CVPR 2018), step 2: the weights of one layer
found by least squares on the codes of step 1, not by gradient descent.

For each output channel c, with X the layer's (quantized) inputs as rows (im2col for a conv) and y_c the
channel's target outputs, TSQ solves

    min_{alpha_c > 0, w_c in {-1, 0, +1}^n} || y_c - alpha_c * X w_c ||^2                        (TSQ eq. 8)

(binary: w_c in {-1, +1}^n) by alternating the two exact partial minimisations:
  * alpha_c = w_c^T X^T y_c / (w_c^T X^T X w_c)                                 (closed form, w fixed)
  * each element w_cj with the others fixed: with u = (b_j - alpha h_j) / (alpha G_jj), the objective is
    alpha^2 G_jj ((t - u)^2 - u^2), so w_cj = the level nearest to u        (coordinate sweep, alpha fixed)
where G = X^T X, b = X^T y_c and h_j = sum_{k != j} G_jk w_ck. Only G and B = X^T Y are needed, so the
calibration set is reduced to n x n and n x C matrices. Every update is an exact minimisation: the
objective never increases.

The paper's objective wraps the product in the activation quantizer Q that produced the codes y,
|| y - Q(alpha X w) ||^2, and handles the non-differentiable Q with an auxiliary z:

    min_{alpha, w, z} || y - Q(z) ||^2 + lambda || z - alpha X w ||^2

alternating z (elementwise and exact: ``tsq_auxiliary``) with alpha and w (the linear problem above, with z
as its target). Each step minimises the joint objective in its own variables, so it never increases.
"""
from __future__ import annotations

import torch

from qbench.quant.facts import quantizer

LEVELS = ("ternary", "binary")


def tsq_objective(gram: torch.Tensor, cross: torch.Tensor, codes: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """|| y_c - alpha_c X w_c ||^2 - ||y_c||^2 for every channel c (codes: n x C, alpha: C)."""
    return alpha ** 2 * (codes * (gram @ codes)).sum(0) - 2 * alpha * (codes * cross).sum(0)


def _nearest(u: torch.Tensor, levels: str) -> torch.Tensor:
    if levels == "binary":
        return torch.where(u >= 0, 1.0, -1.0).to(u.dtype)
    return torch.where(u.abs() > 0.5, torch.sign(u), torch.zeros_like(u))


def _best_alpha(gram, cross, codes, alpha):
    num = (codes * cross).sum(0)
    den = (codes * (gram @ codes)).sum(0)
    return torch.where(den > 0, num / den.clamp_min(torch.finfo(den.dtype).tiny), alpha)


@torch.no_grad()
def tsq_least_squares(gram: torch.Tensor, cross: torch.Tensor, codes: torch.Tensor, alpha: torch.Tensor,
                      levels: str = "ternary", iters: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternate alpha and a coordinate sweep of the codes ``iters`` times, starting from ``codes`` (n x C,
    e.g. TWN of the float weights) and ``alpha`` (C). gram = X^T X (n x n), cross = X^T Y (n x C).
    Returns (codes, alpha), alpha >= 0 (a channel whose best alpha is negative flips its codes' sign)."""
    if levels not in LEVELS:
        raise ValueError(f"levels={levels!r} is invalid; valid: {', '.join(LEVELS)}")
    gram, cross = gram.double(), cross.double()
    codes, alpha = codes.double().clone(), alpha.double().clone()
    diag = gram.diagonal()
    for _ in range(iters):
        alpha = _best_alpha(gram, cross, codes, alpha)
        codes = torch.where(alpha < 0, -codes, codes)
        alpha = alpha.abs()
        g_codes = gram @ codes  # (G w)_j for every channel, kept current through the sweep
        for j in range(gram.shape[0]):
            if diag[j] <= 0:  # an input that is always zero: its weight does not matter
                continue
            h = g_codes[j] - diag[j] * codes[j]
            u = (cross[j] - alpha * h) / (alpha * diag[j]).clamp_min(torch.finfo(torch.float64).tiny)
            new = torch.where(alpha > 0, _nearest(u, levels), codes[j])
            delta = new - codes[j]
            if delta.any():
                g_codes += gram[:, j:j + 1] * delta
                codes[j] = new
    alpha = _best_alpha(gram, cross, codes, alpha)
    codes = torch.where(alpha < 0, -codes, codes)
    return codes, alpha.abs()


@quantizer(bits=lambda a: 1 if a["levels"] == "binary" else 2)
def tsq_weight(w: torch.Tensor, levels: str = "ternary") -> torch.Tensor:
    """The weight quantizer TSQ fine-tunes with after step 2: per output channel, ternary (TWN with
    Delta = 0.7 E|W_c|) or binary (alpha_c sign(W_c)). Both return a weight alpha_c * w_c found by step 2
    unchanged, so fine-tuning starts from the least-squares solution; their STEs train the float weights."""
    from qbench.quant.scaled import binarize_scaled, twn

    if levels not in LEVELS:
        raise ValueError(f"levels={levels!r} is invalid; valid: {', '.join(LEVELS)}")
    return twn(w, 0.7, "channel") if levels == "ternary" else binarize_scaled(w)


def tsq_init(w: torch.Tensor, levels: str = "ternary") -> tuple[torch.Tensor, torch.Tensor]:
    """Starting point of step 2 from a float weight (C x ...): codes (n x C) and alpha (C), by TWN per
    channel (ternary) or sign and mean |W_c| (binary)."""
    from qbench.quant.scaled import ternarize

    flat = w.detach().flatten(1)
    if levels == "ternary":
        codes, alpha = ternarize(flat, 0.7, per_channel=True)
    else:
        codes, alpha = torch.where(flat >= 0, 1.0, -1.0).to(flat.dtype), flat.abs().mean(1, keepdim=True)
    return codes.T, alpha.flatten()


def tsq_auxiliary(code: torch.Tensor, v: torch.Tensor, values: torch.Tensor, thresholds: torch.Tensor,
                  lam: float) -> torch.Tensor:
    """argmin_z (code - Q(z))^2 + lam (z - v)^2, elementwise, for a piecewise-constant non-decreasing Q given as
    bins (``qbench.quant.hwgq_bins``): in bin j the best z is v clamped into (t_j, t_(j+1)]; the bin of least
    total cost wins (an empty bin never does)."""
    dt = v.dtype
    values, thresholds = values.to(v.device, dt), thresholds.to(v.device, dt)
    inf = torch.full((1,), float("inf"), dtype=dt, device=v.device)
    lo = torch.nextafter(torch.cat([-inf, thresholds]), torch.cat([inf, torch.full_like(thresholds, float("inf"))]))
    hi = torch.cat([thresholds, inf])
    z = torch.minimum(torch.maximum(v.unsqueeze(-1), lo), hi)
    cost = (code.unsqueeze(-1) - values) ** 2 + lam * (z - v.unsqueeze(-1)) ** 2
    cost = torch.where(lo <= hi, cost, torch.full_like(cost, float("inf")))
    return z.gather(-1, cost.argmin(-1, keepdim=True)).squeeze(-1)
