"""Stochastic Quantization (Dong et al., BMVC 2017, "Learning Accurate Low-bit Deep Neural Networks with
Stochastic Quantization"): which part of a weight tensor is quantized in an iteration.

Per output channel i (row W_i of the layer's weight matrix) -- or per element -- with Q the BWN/TWN
quantization of the layer:

    e_i = ||W_i - Q_i||_1 / ||W_i||_1                      (sec. 3.2, quantization error)
    q_i = 1 / e_i + eps ;  p_i = f(q_i) / sum_j f(q_j)      (quantization probability)
    f: constant 1 | linear x | sigmoid 1/(1+exp(-x)) | softmax exp(x)

and round(r * N) (half up) of the N channels are drawn by roulette wheel without replacement (r: the SQ ratio).
The drawn channels are quantized (gradients reach the float weights through the STE), the rest stay full
precision. That is the paper's reading; the official layers (``code_roulette``) draw the other way round:
int((1 - r) N) channels to keep in full precision, with probability proportional to e_i itself. Drawing k items without replacement with probabilities p_i is done in one shot as the top-k of
log p_i + Gumbel noise, which has exactly the distribution of k successive roulette-wheel draws
(each from the renormalized remaining wheel).
"""
from __future__ import annotations

import math

import torch

from qbench.quant.binary import sign
from qbench.quant.facts import quantizer
from qbench.quant.ste import straight_through

PROB_FNS = ("constant", "linear", "sigmoid", "softmax")
EPS = 1e-7


def _rows(w: torch.Tensor) -> torch.Tensor:
    return w.reshape(w.shape[0], -1) if w.dim() > 1 else w.reshape(1, -1)


def _channel_view(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Per-channel values broadcastable against w."""
    return x.view(-1, *([1] * (w.dim() - 1))) if w.dim() > 1 else x


@quantizer(bits=1)
def sq_binary(w: torch.Tensor) -> torch.Tensor:
    """SQ-BWN's quantizer (official code): Q_i = alpha_i * sign(W_i), alpha_i = mean |W_i| per output
    channel. Backward: identity -- the gradient w.r.t. the quantized weight updates the float weight."""
    alpha = _channel_view(_rows(w.detach()).abs().mean(1), w)
    return straight_through(alpha * sign(w.detach()), w)


@quantizer(bits=2)
def sq_ternary(w: torch.Tensor, threshold_factor: float = 0.7, delta: str = "code") -> torch.Tensor:
    """SQ-TWN's quantizer: one threshold per layer and one scale per output channel,
    alpha_i = mean of |W_ij| over |W_ij| > Delta; Q_ij = alpha_i * sign(W_ij) where |W_ij| > Delta, else 0.
    Backward: identity (the gradient at Q updates W: the layer's Backward_gpu uses the plain weight gradient).

    ``delta="code"`` (default): Delta = threshold_factor * mean|W - mean(W)| -- the official layer centres W on
    the layer's mean before its asum (dongyp13/Stochastic-Quantization conv_layer_ternary.cu 18-31 at fa384c1),
    then compares the uncentred W with it (lowbit_functions.cu, ternarize_kernel and delta_kernel).
    ``delta="paper"``: TWN's Delta = threshold_factor * mean|W|."""
    if threshold_factor <= 0:
        raise ValueError(f"threshold_factor must be > 0, got {threshold_factor}")
    if delta not in DELTAS:
        raise ValueError(f"delta={delta!r} is invalid; valid: {', '.join(DELTAS)}")
    w0 = w.detach()
    a = w0.abs()
    spread = (w0 - w0.mean()).abs().mean() if delta == "code" else a.mean()
    mask = (a > threshold_factor * spread).to(w.dtype)
    rows_a, rows_m = _rows(a * mask), _rows(mask)
    alpha = _channel_view(rows_a.sum(1) / rows_m.sum(1).clamp_min(1), w)
    return straight_through(alpha * torch.sign(w0) * mask, w)


DELTAS = ("code", "paper")


def quantization_error(w: torch.Tensor, q: torch.Tensor, granularity: str = "channel") -> torch.Tensor:
    """e = ||W - Q||_1 / ||W||_1 per output channel (a vector of length W.shape[0]) or per element
    (|W - Q| / |W|, W's shape). A zero channel has error 0."""
    w, q = w.detach(), q.detach()
    if granularity == "element":
        return torch.where(w != 0, (w - q).abs() / w.abs().clamp_min(1e-30), torch.zeros_like(w))
    if granularity != "channel":
        raise ValueError(f"granularity must be 'channel' or 'element', got {granularity!r}")
    num, den = _rows(w - q).abs().sum(1), _rows(w).abs().sum(1)
    return torch.where(den > 0, num / den.clamp_min(1e-30), torch.zeros_like(den))


def quantization_probability(error: torch.Tensor, prob_fn: str = "linear") -> torch.Tensor:
    """p_i = f(q_i) / sum_j f(q_j), q_i = 1 / e_i + eps: lower error, higher probability (except for
    f = constant, which draws uniformly)."""
    if prob_fn not in PROB_FNS:
        raise ValueError(f"prob_fn must be one of {', '.join(PROB_FNS)}, got {prob_fn!r}")
    e = error.flatten().double()
    q = 1.0 / e.clamp_min(1e-12) + EPS
    if prob_fn == "constant":
        f = torch.ones_like(q)
    elif prob_fn == "linear":
        f = q
    elif prob_fn == "sigmoid":
        f = torch.sigmoid(q)
    else:  # softmax: exp(q) normalized, computed stably
        f = torch.exp(q - q.max())
    return (f / f.sum()).to(error.dtype).view_as(error)


def code_roulette(error: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """The official SQ layers' draw (dongyp13/Stochastic-Quantization conv_layer_binary.cu 78-96 and
    conv_layer_ternary.cu ``Roulette``, fa384c1): int((1 - ratio) N) channels are picked to stay in FULL
    precision, one after another without replacement, each with probability e_i / (sum of the e not yet
    picked); a channel with e_i = 0 is never picked. Returns the mask of the channels to QUANTIZE (the rest).
    The sequential draw is taken in one shot as the top-k of log e_i + Gumbel noise (the same distribution)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"the SQ ratio must be in [0, 1], got {ratio}")
    e = error.flatten().double()
    k = min(int((1.0 - ratio) * e.numel()), int((e > 0).sum()))  # the code's int(): truncation
    keep = torch.zeros(e.numel(), dtype=torch.bool, device=error.device)
    if k > 0:
        u = torch.rand(e.numel(), generator=generator, dtype=torch.float64, device=error.device).clamp_(1e-300, 1.0)
        keys = torch.where(e > 0, torch.log(e.clamp_min(1e-300)), torch.full_like(e, -math.inf)) - torch.log(-torch.log(u))
        keep[keys.topk(k).indices] = True
    return (~keep).view_as(error)


@torch.compiler.disable  # a draw of a data-dependent count: run eagerly, the rest of the step stays compiled
def code_draw(w: torch.Tensor, q: torch.Tensor, ratio: float) -> torch.Tensor:
    """The mask of the channels to quantize that the official layer draws at every forward (training and test):
    ``code_roulette`` over the channels' errors e_i = |W_i - Q_i|_1 / |W_i|_1."""
    return code_roulette(quantization_error(w, q, "channel"), ratio)


def roulette_select(prob: torch.Tensor, ratio: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """A boolean mask (prob's shape) with exactly round(ratio * N) entries drawn without replacement,
    each draw proportional to ``prob`` among those not yet drawn (roulette wheel)."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"the SQ ratio must be in [0, 1], got {ratio}")
    p = prob.flatten().double()
    n = p.numel()
    k = math.floor(ratio * n + 0.5)  # round half up (Python's round() would send 2.5 to 2)
    mask = torch.zeros(n, dtype=torch.bool, device=prob.device)
    if k >= n:
        mask[:] = True
    elif k > 0:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=prob.device).clamp_(1e-300, 1.0)
        keys = torch.log(p.clamp_min(1e-300)) - torch.log(-torch.log(u))  # log p + Gumbel(0, 1)
        mask[keys.topk(k).indices] = True
    return mask.view_as(prob)
