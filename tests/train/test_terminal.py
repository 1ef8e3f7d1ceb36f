"""What a run shows while it trains: the progress bar on a terminal, and the layer table in its log (#31.12-13)."""
import io
import logging
import re
import sys
from types import SimpleNamespace

import torch
from rich.console import Console

from qbench.report import _Bar, layer_table, progress_bar

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def test_bar_shows_running_loss_images_per_second_and_run_eta_with_log_lines_on_their_own(monkeypatch):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=True, width=160)
    handler = logging.StreamHandler(sys.stderr)  # what Hydra's console handler is: a stream to the terminal
    root = logging.getLogger()
    root.addHandler(handler)
    monkeypatch.setattr(_Bar, "REFRESH_S", 0.0)
    try:
        with progress_bar(True, console) as bar:
            bar.start_epoch(3, 4, 10)  # a resumed run: two epochs done before this process
            for i in range(10):  # the loss of every batch is 2.5: the running mean is 2.5
                bar.advance(32, torch.tensor(2.5 * 32 * (i + 1)), 32 * (i + 1))
            assert bar.progress.tasks[0].completed == 30 and bar.progress.tasks[0].total == 40
            logging.getLogger("qbench").warning("epoch 3/4  train_loss 2.5000")
    finally:
        root.removeHandler(handler)
    text = ANSI.sub("", buf.getvalue()).replace("\r", "\n")
    assert "loss 2.5000" in text and "img/s" in text and "epoch 3/4" in text, text
    assert re.search(r"(^|\n)epoch 3/4  train_loss 2.5000\n", text), text  # a line of its own, not glued on
    assert handler.stream is sys.stderr  # given back when the bar closes


def test_bar_is_silent_off_a_terminal():
    buf = io.StringIO()
    with progress_bar(True, Console(file=buf, force_terminal=False)) as bar:
        bar.start_epoch(1, 1, 2)
        bar.advance(8, torch.tensor(1.0), 8)
    assert buf.getvalue() == ""


def test_layer_table_in_the_log_folds_long_quantizer_descriptions_never_cuts_them(caplog):
    long = "binarize(ste=clip,clip=1.0,scaling=channel,stochastic=false,granularity=channel,extra=abcdefghij)"
    rows = [SimpleNamespace(name="features.0", kind="QConv2d", shape=(128, 3, 3, 3), params=3456, weight=long,
                            input=long, output="fp")]
    with caplog.at_level(logging.INFO, logger="qbench"):
        layer_table(rows, logging.getLogger("qbench"))
    logged = caplog.records[0].getMessage()
    assert long in logged and "…" not in logged
    assert all(line == line.rstrip() for line in logged.splitlines())
