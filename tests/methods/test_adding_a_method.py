"""README's "Adding a method", followed to the letter by a toy method: a quantizer with its facts, a method config
and a schedule, in files outside qbench -- nothing else is touched, and the method trains, is summarized and
runs its schedule."""
import json
import os
import shutil
import textwrap

from conftest import REPO, TINY_MNIST, qbench, run_dir_of

TOY = '''
"""A toy method: weights rounded to {-1, 0, +1} with a threshold that a schedule raises each epoch."""
import torch

from qbench.methods import Callback
from qbench.quant.facts import quantizer
from qbench.quant.ste import straight_through


@quantizer(bits=2)
def toy_round(w: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """forward: sign(w) where |w| > threshold, else 0; backward: identity (straight through)."""
    return straight_through(torch.where(w.abs() > threshold, torch.sign(w), torch.zeros_like(w)), w)


class RaiseThreshold(Callback):
    """Each epoch, every toy quantizer's threshold grows by ``step`` (logged as toy_threshold)."""

    def __init__(self, step: float = 0.1):
        self.step, self.threshold = step, None

    def on_epoch_start(self, trainer, epoch):
        import functools

        for m in trainer.model.modules():
            q = getattr(m, "weight_quantizer", None)
            if isinstance(q, functools.partial) and q.func is toy_round:
                self.threshold = q.keywords["threshold"] + self.step * epoch
                m.set_weight_quantizer(functools.partial(toy_round, threshold=self.threshold))

    def on_epoch_end(self, trainer, epoch):
        return {"toy_threshold": self.threshold}
'''

CONFIG = '''
name: toy
summary: "a toy ternary method: weights rounded to {-1, 0, +1} above a threshold that grows each epoch"
paper: "none: the README's example of adding a method"
threshold: 0.05
weight_quantizer: {_target_: toy_method.toy_round, _partial_: true, threshold: '${method.threshold}'}
input_quantizer: null
keep_first_fp: true
keep_last_fp: true
activation: null
init: null
callbacks:
  raise_threshold: {_target_: toy_method.RaiseThreshold, step: 0.01}
'''


def test_a_toy_method_added_as_the_readme_says_trains_and_runs_its_schedule(tmp_path):
    (tmp_path / "toy_method.py").write_text(textwrap.dedent(TOY))
    configs = tmp_path / "configs"
    shutil.copytree(REPO / "configs", configs)
    (configs / "method" / "toy.yaml").write_text(textwrap.dedent(CONFIG))
    env = {"QBENCH_CONFIG_DIR": str(configs), "PYTHONPATH": os.pathsep.join([str(tmp_path), str(REPO)])}

    listed = qbench("list", cwd=tmp_path, env=env)
    assert listed.returncode == 0 and "toy" in listed.stdout
    s = qbench("summary", "method=toy", "model=mlp", "dataset=mnist", "model.hidden=[64,64]", cwd=tmp_path, env=env)
    assert s.returncode == 0, s.stderr
    bits = [line.split("│")[5].strip() for line in s.stdout.splitlines() if line.count("│") >= 7 and "Linear" in line]
    assert bits == ["32", "2", "32"], s.stdout  # the quantizer's own facts; first and last kept in float
    p = qbench("train", "method=toy", *TINY_MNIST, "trainer.epochs=2", cwd=tmp_path, env=env)
    assert p.returncode == 0, p.stderr
    run = run_dir_of(p)
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [round(m["toy_threshold"], 6) for m in metrics] == [0.05, 0.06]  # the schedule ran each epoch
    assert metrics[-1]["val_acc"] > 0.5
    bad = qbench("train", "method=toy", "method.threshold=abc", *TINY_MNIST, cwd=tmp_path, env=env)
    assert bad.returncode == 2 and "method.threshold='abc' is invalid" in bad.stderr  # checked like any method


LEARNED_THRESHOLD = '''
"""An input quantizer with a learned threshold per input channel (ReActNet's RSign: sign(x - beta_c))."""
import torch
from torch import nn

from qbench.quant import ste_sign


class LearnedThresholdSign(nn.Module):
    bits = 1

    def __init__(self):
        super().__init__()
        self.beta = nn.Parameter(torch.zeros(0))

    def bind(self, layer):
        self.beta = nn.Parameter(torch.zeros(layer.in_features if isinstance(layer, nn.Linear) else layer.in_channels))

    def forward(self, x):
        beta = self.beta if self.beta.numel() else x.new_zeros(x.shape[1])  # a probe before any layer
        return ste_sign(x - beta.view(1, -1, *([1] * (x.dim() - 2))))
'''


def test_an_input_quantizer_takes_learnable_parameters_from_the_method(tmp_path, monkeypatch):
    """#32.4: bind(layer) reaches every quantizer role, so a learned input threshold (RSign) lives in its layer,
    is one parameter per input channel, and trains with the weights."""
    import sys

    import torch

    from qbench.build import build
    from qbench.config import compose
    from qbench.data.loader import TensorLoader, Data
    from qbench.train import Trainer

    (tmp_path / "learned_threshold.py").write_text(textwrap.dedent(LEARNED_THRESHOLD))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("learned_threshold", None)
    cfg = compose(["method=fp", "model=mlp", "model.hidden=[16,8]", "dataset=mnist", "trainer.device=cpu",
                   "method.input_quantizer={_target_: learned_threshold.LearnedThresholdSign}"])
    built = build(cfg)
    hidden = [m for m in built.model.modules() if hasattr(m, "input_quantizer") and m.input_quantizer is not None]
    assert [tuple(m.input_quantizer.beta.shape) for m in hidden] == [(16,)]  # the hidden layer 16 -> 8
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randint(0, 256, (64, 1, 28, 28), dtype=torch.uint8, generator=g), torch.arange(64) % 10
    loader = TensorLoader(images, labels, 32, [0.5], [0.5], train=True, generator=torch.Generator().manual_seed(0))
    trainer = Trainer(cfg, None, data=Data(loader, None, 1, 10, 28, loader.generator))
    beta = next(m for m in trainer.model.modules() if hasattr(m, "beta")).beta
    assert any(p is beta for g in trainer.optimizer.param_groups for p in g["params"])
    trainer.train_step(0, *next(iter(loader)))
    assert beta.abs().sum() > 0  # the optimizer moved it
