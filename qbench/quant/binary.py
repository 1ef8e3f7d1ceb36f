"""Binarizers of BinaryConnect (Courbariaux et al. 2015) and BNN (Hubara et al. 2016)."""
from __future__ import annotations

import torch

from qbench.quant.facts import quantizer
from qbench.quant.ste import straight_through


def _plus_minus_one(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """+1 and -1 as 0-dim tensors of ``x``'s dtype and device: ``torch.where`` broadcasts them, so a
    binarization writes one tensor instead of three."""
    return x.new_ones(()), x.new_full((), -1.0)


@quantizer(bits=1, exact_in_bf16=True, alias="sign")
def sign(x: torch.Tensor) -> torch.Tensor:
    """BNN eq. 1: x_b = +1 if x >= 0 else -1. Never 0 (``torch.sign`` would give 0 at 0).

    No gradient of its own (it is piecewise constant); the STEs below give it one.
    """
    return torch.where(x >= 0, *_plus_minus_one(x))


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """BinaryConnect eq. 3: sigma(x) = clip((x + 1) / 2, 0, 1)."""
    return ((x + 1) / 2).clamp(0, 1)


@quantizer(bits=1, exact_in_bf16=True, alias="stochastic_binarize")
def stochastic_binarize(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """BinaryConnect eq. 2 / BNN eq. 2: +1 with probability hard_sigmoid(x), else -1.

    u ~ U[0, 1) and the result is +1 where u < p, so p = 0 never gives +1 and p = 1 always does.
    No gradient of its own; ``binaryconnect(w, mode="stoch")`` adds the STE.
    """
    u = torch.rand(x.shape, generator=generator, device=x.device, dtype=torch.float32)
    p = hard_sigmoid(x.float())
    return torch.where(u < p, *_plus_minus_one(x))


@quantizer(bits=1, exact_in_bf16=True, alias="ste_sign")
def ste_sign(x: torch.Tensor, clip: float = 1.0, strict: bool = False) -> torch.Tensor:
    """BNN's sign with the saturated STE (BNN eq. 4, "hardtanh" gradient).

    forward:  q = sign(x)
    backward: dq/dx = 1 if |x| <= clip else 0   (the gradient is cancelled where x saturates)
              ``strict``: 1 if |x| < clip, the boundary cancelled too -- allenai/XNOR-Net's BinActiveZ
              (newLayers/BinActiveZ.lua 14-15 at 4006d59: gradInput[input:ge(1)] = 0, [input:le(-1)] = 0)
    """
    return straight_through(sign(x), _saturated_identity(x, clip, strict))


def _saturated_identity(x: torch.Tensor, clip: float, strict: bool = False) -> torch.Tensor:
    """Equals x; its gradient is 1[|x| <= clip], boundary included (clamp's would be 0 there), or with
    ``strict`` 1[|x| < clip]."""
    inside = x.abs() < clip if strict else x.abs() <= clip
    return torch.where(inside, x, x.detach())


@quantizer(bits=1, exact_in_bf16=lambda a: a["mode"] != "stoch", alias="binaryconnect")
def binaryconnect(w: torch.Tensor, mode: str = "det", generator: torch.Generator | None = None,
                  training: bool = True) -> torch.Tensor:
    """BinaryConnect weight binarization (Courbariaux et al. 2015, eq. 1 det / eq. 2 stoch).

    forward:  w_b = sign(w)                      (mode="det")
              w_b = +1 w.p. hard_sigmoid(w), -1   (mode="stoch", training)
              w_b = w                             (mode="stoch", test time: section 2.6's second method, the
                                                   real-valued weights, as binary_connect.py's
                                                   ``binarization(deterministic=True, stochastic=True)``)
    backward: dC/dw = dC/dw_b  (identity; Algorithm 1 updates the real-valued w with the gradient of w_b,
              and keeps w in [-1, 1] by clipping after the update -- see ``ClipWeights``)
    """
    if mode == "det":
        wb = sign(w)
    elif mode == "stoch":
        if not training:
            return w
        wb = stochastic_binarize(w, generator)
    else:
        raise ValueError(f"binaryconnect mode must be 'det' or 'stoch', got {mode!r}")
    return straight_through(wb, w)


def binaryconnect_init(w: torch.Tensor, bound: float = 1.0) -> torch.Tensor:
    """Fill ``w`` in place from U(-H, H), H = ``bound`` = 1: how BinaryConnect's and BNN's reference code
    starts a binarized layer's real-valued weights (binary_connect.py / binary_net.py ``DenseLayer`` and
    ``Conv2DLayer``: ``W=lasagne.init.Uniform((-H, H))`` with ``H = 1.``), i.e. spread over the whole clipping
    range [-1, 1] rather than at a Glorot/Kaiming scale. The Glorot learning-rate scale (``GlorotLRScale``)
    is sized for weights of this range."""
    with torch.no_grad():
        return w.uniform_(-bound, bound)


@quantizer(bits=1, exact_in_bf16=True, alias="approx_sign")
def approx_sign(x: torch.Tensor, clip: float = 1.0) -> torch.Tensor:
    """Sign with the ApproxSign gradient (Bi-Real Net; "Back to Simplicity" eq. 3).

    forward:  q = sign(x)
    backward: dq/dx = (2 / c) (1 - |x| / c) for |x| <= c, else 0   (c = 1: 2 - 2|x|, the derivative of the
              piecewise quadratic that approximates sign)
    """
    c = float(clip)
    inside = x.abs() <= c
    # the surrogate's derivative is the ApproxSign gradient: d/dx [(2/c)(x - x|x| / (2c))] = (2/c)(1 - |x|/c)
    surrogate = (2 / c) * (x - x * x.abs() / (2 * c))
    return straight_through(sign(x), torch.where(inside, surrogate, surrogate.detach()))


@quantizer(bits=1, exact_in_bf16=lambda a: a["scaling"] == "none")
def binarize(x: torch.Tensor, ste: str = "clip", clip: float = 1.0, scaling: str = "none",
             stochastic: bool | None = False, training: bool = True) -> torch.Tensor:
    """A binary quantizer assembled from the choices "Back to Simplicity" compares:

    ste="clip":       sign with the clipped-identity STE 1[|x| <= clip] (eq. 2; BNN's with clip = 1)
    ste="approxsign": sign with the ApproxSign gradient (eq. 3)
    scaling="channel": multiply by mean|x| per output channel (held constant), as XNOR-Net's alpha;
    scaling="none":    plain +-1 (the paper finds scaling unneeded when batch norm follows)
    stochastic=True:  BNN eq. 2 at train time (+1 w.p. hard_sigmoid(x)), with the clipped-identity STE; sign at
                      test time ("with the exception of activations at train-time", BNN section 1.1); None: False
    """
    if ste not in ("clip", "approxsign"):
        raise ValueError(f"ste must be 'clip' or 'approxsign', got {ste!r}")
    if scaling not in ("none", "channel"):
        raise ValueError(f"scaling must be 'none' or 'channel', got {scaling!r}")
    if not clip > 0:
        raise ValueError(f"clip_threshold must be > 0, got {clip}")
    if stochastic is not None and not isinstance(stochastic, bool):
        raise ValueError(f"stochastic_activations must be true or false, got {stochastic!r}")
    if stochastic and ste != "clip":
        raise ValueError(f"stochastic binarization takes ste='clip' (BNN's), got {ste!r}")
    if stochastic and training:
        q = straight_through(stochastic_binarize(x), _saturated_identity(x, clip))
    else:
        q = ste_sign(x, clip) if ste == "clip" else approx_sign(x, clip)
    if scaling == "channel":
        dims = tuple(range(1, x.dim()))
        q = q * (x.abs().mean(dim=dims, keepdim=True) if dims else x.abs().mean()).detach()
    return q
