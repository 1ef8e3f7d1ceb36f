"""Methods: which quantizers go where (declared in configs/method/*.yaml) plus, where a paper needs it,
callbacks that run its schedule. The trainer only ever sees a ``Method`` and its callbacks."""
from qbench.methods.base import Method, build_method
from qbench.methods.callbacks import (Callback, ClipWeights, FreezeBatchNorm, GlorotLRScale, Host, QuantDelay,
                                      XnorCodeGradScale, XnorCodeWeights)
from qbench.methods.binaryrelax import RelaxationSchedule
from qbench.methods.bottom_up import BottomUpSchedule
from qbench.methods.inq import IncrementalQuantization
from qbench.methods.policy import LayerRow, apply_layer_policy
from qbench.methods.sq import StochasticQuantization
from qbench.methods.tsq import TwoStepQuantization

__all__ = ["BottomUpSchedule", "Callback", "ClipWeights", "FreezeBatchNorm", "GlorotLRScale", "Host", "IncrementalQuantization", "LayerRow",
           "Method", "QuantDelay", "RelaxationSchedule", "StochasticQuantization", "TwoStepQuantization", "XnorCodeGradScale", "XnorCodeWeights",
           "apply_layer_policy", "build_method"]
