"""Short aliases for quantizers, so a config can say ``weight_quantizer: ste_sign``."""
from __future__ import annotations

import functools
from typing import Callable

from qbench.quant import binary, dorefa, halfwave, scaled

QUANTIZERS: dict[str, Callable] = {
    "sign": binary.sign,
    "ste_sign": binary.ste_sign,
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
