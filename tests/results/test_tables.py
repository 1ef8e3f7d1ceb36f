"""The paper registry against the shared figures file, and the tables built from runs."""
import json
import math
import os
from pathlib import Path

import pytest
import yaml

from conftest import REPO, qbench
from qbench.errors import UserError
from qbench.results import STATUSES, find_runs, group_runs, load_paper, paper_keys
from qbench.results.tables import compare, paper_table
from qbench.results.runs import differing_keys

SHARED = Path(os.environ.get("QBENCH_PAPERS", REPO.parent / "shared" / "papers" / "paper_results.yaml"))
REGISTRY_KEY = {"krishnamoorthi_whitepaper": "whitepaper"}
# the shared file states these papers' status once, in a comment above their rows
COMMENT_STATUS = {"xnor_net": "primary", "wage": "primary", "inq": "primary", "twn": "primary",
                  "krishnamoorthi_whitepaper": "primary"}


def _numbers(row):
    """Every reported number in a row of the shared file, read independently of the importer."""
    out = []
    for k in ("value", "top1", "top5", "top1_err", "top5_err"):
        v = row.get(k)
        if isinstance(v, (int, float)):
            out.append(float(v))
        elif isinstance(v, str):
            out += [float(x) for x in v.split("/")]
    rows = row.get("rows")
    if isinstance(rows, dict):
        for v in rows.values():
            vals = v if isinstance(v, list) else (v.split("/") if isinstance(v, str) else [v])
            for x in vals:
                try:
                    out.append(float(x))
                except ValueError:  # e.g. "mAP50 76.8 / mAP50:95 51.5": numbers inside words
                    pass
    return out


def test_every_shared_figure_is_in_the_registry_with_its_status():
    shared = yaml.safe_load(SHARED.read_text())["papers"]
    assert sorted(REGISTRY_KEY.get(p["key"], p["key"]) for p in shared) == paper_keys()
    for p in shared:
        paper = load_paper(REGISTRY_KEY.get(p["key"], p["key"]))
        have = {}
        for f in paper.figures:
            if isinstance(f.value, (int, float)):
                have.setdefault((round(float(f.value), 6), f.status), 0)
                have[(round(float(f.value), 6), f.status)] += 1
        for row in p["rows"]:
            status = row.get("status", COMMENT_STATUS.get(p["key"]))
            for v in _numbers(row):
                key = (round(v, 6), status)
                assert have.get(key, 0) > 0, (p["key"], v, status, row)
                have[key] -= 1


def test_registry_statuses_are_known_and_unconfirmed_never_shown_as_confirmed():
    for key in paper_keys():
        for f in load_paper(key).figures:
            assert f.status in STATUSES
    rows = paper_table("back_to_simplicity", []).rows
    statuses = [r[4] for r in rows]
    assert "UNCONFIRMED" in statuses and "unconfirmed" not in statuses
    assert statuses.count("secondary") == 1  # BinaryDenseNet-28 top-1, derived from the abstract


def _fake_run(root: Path, name: str, method: str, seed: int, acc: float, status="completed", tags=None,
              summary=None, **method_keys):
    d = root / name
    d.mkdir(parents=True)
    cfg = {"seed": seed, "method": {"name": method, **method_keys}, "model": {"name": "mlp"},
           "dataset": {"name": "mnist"}, "trainer": {"epochs": 5, "device": "cpu"}, "data": {"root": str(root)},
           "tags": tags or {}}
    (d / "config.yaml").write_text(yaml.safe_dump(cfg))
    (d / "summary.json").write_text(json.dumps({"status": status, "final_val_acc": acc, "best_val_acc": acc,
                                                "epochs_completed": 5, **(summary or {})}))


def test_grouping_averages_seeds_never_configs_and_skips_unfinished(tmp_path):
    row = {"paper": "binaryconnect", "table": "-", "row": "mnist_w1_a32_det_err", "tier": "full"}
    _fake_run(tmp_path, "a", "binaryconnect", 0, 0.98, tags=row, mode="det")
    _fake_run(tmp_path, "b", "binaryconnect", 1, 0.99, tags=row, mode="det")
    _fake_run(tmp_path, "c", "binaryconnect", 0, 0.97, mode="stoch")  # the user's own run: never a paper row
    _fake_run(tmp_path, "d", "binaryconnect", 2, 0.10, status="failed", tags=row, mode="det")
    stoch = {**row, "row": "mnist_w1_a32_stoch_err"}
    _fake_run(tmp_path, "e", "binaryconnect", 0, 0.5, status="running", tags=stoch, mode="stoch",  # killed
              summary={"epochs": 1000, "epochs_completed": 476})
    done, other = find_runs([str(tmp_path)])
    assert len(done) == 3 and len(other) == 2
    groups = sorted(group_runs(done), key=lambda g: len(g.runs))
    assert [len(g.runs) for g in groups] == [1, 2]
    mean, std = groups[1].mean_std()
    assert math.isclose(mean, 0.985) and math.isclose(std, math.sqrt(2 * 0.005 ** 2))
    table = compare([str(tmp_path)], ["method"])
    assert [r[-1] for r in table.rows][0].startswith("method.mode=det") and "stoch" in table.rows[1][-1]
    assert table.rows[0][1].startswith("98.50 ± 0.71 (n=2)")
    assert table.rows[1][1] == "97.00 (n=1)"  # one run: no std shown, not a '± 0.00'
    # the paper table: BinaryConnect det MNIST reported as error, reproduced 1.50 +- 0.71
    rows = {r[1]: r for r in paper_table("binaryconnect", [str(tmp_path)]).rows}
    det = rows["MNIST W1/A32 det"]
    assert det[5] == "1.50 ± 0.71 (n=2); not counted: 1 failed" and det[6] == "+0.21" and det[4] == "secondary"
    assert rows["CIFAR10 W1/A32 det"][5] == "not run"
    # the untagged stoch run is not a reproduction; the tagged one never finished
    assert rows["MNIST W1/A32 stoch"][5] == "none finished (1 unfinished at 476/1000 epochs)"  # how far it got


def test_a_figure_cited_from_another_paper_reads_that_papers_runs(tmp_path):
    """TWN's Table 2 prints BinaryConnect's own MNIST figure (98.82% = 100 - 1.18%): BinaryConnect's runs of
    that row fill it, named as such; reproduce paper=twn leaves it to paper=binaryconnect."""
    from qbench.results.registry import Figure, _check_references
    from qbench.results.reproduce import select
    row = {"paper": "binaryconnect", "table": "-", "row": "mnist_w1_a32_stoch_err", "tier": "full"}
    _fake_run(tmp_path, "a", "binaryconnect", 0, 0.9880, tags=row, mode="stoch")
    _fake_run(tmp_path, "b", "binaryconnect", 1, 0.9884, tags=row, mode="stoch")
    _fake_run(tmp_path, "c", "binaryconnect", 0, 0.99, tags={**row, "paper": "twn"}, mode="stoch")  # wrong paper
    rows = {r[1]: r for r in paper_table("twn", [str(tmp_path)], "T2").rows}
    bc = rows["MNIST LeNet-5 BinaryConnect"]
    assert bc[5] == "98.82 ± 0.03 (n=2) (binaryconnect's row)" and bc[6] == "+0.00"
    assert rows["CIFAR10 VGG-7 BinaryConnect"][5] == "not run (binaryconnect's row)"
    assert rows["MNIST LeNet-5 BNN"][5] == "not run (bnn's row)"  # BNN's Torch7 MNIST row, not yet run
    assert "t2_mnist_lenet_5_binaryconnect_acc" not in {f.id for f in select("twn", "T2", None)}
    with pytest.raises(UserError, match="qbench reproduce paper=binaryconnect rows=mnist_w1_a32_stoch_err"):
        select("twn", "T2", ["t2_mnist_lenet_5_binaryconnect_acc"])
    bad = Figure("twn", "x", "acc", 1.0, "primary", experiment={"runs_of": "binaryconnect/nope"})
    with pytest.raises(UserError, match="runs_of 'binaryconnect/nope', which is not a figure with its own"):
        _check_references("twn", [bad])


def test_tables_say_which_commits_and_hardware_made_them(tmp_path):
    row = {"paper": "binaryconnect", "table": "-", "row": "mnist_w1_a32_det_err", "tier": "full"}
    for i, (commit, device, wall, procs) in enumerate([("a" * 40, "cpu (2 threads)", 600, 1),
                                                        ("a" * 40, "cpu (2 threads)", 300, 1),
                                                        ("b" * 40, "cuda (NVIDIA H100)", 60, 4)]):
        _fake_run(tmp_path, f"r{i}", "binaryconnect", i, 0.98, tags=row, mode="det")
        s = tmp_path / f"r{i}" / "summary.json"
        s.write_text(json.dumps({**json.loads(s.read_text()), "qbench_commit": commit, "device": device,
                                 "wall_seconds": wall, "processes": procs}))
    _fake_run(tmp_path, "mine", "binaryconnect", 0, 0.5, mode="stoch")  # not in the paper table: not counted
    notes = paper_table("binaryconnect", [str(tmp_path)]).notes
    assert notes == ["3 runs finished; qbench commit aaaaaaaaaaaa (2 runs), bbbbbbbbbbbb (1 run)",
                     "device time: 15.0 min on cpu (2 threads), 4.0 min on cuda (NVIDIA H100) "
                     "(wall time x processes, summed over runs)"]
    # r2 started on the GPU at commit b and was resumed on the CPU at commit a: both get their share
    s = tmp_path / "r2" / "summary.json"
    s.write_text(json.dumps({**json.loads(s.read_text()), "wall_seconds": 180, "segments": [
        {"from_epoch": 0, "to_epoch": 5, "qbench_commit": "b" * 40, "device": "cuda (NVIDIA H100)",
         "processes": 1, "wall_seconds": 60},
        {"from_epoch": 5, "to_epoch": 9, "qbench_commit": "a" * 40, "device": "cpu (2 threads)",
         "processes": 1, "wall_seconds": 120}]}))
    assert paper_table("binaryconnect", [str(tmp_path)]).notes == [
        "3 runs finished (1 of them resumed); qbench commit aaaaaaaaaaaa (3 runs), bbbbbbbbbbbb (1 run)",
        "device time: 17.0 min on cpu (2 threads), 1.0 min on cuda (NVIDIA H100) "
        "(wall time x processes, summed over runs)"]
    assert compare([str(tmp_path)], ["method"]).notes[0].startswith("4 runs finished (1 of them resumed); qbench commit aaaa")
    assert paper_table("sq", [str(tmp_path)]).notes == [  # nothing run: nothing claimed, and where it looked
        f"no finished full-tier runs of this paper's rows under {tmp_path}; it holds 4 finished and 0 unfinished "
        "runs of any kind"]


def test_bad_table_and_compare_input(tmp_path):
    with pytest.raises(UserError, match="unknown paper 'sqq'; valid: back_to_simplicity, binaryconnect"):
        load_paper("sqq")
    with pytest.raises(UserError, match="has no table 'T9'; valid: T1, T2"):
        paper_table("sq", [], "T9")
    with pytest.raises(UserError, match="no finished runs under"):
        compare([str(tmp_path)], ["method"])
    _fake_run(tmp_path, "a", "fp", 0, 0.9)
    with pytest.raises(UserError, match="by='colour' is not a config key"):
        compare([str(tmp_path)], ["colour"])


def test_table_and_compare_commands_on_real_runs(tmp_path):
    p = qbench("train", "-m", "method=binaryconnect", "seed=0,1", "model=mlp", "model.hidden=[64,64]",
               "dataset=mnist", "data.subset=1000", "data.val_subset=500", "trainer.epochs=1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    t = qbench("table", "paper=binaryconnect", "runs=runs", "out=tables", cwd=tmp_path)
    assert t.returncode == 0, t.stderr
    md = (tmp_path / "tables" / "table.md").read_text()
    assert "(n=2)" not in md and "not run" in md and "UNCONFIRMED" in md  # own runs never fill a paper row
    assert (tmp_path / "tables" / "table.csv").is_file() and "\\begin{tabular}" in (tmp_path / "tables" / "table.tex").read_text()
    c = qbench("compare", "runs=runs", "by=method,model", cwd=tmp_path)
    assert c.returncode == 0 and "(n=2)" in c.stdout
    bad = qbench("table", "paper=nope", cwd=tmp_path)
    assert bad.returncode == 2 and "valid: back_to_simplicity" in bad.stderr
    typo = qbench("table", "paper=binaryconnect", "runs=rnus", "out=typo", cwd=tmp_path)
    assert typo.returncode == 2 and "runs='rnus': no such folder" in typo.stderr and not (tmp_path / "typo").exists()


def test_reproduce_smoke_table_and_plots_end_to_end(tmp_path):
    rows = "rows=mnist_w1_a32_det_err,mnist_w1_a32_stoch_err"
    p = qbench("reproduce", "paper=binaryconnect", rows, "seeds=2", "tier=smoke", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    runs = [d.parent for d in (tmp_path / "runs" / "reproduce" / "binaryconnect" / "smoke").glob("*/*/config.yaml")]
    assert len(runs) == 4  # 2 rows x 2 seeds, one Hydra multirun
    experiments = sorted(p.name for p in runs[0].parent.glob("experiments/experiment/*.yaml"))
    assert experiments == ["binaryconnect__mnist_w1_a32_det_err.yaml", "binaryconnect__mnist_w1_a32_stoch_err.yaml"]
    record = yaml.safe_load((runs[0].parent / "experiments" / "experiment" / experiments[0]).read_text())
    assert record["tags"]["row"] == "mnist_w1_a32_det_err" and record["data"]["subset"] == 256  # what the job ran
    assert "4 of 4 runs completed" in p.stdout  # the multirun's own table, then how to see the rows (#31.16)
    assert p.stdout.rstrip().endswith("the rows beside the paper's figures: qbench table paper=binaryconnect "
                                      "tier=smoke"), p.stdout
    cfg = yaml.safe_load((runs[0] / "config.yaml").read_text())
    assert cfg["tags"]["paper"] == "binaryconnect" and cfg["tags"]["tier"] == "smoke"
    assert cfg["trainer"]["loss"] == "squared_hinge" and cfg["data"]["subset"] == 256  # recipe, then the sliver
    more = qbench("reproduce", "paper=binaryconnect", "rows=mnist_w1_a32_det_err", "seed=2", "tier=smoke",
                  cwd=tmp_path)  # a third seed for one row, added later
    assert more.returncode == 0, more.stderr
    t = qbench("table", "paper=binaryconnect", "tier=smoke", "out=out", cwd=tmp_path)
    md = (tmp_path / "out" / "table_smoke.md").read_text()
    assert t.returncode == 0 and "SMOKE TIER" in md and md.count("(n=2)") == 1 and md.count("(n=3)") == 1
    commit = json.loads(next(iter(runs)).joinpath("summary.json").read_text())["qbench_commit"] or "unknown"
    short = commit[:12] + "-dirty" * commit.endswith("-dirty")
    assert f"- 5 runs finished; qbench commit {short} (5 runs)" in md
    assert "min on cpu (" in md and "% device time:" in (tmp_path / "out" / "table_smoke.tex").read_text()
    full = qbench("table", "paper=binaryconnect", "out=out", cwd=tmp_path)  # smoke runs never count as full
    assert full.returncode == 0 and "(n=2)" not in (tmp_path / "out" / "table.md").read_text()
    pl = qbench("plot", "paper=binaryconnect", "tier=smoke", "out=out", cwd=tmp_path)
    assert pl.returncode == 0 and (tmp_path / "out" / "curves_main_smoke.png").stat().st_size > 10000
    pr = qbench("plot", "runs=runs", "metric=train_loss", "out=c.png", cwd=tmp_path)
    assert pr.returncode == 0 and (tmp_path / "c.png").read_bytes()[:4] == b"\x89PNG"


def test_reproduce_and_plot_mistakes(tmp_path):
    cases = [
        (["reproduce", "paper=binaryconnect", "rows=nope"], "row 'nope' is not a runnable row of binaryconnect"),
        (["reproduce", "paper=whitepaper"], "paper 'whitepaper' has no row with a qbench experiment: its networks"),
        (["reproduce", "paper=inq", "rows=t1_imagenet_vgg_16_w32_top1_err"],
         "row 't1_imagenet_vgg_16_w32_top1_err' is not a runnable row of inq (VGG-16 is not a qbench model"),
        (["reproduce", "paper=sq", "tier=medium"], "tier='medium' is invalid; valid: full, smoke"),
        (["reproduce", "paper=sq", "seeds=0"], "seeds=0 is invalid"),
        (["reproduce", "paper=sq", "seeds=2", "seed=5"], "give seeds=2 (seeds 0..1) or seed=5 (those seeds), not both"),
        (["reproduce", "paper=bnn", "trainer.epoch=2"], "unknown config key 'trainer.epoch'"),
        (["plot", "runs=nowhere"], "no finished runs under nowhere"),
        (["plot", "paper=sq", "runs=nowhere"], "no finished full-tier runs for paper 'sq'"),
        (["plot", "paper=sq", "table=T9"], "paper 'sq' has no table 'T9'; valid: T1, T2"),
    ]
    for args, message in cases:
        p = qbench(*args, cwd=tmp_path)
        assert p.returncode == 2 and message in p.stderr and len(p.stderr.strip().splitlines()) == 1, (args, p.stderr)
    assert not (tmp_path / "runs").exists()


def test_every_runnable_row_is_a_valid_run_at_both_tiers():
    from qbench.config import check_overrides
    from qbench.results import paper_keys
    from qbench.results.registry import load_paper
    from qbench.results.reproduce import _as_override, select, settings
    n = 0
    for key in paper_keys():
        if any(f.experiment for f in load_paper(key).figures):
            select(key, None, None)  # every row maps to a runnable one (load_paper has checked init_row / runs_of)
        for f in load_paper(key).figures:
            if f.experiment and f.run_row == f.id:
                for tier in ("full", "smoke"):
                    check_overrides([_as_override(k, v) for k, v in settings(f, tier).items()], data=False)
                n += 1
    assert n >= 102  # BC 9, BNN 6, SQ 30, TWN 12, WAGE 16, XNOR-Net 14, INQ 8, Back to Simplicity 4, BinaryRelax 2, DoReFa 1


def test_every_figure_has_an_experiment_or_says_why_not(tmp_path):
    """No figure is silently left out: one without an experiment carries a reason, and the table shows it."""
    silent = [f"{k}/{f.id}" for k in paper_keys() for f in load_paper(k).figures if not f.experiment and not f.no_experiment]
    assert not silent, silent
    p = qbench("table", "paper=whitepaper", f"out={tmp_path / 'wp'}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    md = (tmp_path / "wp" / "table.md").read_text()
    assert md.count("not wired: its networks (MobileNet v1/v2") == 192 and "no qbench experiment yet" not in md


@pytest.mark.parametrize("key,value", [("checkpoint_every", 10), ("compile", True), ("compile_mode", "reduce-overhead")])
def test_how_a_run_was_executed_never_splits_a_group(tmp_path, key, value):
    """How often a run saved checkpoints, or whether and how it was compiled, does not change what it trained.
    Runs from before such a key existed have none: they still group with runs that set it."""
    _fake_run(tmp_path, "old", "bwn", 0, 0.9897)
    _fake_run(tmp_path, "new", "bwn", 1, 0.9901)
    cfg = yaml.safe_load((tmp_path / "new" / "config.yaml").read_text())
    cfg["trainer"][key] = value
    (tmp_path / "new" / "config.yaml").write_text(yaml.safe_dump(cfg))
    done, _ = find_runs([str(tmp_path)])
    groups = group_runs(done)
    assert len(groups) == 1 and len(groups[0].runs) == 2


def test_a_setting_added_with_a_null_default_never_splits_a_group(tmp_path):
    """trainer.steps_per_epoch arrived with null (one pass per epoch, as before): runs from before it group with
    runs that have it null, and apart from runs that set it."""
    for name, seed, steps in (("old", 0, "absent"), ("new", 1, None), ("steps", 2, 100)):
        _fake_run(tmp_path, name, "bwn", seed, 0.99)
        if steps != "absent":
            cfg = yaml.safe_load((tmp_path / name / "config.yaml").read_text())
            cfg["trainer"]["steps_per_epoch"] = steps
            (tmp_path / name / "config.yaml").write_text(yaml.safe_dump(cfg))
    groups = group_runs(find_runs([str(tmp_path)])[0])
    assert sorted(len(g.runs) for g in groups) == [1, 2] and differing_keys(groups) == ["trainer.steps_per_epoch"]


def test_a_difference_that_rounds_to_zero_shows_no_minus_sign():
    from qbench.results.tables import _signed
    assert _signed(-0.004) == "+0.00" and _signed(0.004) == "+0.00"
    assert _signed(-0.006) == "-0.01" and _signed(0.21) == "+0.21"


def test_a_row_starts_from_its_init_rows_run_of_the_same_seed(tmp_path):
    """BinaryRelax's binary row starts, as the authors' notebook does, from the float row's trained model:
    each seed from the float run of that seed, found by `reproduce` itself."""
    binary, float_row = "cifar10_vgg_11_bn_w1_scaled_binary_binaryrelax_acc", "cifar10_vgg_11_bn_w32_acc"
    small = ["model.width=0.125", "data.subset=64", "data.val_subset=64", "trainer.progress=false"]
    alone = qbench("reproduce", "paper=binaryrelax", f"rows={binary}", "seeds=1", "tier=smoke", *small, cwd=tmp_path)
    assert alone.returncode == 2 and len(alone.stderr.strip().splitlines()) == 1, alone.stderr
    assert f"starts from a finished run of row '{float_row}' with the same seed; none for seed 0" in alone.stderr
    assert not (tmp_path / "runs").exists()  # refused before anything ran
    p = qbench("reproduce", "paper=binaryrelax", "seeds=2", "tier=smoke", *small, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    runs = {}
    for s in (tmp_path / "runs" / "reproduce" / "binaryrelax" / "smoke").glob("*/*/summary.json"):
        cfg = yaml.safe_load((s.parent / "config.yaml").read_text())
        runs[(cfg["tags"]["row"], cfg["seed"])] = (s.parent, cfg, json.loads(s.read_text()))
    assert sorted(runs) == sorted((r, s) for r in (binary, float_row) for s in (0, 1))
    for seed in (0, 1):
        d, cfg, summary = runs[(binary, seed)]
        start = runs[(float_row, seed)][0].resolve()
        assert cfg["method"]["init"] == str(start) and summary["init"]["run"] == str(start)
        assert summary["init"]["row"] == float_row
    # both seeds started from one configuration of the float row: they average together
    t = qbench("table", "paper=binaryrelax", "tier=smoke", "out=out", cwd=tmp_path)
    assert t.returncode == 0 and (tmp_path / "out" / "table_smoke.md").read_text().count("(n=2)") == 2, t.stdout
    again = qbench("reproduce", "paper=binaryrelax", f"rows={binary}", "seed=1", "tier=smoke", *small, cwd=tmp_path)
    assert again.returncode == 0, again.stderr  # the float row's runs are found again, from a later command
    assert len(list((tmp_path / "runs" / "reproduce" / "binaryrelax" / "smoke").glob("*/*/summary.json"))) == 5


def test_runs_from_differently_trained_inits_never_average(tmp_path):
    for name, seed, config in (("a", 0, "1f649a4aaa5f"), ("b", 1, "1f649a4aaa5f"), ("c", 2, "0123456789ab")):
        _fake_run(tmp_path, name, "binaryrelax", seed, 0.9, init=f"/elsewhere/fp-s{seed}")
        s = json.loads((tmp_path / name / "summary.json").read_text())
        (tmp_path / name / "summary.json").write_text(json.dumps({**s, "init": {"run": "x", "row": "fp",
                                                                                "config": config}}))
    groups = sorted(group_runs(find_runs([str(tmp_path)])[0]), key=lambda g: len(g.runs))
    assert [len(g.runs) for g in groups] == [1, 2]
    assert groups[1].get("method.init") == "fp (config 1f649a4aaa5f)"


def test_top5_accuracy_by_hand_and_each_metric_reads_its_own_value():
    import torch

    from qbench.results.tables import _pct
    from qbench.train import evaluate
    logits = torch.tensor([[6., 5, 4, 3, 2, 1],    # label 0: top-1 and top-5
                           [6., 5, 4, 3, 2, 1],    # label 4: top-5 only
                           [6., 5, 4, 3, 2, 1],    # label 5: sixth, neither
                           [1., 2, 3, 4, 5, 6]])   # label 5: top-1 and top-5
    labels = torch.tensor([0, 4, 5, 5])
    model = torch.nn.Module()
    model.forward = lambda x: logits[x]  # the input is the row index
    loss, top1, top5 = evaluate(model, [(torch.arange(4), labels)], lambda out, y: out.sum() * 0)
    assert (top1, top5) == (0.5, 0.75)
    three = torch.nn.Module()
    three.forward = lambda x: logits[x, :3]  # fewer than five classes: top-5 is any of them
    assert evaluate(three, [(torch.arange(1), torch.tensor([2]))], lambda out, y: out.sum() * 0)[1:] == (0.0, 1.0)
    s = {"final_val_acc": 0.6, "final_val_top5": 0.85}
    assert [round(_pct(s, m), 6) for m in ("top1", "top1_err", "top5", "top5_err", "err", "acc")] == \
        [60.0, 40.0, 85.0, 15.0, 40.0, 60.0]
    assert _pct({"final_val_acc": 0.6}, "top5") is None and _pct(s, "mAP50") is None  # older run; not measured


def test_a_top5_figure_is_read_from_its_top1_rows_runs(tmp_path):
    from qbench.results.registry import Figure, _check_references
    from qbench.results.reproduce import select
    top1, top5 = "t2_imagenet_resnet_18_sq_twn_top1_err", "t2_imagenet_resnet_18_sq_twn_top5_err"
    assert [f.id for f in select("sq", "T2", [top5])] == [top1]  # asking for the top-5 figure runs its row
    assert [f.id for f in select("sq", "T2", [top1, top5])] == [top1]  # once
    row = {"paper": "sq", "table": "T2", "row": top1, "tier": "full"}
    for seed, (acc, acc5) in enumerate(((0.64, 0.86), (0.62, 0.84))):
        _fake_run(tmp_path, f"r{seed}", "sq_twn", seed, acc, tags=row)
        s = json.loads((tmp_path / f"r{seed}" / "summary.json").read_text())
        (tmp_path / f"r{seed}" / "summary.json").write_text(json.dumps({**s, "final_val_top5": acc5}))
    out = paper_table("sq", [str(tmp_path)], table="T2")
    cells = {r[1] + " " + r[2]: r[5] for r in out.rows}
    assert cells["ImageNet ResNet-18 SQ-TWN top1_err"] == "37.00 ± 1.41 (n=2)"
    assert cells["ImageNet ResNet-18 SQ-TWN top5_err"] == "15.00 ± 1.41 (n=2)"
    bad = [Figure("p", "a", "top5", 1.0, "primary", experiment={"runs_of": "nope"})]
    with pytest.raises(UserError, match="figure 'a' has runs_of 'nope', which is not a figure with its own"):
        _check_references("p", bad)


def test_with_a_holdout_the_test_accuracy_at_the_latest_best_validation_epoch_is_reported():
    """BinaryConnect's code: `if val_err <= best_val_err: ... test_err = ...`: a tie moves the choice later."""
    from qbench.train import selected_test
    h = [{"epoch": 1, "val_acc": 0.90, "test_acc": 0.89, "test_top5": 0.99},
         {"epoch": 2, "val_acc": None, "test_acc": None, "test_top5": None},  # not evaluated (eval_every)
         {"epoch": 3, "val_acc": 0.95, "test_acc": 0.93, "test_top5": 1.0},
         {"epoch": 4, "val_acc": 0.94, "test_acc": 0.96, "test_top5": 1.0},
         {"epoch": 5, "val_acc": 0.95, "test_acc": 0.94, "test_top5": 1.0},   # ties epoch 3: the later one
         {"epoch": 6, "val_acc": 0.93, "test_acc": 0.97, "test_top5": 1.0}]
    assert selected_test(h) == {"best_val_epoch": 5, "test_acc_at_best_val": 0.94, "test_top5_at_best_val": 1.0,
                                "final_test_acc": 0.97, "final_test_top5": 1.0}
    assert selected_test(h[1:2])["test_acc_at_best_val"] is None


def test_a_holdout_run_fills_its_row_with_the_test_error_at_its_best_validation_epoch(tmp_path):
    row = {"paper": "binaryconnect", "table": "-", "row": "mnist_w1_a32_det_err", "tier": "full"}
    for name, seed, test, epoch in (("a", 0, 0.988, 812), ("b", 1, 0.986, 934)):
        _fake_run(tmp_path, name, "binaryconnect", seed, 0.99, tags=row, mode="det",
                  summary={"best_val_epoch": epoch, "test_acc_at_best_val": test, "final_test_acc": 0.5})
    det = {r[1]: r for r in paper_table("binaryconnect", [str(tmp_path)]).rows}["MNIST W1/A32 det"]
    assert det[5] == "1.30 ± 0.14 (n=2)" and det[7] == "5 (test at best val epoch 812/934)"  # not 1 - val acc
    table = compare([str(tmp_path)], ["method"])
    assert table.columns[3] == "test acc % at best val" and table.rows[0][3] == "98.70 ± 0.14 (n=2)"


# --- results are never replaced by fewer runs ------------------------------------------------------

def _metrics(run: Path, accs) -> None:
    (run / "metrics.jsonl").write_text("".join(json.dumps({"epoch": e + 1, "val_acc": a}) + "\n"
                                               for e, a in enumerate(accs)))


def test_table_compare_and_plot_never_replace_an_output_of_more_runs(tmp_path):
    """One class, three writers: a table's CSV rows and a plot's PNG record their runs; a rewrite that would
    count fewer runs is refused with one line and leaves every file as it was, unless forced."""
    from qbench.results.plots import plot_curves, runs_in_plot
    from qbench.results.runs import find_runs

    for seed in (0, 1, 2):
        _fake_run(tmp_path / "runs", f"r{seed}", "fp", seed, 0.9 + seed / 100)
        _metrics(tmp_path / "runs" / f"r{seed}", [0.5, 0.9])
    out = tmp_path / "out"
    three = compare([str(tmp_path / "runs")], ["method"])
    three.write(out, "compare")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    (tmp_path / "runs" / "r2" / "summary.json").unlink()  # the same folder, now one run fewer
    two = compare([str(tmp_path / "runs")], ["method"])
    with pytest.raises(UserError, match=r"compare.csv holds more runs than this table found \(fp: 3 runs there, "
                                        r"2 now\); not replaced.*--force"):
        two.write(out, "compare")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing half-written
    three.write(out, "compare")  # as many runs: a plain regeneration
    assert two.write(out, "compare", force=True) and "(n=2)" in (out / "compare.md").read_text()

    runs = find_runs([str(tmp_path / "runs")])[0]
    png = plot_curves([("fp", runs)], "val_acc", "t", tmp_path / "c.png")
    assert runs_in_plot(png) == 2
    _fake_run(tmp_path / "runs", "r3", "fp", 3, 0.9)
    _metrics(tmp_path / "runs" / "r3", [0.5, 0.9])
    more = find_runs([str(tmp_path / "runs")])[0]
    assert runs_in_plot(plot_curves([("fp", more)], "val_acc", "t", png)) == 3  # more runs: replaced
    with pytest.raises(UserError, match="drew 3 runs, this plot 1; not replaced"):
        plot_curves([("fp", more[:1])], "val_acc", "t", png)
    assert runs_in_plot(png) == 3 and not [p for p in tmp_path.iterdir() if p.name.startswith(".c")]
    (tmp_path / "other.png").write_bytes(png.read_bytes()[:8])  # not qbench's: its run count is unknown
    with pytest.raises(UserError, match="records no run count"):
        plot_curves([("fp", more)], "val_acc", "t", tmp_path / "other.png")


def test_table_command_prints_by_default_and_never_clobbers_a_published_table(tmp_path):
    """`qbench table paper=twn` in a folder with no runs once rewrote results/twn's 3-seed table as "not run"."""
    import shutil

    published = tmp_path / "results" / "twn"
    shutil.copytree(REPO / "results" / "twn", published, ignore=shutil.ignore_patterns("run_records"))
    before = {p: p.read_bytes() for p in published.rglob("*") if p.is_file()}
    printed = qbench("table", "paper=twn", "table=T2", cwd=tmp_path)
    assert printed.returncode == 0 and "printed only: add out=<dir>" in printed.stdout
    bad = qbench("table", "paper=twn", "table=T2", "out=results/twn", cwd=tmp_path)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "MNIST LeNet-5 TWN: 3 runs there, 0 now" in bad.stderr and "not run" not in bad.stdout
    assert {p: p.read_bytes() for p in published.rglob("*") if p.is_file()} == before
    ok = qbench("table", "paper=twn", "table=T2", f"runs={REPO / 'results' / 'twn' / 'run_records'}",
                "out=results/twn", cwd=tmp_path)  # the folder that holds them: regenerated unchanged
    assert ok.returncode == 0, ok.stderr
    assert (published / "table_T2.csv").read_bytes() == before[published / "table_T2.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]  # no runs/ or stray files either


def test_compare_names_the_runs_it_leaves_out(tmp_path):
    """A run killed mid-way (summary 'running') once vanished from compare without a word."""
    _fake_run(tmp_path, "done", "fp", 0, 0.9)
    _fake_run(tmp_path, "killed", "fp", 1, 0.5, status="running", summary={"epochs": 10, "epochs_completed": 4})
    _fake_run(tmp_path, "broke", "fp", 2, 0.1, status="failed")
    out = compare([str(tmp_path)], ["method"])
    assert "(n=1)" in out.markdown()
    assert any(n.startswith("not counted: 2 runs that did not complete: ") and "killed (running, 4/10 epochs)" in n
               and "broke (failed, 5/? epochs)" in n for n in out.notes), out.notes


def test_plot_legend_outside_whole_epoch_ticks_and_the_papers_figure_with_its_status(tmp_path):
    """#31.14: eight series leave every curve visible (the legend is beside the axes), one-epoch runs get whole
    epoch ticks, and a paper row's reported figure is a line of the row's colour, labelled with its status."""
    from qbench.results.plots import draw_curves
    from qbench.results.registry import Figure
    from qbench.results.runs import find_runs

    series = []
    for i in range(8):
        _fake_run(tmp_path / "runs", f"r{i}", f"m{i}", 0, 0.9)
        _metrics(tmp_path / "runs" / f"r{i}", [0.90 + i / 100])  # one epoch each
        series.append((f"row {i}", find_runs([str(tmp_path / "runs" / f"r{i}")])[0]))
    series[0] += (Figure("p", "a", "err", 1.5, "primary"),)  # an error rate: drawn as accuracy 98.5
    series[1] += (Figure("p", "b", "acc", 97.0, "unconfirmed"),)
    series[2] += (Figure("p", "c", "top5", 99.0, "primary"),)  # a top-5 figure is not a point of val_acc
    fig, n_runs = draw_curves(series, "val_acc", "t")
    fig.canvas.draw()
    ax = fig.axes[0]
    legend, axes_box = ax.get_legend().get_window_extent(), ax.get_window_extent()
    assert n_runs == 8 and legend.x0 >= axes_box.x1  # beside the axes, over no curve
    lo, hi = ax.get_xlim()
    ticks = [t for t in ax.get_xticks() if lo <= t <= hi]
    assert ticks == [1.0], ticks
    refs = {line.get_label(): (line.get_ydata()[0], line.get_linestyle()) for line in ax.get_lines()
            if "paper" in line.get_label()}
    assert refs == {"row 0: paper 98.50 (primary)": (98.5, "--"), "row 1: paper 97.00 (unconfirmed)": (97.0, ":")}
    assert ax.get_lines()[0].get_color() == [ln for ln in ax.get_lines() if ln.get_label().startswith("row 0:")][0].get_color()


def test_rows_run_before_they_followed_the_authors_code_are_marked_for_a_rerun(tmp_path):
    """#30.5: SQ's BWN/TWN baselines now run SQ's own layers (sq_bwn / sq_twn at ratio 100%); the H100 runs in
    results/sq were made with qbench's bwn and twn. They still fill their rows, marked, with their run counts."""
    bwn, sq_bwn = "t1_cifar10_vgg_9_bwn_err", "t1_cifar10_vgg_9_sq_bwn_err"
    _fake_run(tmp_path, "old", "bwn", 0, 0.89, tags={"paper": "sq", "table": "T1", "row": bwn, "tier": "full"})
    _fake_run(tmp_path, "sq", "sq_bwn", 0, 0.90, tags={"paper": "sq", "table": "T1", "row": sq_bwn, "tier": "full"})
    cells = {r[1]: r[5] for r in paper_table("sq", [str(tmp_path)], table="T1").rows}
    assert cells["CIFAR10 VGG-9 BWN"] == '11.00 (n=1); made with method "bwn", now "sq_bwn": rerun'
    assert cells["CIFAR10 VGG-9 SQ-BWN"] == "10.00 (n=1)"  # a run of the row's own method: nothing to say
    published = (REPO / "results" / "sq" / "table.md").read_text()
    assert '11.04 (n=1); made with method "bwn", now "sq_bwn": rerun' in published
    assert '8.68 (n=1); made with method "twn", now "sq_twn": rerun' in published
    # a method setting the row changed: the TWN rows quantize the first and last layers as caffe-twns does
    twn = {"paper": "twn", "table": "T2", "row": "t2_mnist_lenet_5_twn_acc", "tier": "full"}
    _fake_run(tmp_path / "t", "kept", "twn", 0, 0.99, tags=twn, keep_first_fp=True, keep_last_fp=False,
              threshold_factor=0.75)
    cell = {r[1]: r[5] for r in paper_table("twn", [str(tmp_path / "t")], table="T2").rows}["MNIST LeNet-5 TWN"]
    assert cell == "99.00 (n=1); made with method.keep_first_fp true, now false: rerun", cell  # 0.75 agrees
    assert "made with method.keep_first_fp true, now false, method.keep_last_fp true, now false: rerun" in (
        REPO / "results" / "twn" / "table_T2.md").read_text()


def test_writing_a_table_does_not_load_torch():
    """`qbench table` reads run records (JSON and YAML) and writes text: it starts without importing torch."""
    import subprocess
    import sys
    code = "import sys, qbench.results.tables, qbench.checkpoint; assert 'torch' not in sys.modules, 'torch loaded'"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-500:]
