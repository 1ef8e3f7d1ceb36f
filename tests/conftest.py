import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("QBENCH_DATA", REPO.parent / "shared" / "data")).resolve()


@pytest.fixture(scope="session")
def data_root() -> Path:
    if not (DATA / "MNIST" / "raw").is_dir():
        pytest.fail(f"real data not found at {DATA}: set QBENCH_DATA (see README)")
    return DATA


def qbench(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run the qbench CLI in a fresh process (Hydra keeps global state; a process per run is what users do)."""
    e = {**os.environ, "QBENCH_DATA": str(DATA), **(env or {})}
    return subprocess.run([sys.executable, "-m", "qbench", *args], cwd=cwd, env=e, capture_output=True,
                          text=True, timeout=timeout)


def run_dir_of(proc: subprocess.CompletedProcess) -> Path:
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("run dir: "), proc.stdout + proc.stderr
    return Path(last.removeprefix("run dir: "))
