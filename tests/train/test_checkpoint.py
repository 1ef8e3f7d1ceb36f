"""Checkpoints and run records are written atomically: an interrupt (Ctrl-C, SLURM's or `kill`'s SIGTERM) that
arrives during a write is delivered after it, and a write that fails leaves the earlier file and no other."""
import signal

import pytest
import torch

from qbench.checkpoint import load_checkpoint, save_checkpoint, write_atomic
from qbench.errors import Terminated


@pytest.fixture
def sigterm_as_terminated():
    def handler(signum, frame):
        raise Terminated
    previous = signal.signal(signal.SIGTERM, handler)  # as a training run installs it
    yield
    signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("signum, raised", [(signal.SIGTERM, Terminated), (signal.SIGINT, KeyboardInterrupt)])
def test_an_interrupt_during_a_write_arrives_after_the_file_is_whole(tmp_path, sigterm_as_terminated, signum,
                                                                   raised):
    path = tmp_path / "checkpoints" / "last.pt"
    save_checkpoint(path, {"epoch": 1})

    def write(f):
        f.write(b"first half ")
        signal.raise_signal(signum)  # the signal lands mid-write, where torch.save's zip writer would break
        f.write(b"second half")
    with pytest.raises(raised):
        write_atomic(path, write)
    assert path.read_bytes() == b"first half second half"
    assert [p.name for p in path.parent.iterdir()] == ["last.pt"]  # no temporary file left
    # the handlers are back: the same signal outside a write interrupts at once
    with pytest.raises(raised):
        signal.raise_signal(signum)


def test_a_failed_write_keeps_the_earlier_checkpoint_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"epoch": 3, "w": torch.ones(2)})

    def write(f):
        f.write(b"partial")
        raise OSError("No space left on device")
    with pytest.raises(OSError, match="No space left"):
        write_atomic(path, write)
    assert load_checkpoint(path)["epoch"] == 3
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]
