"""Quantizers: small pure functions, each with its straight-through estimator (STE) beside it.

Nothing here knows about layers, models or training. Every function takes and returns tensors; the
gradient a function passes back *is* part of the paper's method and is documented next to the forward rule.
Quantizers are found by a short alias (``get_quantizer("ste_sign")``), as in Larq.
"""
from qbench.quant.binary import (
    approx_sign,
    binarize,
    binaryconnect,
    binaryconnect_init,
    hard_sigmoid,
    sign,
    ste_sign,
    stochastic_binarize,
)
from qbench.quant.dorefa import (
    dorefa_activation,
    dorefa_gradient,
    dorefa_gradient_ste,
    dorefa_weight,
    quantize_k,
)
from qbench.quant.facts import QUANTIZERS, get_quantizer
from qbench.quant.fixed_point import fixed_point, fraction_bits
from qbench.quant.halfwave import hwgq, hwgq_bins, hwgq_step, sparse_threshold
from qbench.quant.power_of_two import inq_exponents, power_of_two
from qbench.quant.relax import binary_relax
from qbench.quant.shift import ap2, ap2_scalar
from qbench.quant.scaled import binarize_learned_scale, binarize_scaled, ternarize, twn, xnor_activation_scale
from qbench.quant.ste import straight_through
from qbench.quant.two_step import tsq_auxiliary, tsq_init, tsq_least_squares, tsq_objective, tsq_weight
from qbench.quant.stochastic import quantization_error, quantization_probability, roulette_select, sq_binary, sq_ternary
from qbench.quant.wage import (wage_activation, wage_error, wage_gradient, wage_init, wage_quantize, wage_scale,
                               wage_weight)
from qbench.quant.uniform import affine_qparams, fake_quant_affine, stochastic_round

__all__ = [
    "QUANTIZERS", "affine_qparams", "ap2", "ap2_scalar", "approx_sign", "binarize", "binarize_learned_scale", "binarize_scaled", "binary_relax", "binaryconnect",
    "binaryconnect_init",
    "dorefa_activation", "dorefa_gradient", "dorefa_gradient_ste", "dorefa_weight", "fake_quant_affine", "fixed_point",
    "fraction_bits",
    "get_quantizer", "hard_sigmoid", "hwgq", "hwgq_bins", "hwgq_step", "inq_exponents", "power_of_two", "quantization_error",
    "quantization_probability", "quantize_k", "roulette_select", "sign", "sparse_threshold", "sq_binary", "sq_ternary", "ste_sign",
    "stochastic_binarize", "stochastic_round", "straight_through", "ternarize", "tsq_auxiliary", "tsq_init", "tsq_least_squares",
    "tsq_objective", "tsq_weight", "twn", "wage_activation",
    "wage_error", "wage_gradient", "wage_init", "wage_quantize", "wage_scale", "wage_weight", "xnor_activation_scale",
]
