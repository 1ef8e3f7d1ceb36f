"""The paper registry: each seed paper's reported figures with their provenance (configs/paper/<key>.yaml)."""
from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import OmegaConf

from qbench.config import config_dir, group_options
from qbench.errors import UserError, choices

# how far each status has been checked, strongest first; 'unconfirmed' is never presented as confirmed
STATUSES = ("primary", "repo", "slides", "secondary", "unconfirmed")


@dataclass
class Figure:
    paper: str
    id: str
    metric: str           # err | acc | top1 | top5 | top1_err | top5_err | top1_fraction ...
    value: float | None   # None: the paper prints N/A
    status: str
    table: str | None = None
    label: str = ""
    note: str | None = None
    experiment: dict | None = None  # which qbench run reproduces it: method, model, dataset, overrides
    no_experiment: str | None = None  # why none does (a model qbench lacks, a task it does not train, ...)

    @property
    def confirmed(self) -> bool:
        return self.status != "unconfirmed"

    @property
    def run_row(self) -> str:
        """The row whose runs fill this figure: its own, or with ``experiment.runs_of`` another figure's (a
        top-5 figure is read from the runs of its top-1 figure; the same experiment in two tables runs once).
        ``runs_of: <paper>/<row>`` names another paper's row: a figure a paper cites from another."""
        return (self.experiment or {}).get("runs_of", self.id).split("/")[-1]

    @property
    def run_paper(self) -> str:
        """The paper whose ``qbench reproduce`` makes this figure's runs."""
        ref = (self.experiment or {}).get("runs_of", "")
        return ref.split("/")[0] if "/" in ref else self.paper


@dataclass
class Paper:
    key: str
    cite: str
    arxiv: str | None
    figures: list[Figure] = field(default_factory=list)

    def tables(self) -> list[str]:
        return sorted({f.table or "-" for f in self.figures})


def paper_keys() -> list[str]:
    return sorted(p.stem for p in (config_dir() / "paper").glob("*.yaml"))


def load_paper(key: str) -> Paper:
    if key not in paper_keys():
        raise UserError(f"unknown paper {key!r}; valid: {choices(paper_keys())}")
    doc = OmegaConf.to_container(OmegaConf.load(config_dir() / "paper" / f"{key}.yaml"))
    figures = []
    for f in doc["figures"]:
        if f["status"] not in STATUSES:
            raise UserError(f"configs/paper/{key}.yaml: figure {f['id']} has status {f['status']!r}; "
                            f"valid: {', '.join(STATUSES)}")
        if f.get("experiment") and f.get("no_experiment"):
            raise UserError(f"configs/paper/{key}.yaml: figure {f['id']} has both an experiment and a "
                            "no_experiment reason; keep one")
        label = " ".join(str(f[k]) for k in ("ds", "arch", "bits", "variant", "method", "row") if f.get(k))
        # a figure without an experiment says why: its own no_experiment, else the paper's (one reason for all)
        reason = None if f.get("experiment") else f.get("no_experiment") or doc.get("no_experiment")
        figures.append(Figure(key, f["id"], f["metric"], f["value"], f["status"], f.get("table"), label,
                              f.get("note"), f.get("experiment"), reason))
    _check_references(key, figures)
    return Paper(doc["key"], doc["cite"], doc.get("arxiv"), figures)


def _own_rows(key: str) -> set[str]:
    """The figures of paper ``key`` with an experiment of their own (read without following its references)."""
    doc = OmegaConf.to_container(OmegaConf.load(config_dir() / "paper" / f"{key}.yaml"))
    return {f["id"] for f in doc["figures"] if f.get("experiment") and "runs_of" not in f["experiment"]}


def _check_references(key: str, figures: list[Figure]) -> None:
    """``runs_of`` must name a figure with an experiment of its own, in this paper or (``<paper>/<row>``) in
    another; ``init_row`` one of this paper's that starts from scratch."""
    own = {f.id: f.experiment for f in figures if f.experiment and "runs_of" not in f.experiment}
    recipes = group_options("recipe")
    for f in figures:
        e = f.experiment or {}
        if isinstance(e.get("recipe"), str) and e["recipe"] not in recipes:
            raise UserError(f"configs/paper/{key}.yaml: figure {f.id!r} names recipe {e['recipe']!r}, which is not in "
                            f"configs/recipe; valid: {choices(recipes)}")
        if "/" in e.get("runs_of", ""):
            other, row = e["runs_of"].split("/", 1)
            if other not in paper_keys() or row not in _own_rows(other):
                valid = choices(_own_rows(other)) if other in paper_keys() else choices(paper_keys())
                raise UserError(f"configs/paper/{key}.yaml: figure {f.id!r} has runs_of {e['runs_of']!r}, which is "
                                f"not a figure with its own experiment; valid: {valid}")
            continue
        for field_, ok in (("runs_of", set(own)), ("init_row", {i for i, x in own.items() if "init_row" not in x})):
            if field_ in e and e[field_] not in ok:
                raise UserError(f"configs/paper/{key}.yaml: figure {f.id!r} has {field_} {e[field_]!r}, which is "
                                f"not a figure with its own experiment{' from scratch' * (field_ == 'init_row')}; "
                                f"valid: {choices(ok)}")
