"""MkDocs hook: serve results/ (tables, curves, run notes) and qbench/deploy/FORMAT.md as pages of the site,
from where they are, so every figure the docs show is the file in results/ and nothing is copied."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

REPO = Path(__file__).resolve().parents[1]
SERVED = ("results", "qbench/deploy/FORMAT.md")
SUFFIXES = {".md", ".png", ".csv", ".json", ".log", ".tex", ".yaml", ".jsonl"}


def on_files(files, config):
    for item in SERVED:
        path = REPO / item
        for p in ([path] if path.is_file() else sorted(path.rglob("*"))):
            if p.is_file() and p.suffix in SUFFIXES and "run_records" not in p.parts and "tb" not in p.parts:
                files.append(File(p.relative_to(REPO).as_posix(), str(REPO), config["site_dir"],
                                  config["use_directory_urls"]))
    return files
