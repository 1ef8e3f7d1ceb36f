"""Scaled binary and ternary weights: BWN / XNOR-Net (Rastegari et al. 2016) and TWN (Li & Liu 2016)."""
from __future__ import annotations

import torch

from qbench.quant.binary import sign, ste_sign
from qbench.quant.facts import quantizer
from qbench.quant.ste import straight_through


def _per_filter_mean(x: torch.Tensor) -> torch.Tensor:
    """Mean over every axis but the first (output filter), kept broadcastable."""
    return x.mean(dim=tuple(range(1, x.dim())), keepdim=True) if x.dim() > 1 else x.mean()


@quantizer(bits=1, alias="binarize_scaled")
def binarize_scaled(w: torch.Tensor, edge: str = "code") -> torch.Tensor:
    """XNOR-Net eq. 6 (BWN): W ~ alpha * sign(W), alpha = ||W||_l1 / n per output filter (n = filter size).

    backward, eq. 7: dC/dW_i = dC/dW~_i * (1/n + alpha * 1[|W_i| < 1])
    (the 1/n term is alpha's own derivative; the second is sign's saturated STE). ``edge="code"`` (the default,
    what the released models were trained with) cancels the STE term at |W| = 1 as allenai/XNOR-Net does
    (util.lua 83-84 at 4006d59: m[W:le(-1)] = 0, m[W:ge(1)] = 0) -- weights clipped to +-1 sit exactly there;
    ``edge="paper"`` keeps it, BNN's 1[|r| <= 1] that the paper's text cites.
    """
    if edge not in EDGES:
        raise ValueError(f"edge={edge!r} is invalid; valid: {', '.join(EDGES)}")
    n = w[0].numel() if w.dim() > 1 else w.numel()
    alpha = _per_filter_mean(w.abs()).detach()
    inside = w.abs() < 1 if edge == "code" else w.abs() <= 1
    surrogate = w / n + alpha * torch.where(inside, w, w.detach())
    return straight_through(alpha * sign(w), surrogate)


EDGES = ("code", "paper")


def binarize_learned_scale(w: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """XNOR-Net Table 3a, "alpha as a separate layer": W ~ alpha * sign(W) with alpha a learned parameter (one
    per output filter, broadcastable against ``w``) instead of eq. 6's mean|W|.

    backward: dC/dW_i = dC/dW~_i * alpha * 1[|W_i| <= 1]  (eq. 7 without its 1/n term: alpha no longer depends
    on W);  dC/dalpha = sum_i dC/dW~_i * sign(W_i)  (alpha is an ordinary parameter of the product).
    """
    return alpha * ste_sign(w, clip=1.0)


def ternarize(w: torch.Tensor, threshold_factor: float = 0.7, per_channel: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """TWN: the ternary code t in {-1, 0, +1} and scale alpha with W ~ alpha * t.

    Delta = threshold_factor * E|W|  (0.7 in the 2016 paper and code; 0.75 in the 2022 revision)
    t_i = sign(W_i) if |W_i| > Delta else 0
    alpha = mean of |W_i| over {i : |W_i| > Delta}
    E and the mean are over the whole layer, or over each output filter with ``per_channel=True``.
    Returns (t, alpha); alpha is a scalar tensor or broadcastable per filter. No gradient (see ``twn``).
    """
    if threshold_factor <= 0:
        raise ValueError(f"threshold_factor must be > 0, got {threshold_factor}")
    w = w.detach()
    a = w.abs()
    if per_channel and w.dim() > 1:
        dims = tuple(range(1, w.dim()))
        delta = threshold_factor * a.mean(dim=dims, keepdim=True)
        mask = (a > delta).to(w.dtype)
        alpha = (a * mask).sum(dim=dims, keepdim=True) / mask.sum(dim=dims, keepdim=True).clamp_min(1)
    else:
        delta = threshold_factor * a.mean()
        mask = (a > delta).to(w.dtype)
        alpha = (a * mask).sum() / mask.sum().clamp_min(1)
    return torch.sign(w) * mask, alpha


@quantizer(bits=2, alias="twn")
def twn(w: torch.Tensor, threshold_factor: float = 0.7, granularity: str = "layer") -> torch.Tensor:
    """TWN weight quantizer: forward alpha * t (``ternarize``, one Delta and alpha per layer or per output
    filter); backward identity (the ternary weights are used in forward and backward, the float weights
    receive the gradient -- TWN Algorithm 1)."""
    if granularity not in ("layer", "channel"):
        raise ValueError(f"granularity must be 'layer' or 'channel', got {granularity!r}")
    t, alpha = ternarize(w, threshold_factor, per_channel=granularity == "channel")
    return straight_through(alpha * t, w)


@quantizer(bits=32, alias="xnor_activation_scale")
def xnor_activation_scale(x: torch.Tensor, kernel_size=None, stride=1, padding=0, dilation=1) -> torch.Tensor:
    """XNOR-Net eq. 11: K = A * k, A = sum_c |I_c| / c (mean over input channels), k = a box filter of the
    conv's size (1 / (w h) everywhere) applied with the conv's stride, padding and dilation, so that
    I * W ~ (sign(I) * sign(W)) . K alpha. For a fully connected layer K is mean|I| over the features.
    Returns K, broadcastable against the layer's output."""
    if kernel_size is None:
        return x.abs().mean(dim=-1, keepdim=True)
    a = x.abs().mean(dim=1, keepdim=True)
    kh, kw = kernel_size
    box = torch.full((1, 1, kh, kw), 1.0 / (kh * kw), dtype=a.dtype, device=a.device)
    return torch.nn.functional.conv2d(a, box, stride=stride, padding=padding, dilation=dilation)
