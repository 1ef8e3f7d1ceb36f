"""Tables: a paper's figures beside reproduced ones (`qbench table`), and any set of runs side by side
(`qbench compare`). Shown with rich on the terminal and written as Markdown, CSV and LaTeX."""
from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from qbench.checkpoint import write_atomic
from qbench.errors import UserError, choices
from qbench.results.registry import Figure, load_paper
from qbench.results.runs import Group, Run, differing_keys, find_runs, group_runs

SHORT = {"method": "method.name", "model": "model.name", "dataset": "dataset.name", "optim": "optim._target_",
         "sched": "sched._target_"}


# a figure's metric -> (the summary.json value it is computed from, shown as an error?, in percent?)
METRICS = {"err": ("final_val_acc", True, True), "top1_err": ("final_val_acc", True, True),
           "acc": ("final_val_acc", False, True), "top1": ("final_val_acc", False, True),
           "top1_acc": ("final_val_acc", False, True), "top1_fraction": ("final_val_acc", False, False),
           "top5": ("final_val_top5", False, True), "top5_err": ("final_val_top5", True, True)}


# a run with a held-out validation set (data.holdout) reports the test split at its best validation epoch,
# as BinaryConnect and BNN do: its final_val_* are the held-out set's
SELECTED = {"final_val_acc": "test_acc_at_best_val", "final_val_top5": "test_top5_at_best_val"}


def _pct(summary: dict, metric: str) -> float | None:
    """A run's value in the figure's metric, from its summary.json: the last epoch's, or with data.holdout the
    test split's at the best validation epoch; None where qbench does not measure the metric (mAP) or the run
    does not record it (runs from before top-5 was recorded)."""
    if metric not in METRICS:
        return None
    key, as_error, percent = METRICS[metric]
    key = SELECTED[key] if "best_val_epoch" in summary else key
    if summary.get(key) is None:
        return None
    value = 1 - summary[key] if as_error else summary[key]
    return 100 * value if percent else value


def _signed(d: float) -> str:
    """A difference to two decimals with its sign; one that rounds to zero is "+0.00", never "-0.00"."""
    return f"{round(d, 2) + 0.0:+.2f}"


def _fmt(mean, std, n) -> str:
    """'mean ± std (n=N)'; one run has no spread to show, so it is 'value (n=1)', never '± 0.00'."""
    return f"{mean:.2f} (n=1)" if n == 1 else f"{mean:.2f} ± {std:.2f} (n={n})"


class Output:
    """Rows of strings rendered to the terminal and, optionally, to .md / .csv / .tex files."""

    def __init__(self, title: str, columns: list[str], key_columns: int = 1):
        self.title, self.columns, self.rows = title, columns, []
        self.key_columns = key_columns  # the leading columns that name a row (the rest are its figures)
        self.notes: list[str] = []  # lines under the table (Markdown, terminal, LaTeX comments; not CSV)

    def add(self, *cells) -> None:
        self.rows.append([("" if c is None else str(c)) for c in cells])

    def show(self, console: Console) -> None:
        t = Table(title=Text(self.title), title_justify="left")
        for c in self.columns:
            t.add_column(c)
        for r in self.rows:
            t.add_row(*(Text(c) for c in r))  # cells are plain text: a "[...]" in a label is not rich markup
        console.print(t)
        for n in self.notes:
            console.print(n, markup=False, highlight=False)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in r) + " |" for r in self.rows]
        return "\n".join(lines + ([""] + [f"- {n}" for n in self.notes] if self.notes else [])) + "\n"

    def csv(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(self.columns)
        w.writerows(self.rows)
        return buf.getvalue()

    def latex(self) -> str:
        esc = lambda s: s.replace("\\", "\\textbackslash{}").replace("&", "\\&").replace("%", "\\%").replace(
            "_", "\\_").replace("#", "\\#").replace("±", "$\\pm$").replace("Δ", "$\\Delta$")  # noqa: E731
        lines = [f"% {self.title}", "\\begin{tabular}{" + "l" * len(self.columns) + "}", "\\hline",
                 " & ".join(esc(c) for c in self.columns) + " \\\\", "\\hline"]
        lines += [" & ".join(esc(c) for c in r) + " \\\\" for r in self.rows]
        return "\n".join(lines + ["\\hline", "\\end{tabular}"] + [f"% {n}" for n in self.notes]) + "\n"

    def runs_per_row(self) -> dict[tuple, int]:
        return _runs_per_row(self.columns, self.rows, self.key_columns)

    def check_write(self, out: Path, stem: str, force: bool = False) -> list[Path]:
        """The paths ``write`` would write; a UserError if it would replace a table of more runs."""
        paths = [out / f"{stem}.{ext}" for ext in ("md", "csv", "tex")]
        lost = [] if force else _rows_losing_runs(paths[1], self.runs_per_row(), self.key_columns)
        if lost:
            raise UserError(f"{paths[1]} holds more runs than this table found ({'; '.join(lost[:3])}"
                            f"{'; ...' if len(lost) > 3 else ''}); not replaced. Point runs= at the folder that "
                            "holds them, write elsewhere with out=<dir>, or pass --force to replace it")
        return paths

    def write(self, out: Path, stem: str, force: bool = False) -> list[Path]:
        """Write ``<stem>.md/.csv/.tex`` into ``out``. An earlier table there whose rows counted more runs than
        this one's is never replaced unless ``force``: a table regenerated from the wrong folder must not turn
        published figures into "not run". All three files are written, or none."""
        paths = self.check_write(out, stem, force)
        out.mkdir(parents=True, exist_ok=True)
        for p, text in zip(paths, (self.markdown(), self.csv(), self.latex())):
            write_atomic(p, lambda f, data=text.encode(): f.write(data))
        return paths


RUN_COUNT = re.compile(r"\(n=(\d+)\)")


def _runs_per_row(columns: list[str], rows: list[list[str]], key_columns: int) -> dict[tuple, int]:
    """Runs behind each row of a table: the sum of its "(n=K)" cells, keyed by the row's naming columns."""
    out: dict[tuple, int] = {}
    for r in rows:
        key = tuple(r[:key_columns])
        out[key] = out.get(key, 0) + sum(int(m) for c in r[key_columns:] for m in RUN_COUNT.findall(c))
    return out


def _rows_losing_runs(old_csv: Path, new: dict[tuple, int], key_columns: int) -> list[str]:
    """The rows of an earlier CSV table that counted more runs than the same rows do now."""
    if not old_csv.is_file():
        return []
    rows = list(csv.reader(io.StringIO(old_csv.read_text(errors="replace"))))
    if not rows:
        return []
    old = _runs_per_row(rows[0], rows[1:], key_columns)
    return [f"{' / '.join(k)}: {n} run{'s' * (n != 1)} there, {new.get(k, 0)} now"
            for k, n in old.items() if n > new.get(k, 0)]


def paper_table(key: str, run_patterns: list[str], table: str | None = None, tier: str = "full") -> Output:
    paper = load_paper(key)
    if table is not None and table not in paper.tables():
        raise UserError(f"paper {key!r} has no table {table!r}; valid: {choices(paper.tables())}")
    done, unfinished = find_runs(run_patterns)
    groups = group_runs(done)
    if tier not in ("full", "smoke"):
        raise UserError(f"tier={tier!r} is invalid; valid: full, smoke")
    title = paper.cite + (" -- SMOKE TIER: plumbing check on data slivers, not a reproduction" if tier == "smoke" else "")
    out = Output(title, ["table", "figure", "metric", "paper", "status", "reproduced (mean ± std)", "Δ", "epochs"],
                 key_columns=2)
    shown = []
    own = {g.id: g for g in paper.figures}
    for f in paper.figures:
        if table is not None and (f.table or "-") != table:
            continue
        matched = _candidates(f, groups, tier)
        source = own.get(f.run_row) if f.run_paper == f.paper else None
        out.add(*_figure_row(f, matched, _not_counted(f, unfinished, tier), source, tier))
        if len(matched) == 1:
            shown += matched[0].runs
    out.notes = provenance(shown) or [
        f"no finished {tier}-tier runs of this paper's rows under {', '.join(run_patterns) or '(no folder)'}; "
        f"it holds {len(done)} finished and {len(unfinished)} unfinished runs of any kind"]
    return out


def _runs(n: int) -> str:
    return f"{n} run" + "s" * (n != 1)


def _short(commit: str | None) -> str:
    return "unknown" if not commit else commit[:12] + ("-dirty" if commit.endswith("-dirty") else "")


def provenance(runs: list[Run]) -> list[str]:
    """Where the reproduced numbers come from: qbench commits, hardware, and the device time they took
    (wall time x processes, summed over runs; on a GPU these are GPU-minutes). A resumed run counts under
    every commit and device it trained on."""
    if not runs:
        return []
    minutes: dict[str, float] = {}
    for s in (s for r in runs for s in r.segments):
        device = s.get("device") or "unknown device"
        minutes[device] = minutes.get(device, 0.0) + s.get("wall_seconds", 0.0) * s.get("processes", 1) / 60
    commits = Counter(c for r in runs for c in dict.fromkeys(_short(s.get("qbench_commit")) for s in r.segments))
    resumed = sum(len(r.segments) > 1 for r in runs)
    return [f"{_runs(len(runs))} finished" + (f" ({resumed} of them resumed)" if resumed else "")
            + "; qbench commit " + ", ".join(f"{c} ({_runs(n)})" for c, n in commits.most_common()),
            "device time: " + ", ".join(f"{m:.1f} min on {d}" for d, m in minutes.items())
            + " (wall time x processes, summed over runs)"]


def figure_on_curve(f: Figure, metric: str) -> float | None:
    """The paper's figure in a learning curve's units (accuracy in %), for the curves it is a point of: a
    top-1 figure (accuracy or error) on val_acc / test_acc, a top-5 one on val_top5 / test_top5."""
    if f.value is None or f.metric not in METRICS:
        return None
    key, as_error, percent = METRICS[f.metric]
    if metric.split("_", 1)[-1] != {"final_val_acc": "acc", "final_val_top5": "top5"}[key]:
        return None
    value = f.value if percent else 100 * f.value
    return 100 - value if as_error else value


def paper_series(key: str, run_patterns: list[str], table: str | None = None,
                 tier: str = "full") -> dict[str, list[tuple[str, list[Run], Figure]]]:
    """Per table of the paper: (row label, that row's finished runs, the row's figure) for the rows run in one
    configuration, the curves ``qbench plot paper=<key>`` draws."""
    paper = load_paper(key)
    if table is not None and table not in paper.tables():
        raise UserError(f"paper {key!r} has no table {table!r}; valid: {choices(paper.tables())}")
    groups = group_runs(find_runs(run_patterns)[0])
    out: dict[str, list[tuple[str, list[Run]]]] = {}
    for f in paper.figures:
        own = f.run_row == f.id and f.run_paper == f.paper
        matched = _candidates(f, groups, tier) if own else []  # each row's curves drawn once, by its paper
        if (table is None or (f.table or "-") == table) and len(matched) == 1:
            out.setdefault(f.table or "-", []).append((f.label, matched[0].runs, f))
    return out


def _row_tags(f: Figure, tier: str) -> dict:
    """The tags ``qbench reproduce`` gives a row's runs at this tier: how its runs are found."""
    return {"paper": f.run_paper, "row": f.run_row, "tier": tier}


def _candidates(f: Figure, groups: list[Group], tier: str) -> list[Group]:
    """The runs ``qbench reproduce`` made for this row at this tier. Other runs never fill a paper row, even
    of the same method, model and dataset: they may follow another recipe (use ``qbench compare``)."""
    want = _row_tags(f, tier)
    return [g for g in groups if all(g.get(f"tags.{k}") == v for k, v in want.items())]


def _not_counted(f: Figure, runs: list[Run], tier: str) -> str:
    """'1 failed, 2 unfinished at 280/1000, 296/1000 epochs' for this row's runs that did not complete: a row
    with fewer seeds than were launched says so (unfinished: still running, interrupted, or killed)."""
    want = _row_tags(f, tier)
    mine = [r for r in runs if all((r.config.get("tags") or {}).get(k) == v for k, v in want.items())]
    failed = [r for r in mine if r.summary.get("status") == "failed"]
    unfinished = [r.summary for r in mine if r.summary.get("status") != "failed"]
    at = sorted(f"{s['epochs_completed']}/{s['epochs']}" for s in unfinished  # how far each got
                if isinstance(s.get("epochs_completed"), int) and isinstance(s.get("epochs"), int))
    parts = ([f"{len(failed)} failed"] * bool(failed)
             + [f"{len(unfinished)} unfinished" + (f" at {', '.join(at)} epochs" if at else "")] * bool(unfinished))
    return ", ".join(parts)


def _figure_row(f: Figure, groups: list[Group], not_counted: str = "", source: Figure | None = None,
                tier: str = "full") -> list:
    """``source``: the figure whose row makes the runs. Runs made before that row changed (to follow the
    authors' code) still fill it, marked with the settings in which they differ from what it runs now."""
    row = _reproduced(f, groups, not_counted)
    if f.run_paper != f.paper and row[-3]:  # a figure cited from another paper: say whose runs fill it
        row[-3] += f" ({f.run_paper}'s row)"
    if source is not None and source.experiment and len(groups) == 1:
        stale = _stale_settings(source, groups[0].runs, tier)
        if stale:
            row[-3] += f"; made with {', '.join(stale)}: rerun"
    return row


def _setting(config: dict, key: str):
    """A run's value of a row's setting: a group's name (method, model, dataset) or a dotted key."""
    node = config
    for part in (f"{key}.name" if key in ("method", "model", "dataset") else key).split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


_ABSENT = object()


def _stale_settings(f: Figure, runs: list[Run], tier: str) -> list[str]:
    """'method.keep_first_fp true, now false' for each setting of the row's method (which method, and its
    method.* keys: what a change to follow the authors' code alters) in which one of ``runs`` differs from it.
    The rest of a recipe (epochs, optimizer) is not compared: a run tagged for the row was made with it."""
    from qbench.results.reproduce import settings

    try:
        want = settings(f, tier)
    except UserError:
        return []
    out = []
    for key, value in want.items():
        if key != "method" and not key.startswith("method."):
            continue
        have = {json.dumps(v, sort_keys=True, default=str) for v in (_setting(r.config, key) for r in runs)
                if v is not _ABSENT}
        now = json.dumps(value, sort_keys=True, default=str)
        if have and have != {now} and not _same_number(have, value):
            out.append(f"{key} {' / '.join(sorted(have))}, now {now}")
    return out


def _same_number(have: set[str], value) -> bool:
    try:
        return all(abs(float(json.loads(h)) - float(value)) <= 1e-12 * max(1.0, abs(float(value))) for h in have)
    except (TypeError, ValueError):
        return False


def _reproduced(f: Figure, groups: list[Group], not_counted: str = "") -> list:
    status = f.status if f.confirmed else "UNCONFIRMED"
    paper_value = "N/A" if f.value is None else f.value
    base = [f.table or "-", f.label, f.metric, paper_value, status]
    if not f.experiment:
        return base + [f"not wired: {f.no_experiment}" if f.no_experiment else "no qbench experiment yet", "", ""]
    matched = groups
    if not matched:
        return base + [f"none finished ({not_counted})" if not_counted else "not run", "", ""]
    if len(matched) > 1:  # different recipes are never averaged together
        return base + [f"{len(matched)} different configs: compare them with qbench compare", "", ""]
    g = matched[0]
    values = [_pct(r.summary, f.metric) for r in g.runs]
    if not values or None in values:
        return base + [f"{f.metric} not measured by qbench" if f.metric not in METRICS else
                       f"{f.metric} not recorded by these runs (made before qbench recorded it)", "", ""]
    import statistics
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    delta = "" if f.value is None or isinstance(f.value, str) else _signed(mean - f.value)
    epochs = "/".join(map(str, sorted({r.summary.get("epochs_completed") for r in g.runs})))
    selected = [r.summary["best_val_epoch"] for r in g.runs if "best_val_epoch" in r.summary]
    if selected:  # data.holdout: the reported figure is each run's test value at its best validation epoch
        epochs += f" (test at best val epoch {'/'.join(map(str, selected))})"
    shown = _fmt(mean, std, len(values)) + (f"; not counted: {not_counted}" if not_counted else "")
    return base + [shown, delta, epochs]


def labelled_groups(run_patterns: list[str], by: list[str]) -> tuple[list[tuple[list, str, Group]], int]:
    """(by-values, other differences, group) for every configuration among the finished runs."""
    done, other = find_runs(run_patterns)
    if not done:
        raise UserError(f"no finished runs under {', '.join(run_patterns)} (looked for run directories with "
                        f"summary.json status 'completed'; found {len(other)} unfinished)")
    keys = [SHORT.get(b, b) for b in by]
    groups = group_runs(done)
    known = set().union(*(g.config for g in groups))
    for b, k in zip(by, keys):
        if k not in known:
            raise UserError(f"by={b!r} is not a config key of these runs; valid: method, model, dataset, or a "
                            f"dotted key such as method.w_bits")
    # shown: what tells apart configurations that share the same `by` values (e.g. method.mode det / stoch)
    same_by: dict[tuple, list[Group]] = {}
    for g in groups:
        same_by.setdefault(tuple(json.dumps(g.get(k)) for k in keys), []).append(g)
    rest = sorted({k for gs in same_by.values() if len(gs) > 1 for k in differing_keys(gs)} - set(keys))
    labelled = [([g.get(k) for k in keys],
                 ", ".join(f"{k}={json.loads(g.config[k]) if k in g.config else None}" for k in rest), g)
                for g in groups]
    return sorted(labelled, key=lambda t: [str(c) for c in t[0]] + [t[1]]), len(done)


def compare(run_patterns: list[str], by: list[str]) -> Output:
    labelled, n_runs = labelled_groups(run_patterns, by)
    held_out = any("best_val_epoch" in r.summary for _, _, g in labelled for r in g.runs)  # data.holdout runs
    out = Output(f"{n_runs} finished runs in {len(labelled)} configurations",
                 [*by, "val acc % (mean ± std)", "best %"] + ["test acc % at best val"] * held_out
                 + ["epochs", "other differences"], key_columns=len(by))
    for values, others, g in labelled:
        mean, std = g.mean_std()
        best, _ = g.mean_std("best_val_acc")
        epochs = "/".join(str(e) for e in sorted({r.summary.get("epochs_completed") for r in g.runs}))
        cells = [_fmt(100 * mean, 100 * std, len(g.values())) if mean is not None else "-",
                 f"{100 * best:.2f}" if best is not None else "-"]
        if held_out:
            test, test_std = g.mean_std("test_acc_at_best_val")
            cells.append(_fmt(100 * test, 100 * test_std, len(g.values("test_acc_at_best_val")))
                         if test is not None else "-")
        out.add(*values, *cells, epochs, others)
    out.notes = provenance([r for _, _, g in labelled for r in g.runs]) + skipped_note(find_runs(run_patterns)[1])
    return out


def skipped_note(unfinished: list[Run]) -> list[str]:
    """A line naming the runs left out because they did not complete (killed, failed, still running)."""
    if not unfinished:
        return []
    def one(r: Run) -> str:
        s = r.summary
        at = (f", {s['epochs_completed']}/{s.get('epochs', '?')} epochs" if isinstance(s.get("epochs_completed"), int)
              else "")
        return f"{r.dir.name} ({s.get('status', 'no summary')}{at})"

    shown = ", ".join(one(r) for r in unfinished[:3]) + (f" and {len(unfinished) - 3} more" if len(unfinished) > 3 else "")
    return [f"not counted: {_runs(len(unfinished))} that did not complete: {shown}"]


SWEEP_ROWS = 30  # one screen


def sweep_summary(sweep_dir: Path) -> Output:
    """What a multirun ends with: each of its runs in one row (job, method, model, dataset, seed, status,
    epochs, final accuracy, time), at most a screen of them, and the command that compares them."""
    done, other = find_runs([str(sweep_dir)])
    runs = sorted(done + other, key=lambda r: (r.summary.get("started_at") or "", str(r.dir)))
    out = Output(f"multirun {sweep_dir}: {len(done)} of {len(runs)} runs completed",
                 ["job", "method", "model", "dataset", "seed", "status", "epochs", "final val acc %", "time"])
    for r in runs[:SWEEP_ROWS]:
        s = r.summary
        acc = s.get("test_acc_at_best_val") if "best_val_epoch" in s else s.get("final_val_acc")
        out.add(r.dir.name, s.get("method"), s.get("model"), s.get("dataset"), s.get("seed"), s.get("status"),
                f"{s.get('epochs_completed')}/{s.get('epochs')}",
                f"{100 * acc:.2f}" + (" (test at best val)" if "best_val_epoch" in s else "") if acc is not None else "-",
                f"{s['wall_seconds']:.0f} s" if isinstance(s.get("wall_seconds"), (int, float)) else "-")
    if len(runs) > SWEEP_ROWS:
        out.notes.append(f"... and {len(runs) - SWEEP_ROWS} more runs")
    out.notes.append(f"mean ± std over seeds: qbench compare runs={sweep_dir}")
    return out
