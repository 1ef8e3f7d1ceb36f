"""Stochastic Quantization (Dong et al., BMVC 2017): the SQ ratio schedule and the per-iteration draw of
the channels to quantize (equations in ``qbench.quant.stochastic``)."""
from __future__ import annotations

import functools

import torch

from qbench.methods.callbacks import layers_quantized_by
from qbench.methods.stages import StagedSchedule, check_fractions
from qbench.nn.partial import StochasticQuantizer
from qbench.quant.stochastic import PROB_FNS, code_draw, quantization_error, quantization_probability, roulette_select

RESELECT = ("iteration", "epoch")
GRANULARITY = ("channel", "element")
SELECTIONS = ("code", "paper")


def sq_layers(model):
    return layers_quantized_by(model, StochasticQuantizer)


class StochasticQuantization(StagedSchedule):
    """Stage s quantizes a growing share ratios[s] of every layer's channels.

    ``selection="code"`` (the official layers, the default): at every forward -- evaluation too -- int((1 - r) N)
    channels are drawn to stay in full precision with probability proportional to their error e
    (``code_roulette``); the rest are quantized. ``selection="paper"`` (sec. 3.2): round(r N) channels (or
    elements) are drawn to be quantized with probability f(1 / e), afresh every iteration or every epoch
    (``reselect``), and evaluation uses the last draw."""

    def __init__(self, epochs: int, ratios=(0.5, 0.75, 0.875, 1.0), prob_fn: str = "linear",
                 reselect: str = "iteration", granularity: str = "channel", stage_mode: str = "restart",
                 selection: str = "code"):
        self.ratios = check_fractions(ratios, "method.ratios")
        if prob_fn not in PROB_FNS:
            raise ValueError(f"method.prob_fn={prob_fn!r} is invalid; valid: {', '.join(PROB_FNS)}")
        if reselect not in RESELECT:
            raise ValueError(f"method.reselect={reselect!r} is invalid; valid: {', '.join(RESELECT)}")
        if granularity not in GRANULARITY:
            raise ValueError(f"method.granularity={granularity!r} is invalid; valid: {', '.join(GRANULARITY)}")
        if selection not in SELECTIONS:
            raise ValueError(f"method.selection={selection!r} is invalid; valid: {', '.join(SELECTIONS)}")
        if selection == "code" and (prob_fn != "linear" or granularity != "channel" or reselect != "iteration"):
            raise ValueError("method.selection=code draws channels at every forward with probability e_i, as the "
                             "official layers do; method.prob_fn, method.granularity and method.reselect are the "
                             "paper's reading's settings: use method.selection=paper to change them")
        self.selection = selection
        super().__init__(epochs, len(self.ratios), stage_mode, what="SQ stages (method.ratios)")
        self.prob_fn, self.reselect, self.granularity = prob_fn, reselect, granularity
        self.ratio = self.ratios[0]
        self._errors: list[float] = []

    def setup(self, model) -> None:
        self.n_layers = sum(1 for _ in sq_layers(model))

    def graph_variants(self) -> int:
        """Under torch.compile the code's draw runs eagerly (a graph break in each layer's weight quantizer), so
        each layer's frame is compiled for its own weight shape, at every stage: room for all of them."""
        return self.n_stages * (1 + getattr(self, "n_layers", 0)) if self.selection == "code" else self.n_stages

    @torch.no_grad()
    def select(self, model) -> None:
        for _, m in sq_layers(model):
            q = m.weight_quantizer
            w = m.weight.detach()
            if self.ratio >= 1.0:
                q.mask, q.draw = None, None
                continue
            if self.selection == "code":  # drawn by the layer itself at each forward
                q.mask, q.draw = None, functools.partial(code_draw, ratio=self.ratio)
                continue
            err = quantization_error(w, q.quantizer(w), self.granularity)
            q.mask = roulette_select(quantization_probability(err, self.prob_fn), self.ratio)

    def on_epoch_start(self, trainer, epoch: int) -> None:
        self.ratio = self.ratios[self.stage(epoch)]
        self.select(trainer.model)  # also the mask of an epoch's first iteration with reselect=iteration

    def on_train_batch_start(self, trainer, step: int) -> None:
        if self.selection == "paper" and self.reselect == "iteration" and step > 0:
            self.select(trainer.model)

    @torch.no_grad()
    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        errs = [float(quantization_error(m.weight, m.weight_quantizer.quantizer(m.weight), "channel").mean())
                for _, m in sq_layers(trainer.model)]
        return {"sq_ratio": self.ratio, "sq_stage": self.stage(epoch) + 1,
                "sq_mean_quantization_error": sum(errs) / max(1, len(errs))}
