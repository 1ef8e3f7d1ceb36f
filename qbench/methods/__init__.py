"""Methods: which quantizers go where (declared in configs/method/*.yaml) plus, where a paper needs it,
callbacks that run its schedule. The trainer only ever sees a ``Method`` and its callbacks."""
from qbench.methods.base import Method, build_method
from qbench.methods.callbacks import Callback, ClipWeights, FreezeBatchNorm, GlorotLRScale, QuantDelay
from qbench.methods.policy import LayerRow, apply_layer_policy

__all__ = ["Callback", "ClipWeights", "FreezeBatchNorm", "GlorotLRScale", "QuantDelay", "LayerRow", "Method", "apply_layer_policy", "build_method"]
