"""Incremental Network Quantization (Zhou et al., ICLR 2017), sec. 2.2-2.3: weight partition, group-wise
quantization and re-training, repeated over accumulated portions until every weight is a power of two.

At the start of quantization stage j every layer quantizes (eq. 3, ``qbench.quant.power_of_two``) and
freezes enough of its still-float weights that the frozen share reaches ``portions[j]``: those of largest
magnitude (``partition=magnitude``, the paper's pruning-inspired choice) or a random draw
(``partition=random``). Frozen weights get no gradient and are written back after every optimizer step, so
neither momentum nor weight decay moves them (eq. 4's mask T). The codebook exponent n1 of each layer is
fixed from its weights when its first portion is quantized. Without ``method.init`` the run first trains
the full-precision model for one stage.
"""
from __future__ import annotations

import math

import torch

from qbench.methods.callbacks import layers_quantized_by
from qbench.methods.stages import StagedSchedule, check_fractions
from qbench.nn.partial import FrozenWeights
from qbench.quant.power_of_two import inq_exponents, power_of_two

PARTITIONS = ("magnitude", "random")


def inq_layers(model):
    return layers_quantized_by(model, FrozenWeights)


class IncrementalQuantization(StagedSchedule):
    def __init__(self, epochs: int, portions=(0.5, 0.75, 0.875, 1.0), partition: str = "magnitude",
                 bits: int = 5, init: str | None = None, stage_mode: str = "restart"):
        self.portions = check_fractions(portions, "method.portions")
        if partition not in PARTITIONS:
            raise ValueError(f"method.partition={partition!r} is invalid; valid: {', '.join(PARTITIONS)}")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 2:
            raise ValueError(f"method.bits={bits!r} is invalid; allowed: an integer >= 2")
        self.fp_stage = init is None  # no pre-trained model: train one first
        super().__init__(epochs, len(self.portions) + self.fp_stage, stage_mode,
                         what="INQ stages (method.portions" + (" plus the full-precision stage)" if self.fp_stage
                                                                else ")"))
        self.partition, self.bits = partition, bits
        self.layers: dict[str, dict] = {}  # name -> {"mask", "values", "n1"}

    def portion(self, epoch: int) -> float:
        j = self.stage(epoch) - self.fp_stage
        return self.portions[j] if j >= 0 else 0.0

    def on_train_start(self, trainer) -> None:
        for name, m in inq_layers(trainer.model):  # a resumed run: re-attach the restored masks
            if name in self.layers:
                m.weight_quantizer.mask = self.layers[name]["mask"].to(m.weight.device)

    @torch.no_grad()
    def on_epoch_start(self, trainer, epoch: int) -> None:
        if not self.stage_start(epoch) or self.portion(epoch) == 0.0:
            return
        for name, m in inq_layers(trainer.model):
            w = m.weight
            state = self.layers.get(name)
            if state is None:
                state = self.layers[name] = {"mask": torch.zeros_like(w, dtype=torch.bool),
                                             "values": torch.zeros_like(w), "n1": inq_exponents(w, self.bits)[0]}
            mask = state["mask"]
            target = math.floor(self.portion(epoch) * w.numel() + 0.5)
            new = target - int(mask.sum())
            if new > 0:
                key = w.abs() if self.partition == "magnitude" else torch.rand(w.shape, device=w.device)
                key = torch.where(mask, torch.full_like(key, -1.0), key)  # frozen weights are not candidates
                chosen = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
                chosen[key.flatten().topk(new).indices] = True
                chosen = chosen.view_as(w)
                state["values"] = torch.where(chosen, power_of_two(w, self.bits, state["n1"]), state["values"])
                mask |= chosen
            w.copy_(torch.where(mask, state["values"], w))
            m.weight_quantizer.mask = mask

    @torch.no_grad()
    def on_after_optimizer_step(self, trainer) -> None:
        for name, m in inq_layers(trainer.model):
            s = self.layers.get(name)
            if s is not None:
                m.weight.copy_(torch.where(s["mask"], s["values"], m.weight))

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        frozen = sum(int(s["mask"].sum()) for s in self.layers.values())
        total = sum(m.weight.numel() for _, m in inq_layers(trainer.model))
        return {"inq_stage": self.stage(epoch) + (not self.fp_stage), "inq_portion": self.portion(epoch),
                "inq_frozen_share": frozen / max(1, total)}

    def state_dict(self) -> dict:
        return {"layers": {n: {"mask": s["mask"].cpu(), "values": s["values"].cpu(), "n1": s["n1"]}
                           for n, s in self.layers.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.layers = {n: dict(s) for n, s in state.get("layers", {}).items()}
