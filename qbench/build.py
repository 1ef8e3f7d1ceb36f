"""One builder: a job's config -> its method, model and layer report. Training, the checks before a launch
(qbench.config), ``summary``, ``bench``, ``ptq`` and ``export`` all build through here.

    built = build(cfg)          # build_method(cfg.method); the model for cfg.dataset's inputs; method.apply
    built.method, built.model, built.layers
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from omegaconf import DictConfig, OmegaConf

from qbench.errors import UserError
from qbench.methods import Method, build_method
from qbench.methods.policy import LayerRow
from qbench.models import create_model

# keys of a model config that name it rather than set it
MODEL_IDENTITY = ("name", "summary")


@dataclass
class Built:
    method: Method
    model: torch.nn.Module
    layers: list[LayerRow]


def resolve_device(name: str) -> torch.device:
    """trainer.device (auto, cpu, cuda, cuda:N) as a device this machine has."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"trainer.device={name} but no CUDA device is available; use trainer.device=auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise UserError(f"trainer.device={name} but this machine has {n} CUDA device{'s' * (n != 1)}; valid: "
                        + ", ".join(f"cuda:{i}" for i in range(n)))
    return dev


def model_kwargs(cfg: DictConfig) -> dict:
    """The model's constructor arguments: cfg.model without the keys that name it."""
    return {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in MODEL_IDENTITY}


def build_model(cfg: DictConfig, method: Method | None = None) -> torch.nn.Module:
    """The float model of ``cfg.model`` for ``cfg.dataset``'s inputs, with ``method``'s activation if it sets
    one. A constructor that refuses its settings is the user's mistake: one line."""
    kwargs = model_kwargs(cfg)
    if method is not None and method.activation:
        kwargs["activation"] = method.activation
    d = cfg.dataset
    try:
        return create_model(cfg.model.name, d.in_channels, d.num_classes, d.image_size, **kwargs)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 -- a wrong type or value reaching the constructor
        text = " ".join(str(e).split())[:300] or type(e).__name__
        raise UserError(f"model {cfg.model.name!r} cannot be built from its settings: {text}") from None


def build(cfg: DictConfig, method: Method | None = None) -> Built:
    """The model of ``cfg`` quantized by its method (built from ``cfg.method`` unless given): the method's
    init weights, layer policy and callbacks' set-up applied. Global random draws, in order: the method's
    quantizer probes, then the model's initialization."""
    method = method if method is not None else build_method(cfg.method)
    model = build_model(cfg, method)
    return Built(method, model, method.apply(model))
