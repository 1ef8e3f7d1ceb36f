"""Each quantizer declares its facts where it is defined (qbench.quant.facts.quantizer): its bits, whether bf16
holds its values exactly, its alias. These tests check the declarations against what the quantizers produce."""
import functools

import pytest
import torch

from qbench import quant
from qbench.nn import FakeQuant
from qbench.nn.learned_scale import LearnedScaleBinarize
from qbench.nn.partial import FrozenWeights, Gated, StochasticQuantizer
from qbench.quant.facts import QUANTIZERS, exact_in_bf16, get_quantizer, quantizer, quantizer_bits

W = torch.linspace(-1.7, 1.7, 64).view(8, 8)


def _levels(q) -> int:
    """The most distinct values in one output channel (scaled quantizers have one scale per channel)."""
    v = q(W.clone()).detach()
    return max(torch.unique(row).numel() for row in v)


@pytest.mark.parametrize("q,bits", [
    (quant.sign, 1), (quant.ste_sign, 1), (quant.approx_sign, 1), (quant.binaryconnect, 1),
    (quant.stochastic_binarize, 1), (quant.binarize, 1), (quant.binarize_scaled, 1), (quant.sq_binary, 1),
    (quant.twn, 2), (quant.sq_ternary, 2),
    (functools.partial(quant.binary_relax, lam=float("inf")), 1),
    (functools.partial(quant.binary_relax, lam=float("inf"), projection="ternary"), 2),
    (quant.tsq_weight, 2), (functools.partial(quant.tsq_weight, levels="binary"), 1),
    (functools.partial(quant.dorefa_weight, k=3), 3), (functools.partial(quant.dorefa_activation, k=2), 2),
    (functools.partial(quant.hwgq, k=2), 2), (quant.hwgq, 2),  # hwgq's default k=2 read from its signature
    (functools.partial(quant.wage_weight, bits=2), 2), (functools.partial(quant.wage_activation, bits=8), 8),
])
def test_declared_bits_hold_the_values_the_quantizer_produces(q, bits):
    assert quantizer_bits(q) == bits
    assert _levels(q) <= 2 ** bits


def test_undeclared_and_module_quantizers():
    assert quantizer_bits(None) == 32 and quantizer_bits(lambda w: w) == 32
    assert quantizer_bits(FakeQuant(4)) == 4 and quantizer_bits(FrozenWeights(5)) == 5
    assert quantizer_bits(StochasticQuantizer(quant.sq_ternary)) == 2  # wrappers: what they quantize to
    assert quantizer_bits(Gated(functools.partial(quant.tsq_weight, levels="binary"))) == 1
    assert quantizer_bits(LearnedScaleBinarize()) == 1  # was 32 when facts were read from names


@pytest.mark.parametrize("q,exact", [
    (quant.ste_sign, True), (quant.binaryconnect, True), (functools.partial(quant.binaryconnect, mode="stoch"), False),
    (quant.binarize, True), (functools.partial(quant.binarize, scaling="channel"), False),
    (quant.binarize_scaled, False), (quant.twn, False), (functools.partial(quant.wage_weight, bits=2), True),
    (None, True), (FrozenWeights(5), True),
])
def test_exact_in_bf16_is_declared_and_true(q, exact):
    assert exact_in_bf16(q) is exact
    if exact and q is not None and not isinstance(q, torch.nn.Module):
        v = q(W.clone()).detach()
        assert torch.equal(v.to(torch.bfloat16).float(), v)


def test_aliases_are_declared_beside_their_quantizers():
    assert quant.QUANTIZERS is QUANTIZERS and quant.get_quantizer is get_quantizer
    for alias, fn in QUANTIZERS.items():
        assert fn.facts.alias == alias
    assert set(QUANTIZERS) >= {"sign", "ste_sign", "approx_sign", "binaryconnect", "binarize_scaled", "twn",
                               "dorefa_weight", "dorefa_activation", "hwgq"}
    with pytest.raises(ValueError, match="already taken by ste_sign"):
        quantizer(bits=1, alias="ste_sign")(lambda w: w)
