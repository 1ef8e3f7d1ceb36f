"""LearnedScaleBinarize: a weight quantizer whose scale alpha is learned (XNOR-Net Table 3a's "separate layer").

A module because alpha is a parameter: the layer policy gives each layer its own copy, and ``bind(layer)``
(called by the method for any weight, input or output quantizer that has it) shapes alpha after that layer's
weight (one value per output filter, starting at eq. 6's mean|W| so that training starts
from BWN), and from then on back-propagation trains it (``qbench.quant.binarize_learned_scale``).
"""
from __future__ import annotations

import torch
from torch import nn

from qbench.quant.scaled import binarize_learned_scale


class LearnedScaleBinarize(nn.Module):
    bits = 1  # +-alpha per filter

    def __init__(self):
        super().__init__()
        self.alpha = nn.Parameter(torch.empty(0))

    def bind(self, layer: nn.Module) -> None:
        """Called by the method once the layer policy has placed this copy in ``layer``."""
        self._start(layer.weight)

    def _start(self, weight: torch.Tensor) -> None:
        """alpha <- mean|W| of each output filter of ``weight`` (eq. 6), as a parameter shaped to broadcast."""
        w = weight.detach()
        dims = tuple(range(1, w.dim()))
        start = w.abs().mean(dim=dims, keepdim=True) if dims else w.abs().mean()
        self.alpha = nn.Parameter(start.clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.alpha.numel() == 0:  # not bound to a layer yet (a probe of the config): start from this tensor
            self._start(w)
        return binarize_learned_scale(w, self.alpha)

    def describe(self) -> str:
        return "binarize_learned_scale"
