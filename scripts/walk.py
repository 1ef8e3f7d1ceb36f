"""The walk a reader takes through qbench's files when following one command to its quantizers (issue #32).

    python scripts/walk.py [--repo DIR] [--goals quant/,optim.py,models/] -- train method=dorefa method.w_bits=2

runs ``qbench <args>`` in-process (in a temporary folder) under a profiler and records, for every call that
reaches a goal file, the chain of qbench files on the Python stack above it (calls made while a module is being
imported are left out: a reader follows calls, not imports). It prints, on lines that start ``walk:``, the files
of the union of those chains in the order first met, how many distinct calls from one file to another they
hold, each distinct chain, and the calls between files that go against ``LAYERS`` (a "climb back up": a lower
layer calling a higher one). ``--repo`` measures another checkout (``git worktree add /tmp/old <commit>``), so a
walk can be compared before and after a change.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
from pathlib import Path

# top to bottom: a file may call files in its own layer or below, never above
LAYERS = [
    ("cli.py",),
    ("launch.py", "results/"),
    ("train.py", "bench.py", "summary.py", "ptq.py", "export.py"),
    ("config.py",),
    ("build.py", "optim.py", "data/", "checkpoint.py", "report.py", "provenance.py", "distributed.py"),
    ("methods/", "models/"),
    ("nn/",),
    ("quant/",),
]


def layer(path: str) -> int:
    """The rank of a qbench file (``"methods/sq.py"``) in LAYERS; 0 is the top. A file in none ranks last."""
    for rank, prefixes in enumerate(LAYERS):
        if any(path == p or (p.endswith("/") and path.startswith(p)) for p in prefixes):
            return rank
    return len(LAYERS)


def trace(repo: Path, args: list[str], goals: tuple[str, ...]) -> list[tuple[str, ...]]:
    """The distinct chains of qbench files (top first) on the stack of each call into a goal file."""
    pkg = str(repo / "qbench") + os.sep
    chains: dict[tuple[str, ...], None] = {}

    def chain(frame) -> tuple[str, ...] | None:
        out: list[str] = []
        while frame is not None:
            f = frame.f_code.co_filename
            if f.startswith(pkg):
                if frame.f_code.co_name == "<module>":
                    return None  # reached while importing
                rel = f[len(pkg):]
                if not out or out[-1] != rel:
                    out.append(rel)
            frame = frame.f_back
        return tuple(reversed(out))

    def profile(frame, event, arg):
        if event == "call" and frame.f_code.co_filename.startswith(pkg):
            rel = frame.f_code.co_filename[len(pkg):]
            if rel.startswith(goals):
                c = chain(frame)
                if c:
                    chains.setdefault(c)

    sys.path.insert(0, str(repo))
    old_cwd, old_argv = os.getcwd(), sys.argv
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)
        sys.argv = ["qbench", *args]
        from qbench import cli

        threading.setprofile(profile)
        sys.setprofile(profile)
        try:
            cli.main(args)
        except SystemExit:
            pass
        finally:
            sys.setprofile(None)
            threading.setprofile(None)
            os.chdir(old_cwd)
            sys.argv = old_argv
    return list(chains)


def climbs(chains: list[tuple[str, ...]]) -> list[tuple[str, str]]:
    """Calls from a file to one in a higher layer."""
    return sorted({(a, b) for c in chains for a, b in zip(c, c[1:]) if layer(b) < layer(a)})


def files(chains: list[tuple[str, ...]]) -> list[str]:
    out: dict[str, None] = {}
    for c in chains:
        for f in c:
            out.setdefault(f)
    return list(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repo", type=Path, default=Path(__file__).resolve().parents[1])
    p.add_argument("--goals", default="quant/,optim.py,models/", help="comma-separated file prefixes under qbench/")
    p.add_argument("args", nargs=argparse.REMAINDER)
    a = p.parse_args()
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    chains = trace(a.repo.resolve(), args, tuple(a.goals.split(",")))
    walked = files(chains)
    calls = {(a, b) for c in chains for a, b in zip(c, c[1:])}
    print(f"walk: {len(walked)} files: {' '.join(walked)}")
    print(f"walk: {len(calls)} file-to-file calls")
    for c in chains:
        print("walk:    " + " > ".join(c))
    up = climbs(chains)
    print(f"walk: climbs back up: {', '.join(f'{x} > {y}' for x, y in up) if up else 'none'}")


if __name__ == "__main__":
    main()
