"""Checkpoints: written atomically, read with ``weights_only=True`` (tensors and plain data only, so a
checkpoint from someone else cannot run code when loaded)."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from qbench.errors import UserError


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


def save_checkpoint(path: Path, state: dict) -> None:
    _atomic(Path(path), lambda f: torch.save(state, f))


def load_checkpoint(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"no checkpoint at {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(f"checkpoint {path} cannot be read ({first}); it was left untouched") from None


def write_json(path: Path, obj: dict) -> None:
    _atomic(Path(path), lambda f: f.write((json.dumps(obj, indent=2) + "\n").encode()))
