"""qbench reproduce: a paper's rows x seeds as one Hydra multirun.

Each selected figure's experiment becomes a config in a temporary ``experiment`` group (method, model and
dataset as defaults overrides, its settings and, for tier=full, the paper's recipe); Hydra then sweeps
``+experiment=<rows> seed=<seeds>``, so any Hydra launcher applies. Every run is tagged with paper, table,
row and tier, which is how ``qbench table`` finds it.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import yaml

from qbench.errors import UserError, choices
from qbench.results.registry import Figure, load_paper

# tier=smoke: the recipe's loss, optimizer and schedule on a sliver of the data, for tests and a first look
SMOKE = {"trainer.epochs": 1, "trainer.batch_size": 64, "data.subset": 256, "data.val_subset": 256}
GROUPS = ("method", "model", "dataset", "optim", "sched")


def select(paper_key: str, table: str | None, rows: list[str] | None) -> list[Figure]:
    paper = load_paper(paper_key)
    figures = [f for f in paper.figures if table is None or (f.table or "-") == table]
    if table is not None and not figures:
        raise UserError(f"paper {paper_key!r} has no table {table!r}; valid: {choices(paper.tables())}")
    runnable = [f for f in figures if f.experiment]
    if rows:
        ids = {f.id for f in runnable}
        for r in rows:
            if r not in ids:
                raise UserError(f"row {r!r} is not a runnable row of {paper_key}"
                                f"{' ' + table if table else ''}; valid: {choices(ids) or '(none)'}")
        runnable = [f for f in runnable if f.id in rows]
    if not runnable:
        raise UserError(f"paper {paper_key!r}{' table ' + table if table else ''} has no row with a qbench "
                        "experiment yet")
    return runnable


def settings(f: Figure, tier: str) -> dict:
    """Flat key -> value of one row's run: its identity, its settings, and the tier's recipe."""
    e = f.experiment
    out = {"method": e["method"], "model": e["model"], "dataset": e["dataset"], **(e.get("overrides") or {})}
    if tier == "full" and not e.get("recipe"):
        raise UserError(f"row {f.id!r} has no full recipe in configs/paper/{f.paper}.yaml; run tier=smoke")
    out.update(e.get("recipe") or {})
    if tier == "smoke":
        out.update(SMOKE)
        out.update(e.get("smoke") or {})  # a row's own smoke settings (a staged method needs an epoch per stage)
    return out


def _as_override(key: str, value) -> str:
    return f"{key}={json.dumps(value) if isinstance(value, (list, bool)) or value is None else value}"


def _experiment_yaml(f: Figure, flat: dict, tier: str) -> str:
    doc: dict = {"defaults": [{f"override /{g}": flat[g]} for g in GROUPS if g in flat]}
    for key, value in flat.items():
        if key in GROUPS:
            continue
        node = doc
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    doc["tags"] = {"paper": f.paper, "table": f.table or "-", "row": f.id, "tier": tier}
    return "# @package _global_\n" + yaml.safe_dump(doc, sort_keys=False)


def reproduce(paper_key: str, table: str | None, rows: list[str] | None, seeds: int | None, tier: str,
              extra: list[str]) -> None:
    """Launch the rows x seeds: ``seeds=N`` runs seeds 0..N-1 (3 if neither is given); a ``seed=a,b``
    override among ``extra`` runs exactly those, e.g. to add seeds to rows already run."""
    from qbench.cli import _launch_hydra
    from qbench.config import check_overrides

    if tier not in ("smoke", "full"):
        raise UserError(f"tier={tier!r} is invalid; valid: full, smoke")
    own_seeds = [a for a in extra if a.split("=", 1)[0] == "seed"]
    if own_seeds and seeds is not None:
        raise UserError(f"give seeds={seeds} (seeds 0..{seeds - 1}) or {own_seeds[0]} (those seeds), not both")
    if seeds is not None and seeds < 1:
        raise UserError(f"seeds={seeds} is invalid; allowed: an integer >= 1")
    seed_sweep = [] if own_seeds else ["seed=" + ",".join(str(s) for s in range(3 if seeds is None else seeds))]
    figures = select(paper_key, table, rows)
    flats = [settings(f, tier) for f in figures]
    for flat in flats:  # every row checked as a plain `qbench train` would be, before anything runs
        check_overrides([_as_override(k, v) for k, v in flat.items()] + list(extra))
    with tempfile.TemporaryDirectory(prefix="qbench-experiments-") as tmp:
        (Path(tmp) / "experiment").mkdir()
        names = []
        for f, flat in zip(figures, flats):
            name = f"{paper_key}__{f.id}"
            (Path(tmp) / "experiment" / f"{name}.yaml").write_text(_experiment_yaml(f, flat, tier))
            names.append(name)
        _launch_hydra(["-m", f"hydra.searchpath=[file://{tmp}]", "+experiment=" + ",".join(names), *seed_sweep,
                       f"hydra.sweep.dir=runs/reproduce/{paper_key}/{tier}/${{now:%Y-%m-%d_%H-%M-%S-%f}}",
                       *extra])
