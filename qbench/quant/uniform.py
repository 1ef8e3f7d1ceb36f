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
                      axis: int | None = None) -> torch.Tensor:
    """Whitepaper eq. 1-3: x_int = clamp(round(x / s) + z, qmin, qmax); x_q = (x_int - z) * s.

    backward (the whitepaper's STE, eq. 14): dx_q/dx = 1 where qmin <= round(x / s) + z <= qmax, else 0.
    ``axis``: the per-channel axis of ``scale`` / ``zero_point``, or None for one scale per tensor.
    Computed as torch.fake_quantize_per_{tensor,channel}_affine do (x * (1/s) in float32, round half to
    even), so the two agree bit for bit.
    """
    s = _along(scale, x, axis, torch.float32)
    z = _along(zero_point, x, axis, torch.float32)
    q = torch.round(x * (1.0 / s)) + z
    inside = (q >= qmin) & (q <= qmax)
    out = (q.clamp(qmin, qmax) - z) * s
    return straight_through(out.to(x.dtype), torch.where(inside, x, x.detach()))
