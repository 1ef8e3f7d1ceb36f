"""Every method x model x dataset composes and validates (or is refused with a clear reason); every model
builds and runs forward and backward."""
import itertools

import pytest
import torch

from qbench.config import check_overrides, compose, foreign_model_settings, group_options, validate
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


@pytest.mark.parametrize("overrides,message", [
    (["method=xnor_magic"], "unknown method 'xnor_magic'; valid: binaryconnect, "),
    (["model=resnet19"], "unknown model 'resnet19'; valid: alexnet_bn, alexnet_dorefa, binarydensenet28"),
    (["method=fp,bnn,nope"], "unknown method 'nope'"),
    (["trainer.epoch=3"], "unknown config key 'trainer.epoch'; keys under 'trainer': amp, batch_size"),
    # + may add keys only where they reach a constructor: a new trainer or top-level key would be ignored
    (["+trainer.epoch=3"], "unknown config key 'trainer.epoch' (+ adds keys only under method, model, optim"),
    (["++data.hold_out=5"], "unknown config key 'data.hold_out' (+ adds keys only under"),
    (["+experiment=bnn__mnist_torch7_mlp_w1_a1_err"], "unknown config key 'experiment' (+ adds keys only under"),
    (["+optim.foo=1"], "Adam.__init__() got an unexpected keyword argument 'foo'"),
    (["method=qat", "method.quant_delay=-2"], "quant_delay must be a whole number of epochs >= 0, got -2"),
    (["trainer.epochs=0"], "trainer.epochs=0 is invalid; allowed: an integer >= 1"),
    (["trainer.epochs=abc"], "trainer.epochs='abc' is invalid"),
    (["trainer.loss=mse"], "trainer.loss='mse' is invalid; valid: cross_entropy, squared_hinge"),
    (["data.subset=-5"], "data.subset=-5 is invalid; allowed: an integer >= 1 or null"),
    (["method=binaryconnect", "method.mode=sometimes"], "'det' or 'stoch', got 'sometimes'"),
    (["optim.lr=0"], "optim.lr=0 is invalid"),
    (["trainer.device=tpu"], "trainer.device='tpu' is invalid; valid: auto, cpu, cuda, cuda:N"),
    (["method=dorefa", "method.w_bits=0"], "bit width must be an integer from 1 to 32, got 0"),
    (["method=dorefa", "method.a_bits=33"], "bit width must be an integer from 1 to 32, got 33"),
    (["method=dorefa", "method.g_bits=2.5"], "bit width must be an integer from 1 to 32, got 2.5"),
    (["method=twn", "method.threshold_factor=-0.7"], "threshold_factor must be > 0, got -0.7"),
    (["method=twn", "method.granularity=row"], "granularity must be 'layer' or 'channel', got 'row'"),
    (["model=resnet20", "dataset=imagenet"], "defined for small inputs"),
    (["optim=sgd", "optim.momentum=abc"], "momentum='abc'"),
    (["sched=multistep", "sched.milestones=abc"], "sched.milestones='abc' is invalid"),
    (["sched=regimes", "sched.regimes=[{from:1,lr:1.0}]"], "'from' epochs must be increasing integers starting at 0"),
    (["sched=regimes", "sched.regimes=[{from:0,lr:0}]"], "needs lr > 0"),
    (["trainer.steps_per_epoch=0"], "trainer.steps_per_epoch=0 is invalid; allowed: an integer >= 1 or null"),
    (["model=mlp", "model.hidden=abc"], "model 'mlp' cannot be built from its settings"),
    (["model=vgg_small", "model.activation=swish"], "unknown activation 'swish' (model.activation); valid: clip01, hardtanh"),
    (["dataset.augment.crop_padding=-3"], "dataset.augment.crop_padding=-3 is invalid"),
    (["dataset=imagenet", "dataset.augment.resize=100"], "dataset.augment.resize=100 is invalid; allowed: null"),
    (["dataset=imagenet", "dataset.augment.resize=[480,256]"], "dataset.augment.resize=[480, 256] is invalid"),
    (["method=ptq"], "method 'ptq' is post-training"),
    (["method=qat", "method.fold_bn=true", "model=mlp"], "has no conv -> batch-norm pair"),
    (["method=qat", "method.freeze_bn_after=-1"], "freeze_bn_after must be a whole number"),
    (["method=qat", "method.w_bits=1"], "bit width must be an integer from 2 to 32, got 1"),
    (["method=bnn", "method.batch_norm=sbn"], "method.batch_norm='sbn' is invalid; valid: standard, shift"),
    (["method=bnn", "method.batch_norm=shift", "model=lenet5", "model.bn=false"], "has none before its last layer"),
    (["method=wage", "model=lenet5", "method.output_quantizer_layers=first"],
     "method.output_quantizer_layers='first' is invalid; valid: all, last"),
    (["method=wage", "model=lenet5", "method.error_gamma=0.5"], "gamma must be null or a number >= 1"),
    (["method=wage", "model=lenet5", "method.quantize_data_input=abc"],
     "method.quantize_data_input='abc' is invalid; valid: true, false"),
    (["method=bnn", "method.stochastic_activations=maybe"], "stochastic_activations must be true or false, got 'maybe'"),
    (["dataset.zca=-1"], "dataset.zca=-1 is invalid; valid: null (no whitening) or ZCA's eigenvalue offset"),
    (["dataset.zca=true"], "dataset.zca=True is invalid; valid: null"),
    (["dataset.gcn=0"], "dataset.gcn=0 is invalid; valid: null or the norm each image is scaled to"),
    (["dataset.lcn=4"], "dataset.lcn=4 is invalid; valid: null or an odd kernel size"),
    (["sched=step", "sched.step_size=0"], "sched.step_size=0 is invalid; allowed: an integer >= 1"),
    (["optim=shift_adamax", "optim.lr=-1"], "optim.lr=-1"),
])
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
        validate(compose(["method=bnn", "method.ste=tanh"]))
