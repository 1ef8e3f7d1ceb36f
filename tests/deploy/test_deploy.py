"""qbench export / qbench.deploy / qbench evaluate: packed low-bit models that give the training-time answers."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from conftest import qbench, run_dir_of
from qbench.deploy import kernel
from qbench.deploy.packing import pack_codes, unpack_codes
from qbench.errors import UserError
from qbench.export import weight_codec


# --- the format, by hand --------------------------------------------------------------------------------

def test_codes_pack_little_endian_per_row_as_the_format_says():
    # 1 bit: elements 0, 2, 3 set -> byte 0 = 0b00001101 = 13; element 8 -> bit 0 of byte 1
    assert pack_codes(torch.tensor([[1, 0, 1, 1, 0, 0, 0, 0, 1]]), 1).tolist() == [[13, 1]]
    # ternary 2-bit codes +1, 0, -1, +1 = 01, 00, 11, 01 -> bits 0, 4, 5, 6 -> 1 + 16 + 32 + 64 = 113
    assert pack_codes(torch.tensor([[1, 0, 3, 1]]), 2).tolist() == [[113]]
    # 3 bits: 5 = 101 at bits 0-2, 6 = 110 at bits 3-5, 7 = 111 at bits 6-8 -> 0b11110101 = 245, then bit 8
    assert pack_codes(torch.tensor([[5, 6, 7]]), 3).tolist() == [[245, 1]]
    g = torch.Generator().manual_seed(0)
    for bits in (1, 2, 3, 5, 8):
        codes = torch.randint(0, 2 ** bits, (4, 37), generator=g)
        assert torch.equal(unpack_codes(pack_codes(codes, bits), 37, bits), codes)
    with pytest.raises(ValueError, match=r"codes must lie in \[0, 4\)"):
        pack_codes(torch.tensor([[4]]), 2)


def test_an_affine_weight_is_stored_as_its_integers():
    """Whitepaper eq. 1-3, symmetric 8 bits per output channel: s = max|w| / 127, code = round(w / s) - qmin."""
    from qbench.export import affine_weight_codec
    from qbench.nn import FakeQuant

    q = FakeQuant(bits=8, symmetric=True, per_channel=True).eval()
    w = torch.tensor([[1.27, -0.6, 0.0], [0.5, 0.2, -0.5]])  # -0.6 / 0.01 = -60; 0.2 * 127 / 0.5 = 50.8 -> 51
    spec, t = affine_weight_codec(q, w, q(w).detach(), "w")
    assert (spec["codec"], spec["qmin"]) == ("affine", -127) and torch.allclose(t["scale"], torch.tensor([0.01, 0.5 / 127]))
    assert unpack_codes(t["weight_codes"], 3, 8).tolist() == [[254, 67, 127], [254, 178, 0]]  # q + 127


def test_weight_codecs_by_hand_and_a_layer_without_a_low_bit_form():
    w = torch.tensor([[0.5, -0.5, 0.5], [-2.0, -2.0, 2.0]])  # alpha 0.5 and 2 per row
    spec, t = weight_codec(w, "w")
    assert spec["codec"] == "binary" and t["alpha"].tolist() == [0.5, 2.0]
    assert t["weight_codes"].tolist() == [[0b101], [0b100]]
    spec, t = weight_codec(torch.tensor([[1.0, -1.0], [-1.0, -1.0]]), "w")
    assert spec["codec"] == "binary" and "alpha" not in t  # BNN: plain +-1
    spec, t = weight_codec(torch.tensor([[0.3, 0.0, -0.3, 0.3]]), "w")  # TWN
    assert spec["codec"] == "ternary" and t["weight_codes"].tolist() == [[1 + 0 + 48 + 64]]
    assert torch.allclose(t["alpha"], torch.tensor([0.3]))
    dorefa_w2 = torch.tensor([[-1.0, -1 / 3, 1 / 3], [1.0, 1 / 3, -1.0]])
    spec, t = weight_codec(dorefa_w2, "w")
    assert (spec["codec"], spec["bits"]) == ("levels", 2) and t["levels"].tolist() == sorted(set(dorefa_w2.flatten().tolist()))
    with pytest.raises(UserError, match="layer x: its trained weights take 300 distinct values, not a low-bit form"):
        weight_codec(torch.linspace(-1, 1, 300).reshape(3, 100), "layer x")


# --- the kernels ------------------------------------------------------------------------------------------

def test_xnor_popcount_by_hand():
    # x = (+1, -1, +1), w = (+1, +1, -1): x.w = 1 - 1 - 1 = -1 = K - 2 popcount(101 ^ 011) = 3 - 2 * 2
    x, w = torch.tensor([[0.5, -2.0, 0.0]]), torch.tensor([[3.0, 1.0, -1.0]])  # sign(0) = +1
    for force in (False, True):
        assert kernel.pack_signs(x, force).tolist() == [[0b101] + [0] * 7]  # a row: 8 words, one 512-bit vector
        assert kernel.pack_signs(w, force).tolist() == [[0b011] + [0] * 7]
        assert kernel.binary_linear(x, kernel.pack_signs(w, force), force).tolist() == [[-1.0]]


@pytest.mark.parametrize("n,c,hw,o,k,stride,pad,dil", [(2, 3, 5, 4, 3, 1, 1, 1), (3, 70, 7, 5, 3, 2, 1, 1),
                                                        (2, 600, 3, 9, 3, 1, 1, 1),
                                                        (2, 128, 8, 16, 3, 1, 1, 1), (1, 64, 9, 8, 1, 1, 0, 1),
                                                        (2, 5, 6, 3, 3, 1, 2, 2), (1, 65, 4, 2, 5, 1, 2, 1)])
def test_binary_conv_is_the_zero_padded_float_conv_exactly_compiled_and_fallback(n, c, hw, o, k, stride, pad, dil):
    """A +-1 operand cannot hold the 0 the float convolution pads with: the kernels leave padded taps out."""
    g = torch.Generator().manual_seed(c)
    x, w = torch.randn(n, c, hw, hw + 1, generator=g), torch.randn(o, c, k, k, generator=g)
    sx, sw = torch.where(x >= 0, 1.0, -1.0), torch.where(w >= 0, 1.0, -1.0)
    ref = F.conv2d(sx, sw, stride=stride, padding=pad, dilation=dil)
    for force in (False, True):
        packed = kernel.pack_conv_weight(sw, force)
        out = kernel.binary_conv2d(x, packed, (k, k), (stride, stride), (pad, pad), (dil, dil), force)
        assert torch.equal(out, ref)
    a, b = torch.randn(9, c * 3, generator=g), torch.randn(o, c * 3, generator=g)
    ref = torch.where(a >= 0, 1.0, -1.0) @ torch.where(b >= 0, 1.0, -1.0).T
    assert torch.equal(kernel.binary_linear(a, kernel.pack_signs(b)), ref)
    assert torch.equal(kernel.binary_linear(a, kernel.pack_signs(b, True), True), ref)


def test_the_compiled_kernel_builds_here():
    """gcc is on every machine this project runs on; a user without one gets the fallback (tested above)."""
    assert kernel.backend().startswith("compiled C"), kernel.backend()


def test_the_deploy_package_imports_no_training_code():
    code = ("import sys, qbench.deploy; bad = [m for m in sys.modules if m.split('.')[0] in ('hydra', 'omegaconf', "
            "'torchvision') or m.startswith(('qbench.train', 'qbench.methods', 'qbench.nn', 'qbench.quant'))]; "
            "print(bad); assert not bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- trained runs, exported and evaluated on real data -------------------------------------------------------

CIFAR = ["dataset=cifar10", "data.subset=256", "data.val_subset=200"]
MNIST = ["dataset=mnist", "data.subset=500", "data.val_subset=300"]
RUNS = {  # name: (overrides, exact logits?)
    "bnn_mlp": (["method=bnn", "model=mlp", "model.hidden=[256,256]", *MNIST], True),
    "bnn_vgg_small": (["method=bnn", "model=vgg_small", "model.width=0.25", *CIFAR], True),
    "xnor_resnet18": (["method=xnor", "model=resnet18", "model.width=0.25", *CIFAR], False),
    "bwn_vgg_small": (["method=bwn", "model=vgg_small", "model.width=0.25", *CIFAR], True),
    "twn_vgg7": (["method=twn", "model=vgg7", "model.width=0.25", *CIFAR], True),
    "dorefa_w2a2_resnet20": (["method=dorefa", "method.w_bits=2", "method.a_bits=2", "model=resnet20", *CIFAR], True),
    "wage_lenet5": (["method=wage", "model=lenet5", *MNIST], True),
    "inq_lenet5": (["method=inq", "model=lenet5", "trainer.epochs=5", *MNIST], True),
    # schedules: the export replays the last epoch's start (SQ at ratio 1.0, BinaryRelax's exact projection)
    "sq_twn_lenet5": (["method=sq_twn", "model=lenet5", "trainer.epochs=4", *MNIST], True),
    "binaryrelax_lenet5": (["method=binaryrelax", "model=lenet5", "trainer.epochs=3", *MNIST], True),
    "bottom_up_lenet5": (["method=bottom_up", "model=lenet5", "trainer.epochs=5", *MNIST], True),  # fixed point
    "qat_per_channel_resnet20": (["method=qat", "method.per_channel=true", "model=resnet20", *CIFAR], True),
    "qat_fold_bn_resnet20": (["method=qat", "method.fold_bn=true", "method.per_channel=true", "model=resnet20",
                              *CIFAR], True),
    "ptq_lenet5": (["method=fp", "model=lenet5", *MNIST], True),  # then qbench ptq of that run
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("deploy")
    runs = {}
    for name, (overrides, _) in RUNS.items():
        epochs = [] if any(o.startswith("trainer.epochs") for o in overrides) else ["trainer.epochs=1"]
        p = qbench("train", *overrides, *epochs, "trainer.progress=false", cwd=root)
        assert p.returncode == 0, p.stderr[-2000:]
        runs[name] = run_dir_of(p)
        if name.startswith("ptq"):
            p = qbench("ptq", f"run={runs[name]}", "method.calib_batches=2", cwd=root)
            assert p.returncode == 0, p.stderr[-2000:]
            runs[name] = run_dir_of(p)
    return root, runs


@pytest.mark.parametrize("name", list(RUNS))
def test_export_then_evaluate_gives_the_training_time_answer_for_every_image(trained, name):
    root, runs = trained
    run = runs[name]
    e = qbench("export", f"run={run}", cwd=root)
    assert e.returncode == 0, e.stderr
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    assert manifest["final_val_acc"] == summary["final_val_acc"] and manifest["source_run"] == str(run)
    assert manifest["weight_bytes"]["float32"] > 3 * manifest["weight_bytes"]["deployed"]
    r = qbench("evaluate", f"export={run / 'export'}", cwd=root)
    assert r.returncode == 0, r.stderr
    images = 300 if "mnist" in " ".join(RUNS[name][0]) else 200
    diff = float(r.stdout.strip().split("largest logit difference ")[1])
    if RUNS[name][1]:
        assert f"same predicted class  {images}/{images}" in r.stdout, r.stdout
        acc = float(r.stdout.split("deployed accuracy")[1].split("%")[0])
        assert abs(acc - 100 * summary["final_val_acc"]) <= 0.005  # what the run scored (printed to 2 decimals)
        assert diff == 0, r.stdout  # integer sums, or the very float ops training ran on the very values
    else:
        # XNOR: alpha and K multiply an integer sum, not each product, and the engine compares the conv output
        # with a folded batch-norm threshold. A batch-norm output within float rounding of 0 -- this run's
        # stages.0.1.conv1 gets one exactly 0.0 -- may binarize the other way, as with onnxruntime below: one
        # image's class at most, and logits that differ by that one sign, not by drift everywhere
        agree = int(r.stdout.split("same predicted class  ")[1].split("/")[0])
        assert agree >= images - 1 and diff < 0.5, r.stdout


def test_compiled_and_fallback_engines_give_the_same_logits(trained):
    from qbench.deploy import load

    root, runs = trained
    export = runs["bnn_vgg_small"] / "export"
    if not export.is_dir():
        assert qbench("export", f"run={runs['bnn_vgg_small']}", cwd=root).returncode == 0
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    fast, slow = load(export), load(export, backend="torch")
    assert fast.packed and torch.equal(fast(images), slow(images))
    assert torch.equal(fast(images), fast(images.float() / 255))  # uint8 and float in [0, 1] are one input


def test_export_and_evaluate_refusals_are_one_line_and_write_nothing(trained, tmp_path):
    root, runs = trained
    run = runs["bnn_mlp"]
    if not (run / "export").is_dir():
        assert qbench("export", f"run={run}", cwd=root).returncode == 0
    fp = qbench("train", "method=fp", "model=mlp", "model.hidden=[32]", *MNIST, "trainer.epochs=1",
                "trainer.progress=false", cwd=tmp_path)
    stoch = qbench("train", "method=binaryconnect", "method.mode=stoch", "model=mlp", "model.hidden=[32]", *MNIST,
                   "trainer.epochs=1", "trainer.progress=false", cwd=tmp_path)
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run / "config.yaml").read_text())
    (unfinished / "summary.json").write_text(json.dumps({"status": "interrupted"}))
    tampered = tmp_path / "tampered"
    import shutil
    shutil.copytree(run / "export", tampered)
    data = bytearray((tampered / "model.safetensors").read_bytes())
    data[-1] ^= 1
    (tampered / "model.safetensors").write_bytes(bytes(data))
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{oops")
    cases = [
        (["evaluate", f"export={broken}"], "manifest.json is not a qbench manifest (JSONDecodeError"),
        (["export", f"run={run_dir_of(fp)}"], "method 'fp': a full-precision model has no low-bit form"),
        (["export", f"run={run_dir_of(stoch)}"], "method.mode=stoch tests with its real-valued weights"),
        (["export", f"run={unfinished}"], "export needs a finished run with a checkpoint; "),
        (["export", f"run={run}"], "export exists; qbench never overwrites an export"),
        (["export", f"run={run}", "format=tflite"], "format='tflite' is invalid; valid: qbench, onnx"),
        (["export", f"run={run}", "format=onnx", "float_weights=maybe"], "float_weights='maybe' is invalid"),
        (["export", f"run={run}", "format=onnx", "image=rgb"], "image='rgb' is invalid; valid: uint8 (0..255), float"),
        (["export"], "qbench export needs run=<run dir>"),
        (["evaluate", f"export={tampered}"], "does not match its manifest: sha256"),
        (["evaluate", f"export={tmp_path}"], "is not a qbench export (no manifest.json)"),
        (["evaluate", f"export={run / 'export'}", "limit=0"], "limit='0' is invalid"),
        (["evaluate", f"export={run / 'export'}", "backend=gpu"], "backend='gpu' is invalid; valid: auto, torch"),
    ]
    before = sorted(p for p in tmp_path.rglob("*"))
    for args, message in cases:
        r = qbench(*args, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
    assert sorted(p for p in tmp_path.rglob("*")) == before  # no export folder, no temporary folder left behind


def _tiny_binary_mlp(mean: list[float], bias: list[float], gamma: list[float]) -> "DeployedModel":  # noqa: F821
    """input (N, 6) -> binary linear 6->3 (sign input) -> batch norm -> hardtanh -> binary linear 3->2, by hand."""
    from qbench.deploy.engine import DeployedModel

    g = torch.Generator().manual_seed(0)
    w1, w2 = (torch.randint(0, 2, (3, 6), generator=g), torch.randint(0, 2, (2, 3), generator=g))
    spec = lambda shape: {"codec": "binary", "bits": 1, "shape": shape}  # noqa: E731
    layer = lambda name, x, shape: {"name": name, "op": "linear", "inputs": [x], "weight": spec(shape),  # noqa: E731
                                    "input_quantizer": {"kind": "sign"}, "input_scale": None}
    graph = [{"name": "x", "op": "input"}, layer("fc1", "x", [3, 6]),
             {"name": "bn", "op": "batch_norm", "inputs": ["fc1"], "eps": 0.0},
             {"name": "act", "op": "hardtanh", "inputs": ["bn"], "min": -1.0, "max": 1.0},
             layer("fc2", "act", [2, 3]), {"name": "out", "op": "output", "inputs": ["fc2"]}]
    tensors = {"fc1.weight_codes": pack_codes(w1, 1), "fc2.weight_codes": pack_codes(w2, 1),
               "bn.running_mean": torch.tensor(mean), "bn.running_var": torch.ones(3),
               "bn.weight": torch.tensor(gamma), "bn.bias": torch.tensor(bias)}
    manifest = {"input": {"mean": [0.0], "std": [1.0]}, "graph": graph}
    return DeployedModel(manifest, tensors)


def test_batch_norm_and_sign_fold_to_thresholds_even_at_a_tie():
    """BN(y) = (y - mean) * gamma + beta (var 1, eps 0). Channel 0: root 2.3 -> y >= 3; channel 1, gamma < 0:
    root 0.5 -> y <= 0; channel 2: root exactly 1, where BN(1) = 0 and sign(0) = +1, a tie: PyTorch's own batch
    norm decides it (y >= 1). Every input of 6 signs: the folded model equals the unfolded one."""
    m = _tiny_binary_mlp(mean=[2.3, 0.5, 1.0], bias=[0.0, 0.0, 0.0], gamma=[1.0, -2.0, 0.5])
    assert set(m.folded) == {"bn"} and m.near_ties == 1
    t, up = m._thresholds(m.by_name["bn"], (1, 3))
    assert t.tolist() == [3.0, 0.0, 1.0] and up.tolist() == [1, 0, 1]
    x = torch.tensor([[float(b >> i & 1) * 2 - 1 for i in range(6)] for b in range(64)])
    unfolded = _tiny_binary_mlp(mean=[2.3, 0.5, 1.0], bias=[0.0, 0.0, 0.0], gamma=[1.0, -2.0, 0.5])
    unfolded.folded, unfolded.passing = {}, set()
    assert torch.equal(m.run(x), unfolded.run(x))
    # beta = -1e-9: in real numbers BN(1) = -1e-9 < 0, but PyTorch's float32 batch norm (y * alpha + (beta -
    # mean * alpha), where -1e-9 vanishes beside 0.5) gives 0, so y = 1 stays +1 as in training: threshold 1
    m = _tiny_binary_mlp(mean=[2.3, 0.5, 1.0], bias=[0.0, 0.0, -1e-9], gamma=[1.0, -2.0, 0.5])
    torch_bit = F.batch_norm(torch.tensor([[0.0, 0.0, 1.0]]), m.t["bn.running_mean"], m.t["bn.running_var"],
                             m.t["bn.weight"], m.t["bn.bias"], False, 0.0, 0.0)[0, 2] >= 0
    assert m._thresholds(m.by_name["bn"], (1, 3))[0].tolist() == [3.0, 0.0, 1.0 if torch_bit else 2.0]
    # and at the other side of the tie: beta = -1e-3 is no tie (y = 1 gives -0.001): threshold 2
    m = _tiny_binary_mlp(mean=[2.3, 0.5, 1.0], bias=[0.0, 0.0, -1e-3], gamma=[1.0, -2.0, 0.5])
    assert m.near_ties == 0 and m._thresholds(m.by_name["bn"], (1, 3))[0].tolist() == [3.0, 0.0, 2.0]


def test_summary_of_a_run_shows_the_size_measured_from_its_export(trained):
    root, runs = trained
    run = runs["bnn_mlp"]
    if not (run / "export").is_dir():
        assert qbench("export", f"run={run}", cwd=root).returncode == 0
    r = qbench("summary", f"run={run}", cwd=root)
    assert r.returncode == 0, r.stderr
    assert f"deployed (measured from {run / 'export'}): weights" in r.stdout.replace("\n", "")
    size = (run / "export" / "model.safetensors").stat().st_size / 2 ** 20
    assert f"model.safetensors {size:.3f} MB" in r.stdout.replace("\n", "")


@pytest.mark.parametrize("name", ["qat_per_channel_resnet20", "qat_fold_bn_resnet20", "ptq_lenet5",
                                  "dorefa_w2a2_resnet20", "wage_lenet5"])
def test_int8_qdq_onnx_in_onnxruntime_agrees_with_the_training_time_model(trained, name):
    """The whitepaper's integer model as onnxruntime runs it: its QuantizeLinear divides by the scale where
    fake quantization multiplies by 1/scale, so a rounding may differ: accuracy within 0.1 point asked. DoReFa's
    and WAGE's grids are uniform of at most 8 bits, so they take the same integer form."""
    import onnx

    root, runs = trained
    run = runs[name]
    e = qbench("export", f"run={run}", "format=onnx", cwd=root)
    assert e.returncode == 0, e.stderr
    model = onnx.load(str(run / "export-onnx" / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops and model.graph.input[0].name == "image"
    int_weights = [i for i in model.graph.initializer if i.name.endswith(".weight_q")]
    assert int_weights and all(i.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8) for i in int_weights)
    r = qbench("evaluate", f"export={run / 'export-onnx'}", cwd=root)
    assert r.returncode == 0, r.stderr
    dep = float(r.stdout.split("deployed accuracy")[1].split("%")[0])
    ref = float(r.stdout.split("training-time model")[1].split("%")[0])
    images = int(r.stdout.split("same predicted class  ")[1].split("/")[1].split(";")[0])
    agree = int(r.stdout.split("same predicted class  ")[1].split("/")[0])
    assert abs(dep - ref) <= max(0.1, 100 / images) and agree >= images - 1, r.stdout  # 0.1 point, or one image


def test_binary_onnx_needs_float_weights_and_then_agrees(trained):
    root, runs = trained
    run = runs["bnn_vgg_small"]
    refused = qbench("export", f"run={run}", "format=onnx", cwd=root)
    assert refused.returncode == 2 and "its sign input has no integer ONNX form" in refused.stderr
    inq = qbench("export", f"run={runs['inq_lenet5']}", "format=onnx", cwd=root)  # 2^-7 .. 2^0: not int8 steps
    assert inq.returncode == 2 and "its levels weights are not int8 steps of one scale; add float_weights" in inq.stderr
    assert not (run / "export-onnx").exists()
    e = qbench("export", f"run={run}", "format=onnx", "float_weights=true", "image=float", cwd=root)
    assert e.returncode == 0, e.stderr
    r = qbench("evaluate", f"export={run / 'export-onnx'}", cwd=root)  # images scaled to [0, 1] for this input
    assert r.returncode == 0 and "same predicted class  200/200" in r.stdout, r.stdout + r.stderr
    assert "float in [0, 1]" in json.loads((run / "export-onnx" / "manifest.json").read_text())["onnx"]["input"]


@pytest.mark.parametrize("k,s", [(2, 2), (3, 2), (3, 1)])
def test_the_compiled_max_pool_is_pytorchs_including_nan(k, s):
    x = torch.randn(3, 5, 9, 10, generator=torch.Generator().manual_seed(k))
    x[0, 1, 2, 3] = float("nan")
    ref = F.max_pool2d(x, k, s)
    out = kernel.max_pool2d(x, (k, k), (s, s))
    assert torch.equal(out.nan_to_num(123.0), ref.nan_to_num(123.0)) and out.isnan().sum() == ref.isnan().sum() > 0


def test_onnxruntime_runs_folded_qat_convolutions_in_integers(trained, tmp_path):
    """With batch norm folded (whitepaper section 3.2) a convolution's output reaches the next QuantizeLinear,
    and onnxruntime fuses DequantizeLinear -> Conv -> QuantizeLinear into QLinearConv (integer arithmetic)."""
    import collections

    import onnx
    import onnxruntime

    root, runs = trained
    run = runs["qat_fold_bn_resnet20"]
    if not (run / "export-onnx").is_dir():
        assert qbench("export", f"run={run}", "format=onnx", cwd=root).returncode == 0
    manifest = json.loads((run / "export-onnx" / "manifest.json").read_text())
    assert sum(r.get("folded_batch_norm", False) for r in manifest["layers"]) == 19  # every conv of resnet20
    options = onnxruntime.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    onnxruntime.InferenceSession(str(run / "export-onnx" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "optimized.onnx")).graph.node)
    assert ops["QLinearConv"] >= 9 and "BatchNormalization" not in ops, ops


def test_xnor_net_as_a_float_onnx_model_with_its_scale_k(trained):
    """K (eq. 11) as ReduceMean(|x|) and a box-filter Conv. onnxruntime sums in its own order, and an XNOR net
    binarizes real batch-norm outputs, so a value near 0 may flip (as PyTorch's own backends do): one image."""
    import onnx

    root, runs = trained
    run = runs["xnor_resnet18"]
    e = qbench("export", f"run={run}", "format=onnx", "float_weights=true", cwd=root)
    assert e.returncode == 0, e.stderr
    ops = {n.op_type for n in onnx.load(str(run / "export-onnx" / "model.onnx")).graph.node}
    assert {"ReduceMean", "Abs", "Where", "Mul"} <= ops
    r = qbench("evaluate", f"export={run / 'export-onnx'}", cwd=root)
    assert r.returncode == 0, r.stderr
    agree = int(r.stdout.split("same predicted class  ")[1].split("/")[0])
    assert agree >= 199, r.stdout
