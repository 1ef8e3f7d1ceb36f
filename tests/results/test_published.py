"""Every table published in results/ regenerates unchanged from its run records: a refactor that changes what
a run's config means (a renamed key, a method config built on another) cannot silently change a result."""
import pytest

from conftest import REPO, qbench

PUBLISHED = [  # (paper, table or None, run records, folder of the published table), as results/*/README.md run them
    ("binaryconnect", None, "results/binaryconnect/run_records", "results/binaryconnect"),
    ("bnn", None, "results/bnn/run_records", "results/bnn"),
    ("twn", "T2", "results/twn/run_records", "results/twn"),
    ("twn", "T2", "results/twn/code_layers/run_records", "results/twn/code_layers"),
    ("sq", None, "results/sq/run_records", "results/sq"),
    ("wage", None, "results/wage/run_records", "results/wage"),
]


@pytest.mark.parametrize("paper,table,runs,folder", PUBLISHED, ids=[p[3] for p in PUBLISHED])
def test_a_published_table_regenerates_unchanged(tmp_path, paper, table, runs, folder):
    p = qbench("table", f"paper={paper}", *([f"table={table}"] if table else []), f"runs={REPO / runs}",
               f"out={tmp_path}", cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    written = sorted(tmp_path.glob("table*"))
    assert {f.suffix for f in written} == {".md", ".csv", ".tex"}
    for f in written:
        assert f.read_text() == (REPO / folder / f.name).read_text(), f"{folder}/{f.name} no longer regenerates"


def test_every_published_table_is_checked():
    tables = {p.parent.relative_to(REPO).as_posix() for p in (REPO / "results").rglob("table*.md")}
    assert tables == {p[3] for p in PUBLISHED}
