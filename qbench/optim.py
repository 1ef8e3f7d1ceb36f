"""Optimizers and learning-rate schedules: built from configs/optim and configs/sched with ``_target_``.
Schedules are stepped once per epoch."""
from __future__ import annotations

import math

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from qbench.quant.shift import ap2_, ap2_scalar


def exponential_decay(optimizer: torch.optim.Optimizer, final_lr: float, epochs: int):
    """BinaryConnect / BNN code: lr_e = lr_0 * gamma^e with gamma = (final_lr / lr_0)^(1 / epochs)."""
    gamma = (final_lr / optimizer.defaults["lr"]) ** (1.0 / max(1, epochs))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


def constant_lr(optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


class Regimes(torch.optim.lr_scheduler.LRScheduler):
    """Torch-era "regimes" (soumith/imagenet-multiGPU.torch's ``paramsForEpoch``, which XNOR-Net's code keeps):
    a table of rows ``{from: epoch, lr: factor, weight_decay: value}``. From epoch ``from`` on (epochs completed,
    0 = the start) the learning rate is optim.lr x ``lr`` and every group's weight decay is ``weight_decay``
    (null: left as it is). Rows come in order of ``from``; the first starts at 0."""

    def __init__(self, optimizer: torch.optim.Optimizer, regimes, last_epoch: int = -1):
        rows = [dict(r) for r in regimes if isinstance(r, dict)] if isinstance(regimes, (list, tuple)) else []
        if not rows or len(rows) != len(regimes) or any(
                set(r) - {"from", "lr", "weight_decay"} or "from" not in r or "lr" not in r for r in rows):
            raise ValueError(f"regimes must be a list of {{from: epoch, lr: factor, weight_decay: value|null}}, "
                             f"got {regimes!r}")
        starts = [r["from"] for r in rows]
        if starts[0] != 0 or any(not isinstance(e, int) or isinstance(e, bool) for e in starts) or \
                starts != sorted(set(starts)):
            raise ValueError(f"regimes' 'from' epochs must be increasing integers starting at 0, got {starts}")
        for r in rows:
            wd = r.get("weight_decay")
            if not (isinstance(r["lr"], (int, float)) and r["lr"] > 0) or (wd is not None and not (
                    isinstance(wd, (int, float)) and wd >= 0)):
                raise ValueError(f"regime {r} needs lr > 0 and weight_decay >= 0 or null")
        self.regimes = rows
        super().__init__(optimizer, last_epoch)

    def regime(self, epoch: int) -> dict:
        return [r for r in self.regimes if r["from"] <= epoch][-1]

    def get_lr(self) -> list[float]:
        r = self.regime(self.last_epoch)
        if r.get("weight_decay") is not None:
            for g in self.optimizer.param_groups:
                g["weight_decay"] = float(r["weight_decay"])
        return [base * r["lr"] for base in self.base_lrs]


def build_optimizer(cfg: DictConfig, param_groups: list[dict]) -> torch.optim.Optimizer:
    """A null argument (optim.eps: null) is left to the optimizer's own default."""
    return instantiate({k: v for k, v in cfg.items() if v is not None}, params=param_groups, _convert_="all")


def optimizer_for(cfg: DictConfig, model: torch.nn.Module, callbacks=()) -> torch.optim.Optimizer:
    """``cfg`` (configs/optim) over ``model``'s parameters, in the groups the method's callbacks ask for
    (BinaryConnect's per-layer learning-rate scale); one group when none asks. The Trainer and the check
    before a launch (``config.check_buildable``) both build a run's optimizer here."""
    lr = float(cfg.lr)
    groups = [{"params": list(model.parameters())}]
    for cb in callbacks:
        groups = cb.param_groups(model, lr) or groups
    return build_optimizer(cfg, groups)


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    return instantiate(cfg, optimizer=optimizer, _convert_="all")


class WAGEGradientDescent(torch.optim.Optimizer):
    """WAGE's update (eq. 11-14): W <- clip(W - dW, -1 + sigma(k_W), 1 - sigma(k_W)) with the k_G-bit
    stochastically rounded gradient dW of ``qbench.quant.wage_gradient``. ``lr`` is WAGE's eta (8 -> 1 -> 1/8);
    no momentum, no weight decay."""

    def __init__(self, params, lr: float = 8.0, g_bits: int = 8, w_bits: int = 2):
        from qbench.quant.wage import wage_sigma

        if lr <= 0 or math.log2(lr) != round(math.log2(lr)):
            raise ValueError(f"WAGE's learning rate is a power of two (e.g. 8), got {lr}")
        wage_sigma(g_bits)
        self.bound = 1.0 - wage_sigma(w_bits)
        super().__init__(params, {"lr": lr, "g_bits": g_bits})

    @torch.no_grad()
    def step(self, closure=None):
        from qbench.quant.wage import wage_gradient

        for group in self.param_groups:
            bits = group["g_bits"] if "g_bits" in group else group["bits_g"]  # a checkpoint from before the rename
            for p in group["params"]:
                if p.grad is not None:
                    p.sub_(wage_gradient(p.grad, bits, group["lr"])).clamp_(-self.bound, self.bound)


class ShiftAdaMax(torch.optim.Optimizer):
    """BNN's shift-based AdaMax (Algorithm 4), as the authors' Torch7 ``adaMax_binary_clip_shift`` computes it:

        m_t = beta1 m_{t-1} + (1 - beta1) g_t
        v_t = AP2(max(beta2 v_{t-1}, |g_t|)) + eps          (kept shifted, as the code keeps it)
        theta_t = theta_{t-1} - AP2(lr / (1 - beta1^t)) * (m_t / v_t) * lr_scale

    AP2 is ``qbench.quant.ap2``: every factor is a power of two, so the update is shifts in hardware. A group's
    ``lr_scale`` (the Glorot scale of ``GlorotLRScale``) multiplies after the shift, as the code's per-weight
    learning-rate vector does. No weight decay; clipping is ``ClipWeights``'s."""

    def __init__(self, params, lr: float = 2.0 ** -6, betas=(0.9, 0.999), eps: float = 2.0 ** -27):
        if not lr > 0:
            raise ValueError(f"shift-based AdaMax needs lr > 0, got {lr}")
        super().__init__(params, {"lr": lr, "betas": tuple(betas), "eps": eps})

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            (b1, b2), scale = group["betas"], group.get("lr_scale", 1.0)
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"], st["m"], st["v"] = 0, torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                g, m, v = p.grad, st["m"], st["v"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                torch.maximum(v.mul_(b2), g.abs(), out=v)
                ap2_(v).add_(group["eps"])  # v >= 0
                shift = ap2_scalar(group["lr"] / scale / (1 - b1 ** st["step"]))
                p.addcdiv_(m, v, value=-shift * scale)
        return loss
