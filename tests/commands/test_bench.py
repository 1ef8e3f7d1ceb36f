"""The benchmark in its CPU mode: small shapes, a few steps. It checks the plumbing and the ratios' meaning,
never a speed (speed targets are printed by the benchmark, not asserted)."""
import json

from conftest import qbench


def test_bench_cpu_mode_writes_rows_with_ratios(tmp_path):
    p = qbench("bench", "--methods", "fp,bnn", "--models", "mlp", "--batch-sizes", "16,32", "--steps", "2",
               "--warmup", "1", "--reference", "--json", "bench.json", "model.hidden=[32]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [(r["method"], r["batch_size"]) for r in rows] == [("fp", 16), ("bnn", 16), ("fp", 32), ("bnn", 32)]
    for r in rows:
        assert r["images_per_s"] > 0 and 0 <= r["data_share"] <= 1 and r["reference_images_per_s"] > 0
        assert abs(r["speedup_over_reference"] - r["images_per_s"] / r["reference_images_per_s"]) < 1e-9
    assert [r["ratio_to_fp"] for r in rows if r["method"] == "fp"] == [1.0, 1.0]  # fp is its own baseline
    assert "vs reference" in p.stdout
    assert all(r["input_shape"] == [3, 32, 32] for r in rows)  # CIFAR-10's shape unless dataset= says otherwise


def test_bench_takes_the_datasets_shape_and_the_methods_own_settings(tmp_path):
    # BNN's Torch7 MNIST settings: method.* keys the fp baseline does not have (it runs without them)
    p = qbench("bench", "--methods", "bnn", "--models", "mlp", "--batch-sizes", "16", "--steps", "2", "--warmup", "1",
               "--reference", "--json", "bench.json", "dataset=mnist", "model.hidden=[32]",
               "method.stochastic_activations=true", "method.batch_norm=shift", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    rows = json.loads((tmp_path / "bench.json").read_text())
    assert [r["method"] for r in rows] == ["bnn"] and rows[0]["input_shape"] == [1, 28, 28]
    assert rows[0]["ratio_to_fp"] > 0 and rows[0]["reference_images_per_s"] > 0


def test_bench_packing_times_n_processes_at_once_against_one(tmp_path):
    p = qbench("bench", "--methods", "fp", "--models", "mlp", "--batch-sizes", "32", "--steps", "3", "--warmup", "1",
               "--pack", "2", "--json", "bench.json", "model.hidden=[32]", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    pack = [r for r in json.loads((tmp_path / "bench.json").read_text()) if r["path"] == "packed x2"]
    assert len(pack) == 1 and len(pack[0]["per_process"]) == 2 and pack[0]["single_images_per_s"] > 0
    assert abs(pack[0]["images_per_s"] - sum(pack[0]["per_process"])) < 1e-6
    assert abs(pack[0]["packing_ratio"] - pack[0]["images_per_s"] / pack[0]["single_images_per_s"]) < 1e-9
    assert "total throughput vs one run" in p.stdout


def test_bench_mistakes(tmp_path):
    for args, message in ((["--methods", "nope"], "unknown method 'nope'"),
                          (["--pack", "1"], "--pack=1 is invalid; allowed: 0 (off) or a number of processes >= 2"),
                          (["--batch-sizes", "big"], "--batch-sizes='big' is invalid"),
                          (["--methods", "bnn", "method.nope=1"], "unknown config key 'method.nope'"),
                          (["--methods", "fp", "model.nope=1"], "unknown config key 'model.nope'")):
        p = qbench("bench", "--models", "mlp", "--steps", "1", *args, cwd=tmp_path)
        assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr


def test_bench_times_the_trainers_own_step_with_every_hook(monkeypatch):
    """qbench's path runs Trainer.train_step: a staged method's per-batch hooks run inside the timed steps,
    after the hooks that start training and its first epoch (SQ re-draws, INQ's and TSQ's stage set-up)."""
    import torch

    from qbench import bench
    from qbench.train import Trainer

    calls = []
    real = Trainer.hook
    monkeypatch.setattr(Trainer, "hook", lambda self, name, *a: (calls.append(name), real(self, name, *a))[1])
    r = bench.measure("inq", "mlp", 16, 3, 1, torch.device("cpu"), ["model.hidden=[32]", "dataset=mnist"])
    assert r["path"] == "qbench" and r["images_per_s"] > 0
    assert calls[:2] == ["on_train_start", "on_epoch_start"]
    assert calls[2:] == ["on_train_batch_start", "on_before_optimizer_step", "on_after_optimizer_step"] * 4
