import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QBENCH_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"real data not found at {DATA}: set QBENCH_DATA (see README)")
    return DATA


def qbench(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the qbench CLI in a fresh process (Hydra keeps global state; a process per run is what users do)."""
    e = {**os.environ, "QBENCH_DATA": str(DATA), **(env or {})}
    return subprocess.run([sys.executable, "-m", "qbench", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def run_dir_of(proc: subprocess.CompletedProcess) -> Path:
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: "), proc.stdout + proc.stderr
    return Path(last.removeprefix("run dir: "))


# user mistakes in qbench train's settings and the one line each gets (with dataset=mnist added where no
# dataset is named): checked by check_overrides (test_config) and through the CLI, writing nothing (test_cli)
BAD_OVERRIDES = [
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
    (["model=mlp", "model.hidden=abc"], "model.hidden='abc' is invalid; allowed: a list of numbers"),
    (["model=mlp", "model.hidden=[64,-3]"], "model 'mlp' cannot be built from its settings"),
    (["trainer.progress=maybe"], "trainer.progress='maybe' is invalid; valid: true, false"),
    (["method.name=xnor"], "method.name='xnor' cannot be changed: method=bnn sets it"),
    (["dataset=cifar10", "dataset.storage=folder"], "dataset.storage='folder' cannot be changed: dataset=cifar10 sets it"),
    (["method=tsq", "method.weight_quantizer.quantizer.levels=five"], "levels='five' is invalid; valid: ternary, binary"),
    (["trainer.device=cuda:99"], "trainer.device=cuda:99 but"),
    (["data.holdout=100000"], "data.holdout=100000 leaves no training examples: the mnist training split"),
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
    (["method=bnn", "method.stochastic_activations=maybe"], "method.stochastic_activations='maybe' is invalid; valid: true, false or null"),
    (["dataset.zca=-1"], "dataset.zca=-1 is invalid; valid: null (no whitening) or ZCA's eigenvalue offset"),
    (["dataset.zca=true"], "dataset.zca=True is invalid; valid: null"),
    (["dataset.gcn=0"], "dataset.gcn=0 is invalid; valid: null or the norm each image is scaled to"),
    (["dataset.lcn=4"], "dataset.lcn=4 is invalid; valid: null or an odd kernel size"),
    (["sched=step", "sched.step_size=0"], "sched.step_size=0 is invalid; allowed: an integer >= 1"),
    (["optim=shift_adamax", "optim.lr=-1"], "optim.lr=-1"),
]


# a small real-MNIST run for the staged methods' end-to-end tests
TINY_MNIST = ["model=mlp", "model.hidden=[64,64]", "dataset=mnist", "data.subset=1000", "data.val_subset=500",
              "trainer.batch_size=100", "trainer.progress=false"]


def metrics_of(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def grad_of(fn, x: torch.Tensor) -> torch.Tensor:
    """d(sum fn(x))/dx: the gradient a quantizer's STE passes back for an upstream gradient of ones."""
    x = x.clone().requires_grad_(True)
    fn(x).sum().backward()
    return x.grad


def close(a: torch.Tensor, b, atol: float = 1e-6) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=a.dtype), atol=atol)


def assert_refused(tmp_path: Path, args, message: str) -> None:
    """`qbench train <args>` fails with exit code 2 and one line containing ``message``, writing nothing."""
    r = qbench("train", *args, "model=mlp", "dataset=mnist", cwd=tmp_path)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def kill_after_epoch(args, cwd, epoch):
    """Start a run, SIGKILL it as soon as `epoch` epochs are in metrics.jsonl (so, in the next one). No pause
    before the kill: on a fast machine the remaining epochs of these tiny runs can finish within 0.3 s."""
    env = {**os.environ, "QBENCH_DATA": str(DATA)}
    proc = subprocess.Popen([sys.executable, "-m", "qbench", "train", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline:
        found = list((cwd / "runs").glob("*/*/metrics.jsonl"))
        if found and len(found[0].read_text().splitlines()) >= epoch:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return found[0].parent
        time.sleep(0.01)
    proc.kill()
    raise AssertionError("run did not reach the epoch")
