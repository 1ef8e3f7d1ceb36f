"""qbench reproduce: a paper's rows x seeds as one Hydra multirun.

Each selected figure's experiment becomes a config of the sweep folder's own ``experiment`` group
(``<sweep>/experiments/experiment/<paper>__<row>.yaml``: method, model and dataset as defaults overrides, its
settings, its recipe -- a configs/recipe option or its own -- and for tier=smoke configs/tier/smoke.yaml); Hydra
then sweeps ``+experiment=<rows> seed=<seeds>``, so any Hydra launcher applies, and the folder keeps the record
of what each job ran. Every run is tagged with paper, table,
row and tier, which is how ``qbench table`` finds it.

A row whose experiment names an ``init_row`` starts, as its paper did, from a trained model: each of its seeds
from the finished run of that row with the same seed and tier (``method.init``). Such rows run as a second
multirun, one experiment per row and seed, after the first has trained the rows they start from.
"""
from __future__ import annotations

import json
from pathlib import Path

import yaml

from qbench.config import GROUPS, option_settings
from qbench.errors import UserError, choices
from qbench.results.registry import Figure, load_paper

def select(paper_key: str, table: str | None, rows: list[str] | None) -> list[Figure]:
    paper = load_paper(paper_key)
    figures = [f for f in paper.figures if table is None or (f.table or "-") == table]
    if table is not None and not figures:
        raise UserError(f"paper {paper_key!r} has no table {table!r}; valid: {choices(paper.tables())}")
    cited = {f.id: f for f in figures if f.experiment and f.run_paper != paper_key}
    runnable = [f for f in figures if f.experiment and f.id not in cited]
    if rows:
        ids = {f.id for f in runnable}
        for r in rows:
            if r in cited:
                raise UserError(f"row {r!r} reads the runs of {cited[r].run_paper}'s row {cited[r].run_row!r}: "
                                f"qbench reproduce paper={cited[r].run_paper} rows={cited[r].run_row}")
            if r not in ids:
                why = next((f" ({f.no_experiment})" for f in figures if f.id == r and f.no_experiment), "")
                raise UserError(f"row {r!r} is not a runnable row of {paper_key}"
                                f"{' ' + table if table else ''}{why}; valid: {choices(ids) or '(none)'}")
        runnable = [f for f in runnable if f.id in rows]
    # a figure read from another row's runs (top-5 beside top-1) runs that row, once
    own = {f.id: f for f in paper.figures if f.experiment and "runs_of" not in f.experiment}
    runnable = list({f.run_row: own[f.run_row] for f in runnable}.values())
    if not runnable:
        reasons = sorted({f.no_experiment for f in figures if f.no_experiment})
        why = f": {reasons[0]}" if len(reasons) == 1 else ""
        raise UserError(f"paper {paper_key!r}{' table ' + table if table else ''} has no row with a qbench "
                        f"experiment{why}")
    return runnable


def settings(f: Figure, tier: str) -> dict:
    """Flat key -> value of one row's run: its identity, its settings, its recipe (a configs/recipe option by
    name, or the row's own settings) and, for tier=smoke, configs/tier/smoke.yaml and the row's own smoke
    settings (a staged method needs an epoch per stage)."""
    e = f.experiment
    out = {"method": e["method"], "model": e["model"], "dataset": e["dataset"], **(e.get("overrides") or {})}
    recipe = e.get("recipe")
    if tier == "full" and not recipe:
        raise UserError(f"row {f.id!r} has no full recipe in configs/paper/{f.paper}.yaml; run tier=smoke")
    out.update(option_settings("recipe", recipe) if isinstance(recipe, str) else recipe or {})
    if tier == "smoke":
        smoke = option_settings("tier", "smoke")
        out.update(smoke)
        if out.get("data.holdout"):  # a held-out validation set: a sliver too
            out["data.holdout"] = smoke["data.val_subset"]
        out.update(e.get("smoke") or {})
    return out


def _seed_list(own_seeds: list[str], seeds: int | None) -> list[int]:
    """The seeds to run: those of a ``seed=a,b`` override, else 0..seeds-1 (3 if neither is given)."""
    if not own_seeds:
        return list(range(3 if seeds is None else seeds))
    value = own_seeds[-1].split("=", 1)[1]
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise UserError(f"seed={value!r}: rows that start from another row's runs need seeds=N or "
                        "seed=a,b,... (whole numbers)") from None


def init_runs(paper_key: str, f: Figure, tier: str, seeds: list[int]) -> dict[int, str]:
    """seed -> the newest finished run of row ``f.experiment['init_row']`` with that seed and tier, searched
    under runs/reproduce/<paper>/<tier> (where ``qbench reproduce`` puts them)."""
    from qbench.results.runs import find_runs

    init_row = f.experiment["init_row"]
    where = Path("runs") / "reproduce" / paper_key / tier
    done, _ = find_runs([str(where)]) if where.is_dir() else ([], [])
    found: dict[int, str] = {}
    for run in sorted(done, key=lambda r: str(r.dir)):  # sweep folders are timestamps: the newest comes last
        tags = run.config.get("tags") or {}
        if tags.get("row") == init_row and tags.get("tier") == tier and run.config.get("seed") in seeds:
            found[run.config["seed"]] = str(run.dir.resolve())
    missing = [s for s in seeds if s not in found]
    if missing:
        raise UserError(f"row {f.id!r} starts from a finished run of row {init_row!r} with the same seed; "
                        f"none for seed {','.join(map(str, missing))} under {where}: run qbench reproduce "
                        f"paper={paper_key} rows={init_row} seed={','.join(map(str, missing))} tier={tier} "
                        "first, or select both rows")
    return found


def _as_override(key: str, value) -> str:
    if isinstance(value, dict):  # a node the config may not have yet (a method's extra callback): add or set
        return f"++{key}={_hydra_value(value)}"
    return f"{key}={json.dumps(value) if isinstance(value, (list, bool)) or value is None else value}"


def _hydra_value(value) -> str:
    """A value in Hydra's override grammar: dicts as {key:value,...}, lists as [...], scalars as JSON."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_hydra_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_hydra_value(v) for v in value) + "]"
    return json.dumps(value)


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
    from qbench.config import check_overrides
    from qbench.launch import launch, resolve_now

    if tier not in ("smoke", "full"):
        raise UserError(f"tier={tier!r} is invalid; valid: full, smoke")
    own_seeds = [a for a in extra if a.split("=", 1)[0] == "seed"]
    if own_seeds and seeds is not None:
        raise UserError(f"give seeds={seeds} (seeds 0..{seeds - 1}) or {own_seeds[0]} (those seeds), not both")
    if seeds is not None and seeds < 1:
        raise UserError(f"seeds={seeds} is invalid; allowed: an integer >= 1")
    seed_sweep = [] if own_seeds else ["seed=" + ",".join(map(str, _seed_list([], seeds)))]
    figures = select(paper_key, table, rows)
    first = [f for f in figures if not f.experiment.get("init_row")]
    then = [f for f in figures if f.experiment.get("init_row")]
    seed_list = _seed_list(own_seeds, seeds) if then else []
    selected = {f.id for f in figures}
    # rows whose init row is not selected here must find its runs now; the others once the first sweep is done
    inits = {f.id: init_runs(paper_key, f, tier, seed_list) for f in then
             if f.experiment["init_row"] not in selected}
    for f in figures:  # every row checked as a plain `qbench train` would be, before anything runs
        init = inits.get(f.id)
        check_overrides([_as_override(k, v) for k, v in settings(f, tier).items()]
                        + ([f"method.init={init[seed_list[0]]}"] if init else []) + list(extra))
    given = [a.split("=", 1)[1] for a in extra if a.split("=", 1)[0] == "hydra.sweep.dir"]
    folder_of = given[-1] if given else f"runs/reproduce/{paper_key}/{tier}/${{now:%Y-%m-%d_%H-%M-%S-%f}}"
    extra = [a for a in extra if a.split("=", 1)[0] != "hydra.sweep.dir"]
    sweeps: list[Path] = []

    def sweep(experiments: dict[str, tuple[Figure, dict]], args: list[str]) -> None:
        """One multirun over ``experiments`` (name -> row, settings): each is written as a config of the
        sweep folder's own experiment group (<sweep>/experiments/experiment/<name>.yaml, the record of what each
        job ran, readable by every launcher's jobs) and Hydra sweeps +experiment=<names>."""
        folder = Path(resolve_now(folder_of))
        group = folder / "experiments" / "experiment"
        group.mkdir(parents=True, exist_ok=True)
        for name, (f, flat) in experiments.items():
            (group / f"{name}.yaml").write_text(_experiment_yaml(f, flat, tier))
        launch(["-m", f"hydra.searchpath=[file://{(folder / 'experiments').resolve()}]",
                "+experiment=" + ",".join(experiments), f"hydra.sweep.dir={folder}", *args])
        sweeps.append(folder)

    if first:
        sweep({f"{paper_key}__{f.id}": (f, settings(f, tier)) for f in first}, [*seed_sweep, *extra])
    if then:  # one experiment per row and seed: each seed starts from its own seed's run
        experiments = {}
        for f in then:
            init = inits.get(f.id) or init_runs(paper_key, f, tier, seed_list)
            for s in seed_list:
                experiments[f"{paper_key}__{f.id}__s{s}"] = (f, {**settings(f, tier), "seed": s, "method.init": init[s]})
        sweep(experiments, [a for a in extra if a.split("=", 1)[0] != "seed"])
    # the command that shows these rows beside the paper's figures (runs= only where they are not under ./runs)
    elsewhere = [str(d) for d in sweeps if not d.is_relative_to("runs")]
    print("the rows beside the paper's figures: qbench table paper=" + paper_key + f" table={table}" * bool(table)
          + " tier=smoke" * (tier == "smoke") + (" runs=" + ",".join(elsewhere) if elsewhere else ""), flush=True)
