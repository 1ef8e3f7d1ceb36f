"""Short aliases for quantizers, so a config can say ``weight_quantizer: ste_sign``."""
from __future__ import annotations

import functools
from typing import Callable

from qbench.quant import binary, dorefa, halfwave, scaled

QUANTIZERS: dict[str, Callable] = {
    "sign": binary.sign,
    "ste_sign": binary.ste_sign,
    "approx_sign": binary.approx_sign,
    "stochastic_binarize": binary.stochastic_binarize,
    "binaryconnect": binary.binaryconnect,
    "binarize_scaled": scaled.binarize_scaled,
    "twn": scaled.twn,
    "xnor_activation_scale": scaled.xnor_activation_scale,
    "dorefa_weight": dorefa.dorefa_weight,
    "dorefa_activation": dorefa.dorefa_activation,
    "hwgq": halfwave.hwgq,
}


def get_quantizer(spec, **kwargs) -> Callable | None:
    """Resolve a quantizer from an alias, a callable, or None (= no quantization).

    Keyword arguments are bound with functools.partial (e.g. ``get_quantizer("ste_sign", clip=1.3)``).
    """
    if spec is None:
        return None
    if callable(spec):
        fn = spec
    elif isinstance(spec, str):
        if spec not in QUANTIZERS:
            raise ValueError(f"unknown quantizer {spec!r}; valid: {', '.join(sorted(QUANTIZERS))}")
        fn = QUANTIZERS[spec]
    else:
        raise TypeError(f"a quantizer is an alias, a callable or None, got {type(spec).__name__}")
    return functools.partial(fn, **kwargs) if kwargs else fn


# storage bits of each quantizer's values; multi-bit ones read their bit width from their arguments
ONE_BIT = {"sign", "ste_sign", "approx_sign", "binarize", "binaryconnect", "binarize_scaled", "stochastic_binarize",
           "sq_binary"}
TERNARY = {"twn", "sq_ternary"}
BIT_ARGUMENT = {"dorefa_weight": "k", "dorefa_activation": "k", "hwgq": "k", "dorefa_gradient_ste": "k",
                "wage_weight": "bits", "wage_activation": "bits"}


def quantizer_bits(q) -> int:
    """Bits per value of what ``q`` produces: 32 for None (full precision), 2 for ternary (TWN)."""
    if q is None:
        return 32
    if hasattr(q, "bits"):  # FakeQuant, INQ's FrozenWeights
        return int(q.bits)
    if hasattr(q, "quantizer"):  # SQ's hybrid weight: the bits of what it quantizes to
        return quantizer_bits(q.quantizer)
    kwargs = dict(q.keywords) if isinstance(q, functools.partial) else {}
    fn = q.func if isinstance(q, functools.partial) else q
    name = getattr(fn, "__name__", "")
    if name in ONE_BIT:
        return 1
    if name in TERNARY or (name == "binary_relax" and kwargs.get("projection") == "ternary"):
        return 2
    if name == "binary_relax":
        return 1
    if name == "tsq_weight":
        return 1 if kwargs.get("levels") == "binary" else 2
    if name in BIT_ARGUMENT:
        return int(kwargs.get(BIT_ARGUMENT[name], 2))
    return 32


# quantizers whose every output value is a small integer times a power of two (+-1, WAGE's k-bit grids, fixed
# point, powers of two), so bfloat16 (8 significant bits) holds it exactly; a scale like mean|W| is not
EXACT_IN_BF16 = {"sign", "ste_sign", "approx_sign", "binaryconnect", "stochastic_binarize", "wage_weight",
                 "wage_activation"}


def exact_in_bf16(q) -> bool:
    """True if bf16 autocast cannot change what ``q`` produces (None, float, counts as exact: nothing is
    quantized). Used by the layers to keep the others in float32 under autocast."""
    if q is None:
        return True
    if hasattr(q, "exact_in_bf16"):  # FixedPoint, INQ's FrozenWeights
        return bool(q.exact_in_bf16)
    kwargs = dict(q.keywords) if isinstance(q, functools.partial) else {}
    fn = q.func if isinstance(q, functools.partial) else q
    name = getattr(fn, "__name__", "")
    if name == "binarize":
        return kwargs.get("scaling", "none") == "none"
    if name == "binaryconnect":  # stochastic BinaryConnect tests with the real-valued weights
        return kwargs.get("mode", "det") != "stoch"
    return name in EXACT_IN_BF16
