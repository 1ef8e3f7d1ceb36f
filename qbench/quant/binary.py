"""Binarizers of BinaryConnect (Courbariaux et al. 2015) and BNN (Hubara et al. 2016)."""
from __future__ import annotations

import torch

from qbench.quant.ste import straight_through


def sign(x: torch.Tensor) -> torch.Tensor:
    """BNN eq. 1: x_b = +1 if x >= 0 else -1. Never 0 (``torch.sign`` would give 0 at 0).

    No gradient of its own (it is piecewise constant); the STEs below give it one.
    """
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """BinaryConnect eq. 3: sigma(x) = clip((x + 1) / 2, 0, 1)."""
    return ((x + 1) / 2).clamp(0, 1)


def stochastic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """BinaryConnect eq. 2 / BNN eq. 2: +1 with probability hard_sigmoid(x), else -1.

    u ~ U[0, 1) and the result is +1 where u < p, so p = 0 never gives +1 and p = 1 always does.
    No gradient of its own; ``binaryconnect(w, mode="stoch")`` adds the STE.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    p = hard_sigmoid(x.float())
    return torch.where(u < p, torch.ones_like(x), -torch.ones_like(x))


def ste_sign(x: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """BNN's sign with the saturated STE (BNN eq. 4, "hardtanh" gradient).

    forward:  q = sign(x)
    backward: dq/dx = 1 if |x| <= clip else 0   (the gradient is cancelled where x saturates)
    """
    # the surrogate equals x and has gradient 1[|x| <= clip], boundary included (clamp's would be 0 there)
    return straight_through(sign(x), torch.where(x.abs() <= clip, x, x.detach()))


def binaryconnect(w: torch.Tensor, mode: str = "det", generator: torch.Generator | None = None) -> torch.Tensor:
    """BinaryConnect weight binarization (Courbariaux et al. 2015, eq. 1 det / eq. 2 stoch).

    forward:  w_b = sign(w)                      (mode="det")
              w_b = +1 w.p. hard_sigmoid(w), -1   (mode="stoch")
    backward: dC/dw = dC/dw_b  (identity; Algorithm 1 updates the real-valued w with the gradient of w_b,
              and keeps w in [-1, 1] by clipping after the update -- see ``ClipWeights``)
    """
    if mode == "det":
        wb = sign(w)
    elif mode == "stoch":
        wb = stochastic_binarize(w, generator)
    else:
        raise ValueError(f"binaryconnect mode must be 'det' or 'stoch', got {mode!r}")
    return straight_through(wb, w)
