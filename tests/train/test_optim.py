"""Learning-rate schedules (configs/sched) on a one-parameter optimizer, worked by hand."""
import pytest
import torch

from qbench.config import compose
from qbench.optim import Regimes, build_optimizer, build_scheduler


def _sgd(lr=0.01, weight_decay=1e-4):
    return torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr, momentum=0.9, weight_decay=weight_decay)


def _trace(opt, sched, epochs):
    out = []
    for _ in range(epochs):
        g = opt.param_groups[0]
        out.append((round(g["lr"], 12), g["weight_decay"]))
        opt.step()
        sched.step()
    return out


def test_regimes_set_lr_factor_and_weight_decay_from_each_start_epoch():
    opt = _sgd()
    sched = Regimes(opt, [{"from": 0, "lr": 1.0, "weight_decay": 5e-4}, {"from": 2, "lr": 0.5, "weight_decay": None},
                          {"from": 3, "lr": 0.1, "weight_decay": 0.0}])
    assert _trace(opt, sched, 4) == [(0.01, 5e-4), (0.01, 5e-4), (0.005, 5e-4), (0.001, 0.0)]


def test_default_regimes_are_xnor_nets_train_lua_table():
    """train.lua: epochs 1-18 1e-2 / 5e-4, 19-29 5e-3 / 5e-4, 30-43 1e-3 / 0, 44-52 5e-4 / 0, 53- 1e-4 / 0
    (1-based, inclusive): epoch e (0-based) of qbench is Torch's epoch e + 1."""
    cfg = compose(["sched=regimes", "optim=sgd", "optim.lr=0.01"])
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer(cfg.optim, [{"params": [p]}])
    trace = _trace(opt, build_scheduler(cfg.sched, opt), 55)
    torch_table = [(1, 18, 1e-2, 5e-4), (19, 29, 5e-3, 5e-4), (30, 43, 1e-3, 0.0), (44, 52, 5e-4, 0.0),
                   (53, 55, 1e-4, 0.0)]
    assert trace == [(lr, wd) for a, b, lr, wd in torch_table for _ in range(a, b + 1)]


def test_regimes_survive_a_resume():
    opt = _sgd()
    sched = Regimes(opt, [{"from": 0, "lr": 1.0, "weight_decay": 5e-4}, {"from": 1, "lr": 0.1, "weight_decay": 0.0}])
    opt.step()
    sched.step()
    state_o, state_s = opt.state_dict(), sched.state_dict()
    opt2 = _sgd()
    sched2 = Regimes(opt2, [{"from": 0, "lr": 1.0, "weight_decay": 5e-4}, {"from": 1, "lr": 0.1, "weight_decay": 0.0}])
    opt2.load_state_dict(state_o)
    sched2.load_state_dict(state_s)
    assert _trace(opt2, sched2, 2) == [(0.001, 0.0), (0.001, 0.0)]


@pytest.mark.parametrize("regimes", [[], [5], [{"from": 0}], [{"from": 0, "lr": 1.0, "decay": 1}],
                                     [{"from": 0, "lr": 1.0}, {"from": 0, "lr": 0.5}]])
def test_bad_regimes_name_the_table(regimes):
    with pytest.raises(ValueError, match="regime"):
        Regimes(_sgd(), regimes)


def test_poly_is_darknets_policy_stepped_per_epoch():
    """Darknet policy=poly: lr = lr0 (1 - t / T)^power; XNOR-Net's GoogLeNet: lr 0.1, power 4."""
    cfg = compose(["sched=poly", "optim=sgd", "optim.lr=0.1", "trainer.epochs=4"])
    opt = build_optimizer(cfg.optim, [{"params": [torch.nn.Parameter(torch.zeros(1))]}])
    trace = [lr for lr, _ in _trace(opt, build_scheduler(cfg.sched, opt), 4)]
    assert trace == pytest.approx([0.1 * (1 - e / 4) ** 4 for e in range(4)])  # 0.1, 0.0316, 0.00625, 0.00039
