"""`qbench` as a user runs it: real data subsets on CPU, multiruns, resume, and mistakes."""
import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import DATA, kill_after_epoch, qbench, run_dir_of

TINY_MNIST = ["model=mlp", "model.hidden=[64,64]", "dataset=mnist", "data.subset=2000", "data.val_subset=1000",
              "trainer.batch_size=100"]


def _summary(run_dir):
    return json.loads((run_dir / "summary.json").read_text())


def _metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_train_mnist_binaryconnect_end_to_end(tmp_path):
    p = qbench("train", "method=binaryconnect", *TINY_MNIST, "trainer.epochs=2", "trainer.loss=squared_hinge",
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run = run_dir_of(p)
    s = _summary(run)
    assert s["status"] == "completed" and s["epochs_completed"] == 2 and s["method"] == "binaryconnect"
    assert s["final_val_acc"] > 0.80  # 2000 real MNIST digits, 2 epochs: learning, not chance (0.10)
    m = _metrics(run)
    assert [r["epoch"] for r in m] == [1, 2]
    assert set(m[0]) >= {"epoch", "train_loss", "train_acc", "val_loss", "val_acc", "lr", "seconds"}
    assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.pt").is_file()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert {"train/loss", "train/acc", "val/loss", "val/acc", "lr", "hparam/final_val_acc"} <= set(tb.Tags()["scalars"])
    assert "_hparams_/experiment" in tb.summary_metadata  # Hydra overrides as TensorBoard hparams
    assert "binaryconnect(mode=det)" in (run / "train.log").read_text()  # the layer table


def test_a_held_out_validation_set_and_the_test_split_beside_it(tmp_path):
    p = qbench("train", "method=binaryconnect", *TINY_MNIST, "data.holdout=1000", "trainer.epochs=3",
               "trainer.loss=squared_hinge", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    run, m = run_dir_of(p), _metrics(run_dir_of(p))
    s = _summary(run)
    assert all(r["test_acc"] is not None and r["test_acc"] != r["val_acc"] for r in m)  # two evaluations
    best = max(reversed(m), key=lambda r: r["val_acc"])
    assert (s["best_val_epoch"], s["test_acc_at_best_val"]) == (best["epoch"], best["test_acc"])
    assert s["final_test_acc"] == m[-1]["test_acc"] and s["final_val_acc"] == m[-1]["val_acc"]
    assert f"test acc {100 * best['test_acc']:.2f}% at the best validation epoch ({best['epoch']})" in p.stdout
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    tb = EventAccumulator(str(run / "tb"))
    tb.Reload()
    assert {"test/acc", "test/loss", "hparam/test_acc_at_best_val"} <= set(tb.Tags()["scalars"])
    # too large a hold-out: one line, and no run directory that looks like a run
    (tmp_path / "b").mkdir()
    bad = qbench("train", "method=fp", "model=mlp", "dataset=mnist", "data.holdout=60000", cwd=tmp_path / "b")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        f"qbench: error: data.holdout=60000 leaves no training examples: the mnist training split under {DATA} "
        "has 60000; valid: 1 to 59999"]
    assert not list((tmp_path / "b").glob("runs/*/*/config.yaml")) and not list((tmp_path / "b").rglob("summary.json"))


def test_train_cifar10_bnn_and_fp_on_real_subset(tmp_path):
    common = ["model=vgg_small", "model.width=0.125", "dataset=cifar10", "data.subset=2000",
              "data.val_subset=1000", "trainer.epochs=3", "trainer.batch_size=100"]
    p = qbench("train", "-m", "method=fp,bnn", *common, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    runs = sorted((tmp_path / "runs" / "multirun").glob("*/*/*_*-vgg_small-cifar10-s0"))
    assert [r.name.split("_", 1)[1].split("-")[0] for r in runs] == ["fp", "bnn"]
    fp, bnn = (_summary(r) for r in runs)
    assert fp["status"] == bnn["status"] == "completed"
    assert fp["final_val_acc"] > 0.25  # real CIFAR-10 images, 3 epochs on 2000: above chance (0.10); 34-35% seen
    assert bnn["final_val_acc"] is not None and all(r["train_loss"] < 10 for r in _metrics(runs[1]))


def test_multirun_methods_by_seeds(tmp_path):
    p = qbench("train", "-m", "method=fp,bnn", "seed=0,1", *TINY_MNIST, "data.subset=300",
               "trainer.epochs=1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    runs = sorted(r for r in (tmp_path / "runs" / "multirun").glob("*/*/*") if r.is_dir())
    names = sorted(r.name.split("_", 1)[1] for r in runs)
    assert names == ["bnn-mlp-mnist-s0", "bnn-mlp-mnist-s1", "fp-mlp-mnist-s0", "fp-mlp-mnist-s1"]
    assert all(_summary(r)["status"] == "completed" for r in runs)
    seeds = {_summary(r)["seed"] for r in runs}
    assert seeds == {0, 1}
    # #31.16: it ends with a table of its runs, one row each, and the command that compares them
    sweep = runs[0].parent.relative_to(tmp_path)
    assert f"multirun {sweep}: 4 of 4 runs completed" in p.stdout, p.stdout
    rows = [line for line in p.stdout.splitlines() if line.startswith("│") and "-mlp-mnist-s" in line]
    assert len(rows) == 4 and all("completed" in r and "1/1" in r for r in rows), p.stdout
    assert f"qbench compare runs={sweep}" in p.stdout


@pytest.mark.parametrize("method", [
    ["method=binaryconnect", "method.mode=stoch", "model.dropout_hidden=0.2"],
    # BNN's Torch7 recipe: stochastic activations, shift batch norm, shift AdaMax's state, the step schedule
    ["method=bnn", "method.stochastic_activations=true", "method.batch_norm=shift", "optim=shift_adamax",
     "sched=step", "sched.step_size=2", "trainer.loss=squared_hinge"],
])
def test_resume_after_sigkill_equals_uninterrupted_run(tmp_path, method):
    # stochastic binarization and dropout: resume must restore every random stream, not just the weights
    args = [*method, *TINY_MNIST, "data.subset=3000", "trainer.epochs=4", "seed=3"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = qbench("train", *args, cwd=tmp_path / "a")
    assert full.returncode == 0, full.stderr
    full_dir = run_dir_of(full)

    killed = kill_after_epoch(args, tmp_path / "b", epoch=2)
    before = _summary(killed)
    assert before["status"] == "running"  # killed: no completion claimed
    epoch_in_ckpt = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["epoch"]
    assert epoch_in_ckpt in (2, 3)  # at most the epoch in progress is lost
    assert before["epochs_completed"] == epoch_in_ckpt  # the summary kept up with the checkpoint
    relative = killed.relative_to(tmp_path / "b")
    resumed = qbench("train", f"resume={relative}", cwd=tmp_path / "b")  # typed relative, recorded absolute
    assert resumed.returncode == 0, resumed.stderr
    assert run_dir_of(resumed) == killed and _summary(killed)["status"] == "completed"
    assert _summary(killed)["run_dir"] == str(killed) and _summary(killed)["started_at"] == before["started_at"]
    first, second = _summary(killed)["segments"]  # one per process, so a table names both
    assert (first["from_epoch"], first["to_epoch"], second["from_epoch"], second["to_epoch"]) == (
        0, epoch_in_ckpt, epoch_in_ckpt, 4)
    assert first["started_at"] == before["started_at"] <= second["started_at"]  # when each part ran
    assert first["device"] == second["device"] == _summary(full_dir)["device"] and "segments" not in _summary(full_dir)

    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(_metrics(killed)) == strip(_metrics(full_dir))
    a = torch.load(full_dir / "checkpoints" / "last.pt", weights_only=True)["model"]
    b = torch.load(killed / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)

    again = qbench("train", f"resume={killed}", cwd=tmp_path / "b")
    assert again.returncode == 2 and "already completed" in again.stderr


def test_resuming_a_checkpoint_without_segments_credits_the_earlier_process(tmp_path):
    # checkpoints written before segments were recorded: the earlier process is the one the summary names
    p = qbench("train", "method=fp", *TINY_MNIST, "data.subset=200", "trainer.epochs=2", cwd=tmp_path)
    run = run_dir_of(p)
    ckpt = run / "checkpoints" / "last.pt"
    state = torch.load(ckpt, weights_only=False)
    state.update(epoch=1, history=state["history"][:1], wall_seconds=7.0)
    del state["segments"]
    torch.save(state, ckpt)
    summary = {**_summary(run), "status": "interrupted", "qbench_commit": "c" * 40, "device": "cuda (H100)"}
    (run / "summary.json").write_text(json.dumps(summary))
    config = (run / "config.yaml").read_text()
    for bad, says in (("trainer.device=${x", "trainer.device=${x"), ("trainer.device=${nope}", "'nope' not found"),
                      ("trainer.compile=maybe", "trainer.compile='maybe' is invalid")):
        r = qbench("train", f"resume={run}", bad, cwd=tmp_path)  # a bad value: one line, nothing touched
        assert r.returncode == 2 and says in r.stderr and "Traceback" not in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and _summary(run) == summary
    r = qbench("train", f"resume={run}", "trainer.device=cpu", cwd=tmp_path)  # how to run it: allowed, recorded
    assert r.returncode == 0, r.stderr
    assert (run / "config.yaml").read_text() == config
    earlier, this = _summary(run)["segments"]
    assert this["overrides"] == ["trainer.device=cpu"] and "overrides" not in earlier
    assert earlier == {"from_epoch": 0, "to_epoch": 1, "qbench_commit": "c" * 40, "device": "cuda (H100)",
                       "processes": 1, "started_at": summary["started_at"], "wall_seconds": 7.0}
    assert (this["from_epoch"], this["to_epoch"], this["device"]) == (1, 2, _summary(run)["device"])


def test_corrupt_checkpoint_is_reported_and_left_alone(tmp_path):
    p = qbench("train", "method=fp", *TINY_MNIST, "data.subset=200", "trainer.epochs=1", cwd=tmp_path)
    run = run_dir_of(p)
    summary = _summary(run)
    summary["status"] = "interrupted"
    (run / "summary.json").write_text(json.dumps(summary))
    ckpt = run / "checkpoints" / "last.pt"
    ckpt.write_bytes(b"not a checkpoint")
    r = qbench("train", f"resume={run}", cwd=tmp_path)
    assert r.returncode == 2 and "cannot be read" in r.stderr and "Traceback" not in r.stderr
    assert ckpt.read_bytes() == b"not a checkpoint"


def test_user_mistakes_exit_2_with_one_line_and_write_nothing(tmp_path):
    cases = [
        (["train", "method=xnor_magic"], "unknown method 'xnor_magic'; valid: binaryconnect, "),
        (["train", "-m", "method=fp", "seed=0,1", "trainer.epochs=-1"], "trainer.epochs=-1 is invalid"),
        (["train", "dataset=mnist", f"data.root={tmp_path / 'nowhere'}"], "not found under data root"),
        (["train", "resume=/no/such/run"], "not a qbench run directory"),
        (["train", "resume=/no/such/run", "seed=1"], "it takes only where and how to run it (trainer.device, "
         "trainer.progress, trainer.compile, trainer.compile_backend, trainer.compile_mode, trainer.eval_batch_size, "
         "trainer.checkpoint_every, data.root, data.workers, data.download), got: seed=1"),
        (["train", "data.holdout=0"], "data.holdout=0 is invalid; allowed: an integer >= 1 or null"),
        (["train", "dataset=imagenet", "model=resnet18", "data.holdout=5"],
         "data.holdout=5 is for the datasets held in memory (valid: null for imagenet"),
        (["frobnicate"], "unknown command 'frobnicate'; valid: train, "),
    ]
    for args, message in cases:
        p = qbench(*args, cwd=tmp_path)
        assert p.returncode == 2, (args, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], (args, p.stderr)
    assert not (tmp_path / "runs").exists()


def test_list_shows_methods_models_datasets(tmp_path):
    s = qbench("summary", "model=resnete18", "method=bnn", "dataset=cifar10", cwd=tmp_path)
    assert s.returncode == 0 and "binary" in s.stdout and "MB" in s.stdout, s.stderr
    p = qbench("list", cwd=tmp_path)
    assert p.returncode == 0
    for name in ("binaryconnect", "bnn", "fp", "vgg_small", "resnet56", "resnete18", "binarydensenet37_dilated",
                 "alexnet_bn", "lenet5", "vgg7", "fashion_mnist", "imagenet"):
        assert name in p.stdout


def test_each_command_has_its_own_help(capsys):
    from qbench.cli import main

    for command, shown in [("table", "qbench table paper=<key>"), ("reproduce", "[tier=smoke|full]"),
                           ("plot", "qbench plot paper=<key>"), ("compare", "qbench compare runs="),
                           ("ptq", "qbench ptq run=<run dir>"), ("summary", "qbench summary model=")]:
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        assert out.startswith("usage:\n") and shown in out, out
        other = {"table", "reproduce", "plot", "compare", "ptq", "summary"} - {command}
        assert not any(f"qbench {c} " in out for c in other), out  # only this command's lines
    assert main(["table", "paper=sq", "-h"]) == 0 and "qbench table" in capsys.readouterr().out


def test_scaled_and_multibit_methods_train_on_real_mnist(tmp_path):
    runs = {}
    for args in (["-m", "method=bwn,twn,xnor"], ["method=dorefa", "method.w_bits=1", "method.a_bits=2",
                                             "method.g_bits=6"]):
        p = qbench("train", *args, *TINY_MNIST, "trainer.epochs=2", cwd=tmp_path)
        assert p.returncode == 0, p.stderr
    for s in (tmp_path / "runs").rglob("summary.json"):
        summary = json.loads(s.read_text())
        runs[summary["method"]] = summary
    assert set(runs) == {"bwn", "twn", "xnor", "dorefa"}
    for name, s in runs.items():
        assert s["status"] == "completed" and s["final_val_acc"] > 0.75, (name, s["final_val_acc"])
    log = next((tmp_path / "runs").rglob("*dorefa*/train.log")).read_text()
    assert "dorefa_weight(k=1)" in log and "dorefa_activation(k=2)" in log and "dorefa_gradient_ste(k=6)" in log


def test_qat_with_quant_delay_and_ptq_of_a_trained_fp_run(tmp_path):
    p = qbench("train", "method=qat", "method.quant_delay=1", "method.per_channel=true", *TINY_MNIST,
               "trainer.epochs=2", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    qat = run_dir_of(p)
    assert [r["quantized"] for r in _metrics(qat)] == [0.0, 1.0]  # float first, then fake-quantized
    assert _summary(qat)["final_val_acc"] > 0.75

    fp = run_dir_of(qbench("train", "method=fp", *TINY_MNIST, "trainer.epochs=2", cwd=tmp_path))
    before = sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_dir())
    for args, message in ((["method.w_bits=0"], "bit width must be an integer from 2 to 32, got 0"),
                          (["method.calib_batches=0"], "method.calib_batches=0 is invalid"),
                          (["trainer.epochs=3"], "takes run=<run dir> and method.* settings"),
                          ([], None)):
        if message is None:
            break
        r = qbench("ptq", f"run={fp}", *args, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = qbench("ptq", f"run={qat}", cwd=tmp_path)
    assert r.returncode == 2 and "full-precision model" in r.stderr
    assert sorted(p.name for p in (tmp_path / "runs").rglob("*") if p.is_dir()) == before  # nothing written

    r = qbench("ptq", f"run={fp}", "method.w_bits=8", "method.a_bits=8", "method.calib_batches=5", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ptq = run_dir_of(r)
    s = _summary(ptq)
    assert s["status"] == "completed" and s["source_run"] == str(fp)
    assert s["fp_val_acc"] == _summary(fp)["final_val_acc"]  # the float model, reloaded, scores the same
    assert abs(s["final_val_acc"] - s["fp_val_acc"]) < 0.02  # 8-bit post-training costs almost nothing
    assert [r["stage"] for r in _metrics(ptq)] == ["fp", "weights", "weights+activations"]
    assert (ptq / "config.yaml").is_file() and (ptq / "checkpoints" / "last.pt").is_file()
    r2 = qbench("ptq", f"run={fp}", "method.w_bits=2", "method.a_bits=8", "method.calib_batches=5", cwd=tmp_path)
    assert _summary(run_dir_of(r2))["weight_only_val_acc"] < s["weight_only_val_acc"]  # 2-bit weights hurt
    held = run_dir_of(qbench("train", "method=fp", *TINY_MNIST, "data.holdout=500", "trainer.epochs=1", cwd=tmp_path))
    r3 = qbench("ptq", f"run={held}", "method.calib_batches=2", cwd=tmp_path)  # trained with a hold-out: the test split
    assert _summary(run_dir_of(r3))["fp_val_acc"] == _summary(held)["final_test_acc"] != _summary(held)["final_val_acc"]


def test_method_init_starts_from_a_finished_fp_run(tmp_path):
    fp = run_dir_of(qbench("train", "method=fp", *TINY_MNIST, "data.subset=500", "trainer.epochs=1", cwd=tmp_path))
    from qbench.config import compose
    from qbench.methods import build_method
    from qbench.models import create_model
    cfg = compose(["method=bnn", f"method.init={fp}", "model=mlp", "model.hidden=[64,64]", "dataset=mnist"])
    method = build_method(cfg.method)
    net = create_model("mlp", 1, 10, 28, hidden=[64, 64], activation="hardtanh")
    method.apply(net)
    src = torch.load(fp / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert all(torch.equal(net.state_dict()[k], v) for k, v in src.items())  # starts from the fp weights

    ok = qbench("train", "method=bnn", f"method.init={fp}", *TINY_MNIST, "data.subset=500", "trainer.epochs=1",
                cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    rest = ["dataset=mnist", "trainer.epochs=1"]
    for args, message in ((["method.init=/no/such/run", "model=mlp"], "is not a run directory with a checkpoint"),
                          ([f"method.init={fp}", "model=mlp", "model.hidden=[32]"], "its weights do not fit this model"),
                          ([f"method.init={fp}", "model=lenet5"], "holds a different model ('mlp', this run: 'lenet5')")):
        before = len(list((tmp_path / "runs").rglob("config.yaml")))
        r = qbench("train", "method=bnn", *args, *rest, cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and len(r.stderr.strip().splitlines()) == 1, (args, r.stderr)
        assert len(list((tmp_path / "runs").rglob("config.yaml"))) == before  # nothing written


def test_summary_credits_the_commit_the_run_started_from(tmp_path, monkeypatch):
    """A commit made while a run trains ran none of its code: the summary keeps the one read at the start."""
    import qbench.provenance
    import qbench.train
    from qbench.config import compose

    real = qbench.provenance.git_commit()  # this checkout's HEAD, '-dirty' with uncommitted changes; None outside git
    assert real is None or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", real), real
    monkeypatch.setattr(qbench.train, "git_commit", lambda: "a" * 40)
    cfg = compose(["method=bnn", *TINY_MNIST, "data.subset=200", "data.val_subset=100", "trainer.epochs=1",
                   "trainer.device=cpu"])
    trainer = qbench.train.Trainer(cfg, tmp_path / "run")
    monkeypatch.setattr(qbench.train, "git_commit", lambda: "b" * 40 + "-dirty")  # committed while it trains
    assert trainer.fit()["status"] == "completed"
    assert _summary(tmp_path / "run")["qbench_commit"] == "a" * 40


def test_checkpoint_every_n_epochs_and_after_the_last(tmp_path, monkeypatch):
    """trainer.checkpoint_every=2 over 5 epochs saves after epochs 2, 4 and 5 (the last always); 0 is refused."""
    import qbench.train
    from qbench.config import compose, validate
    from qbench.errors import UserError

    saved = []
    real_save = qbench.train.save_checkpoint
    monkeypatch.setattr(qbench.train, "save_checkpoint", lambda path, state: (saved.append(state["epoch"]),
                                                                              real_save(path, state)))
    base = ["method=bnn", *TINY_MNIST, "data.subset=100", "data.val_subset=100", "trainer.epochs=5",
            "trainer.device=cpu"]
    trainer = qbench.train.Trainer(compose(base + ["trainer.checkpoint_every=2"]), tmp_path / "run")
    assert trainer.fit()["status"] == "completed"
    assert saved == [2, 4, 5]
    assert [r["epoch"] for r in _metrics(tmp_path / "run")] == [1, 2, 3, 4, 5]  # every epoch is still logged
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=True)["epoch"] == 5
    with pytest.raises(UserError, match="trainer.checkpoint_every=0 is invalid"):
        validate(compose(base + ["trainer.checkpoint_every=0"]))


def test_commit_is_none_when_the_package_is_not_tracked_by_the_repository_around_it(tmp_path, monkeypatch):
    """A qbench installed (copied) into another project's checkout must not record that project's HEAD."""
    import qbench
    import qbench.provenance

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "other.txt").write_text("another project\n")
    git("add", "other.txt")
    git("commit", "-qm", "other project")
    pkg = tmp_path / "site" / "qbench"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    monkeypatch.setattr(qbench, "__file__", str(pkg / "__init__.py"))
    assert qbench.provenance.git_commit() is None
    git("add", "site")
    git("commit", "-qm", "now tracked")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()
    assert qbench.provenance.git_commit() == head


def test_exit_codes_of_signals_and_of_a_closed_pipe(tmp_path):
    """SIGTERM (SLURM, kill) ends a run as 'interrupted' with 143, not SIGINT's 130; a reader that leaves
    (`qbench --help | head`) gets no traceback."""
    env = {**os.environ, "QBENCH_DATA": str(DATA)}
    proc = subprocess.Popen([sys.executable, "-m", "qbench", "train", "method=fp", *TINY_MNIST, "data.subset=3000",
                             "trainer.epochs=50"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "runs").glob("*/*/metrics.jsonl")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143 and "qbench: terminated" in err, err[-2000:]
    run = next((tmp_path / "runs").glob("*/*/summary.json")).parent
    assert _summary(run)["status"] == "interrupted"

    closed = subprocess.Popen([sys.executable, "-m", "qbench", "--help"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, env=env)
    closed.stdout.close()  # the reader is gone before qbench writes
    err = closed.stderr.read().decode()
    closed.wait(timeout=60)
    assert closed.returncode == 141 and "Traceback" not in err and "BrokenPipeError" not in err, err


def test_several_values_without_multirun_say_to_add_m(tmp_path):
    r = qbench("train", "method=bnn,xnor", "model=mlp", "dataset=mnist", cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "did you mean `qbench train -m method=bnn,xnor model=mlp dataset=mnist`?" in r.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "multirun").exists()


def test_every_refusal_of_train_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """#31.4: each of BAD_OVERRIDES, and the refusals only the CLI makes, exits 2 with one line and leaves the
    folder it ran in as it was: every check runs before Hydra makes a run directory."""
    from conftest import BAD_OVERRIDES
    from qbench.cli import main

    held = tmp_path / "held"
    held.mkdir()
    (held / "config.yaml").write_text("seed: 0\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("QBENCH_DATA", str(DATA))
    cases = [(o + ["dataset=mnist"] * ("dataset" not in " ".join(o)), m) for o, m in BAD_OVERRIDES] + [
        (["dataset=mnist", f"hydra.run.dir={held}"], "already holds a run (config.yaml)"),
        (["-m", "dataset=mnist", "seed=0,1", f"hydra.sweep.dir={held}"], "already holds a run"),
        (["dataset=mnist", "method=bnn,xnor"], "did you mean `qbench train -m"),
    ]
    for args, message in cases:
        assert main(["train", *args]) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], (args, err)
        assert not any(work.iterdir()), (args, list(work.rglob("*")))
    assert sorted(p.name for p in held.iterdir()) == ["config.yaml"]


def test_a_download_that_fails_is_one_line_and_leaves_nothing(tmp_path):
    """#31.5: no network (a proxy that refuses) with data.download=true: one line naming the file, where it
    was fetched from and where to put it by hand; no run folder, no empty dataset folder."""
    root = tmp_path / "data"
    no_net = {"https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "QBENCH_DATA": str(root)}
    p = qbench("train", "dataset=mnist", "model=mlp", "data.download=true", cwd=tmp_path, env=no_net)
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
    line, = p.stderr.strip().splitlines()
    assert "could not download MNIST from https://" in line and "train-images-idx3-ubyte.gz" in line, line
    assert f"fetch it by hand into {root}/MNIST/raw/" in line, line
    assert sorted(p.name for p in tmp_path.iterdir()) == [], list(tmp_path.rglob("*"))


def test_train_help_lists_only_what_train_takes(capsys):
    """#31.8: the groups train takes (not configs/paper), and the config the given groups compose to."""
    from qbench.cli import main

    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    groups = out.split("config groups")[1].split("\n\n")[0]
    assert "  method: binaryconnect, " in groups and "  sched: " in groups and "paper" not in groups
    assert "qbench reproduce paper=<key>" in out and "trainer:\n  epochs:" in out
    assert main(["train", "method=xnor", "-h"]) == 0
    assert "input_scaling: true" in capsys.readouterr().out


def test_every_help_names_every_argument_its_command_takes_in_whole_sentences(capsys):
    """#31.15: each results command's help shows every key it accepts (read from its own refusal of an unknown
    one), and bench's argparse help has a whole description and a help text for every option."""
    from qbench.cli import main

    for command in ("table", "plot", "compare", "export", "evaluate"):
        assert main([command, "bogus=1"]) == 2
        err = capsys.readouterr().err
        keys = re.findall(r"(\w+)=\.\.\.", err.split("valid:")[1]) + re.findall(r"--\w+", err.split("valid:")[1])
        assert keys, err
        assert main([command, "--help"]) == 0
        out = capsys.readouterr().out
        missing = [k for k in keys if (k if k.startswith("--") else f"{k}=") not in out]
        assert not missing, (command, missing, out)
    for args in (["bench", "--help"], ["bench", "--inference", "--help"]):
        with pytest.raises(SystemExit):
            main(args)
        out = capsys.readouterr().out
        description = out.split("\n\n")[1]
        assert description.rstrip().endswith("."), description  # not cut mid-sentence
        lines = out.split("options:\n")[1].splitlines() + [""]
        for line, after in zip(lines, lines[1:]):  # every option has its help text beside or below it
            if line.startswith("  -") and "  " not in line.strip() and not after.startswith(" " * 10):
                pytest.fail(f"{args}: no help for {line.strip()}")
