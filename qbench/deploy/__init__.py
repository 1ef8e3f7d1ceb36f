"""Deployed low-bit models: load a qbench export and run it for real, without qbench's training code.

    from qbench.deploy import load
    model = load("runs/.../export")          # checks the tensor file's hash against the manifest
    logits = model(images)                   # uint8 (0..255) or float in [0, 1], N x C x H x W

Layers whose weights and inputs are both +-1 compute with xnor and popcount on bit-packed operands
(``qbench.deploy.kernel``); every other layer dequantizes its stored codes once, at load, and runs the float
operation the training-time model runs on the same values. The format is in ``FORMAT.md`` beside this file.
This package imports torch, safetensors and the standard library only.
"""
from qbench.deploy.engine import DeployError, DeployedModel, load

__all__ = ["DeployError", "DeployedModel", "load"]
