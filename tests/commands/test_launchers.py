"""Sweeps through Hydra launchers: a real multirun through submitit's local executor (the same launcher as
SLURM) and through joblib, each run in its own process."""
import json

from conftest import qbench

TINY = ["model=mlp", "model.hidden=[32]", "dataset=mnist", "data.subset=500", "data.val_subset=200",
        "trainer.epochs=1", "trainer.progress=false"]


def _finished_runs(tmp_path):
    sweeps = list((tmp_path / "runs" / "multirun").glob("*/*"))
    assert len(sweeps) == 1, sweeps
    runs = sorted(d for d in sweeps[0].iterdir() if (d / "summary.json").is_file())
    return sweeps[0], [json.loads((d / "summary.json").read_text()) for d in runs]


def test_submitit_local_launcher_runs_a_real_multirun(tmp_path):
    p = qbench("train", "-m", "hydra/launcher=local", "method=fp,bnn", *TINY, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    sweep, summaries = _finished_runs(tmp_path)
    assert [(s["method"], s["status"]) for s in summaries] == [("fp", "completed"), ("bnn", "completed")]
    jobs = [d for d in (sweep / ".submitit").iterdir() if any(d.glob("*_result.pkl"))]
    assert len(jobs) == 2  # two submitit jobs, each a process of its own


def test_joblib_launcher_runs_jobs_in_parallel_processes(tmp_path):
    p = qbench("train", "-m", "hydra/launcher=parallel", "hydra.launcher.n_jobs=2", "method=fp", "seed=0,1", *TINY,
               cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    _, summaries = _finished_runs(tmp_path)
    assert [(s["seed"], s["status"]) for s in summaries] == [(0, "completed"), (1, "completed")]


def test_slurm_launcher_config_composes_for_a_cluster(tmp_path):
    p = qbench("train", "hydra/launcher=slurm", "hydra.launcher.partition=gpu", *TINY, "--cfg", "hydra", "-p",
               "hydra.launcher", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert "SlurmLauncher" in p.stdout and "partition: gpu" in p.stdout and "gpus_per_node: 1" in p.stdout


def test_launcher_mistakes_are_one_line(tmp_path):
    for args, message in ((["hydra/launcher=slurmy"], "unknown hydra/launcher 'slurmy'; valid: basic, local, parallel, slurm"),
                          (["--cfg", "job"], "Only one of --run, --multirun, --cfg")):
        p = qbench("train", "-m", *args, *TINY, cwd=tmp_path)
        assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert not (tmp_path / "runs").exists()
