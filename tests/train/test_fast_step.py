"""The fast training step's safety: bf16 autocast never changes a quantized value (a layer whose values bf16
would round computes in float32), and torch.compile either trains what eager trains or falls back to it."""
import logging

import pytest
import torch
from torch import nn

from conftest import DATA
from qbench.config import compose
from qbench.methods import build_method
from qbench.quant.facts import exact_in_bf16

TINY = ["model=mlp", "model.hidden=[64,64]", "dataset=mnist", "data.subset=300", "data.val_subset=200",
        "trainer.batch_size=100", "trainer.epochs=1", "trainer.progress=false", "trainer.device=cpu"]


def _layer(method: str, *overrides):
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.Conv2d(4, 2, 1))
    build_method(compose([f"method={method}", *overrides]).method).apply(net)
    return net[1]  # quantized input and weights (the first layer sees the data; some keep the last in float)


@pytest.mark.parametrize("method,exact", [("bnn", True), ("binaryconnect", True), ("wage", True),
                                          ("bottom_up", True), ("xnor", False), ("dorefa", False), ("qat", False),
                                          ("twn", False), ("sq_bwn", False)])
def test_which_layers_may_compute_in_bf16(method, exact):
    overrides = ["model=lenet5"] if method == "wage" else []
    assert _layer(method, *overrides).low_precision_exact is exact


def test_bnn_layer_in_bf16_equals_float32_exactly():
    layer = _layer("bnn")
    x = torch.randn(2, 8, 6, 6)
    ref = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    # +-1 inputs times +-1 weights, 72 terms: every partial sum is an integer bf16 holds exactly
    assert out.dtype == torch.bfloat16 and torch.equal(out.float(), ref)


def test_bnn_layer_output_in_bf16_is_rounded_past_256():
    """The +-1 operands are exact in bf16, the layer's bf16 output is not: a sum of 257 +1 products (an odd
    integer above 2^8) has 9 significant bits, one more than bf16 holds, and comes out as 256."""
    net = nn.Sequential(nn.Linear(1, 257), nn.Linear(257, 1, bias=False), nn.Linear(1, 1))
    build_method(compose(["method=bnn"]).method).apply(net)
    wide = net[1]
    with torch.no_grad():
        wide.weight.fill_(0.5)  # binarized: every weight +1
    ones = torch.ones(1, 257)
    assert wide(ones).item() == 257
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert wide.low_precision_exact and wide(ones).item() == 256


def test_scaled_and_multibit_layers_stay_float32_under_autocast():
    for method, overrides in (("xnor", []), ("dorefa", ["method.w_bits=2"]), ("twn", [])):
        layer = _layer(method, *overrides)
        x = torch.rand(2, 8, 6, 6)
        ref = layer(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = layer(x)
        assert out.dtype == torch.float32 and torch.equal(out, ref), method


def test_exactness_of_quantizer_values_in_bf16():
    from qbench.nn import FixedPoint
    from qbench.quant import wage_quantize
    from qbench.quant import get_quantizer
    w = torch.randn(1000)
    for q in (lambda v: wage_quantize(v, 8), FixedPoint(9), get_quantizer("ste_sign")):
        v = q(w)
        assert torch.equal(v.to(torch.bfloat16).float(), v)  # what the registry calls exact is exact
    assert exact_in_bf16(FixedPoint(9)) and exact_in_bf16(get_quantizer("ste_sign"))
    assert not exact_in_bf16(FixedPoint(12))  # 12-bit integers need more than bf16's 8 significant bits
    v = FixedPoint(12)(w)
    assert not torch.equal(v.to(torch.bfloat16).float(), v)


@pytest.mark.parametrize("method", ["bnn", "dorefa", "sq_bwn", "tsq"])
def test_quantizers_are_plain_partials_not_hydras_which_check_their_target_on_every_call(method):
    import functools

    from hydra.utils import instantiate

    cfg = compose([f"method={method}"]).method
    built = build_method(cfg)
    for key in ("weight_quantizer", "input_quantizer"):
        q = getattr(built, key)
        if q is None:
            continue
        inner = q.quantizer if isinstance(q, nn.Module) else q  # SQ's StochasticQuantizer, TSQ's Gated
        assert type(inner) is functools.partial, (key, type(inner))
        hydras = instantiate(cfg[key])
        hydras = hydras.quantizer if isinstance(hydras, nn.Module) else hydras
        x = torch.linspace(-1.5, 1.5, 12).view(3, 4)
        assert torch.equal(inner(x), hydras(x))


def _train(overrides, run_dir):
    from qbench.train import Trainer
    run_dir.mkdir(parents=True)
    torch.set_num_threads(1)
    trainer = Trainer(compose(overrides + [f"data.root={DATA}"]), run_dir)
    summary = trainer.fit()
    return summary, {k: v.clone() for k, v in trainer.model.state_dict().items()}


def test_compiled_training_matches_eager(tmp_path):
    eager, a = _train(TINY + ["method=bnn"], tmp_path / "eager")
    compiled, b = _train(TINY + ["method=bnn", "trainer.compile=true", "trainer.compile_backend=aot_eager"],
                         tmp_path / "compiled")
    assert abs(eager["final_val_acc"] - compiled["final_val_acc"]) <= 0.01
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_sq_compiles_with_its_draw_at_every_forward_and_trains_what_eager_trains(tmp_path, caplog):
    """SQ's code draw (a data-dependent count of channels) runs eagerly inside the compiled step
    (torch.compiler.disable): the step no longer falls back to eager as a whole, and draws the same channels."""
    eager, a = _train(TINY + ["method=sq_bwn", "trainer.epochs=4"], tmp_path / "eager")
    with caplog.at_level(logging.WARNING, logger="qbench"):
        compiled, b = _train(TINY + ["method=sq_bwn", "trainer.epochs=4", "trainer.compile=true",
                                     "trainer.compile_backend=aot_eager"], tmp_path / "compiled")
    assert "torch.compile failed" not in caplog.text
    assert abs(eager["final_val_acc"] - compiled["final_val_acc"]) <= 0.01
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)


def test_a_failing_compiler_falls_back_to_eager_with_the_same_result(tmp_path, caplog):
    from torch._dynamo import register_backend

    @register_backend
    def qbench_test_broken(gm, example_inputs):
        raise RuntimeError("no compiler here")

    eager, a = _train(TINY + ["method=sq_bwn", "trainer.epochs=4"], tmp_path / "eager")
    with caplog.at_level(logging.WARNING, logger="qbench"):
        broken, b = _train(TINY + ["method=sq_bwn", "trainer.epochs=4", "trainer.compile=true",
                                   "trainer.compile_backend=qbench_test_broken"], tmp_path / "broken")
    assert "torch.compile failed" in caplog.text and "training in eager mode" in caplog.text
    # the failed first step was undone (weights, random stream for SQ's draws): bit for bit the eager run
    assert eager["final_val_acc"] == broken["final_val_acc"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_evaluation_is_compiled_too_and_falls_back_to_eager_alone(tmp_path, caplog):
    """A compiler that fails only on evaluation's graphs (built under no_grad): training stays compiled,
    evaluation goes on eagerly, and its figures are those of the trained model evaluated eagerly."""
    from torch._dynamo import lookup_backend, register_backend

    from qbench.train import Trainer, evaluate

    @register_backend
    def qbench_test_no_eval(gm, example_inputs):
        if not torch.is_grad_enabled():
            raise RuntimeError("no evaluation graphs here")
        return lookup_backend("aot_eager")(gm, example_inputs)

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.set_num_threads(1)
    trainer = Trainer(compose(TINY + ["method=bnn", "trainer.compile=true", "trainer.compile_backend=qbench_test_no_eval",
                                      f"data.root={DATA}"]), run_dir)
    assert trainer.eval_model is not trainer.model  # compiled
    assert torch._dynamo.config.recompile_limit >= 16  # room for evaluation's graphs beside each stage's
    with caplog.at_level(logging.WARNING, logger="qbench"):
        summary = trainer.fit()
    assert "evaluating in eager mode" in caplog.text and "training in eager mode" not in caplog.text
    assert trainer.step_model is not trainer.model and trainer.eval_model is trainer.model
    assert summary["status"] == "completed"
    assert summary["final_val_acc"] == evaluate(trainer.model, trainer.data.val, trainer.loss_fn)[1]


@pytest.mark.parametrize("override,message", [("trainer.compile=maybe", "trainer.compile='maybe' is invalid"),
                                              ("trainer.channels_last=yes", "trainer.channels_last='yes' is invalid"),
                                              ("trainer.compile_mode=fastest",
                                               "trainer.compile_mode='fastest' is invalid; valid: default, "
                                               "max-autotune, max-autotune-no-cudagraphs, reduce-overhead"),
                                              ("trainer.compile=true trainer.compile_backend=turbo",
                                               "trainer.compile_backend='turbo' is invalid; valid: aot_eager")])
def test_fast_step_setting_mistakes(override, message, data_root):
    from qbench.config import check_overrides
    from qbench.errors import UserError
    with pytest.raises(UserError, match=message):
        check_overrides([*override.split(), "dataset=mnist", "model=mlp"])


def test_a_run_config_from_before_the_fast_step_settings_still_validates():
    from omegaconf import OmegaConf

    from qbench.config import validate
    cfg = compose(["method=bnn", "model=mlp", "dataset=mnist"])
    old = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))  # as a resumed run's config.yaml
    for key in ("compile", "compile_backend", "compile_mode", "channels_last"):
        del old.trainer[key]
    validate(old)


def test_compile_mode_reaches_torch_compile_only_when_set():
    """aot_eager and the other non-inductor backends take no mode: the default one is not passed on."""
    from omegaconf import OmegaConf

    from qbench.config import compile_options
    t = OmegaConf.create({"compile_backend": "aot_eager"})
    assert compile_options(t) == {"backend": "aot_eager"}
    t = OmegaConf.create({"compile_backend": "inductor", "compile_mode": "reduce-overhead"})
    assert compile_options(t) == {"backend": "inductor", "mode": "reduce-overhead"}


def test_bottom_up_on_a_deep_model_stays_compiled_through_every_phase(tmp_path):
    """bottom_up has one phase per layer, each a different forward (which layers quantize, which train) in
    training and in evaluation: 2 x 9 graphs for an 8-layer MLP, past torch's default limit of 8 and the 16
    qbench set before. The trainer sizes the limit from the method's stages, so no phase falls back to eager."""
    from torch._dynamo import register_backend

    from qbench.train import Trainer

    graphs = []

    @register_backend
    def qbench_test_counting(gm, example_inputs):
        graphs.append(torch.is_grad_enabled())
        return gm.forward

    torch._dynamo.reset()
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.set_num_threads(1)
    trainer = Trainer(compose(TINY + ["method=bottom_up", "model.hidden=[16,16,16,16,16,16,16]",
                                      "data.subset=100", "data.val_subset=100", "trainer.epochs=9",
                                      "trainer.compile=true", "trainer.compile_backend=qbench_test_counting",
                                      f"data.root={DATA}"]), run_dir)
    assert trainer.callbacks[0].graph_variants() == 9  # the float phase, then one per layer
    assert torch._dynamo.config.recompile_limit >= 2 * 9 + 8
    summary = trainer.fit()
    assert summary["status"] == "completed"
    assert graphs.count(True) == 9 and graphs.count(False) == 9  # each phase compiled, for training and evaluation


def test_compiled_cpu_runs_draw_eager_random_numbers(tmp_path):
    """On the CPU the trainer makes inductor draw random numbers with eager's generator (fallback_random):
    a compiled stochastic quantizer then gives exactly the eager result for the same seed."""
    import shutil

    import torch._inductor.config as inductor_config

    from qbench.quant.binary import binaryconnect
    from qbench.train import Trainer

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    old = inductor_config.fallback_random
    try:
        inductor_config.fallback_random = False
        Trainer(compose(TINY + ["method=binaryconnect", "method.mode=stoch", "trainer.compile=true",
                                "trainer.compile_backend=aot_eager", "trainer.device=cpu", f"data.root={DATA}"]), run_dir)
        assert inductor_config.fallback_random
        if not (shutil.which("c++") or shutil.which("g++")):
            pytest.skip("inductor needs a C++ compiler on the CPU")
        torch._dynamo.reset()
        w = torch.empty(64, 48).uniform_(-1, 1)
        compiled = torch.compile(lambda v: binaryconnect(v, mode="stoch"), backend="inductor")
        torch.manual_seed(3)
        eager = binaryconnect(w, mode="stoch")
        torch.manual_seed(3)
        assert torch.equal(compiled(w), eager)
        assert 0 < int((eager > 0).sum()) < w.numel()  # a real draw, not all one sign
    finally:
        inductor_config.fallback_random = old
