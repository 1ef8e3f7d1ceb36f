"""What a run shows and writes while it trains: the layer table, the progress bar, metrics.jsonl and
TensorBoard scalars."""
from __future__ import annotations

import io
import json
import logging
import os
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from qbench.checkpoint import write_atomic

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
            text = "".join(json.dumps(r) + "\n" for r in history)
            write_atomic(self.path, lambda f: f.write(text.encode()))
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


LOG_WIDTH = 400


def log_to(run_dir: Path) -> None:
    """Log lines to the console and the run's train.log, in Hydra's job-logging format, for the commands that
    make a run folder without Hydra (``ptq``, ``train resume=``)."""
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s][%(levelname)s] - %(message)s",
                        handlers=[logging.StreamHandler(), logging.FileHandler(Path(run_dir) / "train.log")])


def layer_table(rows, log: logging.Logger) -> None:
    """Which layers the method quantized, and how (the layer policy's decisions, shown at start)."""
    table = Table(title="layer policy", title_justify="left")
    for col in ("layer", "type", "weight shape", "params", "weight quantizer", "input quantizer",
                "output quantizer"):  # fold, never cut: a quantizer's settings are read from this log
        table.add_column(col, justify="right" if col == "params" else "left", overflow="fold")
    for r in rows:
        table.add_row(r.name, r.kind, "x".join(map(str, r.shape)), f"{r.params:,}", r.weight, r.input, r.output)
    quantized = sum(r.params for r in rows if r.weight != "fp")
    total = sum(r.params for r in rows)
    buf = io.StringIO()
    Console(file=buf, width=LOG_WIDTH).print(table)  # as wide as it needs (a log line is not a terminal's)
    log.info("\n".join(line.rstrip() for line in buf.getvalue().rstrip().splitlines()))
    log.info(f"{quantized:,} of {total:,} conv/linear weights quantized ({100 * quantized / max(total, 1):.1f}%)")


class _Bar:
    """Two rows: the whole run (epochs done, ETA to the end) and this epoch (batches, running loss, images/s).
    The loss is read from the device at most twice a second, so the step itself never waits for it."""

    REFRESH_S = 0.5

    def __init__(self, progress: Progress | None):
        self.progress, self.task, self.run = progress, None, None

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        if self.progress is None:
            return
        if self.run is None:  # the first epoch of this process (a resumed run starts further on)
            self.run = self.progress.add_task("run", total=epochs * steps, completed=(epoch - 1) * steps,
                                              stats=f"epoch {epoch}/{epochs}")
        else:
            self.progress.update(self.run, stats=f"epoch {epoch}/{epochs}")
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(f"epoch {epoch}", total=steps, stats="")
        self.t0 = self.last = time.perf_counter()
        self.images = 0

    def advance(self, images: int = 0, loss_sum=None, seen: int = 0) -> None:
        """One batch of ``images``; ``loss_sum`` / ``seen``: the epoch's summed loss so far (a device tensor)."""
        if self.progress is None:
            return
        self.images += images
        self.progress.advance(self.task)
        self.progress.advance(self.run)
        now = time.perf_counter()
        if loss_sum is not None and seen and now - self.last >= self.REFRESH_S:
            self.last = now
            rate = self.images / max(now - self.t0, 1e-9)
            self.progress.update(self.task, stats=f"loss {float(loss_sum) / seen:.4f}  {rate:,.0f} img/s")


class _ConsoleStream:
    """A logging handler's stream while the bar is live: each record printed above the bar, on its own line."""

    def __init__(self, console: Console):
        self.console = console

    def write(self, text: str) -> None:
        self.console.print(text.rstrip("\n"), markup=False, highlight=False, soft_wrap=True)

    def flush(self) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool, console: Console | None = None):
    """A rich bar on an interactive terminal; nothing when output goes to a file or CI log. While it is shown,
    the log lines that would go to the terminal (Hydra's console handler) are printed above it, never glued
    onto it."""
    console = console or Console(stderr=True)
    if not (enabled and console.is_terminal):
        yield _Bar(None)
        return
    terminals = (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__)
    handlers = [h for lg in (logging.getLogger(), logging.getLogger("qbench")) for h in lg.handlers
                if type(h) is logging.StreamHandler and h.stream in terminals]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TextColumn("{task.fields[stats]}"), TimeRemainingColumn(), console=console,
                  transient=True) as progress:
        saved = [h.setStream(_ConsoleStream(progress.console)) for h in handlers]
        try:
            yield _Bar(progress)
        finally:
            for h, stream in zip(handlers, saved):
                h.setStream(stream)
