"""Incremental Network Quantization (Zhou et al., ICLR 2017), sec. 2.2-2.3: weight partition, group-wise
quantization and re-training, repeated over accumulated portions until every weight is a power of two.

At the start of quantization stage j every layer quantizes (eq. 3, ``qbench.quant.power_of_two``) and
freezes enough of its still-float weights that the frozen share reaches ``portions[j]``: those of largest
magnitude (``partition=magnitude``, the paper's pruning-inspired choice) or a random draw
(``partition=random``). Frozen weights get no gradient and are written back after every optimizer step, so
neither momentum nor weight decay moves them (eq. 4's mask T). Without ``method.init`` the run first trains
the full-precision model for one stage.

As the official code (AojunZhou/Incremental-Network-Quantization at c7f6a60) does:
- each stage recomputes a layer's codebook exponent n1 = floor(log2(4/3 max|W|)) from all its weights, the
  frozen ones included (src/caffe/blob.cpp 527-529, run at every stage's load); it changes only if a float
  weight has grown past 1.5 * 2^n1, and then the frozen values are re-quantized with it as the code does;
- ``last_stage="step"``: the last portion (every weight quantized) gets no share of the epochs: run.py 33-34
  give that stage ``max_iter: 1``. trainer.epochs is split among the other stages, and the remaining weights
  are quantized after the last epoch's training, before its evaluation (the code's one iteration, in which
  only biases could still move, is not run). ``last_stage="share"``: a full share of the epochs, as the
  paper's text reads (its last stage re-trains nothing but what is not a weight).
- ``reselect="all"``: each stage selects its portion by magnitude over all of a layer's weights, those frozen
  earlier included (blob.cpp 519-542: every mask is reset to 1, then |W| >= the portion's threshold is
  quantized and masked), so an earlier frozen weight now below the threshold trains again from its power of
  two. ``reselect="float"``: only still-float weights are candidates and frozen weights stay frozen, as the
  paper's text reads (sec. 2.2). Random partition draws among the float weights only.
- ``ties="down"``: a weight halfway between two levels goes to the smaller (``qbench.quant.power_of_two``).
Left as qbench has it: a stage quantizes round(portion x N) weights; the code's threshold index,
int(N (1 - portion)) - 1, takes one weight more (and ties at the threshold).
"""
from __future__ import annotations

import math

import torch

from qbench.methods.callbacks import layers_quantized_by
from qbench.methods.stages import StagedSchedule, check_fractions
from qbench.nn.partial import FrozenWeights
from qbench.quant.power_of_two import TIES, inq_exponents, power_of_two

PARTITIONS = ("magnitude", "random")
LAST_STAGES = ("step", "share")
RESELECT = ("all", "float")


def inq_layers(model):
    return layers_quantized_by(model, FrozenWeights)


class IncrementalQuantization(StagedSchedule):
    def __init__(self, epochs: int, portions=(0.5, 0.75, 0.875, 1.0), partition: str = "magnitude",
                 bits: int = 5, init: str | None = None, stage_mode: str = "restart", last_stage: str = "step",
                 reselect: str = "all", ties: str = "down"):
        self.portions = check_fractions(portions, "method.portions")
        if reselect not in RESELECT:
            raise ValueError(f"method.reselect={reselect!r} is invalid; valid: {', '.join(RESELECT)}")
        if reselect == "all" and partition != "magnitude":
            raise ValueError("method.reselect=all re-selects each stage's portion by magnitude over every weight, as "
                             "the official code does; with method.partition=random use method.reselect=float")
        if ties not in TIES:
            raise ValueError(f"method.ties={ties!r} is invalid; valid: {', '.join(TIES)}")
        self.reselect_all, self.ties = reselect == "all", ties
        if partition not in PARTITIONS:
            raise ValueError(f"method.partition={partition!r} is invalid; valid: {', '.join(PARTITIONS)}")
        if isinstance(bits, bool) or not isinstance(bits, int) or bits < 2:
            raise ValueError(f"method.bits={bits!r} is invalid; allowed: an integer >= 2")
        if last_stage not in LAST_STAGES:
            raise ValueError(f"method.last_stage={last_stage!r} is invalid; valid: {', '.join(LAST_STAGES)}")
        self.fp_stage = init is None  # no pre-trained model: train one first
        self.last_step = last_stage == "step"  # the last portion is applied after the training, not trained
        trained = len(self.portions) - self.last_step + self.fp_stage
        if trained < 1:
            raise ValueError("method.last_stage=step leaves no stage to train (method.portions=[1.0] from "
                             "method.init); give more portions or method.last_stage=share")
        super().__init__(epochs, trained, stage_mode,
                         what="INQ stages (method.portions" + (" plus the full-precision stage" if self.fp_stage
                                                               else "") + (" less the one-step last)" if
                                                                           self.last_step else ")"))
        self.final_done = False
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
        self.quantize(trainer.model, self.portion(epoch))

    @torch.no_grad()
    def on_train_epoch_end(self, trainer, epoch: int) -> None:
        if self.last_step and epoch + 1 == self.epochs:  # the code's one-iteration last stage
            self.quantize(trainer.model, self.portions[-1])
            self.final_done = True

    @torch.no_grad()
    def quantize(self, model, portion: float) -> None:
        """Quantize and freeze each layer's largest (or randomly drawn) float weights until ``portion`` of it is
        frozen, with n1 recomputed from all its weights as the code does at every stage."""
        for name, m in inq_layers(model):
            w = m.weight
            state = self.layers.get(name)
            if state is None:
                state = self.layers[name] = {"mask": torch.zeros_like(w, dtype=torch.bool),
                                             "values": torch.zeros_like(w), "n1": inq_exponents(w, self.bits)[0]}
            n1 = inq_exponents(torch.where(state["mask"], state["values"], w), self.bits)[0]
            if n1 != state["n1"]:  # a float weight grew past 1.5 * 2^n1: the code re-quantizes with the new n1
                state["values"] = torch.where(state["mask"], power_of_two(state["values"], self.bits, n1, self.ties),
                                              state["values"])
                state["n1"] = n1
            current = torch.where(state["mask"], state["values"], w)
            target = math.floor(portion * w.numel() + 0.5)
            if self.reselect_all:  # the code: the portion's largest |W| over every weight, frozen or not
                chosen = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
                chosen[current.abs().flatten().topk(target).indices] = True
                mask = chosen.view_as(w)
                state["values"] = torch.where(mask, power_of_two(current, self.bits, state["n1"], self.ties),
                                              torch.zeros_like(w))
                state["mask"] = mask
            else:
                mask = state["mask"]
                new = target - int(mask.sum())
                if new > 0:
                    key = w.abs() if self.partition == "magnitude" else torch.rand(w.shape, device=w.device)
                    key = torch.where(mask, torch.full_like(key, -1.0), key)  # frozen weights are not candidates
                    chosen = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
                    chosen[key.flatten().topk(new).indices] = True
                    chosen = chosen.view_as(w)
                    state["values"] = torch.where(chosen, power_of_two(w, self.bits, state["n1"], self.ties),
                                                  state["values"])
                    mask |= chosen
            w.copy_(torch.where(mask, state["values"], current))
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
        final = self.final_done and epoch + 1 == self.epochs
        return {"inq_stage": self.stage(epoch) + (not self.fp_stage) + final,
                "inq_portion": self.portions[-1] if final else self.portion(epoch),
                "inq_frozen_share": frozen / max(1, total)}

    def state_dict(self) -> dict:
        return {"layers": {n: {"mask": s["mask"].cpu(), "values": s["values"].cpu(), "n1": s["n1"]}
                           for n, s in self.layers.items()}, "final_done": self.final_done}

    def load_state_dict(self, state: dict) -> None:
        self.layers = {n: dict(s) for n, s in state.get("layers", {}).items()}
        self.final_done = bool(state.get("final_done", False))
