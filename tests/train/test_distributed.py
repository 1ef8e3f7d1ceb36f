"""Data-parallel training through torchrun (DDP, gloo on CPU): ranks stay identical, only rank 0 writes, and
without batch norm two ranks train what one process trains."""
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
import torch.multiprocessing as mp

from conftest import DATA, run_dir_of

LENET = ["method=fp", "model=lenet5", "model.bn=false", "optim=sgd", "optim.lr=0.05", "dataset=mnist", "data.subset=400", "data.val_subset=200",
         "trainer.batch_size=100", "trainer.epochs=1", "trainer.progress=false", "trainer.device=cpu"]
BNN = ["method=bnn", "model=mlp", "model.hidden=[64,64]", "dataset=mnist", "data.subset=400", "data.val_subset=200",
       "trainer.batch_size=100", "trainer.epochs=1", "trainer.progress=false", "trainer.device=cpu"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train(overrides, run_dir: Path) -> dict:
    from qbench.config import compose
    from qbench.train import Trainer

    run_dir.mkdir(parents=True)
    trainer = Trainer(compose(overrides + [f"data.root={DATA}"]), run_dir)
    trainer.fit()
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def _worker(rank, world, port, out, overrides):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from qbench import distributed

    state = _train(overrides, Path(out) / f"rank{rank}")
    torch.save(state, Path(out) / f"rank{rank}.pt")
    distributed.teardown()


def _ddp(overrides, out: Path) -> list[dict]:
    mp.spawn(_worker, args=(2, _free_port(), str(out), overrides), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_two_ranks_hold_identical_parameters_and_match_one_process(tmp_path):
    ranks = _ddp(LENET, tmp_path / "ddp")
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])
    torch.set_num_threads(1)
    single = _train(LENET, tmp_path / "single")
    # the same global batches, gradients averaged over the two halves (plain SGD, no batch norm): the same
    # training up to rounding
    assert all(torch.allclose(ranks[0][k], single[k], rtol=0, atol=1e-6) for k in single)
    assert any(not torch.equal(ranks[0][k], single[k]) for k in single)  # two processes really ran
    # only rank 0 wrote a run; the other rank's directory stayed empty
    assert (tmp_path / "ddp" / "rank0" / "summary.json").is_file()
    assert not any((tmp_path / "ddp" / "rank1").iterdir())
    summary = json.loads((tmp_path / "ddp" / "rank0" / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2


def test_binarized_ranks_stay_identical_with_batch_norm_and_stochastic_state(tmp_path):
    ranks = _ddp(BNN + ["method.callbacks.clip_weights.bound=1.0"], tmp_path)
    assert all(torch.equal(ranks[0][k], ranks[1][k]) for k in ranks[0])  # buffers broadcast from rank 0


def test_torchrun_cli_writes_one_run_directory(tmp_path):
    env = {**os.environ, "QBENCH_DATA": str(DATA), "OMP_NUM_THREADS": "1"}
    p = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "qbench", "train", *BNN], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    run = run_dir_of(p)
    assert [d.name for d in (tmp_path / "runs").iterdir()] == [run.parent.name]
    assert len(list(run.parent.iterdir())) == 1  # one run directory for the two processes
    summary = json.loads((run / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["processes"] == 2
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 1
    m = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "-m", "qbench", "train", "-m", "seed=0,1", *BNN], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=600)
    assert m.returncode != 0 and "cannot run inside torchrun" in m.stderr
