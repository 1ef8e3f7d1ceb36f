"""qbench installed from a wheel, not from the source tree: configs ship inside the package."""
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

from setuptools import find_packages

from conftest import DATA, REPO


def test_a_wheel_ships_every_package_and_config_and_runs_from_another_folder(tmp_path):
    """`pip install .` once built a wheel with no YAML file; qbench then told the user to install from source."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path / "dist"), str(REPO)], check=True, capture_output=True, cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("qbench-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    configs = {p.relative_to(REPO).as_posix() for p in (REPO / "configs").rglob("*.yaml")}
    assert configs and {f"qbench/{c}" for c in configs} <= names  # every config group and paper
    packages = {"qbench"} | {f"qbench.{p}" for p in find_packages(str(REPO / "qbench"))}
    assert {p for p in packages if f"{p.replace('.', '/')}/__init__.py" not in names} == set()
    assert {"qbench/deploy/csrc/xnor_popcount.c", "qbench/deploy/FORMAT.md"} <= names  # the kernel builds from it

    venv = tmp_path / "venv"  # a fresh venv; torch and the other dependencies are borrowed from this one
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)], check=True,
                   capture_output=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "QBENCH_DATA": str(DATA), "HOME": str(tmp_path)}
    where = subprocess.run([py, "-c", "import qbench.config as c; print(c.config_dir())"], cwd=elsewhere,
                           env=env, capture_output=True, text=True)
    assert where.stdout.strip().startswith(site), where.stdout + where.stderr  # the wheel's copy, not the tree's
    qb = str(venv / "bin" / "qbench")
    listed = subprocess.run([qb, "list"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert listed.returncode == 0 and "xnor" in listed.stdout and "resnete18" in listed.stdout, listed.stderr
    version = subprocess.run([qb, "--version"], cwd=elsewhere, env=env, capture_output=True, text=True)
    assert version.stdout.strip() == "qbench 0.1.0"
    trained = subprocess.run([qb, "train", "method=bnn", "model=mlp", "model.hidden=[64,64]", "dataset=mnist",
                              "data.subset=500", "data.val_subset=200", "trainer.epochs=1", "trainer.progress=false"],
                             cwd=elsewhere, env=env, capture_output=True, text=True, timeout=600)
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert trained.stdout.strip().splitlines()[-1].startswith(f"run dir: {elsewhere / 'runs'}")
    assert next(elsewhere.glob("runs/*/*/summary.json")).is_file()
