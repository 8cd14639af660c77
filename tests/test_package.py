"""Packaging: the wheel ships the cases and reference data; dolfinx_solver is imported only
when that wheel provides dolfinx (femplast then also runs on a conda or Docker dolfinx)."""

import os
import shutil
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

import femplast

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_path_detected_here():
    # this environment is the pip wheel: its dolfinx is dolfinx-solver-real's
    assert femplast._wheel_provides_dolfinx()
    assert "dolfinx_solver" in sys.modules


def test_foreign_dolfinx_not_taken_for_the_wheel(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", missing)  # conda / Docker: no such wheel
    assert not femplast._wheel_provides_dolfinx()


def _run(code: str, pre: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", pre + code], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=300)


def test_both_import_paths_in_fresh_interpreters():
    r = _run("import sys, femplast, dolfinx; print('dolfinx_solver' in sys.modules)")
    assert r.returncode == 0 and r.stdout.strip() == "True", r.stderr
    # a conda-like stack: no dolfinx-solver distribution; importing dolfinx_solver would fail
    pre = ("import sys, importlib.metadata as md\n"
           "def missing(n): raise md.PackageNotFoundError(n)\n"
           "md.distribution = missing\nsys.modules['dolfinx_solver'] = None\n")
    r = _run("import femplast; from femplast.app.cli import main; print('ok')", pre)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    src = tmp_path_factory.mktemp("src")
    for name in ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("femplast", "cases", "reference", "meshes"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps",
                    "--no-build-isolation", "--disable-pip-version-check", "-w", str(out),
                    str(src)], check=True, capture_output=True, timeout=300)
    return next(out.glob("femplast-*.whl"))


def test_wheel_ships_cases_reference_and_the_extra(wheel):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        entry = z.read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    for p in ROOT.glob("cases/*.yaml"):
        assert f"femplast/examples/cases/{p.name}" in names
    assert "femplast/examples/reference/synthetic_l6.6/macro.csv" in names
    assert 'Requires-Dist: dolfinx-solver-real==0.11.*; extra == "wheel"' in meta
    assert not any(ln.startswith("Requires-Dist: dolfinx") and "extra" not in ln
                   for ln in meta.splitlines())
    assert "femplast = femplast.app.cli:main" in entry


def test_examples_from_the_installed_wheel(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # what pip puts in site-packages
    env = dict(os.environ, PYTHONPATH=str(site))
    r = subprocess.run([sys.executable, "-m", "femplast", "examples", str(tmp_path / "ex")],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "ex" / "cases" / "quickstart.yaml").read_text() == \
        (ROOT / "cases" / "quickstart.yaml").read_text()
    assert (tmp_path / "ex" / "reference" / "synthetic_l6.6" / "macro.csv").is_file()
