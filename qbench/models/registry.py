"""Model registry. Models are built from plain nn.Conv2d / nn.Linear; a method's layer policy quantizes
them afterwards, so one definition serves every method."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from qbench.errors import UserError, choices


@dataclass
class ModelEntry:
    fn: Callable[..., nn.Module]
    max_image_size: int | None  # None: any input size; else the largest input side the net is defined for


MODELS: dict[str, ModelEntry] = {}


def register_model(name: str, max_image_size: int | None = None):
    def deco(fn):
        MODELS[name] = ModelEntry(fn, max_image_size)
        return fn
    return deco


def create_model(name: str, in_channels: int, num_classes: int, image_size: int, **kwargs) -> nn.Module:
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}; valid: {choices(MODELS)}")
    entry = MODELS[name]
    if entry.max_image_size is not None and image_size > entry.max_image_size:
        raise UserError(f"model {name!r} is defined for inputs of at most {entry.max_image_size}x"
                        f"{entry.max_image_size} pixels, the dataset's are {image_size}x{image_size}; "
                        f"use a model for large inputs (resnet18)")
    return entry.fn(in_channels=in_channels, num_classes=num_classes, image_size=image_size, **kwargs)


def batch_norm_gamma_init(how: str | None) -> Callable[[nn.Module], nn.Module]:
    """What a model applies to each batch norm it builds: None or "ones" keeps PyTorch's gamma = 1; "uniform"
    draws gamma from U(0, 1), as Torch7's ``nn.BatchNormalization:reset`` did when BNN's Torch7 code was
    written (its output batch norm). Checks ``how`` before anything is built."""
    if how not in (None, "ones", "uniform"):
        raise ValueError(f"bn_gamma_init must be ones, uniform or null, got {how!r}")

    def init(norm: nn.Module) -> nn.Module:
        if how == "uniform":
            nn.init.uniform_(norm.weight, 0.0, 1.0)
        return norm
    return init


def activation(name: str) -> nn.Module:
    """The nonlinearity between layers. BNN uses hardtanh: its sign STE then sees values in [-1, 1]; DoReFa's
    AlexNet clips to [0, 1] (clip01); Darknet's nets use a leaky ReLU of slope 0.1 (leaky)."""
    table = {"relu": nn.ReLU, "hardtanh": nn.Hardtanh, "identity": nn.Identity,
             "clip01": lambda: nn.Hardtanh(0.0, 1.0), "leaky": lambda: nn.LeakyReLU(0.1)}
    if name not in table:
        raise UserError(f"unknown activation {name!r}; valid: {choices(table)}")
    return table[name]()
