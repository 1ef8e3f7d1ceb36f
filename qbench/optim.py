"""Optimizers and learning-rate schedules: built from configs/optim and configs/sched with ``_target_``.
Schedules are stepped once per epoch."""
from __future__ import annotations

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig


def exponential_decay(optimizer: torch.optim.Optimizer, final_lr: float, epochs: int):
    """BinaryConnect / BNN code: lr_e = lr_0 * gamma^e with gamma = (final_lr / lr_0)^(1 / epochs)."""
    gamma = (final_lr / optimizer.defaults["lr"]) ** (1.0 / max(1, epochs))
    return torch.optim.lr_scheduler.ExponentialLR(optimizer, gamma)


def constant_lr(optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: 1.0)


def build_optimizer(cfg: DictConfig, param_groups: list[dict]) -> torch.optim.Optimizer:
    return instantiate(cfg, params=param_groups, _convert_="all")


def build_scheduler(cfg: DictConfig, optimizer: torch.optim.Optimizer):
    return instantiate(cfg, optimizer=optimizer, _convert_="all")
