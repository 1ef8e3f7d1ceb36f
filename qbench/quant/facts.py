"""A quantizer's own facts, declared where it is defined (as Larq keeps ``precision`` on its quantizers):

    @quantizer(alias="ste_sign", bits=1, exact_in_bf16=True)
    def ste_sign(x, clip=1.0): ...

``bits``: bits per value of what it produces (1 binary, 2 ternary; a multi-bit quantizer gives a function of its
arguments, e.g. ``lambda a: a["k"]``). ``exact_in_bf16``: every value it produces is a small integer times a power
of two, so bfloat16 (8 significant bits) holds it exactly and the layers may run it under autocast (a scale such
as mean|W| is not). ``alias``: the short name a config uses (``weight_quantizer: ste_sign``), registered in
``QUANTIZERS`` (filled as ``qbench.quant`` imports its modules) and looked up by ``get_quantizer``.
A quantizer that is a module (FakeQuant, INQ's FrozenWeights) carries ``bits`` / ``exact_in_bf16`` attributes.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

QUANTIZERS: dict[str, Callable] = {}


@dataclass(frozen=True)
class Facts:
    bits: int | Callable[[dict], int] = 32
    exact_in_bf16: bool | Callable[[dict], bool] = False
    alias: str | None = None


def quantizer(*, bits, exact_in_bf16=False, alias: str | None = None):
    """Declare a quantizer function's facts (and its alias, if a config may name it)."""
    def register(fn: Callable) -> Callable:
        fn.facts = Facts(bits, exact_in_bf16, alias)
        if alias is not None:
            if alias in QUANTIZERS and QUANTIZERS[alias] is not fn:
                raise ValueError(f"quantizer alias {alias!r} is already taken by {QUANTIZERS[alias].__name__}")
            QUANTIZERS[alias] = fn
        return fn
    return register


def get_quantizer(spec, **kwargs) -> Callable | None:
    """A quantizer from an alias, a callable, or None (no quantization); keyword arguments are bound with
    functools.partial (``get_quantizer("ste_sign", clip=1.3)``)."""
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


def _fact(q, name: str):
    """A fact of ``q`` (a function or a partial of one), a function-valued fact evaluated on the arguments it
    is called with (its defaults, then the partial's keywords); None if ``q`` declares no facts."""
    fn = q.func if isinstance(q, functools.partial) else q
    facts = getattr(fn, "facts", None)
    if not isinstance(facts, Facts):
        return None
    value = getattr(facts, name)
    if not callable(value):
        return value
    try:
        args = {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not p.empty}
    except (TypeError, ValueError):
        args = {}
    return value({**args, **(q.keywords if isinstance(q, functools.partial) else {})})


def quantizer_bits(q) -> int:
    """Bits per value of what ``q`` produces: 32 for None (full precision) and for anything not declared."""
    if q is None:
        return 32
    if hasattr(q, "bits"):  # FakeQuant, INQ's FrozenWeights, the learned-scale binarizer
        return int(q.bits)
    if hasattr(q, "quantizer"):  # SQ's hybrid weight, TSQ's gated one: the bits of what it quantizes to
        return quantizer_bits(q.quantizer)
    bits = _fact(q, "bits")
    return 32 if bits is None else int(bits)


def exact_in_bf16(q) -> bool:
    """True if bf16 autocast cannot change what ``q`` produces (None counts as exact: nothing is quantized).
    Used by the layers to keep the others in float32 under autocast."""
    if q is None:
        return True
    if hasattr(q, "exact_in_bf16"):  # FixedPoint, INQ's FrozenWeights
        return bool(q.exact_in_bf16)
    return bool(_fact(q, "exact_in_bf16"))
