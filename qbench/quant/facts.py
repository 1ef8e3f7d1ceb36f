"""A quantizer's own facts, declared where it is defined (as Larq keeps ``precision`` on its quantizers):

    @quantizer(alias="ste_sign", bits=1, exact_in_bf16=True)
    def ste_sign(x, clip=1.0): ...

``bits``: bits per value of what it produces (1 binary, 2 ternary; a multi-bit quantizer gives a function of its
arguments, e.g. ``lambda a: a["k"]``). ``exact_in_bf16``: every value it produces is a small integer times a power
of two, so bfloat16 (8 significant bits) holds it exactly and the layers may run it under autocast (a scale such
as mean|W| is not). ``alias``: the short name a config uses (``weight_quantizer: ste_sign``).
A quantizer that is a module (FakeQuant, INQ's FrozenWeights) carries ``bits`` / ``exact_in_bf16`` attributes.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

ALIASES: dict[str, Callable] = {}


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
            if alias in ALIASES and ALIASES[alias] is not fn:
                raise ValueError(f"quantizer alias {alias!r} is already taken by {ALIASES[alias].__name__}")
            ALIASES[alias] = fn
        return fn
    return register


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
