"""Whitepaper QAT pieces: scale/zero-point from a range, observers, quantization delay."""
import pytest
import torch

from qbench.methods import QuantDelay
from qbench.nn import FakeQuant
from qbench.quant import affine_qparams, fake_quant_affine, stochastic_round


def test_affine_qparams_asymmetric_by_hand():
    # range [-1, 3] on 8 bits: s = 4 / 255, z = round(1 / s) = round(63.75) = 64
    s, z, qmin, qmax = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 8, symmetric=False)
    assert (qmin, qmax) == (0, 255) and abs(s.item() - 4 / 255) < 1e-9 and z.item() == 64
    # a range not containing 0 is widened to contain it: [0.5, 2] -> [0, 2]
    s, z, _, _ = affine_qparams(torch.tensor(0.5), torch.tensor(2.0), 4, symmetric=False)
    assert abs(s.item() - 2 / 15) < 1e-7 and z.item() == 0


def test_affine_qparams_symmetric_by_hand():
    s, z, qmin, qmax = affine_qparams(torch.tensor(-0.5), torch.tensor(2.54), 8, symmetric=True)
    assert (qmin, qmax) == (-127, 127) and abs(s.item() - 2.54 / 127) < 1e-7 and z.item() == 0
    s, _, _, _ = affine_qparams(torch.tensor(0.0), torch.tensor(0.0), 8, symmetric=True)
    assert s.item() == 1.0  # an all-zero range must not divide by zero
    with pytest.raises(ValueError, match="integer from 2 to 32, got 1"):
        affine_qparams(torch.tensor(0.0), torch.tensor(1.0), 1, symmetric=True)


def test_minmax_fake_quant_uses_the_tensors_own_range():
    x = torch.tensor([-1.0, 0.0, 0.3, 3.0])
    fq = FakeQuant(bits=8, observer="minmax")
    s, z, qmin, qmax = affine_qparams(torch.tensor(-1.0), torch.tensor(3.0), 8, False)
    assert torch.equal(fq(x), fake_quant_affine(x, s, z, qmin, qmax))
    assert fq(x)[1] == 0.0  # zero is exactly representable


def test_per_channel_weight_ranges():
    w = torch.tensor([[1.0, -1.0], [0.1, -0.05]])
    q = FakeQuant(bits=4, symmetric=True, per_channel=True)(w)
    assert torch.allclose(q[0], w[0]) and abs(q[1, 0].item() - 0.1) < 1e-7  # each row's max is on its grid


def test_ema_observer_by_hand_and_frozen_in_eval():
    fq = FakeQuant(bits=8, observer="ema", ema_decay=0.9)
    fq.train()
    fq(torch.tensor([-1.0, 1.0]))  # first batch sets the range: [-1, 1]
    fq(torch.tensor([-3.0, 11.0]))  # 0.9 * old + 0.1 * new: [-1.2, 2.0]
    assert torch.allclose(fq.min_val, torch.tensor(-1.2)) and torch.allclose(fq.max_val, torch.tensor(2.0))
    fq.eval()
    fq(torch.tensor([-100.0, 100.0]))
    assert torch.allclose(fq.max_val, torch.tensor(2.0))  # evaluation never moves the range
    # clamped to the top of the learned grid: s = 3.2 / 255, z = round(1.2 / s) = 96, top = (255 - 96) s
    assert fq(torch.tensor([5.0])).item() == pytest.approx(159 * 3.2 / 255, abs=1e-6)


def test_ema_range_survives_a_checkpoint():
    a = FakeQuant(observer="ema")
    a(torch.tensor([-2.0, 5.0]))
    b = FakeQuant(observer="ema")
    b.load_state_dict(a.state_dict())
    assert b.max_val.item() == 5.0


def test_stochastic_round_is_unbiased():
    x = torch.full((20000,), 2.3)
    r = stochastic_round(x, torch.Generator().manual_seed(0))
    assert set(r.unique().tolist()) == {2.0, 3.0} and abs(r.mean().item() - 2.3) < 0.01


def test_quant_delay_switches_fake_quant_on():
    class T:
        model = torch.nn.Sequential(FakeQuant(), torch.nn.Linear(2, 2))
    cb = QuantDelay(epochs=2)
    cb.on_epoch_start(T, 0)
    assert not T.model[0].enabled and cb.on_epoch_end(T, 0) == {"quantized": 0.0}
    cb.on_epoch_start(T, 2)
    assert T.model[0].enabled
    x = torch.tensor([0.123, 0.5])
    T.model[0].enabled = False
    assert torch.equal(T.model[0](x), x)
    with pytest.raises(ValueError, match="quant_delay must be"):
        QuantDelay(-1)


def test_folded_conv_bn_is_exactly_batch_norm_without_quantizers():
    from qbench.nn import QConv2d
    from qbench.nn.bn_fold import FoldedConvBN
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    ref_conv, ref_bn = copy_of(conv), copy_of(bn)
    folded = FoldedConvBN(QConv2d.from_float(conv), bn)
    x = torch.randn(8, 3, 6, 6)
    folded.train(), ref_bn.train()
    assert torch.allclose(folded(x), ref_bn(ref_conv(x)), atol=1e-5)  # batch statistics, corrected
    assert torch.allclose(bn.running_mean, ref_bn.running_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, ref_bn.running_var, atol=1e-5)
    folded.eval(), ref_bn.eval()
    assert torch.allclose(folded(x), ref_bn(ref_conv(x)), atol=1e-5)  # moving statistics
    folded.train()
    folded.frozen = True
    before = bn.running_mean.clone()
    assert torch.allclose(folded(x), ref_bn(ref_conv(x)), atol=1e-5) and torch.equal(bn.running_mean, before)


def test_folded_conv_bn_backward_treats_the_batch_statistics_as_constants():
    """Before freezing, the gradient is batch norm's with mu_B and sigma_B held fixed (TensorFlow's fold over a
    fused batch norm): dy/dx = gamma / sigma_B * conv^T(g), with no mean or variance terms."""
    from qbench.nn import QConv2d
    from qbench.nn.bn_fold import FoldedConvBN
    torch.manual_seed(1)
    conv, bn = torch.nn.Conv2d(3, 4, 3, padding=1, bias=False), torch.nn.BatchNorm2d(4)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.running_var.uniform_(0.5, 2)
    ref_conv = copy_of(conv)
    folded = FoldedConvBN(QConv2d.from_float(conv), bn).train()
    x = torch.randn(8, 3, 6, 6, requires_grad=True)
    g = torch.randn(8, 4, 6, 6)
    folded(x).backward(g)
    xr = x.detach().clone().requires_grad_(True)
    z = ref_conv(xr)
    mu, var = z.mean((0, 2, 3)).detach(), z.var((0, 2, 3), unbiased=False).detach()
    shape = (1, -1, 1, 1)
    y = bn.weight.detach().view(shape) * (z - mu.view(shape)) / (var + bn.eps).sqrt().view(shape)
    y.backward(g)
    assert torch.allclose(x.grad, xr.grad, atol=1e-5)
    assert torch.allclose(conv.weight.grad, ref_conv.weight.grad, atol=1e-4)


def copy_of(m):
    import copy
    return copy.deepcopy(m)


def test_folded_weights_are_what_gets_quantized():
    from qbench.nn import QConv2d
    from qbench.nn.bn_fold import FoldedConvBN
    torch.manual_seed(0)
    conv, bn = torch.nn.Conv2d(2, 3, 1, bias=False), torch.nn.BatchNorm2d(3)
    seen = []
    q = QConv2d.from_float(conv, weight_quantizer=lambda w: seen.append(w.detach().clone()) or w)
    folded = FoldedConvBN(q, bn).eval()
    folded(torch.randn(1, 2, 2, 2))
    sigma = torch.sqrt(bn.running_var + bn.eps)
    assert torch.allclose(seen[0], conv.weight.detach() * (bn.weight.detach() / sigma).view(-1, 1, 1, 1))


def test_conv_bn_pairs_per_model():
    from qbench.models import create_model
    from qbench.nn.bn_fold import conv_bn_pairs
    assert len(conv_bn_pairs(create_model("resnet20", 3, 10, 32))) == 19  # stem + 18 block convs (option A)
    assert len(conv_bn_pairs(create_model("resnet18", 3, 10, 32))) == 20  # stem + 16 + 3 projections
    assert len(conv_bn_pairs(create_model("vgg9", 3, 10, 32))) == 6
    assert len(conv_bn_pairs(create_model("vgg_small", 3, 10, 32, width=0.125))) == 3  # pool sits between the rest
    assert conv_bn_pairs(create_model("mlp", 1, 10, 28, hidden=[8])) == []


def test_qat_with_folding_trains_a_step():
    from qbench.config import compose
    from qbench.methods import build_method
    from qbench.models import create_model
    from qbench.nn.bn_fold import FoldedConvBN
    cfg = compose(["method=qat", "method.fold_bn=true", "method.w_bits=4"])
    method = build_method(cfg.method)
    net = create_model("resnet20", 3, 10, 32)
    rows = method.apply(net)
    assert sum(isinstance(m, FoldedConvBN) for m in net.modules()) == 19
    assert sum("folded BN" in r.kind for r in rows) == 19
    net(torch.randn(4, 3, 32, 32)).sum().backward()
    assert net.stem[0].conv.weight.grad is not None and net.stem[1].__class__.__name__ == "Identity"
