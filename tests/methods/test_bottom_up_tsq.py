"""Bottom-to-top fixed-point training (Lin & Talathi 2016) and Two-Step Quantization (Wang et al. 2018):
their equations on tensors worked by hand, their schedules, and runs on real MNIST subsets."""
import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import TINY_MNIST, assert_refused, close, grad_of, metrics_of, qbench, run_dir_of
from qbench.methods import BottomUpSchedule, Host, TwoStepQuantization, apply_layer_policy
from qbench.methods.bottom_up import parameter_owners
from qbench.methods.tsq import _rows
from qbench.nn import FixedPoint, Gated
from qbench.quant import (fixed_point, fraction_bits, hwgq, hwgq_step, sparse_threshold, tsq_init, tsq_least_squares,
                          tsq_objective, tsq_weight, twn)


# --- fixed point ---------------------------------------------------------------------------------------
def test_fixed_point_by_hand():
    # 4 bits signed, f = 2: integers [-8, 7] times 1/4; x * 4 = [1.2, -2.4, 8, -10, 0.5]
    x = torch.tensor([0.3, -0.6, 2.0, -2.5, 0.125])
    assert close(fixed_point(x, 4, 2), [0.25, -0.5, 1.75, -2.0, 0.0])  # clipped at 7/4 and -8/4; 0.5 -> 0 (even)
    assert torch.equal(grad_of(lambda v: fixed_point(v, 4, 2), x), torch.tensor([1.0, 1, 0, 0, 1]))
    # unsigned 4 bits, f = 3: [0, 15] / 8
    assert close(fixed_point(torch.tensor([0.3, 1.9, 2.5]), 4, 3, signed=False), [0.25, 1.875, 1.875])


def test_fraction_bits_is_the_finest_step_that_holds_the_max():
    assert fraction_bits(1.0, 8) == 6        # qmax 127: 127/64 = 1.98 >= 1 > 127/128
    assert fraction_bits(0.5, 8) == 7
    assert fraction_bits(127 / 64, 8) == 6   # exactly the top of the f = 6 range
    assert fraction_bits(2.0, 8) == 5
    assert fraction_bits(1.0, 4, signed=False) == 3  # qmax 15: 15/8 >= 1
    assert fraction_bits(0.0, 8) == 0


def test_fixed_point_module_signed_weights_unsigned_relu_activations():
    q = FixedPoint(bits=4)
    w = torch.tensor([0.9, -0.3, 0.05])  # max 0.9: f = floor(log2(7 / 0.9)) = 2, step 1/4
    assert close(q(w), [1.0, -0.25, 0.0])
    a = torch.tensor([0.0, 0.9, 0.3])  # no negative value: unsigned, f = floor(log2(15 / 0.9)) = 4, step 1/16
    assert close(q(a), [0.0, 0.875, 0.3125])
    q.enabled = False
    assert torch.equal(q(w), w) and close(q.max_val, 0.9)  # switched off, still observing


def test_fixed_point_module_agrees_with_the_pure_function():
    g = torch.Generator().manual_seed(0)
    for bits in (2, 4, 8):
        for scale in (1e-3, 0.5, 1.0, 3.7, 127 / 64):
            for x in (torch.randn(50, generator=g) * scale, torch.rand(50, generator=g) * scale,
                      torch.tensor([scale, -scale / 3])):
                signed = bool(x.min() < 0)
                f = fraction_bits(float(x.abs().max()), bits, signed)
                assert torch.equal(FixedPoint(bits)(x), fixed_point(x, bits, f, signed)), (bits, scale)
    assert torch.equal(FixedPoint(4)(torch.zeros(3)), torch.zeros(3))


# --- bottom-to-top phases ------------------------------------------------------------------------------
def _bn_model():
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 8), nn.BatchNorm1d(8), nn.ReLU(),
                          nn.Linear(8, 3))
    apply_layer_policy(model, FixedPoint(4), FixedPoint(4, observer="ema"), False, False)
    return model


def test_parameters_belong_to_the_nearest_layer_before_them():
    model = _bn_model()
    owners = parameter_owners(model, [model[0], model[3], model[6]])
    expect = {model[0].weight: 0, model[0].bias: 0, model[1].weight: 0, model[1].bias: 0,
              model[3].weight: 1, model[4].bias: 1, model[6].weight: 2, model[6].bias: 2}
    assert all(owners[id(p)] == i for p, i in expect.items())


def test_phases_fix_layers_below_train_one_layer_leave_layers_above_float():
    model = _bn_model()
    cb = BottomUpSchedule(epochs=8, phase_epochs=2)  # no init: a float phase, then one phase per layer
    cb.setup(model)
    t = Host(model, epochs=1)
    assert cb.lr_restarts() == [0, 2, 4, 6]
    layers = [model[0], model[3], model[6]]
    for epoch, phase in zip(range(8), [-1, -1, 0, 0, 1, 1, 2, 2]):
        cb.on_epoch_start(t, epoch)
        assert [m.weight_quantizer.enabled for m in layers] == [i <= phase for i in range(3)]
        assert [m.input_quantizer.enabled for m in layers[1:]] == [i <= phase for i in (1, 2)]
        trainable = [p.requires_grad for m in (model[0], model[1], model[3], model[4], model[6]) for p in m.parameters()]
        owner = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
        assert trainable == [phase < 0 or o == phase for o in owner]
        assert cb.on_epoch_end(t, epoch)["bottom_up_phase"] == phase + 1

    # one SGD step with momentum and weight decay in phase 1 moves layer 1 (and its BN) only
    cb.on_epoch_start(t, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    F.cross_entropy(model(torch.randn(16, 6)), torch.randint(0, 3, (16,))).backward()
    opt.step()
    moved = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k]) and "running" not in k
             and "batches" not in k and "_val" not in k}
    assert moved == {"3.weight", "3.bias", "4.weight", "4.bias"}


def test_phase_epochs_must_fill_the_run():
    model = _bn_model()
    with pytest.raises(ValueError, match=r"trainer.epochs=5 is not the 4 bottom-up phases .* set trainer.epochs=8"):
        BottomUpSchedule(epochs=5, phase_epochs=2).setup(model)
    cb = BottomUpSchedule(epochs=3, init="some/run")  # from a float run: one phase per layer, no float phase
    cb.setup(model)
    assert [cb.phase(e) for e in range(3)] == [0, 1, 2]


def test_bottom_up_trains_phase_by_phase_on_real_mnist(tmp_path):
    p = qbench("train", "method=bottom_up", *TINY_MNIST, "trainer.epochs=4", "method.w_bits=6", "method.a_bits=6",
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    m = metrics_of(run_dir_of(p))
    assert [r["bottom_up_phase"] for r in m] == [0, 1, 2, 3]
    assert [r["bottom_up_fixed_point_layers"] for r in m] == [0, 1, 2, 3]
    assert [r["lr"] for r in m] == [0.001] * 4 and m[-1]["val_acc"] > 0.6  # one schedule per phase


# --- TSQ step 1: sparse HWGQ codes ---------------------------------------------------------------------
def test_sparse_hwgq_threshold_levels_and_gradient_by_hand():
    eps = sparse_threshold(0.7)
    assert abs(eps - 0.5244005) < 1e-6  # Phi^-1(0.7)
    d = hwgq_step(2, 0.7)
    x = torch.tensor([-1.0, 0.3, 0.5, 0.6, 1.0, 5.0])
    # <= eps: 0 (0.3 and 0.5 would be 0 anyway below d/2 = 0.36 for 0.3; 0.5 is above d/2 but below eps)
    assert close(hwgq(x, 2, 0.7), [0, 0, 0, d, d, 3 * d])
    assert torch.equal(grad_of(lambda v: hwgq(v, 2, 0.7), x), torch.tensor([0.0, 0, 0, 1, 1, 0]))
    assert torch.equal(hwgq(x, 2, 0.5), hwgq(x, 2))  # sparsity 0.5 is plain HWGQ


def test_sparse_hwgq_step_minimises_the_mse_and_zeroes_the_share_asked_for():
    d = hwgq_step(2, 0.7)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400_000, generator=g, dtype=torch.float64)

    def mse(step):
        q = torch.where(x > sparse_threshold(0.7), torch.round(x.clamp(0, 3 * step) / step) * step, 0.0)
        return float(((q - x.clamp_min(0)) ** 2 * (x > 0)).mean())

    assert mse(d) <= min(mse(d * 0.97), mse(d * 1.03))
    assert abs(float((hwgq(x, 2, 0.7) == 0).double().mean()) - 0.7) < 0.005


# --- TSQ step 2: least squares -------------------------------------------------------------------------
def test_tsq_least_squares_by_hand_with_orthonormal_inputs():
    # X = I: y = [1.0, 0.9, 0.1, -1.1]. From codes [1, 1, 1, 1]: alpha = 0.9 / 4 = 0.225; the sweep gives
    # u_j = y_j / 0.225 = [4.4, 4, 0.44, -4.9] -> [1, 1, 0, -1]; then alpha = (1 + 0.9 + 1.1) / 3 = 1.0
    y = torch.tensor([[1.0], [0.9], [0.1], [-1.1]], dtype=torch.float64)
    codes, alpha = tsq_least_squares(torch.eye(4, dtype=torch.float64), y, torch.ones(4, 1), torch.ones(1), iters=1)
    assert close(codes, [[1.0], [1.0], [0.0], [-1.0]]) and close(alpha, [1.0])
    # the best ternary fit, found by trying all 81 codes with their best alpha
    candidates = [torch.tensor(t, dtype=torch.float64) for t in itertools.product((-1, 0, 1), repeat=4) if any(t)]
    best = min(((y.flatten() - (c @ y.flatten()) / (c @ c) * c) ** 2).sum() for c in candidates)
    assert abs(float(tsq_objective(torch.eye(4, dtype=torch.float64), y, codes, alpha) + (y ** 2).sum()) - best) < 1e-12
    b_codes, b_alpha = tsq_least_squares(torch.eye(4, dtype=torch.float64), y, torch.ones(4, 1), torch.ones(1),
                                         levels="binary", iters=2)
    assert close(b_codes, [[1.0], [1.0], [1.0], [-1.0]]) and close(b_alpha, [0.775])  # (1 + .9 + .1 + 1.1) / 4


def test_tsq_least_squares_never_increases_the_residual_and_beats_twn():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(300, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(3, 6, generator=g, dtype=torch.float64)
    y = x @ w.T
    gram, cross = x.T @ x, x.T @ y
    codes, alpha = tsq_init(w, "ternary")
    values = [tsq_objective(gram, cross, codes, alpha)]
    for _ in range(4):
        codes, alpha = tsq_least_squares(gram, cross, codes, alpha, iters=1)
        values.append(tsq_objective(gram, cross, codes, alpha))
    assert all(bool((b <= a + 1e-9).all()) for a, b in zip(values, values[1:]))
    assert bool((values[-1] < values[0]).all())  # least squares on the data beats TWN's weight-space fit
    brute = []
    for c in range(3):
        best = float("inf")
        for t in itertools.product((-1, 0, 1), repeat=6):
            t = torch.tensor(t, dtype=torch.float64)
            xt = x @ t
            if xt.abs().sum() > 0:
                a = (xt @ y[:, c]) / (xt @ xt)
                best = min(best, float(((y[:, c] - a * xt) ** 2).sum()))
        brute.append(best)
    found = values[-1] + (y ** 2).sum(0)
    assert all(f >= b - 1e-9 for f, b in zip(found.tolist(), brute))  # a local optimum, never below the global


def test_tsq_weight_keeps_a_step_two_solution():
    codes = torch.tensor([[1.0, 0, -1, 1], [0, 0, 1, 0]])
    w = codes * torch.tensor([[0.4], [1.5]])
    assert torch.equal(tsq_weight(w), w) and torch.equal(twn(w, 0.7, "channel"), w)
    wb = torch.tensor([[1.0, -1, 1], [-1, -1, 1]]) * torch.tensor([[0.3], [2.0]])
    assert close(tsq_weight(wb, "binary"), wb)


def test_auxiliary_variable_by_hand():
    from qbench.quant import tsq_auxiliary
    values, thresholds = torch.tensor([0.0, 1.0]), torch.tensor([0.5])  # Q(z) = 1[z > 0.5]
    code, v = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.3, 0.3, 0.9])
    # code 1 at v = 0.3: staying costs (1 - 0)^2 = 1, moving just above 0.5 costs lambda * 0.2^2 = 0.04
    z = tsq_auxiliary(code, v, values, thresholds, lam=1.0)
    assert z[0] > 0.5 and abs(float(z[0]) - 0.5) < 1e-6 and z[1] == 0.3 and z[2] == 0.9
    # with lambda = 100 the move costs 4 > 1: z stays at v
    assert torch.equal(tsq_auxiliary(code, v, values, thresholds, lam=100.0), v)


def test_sparse_hwgq_compiles_to_one_graph_without_tracing_scipy():
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch._dynamo.reset()
    x = torch.linspace(-2, 2, 9)
    eager = hwgq(x, 2, 0.7)  # the first use fits epsilon and Delta (as the method's probe call does)
    compiled = torch.compile(lambda v: hwgq(v, 2, 0.7), backend=counting)
    assert torch.equal(compiled(x), eager) and torch.equal(compiled(x + 0.1), hwgq(x + 0.1, 2, 0.7))
    assert len(graphs) == 1  # epsilon and Delta entered the graph as constants: no break into scipy


def test_sparse_hwgq_bins_are_the_quantizer():
    from qbench.quant import hwgq_bins
    values, thresholds = hwgq_bins(2, 0.7)
    x = torch.linspace(-1, 4, 501, dtype=torch.float64)
    assert torch.equal(values[torch.searchsorted(thresholds, x)], hwgq(x, 2, 0.7))


def test_conv_rows_reproduce_the_convolution():
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False)
    x = torch.randn(2, 3, 7, 7)
    y = _rows(conv, x) @ conv.weight.flatten(1).T
    ref = conv(x).permute(0, 2, 3, 1).reshape(-1, 4)
    assert torch.allclose(y, ref, atol=1e-5)


def test_step2_solves_each_layer_and_keeps_an_exact_ternary_layer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, padding=1), nn.ReLU(),
                          nn.Flatten(), nn.Linear(6 * 8 * 8, 5))
    quant = Gated(tsq_weight)
    apply_layer_policy(model, quant, None, False, False)
    with torch.no_grad():  # layer 0 already ternary per channel: step 2 must give it back unchanged
        model[0].weight.copy_(twn(model[0].weight, 0.7, "channel"))
    w0 = model[0].weight.clone()
    cb = TwoStepQuantization(epochs=2)
    residuals = cb.step2(model, [torch.randn(8, 1, 8, 8) for _ in range(3)])
    assert torch.allclose(model[0].weight, w0, atol=1e-6) and residuals["0"] < 1e-10
    for m in (model[0], model[2], model[5]):
        assert m.weight_quantizer.enabled
        for row in m.weight.flatten(1):  # each output channel on {-alpha, 0, +alpha}
            assert len(torch.unique(row.abs())) <= 2
    assert 0 <= residuals["2"] < 1 and 0 <= residuals["5"] < 1 and cb.done
    state = cb.state_dict()
    fresh = TwoStepQuantization(epochs=2)
    fresh.load_state_dict(state)
    for m in (model[0], model[2], model[5]):
        m.weight_quantizer.enabled = False
    fresh.on_train_start(Host(model, epochs=1))  # a resumed run quantizes again from its first epoch
    assert all(m.weight_quantizer.enabled for m in (model[0], model[2], model[5]))


def test_step2_with_the_activation_quantizer_lowers_the_code_error():
    from functools import partial
    torch.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1),
                          nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(8 * 4 * 4, 5))
    apply_layer_policy(model, Gated(tsq_weight), partial(hwgq, k=2, sparsity=0.6), False, False)
    model.train()
    for _ in range(3):  # batch-norm statistics of real-looking activations
        model(torch.randn(16, 1, 8, 8))
    cb = TwoStepQuantization(epochs=2, rows=2000)
    cb.step2(model, [torch.randn(16, 1, 8, 8) for _ in range(4)])
    from qbench.methods.tsq import code_path
    assert code_path(model, "3") is not None and code_path(model, "8") is None  # the last layer feeds the loss
    # "0": conv -> BN -> ReLU -> HWGQ of conv "3"; "3": conv -> BN -> ReLU -> pool -> flatten -> HWGQ of "8"
    assert set(cb.code_errors) == {"0", "3"}
    assert all(after <= before for before, after in cb.code_errors.values())  # never worse than linear
    assert cb.code_error == sum(after for _, after in cb.code_errors.values()) / 2


def test_tsq_trains_step1_solves_step2_and_fine_tunes_on_real_mnist(tmp_path):
    p = qbench("train", "method=tsq", *TINY_MNIST, "model.hidden=[128,128]", "trainer.epochs=4", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = run_dir_of(p)
    m = metrics_of(run)
    assert [r["tsq_step"] for r in m] == [1, 1, 2, 2] and [r["lr"] for r in m] == [0.001, 0.0005, 0.001, 0.0005]
    assert "tsq_relative_residual" not in m[0] and 0 <= m[2]["tsq_relative_residual"] < 0.5
    assert m[-1]["val_acc"] > 0.6
    w = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]["4.weight"]  # the middle layer
    assert all(len(torch.unique(row.abs())) <= 2 for row in tsq_weight(w))  # forward: {-alpha_c, 0, alpha_c}


def test_tsq_on_a_conv_net_with_real_mnist(tmp_path):
    p = qbench("train", "method=tsq", "model=lenet5", "dataset=mnist", "data.subset=600", "data.val_subset=300",
               "trainer.batch_size=100", "trainer.progress=false", "trainer.epochs=2", "method.calib_batches=2",
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    m = metrics_of(run_dir_of(p))
    assert [r["tsq_step"] for r in m] == [1, 2] and 0 <= m[1]["tsq_relative_residual"] < 1
    assert 0 <= m[1]["tsq_code_error"] < 1  # conv2's codes for fc1, solved with the activation quantizer
    assert m[-1]["val_acc"] > 0.3


@pytest.mark.parametrize("args,message", [
    (["method=bottom_up", "method.phase_epochs=2", "trainer.epochs=5"],
     "trainer.epochs=5 is not the 5 bottom-up phases (one per layer plus the floating-point phase) x 2 epochs each; "
     "set trainer.epochs=10"),  # the default mlp has 4 layers
    (["method=bottom_up", "method.phase_epochs=0"], "method.phase_epochs=0 is invalid; allowed: an integer >= 1"),
    (["method=bottom_up", "method.w_bits=1"], "bit width must be an integer from 2 to 32, got 1"),
    (["method=bottom_up", "trainer.epochs=3"], "trainer.epochs=3 is fewer than the 5 bottom-up phases"),
    (["method=tsq", "method.sparsity=0.3"], "sparsity=0.3 is invalid; allowed: 0.5 <= sparsity < 1"),
    (["method=tsq", "method.w_levels=quaternary"], "method.w_levels='quaternary' is invalid; valid: ternary, binary"),
    (["method=tsq", "method.calib_batches=0"], "method.calib_batches=0 is invalid; allowed: an integer >= 1"),
    (["method=tsq", "method.ls_lambda=0"], "method.ls_lambda=0 is invalid; allowed: a number > 0"),
    (["method=tsq", "method.a_bits=16"], "HWGQ bit width must be an integer from 1 to 8, or 32 (off), got 16"),
])
def test_bottom_up_and_tsq_mistakes_are_one_line_and_write_nothing(tmp_path, args, message):
    assert_refused(tmp_path, args, message)


def test_fraction_bits_matches_log2_for_many_maxima():
    for m in torch.logspace(-4, 4, 200).tolist():
        f = fraction_bits(m, 8)
        assert 127 * 2.0 ** -f >= m > 127 * 2.0 ** -(f + 1) - 1e-12 or math.isclose(m, 127 * 2.0 ** -f)
