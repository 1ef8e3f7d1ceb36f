"""Architectures of issue 5: parameter counts against stated references, both input sizes, and the knobs."""
import pytest
import torch

from qbench.errors import UserError
from qbench.methods import apply_layer_policy
from qbench.models import create_model
from qbench.quant import ste_sign


def keras_count(model) -> int:
    """Parameters as Keras counts them (larq zoo's figures): batch-norm moving mean/var included."""
    return (sum(p.numel() for p in model.parameters())
            + sum(b.numel() for n, b in model.named_buffers() if "running" in n))


def torch_count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_resnete18_matches_larq_zoo():
    # larq zoo, larq_zoo/literature/resnet_e.py docstring: "Parameters: 11 699 368" (ImageNet, 1000 classes)
    assert keras_count(create_model("resnete18", 3, 1000, 224)) == 11_699_368


def test_binarydensenet37_matches_larq_docs():
    # larq docs (larq/docs PR #85 model summaries): binary_densenet37_dilated "Total params 8.7 M";
    # dilation changes no parameter, so BDN37 has the same count
    for name in ("binarydensenet37", "binarydensenet37_dilated"):
        assert abs(keras_count(create_model(name, 3, 1000, 224)) - 8.7e6) < 0.05e6


def test_binarydensenet28_by_hand_from_the_reference_definition():
    # larq zoo densenet.py: stem 7x7 conv (64) + BN; dense layer = BN(c) + 3x3 conv c -> 64;
    # transition = BN(c) + 1x1 conv c -> round(c // r / 32) * 32; head BN + FC with bias. Keras counts 4 per BN channel.
    c, total = 64, 3 * 64 * 49 + 4 * 64
    for block, (n, r) in enumerate(zip((6, 6, 6, 5), (2.7, 2.7, 2.2, None))):
        for _ in range(n):
            total += 4 * c + 9 * c * 64
            c += 64
        if r is not None:
            out = round(c // r / 32) * 32
            total += 4 * c + c * out
            c = out
    total += 4 * c + c * 1000 + 1000
    assert (c, keras_count(create_model("binarydensenet28", 3, 1000, 224))) == (576, total)
    assert total == 5_150_504


def test_classic_nets_by_hand():
    # LeNet-5 (BN form): 1*32*25 + 2*32 + 32*64*25 + 2*64 + 1024*512 + 2*512 + 512*10 + 10
    assert torch_count(create_model("lenet5", 1, 10, 28)) == 800 + 64 + 51200 + 128 + 524288 + 1024 + 5130
    assert torch_count(create_model("lenet5", 1, 10, 28, bn=False)) == 832 + 51264 + 524800 + 5130
    # VGG-7: convs 3-128-128-256-256-512-512 (3x3), BN, FC 8192 -> 1024 + BN, FC 1024 -> 10
    convs = sum(a * b * 9 for a, b in ((3, 128), (128, 128), (128, 256), (256, 256), (256, 512), (512, 512)))
    assert torch_count(create_model("vgg7", 3, 10, 32)) == convs + 2 * 1792 + 8192 * 1024 + 2 * 1024 + 10250
    # VGG-11 (BinaryRelax): convs 3-64-128-256-256-512-512-512-512 (3x3), BN after each, FC 512 -> 10
    convs = sum(a * b * 9 for a, b in ((3, 64), (64, 128), (128, 256), (256, 256), (256, 512), (512, 512),
                                        (512, 512), (512, 512)))
    bns = 2 * (64 + 128 + 2 * 256 + 4 * 512)
    assert torch_count(create_model("vgg11", 3, 10, 32)) == convs + bns + 5130
    assert convs + bns + 5130 + 2752 == 9_231_114  # the notebook's net, with its conv biases (which BN cancels)
    # AlexNet-BN (ungrouped, convs and hidden FCs without bias, BN after each)
    convs = 3 * 96 * 121 + 96 * 256 * 25 + 256 * 384 * 9 + 384 * 384 * 9 + 384 * 256 * 9
    bns = 2 * (96 + 256 + 384 + 384 + 256) + 2 * 2 * 4096
    fcs = 9216 * 4096 + 4096 * 4096 + 4096 * 1000 + 1000
    assert torch_count(create_model("alexnet_bn", 3, 1000, 224)) == convs + bns + fcs
    # DoReFa's AlexNet (tensorpack alexnet-dorefa.py): 12x12 first conv, conv1/3/4 in two groups, no conv bias,
    # no BN after conv0, fc0 and the classifier with a bias; 256x6x6 into fc0 at 224 px
    convs = 3 * 96 * 144 + 256 * 48 * 25 + 384 * 256 * 9 + 384 * 192 * 9 + 256 * 192 * 9
    bns = 2 * (256 + 384 + 384 + 256) + 2 * 2 * 4096
    fcs = (9216 * 4096 + 4096) + 4096 * 4096 + (4096 * 1000 + 1000)
    assert torch_count(create_model("alexnet_dorefa", 3, 1000, 224)) == convs + bns + fcs == 60_985_320
    # XNOR-Net's GoogLeNet variant, Darknet's extraction.cfg: 20 conv -> BN layers (no conv bias), 1x1 classifier
    convs = ([(3, 64, 7), (64, 192, 3), (192, 128, 1), (128, 256, 3), (256, 256, 1), (256, 512, 3)]
             + [(512, 256, 1), (256, 512, 3)] * 4 + [(512, 512, 1), (512, 1024, 3)] + [(1024, 512, 1), (512, 1024, 3)] * 2)
    assert len(convs) + 1 == 21
    assert torch_count(create_model("darknet_extraction", 3, 1000, 224)) == sum(
        a * b * k * k + 2 * b for a, b, k in convs) + 1024 * 1000 + 1000 == 23_437_224


@pytest.mark.parametrize("name", ["resnete18", "binarydensenet28", "binarydensenet37", "binarydensenet37_dilated",
                                  "alexnet_bn", "alexnet_dorefa", "darknet_extraction", "lenet5", "vgg7",
                                  "vgg11"])
def test_builds_for_32_and_224_with_bnn_forward_backward(name):
    from qbench.config import compose
    from qbench.methods import build_method
    method = build_method(compose(["method=bnn"]).method)
    for size, classes in ((32, 10), (224, 1000)):
        net = create_model(name, 3, classes, size)
        method.apply(net)
        out = net(torch.randn(2, 3, size, size))
        assert out.shape == (2, classes)
        out.sum().backward()


def test_small_nets_pool_imagenet_inputs_to_their_own_classifier():
    # lenet5 and the VGGs average-pool large inputs to the 32 px net's last feature map: same parameters
    for name in ("lenet5", "vgg7", "vgg_small", "vgg9", "vgg11"):
        assert torch_count(create_model(name, 3, 10, 224)) == torch_count(create_model(name, 3, 10, 32)), name


def test_svhn_net_of_bc_and_bnn_halves_the_convs_not_the_fcs():
    """binary_connect's and BNN's svhn.py: 64/128/256 convs, then two 1024-unit FC layers."""
    from torch import nn

    net = create_model("vgg_small", 3, 10, 32, width=0.5, fc_width=1.0)
    convs = [m.out_channels for m in net if isinstance(m, nn.Conv2d)]
    fcs = [tuple(m.weight.shape) for m in net if isinstance(m, nn.Linear)]
    assert convs == [64, 64, 128, 128, 256, 256]
    assert fcs == [(1024, 256 * 4 * 4), (1024, 1024), (10, 1024)]
    assert [tuple(m.weight.shape) for m in create_model("vgg_small", 3, 10, 32, width=0.5)
            if isinstance(m, nn.Linear)][0] == (512, 256 * 4 * 4)  # fc_width null: the FCs follow width


def test_dilated_densenet_keeps_resolution_in_dilated_blocks():
    # transitions before the dilated blocks do not pool: 224 -> 56 after the stem, 28 after the first
    # transition, then 28 stays (the plain BDN37 goes on to 14 and 7)
    def final_side(name):
        seen = []
        net = create_model(name, 3, 10, 224)
        net[-1].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[-1]))
        net(torch.randn(1, 3, 224, 224))
        return seen[0]
    assert final_side("binarydensenet37") == 7 and final_side("binarydensenet37_dilated") == 28


def test_downsample_bottleneck_and_fp_flags_reach_the_layer_policy():
    def policy(**kw):
        net = create_model("resnete18", 3, 10, 32, **kw)
        return apply_layer_policy(net, ste_sign, ste_sign, False, False)
    rows = policy()
    fp = [r.name for r in rows if r.weight == "fp"]
    assert fp[0].startswith("0.") and fp[-1].startswith("17.")  # stem and classifier
    assert sum(".shortcut.1" in n for n in fp) == 3  # the three downsampling 1x1 convs stay FP
    rows = policy(downsample="binary_conv", keep_first_fp=False, keep_last_fp=False)
    assert [r.weight for r in rows].count("fp") == 0
    assert len(policy(bottleneck=True)) == 1 + 16 * 3 + 3 + 1
    with pytest.raises(UserError, match="model.downsample='avg' is invalid; valid: fp_conv_avgpool"):
        create_model("resnete18", 3, 10, 32, downsample="avg")


def test_summary_bits_macs_and_size():
    from qbench.config import compose
    from qbench.summary import summarize
    s = summarize(compose(["method=bnn", "model=vgg_small", "dataset=cifar10"]))
    # the only non-binary MACs: the first conv reads the 32-bit image: 128 filters x 32x32 positions x 3x3x3
    assert s["fp_macs"] == 128 * 32 * 32 * 27
    assert [r["input_bits"] for r in s["rows"]][:2] == [32, 1] and all(r["weight_bits"] == 1 for r in s["rows"])
    binary_weights = sum(r["params"] for r in s["rows"])
    assert abs(s["size_mb"] - (binary_weights / 8 + 4 * (s["params"] - binary_weights)) / 2 ** 20) < 1e-9
    # ResNetE-18 on ImageNet: larq zoo gives "Memory: 4.03 MB", which also counts the 9,728 batch-norm moving
    # statistics at 32 bits (0.04 MB) that qbench leaves out of the model size
    r = summarize(compose(["method=bnn", "model=resnete18", "dataset=imagenet"]))
    assert abs(r["size_mb"] + 9728 * 4 / 2 ** 20 - 4.03) < 0.01
    fp = summarize(compose(["method=fp", "model=resnet20", "dataset=cifar10"]))
    assert fp["binary_macs"] == 0 and abs(fp["size_mb"] - fp["fp32_mb"]) < 1e-9
