"""The walks of issue #32 -- a training run from the command line to the gradient, and `qbench reproduce
paper=sq` from the registry row to the table -- never climb back up the layers (docs/design.md). Measured by
scripts/walk.py on real runs, as a reader would follow them."""
import subprocess
import sys

import pytest

from conftest import DATA, REPO, TINY_MNIST


def walk(goals: str, *args: str) -> list[str]:
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "walk.py"), "--goals", goals, "--", *args,
                           f"data.root={DATA}"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return [line[len("walk: "):] for line in proc.stdout.splitlines() if line.startswith("walk: ")]


@pytest.mark.parametrize("goals, args, reached", [
    ("quant/,optim.py,models/", ("train", "method=dorefa", "method.w_bits=2", *TINY_MNIST, "trainer.epochs=1"),
     {"quant/dorefa.py", "quant/ste.py"}),
    ("quant/,optim.py,models/,results/", ("reproduce", "paper=sq", "rows=t1_cifar10_vgg_9_sq_bwn_err", "seeds=1",
                                          "tier=smoke"), {"results/registry.py", "quant/stochastic.py", "results/tables.py"}),
], ids=["train", "reproduce"])
def test_a_command_reaches_its_quantizers_without_climbing_back_up(goals, args, reached):
    out = walk(goals, *args)
    files = set(out[0].split(": ", 1)[1].split())
    # through the one builder, the job launched apart from parsing, to the quantizers (and the table)
    assert {"cli.py", "launch.py", "build.py", "methods/base.py", "nn/layers.py", "train.py"} | reached <= files
    assert out[-1] == "climbs back up: none"
