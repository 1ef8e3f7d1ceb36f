"""Each quantizer against its paper's equation on small tensors worked by hand, forward and backward."""
import pytest
import torch

from qbench import quant
from qbench.quant import binaryconnect, get_quantizer, hard_sigmoid, sign, ste_sign, stochastic_binarize

X = torch.tensor([-1.5, -1.0, -0.3, 0.0, 0.4, 1.0, 2.0])
G = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])  # upstream gradient, distinct per element


def grad_of(fn, x=X, g=G):  # noqa: D103
    x = x.clone().requires_grad_(True)
    fn(x).backward(g)
    return x.grad


def test_sign_is_bnn_eq1_and_never_zero():
    assert torch.equal(sign(X), torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    assert torch.equal(sign(torch.tensor([0.0, -0.0])), torch.tensor([1.0, 1.0]))  # -0.0 >= 0 too


def test_hard_sigmoid_bc_eq3():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    assert torch.equal(hard_sigmoid(x), torch.tensor([0.0, 0.0, 0.5, 0.75, 1.0, 1.0]))


def test_ste_sign_forward_and_saturated_gradient():
    assert torch.equal(ste_sign(X), torch.tensor([-1.0, -1, -1, 1, 1, 1, 1]))
    # BNN eq. 4: g_r = g_q * 1[|r| <= 1]; |x| = 1 is inside the clip
    assert torch.equal(grad_of(ste_sign), torch.tensor([0.0, 2, 3, 4, 5, 6, 0]))
    assert torch.equal(grad_of(lambda x: ste_sign(x, clip=0.5)), torch.tensor([0.0, 0, 3, 4, 5, 0, 0]))


def test_bnn_and_binaryconnect_as_their_theano_code_computes_them():
    """BinaryNet's Theano code (Train-time/binary_net.py at d7d45ae) and BinaryConnect's (binary_connect.py at
    2f97a8f), transcribed: an activation is 2 round3(hard_sigmoid(x)) - 1 with round3's gradient the identity
    and Theano's clip gradient 1 where mn <= x <= mx (bounds included), so d/dx = 1[|x| <= 1]; C's round sends
    hard_sigmoid(0) = 0.5 up, so 0 binarizes to +1. A weight is +-H from round(hard_sigmoid(W / H)) with the
    gradient taken with respect to W_b itself (compute_grads: theano.grad(loss, wrt=layer.Wb)): the identity."""
    def theano_activation(x):
        hs = ((x + 1) / 2).clamp(0, 1)  # clamp's gradient is 0 at the bounds, Theano's clip is 1: add it back
        hs = hs + ((x.abs() == 1).to(x.dtype) * (x - x.detach()) / 2)
        return 2 * (torch.floor(hs + 0.5).detach() + hs - hs.detach()) - 1
    assert torch.equal(ste_sign(X), theano_activation(X))
    assert torch.equal(grad_of(ste_sign), grad_of(theano_activation))
    assert torch.equal(grad_of(theano_activation), torch.tensor([0.0, 2, 3, 4, 5, 6, 0]))  # 1 at |x| = 1
    w = torch.tensor([-0.7, -0.0, 0.0, 0.2, 1.0])
    assert torch.equal(binaryconnect(w, "det"), torch.where(torch.floor((w + 1) / 2 + 0.5) > 0, 1.0, -1.0))
    assert torch.equal(grad_of(lambda x: binaryconnect(x, "det"), w, torch.ones(5)), torch.ones(5))


def test_bnn_as_its_torch7_code_computes_it():
    """BNN's Torch7 code (itayhubara/BinaryNet at c23b862): a hidden layer ends in nn.HardTanh, whose gradient is
    0 where |y| >= 1 (THNN's bounds excluded), then BinarizedNeurons (Models/BinarizedNeurons.lua: forward
    sign((y + 1)/2 - 0.5), gradient copied through unchanged). qbench's bnn puts its hardtanh activation before
    the next layer's ste_sign: the same forward (but at y = 0 exactly, where torch.sign gives 0 and qbench +1)
    and the same gradient, 1[|y| < 1]. Weights (Models/BinaryLinear.lua): round(clamp((w + 1)/2, 0, 1)) * 2 - 1
    forward, nn.Linear's weight gradient backward: sign with 0 to +1, and the identity."""
    y = X[X != 0]
    torch7 = lambda v: torch.nn.functional.hardtanh(v) + (torch.sign(v) - torch.nn.functional.hardtanh(v)).detach()
    ours = lambda v: ste_sign(torch.nn.functional.hardtanh(v))
    assert torch.equal(ours(y), torch7(y))
    assert torch.equal(grad_of(ours, y, G[: len(y)]), grad_of(torch7, y, G[: len(y)]))
    assert torch.equal(grad_of(ours, y, torch.ones(len(y))), torch.tensor([0.0, 0, 1, 1, 0, 0]))  # |y| = 1: 0
    w = torch.tensor([-0.7, -0.0, 0.0, 0.2, 1.0])
    c_round = lambda v: torch.floor(v + 0.5)  # Torch7's round is C's: halves away from zero (all v >= 0 here)
    assert torch.equal(binaryconnect(w, "det"), c_round(((w + 1) / 2).clamp(0, 1)) * 2 - 1)


def test_ste_forward_is_bit_exact():
    x = torch.randn(10000) * 0.7
    y = ste_sign(x.requires_grad_(True))
    assert set(y.detach().unique().tolist()) == {-1.0, 1.0}


def test_binaryconnect_det_identity_gradient():
    assert torch.equal(binaryconnect(X, "det"), sign(X))
    assert torch.equal(grad_of(lambda x: binaryconnect(x, "det")), G)  # BC Algorithm 1: dC/dw = dC/dw_b


def test_binaryconnect_stoch_values_gradient_and_probability():
    gen = torch.Generator().manual_seed(0)
    wb = binaryconnect(X, "stoch", generator=gen)
    assert set(wb.tolist()) <= {-1.0, 1.0}
    assert torch.equal(grad_of(lambda x: binaryconnect(x, "stoch")), G)
    # p(+1) = hard_sigmoid(w): 0 at w <= -1, 1 at w >= 1, 0.75 at w = 0.5
    w = torch.tensor([-1.0, -3.0, 1.0, 2.0, 0.5]).repeat(20000, 1)
    frac = (stochastic_binarize(w, torch.Generator().manual_seed(1)) > 0).float().mean(0)
    assert frac[0] == 0 and frac[1] == 0 and frac[2] == 1 and frac[3] == 1
    assert abs(frac[4].item() - 0.75) < 0.01


def test_binaryconnect_stoch_tests_with_the_real_valued_weights():
    # BC section 2.6 / binary_connect.py: stochastic BinaryConnect's test-time weights are w itself
    assert torch.equal(binaryconnect(X, "stoch", training=False), X)
    assert torch.equal(binaryconnect(X, "det", training=False), sign(X))  # det: the binary weights


def test_layer_tells_a_training_aware_quantizer_its_mode():
    from qbench.nn.layers import QLinear

    layer = QLinear(3, 2, bias=False, weight_quantizer=get_quantizer("binaryconnect", mode="stoch"))
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.2, -0.5, 0.9], [-0.1, 0.3, -0.7]]))
    x = torch.tensor([[1.0, 2.0, 3.0]])
    layer.eval()
    assert torch.allclose(layer(x), x @ layer.weight.t())  # the real-valued weights
    layer.train()
    torch.manual_seed(0)
    assert set(layer.quantized_weight().unique().tolist()) <= {-1.0, 1.0}


def test_bnn_stochastic_activations_eq2_at_train_time_sign_at_test_time():
    # +1 with probability hard_sigmoid(x): 0 for x <= -1, 0.25 at -0.5, 0.5 at 0, 0.9 at 0.8, 1 for x >= 1
    x = torch.tensor([-1.0, -0.5, 0.0, 0.8, 1.0]).repeat(40000, 1)
    torch.manual_seed(0)
    frac = (quant.binarize(x, stochastic=True) > 0).float().mean(0)
    assert frac[0] == 0 and frac[4] == 1
    assert torch.allclose(frac[1:4], torch.tensor([0.25, 0.5, 0.9]), atol=0.01)
    assert torch.equal(quant.binarize(X, stochastic=True, training=False), sign(X))
    # the STE is BNN eq. 4's in both modes: 1[|x| <= 1]
    assert torch.equal(grad_of(lambda x: quant.binarize(x, stochastic=True)), torch.tensor([0.0, 2, 3, 4, 5, 6, 0]))
    with pytest.raises(ValueError, match="ste='clip'"):
        quant.binarize(X, ste="approxsign", stochastic=True)


def test_stochastic_binarize_reproducible_with_generator():
    w = torch.randn(1000)
    a = stochastic_binarize(w, torch.Generator().manual_seed(5))
    b = stochastic_binarize(w, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_binaryconnect_bad_mode():
    with pytest.raises(ValueError, match="'det' or 'stoch'"):
        binaryconnect(X, "sometimes")


def test_aliases():
    assert get_quantizer(None) is None
    assert get_quantizer("ste_sign") is quant.ste_sign
    assert torch.equal(grad_of(get_quantizer("ste_sign", clip=0.5)), torch.tensor([0.0, 0, 3, 4, 5, 0, 0]))
    with pytest.raises(ValueError, match="valid: approx_sign, binarize_scaled, binaryconnect, dorefa_activation"):
        get_quantizer("xnor_magic")


def test_approx_sign_gradient_eq3_by_hand():
    from qbench.quant import approx_sign
    x = torch.tensor([-1.5, -0.5, 0.0, 0.25, 1.0])
    assert torch.equal(approx_sign(x), torch.tensor([-1.0, -1, 1, 1, 1]))
    # 2 - 2|x| inside [-1, 1]: [0, 1, 2, 1.5, 0]
    assert torch.allclose(grad_of(approx_sign, x, torch.ones(5)), torch.tensor([0.0, 1.0, 2.0, 1.5, 0.0]))
    # clip c = 2: (2/c)(1 - |x|/c) = 1 - |x|/2
    assert torch.allclose(grad_of(lambda v: approx_sign(v, 2.0), x, torch.ones(5)),
                          torch.tensor([0.25, 0.75, 1.0, 0.875, 0.5]))


def test_binarize_choices():
    from qbench.quant import binarize
    w = torch.tensor([[0.5, -1.5], [0.2, -0.2]])
    assert torch.equal(binarize(w), sign(w))
    assert torch.allclose(binarize(w, scaling="channel"), torch.tensor([[1.0, -1.0], [0.2, -0.2]]))
    assert torch.equal(grad_of(lambda v: binarize(v, clip=1.3), X), torch.tensor([0.0, 2, 3, 4, 5, 6, 0]))
    for kwargs, msg in (({"ste": "tanh"}, "ste must be"), ({"scaling": "layer"}, "scaling must be"),
                        ({"clip": 0.0}, "clip_threshold must be > 0")):
        with pytest.raises(ValueError, match=msg):
            binarize(w, **kwargs)
