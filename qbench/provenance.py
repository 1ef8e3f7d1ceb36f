"""Where and when a result was made: the qbench commit, the device and the time, as run records hold them."""
from __future__ import annotations

import re
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import torch

import qbench


def git_commit() -> str | None:
    """The commit of the qbench source this process runs, '-dirty' if tracked files differ from it. Read
    when a run starts: a commit made while it trains ran none of its code."""
    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", *args], cwd=Path(qbench.__file__).parent, capture_output=True, text=True,
                              timeout=5)

    try:
        out = git("rev-parse", "HEAD")
        sha = out.stdout.strip()
        if out.returncode != 0 or not re.fullmatch(r"[0-9a-f]{40}", sha):
            return None
        if git("ls-files", "--error-unmatch", Path(qbench.__file__).name).returncode != 0:
            return None  # an installed copy inside some other repository: that repository's HEAD is not ours
        return sha + ("-dirty" if git("status", "--porcelain", "--untracked-files=no").stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
