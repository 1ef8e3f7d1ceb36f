"""Uniform affine fake quantization (Jacob et al. 2018; Krishnamoorthi's whitepaper, arXiv:1806.08342)."""
from __future__ import annotations

import torch

from qbench.quant.ste import straight_through


def _along(t, x: torch.Tensor, axis: int | None, dtype) -> torch.Tensor:
    t = torch.as_tensor(t, dtype=dtype, device=x.device)
    if axis is None or t.dim() == 0:
        return t
    shape = [1] * x.dim()
    shape[axis] = -1
    return t.view(shape)


def fake_quant_affine(x: torch.Tensor, scale, zero_point, qmin: int, qmax: int,
                      axis: int | None = None, stochastic: bool = False) -> torch.Tensor:
    """Whitepaper eq. 1-3: x_int = clamp(round(x / s) + z, qmin, qmax); x_q = (x_int - z) * s.

    backward (the whitepaper's STE, eq. 14): dx_q/dx = 1 where qmin <= round(x / s) + z <= qmax, else 0.
    ``axis``: the per-channel axis of ``scale`` / ``zero_point``, or None for one scale per tensor.
    Computed as torch.fake_quantize_per_{tensor,channel}_affine do (x * (1/s) in float32, round half to
    even), so the two agree bit for bit. ``stochastic=True`` rounds stochastically (whitepaper section 3).
    """
    s = _along(scale, x, axis, torch.float32)
    z = _along(zero_point, x, axis, torch.float32)
    scaled = x * (1.0 / s)
    q = (stochastic_round(scaled) if stochastic else torch.round(scaled)) + z
    inside = (q >= qmin) & (q <= qmax)
    out = (q.clamp(qmin, qmax) - z) * s
    return straight_through(out.to(x.dtype), torch.where(inside, x, x.detach()))


def check_affine_bits(bits) -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 2 <= bits <= 32:
        raise ValueError(f"bit width must be an integer from 2 to 32, got {bits!r}")
    return bits


def affine_qparams(x_min: torch.Tensor, x_max: torch.Tensor, bits: int, symmetric: bool
                   ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """Scale and zero-point from a range (whitepaper section 2.1-2.2).

    asymmetric: [qmin, qmax] = [0, 2^b - 1]; the range is widened to contain 0 (so that 0 is exact);
                s = (max - min) / (2^b - 1), z = clamp(round(-min / s), 0, 2^b - 1).
    symmetric:  z = 0, [qmin, qmax] = [-(2^(b-1) - 1), 2^(b-1) - 1] (TF's narrow range),
                s = max(|min|, |max|) / (2^(b-1) - 1).
    Returns (scale, zero_point, qmin, qmax); scale is never 0 (an all-zero range gets s = 1).
    """
    check_affine_bits(bits)
    x_min, x_max = torch.clamp(x_min, max=0), torch.clamp(x_max, min=0)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        qmin = -qmax
        scale = torch.maximum(-x_min, x_max) / qmax
        zero_point = torch.zeros_like(scale)
    else:
        qmin, qmax = 0, 2 ** bits - 1
        scale = (x_max - x_min) / (qmax - qmin)
    scale = torch.where(scale > 0, scale, torch.ones_like(scale)).float()
    if not symmetric:
        zero_point = torch.clamp(torch.round(qmin - x_min / scale), qmin, qmax)
    return scale, zero_point, qmin, qmax


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """floor(x + u), u ~ U[0, 1): rounds up with probability frac(x), so E[round(x)] = x (Gupta et al. 2015)."""
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.floor(x + u)
