"""Case files (femplast.config.case) and the command line: bad input stops before any
computation."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import femplast  # noqa: F401
from femplast.app.cases import case_from_dict, load_case
from femplast.config.case import reference_markdown
from femplast.errors import FemplastInputError

ROOT = Path(__file__).resolve().parents[1]

BAD = [
    # (case dict, key named in the message, fragment of what is allowed)
    ({"mesh": {"n": 0}}, "mesh.n", ">= 1"),
    ({"mesh": {"n": 2.5}}, "mesh.n", "integer"),
    ({"mesh": {"kind": "hex"}}, "mesh.kind", "'quad', 'tri', 'gmsh'"),
    ({"mesh": {"L": -1}}, "mesh.L", "> 0"),
    ({"mesh": {"nx": 4}}, "mesh.nx", "allowed here"),
    ({"meshh": {}}, "meshh", "allowed here"),
    ({"elasticity": {"G": 0}}, "elasticity.G", "> 0"),
    ({"elasticity": {"B": "soft"}}, "elasticity.B", "number"),
    ({"slip": {"N": 6}}, "slip.N", "multiple of 4"),
    ({"slip": {"weibull_k": -2}}, "slip.weibull_k", "> 0"),
    ({"slip": {"chi": float("nan")}}, "slip.chi", "finite"),
    ({"loading": {"dgamma_ext": 0}}, "loading.dgamma_ext", "(0, 1]"),
    ({"loading": {"alpha_ext": 270}}, "loading.alpha_ext", "[-180, 180]"),
    ({"loading": {"gamma_max": 0.4, "stationary_from": 0.5}}, "loading.stationary_from", "<"),
    ({"output": {"snapshots": [0.1, -5.0]}}, "output.snapshots[1]", "gamma_max"),
    ({"output": {"snapshots": 0.1}}, "output.snapshots", "list"),
    ({"run": {"realizations": 0}}, "run.realizations", ">= 1"),
    ({"run": {"seed": -1}}, "run.seed", "in [0, "),
    ({"run": {"parallel": "both"}}, "run.parallel", "'realizations', 'sample'"),
    ({"redistribution": {"backend": "fast"}}, "redistribution.backend", "'propagator'"),
    ({"mesh": {"kind": "tri"}, "redistribution": {"backend": "propagator"}},
     "redistribution.backend", "quad"),
    ({"mesh": {"kind": "quad", "size": 3.0}}, "mesh.size", "gmsh"),
    ({"mesh": {"kind": "gmsh", "file": "missing.msh"}}, "mesh.file", "existing"),
    ({"initial": {"state": "nowhere.h5"}}, "initial.state", "existing"),
    ({"model": "tensor"}, "model", "'tensorial'"),
    ({"run": {"parallel": "sample"}, "redistribution": {"backend": "propagator"}},
     "redistribution.backend", "direct"),
]


@pytest.mark.parametrize(("data", "key", "allowed"), BAD)
def test_bad_case_is_rejected_with_key_value_and_allowed(data, key, allowed):
    with pytest.raises(FemplastInputError) as exc:
        case_from_dict(data)
    assert exc.value.key == key
    msg = str(exc.value)
    assert msg.startswith(key) and allowed in msg


def test_overrides_and_defaults():
    c = case_from_dict({"mesh": {"n": 4}}, ["loading.gamma_max=0.7", "slip.N=8"])
    assert c.mesh.n == 4 and c.loading.gamma_max == 0.7 and c.slip.N == 8
    assert c.elasticity.G == 13.2 and c.slip.chi == 2.25  # the paper's optimum by default
    with pytest.raises(FemplastInputError, match="--set"):
        case_from_dict({}, ["loading.gamma_max"])


def test_shipped_cases_are_valid_and_reference_lists_every_key():
    ref = reference_markdown()
    for path in sorted((ROOT / "cases").glob("*.yaml")):
        case = load_case(path)
        assert case.name == path.stem
    for k in ("mesh.n", "slip.weibull_lambda", "loading.dgamma_ext", "run.parallel"):
        assert f"`{k}`" in ref
    doc = (ROOT / "docs" / "case-reference.md").read_text()
    assert doc == ref, "docs/case-reference.md is stale: run femplast reference"


@pytest.mark.parametrize(("data", "key"), [(d, k) for d, k, _ in BAD[:6] + BAD[-4:-1]])
def test_cli_exit_code_2_and_nothing_written(tmp_path, data, key):
    case = tmp_path / "bad.yaml"
    case.write_text(yaml.safe_dump(data))
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "femplast", str(case), "--out", str(out)],
                         capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2
    assert key in res.stderr
    assert not out.exists()
    assert not (tmp_path / "runs").exists()


def test_cli_never_overwrites_results(tmp_path):
    case = tmp_path / "c.yaml"
    case.write_text(yaml.safe_dump({"mesh": {"n": 4, "L": 26.4}, "slip": {"N": 4},
                                    "loading": {"gamma_max": 0.05, "stationary_from": 0.01}}))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    res = subprocess.run([sys.executable, "-m", "femplast", str(case), "--out", str(out),
                          "--quiet"], capture_output=True, text=True, cwd=tmp_path)
    assert res.returncode == 2 and "--out" in res.stderr
    assert (out / "keep.txt").read_text() == "precious" and len(list(out.iterdir())) == 1
    # without --out: a fresh runs/<name>, runs/<name>-2, ...
    for expected in ("c", "c-2"):
        res = subprocess.run([sys.executable, "-m", "femplast", str(case), "--quiet"],
                             capture_output=True, text=True, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        assert (tmp_path / "runs" / expected / "summary.json").is_file()
