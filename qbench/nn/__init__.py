"""Quantized layers built from ``qbench.quant`` functions (Larq-style: kernel and input quantizers)."""
from qbench.nn.fake_quant import FakeQuant, FixedPoint
from qbench.nn.learned_scale import LearnedScaleBinarize
from qbench.nn.layers import QConv2d, QLinear, describe_quantizer, is_quantized
from qbench.nn.partial import FrozenWeights, Gated, StochasticQuantizer
from qbench.nn.shift_bn import ShiftBatchNorm, shift_batch_norms

__all__ = ["FakeQuant", "FixedPoint", "FrozenWeights", "Gated", "LearnedScaleBinarize", "StochasticQuantizer", "QConv2d", "QLinear", "ShiftBatchNorm",
           "describe_quantizer", "is_quantized", "shift_batch_norms"]
