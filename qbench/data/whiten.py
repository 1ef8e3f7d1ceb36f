"""Preprocessing of the 2015-16 binary-network code, on images scaled to [0, 1] and flattened to rows x:

Global contrast normalization (pylearn2's ``global_contrast_normalize``, BinaryConnect's CIFAR-10 with
scale 55): each image minus its own mean, then scaled to norm ``scale``:
    x <- scale * (x - mean(x)) / ||x - mean(x)||_2

ZCA whitening (Bell & Sejnowski 1997), with the mean mu and covariance C of the training split:
    C = V diag(lambda) V^T,   P = V diag(1 / sqrt(lambda + eps)) V^T,   x <- (x - mu) P
Torch7's ``unsup.zca_whiten`` (BNN's Torch7 CIFAR-10): C divided by N - 1, eps = 1e-5. pylearn2's ``ZCA``
(BinaryConnect): C divided by N plus ``filter_bias`` = 0.1 on the diagonal, i.e. eps = 0.1 (the N versus N - 1
differs by a factor 1.00002 on 50k images).
"""
from __future__ import annotations

import torch

CHUNK = 4096  # images per step, to bound memory on large splits (SVHN's extra)


def global_contrast_normalize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Rows of ``x`` centred and scaled to norm ``scale`` (a row that is constant is only centred)."""
    x = x - x.mean(1, keepdim=True)
    norm = x.square().sum(1, keepdim=True).sqrt() / scale
    return x / torch.where(norm < 1e-8, torch.ones_like(norm), norm)


def _rows(images: torch.Tensor, start: int, gcn: float | None) -> torch.Tensor:
    x = images[start:start + CHUNK].reshape(-1, images[0].numel()).double() / 255
    return global_contrast_normalize(x, gcn) if gcn else x


def zca_matrix(mu: torch.Tensor, cov: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    lam, v = torch.linalg.eigh(cov)
    return mu, (v * (lam.clamp_min(0) + eps).rsqrt()) @ v.t()


def zca_fit(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, P) of the rows of ``x`` (N x D), in float64, covariance divided by N - 1."""
    x = x.double()
    mu = x.mean(0)
    return zca_matrix(mu, (x - mu).t() @ (x - mu) / (x.shape[0] - 1), eps)


def fit(images: torch.Tensor, gcn: float | None, zca: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA's (mu, P) of uint8 images [N, C, H, W] after ``gcn``, accumulated in chunks."""
    n, d = images.shape[0], images[0].numel()
    total = torch.zeros(d, dtype=torch.float64, device=images.device)
    gram = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    for i in range(0, n, CHUNK):
        x = _rows(images, i, gcn)
        total += x.sum(0)
        gram += x.t() @ x
    mu = total / n
    return zca_matrix(mu, (gram - n * torch.outer(mu, mu)) / (n - 1), zca)


def apply(images: torch.Tensor, gcn: float | None, whitening=None) -> torch.Tensor:
    """uint8 images [N, C, H, W] -> float32 images of the same shape: GCN if ``gcn``, then ZCA if
    ``whitening`` = (mu, P)."""
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    flat = out.view(images.shape[0], -1)
    for i in range(0, images.shape[0], CHUNK):
        x = _rows(images, i, gcn)
        flat[i:i + CHUNK] = ((x - whitening[0]) @ whitening[1] if whitening else x).float()
    return out
