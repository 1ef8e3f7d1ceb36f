"""Callbacks: the hooks through which a method acts on training, without the trainer knowing the method.

Hooks (all optional): ``setup(model)`` (once the method has quantized the model; a schedule that depends on
the model's layers sizes itself here and raises ValueError for a model it cannot run), ``param_groups(model, lr)``, ``lr_restarts() -> epochs that start a new schedule``,
``on_train_start(trainer)``, ``on_epoch_start(trainer, epoch)``, ``on_train_batch_start(trainer, step)``,
``on_before_optimizer_step(trainer)`` (the gradients are complete, across ranks too), ``on_after_optimizer_step(trainer)``,
``on_epoch_end(trainer, epoch) -> dict of scalars to log``, ``graph_variants() -> how many different forward
graphs the run needs`` (a compiled model keeps one per stage that changes the forward or what trains).
State that must survive a resume goes through ``state_dict`` / ``load_state_dict`` (plain data and tensors).
What a hook may read of its ``trainer``: ``model``, ``epochs`` and ``data`` (``Host``); the Trainer is one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from qbench.nn.layers import _QuantizedMixin
from qbench.nn.shift_bn import ShiftBatchNorm
from qbench.quant.shift import ap2_scalar


def quantized_weights(model: nn.Module):
    """The real-valued weights whose forward value is quantized."""
    for m in model.modules():
        if isinstance(m, _QuantizedMixin) and m.weight_quantizer is not None:
            yield m, m.weight


def layers_quantized_by(model: nn.Module, match):
    """(name, layer) for each layer whose weight quantizer satisfies ``match`` (a type or a predicate)."""
    test = (lambda q: isinstance(q, match)) if isinstance(match, type) else match
    for name, m in model.named_modules():
        if isinstance(m, _QuantizedMixin) and m.weight_quantizer is not None and test(m.weight_quantizer):
            yield name, m


@dataclass
class Host:
    """What a callback's hooks read of the trainer: the model, the run's epoch count and its data (None outside
    training). ``qbench.train.Trainer`` is the host while training; ``replay_epoch_start`` uses this one."""
    model: nn.Module
    epochs: int
    data: object = None


def replay_epoch_start(callbacks, model: nn.Module, epoch: int, epochs: int) -> None:
    """Put a rebuilt model (its weights and callbacks' state loaded) in the state ``epoch`` trained and was
    evaluated in: each callback's ``on_epoch_start``, as the trainer called it when that epoch began (SQ's ratio,
    BinaryRelax's exact projection, bottom-up's fixed-point layers)."""
    host = Host(model, int(epochs))
    with torch.no_grad():
        for cb in callbacks:
            cb.on_epoch_start(host, epoch)


class Callback:
    def setup(self, model: nn.Module) -> None: ...

    def param_groups(self, model: nn.Module, lr: float) -> list[dict] | None:
        return None

    def lr_restarts(self) -> list[int] | None:
        """Epochs at which the learning-rate schedule starts again from optim.lr, with a fresh optimizer state
        (each schedule runs until the next restart); None: one schedule for the whole run."""
        return None

    def graph_variants(self) -> int:
        """How many forwards that differ in Python state (flags, requires_grad) the run goes through: torch.compile
        keeps one graph per variant and mode, and falls back to eager past its recompile limit."""
        return 1

    def on_train_start(self, trainer) -> None: ...

    def on_epoch_start(self, trainer, epoch: int) -> None: ...

    def on_train_batch_start(self, trainer, step: int) -> None: ...

    def on_before_optimizer_step(self, trainer) -> None: ...

    def on_after_optimizer_step(self, trainer) -> None: ...

    def on_train_epoch_end(self, trainer, epoch: int) -> None:
        """After the epoch's last step, before its evaluation and checkpoint."""

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float] | None:
        return None

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


class ClipWeights(Callback):
    """BinaryConnect Algorithm 1 / BNN Algorithm 1: after each update, w <- clip(w, -bound, bound).

    Without it the real-valued weights of binarized layers drift far from 0 and stop changing sign.
    Applies only to weights that have a weight quantizer, or with ``all_parameters`` to every parameter (BNN's
    Torch7 CIFAR-10 model clips its biases and batch norms' gamma and beta too: ``clipvector:fill(1)``).
    """

    def __init__(self, bound: float = 1.0, all_parameters: bool = False):
        self.bound, self.all_parameters = float(bound), bool(all_parameters)

    def on_after_optimizer_step(self, trainer) -> None:
        with torch.no_grad():
            params = (trainer.model.parameters() if self.all_parameters
                      else (w for _, w in quantized_weights(trainer.model)))
            for w in params:
                w.clamp_(-self.bound, self.bound)


class XnorCodeWeights(Callback):
    """allenai/XNOR-Net (util.lua), before every forward of a binarized layer: ``meancenterConvParms`` then
    ``clampConvParms``. Each filter's weight minus its mean over the input channels (the same output filter and
    kernel position), then clipped to [-bound, bound]. Not in the paper's text.

    A conv weight (out, in, kh, kw) is centred over ``in``; a linear weight (out, in) over all its inputs (the
    official AlexNet's FC6 is a 6x6 conv centred per position, qbench's a linear layer over the flattened
    256x6x6 input). Run at the start and after each optimizer step, i.e. before each forward.
    """

    def __init__(self, bound: float = 1.0):
        self.bound = float(bound)

    def on_train_start(self, trainer) -> None:
        self.on_after_optimizer_step(trainer)

    def on_after_optimizer_step(self, trainer) -> None:
        with torch.no_grad():
            for _, w in quantized_weights(trainer.model):
                w.sub_(w.mean(dim=1, keepdim=True)).clamp_(-self.bound, self.bound)


class XnorCodeGradScale(Callback):
    """allenai/XNOR-Net (util.lua ``updateBinaryGradWeight``, train.lua; lines at 4006d59): the gradient of each
    binarized weight is eq. 7's, dC/dW~ * (1/n + alpha * 1[|W| < 1]), times (1 - 1/c_in), and under SGD times n
    too (util.lua 85-88: ``if opt.optimType == 'sgd' then m:mul(n)``), with n the filter size (c_in x kh x kw)
    and c_in the input channels. qbench's ``binarize_scaled`` gives eq. 7; this callback adds the code's factor.

    ``optimizer="adam"``: the factor is (1 - 1/c_in) without n, and then every parameter's gradient is
    multiplied by 1e9 before the optimizer (train.lua 185-187, commit a9ebb14 "fix the precision issue for
    xnornet"). Adam's step does not change with the gradient's scale, but its weight decay (added to the
    scaled gradient) and eps do not scale: at 1e9 they are in effect zero, as they were for the released
    AlexNet run."""

    ADAM_SCALE = 1e9

    def __init__(self, optimizer: str = "sgd"):
        if optimizer not in ("sgd", "adam"):
            raise ValueError(f"optimizer={optimizer!r} is invalid; valid: sgd, adam (the code's opt.optimType)")
        self.optimizer = optimizer

    @staticmethod
    def factor(w: torch.Tensor, optimizer: str = "sgd") -> float:
        n = w[0].numel()
        return (1.0 - 1.0 / w.shape[1]) * (n if optimizer == "sgd" else 1.0)

    def on_before_optimizer_step(self, trainer) -> None:
        with torch.no_grad():
            for _, w in quantized_weights(trainer.model):
                if w.grad is not None:
                    w.grad.mul_(self.factor(w, self.optimizer))
            if self.optimizer == "adam":
                for p in trainer.model.parameters():
                    if p.grad is not None:
                        p.grad.mul_(self.ADAM_SCALE)


class GlorotLRScale(Callback):
    """BC/BNN reference code ("W_LR_scale = Glorot"): the learning rate of each binarized layer's weights is
    multiplied by 1/H with H = sqrt(1.5 / (fan_in + fan_out)) (Glorot & Bengio's uniform init bound).

    Binary weights live in [-1, 1] rather than at the layer's init scale, so their steps are scaled up to
    match. Other parameters keep the base learning rate. ``power_of_two``: 1/H rounded to the nearest power of
    two, as BNN's Torch7 conv models do (AP2, so that the step stays a shift).

    ``exponent``: the scale is (1/H)^exponent (None: 1). 2 is BinaryConnect's MNIST code of the paper's time
    (``mnist_mlp.py``, plain SGD), whose weights are +-H, clipped to [-H, H]. Every binarized layer there feeds
    a batch norm, so weights w = H v give the same network as v in [-1, 1], and dC/dv = H dC/dw: an SGD step
    of lr on w is a step of lr / H^2 on v. Under Adam, whose step does not scale with the gradient, 1/H is
    the same equivalence.

    ``batch_norm_gamma``: each batch norm's gamma gets the scale too, with C features in place of
    fan_in + fan_out: 1/sqrt(1.5 / C). BNN's Torch7 MNIST model does this (its per-parameter learning-rate
    vector, ``BinaryNet_MNIST_Model.lua``: sqrt(2048 / 1.5) = 37 for the shift batch norms, sqrt(10 / 1.5) for
    the output one); its CIFAR-10 and SVHN models leave batch norms at the base rate. Betas always keep it.
    """

    def __init__(self, power_of_two: bool | None = False, exponent: float | None = None,
                 batch_norm_gamma: bool | None = False):
        exponent = 1.0 if exponent is None else exponent
        if isinstance(exponent, bool) or not isinstance(exponent, (int, float)) or exponent <= 0:
            raise ValueError(f"glorot_lr_scale exponent must be a number > 0, got {exponent!r}")
        for name, flag in (("power_of_two", power_of_two), ("batch_norm_gamma", batch_norm_gamma)):
            if flag is not None and not isinstance(flag, bool):
                raise ValueError(f"glorot_lr_scale {name} must be true, false or null, got {flag!r}")
        self.power_of_two, self.exponent = bool(power_of_two), float(exponent)
        self.batch_norm_gamma = bool(batch_norm_gamma)

    def _scale(self, fans: int) -> float:
        scale = (1.0 / math.sqrt(1.5 / fans)) ** self.exponent
        return ap2_scalar(scale) if self.power_of_two else scale

    def param_groups(self, model: nn.Module, lr: float) -> list[dict]:
        scaled, ids = [], set()
        for m, w in quantized_weights(model):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(w)
            scale = self._scale(fan_in + fan_out)
            scaled.append({"params": [w], "lr": lr * scale, "lr_scale": scale})
            ids.add(id(w))
        for m in model.modules() if self.batch_norm_gamma else ():
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, ShiftBatchNorm)) and m.weight is not None:
                scale = self._scale(m.num_features)
                scaled.append({"params": [m.weight], "lr": lr * scale, "lr_scale": scale})
                ids.add(id(m.weight))
        rest = [p for p in model.parameters() if id(p) not in ids]
        return scaled + [{"params": rest, "lr": lr, "lr_scale": 1.0}]


class QuantDelay(Callback):
    """Whitepaper section 3 / tf.contrib.quantize ``quant_delay``: train in floating point for the first
    ``epochs`` epochs (ranges are observed all the while), then switch every FakeQuant on."""

    def __init__(self, epochs: int = 0):
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            raise ValueError(f"quant_delay must be a whole number of epochs >= 0, got {epochs!r}")
        self.epochs = epochs
        self.active = epochs == 0

    def on_epoch_start(self, trainer, epoch: int) -> None:
        from qbench.nn import FakeQuant

        self.active = epoch >= self.epochs
        for m in trainer.model.modules():
            if isinstance(m, FakeQuant):
                m.enabled = self.active

    def on_epoch_end(self, trainer, epoch: int) -> dict[str, float]:
        return {"quantized": float(self.active)}


class FreezeBatchNorm(Callback):
    """Whitepaper section 3.2: from epoch ``after`` on, folded batch norms use their moving statistics and
    stop updating them (``freeze_bn_delay``). ``after=None``: never."""

    def __init__(self, after: int | None = None):
        if after is not None and (isinstance(after, bool) or not isinstance(after, int) or after < 0):
            raise ValueError(f"freeze_bn_after must be a whole number of epochs >= 0 or null, got {after!r}")
        self.after = after

    def on_epoch_start(self, trainer, epoch: int) -> None:
        from qbench.nn.bn_fold import FoldedConvBN

        frozen = self.after is not None and epoch >= self.after
        for m in trainer.model.modules():
            if isinstance(m, FoldedConvBN):
                m.frozen = frozen
