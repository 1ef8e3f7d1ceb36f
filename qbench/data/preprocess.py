"""Preprocessing of the 2015-16 binary-network code, on images scaled to [0, 1], in this order:

Global contrast normalization (pylearn2's ``global_contrast_normalize``; BinaryConnect's CIFAR-10 with scale 55,
its SVHN with scale 1): each image, as one row x, minus its own mean, then scaled to norm ``scale``:
    x <- scale * (x - mean(x)) / ||x - mean(x)||_2

Local contrast normalization (pylearn2's ``LeCunLCN``, BinaryConnect's SVHN), per image and channel, with G the
normalized k x k Gaussian of sigma 2 and zero padding:
    c = x - G * x,   d = sqrt(G * x^2),   x <- c / max(d, mean_pixels(d), 1e-4)
(pylearn2's ``lecun_lcn`` filters x^2, not c^2, for the divisor.)

ZCA whitening (Bell & Sejnowski 1997), with the mean mu and covariance C of the training split:
    C = V diag(lambda) V^T,   P = V diag(1 / sqrt(lambda + eps)) V^T,   x <- (x - mu) P
Torch7's ``unsup.zca_whiten`` (BNN's Torch7 CIFAR-10): C divided by N - 1, eps = 1e-5. pylearn2's ``ZCA``
(BinaryConnect): C divided by N plus ``filter_bias`` = 0.1 on the diagonal, i.e. eps = 0.1 (the N versus N - 1
differs by a factor 1.00002 on 50k images).
"""
from __future__ import annotations


import torch
import torch.nn.functional as F

CHUNK = 4096  # images per step, to bound memory on large splits (SVHN's extra)


def global_contrast_normalize(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Rows of ``x`` centred and scaled to norm ``scale`` (a row that is constant is only centred)."""
    x = x - x.mean(1, keepdim=True)
    norm = x.square().sum(1, keepdim=True).sqrt() / scale
    return x / torch.where(norm < 1e-8, torch.ones_like(norm), norm)


def gaussian_kernel(k: int, sigma: float = 2.0) -> torch.Tensor:
    """pylearn2's ``gaussian_filter``: exp(-(i^2 + j^2) / (2 sigma^2)) on a k x k grid centred at k // 2, summing to 1."""
    r = torch.arange(k, dtype=torch.float64) - k // 2
    g = torch.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def local_contrast_normalize(x: torch.Tensor, k: int, threshold: float = 1e-4) -> torch.Tensor:
    """Images [N, C, H, W] (float64), each channel on its own."""
    n, c, h, w = x.shape
    g = gaussian_kernel(k).to(x.device).view(1, 1, k, k)
    flat = x.reshape(n * c, 1, h, w)
    centred = flat - F.conv2d(flat, g, padding=k // 2)
    d = F.conv2d(flat.square(), g, padding=k // 2).sqrt()
    divisor = torch.maximum(d, d.mean((2, 3), keepdim=True)).clamp_min(threshold)
    return (centred / divisor).view(n, c, h, w)


def _rows(images: torch.Tensor, start: int, gcn: float | None, lcn: int | None = None) -> torch.Tensor:
    x = images[start:start + CHUNK].reshape(-1, images[0].numel()).double() / 255
    x = global_contrast_normalize(x, gcn) if gcn else x
    if lcn:
        x = local_contrast_normalize(x.view(-1, *images.shape[1:]), lcn).reshape(x.shape)
    return x


def zca_matrix(mu: torch.Tensor, cov: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    lam, v = torch.linalg.eigh(cov)
    return mu, (v * (lam.clamp_min(0) + eps).rsqrt()) @ v.t()


def zca_fit(x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, P) of the rows of ``x`` (N x D), in float64, covariance divided by N - 1."""
    x = x.double()
    mu = x.mean(0)
    return zca_matrix(mu, (x - mu).t() @ (x - mu) / (x.shape[0] - 1), eps)


def fit(images: torch.Tensor, gcn: float | None, lcn: int | None, zca: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ZCA's (mu, P) of uint8 images [N, C, H, W] after ``gcn`` and ``lcn``, accumulated in chunks."""
    n, d = images.shape[0], images[0].numel()
    total = torch.zeros(d, dtype=torch.float64, device=images.device)
    gram = torch.zeros(d, d, dtype=torch.float64, device=images.device)
    for i in range(0, n, CHUNK):
        x = _rows(images, i, gcn, lcn)
        total += x.sum(0)
        gram += x.t() @ x
    mu = total / n
    return zca_matrix(mu, (gram - n * torch.outer(mu, mu)) / (n - 1), zca)


def apply(images: torch.Tensor, gcn: float | None, lcn: int | None, whitening=None) -> torch.Tensor:
    """uint8 images [N, C, H, W] -> float32 images of the same shape: GCN if ``gcn``, LCN if ``lcn``, then ZCA
    if ``whitening`` = (mu, P)."""
    out = torch.empty(images.shape, dtype=torch.float32, device=images.device)
    flat = out.view(images.shape[0], -1)
    for i in range(0, images.shape[0], CHUNK):
        x = _rows(images, i, gcn, lcn)
        flat[i:i + CHUNK] = ((x - whitening[0]) @ whitening[1] if whitening else x).float()
    return out
