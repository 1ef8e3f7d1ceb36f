"""Every method x model x dataset composes and validates (or is refused with a clear reason); every model
builds and runs forward and backward."""
import itertools

import pytest
import torch

from conftest import BAD_OVERRIDES
from qbench.config import check_buildable, check_overrides, compose, foreign_model_settings, group_options, validate
from qbench.errors import UserError
from qbench.methods import build_method
from qbench.models import MODELS, create_model

METHODS, MODELS_, DATASETS = group_options("method"), group_options("model"), group_options("dataset")


def test_every_group_option_is_registered():
    assert set(MODELS_) == set(MODELS)
    assert {"fp", "binaryconnect", "bnn"} <= set(METHODS)
    assert set(DATASETS) == {"mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagenet"}


@pytest.mark.parametrize("method,model,dataset", list(itertools.product(METHODS, MODELS_, DATASETS)))
def test_composition(method, model, dataset):
    cfg = compose([f"method={method}", f"model={model}", f"dataset={dataset}"])
    assert (cfg.method.name, cfg.model.name, cfg.dataset.name) == (method, model, dataset)
    small_only = MODELS[model].max_image_size is not None
    if cfg.method.get("post_training"):
        with pytest.raises(UserError, match="post-training"):
            validate(cfg)
    elif foreign_model_settings(cfg):  # e.g. WAGE's model.bn=false on a model without a bn switch
        with pytest.raises(UserError, match="is not a setting of model"):
            validate(cfg)
    elif small_only and cfg.dataset.image_size > MODELS[model].max_image_size:
        with pytest.raises(UserError, match="defined for small inputs"):
            validate(cfg)
    else:
        validate(cfg)


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("model", MODELS_)
@pytest.mark.parametrize("method", METHODS)
def test_every_model_trains_a_step_with_every_method(model, method, size):
    cfg = compose([f"method={method}", f"model={model}"])
    if foreign_model_settings(cfg):
        pytest.skip(f"method {method} needs a model setting that {model} lacks (refused by validate)")
    if size > (MODELS[model].max_image_size or size):
        pytest.skip(f"model {model} is defined for small inputs only (refused by validate above 64 px)")
    m = build_method(cfg.method)
    kwargs = {k: v for k, v in cfg.model.items() if k not in ("name", "summary")}
    if m.activation:
        kwargs["activation"] = m.activation
    # narrow versions: this test is about every method reaching every layer, not about size
    if "width" in kwargs:
        kwargs["width"] = 0.125
    if "growth_rate" in kwargs:
        kwargs["growth_rate"] = 8
    net = create_model(model, 3, 10, size, **kwargs)
    m.apply(net)
    out = net(torch.randn(2 if size > 32 else 4, 3, size, size))
    assert out.shape == (2 if size > 32 else 4, 10)
    out.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters() if p.requires_grad)


def test_resnet18_imagenet_stem():
    net = create_model("resnet18", 3, 1000, 224)
    assert net(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    assert sum(p.numel() for p in net.parameters()) == 11_689_512  # torchvision's resnet18


def test_cifar_resnet_parameter_counts():
    # He et al. 2016, sec. 4.2: ResNet-20 0.27M, ResNet-56 0.85M parameters (option A shortcuts)
    for name, expected in (("resnet20", 0.27e6), ("resnet56", 0.85e6)):
        n = sum(p.numel() for p in create_model(name, 3, 10, 32).parameters())
        assert abs(n - expected) / expected < 0.02, (name, n)


def test_vgg_small_layout():
    net = create_model("vgg_small", 3, 10, 32)
    convs = [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)]
    fcs = [m.out_features for m in net.modules() if isinstance(m, torch.nn.Linear)]
    assert convs == [128, 128, 256, 256, 512, 512] and fcs == [1024, 1024, 10]


@pytest.mark.parametrize("overrides,message", BAD_OVERRIDES)
def test_bad_overrides_are_one_line_errors(overrides, message, data_root):
    with pytest.raises(UserError) as e:
        check_overrides(overrides + ["dataset=mnist"] * ("dataset" not in " ".join(overrides)))
    assert message in str(e.value) and "\n" not in str(e.value)


def test_hwgq_activations_combine_with_any_weight_quantizer():
    from qbench.quant import hwgq
    for method in ("bwn", "twn", "dorefa"):
        cfg = compose([f"method={method}", "method.input_quantizer=hwgq"])
        assert build_method(cfg.method).input_quantizer is hwgq
    cfg = compose(["method=twn", "method.input_quantizer={_target_:qbench.quant.hwgq,_partial_:true,k:3}"])
    assert build_method(cfg.method).input_quantizer.keywords == {"k": 3}


def test_back_to_simplicity_knobs_on_the_bnn_method():
    from qbench.quant import sign
    cfg = compose(["method=bnn", "method.ste=approxsign", "method.clip_threshold=1.3", "method.scaling=channel"])
    m = build_method(cfg.method)
    w = torch.tensor([[0.5, -2.0]])
    assert torch.allclose(m.weight_quantizer(w), sign(w) * 1.25)  # channel scale mean|w| = 1.25
    assert m.callbacks[0].bound == 1.3  # weights clipped at the same threshold
    with pytest.raises(UserError, match="ste must be 'clip' or 'approxsign', got 'tanh'"):
        check_buildable(compose(["method=bnn", "method.ste=tanh"]))


def test_the_check_builds_the_optimizer_the_run_builds(monkeypatch):
    """The check before a launch builds the run's own parameter groups (here BinaryConnect's per-layer learning
    rates, GlorotLRScale) on the meta device, through optim.optimizer_for as the Trainer does."""
    import qbench.optim
    from qbench.build import build
    cfg = compose(["method=binaryconnect", "method.callbacks.glorot_lr_scale.exponent=1", "model=mlp",
                   "dataset=mnist"])

    def groups(opt):
        return [(g["lr"], [tuple(p.shape) for p in g["params"]]) for g in opt.param_groups]
    built_by_check, real = [], qbench.optim.optimizer_for
    monkeypatch.setattr(qbench.optim, "optimizer_for", lambda *a: built_by_check.append(real(*a)) or built_by_check[-1])
    check_buildable(cfg)
    run = build(cfg)
    run = groups(real(cfg.optim, run.model, run.method.callbacks))
    assert len({lr for lr, _ in run}) > 1  # one learning rate per binarized layer, as the run trains
    assert built_by_check and all(groups(opt) == run for opt in built_by_check)
    assert all(p.is_meta for opt in built_by_check for g in opt.param_groups for p in g["params"])


def _leaf_keys(node, prefix=""):
    from omegaconf import DictConfig

    for k in node.keys():
        if isinstance(node._get_node(k), DictConfig):
            yield from _leaf_keys(node[k], f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}"


def test_every_key_of_every_config_refuses_a_value_of_the_wrong_type():
    """#31.7: every key of every group option, set to a word, is refused before anything runs -- except the
    free-text keys qbench.config.FREE_TEXT names (descriptions, reproduce's tags) and data.root (a folder, which
    check_data looks for)."""
    from qbench.config import FREE_TEXT

    imagenet_only = {m for m in MODELS_ if MODELS[m].max_image_size is None}
    bases = [[]] + [[f"method={m}"] + ["model=lenet5"] * (m == "wage") for m in METHODS if m != "ptq"] \
        + [[f"model={m}"] + ["dataset=imagenet"] * (m in imagenet_only) for m in MODELS_] \
        + [[f"dataset={d}"] + ["model=resnet18"] * (d == "imagenet") for d in DATASETS] \
        + [[f"optim={o}"] for o in group_options("optim")] + [[f"sched={s}"] for s in group_options("sched")]
    accepted, seen = [], set()
    for base in bases:
        cfg = compose(base)
        own = base[0].split("=")[0] if base else None
        for key in _leaf_keys(cfg):
            top, leaf = key.split(".")[0], key.rsplit(".", 1)[-1]
            if top in ("hydra", "resume") or (own and top != own) or top in FREE_TEXT or leaf in FREE_TEXT:
                continue
            if (key, tuple(base) if top == own else ()) in seen:
                continue
            seen.add((key, tuple(base) if top == own else ()))
            try:
                check_overrides(base + [f"{key}=maybe"], data=False)
                accepted.append((base, key))
            except UserError as e:
                assert "\n" not in str(e)
    assert len(seen) > 400  # every method's, model's, dataset's, optimizer's and schedule's keys were walked
    assert accepted == [([], "data.root")], accepted
    with pytest.raises(UserError, match="'mnist' .* not found under data root 'maybe'"):
        check_overrides(["dataset=mnist", "data.root=maybe"])
