"""Staged training as a schedule: a run of ``epochs`` epochs split into stages of equal length (the first
ones one epoch longer where ``epochs`` is not a multiple of the number of stages).

``stage_mode=restart``: each stage is a full learning-rate schedule of its own, started from the previous
stage's weights with a fresh optimizer (as the official SQ and INQ codes do with one solver per stage); the
callback tells the trainer so through ``lr_cycle``. ``stage_mode=continuous``: all stages share one schedule
over the whole run.
"""
from __future__ import annotations

from qbench.methods.callbacks import Callback

STAGE_MODES = ("restart", "continuous")


def check_fractions(values, what: str, lower_open: bool = True) -> list[float]:
    """A strictly increasing list of fractions in (0, 1] that ends at 1.0 (SQ ratios, INQ portions)."""
    try:
        vals = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{what}={values!r} must be a list of numbers, e.g. [0.5, 0.75, 0.875, 1.0]") from None
    if not vals:
        raise ValueError(f"{what} is empty; e.g. [0.5, 0.75, 0.875, 1.0]")
    if any(not 0.0 < v <= 1.0 for v in vals):
        raise ValueError(f"{what}={vals} has a value outside (0, 1]")
    if any(b <= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"{what}={vals} is not strictly increasing")
    if vals[-1] != 1.0:
        raise ValueError(f"{what}={vals} does not end at 1.0 (the fully quantized network)")
    return vals


class StagedSchedule(Callback):
    def __init__(self, epochs: int, n_stages: int, stage_mode: str = "restart", what: str = "stages",
                 stage_epochs: int | None = None):
        """``stage_epochs``: every stage that many epochs long (then trainer.epochs must be n_stages times it);
        None: trainer.epochs split as evenly as possible."""
        if stage_mode not in STAGE_MODES:
            raise ValueError(f"stage_mode={stage_mode!r} is invalid; valid: {', '.join(STAGE_MODES)}")
        epochs = int(epochs)
        if stage_epochs is not None and epochs != n_stages * stage_epochs:
            raise ValueError(f"trainer.epochs={epochs} is not the {n_stages} {what} x {stage_epochs} epochs each; "
                             f"set trainer.epochs={n_stages * stage_epochs}")
        if epochs < n_stages:
            raise ValueError(f"trainer.epochs={epochs} is fewer than the {n_stages} {what}; "
                             f"allowed: trainer.epochs >= {n_stages}")
        self.epochs, self.n_stages, self.stage_mode = epochs, n_stages, stage_mode

    def graph_variants(self) -> int:
        return self.n_stages

    def lr_restarts(self) -> list[int] | None:
        """The first epoch of each stage: where the trainer starts a new schedule and optimizer."""
        if self.stage_mode != "restart":
            return None
        return [e for e in range(self.epochs) if self.stage_start(e)]

    def stage(self, epoch: int) -> int:
        """0-based stage of a 0-based epoch; stage lengths differ by at most one epoch, longer ones first."""
        base, extra = divmod(self.epochs, self.n_stages)
        long_part = extra * (base + 1)
        return epoch // (base + 1) if epoch < long_part else extra + (epoch - long_part) // base

    def stage_start(self, epoch: int) -> bool:
        return epoch == 0 or self.stage(epoch) != self.stage(epoch - 1)
