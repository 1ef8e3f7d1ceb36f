"""A method, built from its config (configs/method/<name>.yaml)."""
from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig

from qbench.checkpoint import load_checkpoint
from qbench.errors import UserError
from qbench.methods.callbacks import Callback
from qbench.methods.policy import (BLOCK_ORDERS, LayerRow, apply_layer_policy, dropout_after_quantizer,
                                   xnor_block_order)
from qbench.nn.bn_fold import conv_bn_pairs, fold_batch_norms
from qbench.nn.shift_bn import shift_batch_norms
from qbench.quant import get_quantizer


@dataclass
class Method:
    name: str
    weight_quantizer: object = None
    input_quantizer: object = None
    output_quantizer: object = None  # identity forward, quantized gradient backward (DoReFa)
    output_quantizer_layers: str = "all"  # "last": only the network's output (WAGE's last Q_E)
    input_scale: object = None  # scale of a layer's output from its real-valued input (XNOR-Net's K)
    keep_first_fp: bool = False
    keep_last_fp: bool = False
    quantize_data_input: bool = False  # the first layer's input (the data) through the input quantizer (WAGE)
    activation: str | None = None  # replaces the model's activation when set (BNN: hardtanh)
    fold_bn: bool = False  # QAT: fold each conv -> batch-norm pair before quantizing (whitepaper 3.2)
    init: str | None = None  # a finished full-precision run whose weights the model starts from
    weight_init: object = None  # the method's own initialization of its quantized layers' weights (WAGE eq. 5)
    block_order: str = "model"  # "xnor": pools moved right after binary convs (XNOR-Net Table 3b)
    batch_norm: str = "standard"  # "shift": BNN Algorithm 3 for every hidden batch norm (its Torch7 models)
    callbacks: list[Callback] = field(default_factory=list)

    def apply(self, model: torch.nn.Module) -> list[LayerRow]:
        """Start from ``init``'s weights if given, then quantize the model in place according to the layer
        policy; returns the per-layer report. (A resumed run loads its own checkpoint after this.)"""
        if self.init:
            load_init_weights(model, self.init)
        pairs = self.foldable(model) if self.fold_bn else []
        rows = apply_layer_policy(model, self.weight_quantizer, self.input_quantizer,
                                  self.keep_first_fp, self.keep_last_fp, self.output_quantizer, self.input_scale,
                                  self.quantize_data_input, self.output_quantizer_layers == "last")
        fold_batch_norms(model, pairs)
        reordered = set(xnor_block_order(model)) if self.block_order == "xnor" else set()
        dropped = set(dropout_after_quantizer(model))
        if self.batch_norm == "shift" and not shift_batch_norms(model):
            raise UserError("method.batch_norm='shift' replaces batch norms, but this model has none before its last "
                            "layer; use one with batch norm (mlp, vgg_small, lenet5 with model.bn=true) or "
                            "method.batch_norm=standard")
        if self.weight_init is not None and not self.init:
            for m in model.modules():
                if getattr(m, "weight_quantizer", None) is not None:
                    self.weight_init(m.weight)
        for m in model.modules():  # a quantizer with parameters shaped after its layer: a learned weight scale
            for role in ("weight_quantizer", "input_quantizer", "output_quantizer"):  # or input threshold
                if hasattr(getattr(m, role, None), "bind"):
                    getattr(m, role).bind(m)
        folded = {c for c, _ in pairs}
        for r in rows:
            r.kind += " + folded BN" if r.name in folded else ""
            r.kind += " + pool" if r.name in reordered else ""
            r.kind += " + dropout" if r.name in dropped else ""  # applied after its input quantizer
        for cb in self.callbacks:
            try:
                cb.setup(model)
            except ValueError as e:
                raise UserError(str(e).splitlines()[0]) from None
        return rows

    def foldable(self, model: torch.nn.Module) -> list[tuple[str, str]]:
        pairs = conv_bn_pairs(model)
        if not pairs:
            raise UserError(f"method {self.name!r} folds batch norm into the preceding conv (method.fold_bn=true), "
                            f"but model {type(model).__name__} has no conv -> batch-norm pair; use a conv net "
                            "with BN (vgg9, resnet18/20/56) or method.fold_bn=false")
        return pairs


def _plain_partials(obj):
    """``obj`` with each of Hydra's partials (``_partial_: true``, also inside a module such as SQ's
    ``StochasticQuantizer``) as a plain functools.partial of the same function and arguments. Hydra's own
    partial authorizes its target on every call, about 0.25 ms on a CPU, per layer and batch; the probe call
    in ``_quantizer`` has already passed that check once."""
    if isinstance(obj, functools.partial):
        return functools.partial(_plain_partials(obj.func), *map(_plain_partials, obj.args),
                                 **{k: _plain_partials(v) for k, v in obj.keywords.items()})
    if isinstance(obj, torch.nn.Module):
        for m in obj.modules():
            for k, v in list(vars(m).items()):
                if isinstance(v, functools.partial):
                    setattr(m, k, _plain_partials(v))
    return obj


def _quantizer(spec, where: str):
    try:
        if isinstance(spec, DictConfig):
            q = instantiate(spec)
        else:
            q = get_quantizer(spec)
        if q is not None:  # a bad keyword value (e.g. mode=foo) surfaces here, not mid-run
            probe = copy.deepcopy(q) if isinstance(q, torch.nn.Module) else q
            for m in probe.modules() if isinstance(probe, torch.nn.Module) else ():
                if isinstance(getattr(m, "enabled", None), bool):  # a Gated quantizer probes what it will switch on
                    m.enabled = True
            probe(torch.linspace(-1.5, 1.5, 8).view(2, 4))
        return _plain_partials(q)
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
            msg = str(e.__cause__ or e).splitlines()[0]
            # a schedule's own message names the setting (method.ratios=...); others get the callback's name
            raise UserError(msg if msg.startswith(("method.", "trainer.")) else f"method.callbacks.{key}: {msg}") \
                from None
    return Method(
        name=cfg.name,
        weight_quantizer=_quantizer(cfg.get("weight_quantizer"), "method.weight_quantizer"),
        input_quantizer=_quantizer(cfg.get("input_quantizer"), "method.input_quantizer"),
        output_quantizer=_quantizer(cfg.get("output_quantizer"), "method.output_quantizer"),
        output_quantizer_layers=_output_quantizer_layers(cfg.get("output_quantizer_layers") or "all"),
        input_scale=_quantizer(cfg.get("input_scale"), "method.input_scale") if cfg.get("input_scaling", True)
        else None,
        keep_first_fp=_flag(cfg, "keep_first_fp"),
        keep_last_fp=_flag(cfg, "keep_last_fp"),
        quantize_data_input=_flag(cfg, "quantize_data_input"),
        activation=cfg.get("activation"),
        fold_bn=_flag(cfg, "fold_bn"),
        init=cfg.get("init"),
        weight_init=_quantizer(cfg.get("weight_init"), "method.weight_init"),
        block_order=_block_order(cfg.get("block_order", "model")),
        batch_norm=_batch_norm(cfg.get("batch_norm") or "standard"),
        callbacks=callbacks,
    )


BATCH_NORMS = ("standard", "shift")


def _flag(cfg: DictConfig, key: str) -> bool:
    value = cfg.get(key, False)
    if not isinstance(value, bool):
        raise UserError(f"method.{key}={value!r} is invalid; valid: true, false")
    return value
OUTPUT_QUANTIZER_LAYERS = ("all", "last")


def _output_quantizer_layers(value) -> str:
    if value not in OUTPUT_QUANTIZER_LAYERS:
        raise UserError(f"method.output_quantizer_layers={value!r} is invalid; "
                        f"valid: {', '.join(OUTPUT_QUANTIZER_LAYERS)}")
    return value


def _batch_norm(value) -> str:
    if value not in BATCH_NORMS:
        raise UserError(f"method.batch_norm={value!r} is invalid; valid: {', '.join(BATCH_NORMS)}")
    return value


def _block_order(value) -> str:
    if value not in BLOCK_ORDERS:
        raise UserError(f"method.block_order={value!r} is invalid; valid: {', '.join(BLOCK_ORDERS)}")
    return value




def load_init_weights(model: torch.nn.Module, run_dir: str) -> None:
    state = load_checkpoint(Path(run_dir) / "checkpoints" / "last.pt")["model"]
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"method.init={run_dir!r}: its weights do not fit this model "
                        f"({str(e).splitlines()[1].strip() if len(str(e).splitlines()) > 1 else e}); "
                        "start from a full-precision run of the same model") from None
