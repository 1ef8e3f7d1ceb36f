"""XNOR-Net/BWN, TWN, DoReFa and uniform affine quantizers against their equations, worked by hand."""
import math

import pytest
import torch

from qbench.quant import (binarize_learned_scale, binarize_scaled, dorefa_activation, dorefa_gradient, dorefa_gradient_ste,
                          dorefa_weight, fake_quant_affine, quantize_k, ternarize, twn)


def grad_of(fn, x, g=None):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.backward(torch.ones_like(y) if g is None else g)
    return x.grad


def close(a, b):
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=1e-6)


def test_binarize_scaled_eq6_forward_eq7_backward():
    w = torch.tensor([[0.5, -1.5], [0.2, -0.2]])  # two filters of n = 2; alpha = [1.0, 0.2]
    assert close(binarize_scaled(w), [[1.0, -1.0], [0.2, -0.2]])
    # g * (1/n + alpha * 1[|w| < 1]), g = 1
    assert close(grad_of(binarize_scaled, w), [[0.5 + 1.0, 0.5 + 0.0], [0.5 + 0.2, 0.5 + 0.2]])


def test_binarize_scaled_at_plus_minus_one_follows_the_code_or_the_paper():
    """allenai/XNOR-Net util.lua 83-84 (4006d59) zero the alpha * STE term where W >= 1 or W <= -1; weights
    clipped to [-1, 1] every step sit there. The paper's 1[|r| <= 1] keeps it (edge="paper")."""
    w = torch.tensor([[1.0, -1.0, 0.5, -0.5]])  # n = 4, alpha = 0.75
    assert close(binarize_scaled(w), [[0.75, -0.75, 0.75, -0.75]])
    assert close(grad_of(binarize_scaled, w), [[0.25, 0.25, 1.0, 1.0]])  # 1/n only at +-1
    assert close(grad_of(lambda x: binarize_scaled(x, edge="paper"), w), [[1.0, 1.0, 1.0, 1.0]])
    with pytest.raises(ValueError, match="edge='both' is invalid; valid: code, paper"):
        binarize_scaled(w, edge="both")


def test_xnor_activation_sign_cancels_its_gradient_at_one_as_binactivez():
    """BinActiveZ.lua 14-15: gradInput[input:ge(1)] = 0 and [input:le(-1)] = 0 -- strict, unlike BNN's <=."""
    from qbench.quant import ste_sign

    x = torch.tensor([1.0, -1.0, 0.5, 1.5, -0.999])
    assert close(grad_of(lambda v: ste_sign(v, 1.0, strict=True), x), [0.0, 0.0, 1.0, 0.0, 1.0])
    assert close(grad_of(lambda v: ste_sign(v, 1.0), x), [1.0, 1.0, 1.0, 0.0, 1.0])


def test_binarize_scaled_conv_filters_are_per_output_channel():
    w = torch.zeros(2, 1, 2, 2)
    w[0] = torch.tensor([[1.0, -3.0], [2.0, -2.0]])  # mean |w| = 2
    w[1] = 0.5
    q = binarize_scaled(w)
    assert close(q[0], [[[2.0, -2.0], [2.0, -2.0]]]) and close(q[1], torch.full((1, 2, 2), 0.5))


def test_binarize_learned_scale_table3a_forward_and_backward_by_hand():
    w = torch.tensor([[0.5, -2.0], [-0.25, 0.75]], requires_grad=True)
    alpha = torch.tensor([[1.25], [0.5]], requires_grad=True)  # eq. 6's mean|W| per filter, as a start
    q = binarize_learned_scale(w, alpha)
    assert close(q.detach(), [[1.25, -1.25], [-0.5, 0.5]])
    q.backward(torch.tensor([[1.0, 2.0], [3.0, 4.0]]))
    # dW = g * alpha * 1[|w| <= 1] (no 1/n term: alpha is not a function of W); -2.0 saturates
    assert close(w.grad, [[1.25, 0.0], [1.5, 2.0]])
    # dalpha = sum_i g_i sign(w_i): 1 - 2 = -1; -3 + 4 = 1
    assert close(alpha.grad, [[-1.0], [1.0]])


def test_learned_scale_is_a_trained_parameter_of_each_bwn_layer(tmp_path):
    """The T3a variant of BWN: each binarized layer owns an alpha that starts at mean|W|, is in the
    optimizer's parameters, moves with training and comes back from a checkpoint."""
    from qbench.config import compose
    from qbench.methods import build_method
    from qbench.models import create_model
    from qbench.nn import LearnedScaleBinarize
    cfg = compose(["method=bwn", "++method.weight_quantizer={_target_:qbench.nn.LearnedScaleBinarize}"])
    torch.manual_seed(0)
    model = create_model("mlp", 1, 10, 28, hidden=[8, 8])
    build_method(cfg.method).apply(model)
    layers = [m for m in model.modules() if isinstance(getattr(m, "weight_quantizer", None), LearnedScaleBinarize)]
    assert len(layers) == 1  # BWN keeps the first and last layers in float: the middle one of three
    layer = layers[0]
    alpha = layer.weight_quantizer.alpha
    assert alpha.shape == (8, 1) and close(alpha.detach().flatten(), layer.weight.detach().abs().mean(1))
    assert any(p is alpha for p in model.parameters())
    assert close(layer.quantized_weight(), alpha.detach() * torch.where(layer.weight >= 0, 1.0, -1.0))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    before = alpha.detach().clone()
    model(torch.randn(4, 1, 28, 28)).square().sum().backward()
    opt.step()
    assert not torch.equal(alpha.detach(), before)
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = create_model("mlp", 1, 10, 28, hidden=[8, 8])
    build_method(cfg.method).apply(fresh)
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    assert [k for k in fresh.state_dict() if k.endswith("alpha")] and torch.equal(
        next(m for m in fresh.modules() if isinstance(m, LearnedScaleBinarize)).alpha.detach(), alpha.detach())


def test_ternarize_layer_and_per_filter():
    w = torch.tensor([0.9, -0.1, 0.3, -0.6])  # E|w| = 0.475, Delta = 0.3325
    t, alpha = ternarize(w, 0.7)
    assert torch.equal(t, torch.tensor([1.0, 0, 0, -1])) and close(alpha, 0.75)
    t, alpha = ternarize(w, 0.5)  # Delta = 0.2375: 0.3 now above it
    assert torch.equal(t, torch.tensor([1.0, 0, 1, -1])) and close(alpha, 0.6)
    w2 = torch.tensor([[0.9, -0.1], [0.3, -0.6]])  # per filter: Delta = [0.35, 0.315]
    t, alpha = ternarize(w2, 0.7, per_channel=True)
    assert torch.equal(t, torch.tensor([[1.0, 0], [0, -1]])) and close(alpha.flatten(), [0.9, 0.6])
    with pytest.raises(ValueError, match="threshold_factor must be > 0"):
        ternarize(w, 0.0)


def test_twn_forward_alpha_t_backward_identity():
    w = torch.tensor([0.9, -0.1, 0.3, -0.6])
    assert close(twn(w), [0.75, 0, 0, -0.75])
    g = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(grad_of(twn, w, g), g)


def test_twn_as_caffe_twns_computes_it():
    """fengfu-chris/caffe-twns at 51916a4: Delta = 0.7 * asum / count (Blob::set_delta, blob.cpp 112-117), the code
    (x > Delta) - (x < -Delta), strict at Delta (caffe_cpu_ternary, math_functions.cpp 286-291), alpha =
    dot(t, W) / dot(t, t) (blob.cpp 174-175; the GPU path adds 1e-6 to dot(t, t), a relative 1e-6 / n)."""
    t, alpha = ternarize(torch.tensor([2.0, -1.0, 0.5, -0.5]), 0.5)  # Delta = 0.5 * 1.0: both 0.5s sit on it
    assert torch.equal(t, torch.tensor([1.0, -1, 0, 0])) and close(alpha, 1.5)
    w = torch.randn(300, generator=torch.Generator().manual_seed(0))
    delta = 0.7 * w.abs().sum() / w.numel()
    code = (w > delta).float() - (w < -delta).float()
    assert torch.allclose(twn(w), (code @ w) / (code @ code) * code)


def test_quantize_k_eq5():
    x = torch.tensor([0.0, 0.1, 0.2, 0.5, 0.9, 1.0])
    # 3x = [0, .3, .6, 1.5, 2.7, 3] -> round half to even -> [0, 0, 1, 2, 3, 3]
    assert close(quantize_k(x, 2), [0, 0, 1 / 3, 2 / 3, 1, 1])
    g = torch.arange(1.0, 7.0)
    assert torch.equal(grad_of(lambda v: quantize_k(v, 2), x, g), g)
    for bad in (0, -1, 33, 2.5):
        with pytest.raises(ValueError, match="integer from 1 to 32"):
            quantize_k(x, bad)


def test_dorefa_weight_k2_k1_k32():
    w = torch.tensor([0.5, -1.0, 0.0, 2.0])
    m = math.tanh(2.0)
    r = [math.tanh(v) / (2 * m) + 0.5 for v in (0.5, -1.0, 0.0, 2.0)]  # [.7397, .1050, .5, 1]
    assert [round(3 * v) for v in r] == [2, 0, 2, 3]
    assert close(dorefa_weight(w, 2), [2 * 2 / 3 - 1, -1, 2 * 2 / 3 - 1, 1])
    assert close(dorefa_weight(w, 1), [0.875, -0.875, 0.875, 0.875])  # sign(w) * E|w|
    g = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert torch.equal(grad_of(lambda v: dorefa_weight(v, 1), w, g), g)
    assert dorefa_weight(w, 32) is w
    # k > 1: gradient flows through tanh; an element far in the tanh tail gets almost none
    gk = grad_of(lambda v: dorefa_weight(v, 2), torch.tensor([0.1, 0.2, 8.0]))
    assert gk[2].abs() < 1e-3 * gk[0].abs()


def test_dorefa_activation_eq10():
    x = torch.tensor([-0.5, 0.2, 0.5, 1.4])
    assert close(dorefa_activation(x, 2), [0, 1 / 3, 2 / 3, 1])
    assert torch.equal(grad_of(lambda v: dorefa_activation(v, 2), x), torch.tensor([0.0, 1, 1, 0]))


def test_dorefa_gradient_eq12_grid_scale_and_unbiased():
    g = torch.tensor([[0.5, -1.0, 0.25, 0.0], [4.0, 2.0, -4.0, 1.0]])  # max|g| per example: 1, 4
    gen = torch.Generator().manual_seed(0)
    q = dorefa_gradient(g, 2, gen)
    # values on the per-example grid 2 max|g| (j/3 - 1/2), j = 0..3
    for row, m in zip(q, (1.0, 4.0)):
        j = (row / (2 * m) + 0.5) * 3
        assert torch.allclose(j, j.round(), atol=1e-5)
    # the extremes +-max|g| are exact whatever the noise
    draws = torch.stack([dorefa_gradient(g, 2, gen) for _ in range(4000)])
    assert torch.all(draws[:, 0, 1] == -1.0) and torch.all(draws[:, 1, 0] == 4.0)
    assert torch.allclose(draws.mean(0), g, atol=0.03 * 4)  # stochastic rounding is unbiased
    assert dorefa_gradient(g, 32) is g
    assert torch.equal(dorefa_gradient(torch.zeros(2, 3), 4), torch.zeros(2, 3))


def test_dorefa_gradient_ste_is_identity_forward_quantized_backward():
    x = torch.randn(3, 5, requires_grad=True)
    y = dorefa_gradient_ste(x, 1)
    assert torch.equal(y, x)
    y.backward(torch.tensor([[0.3, -1.0, 0.2, 0.9, 1.0]] * 3))
    # k = 1: grid {-max, +max} = {-1, +1}
    assert set(x.grad.flatten().tolist()) <= {-1.0, 1.0}


def test_fake_quant_affine_by_hand():
    x = torch.tensor([-1.0, 0.04, 0.13, 0.26, 2.0])
    # x/s = [-10, .4, 1.3, 2.6, 20] -> round + z = [-8, 2, 3, 5, 22] -> clamp [0, 15] -> - z, * s
    assert close(fake_quant_affine(x, 0.1, 2, 0, 15), [-0.2, 0, 0.1, 0.3, 1.3])
    assert torch.equal(grad_of(lambda v: fake_quant_affine(v, 0.1, 2, 0, 15), x), torch.tensor([0.0, 1, 1, 1, 0]))


@pytest.mark.parametrize("qmin,qmax", [(0, 255), (-128, 127), (0, 15), (-8, 7), (0, 3)])
def test_fake_quant_affine_matches_torch_per_tensor(qmin, qmax):
    torch.manual_seed(qmax)
    x = torch.randn(1000) * 3
    x[:50] = torch.arange(50) * 0.05  # exact multiples of the scale: rounding ties
    scale, zp = 0.05, (qmin + qmax + 1) // 2 if qmin == 0 else 0
    ours = grad_of(lambda v: fake_quant_affine(v, scale, zp, qmin, qmax), x)
    ref = grad_of(lambda v: torch.fake_quantize_per_tensor_affine(v, scale, zp, qmin, qmax), x)
    assert torch.equal(fake_quant_affine(x, scale, zp, qmin, qmax),
                       torch.fake_quantize_per_tensor_affine(x, scale, zp, qmin, qmax))
    assert torch.equal(ours, ref)


@pytest.mark.parametrize("qmin,qmax", [(0, 255), (-128, 127), (-8, 7)])
def test_fake_quant_affine_matches_torch_per_channel(qmin, qmax):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 5, 5)
    scale = torch.tensor([0.01, 0.02, 0.05, 0.1])
    zp = torch.tensor([0, 1, 2, 3], dtype=torch.int32) if qmin == 0 else torch.zeros(4, dtype=torch.int32)
    ref = torch.fake_quantize_per_channel_affine(x, scale, zp, 0, qmin, qmax)
    assert torch.equal(fake_quant_affine(x, scale, zp, qmin, qmax, axis=0), ref)
    ours = grad_of(lambda v: fake_quant_affine(v, scale, zp, qmin, qmax, axis=0), x)
    theirs = grad_of(lambda v: torch.fake_quantize_per_channel_affine(v, scale, zp, 0, qmin, qmax), x)
    assert torch.equal(ours, theirs)


def test_xnor_activation_scale_eq11_by_hand():
    from qbench.quant import xnor_activation_scale
    x = torch.ones(1, 2, 3, 3)
    x[:, 1] = -3.0  # A = (|1| + |-3|) / 2 = 2 everywhere
    k = xnor_activation_scale(x, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1), dilation=(1, 1))
    # box filter over the zero-padded A: centre 9 * 2 / 9 = 2, edge 6 * 2 / 9, corner 4 * 2 / 9
    assert close(k[0, 0], [[8 / 9, 12 / 9, 8 / 9], [12 / 9, 2.0, 12 / 9], [8 / 9, 12 / 9, 8 / 9]])
    v = torch.tensor([[1.0, -2.0, 3.0], [0.0, 0.0, 6.0]])
    assert close(xnor_activation_scale(v), [[2.0], [2.0]])


def test_xnor_conv_is_binary_conv_times_k_alpha():
    import torch.nn.functional as F
    from qbench.nn import QConv2d
    from qbench.quant import sign, ste_sign, xnor_activation_scale
    torch.manual_seed(0)
    conv = QConv2d(3, 4, 3, padding=1, bias=False, weight_quantizer=binarize_scaled, input_quantizer=ste_sign,
                   input_scale=xnor_activation_scale)
    x = torch.randn(2, 3, 6, 6)
    alpha = conv.weight.detach().abs().mean(dim=(1, 2, 3)).view(1, 4, 1, 1)
    k = F.conv2d(x.abs().mean(1, keepdim=True), torch.full((1, 1, 3, 3), 1 / 9), padding=1)
    expected = F.conv2d(sign(x), sign(conv.weight.detach()), padding=1) * alpha * k
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_hwgq_step_is_the_mse_optimal_uniform_step_for_a_half_normal():
    from qbench.quant import hwgq_step
    step = hwgq_step(2)
    assert abs(step - 0.651) < 0.002
    # optimal: a Monte-Carlo MSE at the step is below the MSE 10% either side of it
    x = torch.randn(400000, generator=torch.Generator().manual_seed(0)).clamp_min(0)

    def mse(s):
        q = torch.round(x.clamp(0, 3 * s) / s) * s
        return ((q - x) ** 2).mean().item()
    assert mse(step) < mse(step * 0.9) and mse(step) < mse(step * 1.1)


def test_hwgq_forward_levels_and_clipped_relu_gradient():
    from qbench.quant import hwgq, hwgq_step
    d = hwgq_step(2)
    x = torch.tensor([-1.0, 0.2 * d, 0.7 * d, 1.4 * d, 2.6 * d, 3.0 * d, 5.0 * d])
    assert close(hwgq(x, 2), [0, 0, d, d, 3 * d, 3 * d, 3 * d])
    # 1[0 < x <= 3 Delta]
    assert torch.equal(grad_of(lambda v: hwgq(v, 2), x), torch.tensor([0.0, 1, 1, 1, 1, 1, 0]))
    assert hwgq(x, 32) is x
