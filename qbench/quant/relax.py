"""BinaryRelax (Yin, Zhang, Lyu, Osher, Qi, Xin. "BinaryRelax: A Relaxation Approach for Training Deep
Neural Networks with Quantized Weights", SIAM J. Imaging Sci. 2018).

Phase 1 trains with the relaxed weights
    u = (lambda * Proj_Q(w) + w) / (lambda + 1)             (eq. 10, the prox of the relaxed penalty)
used in forward and backward; the gradient at u updates the float weights w (w <- w - lr * grad f(u)).
lambda grows geometrically during training; phase 2 uses the exact projection u = Proj_Q(w)
(lambda = inf). Projections onto the quantized set Q, per layer:
    binary:  Proj(w) = mean|w| * sign(w)                                  (util/quant.py quantize_bw)
    ternary: Proj(w) = alpha * t,  t = sign(w) 1[|w| >= Delta],  Delta = min(0.7 E|w|, 100),
             alpha = mean over ALL entries of |w| 1[|w| >= Delta]          (util/quant.py quantize_tnn)
The ternary projection follows the authors' code (penhunt/binaryrelax util/quant.py 19-30 at 6b101aa), not
TWN's (|w| > Delta, alpha the mean over the kept entries only); no paper row uses it yet.
"""
from __future__ import annotations

import torch

from qbench.quant.binary import sign
from qbench.quant.facts import quantizer
from qbench.quant.ste import straight_through

PROJECTIONS = ("binary", "ternary")


def project(w: torch.Tensor, projection: str = "binary") -> torch.Tensor:
    """Proj_Q(w) for the binary or ternary set (no gradient)."""
    w = w.detach()
    if projection == "binary":
        return w.abs().mean() * sign(w)
    if projection == "ternary":
        a = w.abs()
        kept = (a >= (0.7 * a.mean()).clamp(max=100.0)).to(w.dtype)
        return (a * kept).mean() * kept * torch.sign(w)
    raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")


@quantizer(bits=lambda a: 2 if a["projection"] == "ternary" else 1)
def binary_relax(w: torch.Tensor, lam: float | torch.Tensor = 1.0, projection: str = "binary") -> torch.Tensor:
    """Forward: u = (lam * Proj_Q(w) + w) / (lam + 1); lam = inf gives Proj_Q(w) (phase 2).
    Backward: identity (the gradient at u is applied to w). ``lam`` may be a 0-dim tensor that the schedule
    updates in place (``RelaxationSchedule``), so that a compiled model is not recompiled for each new lambda."""
    if not isinstance(lam, torch.Tensor) and not lam >= 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    lam = torch.as_tensor(lam, dtype=w.dtype, device=w.device)
    p = project(w, projection)
    u = torch.where(torch.isinf(lam), p, (lam * p + w.detach()) / (lam + 1))
    return straight_through(u, w)
