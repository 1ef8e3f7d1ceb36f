"""SQ, INQ and BinaryRelax: their equations on tensors worked by hand, their schedules, and runs on real
MNIST subsets."""
import math

import pytest
import torch
from torch import nn

from conftest import TINY_MNIST, assert_refused, close, grad_of, metrics_of, qbench, run_dir_of
from qbench.methods import Host, IncrementalQuantization, RelaxationSchedule, StochasticQuantization, apply_layer_policy
from qbench.methods.stages import StagedSchedule
from qbench.nn import FrozenWeights, StochasticQuantizer
from qbench.quant.stochastic import code_roulette
from qbench.quant import (binary_relax, inq_exponents, power_of_two, quantization_error, quantization_probability,
                          roulette_select, sq_binary, sq_ternary)


# --- SQ: quantizers, error, probability, roulette ---------------------------------------------------------
def test_sq_binary_alpha_per_channel_identity_gradient():
    w = torch.tensor([[0.5, -1.5], [0.2, -0.2]])  # alpha = mean |W_i| = [1.0, 0.2]
    assert close(sq_binary(w), [[1.0, -1.0], [0.2, -0.2]])
    assert close(grad_of(sq_binary, w), torch.ones(2, 2))


def test_sq_ternary_layer_threshold_channel_scale():
    w = torch.tensor([[0.9, -0.1], [0.3, -0.6]])  # E|W| = 0.475, Delta = 0.3325: keeps 0.9 and -0.6
    assert close(sq_ternary(w), [[0.9, 0.0], [0.0, -0.6]])  # alpha_0 = 0.9, alpha_1 = 0.6
    assert close(grad_of(sq_ternary, w), torch.ones(2, 2))


def test_sq_ternary_threshold_is_the_codes_centred_mean():
    """conv_layer_ternary.cu 18-31 (fa384c1): Delta = 0.7/N * asum(W - mean(W)); the uncentred W is then
    compared with it (lowbit_functions.cu ternarize_kernel). The paper's TWN Delta is 0.7 E|W|."""
    w = torch.tensor([[0.9, 0.5], [0.7, 0.3]])  # mean 0.6; mean|W - 0.6| = 0.2 -> Delta 0.14: all kept
    assert close(sq_ternary(w), [[0.7, 0.7], [0.5, 0.5]])  # alpha = [(0.9 + 0.5) / 2, (0.7 + 0.3) / 2]
    # the paper's Delta = 0.7 * 0.6 = 0.42 drops 0.3; alpha_1 = 0.7 over the one kept entry
    assert close(sq_ternary(w, delta="paper"), [[0.7, 0.7], [0.7, 0.0]])


def test_quantization_error_per_channel_and_element():
    w = torch.tensor([[0.5, -1.5], [0.2, -0.2], [0.0, 0.0]])
    q = sq_binary(w)  # row 0 -> [1, -1]: ||W - Q||_1 / ||W||_1 = (0.5 + 0.5) / 2; row 1 exact; row 2 zero
    assert close(quantization_error(w, q), [0.5, 0.0, 0.0])
    assert close(quantization_error(w, q, "element"), [[1.0, 1 / 3], [0.0, 0.0], [0.0, 0.0]])


def test_quantization_probability_functions():
    e = torch.tensor([0.5, 0.25])  # q = 1/e = [2, 4]
    assert close(quantization_probability(e, "linear"), [1 / 3, 2 / 3])
    assert close(quantization_probability(e, "constant"), [0.5, 0.5])
    s2, s4 = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-4))
    assert close(quantization_probability(e, "sigmoid"), [s2 / (s2 + s4), s4 / (s2 + s4)])
    assert close(quantization_probability(e, "softmax"), [1 / (1 + math.exp(2)), 1 / (1 + math.exp(-2))])
    with pytest.raises(ValueError, match="prob_fn"):
        quantization_probability(e, "cubic")


@pytest.mark.parametrize("n,ratio,k", [(8, 0.5, 4), (8, 0.75, 6), (8, 0.875, 7), (5, 0.5, 3), (3, 0.5, 2),
                                       (64, 0.875, 56), (8, 1.0, 8), (10, 0.0, 0)])
def test_roulette_selects_exactly_round_r_n(n, ratio, k):
    p = torch.rand(n) + 0.01
    for _ in range(20):
        assert int(roulette_select(p / p.sum(), ratio).sum()) == k


def test_roulette_prefers_low_error_channels_with_roulette_probabilities():
    torch.manual_seed(0)
    e = torch.tensor([0.1, 0.2, 0.4, 0.8])
    p = quantization_probability(e, "linear")  # proportional to [10, 5, 2.5, 1.25]
    draws = 20000
    one = torch.stack([roulette_select(p, 0.25) for _ in range(draws)]).double().mean(0)
    assert close(one, p.double(), atol=0.015)  # one draw: P(i) = p_i
    two = torch.stack([roulette_select(p, 0.5) for _ in range(draws)]).double().mean(0)
    # two draws without replacement: P(i in set) = p_i + sum_{j != i} p_j p_i / (1 - p_j)
    pd = p.double()
    exact = torch.stack([pd[i] + sum(pd[j] * pd[i] / (1 - pd[j]) for j in range(4) if j != i) for i in range(4)])
    assert close(two, exact, atol=0.015)
    assert torch.all(two[:-1] > two[1:])  # lower error, selected more often


def test_stochastic_quantizer_hybrid_weight_and_gradient():
    q = StochasticQuantizer(sq_binary)
    w = torch.tensor([[0.5, -1.5], [0.2, -0.4]])
    q.mask = torch.tensor([True, False])  # channel 0 quantized, channel 1 full precision
    assert close(q(w), [[1.0, -1.0], [0.2, -0.4]])
    assert close(grad_of(q, w), torch.ones(2, 2))  # both reach the float weights
    q.mask = None
    assert close(q(w), [[1.0, -1.0], [0.3, -0.3]])


def _tiny_model(quantizer):
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))
    apply_layer_policy(model, quantizer, None, False, False)
    return model


def test_sq_schedule_selects_round_r_n_channels_per_layer_each_stage():
    model = _tiny_model(StochasticQuantizer(sq_binary))
    cb = StochasticQuantization(epochs=8, ratios=[0.5, 0.75, 0.875, 1.0], selection="paper")
    t = Host(model, epochs=1)
    assert cb.lr_restarts() == [0, 2, 4, 6]
    for epoch, ratio in zip(range(8), [0.5, 0.5, 0.75, 0.75, 0.875, 0.875, 1.0, 1.0]):
        cb.on_epoch_start(t, epoch)
        cb.on_train_batch_start(t, 1)
        for m in (model[0], model[2], model[4]):
            mask = m.weight_quantizer.mask
            n = m.weight.shape[0]
            assert (mask is None and ratio == 1.0) or int(mask.sum()) == math.floor(ratio * n + 0.5)
        assert cb.on_epoch_end(t, epoch)["sq_ratio"] == ratio


def _kept_share(e, ratio, draws=20000):
    torch.manual_seed(0)
    e = torch.tensor(e, dtype=torch.float64)
    return sum((~code_roulette(e, ratio)).double() for _ in range(draws)) / draws


def test_code_roulette_keeps_int_1_minus_r_n_channels_in_float_with_probability_e():
    """conv_layer_binary.cu 78-96 (fa384c1): real_num = int((1 - ratio/100) num) channels are set to real, one
    draw at a time, each hit with probability norm[n] / sum over the channels not yet drawn."""
    e = [0.1, 0.2, 0.3, 0.4]  # sums to 1: p = e
    assert int((~code_roulette(torch.tensor(e), 0.5)).sum()) == 2 and int((~code_roulette(torch.tensor(e), 0.75)).sum()) == 1
    assert torch.allclose(_kept_share(e, 0.75), torch.tensor(e, dtype=torch.float64), atol=0.012)  # one draw: e_i
    # two draws: P(i kept) = p_i + sum_{j != i} p_j p_i / (1 - p_j)
    two = [p + sum(q * p / (1 - q) for q in e if q != p) for p in e]
    assert torch.allclose(_kept_share(e, 0.5), torch.tensor(two, dtype=torch.float64), atol=0.012)
    # a channel with no error is never kept in float, so fewer can be kept than asked
    assert (~code_roulette(torch.tensor([0.0, 0.5, 0.5, 0.0]), 0.0)).tolist() == [False, True, True, False]


def test_code_and_paper_draws_differ_as_the_issue_measured():
    """r = 0.75 over 8 channels with e = 0.2 .. 0.9: the code quantizes the lowest-error channel with
    probability ~0.90 and the highest ~0.61; the paper's reading (f(1/e), round(rN) quantized) ~0.96 and ~0.55."""
    e = [0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
    code = 1 - _kept_share(e, 0.75)
    assert abs(code[0] - 0.90) < 0.015 and abs(code[-1] - 0.61) < 0.015
    torch.manual_seed(0)
    prob = quantization_probability(torch.tensor(e, dtype=torch.float64), "linear")
    paper = sum(roulette_select(prob, 0.75).double() for _ in range(20000)) / 20000
    assert abs(paper[0] - 0.96) < 0.015 and abs(paper[-1] - 0.55) < 0.015


def test_sq_code_selection_redraws_at_every_forward_evaluation_included():
    from qbench.config import compose
    from qbench.methods import build_method

    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    method = build_method(compose(["method=sq_bwn"]).method)  # selection: code
    method.apply(model)
    sq = [cb for cb in method.callbacks if isinstance(cb, StochasticQuantization)][0]
    sq.on_epoch_start(Host(model, epochs=1), 0)  # ratio 0.5: int(0.5 * 16) = 8 channels of layer 0 stay float
    model.eval()
    masks = []
    with torch.no_grad():
        for _ in range(6):
            model(torch.randn(2, 6))
            masks.append(model[0].weight_quantizer.mask.clone())
    assert all(int(m.sum()) == 8 for m in masks) and len({tuple(m.tolist()) for m in masks}) > 1


def test_stages_split_epochs_and_restart_points():
    s = StagedSchedule(epochs=5, n_stages=4)
    assert [s.stage(e) for e in range(5)] == [0, 0, 1, 2, 3] and s.lr_restarts() == [0, 2, 3, 4]
    assert StagedSchedule(epochs=5, n_stages=4, stage_mode="continuous").lr_restarts() is None
    with pytest.raises(ValueError, match="fewer than the 4"):
        StagedSchedule(epochs=3, n_stages=4)


# --- INQ -----------------------------------------------------------------------------------------------
def test_power_of_two_eq3_by_hand():
    w = torch.tensor([0.9, -0.5, 0.3, 0.1, -0.05, 0.7, 0.75, 0.25, 0.2499])
    assert inq_exponents(w, bits=3) == (0, -1)  # s = 0.9: n1 = floor(log2(1.2)) = 0; n2 = 0 + 1 - 2 = -1
    # levels {1, 0.5, 0}: eq. 3's [0.75, 1.5) -> 1, [0.25, 0.75) -> 0.5, below 0.25 -> 0 (ties up) ...
    assert close(power_of_two(w, bits=3, ties="up"), [1.0, -0.5, 0.5, 0.0, 0.0, 0.5, 1.0, 0.5, 0.0])
    # ... and the code's nearest level with ties down: 0.75 -> 0.5, 0.25 -> 0 (the default)
    assert close(power_of_two(w, bits=3), [1.0, -0.5, 0.5, 0.0, 0.0, 0.5, 0.5, 0.0, 0.0])
    assert inq_exponents(w, bits=5) == (0, -7)  # 5 bits: n2 = n1 + 1 - 8
    assert close(power_of_two(torch.tensor([0.1, 0.006, 0.0039]), bits=5, n1=0), [0.125, 2 ** -7, 0.0])
    assert inq_exponents(torch.tensor([0.74]), 5)[0] == -1 and inq_exponents(torch.tensor([0.75]), 5)[0] == 0


def _weight_cluster_zero(weight: float, m: int) -> float:
    """The official code's nearest power of two or zero (src/caffe/util/power2.cpp 38-64 at c7f6a60), line by
    line: candidates 0, then +-2^i for i = M-7 .. M, a strictly smaller distance needed to replace the best."""
    best, ind, flag = 100.0, 0, 1.0
    if best > abs(weight):
        best, flag = abs(weight), 0.0
    for i in range(m - 7, m + 1):
        if best > abs(weight - 2.0 ** i):
            best, ind, flag = abs(weight - 2.0 ** i), i, 1.0
        if best > abs(weight + 2.0 ** i):
            best, ind, flag = abs(weight + 2.0 ** i), i, -1.0
    return flag * 2.0 ** ind


def test_power_of_two_matches_the_official_nearest_level_search_ties_included():
    g = torch.Generator().manual_seed(0)
    n1 = 0
    ties = [s * 0.75 * 2.0 ** k for k in range(-6, 1) for s in (1, -1)] + [2.0 ** -8, -(2.0 ** -8)]
    w = torch.cat([torch.randn(2000, generator=g, dtype=torch.float64) * 0.4, torch.tensor(ties, dtype=torch.float64)])
    ours = power_of_two(w, bits=5, n1=n1)  # 5 bits: 2^-7 .. 2^0, the code's M-7 .. M
    assert ours.tolist() == [_weight_cluster_zero(v, n1) for v in w.tolist()]


def test_inq_reselects_each_portion_over_every_weight_as_the_code_does():
    """reselect=all: a weight frozen at stage 1 that the other weights outgrow leaves the frozen portion at
    stage 2 and trains again from its power of two (blob.cpp 519-542); reselect=float keeps it frozen."""
    for reselect, frozen_again in (("all", False), ("float", True)):
        model = _tiny_model(FrozenWeights(bits=4))
        cb = IncrementalQuantization(epochs=4, portions=[0.25, 0.5, 1.0], bits=4, init="given", reselect=reselect)
        t = Host(model, epochs=1)
        layer = model[0]
        with torch.no_grad():
            layer.weight.copy_(torch.linspace(0.1, 0.9, layer.weight.numel()).view_as(layer.weight))
        cb.on_epoch_start(t, 0)
        first, values = cb.layers["0"]["mask"].clone(), cb.layers["0"]["values"].clone()
        with torch.no_grad():  # the float weights grow past every frozen one (a frozen value is at most 1.0)
            layer.weight.copy_(torch.where(first, layer.weight, torch.full_like(layer.weight, 1.2)))
        cb.on_epoch_start(t, cb.lr_restarts()[1])
        again = cb.layers["0"]["mask"]
        assert bool(again[first].all()) is frozen_again
        if reselect == "all":
            assert int(again.sum()) == round(0.5 * layer.weight.numel()) and not again[first].any()
            assert torch.equal(layer.weight[first], values[first])  # float again, from its power of two


def test_inq_never_changes_a_frozen_weight_and_ends_on_the_grid():
    torch.manual_seed(0)
    model = _tiny_model(FrozenWeights(bits=4))
    cb = IncrementalQuantization(epochs=4, portions=[0.5, 0.75, 0.875, 1.0], bits=4, init="given",
                                 last_stage="share", reselect="float")
    t = Host(model, epochs=1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    x, y = torch.randn(64, 6), torch.randint(0, 3, (64,))
    frozen_before = {}
    for epoch in range(4):
        cb.on_epoch_start(t, epoch)
        for name, s in cb.layers.items():
            share = s["mask"].double().mean().item()
            assert abs(share - cb.portions[epoch]) < 0.02  # the accumulated portion of each layer
            if name in frozen_before:  # earlier frozen weights are still frozen and unchanged
                old_mask, old_vals = frozen_before[name]
                assert torch.all(s["mask"][old_mask])
                assert torch.equal(s["values"][old_mask], old_vals[old_mask])
        snapshot = {n: (s["mask"].clone(), model.get_submodule(n).weight.detach().clone()) for n, s in cb.layers.items()}
        for _ in range(10):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            cb.on_after_optimizer_step(t)
        for n, (mask, w0) in snapshot.items():
            w1 = model.get_submodule(n).weight.detach()
            assert torch.equal(w1[mask], w0[mask])  # momentum and weight decay did not move a frozen weight
            assert not torch.equal(w1[~mask], w0[~mask]) or mask.all()  # the rest trained
        frozen_before = {n: (s["mask"].clone(), s["values"].clone()) for n, s in cb.layers.items()}
    for n, s in cb.layers.items():
        w = model.get_submodule(n).weight.detach()
        assert s["mask"].all() and torch.equal(w, power_of_two(w, 4, s["n1"]))  # every weight on the grid


def test_inq_last_stage_is_one_step_as_the_codes_run_py():
    """run.py 33-34 (c7f6a60): the last portion's solver runs max_iter 1, so trainer.epochs goes to the other
    stages and every weight is quantized after the last epoch's training, before it is evaluated."""
    model = _tiny_model(FrozenWeights(bits=5))
    cb = IncrementalQuantization(epochs=3, init="given")  # portions 0.5, 0.75, 0.875 | 1.0 after epoch 3
    assert cb.n_stages == 3 and cb.lr_restarts() == [0, 1, 2]
    t = Host(model, epochs=1)
    shares = []
    for epoch in range(3):
        cb.on_epoch_start(t, epoch)
        cb.on_train_epoch_end(t, epoch)
        shares.append(round(float(cb.layers["0"]["mask"].double().mean()), 3))
        metrics = cb.on_epoch_end(t, epoch)
    assert shares[:2] == [0.5, 0.75] and shares[2] == 1.0  # epoch 3 trained at 0.875, then all quantized
    assert metrics["inq_portion"] == 1.0 and metrics["inq_stage"] == 4
    share = IncrementalQuantization(epochs=4, init="given", last_stage="share")
    assert share.n_stages == 4
    with pytest.raises(ValueError, match="leaves no stage to train"):
        IncrementalQuantization(epochs=3, portions=[1.0], init="given")


def test_inq_recomputes_n1_at_every_stage_from_all_weights_as_the_code():
    """blob.cpp 527-529 (c7f6a60): each stage's n1 = floor(log2(4/3 max|W|)) over the layer's weights, the
    frozen ones included. A float weight that grew to 2.0 raises n1 from 0 to 1, so it is frozen as 2, not
    clamped to the first stage's largest level 1."""
    model = nn.Sequential(nn.Linear(4, 1, bias=False))
    apply_layer_policy(model, FrozenWeights(bits=5), None, False, False)
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[0.9, 0.6, 0.3, 0.1]]))  # n1 = floor(log2(1.2)) = 0
    cb = IncrementalQuantization(epochs=3, portions=[0.5, 0.75, 1.0], init="given", last_stage="share")
    t = Host(model, epochs=1)
    cb.on_epoch_start(t, 0)  # 0.9 -> 1, 0.6 -> 0.5 frozen
    assert close(model[0].weight, [[1.0, 0.5, 0.3, 0.1]]) and cb.layers["0"]["n1"] == 0
    with torch.no_grad():
        model[0].weight[0, 3] = 2.0  # retraining grew a float weight past 1.5 * 2^0
    cb.on_epoch_start(t, 1)
    assert cb.layers["0"]["n1"] == 1  # the frozen 1 and 0.5 are levels of the new codebook too: unchanged
    assert close(model[0].weight, [[1.0, 0.5, 0.3, 2.0]])


def test_inq_magnitude_partition_freezes_largest_first():
    model = _tiny_model(FrozenWeights(bits=5))
    w0 = model[0].weight.detach().clone()
    cb = IncrementalQuantization(epochs=4, init="given")
    cb.on_epoch_start(Host(model, epochs=1), 0)
    mask = cb.layers["0"]["mask"]
    assert w0.abs()[mask].min() >= w0.abs()[~mask].max()


def test_frozen_weights_get_no_gradient():
    q = FrozenWeights()
    q.mask = torch.tensor([[True, False]])
    assert close(grad_of(q, torch.tensor([[0.5, 0.3]])), [[0.0, 1.0]])


# --- BinaryRelax ------------------------------------------------------------------------------------------
def test_binary_relax_eq10_by_hand():
    w = torch.tensor([0.5, -1.5, 0.2, -0.2])  # mean |w| = 0.6: Proj = 0.6 sign(w)
    assert close(binary_relax(w, lam=1.0), [0.55, -1.05, 0.4, -0.4])  # (Proj + w) / 2
    assert close(binary_relax(w, lam=3.0), [(1.8 + 0.5) / 4, (-1.8 - 1.5) / 4, (1.8 + 0.2) / 4, (-1.8 - 0.2) / 4])
    assert close(binary_relax(w, lam=math.inf), [0.6, -0.6, 0.6, -0.6])  # phase 2: the projection
    assert close(grad_of(lambda v: binary_relax(v, lam=2.0), w), torch.ones(4))  # gradient at u applied to w
    # ternary, as the authors' quantize_tnn (util/quant.py 19-30, 6b101aa): Delta = 0.7 E|w| = 0.3325 keeps 0.9
    # and -0.6, and alpha is the mean over ALL four entries of |w| 1[|w| >= Delta]: 1.5 / 4 = 0.375
    wt = torch.tensor([0.9, -0.1, 0.3, -0.6])
    assert close(binary_relax(wt, lam=math.inf, projection="ternary"), [0.375, 0.0, 0.0, -0.375])
    assert close(binary_relax(wt, lam=1.0, projection="ternary"), [0.6375, -0.05, 0.15, -0.4875])
    # |w| = Delta is kept (data.ge(delta)): E|w| = 5, Delta = 3.5; alpha = (3.5 + 16.5) / 4 = 5
    assert close(binary_relax(torch.tensor([3.5, -16.5, 0.0, 0.0]), lam=math.inf, projection="ternary"),
                 [5.0, -5.0, 0.0, 0.0])


def test_binary_relax_takes_lambda_as_a_tensor_too():
    w = torch.tensor([0.5, -1.5, 0.2, -0.2])
    assert close(binary_relax(w, lam=torch.tensor(3.0)), binary_relax(w, lam=3.0))
    assert close(binary_relax(w, lam=torch.tensor(math.inf)), [0.6, -0.6, 0.6, -0.6])
    assert close(grad_of(lambda v: binary_relax(v, lam=torch.tensor(math.inf)), w), torch.ones(4))


def test_binaryrelax_schedule_writes_lambda_in_place_so_a_compiled_model_compiles_once():
    import functools

    torch._dynamo.reset()
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    apply_layer_policy(model, functools.partial(binary_relax, projection="binary"), None, False, False)
    cb, trainer = RelaxationSchedule(epochs=4, lambda0=2.0, lambda_growth=1.5, phase2_epoch=3), Host(model, epochs=1)
    graphs = []

    def counting(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled, x = torch.compile(model, backend=counting), torch.randn(5, 3)
    bound = []
    for epoch in range(4):
        cb.on_epoch_start(trainer, epoch)
        layer = model[0]
        bound.append(layer.weight_quantizer)
        lam = layer.weight_quantizer.keywords["lam"]
        assert float(lam) == cb.lambda_at(epoch)  # 2, 3, 4.5, then inf (phase 2)
        assert close(compiled(x), model(x))
    assert all(q is bound[0] for q in bound)  # bound once, then updated in place
    assert len(graphs) == 1


def test_binaryrelax_lambda_sequence():
    cb = RelaxationSchedule(epochs=10, lambda0=1.0, lambda_growth=1.04)
    assert cb.phase2_epoch == 8  # default: the last fifth
    assert [cb.lambda_at(e) for e in range(3)] == [1.0, 1.04, 1.04 ** 2]
    assert math.isinf(cb.lambda_at(8)) and math.isinf(cb.lambda_at(9))
    with pytest.raises(ValueError, match="lambda_growth"):
        RelaxationSchedule(epochs=10, lambda_growth=1.0)


# --- end to end on real MNIST -------------------------------------------------------------------------------
def test_sq_bwn_and_sq_twn_train_on_real_mnist(tmp_path):
    for method in ("sq_bwn", "sq_twn"):
        p = qbench("train", f"method={method}", *TINY_MNIST, "trainer.epochs=4", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
        m = metrics_of(run_dir_of(p))
        assert [r["sq_ratio"] for r in m] == [0.5, 0.75, 0.875, 1.0]
        assert [r["lr"] for r in m] == [0.001] * 4  # each stage starts a fresh schedule (restart mode)
        assert m[-1]["val_acc"] > 0.6  # 1000 real digits, 4 short stages: learning, not chance


def test_inq_trains_fp_stage_then_portions_on_real_mnist(tmp_path):
    p = qbench("train", "method=inq", *TINY_MNIST, "trainer.epochs=4", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = run_dir_of(p)
    m = metrics_of(run)
    assert [r["inq_portion"] for r in m] == [0.0, 0.5, 0.75, 1.0]  # the last epoch trains at 0.875, then all
    assert m[-1]["inq_frozen_share"] == 1.0 and m[-1]["val_acc"] > 0.6
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    for k, w in state.items():
        if k.endswith("weight") and w.dim() == 2:  # every linear weight is a power of two or zero, <= 5 bits
            mags = w.abs()[w != 0]
            assert torch.equal(torch.exp2(torch.log2(mags).round()), mags)
            assert len(torch.unique(torch.log2(mags))) <= 8


def test_binaryrelax_logs_lambda_and_phase_on_real_mnist(tmp_path):
    p = qbench("train", "method=binaryrelax", *TINY_MNIST, "trainer.epochs=5", "method.lambda_growth=1.5",
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    m = metrics_of(run_dir_of(p))
    assert [r["binaryrelax_phase"] for r in m] == [1, 1, 1, 1, 2]
    assert [r["binaryrelax_lambda"] for r in m][:4] == [1.0, 1.5, 2.25, 3.375] and m[-1]["val_acc"] > 0.6


@pytest.mark.parametrize("args,message", [
    (["method=sq_bwn", "method.ratios=[0.5,0.4,1.0]"], "method.ratios=[0.5, 0.4, 1.0] is not strictly increasing"),
    (["method=sq_twn", "method.ratios=[0.5,0.75]"], "does not end at 1.0"),
    (["method=sq_bwn", "method.prob_fn=cubic"], "method.prob_fn='cubic' is invalid; valid: constant, linear"),
    (["method=inq", "method.portions=[0,1.0]"], "method.portions=[0.0, 1.0] has a value outside (0, 1]"),
    (["method=inq", "method.portions=[0.5,1.5]"], "has a value outside (0, 1]"),
    (["method=inq", "method.init=/no/such/run"], "method.init='/no/such/run' is not a run directory"),
    (["method=binaryrelax", "method.init=/no/such/run"], "is not a run directory"),
    (["method=binaryrelax", "method.lambda_growth=0.9"], "method.lambda_growth=0.9 is invalid; allowed: a number > 1"),
    (["method=sq_bwn", "trainer.epochs=2"], "trainer.epochs=2 is fewer than the 4 SQ stages"),
])
def test_staged_method_mistakes_are_one_line_and_write_nothing(tmp_path, args, message):
    assert_refused(tmp_path, args, message)


def test_inq_from_a_finished_fp_run_and_resume_restores_its_masks(tmp_path):
    from conftest import kill_after_epoch
    fp = run_dir_of(qbench("train", "method=fp", *TINY_MNIST, "trainer.epochs=1", cwd=tmp_path))
    p = qbench("train", "method=inq", f"method.init={fp}", *TINY_MNIST, "trainer.epochs=3", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    m = metrics_of(run_dir_of(p))
    assert [r["inq_portion"] for r in m] == [0.5, 0.75, 1.0]  # no fp stage: the init run is the FP model
    assert m[0]["val_acc"] > 0.6  # starts from the trained model: half quantized, still accurate

    args = ["method=inq", "method.partition=random", "method.reselect=float", *TINY_MNIST, "data.subset=3000", "trainer.epochs=5", "seed=2"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = run_dir_of(qbench("train", *args, cwd=tmp_path / "a"))
    killed = kill_after_epoch(args, tmp_path / "b", epoch=3)
    resumed = qbench("train", f"resume={killed}", cwd=tmp_path / "b")
    assert resumed.returncode == 0, resumed.stderr
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(metrics_of(killed)) == strip(metrics_of(full))
    a = torch.load(full / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_sq_selection_has_one_default_the_official_layers_draw():
    """The schedule built by hand and the one the method configs build draw channels the same way."""
    import inspect

    from qbench.config import compose
    default = inspect.signature(StochasticQuantization).parameters["selection"].default
    assert default == "code"
    assert {compose([f"method={m}"]).method.selection for m in ("sq_bwn", "sq_twn")} == {default}
