"""Training losses, by name (``trainer.loss``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def squared_hinge(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BinaryConnect / BNN's L2-SVM loss: mean over batch and classes of max(0, 1 - t * y)^2, t in {-1, +1}."""
    t = 2 * F.one_hot(target, logits.shape[1]).to(logits.dtype) - 1
    return (1 - t * logits).clamp_min(0).square().mean()


def sum_squared_error(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """WAGE's SSE: 0.5 * sum over classes of (one_hot - out)^2, averaged over the batch."""
    t = F.one_hot(target, out.shape[1]).to(out.dtype)
    return 0.5 * (t - out).square().sum(1).mean()


LOSSES = {"cross_entropy": F.cross_entropy, "squared_hinge": squared_hinge, "sse": sum_squared_error}
