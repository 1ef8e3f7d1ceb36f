"""BinaryRelax's schedule (Yin et al. 2018, Algorithm 1): lambda_0, then lambda <- growth * lambda every
epoch of phase 1; from ``phase2_epoch`` on, the exact projection (lambda = inf). The relaxed weight itself is
``qbench.quant.binary_relax``."""
from __future__ import annotations

import functools
import math

import torch

from qbench.methods.callbacks import Callback, layers_quantized_by
from qbench.quant.relax import binary_relax


def relaxed_layers(model):
    for _, m in layers_quantized_by(model, lambda q: isinstance(q, functools.partial) and q.func is binary_relax):
        yield m


class RelaxationSchedule(Callback):
    def __init__(self, epochs: int, lambda0: float = 1.0, lambda_growth: float = 1.04,
                 phase2_epoch: int | None = None):
        if not isinstance(lambda0, (int, float)) or isinstance(lambda0, bool) or lambda0 <= 0:
            raise ValueError(f"method.lambda0={lambda0!r} is invalid; allowed: a number > 0")
        if not isinstance(lambda_growth, (int, float)) or isinstance(lambda_growth, bool) or lambda_growth <= 1:
            raise ValueError(f"method.lambda_growth={lambda_growth!r} is invalid; allowed: a number > 1 "
                             "(lambda must grow so that the relaxation tends to the quantized set)")
        if phase2_epoch is not None and (isinstance(phase2_epoch, bool) or not isinstance(phase2_epoch, int)
                                         or phase2_epoch < 0):
            raise ValueError(f"method.phase2_epoch={phase2_epoch!r} is invalid; allowed: an epoch >= 0 or null")
        if phase2_epoch is None:  # qbench's default: the last fifth of training in phase 2
            phase2_epoch = int(round(0.8 * int(epochs)))
        self.lambda0, self.lambda_growth, self.phase2_epoch = float(lambda0), float(lambda_growth), phase2_epoch
        self.lam = self.lambda0

    def lambda_at(self, epoch: int) -> float:
        """lambda of epoch ``epoch`` (0-based): lambda0 * growth^epoch in phase 1, inf in phase 2."""
        if epoch >= self.phase2_epoch:
            return math.inf
        return self.lambda0 * self.lambda_growth ** epoch

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.lam = self.lambda_at(epoch)
        for m in relaxed_layers(trainer.model):
            q, lam = m.weight_quantizer, m.weight_quantizer.keywords.get("lam")
            if not isinstance(lam, torch.Tensor):  # bound once; later epochs write into it (no recompiling)
                lam = torch.empty((), dtype=m.weight.dtype, device=m.weight.device)
                m.set_weight_quantizer(functools.partial(q.func, *q.args, **{**q.keywords, "lam": lam}))
            lam.fill_(self.lam)

    def on_epoch_end(self, trainer, epoch: int) -> dict:
        phase2 = math.isinf(self.lam)
        return {"binaryrelax_phase": 2 if phase2 else 1, "binaryrelax_lambda": None if phase2 else self.lam}
