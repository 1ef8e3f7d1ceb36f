"""Learning curves of several runs overlaid: the mean over seeds as a line, min-max as a band."""
from __future__ import annotations

import json
from pathlib import Path

from qbench.errors import UserError, choices
from qbench.results.runs import Run

METRICS = {"val_acc": "validation accuracy (%)", "val_top5": "validation top-5 accuracy (%)",
           "train_acc": "training accuracy (%)",
           "val_loss": "validation loss", "train_loss": "training loss", "lr": "learning rate",
           "test_acc": "test accuracy (%, data.holdout runs)", "test_top5": "test top-5 accuracy (%, data.holdout runs)",
           "test_loss": "test loss (data.holdout runs)"}


def _curve(run: Run, metric: str) -> dict[int, float]:
    path = run.dir / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    scale = 100.0 if metric.endswith(("_acc", "_top5")) else 1.0
    return {r["epoch"]: scale * r[metric] for r in rows if r.get(metric) is not None}


RUNS_KEY = "qbench runs"  # PNG text chunk: how many runs a plot drew, so a re-plot never loses any


def runs_in_plot(path: Path) -> int | None:
    """The number of runs an earlier qbench plot drew (None for a PNG qbench did not write)."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            value = im.text.get(RUNS_KEY)
    except (OSError, ValueError):
        return None
    return int(value) if value is not None and value.isdigit() else None


def plot_curves(series: list[tuple], metric: str, title: str, out: Path, force: bool = False) -> Path:
    """draw_curves, saved as ``out``. An existing ``out`` that drew more runs (or that qbench did not write) is
    replaced only with ``force``."""
    import matplotlib.pyplot as plt

    fig, n_runs = draw_curves(series, metric, title)
    if out.exists() and not force:
        before = runs_in_plot(out)
        if before is None or before > n_runs:
            plt.close(fig)
            raise UserError(f"{out} exists and " + ("records no run count (not written by this qbench plot)" if before is None else
                            f"drew {before} runs, this plot {n_runs}") + "; not replaced. Write elsewhere with "
                            "out=<file or dir>, or pass --force to replace it")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.tmp{out.suffix}")
    try:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", metadata={RUNS_KEY: str(n_runs)})
        tmp.replace(out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)
    return out


def draw_curves(series: list[tuple], metric: str, title: str):
    """(figure, runs drawn): one line per (label, runs[, figure]); the runs of a label are seeds of one
    configuration, and a paper row's figure is drawn as a dashed line of the same colour at the value the paper
    reports, labelled with its status (dotted where it is unconfirmed). The legend sits outside the axes, so no
    curve is hidden; epochs are whole numbers on the x axis."""
    from qbench.results.tables import figure_on_curve

    if metric not in METRICS:
        raise UserError(f"metric={metric!r} is invalid; valid: {choices(METRICS)}")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = n_runs = 0
    all_epochs: set[int] = set()
    for label, runs, *figure in series:
        curves = [c for c in (_curve(r, metric) for r in runs) if c]
        if not curves:
            continue
        epochs = sorted(set.intersection(*(set(c) for c in curves)))  # epochs every seed reached
        if not epochs:
            continue
        values = [[c[e] for c in curves] for e in epochs]
        all_epochs.update(epochs)
        mean = [sum(v) / len(v) for v in values]
        line, = ax.plot(epochs, mean, marker="o" if len(epochs) < 12 else None, label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                            alpha=0.2, linewidth=0)
        reported = figure_on_curve(figure[0], metric) if figure else None
        if reported is not None:
            f = figure[0]
            ax.axhline(reported, color=line.get_color(), linewidth=1, linestyle=":" if not f.confirmed else "--",
                       label=f"{label}: paper {reported:.2f} ({f.status})")
        drawn += 1
        n_runs += len(curves)
    if not drawn:
        plt.close(fig)
        raise UserError(f"none of the runs has {metric} in its metrics.jsonl")
    ax.set_xlabel("epoch")
    if len(all_epochs) > 1:
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    else:  # one epoch: MaxNLocator would fall back to fractional ticks around it
        (e,) = all_epochs
        ax.set_xlim(e - 0.5, e + 0.5)
        ax.set_xticks([e])
    ax.set_ylabel(METRICS[metric])
    if metric == "lr":
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig, n_runs
