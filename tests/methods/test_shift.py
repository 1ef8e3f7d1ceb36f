"""BNN's shift-based arithmetic (AP2, Algorithm 3's batch norm, Algorithm 4's AdaMax) on tensors worked by hand."""
import pytest
import torch
from torch import nn

from qbench.nn import ShiftBatchNorm, shift_batch_norms
from qbench.quant import ap2


def test_ap2_is_the_nearest_power_of_two_in_log_scale_with_the_sign():
    x = torch.tensor([3.0, -3.0, 0.7, 0.25, 5.0, 6.0, -0.1, 0.0])
    # log2: 1.58 -> 1; 0.7 -> -0.51 -> -1; 5 -> 2.32 -> 2; 6 -> 2.58 -> 3; 0.1 -> -3.32 -> -3
    assert torch.equal(ap2(x), torch.tensor([4.0, -4.0, 0.5, 0.25, 4.0, 8.0, -0.125, 0.0]))
    assert torch.equal(x, torch.tensor([3.0, -3.0, 0.7, 0.25, 5.0, 6.0, -0.1, 0.0]))  # input untouched


def test_ap2_in_place_on_non_negative_values_is_ap2_and_writes_into_its_input():
    from qbench.quant.shift import ap2_

    x = torch.tensor([3.0, 0.7, 0.25, 6.0, 0.1, 0.0, 2.0 ** -30])
    out = ap2_(x)
    assert out is x
    assert torch.equal(x, torch.tensor([4.0, 0.5, 0.25, 8.0, 0.125, 0.0, 2.0 ** -30]))


def _bn(gamma=1.0, beta=0.0):
    bn = ShiftBatchNorm(1)
    with torch.no_grad():
        bn.weight.fill_(gamma)
        bn.bias.fill_(beta)
    return bn


def test_shift_batch_norm_forward_algorithm_3_by_hand():
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]])
    # C(x) = [-2, -1, 0, 3]; AP2(C) = [-2, -1, 0, 4]; var = mean([4, 1, 0, 12]) = 4.25
    # s = AP2(1 / sqrt(4.25)) = AP2(0.485) = 0.5; x_hat = [-1, -0.5, 0, 1.5]
    assert torch.equal(_bn()(x), torch.tensor([[-1.0], [-0.5], [0.0], [1.5]]))
    # AP2(gamma = 0.7) = 0.5, beta = 0.25
    assert torch.equal(_bn(0.7, 0.25)(x), torch.tensor([[-0.25], [0.0], [0.25], [1.0]]))


def test_shift_batch_norm_backward_is_the_codes_by_hand():
    bn = _bn(0.7)
    x = torch.tensor([[1.0], [2.0], [3.0], [6.0]], requires_grad=True)
    bn(x).backward(torch.tensor([[1.0], [2.0], [3.0], [4.0]]))
    # dy - mean(dy) = [-1.5, -0.5, 0.5, 1.5]; mean(AP2(C) dy) = mean([-2, -2, 0, 16]) = 3
    # AP2(C) * 3 * s^2 = [-1.5, -0.75, 0, 3]; difference [0, 0.25, 0.5, -1.5]; times AP2(gamma) s = 0.25
    assert torch.equal(x.grad, torch.tensor([[0.0], [0.0625], [0.125], [-0.375]]))
    # dgamma = sum(AP2(x_hat) dy) = [-1, -0.5, 0, 2] . [1, 2, 3, 4] = 6; dbeta = sum(dy) = 10
    assert bn.weight.grad.item() == 6.0 and bn.bias.grad.item() == 10.0


def test_shift_batch_norm_is_batch_norm_where_every_factor_is_a_power_of_two():
    x = torch.tensor([[-1.0, 2.0], [1.0, -2.0], [-1.0, 2.0], [1.0, -2.0]])
    dy = torch.tensor([[0.3, -1.0], [0.2, 0.5], [-0.7, 0.1], [0.4, 0.9]])
    xs, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ys = ShiftBatchNorm(2, eps=1e-12)(xs)
    yb = nn.functional.batch_norm(xb, None, None, training=True, eps=1e-12)
    assert torch.allclose(ys, yb)
    ys.backward(dy)
    yb.backward(dy)
    assert torch.allclose(xs.grad, xb.grad, atol=1e-6)


def test_spatial_shift_batch_norm_pools_the_pixels_of_a_feature_map():
    torch.manual_seed(0)
    x = torch.randn(3, 2, 2, 2, requires_grad=True)
    flat = x.detach().permute(0, 2, 3, 1).reshape(-1, 2).requires_grad_(True)
    bn2, bn1 = ShiftBatchNorm(2), ShiftBatchNorm(2)
    y2, y1 = bn2(x), bn1(flat)
    assert torch.allclose(y2.permute(0, 2, 3, 1).reshape(-1, 2), y1)
    dy = torch.randn_like(y2)
    y2.backward(dy)
    y1.backward(dy.permute(0, 2, 3, 1).reshape(-1, 2))
    assert torch.allclose(x.grad.permute(0, 2, 3, 1).reshape(-1, 2), flat.grad, atol=1e-6)
    assert torch.allclose(bn2.weight.grad, bn1.weight.grad, atol=1e-5)


def test_shift_batch_norms_keeps_the_output_layers_batch_norm():
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3), nn.Linear(3, 2), nn.BatchNorm1d(2))
    assert shift_batch_norms(model) == ["1"]
    assert isinstance(model[1], ShiftBatchNorm) and type(model[3]) is nn.BatchNorm1d
    with pytest.raises(ValueError, match=r"\(N, C\) or \(N, C, H, W\)"):
        model[1](torch.zeros(2, 3, 4))


def _shift_adamax_step(p, g, **group):
    from qbench.optim import ShiftAdaMax

    p = torch.nn.Parameter(torch.tensor(p))
    opt = ShiftAdaMax([{"params": [p], **group}], lr=2.0 ** -6)
    p.grad = torch.tensor(g)
    opt.step()
    return p.detach(), opt.state[p]


def test_shift_adamax_algorithm_4_first_step_by_hand():
    p, st = _shift_adamax_step([0.5, -0.2], [0.3, -0.01])
    # m = 0.1 g = [0.03, -0.001]; v = AP2(|g|) = [AP2(0.3), AP2(0.01)] = [0.25, 2^-7] (+ 2^-27)
    # step = AP2(2^-6 / (1 - 0.9)) = AP2(0.156) = 0.125; update = 0.125 * [0.12, -0.128] = [0.015, -0.016]
    assert torch.allclose(p, torch.tensor([0.485, -0.184]), atol=1e-6)
    assert torch.allclose(st["v"], torch.tensor([0.25, 2.0 ** -7]) + 2.0 ** -27)  # kept shifted


def test_shift_adamax_second_step_keeps_the_infinity_norm_and_bias_correction():
    from qbench.optim import ShiftAdaMax

    p = torch.nn.Parameter(torch.tensor([0.5, -0.2]))
    opt = ShiftAdaMax([p], lr=2.0 ** -6)
    for _ in range(2):
        p.grad = torch.tensor([0.3, -0.01])
        opt.step()
    # step 2: m = [0.057, -0.0019]; v = AP2(max(0.999 v_1, |g|)) = AP2([0.3, 0.01]) = [0.25, 2^-7]
    # AP2(2^-6 / (1 - 0.81)) = AP2(0.0822) = 0.0625; update = 0.0625 * [0.228, -0.2432] = [0.01425, -0.0152]
    assert torch.allclose(p.detach(), torch.tensor([0.485 - 0.01425, -0.184 + 0.0152]), atol=1e-6)


def test_shift_adamax_multiplies_the_glorot_scale_after_the_shift():
    # lr_scale 1.5: AP2(2^-6 / 0.1) * 1.5 = 0.1875 (not AP2(0.234) = 0.25)
    p, _ = _shift_adamax_step([0.0], [1.0], lr=1.5 * 2.0 ** -6, lr_scale=1.5)
    assert torch.allclose(p, torch.tensor([-0.1875 * 0.1 / 1.0]), atol=1e-7)
