"""Checkpoints and the other files a run or a table writes, written atomically (``write_atomic``). Checkpoints
are read with ``weights_only=True`` (tensors and plain data only, so a checkpoint from someone else cannot run
code when loaded)."""
from __future__ import annotations

import json
import os
import signal
import threading
from contextlib import contextmanager
from pathlib import Path

from qbench.errors import UserError


@contextmanager
def interrupts_held():
    """SIGINT and SIGTERM that arrive inside are delivered as it ends, to the handlers they would have reached.
    A Ctrl-C or a SLURM/`kill` SIGTERM during ``torch.save`` would otherwise stop its zip writer halfway, whose
    own error ("unexpected pos ...") then hides the interrupt: a traceback instead of an 'interrupted' run.
    Only the main thread receives signals; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    held = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, lambda signum, frame: caught.append(signum)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        for s in dict.fromkeys(caught):
            signal.raise_signal(s)


def write_atomic(path: Path, write) -> None:
    """``write(f)`` to a temporary file beside ``path``, then renamed over it: a reader sees the old file or the
    new one, never half of one, and an interrupt waits until the rename (no temporary file is left)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with interrupts_held():
        try:
            with open(tmp, "wb") as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise


def save_checkpoint(path: Path, state: dict) -> None:
    import torch  # here, not at the top: `qbench table` writes through write_atomic without loading torch

    write_atomic(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    import torch

    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"checkpoint {path} cannot be read ({first}); it was left untouched") from None


def write_json(path: Path, obj: dict) -> None:
    write_atomic(path, lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
