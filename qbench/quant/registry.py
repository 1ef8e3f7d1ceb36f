"""Quantizers by alias, so a config can say ``weight_quantizer: ste_sign``. Each alias is declared beside its
quantizer (``qbench.quant.facts.quantizer``); importing the modules below registers them."""
from __future__ import annotations

import functools
from typing import Callable

from qbench.quant import binary, dorefa, halfwave, scaled  # noqa: F401  (registration of their aliases)
from qbench.quant.facts import ALIASES

QUANTIZERS: dict[str, Callable] = ALIASES


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
