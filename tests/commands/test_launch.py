"""qbench.launch: the run folder's lifecycle around Hydra -- a refusal that can only come once Hydra has made
the folder leaves nothing behind, and a multirun's folder is fixed (its ``${now:...}``) before it starts."""
import re
from pathlib import Path

import pytest

from qbench.errors import UserError
from qbench.launch import resolve_now, discard_unstarted, sweep_dir

from conftest import DATA, TINY_MNIST


def _hydra_wrote(folder: Path) -> None:
    (folder / ".hydra").mkdir(parents=True)
    (folder / ".hydra" / "config.yaml").write_text("seed: 0\n")
    (folder / "train.log").write_text("[qbench] starting\n")


def test_discard_unstarted_removes_only_what_hydra_wrote(tmp_path):
    sweep = tmp_path / "multirun"
    job = sweep / "0"
    _hydra_wrote(job)
    (sweep / "multirun.yaml").write_text("hydra: {}\n")
    discard_unstarted(job)
    assert not sweep.exists()  # the job's folder, then the sweep folder that held only multirun.yaml

    kept = tmp_path / "kept"
    _hydra_wrote(kept)
    (kept / "notes.txt").write_text("the user's own file\n")
    discard_unstarted(kept)  # anything else in the folder: nothing is touched
    assert sorted(p.name for p in kept.iterdir()) == [".hydra", "notes.txt", "train.log"]

    sweep2 = tmp_path / "multirun2"
    _hydra_wrote(sweep2 / "1")
    (sweep2 / "0").mkdir()  # another job's folder: the sweep folder stays
    (sweep2 / "multirun.yaml").write_text("hydra: {}\n")
    discard_unstarted(sweep2 / "1")
    assert sorted(p.name for p in sweep2.iterdir()) == ["0", "multirun.yaml"]


def test_a_refusal_inside_the_job_exits_2_and_leaves_no_folder(tmp_path, monkeypatch, capsys):
    """The last safety net: a refusal the checks before launch could not make (here the trainer's own) is one
    line, exit 2, and the folder Hydra made is gone."""
    import qbench.train
    from qbench.cli import main

    def refuse(self, *args, **kwargs):
        raise UserError("refused by the trainer")

    monkeypatch.setattr(qbench.train.Trainer, "__init__", refuse)
    monkeypatch.chdir(tmp_path)  # (QBENCH_DATA may be relative to where the tests started: data.root is absolute)
    run = tmp_path / "runs" / "one"
    with pytest.raises(SystemExit) as e:
        main(["train", "method=bnn", *TINY_MNIST, "trainer.epochs=1", f"data.root={DATA}", f"hydra.run.dir={run}"])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip() == "qbench: error: refused by the trainer"
    assert not run.exists() and not any((tmp_path / "runs").iterdir())


def test_a_sweeps_folder_is_resolved_by_hydras_own_now_resolver():
    overrides, folder = sweep_dir(["seed=0,1", "hydra.sweep.dir=multirun/${now:%Y-%m-%d}/x"])
    assert overrides[0] == "seed=0,1" and re.fullmatch(r"hydra\.sweep\.dir=multirun/\d{4}-\d\d-\d\d/x", overrides[1])
    assert folder == Path(overrides[1].split("=", 1)[1])
    _, folder = sweep_dir(["hydra.sweep.dir=multirun/${hydra.job.name}"])  # known only once Hydra runs
    assert folder is None
    assert resolve_now("plain/folder") == "plain/folder"
