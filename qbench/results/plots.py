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


def plot_curves(series: list[tuple[str, list[Run]]], metric: str, title: str, out: Path) -> Path:
    """One line per (label, runs); the runs of a label are seeds of one configuration."""
    if metric not in METRICS:
        raise UserError(f"metric={metric!r} is invalid; valid: {choices(METRICS)}")
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for label, runs in series:
        curves = [c for c in (_curve(r, metric) for r in runs) if c]
        if not curves:
            continue
        epochs = sorted(set.intersection(*(set(c) for c in curves)))  # epochs every seed reached
        if not epochs:
            continue
        values = [[c[e] for c in curves] for e in epochs]
        mean = [sum(v) / len(v) for v in values]
        line, = ax.plot(epochs, mean, marker="o" if len(epochs) < 12 else None, label=f"{label} (n={len(curves)})")
        if len(curves) > 1:
            ax.fill_between(epochs, [min(v) for v in values], [max(v) for v in values], color=line.get_color(),
                            alpha=0.2, linewidth=0)
        drawn += 1
    if not drawn:
        plt.close(fig)
        raise UserError(f"none of the runs has {metric} in its metrics.jsonl")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(METRICS[metric])
    if metric == "lr":
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out
