"""WAGE: its five quantizers and its update against the paper's equations (and the official code's
constants), worked by hand; a run on real MNIST that stays on WAGE's grids."""
import json

import pytest
import torch

from conftest import REPO, qbench, run_dir_of
from qbench.optim import WAGEGradientDescent
from qbench.quant import (wage_activation, wage_error, wage_gradient, wage_init, wage_quantize, wage_scale,
                          wage_weight)
from qbench.quant.wage import wage_init_limit, wage_shift, wage_sigma


def close(a, b):
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=1e-7)


def grad_of(fn, x, g=None):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.backward(torch.ones_like(y) if g is None else g)
    return x.grad


def test_q_eq2_on_the_k_bit_grid():
    x = torch.tensor([0.3, -0.2, 0.8, -0.9, 0.1])
    assert close(wage_quantize(x, 2), [0.5, 0.0, 0.5, -0.5, 0.0])  # sigma = 0.5, clip to +-0.5
    assert close(wage_quantize(x, 3), [0.25, -0.25, 0.75, -0.75, 0.0])  # sigma = 0.25, clip to +-0.75
    y = wage_quantize(torch.randn(1000), 8)
    assert torch.equal(y * 128, (y * 128).round()) and y.abs().max() <= 1 - 1 / 128


def test_shift_and_layer_scale_match_the_official_vgg7_and_lenet5_logs():
    assert close(wage_shift(torch.tensor([0.3, 3.0, 0.75])), [0.25, 4.0, 1.0])  # log2: -1.74, 1.58, -0.42
    # VGG-7's fan-ins; the official log prints Scale: 2 16 16 16 16 32 32 16
    fans = [27, 1152, 1152, 2304, 2304, 4608, 8192, 1024]
    assert [wage_scale(f, 2) for f in fans] == [2, 16, 16, 16, 16, 32, 32, 16]
    # LeNet-5 (32C5-MP2-64C5-MP2-512FC-10): the official MNIST log prints Scale: 2 16 16 8
    assert [wage_scale(f, 2) for f in (25, 800, 1024, 512)] == [2, 16, 16, 8]
    assert wage_init_limit(27, 2) == 0.75 and wage_init_limit(3, 2) == 1.0  # max(1.5 sigma, sqrt(3 / fan_in))
    torch.manual_seed(0)
    w = wage_init(torch.empty(64, 1152), bits=2)  # U(-0.75, 0.75) rounded to the grid of 0.5
    assert set(w.unique().tolist()) == {-0.5, 0.0, 0.5}
    for v in (-0.5, 0.0, 0.5):  # beta = 1.5: "equal probabilities for ternary weights when initialized"
        assert abs((w == v).float().mean() - 1 / 3) < 0.01
    assert set(wage_init(torch.empty(8, 3), bits=2).unique().tolist()) <= {-0.5, 0.0, 0.5}  # L = 1: clipped


def test_weights_eq7_divided_by_alpha_identity_gradient():
    w = torch.tensor([[0.3, -0.2, 0.8]])  # fan_in 3: alpha = max(Shift(0.75 / 1), 1) = 1
    assert close(wage_weight(w, 2), [[0.5, 0.0, 0.5]])
    assert close(grad_of(lambda v: wage_weight(v, 2), w), [[1.0, 1.0, 1.0]])
    w16 = torch.full((2, 1152), 0.3)  # alpha = 16
    assert close(wage_weight(w16, 2), torch.full((2, 1152), 0.5 / 16))


def test_activations_eq8_clip_derivative_kept():
    x = torch.tensor([0.3, -0.2, 0.8, -0.9])
    assert close(wage_activation(x, 2), [0.5, 0.0, 0.5, -0.5])
    assert close(grad_of(lambda v: wage_activation(v, 2), x), [1.0, 1.0, 0.0, 0.0])  # 0 outside (-0.5, 0.5)


def test_errors_eq9_shifted_to_the_window_of_the_largest():
    x = torch.zeros(3)
    e = torch.tensor([0.3, -0.1, 0.05])  # Shift(0.3) = 0.25: e / 0.25 = [1.2, -0.4, 0.2]
    assert close(grad_of(lambda v: wage_error(v, 3), x, e), [0.75, -0.5, 0.25])  # 3 bits: step 0.25, clip 0.75
    assert close(wage_error(e, 8), e)  # identity forward
    assert close(grad_of(lambda v: wage_error(v, 8), x, torch.zeros(3)), [0.0, 0.0, 0.0])


def test_errors_quantized_where_the_official_code_does_relu_qe_qa():
    """The official NN.py: relu -> Q_E -> Q_A. Backward, Q_E quantizes the error after Q_A's clip mask and before
    the ReLU's mask, so its Shift(max|e|) also sees errors of units the ReLU then drops."""
    x = torch.tensor([0.3, -0.2, 2.0])  # 2.0 is outside Q_A's clip: its error is masked before Q_E
    e = torch.tensor([0.3, -0.1, 0.5])  # masked: [0.3, -0.1, 0]; Shift(0.3) = 0.25 -> [1.2, -0.4, 0] -> 3 bits
    assert close(grad_of(lambda v: wage_activation(v, 8, error_bits=3), x, e), [0.75, -0.5, 0.0])
    x = torch.tensor([-1.0, 0.3])  # the first unit is dead after the ReLU
    e = torch.tensor([0.5, 0.1])  # Q_E first: Shift(0.5) = 0.5 -> [1.0, 0.2] -> [0.75, 0.25]; then the ReLU's mask
    assert close(grad_of(lambda v: wage_activation(torch.relu(v), 8, error_bits=3), x, e), [0.0, 0.25])
    # (quantized after the mask instead, the window would be Shift(0.1) = 0.125 and the live error 0.75)
    assert close(grad_of(lambda v: wage_activation(v, 8), x, e), [0.0, 0.1])  # Q_A alone: -1 is beyond its clip


def test_errors_table2_window_left_shifted_by_gamma():
    """Section 4.3: the right boundary becomes max|e| / gamma; the largest errors saturate."""
    x = torch.zeros(3)
    e = torch.tensor([0.3, -0.1, 0.05])  # gamma 2: 2 e / Shift(0.3) = 2 e / 0.25 = [2.4, -0.8, 0.4]
    assert close(grad_of(lambda v: wage_error(v, 3, gamma=2), x, e), [0.75, -0.75, 0.5])  # clip 0.75, step 0.25
    e = torch.tensor([0.3, -0.01, 0.02])  # gamma 8: 8 e / 0.25 = [9.6, -0.32, 0.64]; at gamma 1 both small ones are 0
    assert close(grad_of(lambda v: wage_error(v, 3, gamma=8), x, e), [0.75, -0.25, 0.75])
    assert close(grad_of(lambda v: wage_error(v, 3), x, e), [0.75, 0.0, 0.0])
    assert close(grad_of(lambda v: wage_error(v, 3, gamma=None), x, e), [0.75, 0.0, 0.0])  # null is gamma 1
    for bad in (0.5, float("inf"), "2", True):
        with pytest.raises(ValueError, match="gamma must be null or a number >= 1"):
            wage_error(x, 3, gamma=bad)


def test_table3_rows_keep_sigma_kg_times_eta_as_section_4_4_says():
    """Section 4.4: eta is halved for each bit k_G loses, so every T3 row takes steps of the same largest size,
    sigma(k_G) * eta = 1/16, as T1's k_G = 8, eta = 8."""
    from qbench.results.registry import load_paper
    rows = [f for f in load_paper("wage").figures if f.table == "T3" and f.experiment.get("overrides")]
    assert len(rows) == 10
    for f in rows:
        k = f.experiment["overrides"]["method.g_bits"]
        assert wage_sigma(k) * f.experiment["overrides"]["optim.lr"] == 1 / 16, f.id


def test_gradients_eq11_stochastic_rounding_unbiased_on_grid():
    torch.manual_seed(0)
    g = torch.tensor([0.3, -0.1, 0.0])  # Shift(0.3) = 0.25; lr 8: 8 g / 0.25 = [9.6, -3.2, 0]
    draws = torch.stack([wage_gradient(g, bits=8, lr=8.0) for _ in range(20000)]) * 128  # sigma(8) = 1/128
    assert set(draws[:, 0].unique().tolist()) == {9.0, 10.0} and set(draws[:, 1].unique().tolist()) == {-3.0, -4.0}
    assert torch.all(draws[:, 2] == 0)
    assert abs(draws[:, 0].mean() - 9.6) < 0.02 and abs(draws[:, 1].mean() + 3.2) < 0.02  # E[sr(x)] = x


def test_gradient_keeps_fractions_below_16_bits_as_the_codes_q_does():
    """Quantize.py (9d57688): G passes LR * x through Q(., bitsR = 16), and Q returns x unchanged for more than
    15 bits -- so a fraction of 2^-17 still rounds up with probability 2^-17. Worked exactly: with the same
    random stream, entry i rounds up iff u_i < frac_i."""
    n = 1_000_000
    g = torch.full((n,), (3 + 2 ** -17) / 8)
    g[0] = 1.0  # max|g| = 1: Shift = 1, so x = 8 g = 3 + 2^-17 (8 for the first entry)
    gen = torch.Generator().manual_seed(0)
    u = torch.rand(n, generator=torch.Generator().manual_seed(0))
    out = wage_gradient(g, bits=8, lr=8.0, generator=gen) * 128
    expected = 3 + (u < 2 ** -17).float()
    expected[0] = 8
    assert torch.equal(out, expected) and int((out[1:] == 4).sum()) > 0  # rounded to 2^-15 first, none would be


def test_wage_update_eq14_clips_to_the_weight_range():
    p = torch.nn.Parameter(torch.tensor([0.49, -0.2, 0.0]))
    opt = WAGEGradientDescent([p], lr=8, g_bits=8, w_bits=2)
    p.grad = torch.tensor([-0.25, 0.25, 0.0])  # Shift(0.25) = 0.25: 8 g / 0.25 = [-8, 8, 0] exactly
    opt.step()
    assert close(p.data, [0.5, -0.2 - 8 / 128, 0.0])  # 0.49 + 1/16 clipped to 1 - sigma(2) = 0.5


def test_wage_trains_lenet5_on_real_mnist_on_its_grids(tmp_path):
    p = qbench("train", "method=wage", "model=lenet5", "dataset=mnist", "data.subset=1000", "data.val_subset=500",
               "trainer.epochs=2", "trainer.progress=false", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = run_dir_of(p)
    cfg = (run / "config.yaml").read_text()
    assert "WAGEGradientDescent" in cfg and "loss: sse" in cfg and "bn: false" in cfg  # the method's defaults
    m = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert m[-1]["val_acc"] > 0.3 and m[0]["lr"] == 8  # 40 integer steps on 1000 digits: learning (chance 0.1)
    state = torch.load(run / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(k.endswith("weight") for k in state)  # no biases, as the official code's layers
    weights = list(state.values())
    assert len(weights) == 4 and all(w.abs().max() <= 0.5 for w in weights)  # clipped to 1 - sigma(2)
    # stored as 8-bit integers: started on the grid of 0.5, moved by multiples of sigma(k_G) = 1/128
    assert all(torch.equal(w * 128, torch.round(w * 128)) for w in weights)
    for w in weights:
        alpha = wage_scale(w[0].numel(), 2)
        assert set((wage_weight(w, 2) * alpha).unique().tolist()) <= {-0.5, 0.0, 0.5}  # ternary / alpha


def test_wage_keeps_user_overrides():
    from qbench.config import compose
    cfg = compose(["method=wage", "optim=sgd", "trainer.loss=cross_entropy", "trainer.epochs=3", "model=lenet5"])
    assert cfg.optim._target_ == "torch.optim.SGD" and cfg.trainer.loss == "cross_entropy" and cfg.trainer.epochs == 3
    assert cfg.sched.milestones == [200, 250] and cfg.model.bn is False and cfg.model.bias is False


def test_wage_quantizes_the_input_image_with_q_a():
    """Section 4.1: "the input grayscale images are regarded as activations and quantized by Equation 8 where
    alpha equals to 1"; the official NN.py applies Q_A to X / 127.5 - 1."""
    from qbench.config import compose
    from qbench.methods import build_method
    from qbench.models import create_model
    cfg = compose(["method=wage", "model=lenet5", "dataset=mnist"])
    model = create_model("lenet5", 1, 10, 28, bn=False)
    rows = build_method(cfg.method).apply(model)
    assert [r.input for r in rows] == ["wage_activation(bits=8,error_bits=8,gamma=None)"] * 4
    assert [r.output for r in rows] == ["fp"] * 3 + ["wage_error(bits=8,gamma=None)"]  # the code's 'last' Q_E
    x = torch.tensor([0, 38.5, 255]) / 127.5 - 1  # pixels 0, 38.5, 255 -> -1, -0.698..., 1
    first = model.get_submodule(rows[0].name)
    assert close(first.quantize_input(x), [-127 / 128, -89 / 128, 127 / 128])  # the 1/128 grid, clipped


def test_vgg7_in_wage_form_has_the_official_weight_count():
    from qbench.models import create_model
    net = create_model("vgg7", 3, 10, 32, bn=False, bias=False)
    assert sum(p.numel() for p in net.parameters()) == 12_973_440  # the official log: "CONV: 4574592 FC: 8398848
    # Total: 12973440", every parameter a weight; LeNet-5's log: "CONV: 52000 FC: 529408 Total: 581408"
    assert sum(p.numel() for p in create_model("lenet5", 1, 10, 28, bn=False, bias=False).parameters()) == 581_408


def test_the_old_bit_width_names_still_work_with_a_line_saying_so(tmp_path, capsys):
    """WAGE's bits_w/a/g/e are now w_bits/a_bits/g_bits/e_bits, as DoReFa, QAT and PTQ name them. The old names
    still compose (with one line on stderr from the command line), and the run configs in results/ written
    with them are read under the new names, so their tables and exports are unchanged."""
    from qbench.config import compose, load_run_config, renamed

    assert renamed(["method=wage", "method.bits_w=3", "+method.bits_e=6"], say=True) == [
        "method=wage", "method.w_bits=3", "+method.e_bits=6"]
    assert capsys.readouterr().err.splitlines() == [
        "qbench: method.bits_w is now method.w_bits (the old name still works)",
        "qbench: method.bits_e is now method.e_bits (the old name still works)"]
    cfg = compose(["method=wage", "method.bits_g=5"])
    assert cfg.method.g_bits == 5 and cfg.optim.g_bits == 5
    old = REPO / "results" / "wage" / "run_records" / "0_wage-lenet5-mnist-s0"
    run = load_run_config(old)
    assert "bits_w" not in run.method and run.method.w_bits == 2 and run.optim.g_bits == 8
    assert run.dataset.storage == "in_memory"  # a setting added since, with the value the run had without it
