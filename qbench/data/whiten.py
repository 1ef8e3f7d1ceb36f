"""ZCA whitening (Bell & Sejnowski 1997), as Torch7's ``unsup.zca_whiten`` computes it for BNN's Torch7 CIFAR-10
runs: on images scaled to [0, 1] and flattened,

    C = (X - mu)^T (X - mu) / (N - 1),   C = V diag(lambda) V^T
    P = V diag(1 / sqrt(lambda + eps)) V^T,   x_white = (x - mu) P      (eps = 1e-5 in unsup)

with mu and P from the training split, applied to every split."""
from __future__ import annotations

import torch


def zca_fit(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, P) of the rows of ``x`` (N x D), in float64."""
    if not eps > 0:
        raise ValueError(f"dataset.zca is ZCA's eigenvalue offset eps and must be > 0 (unsup's: 1e-5), got {eps!r}")
    x = x.double()
    mu = x.mean(0)
    xm = x - mu
    lam, v = torch.linalg.eigh(xm.t() @ xm / (x.shape[0] - 1))
    return mu, (v * (lam.clamp_min(0) + eps).rsqrt()) @ v.t()


def zca_apply(images: torch.Tensor, mu: torch.Tensor, p: torch.Tensor) -> torch.Tensor:
    """uint8 images [N, C, H, W] -> whitened float32 images of the same shape (in chunks, to bound memory)."""
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    flat = out.view(images.shape[0], -1)
    for i in range(0, images.shape[0], 4096):
        x = images[i:i + 4096].reshape(-1, flat.shape[1]).double() / 255
        flat[i:i + 4096] = ((x - mu) @ p).float()
    return out
