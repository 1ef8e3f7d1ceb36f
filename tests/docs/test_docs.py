"""The README is the front door and docs/ the manual: the generated pages are current, the site builds with
MkDocs in strict mode (a broken link or a missing page fails), and nothing the README promises is missing."""
import re
import subprocess
import sys

from conftest import REPO


def test_the_generated_pages_are_current():
    """Paper, method and reference pages come from configs/, results/ and the commands' own --help."""
    p = subprocess.run([sys.executable, "scripts/gen_docs.py", "--check"], cwd=REPO, capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


def test_the_site_builds_strictly(tmp_path):
    p = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                       cwd=REPO, capture_output=True, text=True, env={"NO_MKDOCS_2_WARNING": "1", "PATH": "/usr/bin:/bin"})
    assert p.returncode == 0, p.stderr[-3000:]
    site = tmp_path / "site"
    for page in ("index.html", "methods/xnor/index.html", "papers/sq/index.html", "reference/commands/index.html",
                 "results/sq/index.html"):  # results/sq/README.md, served from results/
        assert (site / page).is_file(), page
    sq = (site / "papers" / "sq" / "index.html").read_text()
    assert "made with method" in sq and "slides" in sq  # results/sq/table.md included, with its status column


def test_the_readme_is_the_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    first = re.search(r"```bash\n(.*?)```", text, re.S).group(1).strip().splitlines()
    assert first[0].startswith("pip install") and "pytest" in first[1]  # CI's two commands
    for link in re.findall(r"\]\(((?:docs|results)/[^)#]+)\)", text):
        assert (REPO / link).exists(), link
    nav = (REPO / "mkdocs.yml").read_text()
    for page in (REPO / "docs").rglob("*.md"):
        assert page.relative_to(REPO / "docs").as_posix() in nav, f"{page} is not in mkdocs.yml's nav"
