"""What a run shows and writes while it trains: the layer table, the progress bar, metrics.jsonl and
TensorBoard scalars."""
from __future__ import annotations

import io
import json
import logging
import os
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

TB_NAMES = {"train_loss": "train/loss", "train_acc": "train/acc", "val_loss": "val/loss", "val_acc": "val/acc",
            "val_top5": "val/top5", "test_loss": "test/loss", "test_acc": "test/acc", "test_top5": "test/top5",
            "lr": "lr"}


def console() -> Console:
    """A console for tables: the terminal's width, or 160 columns when output goes to a file or pipe."""
    c = Console()
    return c if c.is_terminal else Console(width=160)


class MetricsLog:
    """One JSON object per epoch in metrics.jsonl, and the same scalars in TensorBoard (run_dir/tb)."""

    def __init__(self, run_dir: Path, history: list[dict], purge_after: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        self.path = Path(run_dir) / "metrics.jsonl"
        if purge_after is not None:
            # resuming: the file is rewritten from the checkpoint's history, dropping any epoch logged after
            # the checkpoint was taken (a run killed mid-epoch loses at most that epoch)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in history))
            os.replace(tmp, self.path)
        self.tb = SummaryWriter(str(Path(run_dir) / "tb"),
                                purge_step=purge_after + 1 if purge_after is not None else None)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
        for key, value in record.items():
            if key in ("epoch", "seconds") or not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            self.tb.add_scalar(TB_NAMES.get(key, f"method/{key}"), value, record["epoch"])
        self.tb.flush()

    def hparams(self, hparams: dict, metrics: dict) -> None:
        """TensorBoard's HPARAMS tab: the run's settings beside its final metrics, in this run's folder."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        self.tb.add_hparams(clean, {f"hparam/{k}": v for k, v in metrics.items() if v is not None}, run_name=".")
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


def layer_table(rows, log: logging.Logger) -> None:
    """Which layers the method quantized, and how (the layer policy's decisions, shown at start)."""
    table = Table(title="layer policy", title_justify="left")
    for col in ("layer", "type", "weight shape", "params", "weight quantizer", "input quantizer",
                "output quantizer"):
        table.add_column(col, justify="right" if col == "params" else "left")
    for r in rows:
        table.add_row(r.name, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}", r.weight, r.input, r.output)
    quantized = sum(r.params for r in rows if r.weight != "fp")
    total = sum(r.params for r in rows)
    buf = io.StringIO()
    Console(file=buf, width=140).print(table)
    log.info(buf.getvalue().rstrip())
    log.info(f"{quantized:,} of {total:,} conv/linear weights quantized ({100 * quantized / max(total, 1):.1f}%)")


class _Bar:
    def __init__(self, progress: Progress | None):
        self.progress, self.task = progress, None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.progress is not None:
            if self.task is not None:
                self.progress.remove_task(self.task)
            self.task = self.progress.add_task(f"epoch {epoch}/{epochs}", total=steps)

    def advance(self) -> None:
        if self.progress is not None:
            self.progress.advance(self.task)


@contextmanager
def progress_bar(enabled: bool):
    """A rich bar on an interactive terminal; nothing when output goes to a file or CI log."""
    console = Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield _Bar(None)
        return
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=console, transient=True) as progress:
        yield _Bar(progress)
