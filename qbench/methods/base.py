"""A method, built from its config (configs/method/<name>.yaml)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from qbench.errors import UserError
from qbench.methods.callbacks import Callback
from qbench.methods.policy import LayerRow, apply_layer_policy
from qbench.nn.bn_fold import conv_bn_pairs, fold_batch_norms
from qbench.quant import get_quantizer


@dataclass
class Method:
    name: str
    weight_quantizer: object = None
    input_quantizer: object = None
    output_quantizer: object = None  # identity forward, quantized gradient backward (DoReFa)
    input_scale: object = None  # scale of a layer's output from its real-valued input (XNOR-Net's K)
    keep_first_fp: bool = False
    keep_last_fp: bool = False
    activation: str | None = None  # replaces the model's activation when set (BNN: hardtanh)
    fold_bn: bool = False  # QAT: fold each conv -> batch-norm pair before quantizing (whitepaper 3.2)
    callbacks: list[Callback] = field(default_factory=list)

    def apply(self, model: torch.nn.Module) -> list[LayerRow]:
        """Quantize the model in place according to the layer policy; returns the per-layer report."""
        pairs = self.foldable(model) if self.fold_bn else []
        rows = apply_layer_policy(model, self.weight_quantizer, self.input_quantizer,
                                  self.keep_first_fp, self.keep_last_fp, self.output_quantizer, self.input_scale)
        fold_batch_norms(model, pairs)
        folded = {c for c, _ in pairs}
        for r in rows:
            r.kind += " + folded BN" if r.name in folded else ""
        return rows

    def foldable(self, model: torch.nn.Module) -> list[tuple[str, str]]:
        pairs = conv_bn_pairs(model)
        if not pairs:
            raise UserError(f"method {self.name!r} folds batch norm into the preceding conv (method.fold_bn=true), "
                            f"but model {type(model).__name__} has no conv -> batch-norm pair; use a conv net "
                            "with BN (vgg9, resnet18/20/56) or method.fold_bn=false")
        return pairs


def _quantizer(spec, where: str):
    try:
        if isinstance(spec, DictConfig):
            q = instantiate(spec)
        else:
            q = get_quantizer(spec)
        if q is not None:  # a bad keyword value (e.g. mode=foo) surfaces here, not mid-run
            probe = copy.deepcopy(q) if isinstance(q, torch.nn.Module) else q
            probe(torch.linspace(-1.5, 1.5, 8).view(2, 4))
        return q
    except (InstantiationException, ValueError, TypeError) as e:
        msg = str(e.__cause__ or e).strip().splitlines()[0]
        raise UserError(f"{where}: {msg}") from None


def build_method(cfg: DictConfig) -> Method:
    callbacks = []
    for key, spec in (cfg.get("callbacks") or {}).items():
        if spec is None:  # a callback can be switched off with method.callbacks.<key>=null
            continue
        try:
            callbacks.append(instantiate(spec))
        except InstantiationException as e:
            raise UserError(f"method.callbacks.{key}: {str(e.__cause__ or e).splitlines()[0]}") from None
    return Method(
        name=cfg.name,
        weight_quantizer=_quantizer(cfg.get("weight_quantizer"), "method.weight_quantizer"),
        input_quantizer=_quantizer(cfg.get("input_quantizer"), "method.input_quantizer"),
        output_quantizer=_quantizer(cfg.get("output_quantizer"), "method.output_quantizer"),
        input_scale=_quantizer(cfg.get("input_scale"), "method.input_scale") if cfg.get("input_scaling", True)
        else None,
        keep_first_fp=bool(cfg.get("keep_first_fp", False)),
        keep_last_fp=bool(cfg.get("keep_last_fp", False)),
        activation=cfg.get("activation"),
        fold_bn=bool(cfg.get("fold_bn", False)),
        callbacks=callbacks,
    )


