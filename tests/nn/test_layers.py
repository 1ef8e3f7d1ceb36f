import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qbench.methods import ClipWeights, GlorotLRScale, Host, XnorCodeGradScale, XnorCodeWeights, apply_layer_policy
from qbench.models import create_model
from qbench.nn import QConv2d, QLinear, ShiftBatchNorm, shift_batch_norms
from qbench.quant import binarize_scaled, sign, ste_sign


def test_no_quantizers_is_exactly_the_float_layer():
    torch.manual_seed(0)
    conv, lin = nn.Conv2d(3, 8, 3, padding=1, bias=True), nn.Linear(20, 5)
    x, v = torch.randn(2, 3, 8, 8), torch.randn(4, 20)
    qc, ql = QConv2d.from_float(conv), QLinear.from_float(lin)
    assert torch.equal(qc(x), conv(x)) and torch.equal(ql(v), lin(v))
    assert qc.weight is conv.weight  # parameters are shared, not copied
    built = QConv2d(3, 8, 3, padding=1)
    built.load_state_dict(conv.state_dict())
    assert torch.equal(built(x), conv(x))


def test_quantized_conv_is_conv_of_quantized_tensors_and_grads_reach_real_weight():
    torch.manual_seed(0)
    q = QConv2d(2, 4, 3, padding=1, bias=False, weight_quantizer=ste_sign, input_quantizer=ste_sign)
    x = torch.randn(3, 2, 5, 5)
    assert torch.equal(q(x), F.conv2d(sign(x), sign(q.weight.detach()), padding=1))
    q(x).sum().backward()
    assert q.weight.grad is not None and q.weight.grad.abs().sum() > 0


def test_layer_policy_first_input_never_quantized_and_keep_flags():
    model = create_model("mlp", 1, 10, 28, hidden=[16, 16])
    rows = apply_layer_policy(model, ste_sign, ste_sign, keep_first_fp=False, keep_last_fp=False)
    assert [(r.weight, r.input) for r in rows] == [("ste_sign", "fp"), ("ste_sign", "ste_sign"),
                                                    ("ste_sign", "ste_sign")]
    model = create_model("mlp", 1, 10, 28, hidden=[16, 16])
    rows = apply_layer_policy(model, ste_sign, ste_sign, keep_first_fp=True, keep_last_fp=True)
    assert [(r.weight, r.input) for r in rows] == [("fp", "fp"), ("ste_sign", "ste_sign"), ("fp", "fp")]
    model = create_model("mlp", 1, 10, 28, hidden=[16, 16])  # WAGE's choice: the data through Q_A as well
    rows = apply_layer_policy(model, ste_sign, ste_sign, False, False, quantize_data_input=True)
    assert [r.input for r in rows] == ["ste_sign"] * 3


def test_layer_policy_respects_model_marked_fp_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 4, 3))
    model[1].qbench_keep_fp = True
    rows = apply_layer_policy(model, ste_sign, ste_sign, False, False)
    assert [r.weight for r in rows] == ["ste_sign", "fp", "ste_sign"]


def test_clip_weights_touches_only_quantized_weights():
    model = create_model("mlp", 1, 10, 28, hidden=[8])
    apply_layer_policy(model, ste_sign, None, keep_first_fp=False, keep_last_fp=True)
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(3.0)

    class T:
        pass
    t = T()
    t.model = model
    ClipWeights(1.0).on_after_optimizer_step(t)
    assert model[1].weight.max() == 1.0  # first layer: binarized -> clipped
    assert model[4].weight.max() == 3.0  # last layer kept FP -> untouched
    assert model[2].weight.max() == 3.0  # batch norm -> untouched
    ClipWeights(1.0, all_parameters=True).on_after_optimizer_step(t)  # BNN's Torch7 CIFAR-10 model
    assert all(p.max() == 1.0 for p in model.parameters())


def test_glorot_lr_scale_matches_bc_code():
    model = create_model("mlp", 1, 10, 28, hidden=[1024])
    apply_layer_policy(model, ste_sign, None, False, False)
    groups = GlorotLRScale().param_groups(model, lr=0.001)
    # first layer 784 -> 1024: H = sqrt(1.5 / (784 + 1024)), lr * 1 / H
    assert abs(groups[0]["lr"] - 0.001 / (1.5 / 1808) ** 0.5) < 1e-9
    assert groups[-1]["lr"] == 0.001
    n = sum(len(g["params"]) for g in groups)
    assert n == len(list(model.parameters()))
    # BNN's Torch7 conv models: 1/H = sqrt(1808 / 1.5) = 34.7 -> AP2 -> 32
    shifted = GlorotLRScale(power_of_two=True).param_groups(model, lr=0.001)
    assert shifted[0]["lr_scale"] == 32.0 and abs(shifted[0]["lr"] - 0.032) < 1e-12


def test_glorot_lr_scale_on_batch_norm_gammas_as_bnn_torch7_mnist_model():
    """BinaryNet_MNIST_Model.lua's learning-rate vector: binary layers 1/sqrt(1.5 / (fan_in + fan_out)), each
    batch norm's gamma 1/sqrt(1.5 / C) (shift ones and the output one), betas 1."""
    from qbench.nn import ShiftBatchNorm, shift_batch_norms
    model = create_model("mlp", 1, 10, 28, hidden=[2048])
    apply_layer_policy(model, ste_sign, None, False, False)
    shift_batch_norms(model)
    assert isinstance(model[2], ShiftBatchNorm) and isinstance(model[5], nn.BatchNorm1d)
    lr = 2.0 ** -6
    groups = GlorotLRScale(batch_norm_gamma=True).param_groups(model, lr)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    assert len(lr_of) == len(list(model.parameters()))  # every parameter once
    assert lr_of[id(model[1].weight)] == pytest.approx(lr * (2832 / 1.5) ** 0.5)  # 784 + 2048
    assert lr_of[id(model[4].weight)] == pytest.approx(lr * (2058 / 1.5) ** 0.5)  # 2048 + 10
    assert lr_of[id(model[2].weight)] == pytest.approx(lr * 36.950417, rel=1e-6)  # sqrt(2048 / 1.5)
    assert lr_of[id(model[5].weight)] == pytest.approx(lr * 2.5819889, rel=1e-6)  # sqrt(10 / 1.5)
    assert lr_of[id(model[2].bias)] == lr and lr_of[id(model[5].bias)] == lr
    # without the option (the default, and BNN's CIFAR-10 / SVHN models) the gammas keep the base rate
    plain = {id(p): g["lr"] for g in GlorotLRScale().param_groups(model, lr) for p in g["params"]}
    assert plain[id(model[2].weight)] == lr and plain[id(model[5].weight)] == lr
    # rounded to a power of two with the layers' scale: 36.95 -> 32
    shifted = {id(p): g["lr"] for g in GlorotLRScale(power_of_two=True, batch_norm_gamma=True)
               .param_groups(model, lr) for p in g["params"]}
    assert shifted[id(model[2].weight)] == lr * 32
    with pytest.raises(ValueError, match="batch_norm_gamma must be true, false or null, got 'maybe'"):
        GlorotLRScale(batch_norm_gamma="maybe")
    with pytest.raises(ValueError, match="power_of_two must be true, false or null, got 1"):
        GlorotLRScale(power_of_two=1)


def test_glorot_lr_scale_exponent_two_steps_as_bc_mnist_code_on_plus_minus_h_weights():
    """bc_repo's mnist_mlp.py binarizes to +-H (H = sqrt(6 / (fan_in + fan_out)) / 2), clips to [-H, H] and takes
    plain SGD steps. A batch norm follows the layer, so qbench's +-1 weights v = w / H with lr / H^2 per layer
    (exponent 2) must take the same step: after it, v = w / H and the batch norm's parameters agree."""
    from qbench.losses import squared_hinge
    from qbench.quant import binaryconnect
    torch.manual_seed(0)
    x, y, lr = torch.rand(8, 1, 2, 3), torch.tensor([0, 1, 2, 3, 0, 1, 2, 3]), 3.0
    H = (1.5 / (6 + 4)) ** 0.5
    model = nn.Sequential(nn.Flatten(), nn.Linear(6, 4, bias=False), nn.BatchNorm1d(4, eps=1e-12))
    apply_layer_policy(model, binaryconnect, None, False, False)
    v0 = torch.empty(4, 6).uniform_(-1, 1)
    with torch.no_grad():
        model[1].weight.copy_(v0)
    opt = torch.optim.SGD(GlorotLRScale(exponent=2).param_groups(model, lr), lr=lr)
    squared_hinge(model(x), y).backward()
    opt.step()

    class T:
        pass
    t = T()
    t.model = model
    ClipWeights(1.0).on_after_optimizer_step(t)

    # the code's formulation: w = H v in [-H, H], forward with +-H, identity STE, w <- clip(w - lr dC/dw_b, -H, H)
    w = (H * v0).requires_grad_()
    gamma, beta = torch.ones(4, requires_grad=True), torch.zeros(4, requires_grad=True)
    wb = H * sign(w.detach()) + (w - w.detach())
    out = F.batch_norm(x.flatten(1) @ wb.T, None, None, gamma, beta, training=True, eps=1e-12)
    squared_hinge(out, y).backward()
    w_new = (w - lr * w.grad).clamp(-H, H)
    torch.testing.assert_close(model[1].weight, w_new.detach() / H, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[2].weight, (gamma - lr * gamma.grad).detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(model[2].bias, (beta - lr * beta.grad).detach(), rtol=1e-5, atol=1e-6)
    assert (model[1].weight.detach() - v0).abs().max() > 0.1  # the step moved the weights (some to the bound)
    with pytest.raises(ValueError, match="exponent must be a number > 0, got 0"):
        GlorotLRScale(exponent=0)


def test_mlp_bn_momentum_sets_every_batch_norm():
    bns = [m for m in create_model("mlp", 1, 10, 28, hidden=[8, 8], bn_momentum=0.33).modules()
           if isinstance(m, nn.BatchNorm1d)]
    assert [m.momentum for m in bns] == [0.33] * 3
    assert all(m.momentum == 0.1 for m in create_model("mlp", 1, 10, 28, hidden=[8]).modules()
               if isinstance(m, nn.BatchNorm1d))  # null: PyTorch's
    with pytest.raises(ValueError, match="bn_momentum must be a number in \\(0, 1\\] or null, got 1.5"):
        create_model("mlp", 1, 10, 28, bn_momentum=1.5)


@pytest.mark.parametrize("name,kwargs,sizes", [("mlp", dict(hidden=[64, 64]), [64, 64, 10]),
                                               ("vgg_small", dict(width=0.125), [16, 16, 32, 32, 64, 64, 128, 128, 10])])
def test_bn_gamma_init_uniform_as_torch7_and_only_the_output_one_under_shift_batch_norm(name, kwargs, sizes):
    """Torch7's nn.BatchNormalization:reset of 2016 draws gamma from U(0, 1); BNN's Torch7 models have it
    only on the output (their hidden ShiftPow2 batch norms fill gamma with 1)."""
    size = 28 if name == "mlp" else 32
    torch.manual_seed(0)
    model = create_model(name, 1, 10, size, bn_gamma_init="uniform", **kwargs)
    gammas = [m.weight.detach() for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert [g.numel() for g in gammas] == sizes
    for g in gammas:
        assert 0 <= g.min() and g.max() < 1 and len(set(g.tolist())) == g.numel()  # drawn, not a constant
    assert torch.cat(gammas).std() > 0.2  # U(0, 1): std 0.29
    for how in (None, "ones"):
        assert all((m.weight == 1).all() for m in create_model(name, 1, 10, size, bn_gamma_init=how, **kwargs).modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm))
    with pytest.raises(ValueError, match="bn_gamma_init must be ones, uniform or null, got 'normal'"):
        create_model(name, 1, 10, size, bn_gamma_init="normal", **kwargs)

    shift_batch_norms(model)
    hidden = [m for m in model.modules() if isinstance(m, ShiftBatchNorm)]
    assert len(hidden) == len(sizes) - 1 and all((m.weight == 1).all() for m in hidden)
    assert torch.equal(model[-1].weight.detach(), gammas[-1])  # the output batch norm keeps its draw


@pytest.mark.parametrize("method", ["binaryconnect", "bnn"])
def test_bc_and_bnn_start_binarized_weights_from_uniform_minus_one_one(method):
    """binary_connect.py / binary_net.py: W = Uniform((-H, H)), H = 1, for every binarized layer; batch norm
    keeps its own init, and method.weight_init=null keeps the model's (PyTorch's) init."""
    from qbench.config import compose
    from qbench.methods import build_method
    torch.manual_seed(0)
    for weight_init, bound in ((None, (0.9, 1.0)), ("null", (0.0, 0.07))):
        cfg = compose([f"method={method}", "model=mlp", "dataset=mnist"]
                      + ([f"method.weight_init={weight_init}"] if weight_init else []))
        model = create_model("mlp", 1, 10, 28, hidden=[256, 256])
        build_method(cfg.method).apply(model)
        weights = [m.weight for m in model.modules() if getattr(m, "weight_quantizer", None) is not None]
        assert len(weights) == 3
        for w in weights:
            assert bound[0] < w.abs().max() <= bound[1]
        if weight_init is None:  # U(-1, 1): mean 0, E|w| = 1/2
            w = torch.cat([w.flatten() for w in weights])
            assert abs(w.mean()) < 0.01 and abs(w.abs().mean() - 0.5) < 0.01
        bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm1d)]
        assert all(torch.equal(m.weight, torch.ones_like(m.weight)) for m in bn)


def test_squared_hinge_by_hand():
    from qbench.losses import squared_hinge
    logits = torch.tensor([[0.5, -2.0, 1.5]])
    # t = [+1, -1, -1]: max(0, 1 - t*y)^2 = [0.25, 0, 6.25] -> mean 6.5 / 3
    assert abs(squared_hinge(logits, torch.tensor([0])).item() - 6.5 / 3) < 1e-6


def test_output_quantizer_quantizes_the_gradient_of_the_layer_output():
    from qbench.quant import dorefa_gradient_ste
    torch.manual_seed(0)
    lin = QLinear(3, 2, bias=False, output_quantizer=lambda y: dorefa_gradient_ste(y, 1))
    x = torch.randn(4, 3, requires_grad=True)
    y = lin(x)
    assert torch.equal(y, x @ lin.weight.T)  # identity forward
    g = torch.tensor([[0.2, -0.5]] * 4)
    y.backward(g)
    # 1-bit gradient grid per example: {-max|g|, +max|g|} = {-0.5, 0.5}; -0.5 is an extreme, exact
    gq = x.grad @ torch.linalg.pinv(lin.weight.detach())  # x.grad = gq @ W
    assert torch.allclose(gq[:, 1], torch.full((4,), -0.5), atol=1e-5)
    assert all(abs(abs(v) - 0.5) < 1e-5 for v in gq[:, 0].tolist())


def _xnor(model_name: str, block_order: str = "xnor"):
    from qbench.config import compose
    from qbench.methods import build_method
    method = build_method(compose(["method=xnor", f"method.block_order={block_order}"]).method)
    torch.manual_seed(0)
    net = create_model(model_name, 3, 10, 32, activation="identity")
    return net, method.apply(net)


def test_xnor_moves_each_pool_right_after_its_binary_conv():
    net, rows = _xnor("vgg7")
    assert [r.name for r in rows if r.kind.endswith("+ pool")] == ["3", "10", "17"]
    kinds = [type(m).__name__ for m in net]
    # the first block stays as built (FP first conv); binary blocks read BinConv -> Pool -> BN -> (act)
    assert kinds[:12] == ["QConv2d", "BatchNorm2d", "Identity", "QConv2d", "MaxPool2d", "BatchNorm2d", "Identity",
                          "QConv2d", "BatchNorm2d", "Identity", "QConv2d", "MaxPool2d"]
    plain, _ = _xnor("vgg7", "model")
    assert list(net.state_dict()) == list(plain.state_dict())  # names kept: checkpoints and init runs load
    x = torch.randn(2, 3, 32, 32)
    h = x
    for m in net:  # the Sequential runs its modules in the new order
        h = m(h)
    assert torch.equal(net(x), h)


def test_xnor_block_order_leaves_vgg_small_and_resnets_as_built():
    for name in ("vgg_small", "resnet18"):
        net, rows = _xnor(name)
        plain, _ = _xnor(name, "model")
        assert not any(r.kind.endswith("+ pool") for r in rows)
        assert [type(m) for m in net.modules()] == [type(m) for m in plain.modules()]


def test_block_order_mistake():
    from qbench.config import compose
    from qbench.errors import UserError
    from qbench.methods import build_method
    with pytest.raises(UserError, match="method.block_order='pool_first' is invalid; valid: model, xnor"):
        build_method(compose(["method=xnor", "method.block_order=pool_first"]).method)


def test_dropout_acts_after_the_binarized_activation_as_in_bnn():
    """BNN's Theano MLP is dense -> BN -> binary_tanh -> dropout -> dense: the next layer sees a dropped unit
    as 0 and a kept one as +-1/(1-p) = +-2 in training, every unit as +-1 in evaluation. Binarizing after
    the dropout instead would turn each dropped 0 into +1."""
    from qbench.config import compose
    from qbench.methods import build_method
    method = build_method(compose(["method=bnn"]).method)
    torch.manual_seed(0)
    net = create_model("mlp", 1, 10, 28, hidden=[64, 64], activation="hardtanh", dropout_hidden=0.5)
    plain_keys = list(net.state_dict())
    rows = method.apply(net)
    assert [r.name for r in rows if r.kind.endswith("+ dropout")] == ["5", "9"]
    assert list(net.state_dict()) == plain_keys  # an Identity holds the dropout's place: checkpoints load
    seen = []
    second = net[5]
    op = second._op
    second._op = lambda x, w: (seen.append(x.detach().clone()), op(x, w))[1]
    x = torch.rand(32, 1, 28, 28)
    net.train()
    net(x)
    values = set(seen[-1].unique().tolist())
    assert values == {-2.0, 0.0, 2.0}
    zeros = (seen[-1] == 0).float().mean().item()
    assert 0.4 < zeros < 0.6  # about half of the 32 x 64 units dropped
    net.eval()
    net(x)
    assert set(seen[-1].unique().tolist()) == {-1.0, 1.0}
    # a method without an input quantizer (BinaryConnect) keeps the model's dropout where it was
    bc = create_model("mlp", 1, 10, 28, hidden=[64, 64], dropout_hidden=0.5)
    build_method(compose(["method=binaryconnect"]).method).apply(bc)
    assert isinstance(bc[4], nn.Dropout) and "input_dropout" not in bc[5]._modules


def test_xnor_code_weights_centre_over_input_channels_then_clip():
    """allenai/XNOR-Net util.lua: meancenterConvParms (mean over input channels), then clampConvParms."""
    model = nn.Sequential(nn.Conv2d(2, 2, 1, bias=False), nn.Flatten(), nn.Linear(2, 3, bias=False),
                          nn.Linear(3, 1, bias=False))
    apply_layer_policy(model, binarize_scaled, None, False, True)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([3.0, 1.0, 0.2, 0.6]).view(2, 2, 1, 1))
        model[2].weight.copy_(torch.tensor([[1.0, 2.0], [0.5, 0.5], [-4.0, 0.0]]))
        model[3].weight.fill_(5.0)
    XnorCodeWeights(1.0).on_train_start(Host(model, epochs=1))
    # filter 0: (3, 1) - 2 = (1, -1); filter 1: (0.2, 0.6) - 0.4 = (-0.2, 0.2)
    assert torch.allclose(model[0].weight.flatten(), torch.tensor([1.0, -1.0, -0.2, 0.2]))
    # rows: (1, 2) - 1.5 = (-0.5, 0.5); (0.5, 0.5) - 0.5 = 0; (-4, 0) + 2 = (-2, 2) -> clipped to (-1, 1)
    assert torch.allclose(model[2].weight, torch.tensor([[-0.5, 0.5], [0.0, 0.0], [-1.0, 1.0]]))
    assert torch.equal(model[3].weight, torch.full((1, 3), 5.0))  # the float last layer is untouched


def test_xnor_code_grad_scale_multiplies_eq7_by_n_times_one_minus_one_over_c_in():
    """util.lua updateBinaryGradWeight: dC/dW~ * (1/n + alpha * 1[|W| < 1]) * (1 - 1/c_in) * n."""
    model = nn.Sequential(nn.Linear(4, 1, bias=False), nn.Linear(1, 1, bias=False))
    apply_layer_policy(model, binarize_scaled, None, False, True)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.25, 2.0, -0.1]]))
        model[1].weight.fill_(1.0)
    model(torch.ones(1, 4)).sum().backward()
    XnorCodeGradScale().on_before_optimizer_step(Host(model, epochs=1))  # the trainer calls it between backward and step
    alpha = (0.5 + 0.25 + 2.0 + 0.1) / 4  # dC/dW~_i = x_i = 1; n = c_in = 4: factor 4 * (1 - 1/4) = 3
    expected = 3 * torch.tensor([[0.25 + alpha, 0.25 + alpha, 0.25, 0.25 + alpha]])
    assert torch.allclose(model[0].weight.grad, expected)
    assert torch.equal(model[1].weight.grad, torch.tensor([[0.0]]))  # float layer: sum(alpha*sign) = 0, unscaled
    assert XnorCodeGradScale.factor(torch.empty(256, 96, 5, 5)) == 96 * 25 * (1 - 1 / 96)


def test_xnor_code_under_adam_drops_n_scales_every_gradient_by_1e9_so_decay_is_void():
    """util.lua 85-88 and train.lua 185-187 (allenai/XNOR-Net 4006d59): under Adam the binarized weights'
    gradient is eq. 7's times (1 - 1/c_in) only, then every gradient is multiplied by 1e9 before optim.adam,
    whose weight decay (added to that gradient) and eps no longer count. One Adam step, worked by hand."""
    model = nn.Sequential(nn.Linear(4, 1, bias=False), nn.Linear(1, 1, bias=False))
    apply_layer_policy(model, binarize_scaled, None, False, True)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.5, -0.25, 1.0, -0.1]]))  # 1.0: the code's STE is 0 there
        model[1].weight.fill_(1.0)
    x = torch.tensor([[1.0, 1.0, 1.0, 1.0 + 2 ** -10]])
    model(x).sum().backward()
    alpha = (0.5 + 0.25 + 1.0 + 0.1) / 4  # 0.4625; the float layer's gradient alpha * (1 - 1 + 1 - x_4) < 0
    g_float = alpha * (1 - 1 + 1 - (1 + 2 ** -10))
    assert torch.allclose(model[1].weight.grad, torch.tensor([[g_float]]))
    XnorCodeGradScale("adam").on_before_optimizer_step(Host(model, epochs=1))
    eq7 = torch.tensor([[0.25 + alpha, 0.25 + alpha, 0.25, 0.25 + alpha]]) * torch.tensor([[1.0, 1.0, 1.0, 1 + 2 ** -10]])
    assert torch.allclose(model[0].weight.grad, 1e9 * 0.75 * eq7)  # (1 - 1/4), no n = 4
    assert torch.allclose(model[1].weight.grad, torch.tensor([[1e9 * g_float]]), rtol=1e-4)  # float32 cancellation
    opt = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    opt.step()
    # first Adam step: -lr * g' / (|g'| + eps), g' = 1e9 g + 5e-4 p: the sign of the gradient, not of the decay
    assert torch.allclose(model[0].weight, torch.tensor([[0.49, -0.26, 0.99, -0.11]]))
    assert torch.allclose(model[1].weight, torch.tensor([[1.01]]))  # decay alone (g' > 0) would give 0.99
    assert XnorCodeGradScale.factor(torch.empty(256, 96, 5, 5), "adam") == 1 - 1 / 96


def test_the_trainer_scales_the_gradient_between_backward_and_step(tmp_path, data_root):
    """One plain-SGD step of BWN with and without XnorCodeGradScale: the binarized layer (8x8, factor
    8 * (1 - 1/8) = 7) moves exactly 7x as far; the float first and last layers move the same."""
    from qbench.config import compose
    from qbench.train import Trainer
    base = ["method=bwn", "model=mlp", "model.hidden=[8,8]", "dataset=mnist", f"data.root={data_root}",
            "data.subset=100", "data.val_subset=100", "trainer.batch_size=100", "trainer.epochs=1",
            "trainer.device=cpu", "trainer.progress=false", "optim=sgd", "optim.momentum=0", "optim.weight_decay=0",
            "optim.lr=0.01", "sched=constant", "method.callbacks.clip_weights=null"]
    moved = []
    for extra in ([], ["++method.callbacks.g={_target_:qbench.methods.XnorCodeGradScale}"]):
        t = Trainer(compose(base + extra), tmp_path / str(len(extra)))
        before = [p.detach().clone() for p in t.model.parameters()]
        t.fit()
        moved.append([(p.detach() - b) for p, b in zip(t.model.parameters(), before)])
    linear = [i for i, p in enumerate(t.model.parameters()) if p.dim() == 2]
    first, middle, last = linear
    assert torch.allclose(moved[1][middle], 7 * moved[0][middle], rtol=1e-3, atol=1e-6)  # float32 differences
    assert moved[0][middle].abs().sum() > 0
    assert torch.equal(moved[1][first], moved[0][first]) and torch.equal(moved[1][last], moved[0][last])
