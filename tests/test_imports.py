"""Import structure: validating a case and plotting a run load neither the compiled kernels
(numba) nor the finite-element stack (dolfinx), checked in fresh interpreters."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("dolfinx", "numba", "petsc4py", "basix", "ufl")

PROBE = """
import json, runpy, sys
sys.argv = ["femplast", *json.loads(sys.argv[1])]
try:
    runpy.run_module("femplast", run_name="__main__")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "loaded": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def _cli(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", PROBE, json.dumps(args)], capture_output=True,
                       text=True, cwd=ROOT, env=env, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_check_loads_no_kernels_and_no_dolfinx():
    for case in ("paper_patches_l6.6.yaml", "bauschinger_l6.6.yaml", "quench_kmc.yaml"):
        got = _cli([str(ROOT / "cases" / case), "--check"])
        assert got["code"] == 0
        assert not set(HEAVY) & set(got["loaded"]), (case, set(HEAVY) & set(got["loaded"]))


def test_plot_never_imports_dolfinx(tmp_path):
    out = tmp_path / "run"
    r = subprocess.run([sys.executable, "-m", "femplast", str(ROOT / "cases" / "quickstart.yaml"),
                        "--out", str(out), "--quiet", "--realizations", "1", "--set",
                        "loading.gamma_max=0.1", "--set", "output.snapshots=[0.1]",
                        "--set", "loading.stationary_from=0.05"],
                       capture_output=True, text=True, cwd=ROOT, timeout=600,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert r.returncode == 0, r.stderr[-2000:]
    got = _cli(["plot", str(out), "--out", str(tmp_path / "figs"), "--quiet"])
    assert got["code"] in (0, None)
    assert list((tmp_path / "figs").glob("*.png"))  # it did plot
    assert not {"dolfinx", "petsc4py", "basix", "ufl"} & set(got["loaded"])
