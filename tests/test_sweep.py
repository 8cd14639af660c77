"""Parameter sweeps: grid expansion and validation, a point equals a plain run, the table is
the same serially and under mpirun -n 2, a killed sweep resumes to the same table without
recomputing finished points, the plotter reads the outputs."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.app import sweep as S
from femplast.app.cases import case_from_dict, load_case
from femplast.app.cli import main as cli_main
from femplast.errors import FemplastInputError

ROOT = Path(__file__).resolve().parents[1]
BASE = """
model: tensorial
mesh: {kind: quad, n: 8, L: 52.8}
slip: {N: 36, weibull_lambda: 2.05, weibull_k: 2.18, chi: 2.25}
loading: {dgamma_ext: 1.0e-4, gamma_max: 0.8, stationary_from: 0.3}
output: {fields: false}
run: {realizations: 4, seed: 1}
patches: {enabled: true, n: [4], spacing: 13.2, alpha: [0, 90], initial: false,
          gamma_ext: [0.8]}
"""
SWEEP = BASE + """
sweep:
  enabled: true
  reference: ref
  grid: {k: [1.8, 2.18, 2.5], lambda: {start: 1.9, stop: 2.1, step: 0.2}, chi: [2.0, 2.5]}
  finite_size: [4, 6]
"""


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


# ----------------------------------------------------------------------------- grid + validation
def test_axis_values():
    v = S.axis_values({"start": 1, "stop": 3, "step": 0.05}, "k")
    assert len(v) == 41 and v[0] == 1.0 and v[-1] == 3.0 and v[23] == 2.15
    assert S.axis_values({"start": 1.0, "stop": 1.29, "step": 0.1}, "k") == [1.0, 1.1, 1.2]
    assert S.axis_values({"start": 4, "stop": 12, "step": 4}, "mesh.n") == [4, 8, 12]
    assert S.axis_values([2.0, 1.0], "chi") == [2.0, 1.0]
    assert S.axis_values(2.5, "chi") == [2.5]
    for bad in ({"start": 1, "stop": 0, "step": 1}, {"start": 1, "step": 1}, [], "x",
                {"start": 1, "stop": 2, "step": 0}):
        with pytest.raises(FemplastInputError, match="sweep.grid.k"):
            S.axis_values(bad, "k")


def _case(ref_dir, text=SWEEP, **sweep):
    """The sweep case with ``sweep`` keys replaced; 'ref' resolves next to ``ref_dir``."""
    import yaml

    d = yaml.safe_load(text)
    d.setdefault("sweep", {}).update(sweep)
    return case_from_dict(d, source=ref_dir / "case.yaml")


def test_plan_order_seeds_and_point_case(tiny_reference):
    case = _case(tiny_reference)
    pts = S.plan(case)
    assert len(pts) == 3 * 2 * 2 + 2
    assert pts[0]["params"] == {"k": 1.8, "lambda": 1.9, "chi": 2.0}
    assert pts[1]["params"] == {"k": 1.8, "lambda": 1.9, "chi": 2.5}  # last axis fastest
    assert pts[11]["params"] == {"k": 2.5, "lambda": 2.1, "chi": 2.5}
    assert pts[12] == dict(point=12, kind="finite_size", params={"mesh.n": 4, "mesh.L": 26.4})
    pc = S.point_case(case, pts[5])
    assert (pc.slip.weibull_k, pc.slip.weibull_lambda, pc.slip.chi) == (2.18, 1.9, 2.5)
    assert not pc.sweep.enabled and pc.run.seed == 1 and pc.run.realizations == 4
    assert not S.point_case(case, pts[12]).patches.enabled
    per = _case(tiny_reference, seeds="per_point", realizations=3)
    seeds = [S.point_case(per, p).run.seed for p in S.plan(per)]
    assert len(set(seeds)) == len(seeds) and S.point_case(per, pts[0]).run.realizations == 3


@pytest.mark.parametrize("sweep, key", [
    ({"grid": {"foo": [1]}}, "sweep.grid.foo"),
    ({"grid": {"run.seed": [1]}}, "sweep.grid.run.seed"),
    ({"grid": {"chi": [-1.0, 2.0]}}, "sweep.grid.chi"),
    ({"grid": {"k": "x"}}, "sweep.grid.k"),
    ({"grid": {"mesh.n": [0]}}, "sweep.grid.mesh.n"),
    ({"grid": [1, 2]}, "sweep.grid"),
    ({"errors": ["nope"]}, "sweep.errors[0]"),
    ({"seeds": "random"}, "sweep.seeds"),
    ({"reference": "missing_dir"}, "sweep.reference"),
    ({"grid": {}, "finite_size": []}, "sweep.grid"),
])
def test_validation_errors(tiny_reference, sweep, key):
    with pytest.raises(FemplastInputError) as e:
        _case(tiny_reference, **sweep)
    assert e.value.key == key


def test_meso_needs_patches_and_reference_rows(tiny_reference):
    tmp_path = tiny_reference
    import yaml

    d = yaml.safe_load(SWEEP)
    d["patches"]["enabled"] = False
    with pytest.raises(FemplastInputError, match="patches.enabled"):
        case_from_dict(d, source=tmp_path / "case.yaml")
    d["sweep"]["errors"] = ["macro"]
    case_from_dict(d, source=tmp_path / "case.yaml")  # macro alone is fine
    d = yaml.safe_load(SWEEP)
    d["patches"]["alpha"] = [0, 45]
    with pytest.raises(FemplastInputError, match="0 and 90"):
        case_from_dict(d, source=tmp_path / "case.yaml")


def test_shipped_cases_and_reference():
    from femplast.analysis.calibration import read_reference

    ref = read_reference(ROOT / "reference" / "synthetic_l6.6")
    assert ref.synthetic and ref.local and ref.rms and ref.finite_size is not None
    for name in ("sweep_small", "sweep_paper_l6.6"):
        case = load_case(ROOT / "cases" / f"{name}.yaml")
        assert case.sweep.enabled
    paper = load_case(ROOT / "cases" / "sweep_paper_l6.6.yaml")
    assert S.axis_values(paper.sweep.grid["k"], "k") == [
        round(1 + 0.05 * i, 10) for i in range(41)]
    assert S.realizations_per_point(paper) == 48


# ----------------------------------------------------------------------------- running
@pytest.fixture(scope="module")
def tiny_reference(tmp_path_factory):
    """A small SYNTHETIC reference (8 x 8, seed 999) next to the sweep cases."""
    d = tmp_path_factory.mktemp("sweep")
    (d / "truth.yaml").write_text(BASE.replace("seed: 1", "seed: 999"))
    S.make_reference(load_case(d / "truth.yaml"), d / "ref")
    return d


@pytest.fixture(scope="module")
def serial(tiny_reference):
    from femplast.app.runner import run_case

    (tiny_reference / "sweep.yaml").write_text(SWEEP)
    out = tiny_reference / "serial"
    summary = run_case(load_case(tiny_reference / "sweep.yaml"), out, MPI.COMM_SELF, quiet=True)
    return out, summary


def test_serial_table_and_summary(serial):
    out, summary = serial
    lines = [ln for ln in (out / "sweep" / "table.csv").read_text().splitlines()
             if not ln.startswith("#")]
    assert lines[0].startswith("point,k,lambda,chi,L_sigma_xy,L_drop_xy,L_increment_xy,"
                               "L_macro,L_meso_plus,L_meso_minus,L_stat,")
    assert len(lines) == 1 + 12
    sw = summary["sweep"]
    assert sw["points"] == 14 and sw["grid_points"] == 12
    L = np.array([float(ln.split(",")[10]) for ln in lines[1:]])
    assert np.all((L > 0) & (L < 1))
    assert sw["best"]["L_stat"] == pytest.approx(L.min())
    assert sw["optimum"]["fit"] in ("parabola", "grid")
    assert 1.8 <= sw["optimum"]["k_hat"] <= 2.5
    assert len(sw["best_per_k_L_stat"]) == 3
    fs = summary["finite_size"]
    assert fs["n"] == [4, 6] and fs["L"] == [26.4, 39.6]
    assert fs["std_sigma_xy"][0] > fs["std_sigma_xy"][1] > 0
    assert np.isfinite(fs["exponent"]) and fs["exponent"] < 0
    # postprocess reads both
    from femplast.postprocess.data import load_run

    run = load_run(out)
    assert {"calibration", "finite_size"} <= set(run.families())
    assert run.calibration_path.name == "table.csv" and len(run.calibration["k"]) == 12


def test_point_equals_plain_run(serial, tiny_reference):
    """Point 5 of the sweep is a plain femplast run of the point's case."""
    from femplast.app.runner import run_case

    out, _ = serial
    case = load_case(tiny_reference / "sweep.yaml")
    pt = S.plan(case)[5]
    s = run_case(S.point_case(case, pt), tiny_reference / "plain5", MPI.COMM_SELF, quiet=True)
    p = json.loads(S.point_path(out, 5).read_text())
    st = p["statistics"]
    assert st["sigma_xy_mean"] == pytest.approx(s["stationary"]["sigma_xy_mean"], rel=1e-12)
    assert st["sigma_xy_std"] == pytest.approx(s["stationary"]["sigma_xy_std"], rel=1e-9)
    assert st["drop_xy_mean"] == pytest.approx(s["stationary"]["stress_drop_mean"], rel=1e-12)
    e = [x for x in s["patches"]["entries"] if x["state"] == "stationary" and x["alpha"] == 0]
    assert st["tau_c_mean_plus"] == pytest.approx(e[0]["tau_c"]["mean"], rel=1e-12)


@pytest.mark.mpi
def test_two_ranks_same_table(serial, tiny_reference):
    out, _ = serial
    mpi = tiny_reference / "mpi2"
    mpirun = Path(sys.executable).parent / "mpirun"
    proc = subprocess.run([str(mpirun), "-n", "2", sys.executable, "-m", "femplast",
                           str(tiny_reference / "sweep.yaml"), "--out", str(mpi), "--quiet"],
                          capture_output=True, text=True, timeout=300, env=_env())
    assert proc.returncode == 0, proc.stderr
    for f in ("table.csv", "finite_size.csv"):
        assert (mpi / "sweep" / f).read_bytes() == (out / "sweep" / f).read_bytes()

    def same(d):  # what the run computed, not where or how long
        return {k: v for k, v in d.items()
                if k not in ("wall_time", "rank", "realization_ranks", "ranks",
                             "point_wall_time", "table")}

    # every point (statistics, errors, patch entries) and the summary's analyses are the
    # serial ones, bit for bit, though a point's realizations ran on both ranks
    split = 0
    for i in range(14):
        p2 = json.loads(S.point_path(mpi, i).read_text())
        assert same(p2) == same(json.loads(S.point_path(out, i).read_text()))
        assert len(p2["realization_ranks"]) == 4 and p2["rank"] == 0
        split += len(set(p2["realization_ranks"])) > 1
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (out, mpi))
    assert same(s2["sweep"]) == same(s1["sweep"])
    assert s2["finite_size"] == s1["finite_size"]
    ranks = s2["sweep"]["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    # work units are (point, realization) pairs: both ranks got some, every one once; rank 0
    # reduced and wrote every point
    assert all(r["units_computed"] > 0 for r in ranks)
    assert sum(r["units_computed"] for r in ranks) == 14 * 4
    assert split > 0  # units go to whichever rank asks: points are split between the ranks
    assert [r["points_computed"] for r in ranks] == [14, 0]
    # CPU accounting of the scaling (benchmarks/scaling.py): start-up before the first point
    # (imports at least) and CPU in the points, at most the wall time in them on each of the
    # machine's cores (BLAS may use threads)
    import os

    for r in ranks:
        assert 0.1 < r["startup_cpu_time"] < 60
        assert 0 < r["busy_cpu_time"] <= r["busy_time"] * (os.cpu_count() or 1) + 0.1


def test_kill_and_resume(serial, tiny_reference):
    out, _ = serial
    d = tiny_reference / "killed"
    cmd = [sys.executable, "-m", "femplast", str(tiny_reference / "sweep.yaml"), "--out",
           str(d), "--quiet"]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    pdir = d / "sweep" / "points"
    t0 = time.time()
    while time.time() - t0 < 120:
        if pdir.is_dir() and len(list(pdir.glob("p*.json"))) >= 4:
            break
        if proc.poll() is not None:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the sweep finished before it could be killed"
    assert not (d / "summary.json").exists() and not (d / "sweep" / "table.csv").exists()
    done = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in pdir.glob("p*.json")}
    assert 4 <= len(done) < 14
    # without --resume the directory is refused; with a changed case too
    assert cli_main([str(tiny_reference / "sweep.yaml"), "--out", str(d), "--quiet"]) == 2
    assert cli_main([str(tiny_reference / "sweep.yaml"), "--out", str(d), "--quiet", "--resume",
                     "--set", "sweep.realizations=3"]) == 2
    proc = subprocess.run(cmd + ["--resume"], env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    for f in ("table.csv", "finite_size.csv"):
        assert (d / "sweep" / f).read_bytes() == (out / "sweep" / f).read_bytes()
    for name, (mtime, data) in done.items():  # finished points were not recomputed
        p = pdir / name
        assert p.stat().st_mtime_ns == mtime and p.read_bytes() == data
    ranks = json.loads((d / "summary.json").read_text())["sweep"]["ranks"]
    assert ranks[0]["points_computed"] == 14 - len(done)
    # resuming a finished sweep recomputes nothing and gives the same table
    assert cli_main([str(tiny_reference / "sweep.yaml"), "--out", str(d), "--quiet",
                     "--resume"]) == 0
    assert json.loads((d / "summary.json").read_text())["sweep"]["ranks"][0][
        "points_computed"] == 0
    assert (d / "sweep" / "table.csv").read_bytes() == (out / "sweep" / "table.csv").read_bytes()


# ----------------------------------------------------------------------------- A.3 calibration
QUENCH_BASE = """
model: tensorial
mesh: {kind: quad, n: 6, L: 39.6}
slip: {N: 16, weibull_lambda: 2.05, weibull_k: 2.18, chi: 2.25}
loading: {dgamma_ext: 1.0e-3, gamma_max: 0.2, stationary_from: 0.1}
output: {fields: false}
run: {realizations: 6, seed: 999}
kmc: {enabled: true, temperature: 0.3, stop: max_events, max_events: 1500}
patches: {enabled: true, n: [3], spacing: 6.6, alpha: [0, 90], initial: true, gamma_ext: []}
"""


def test_temperature_calibration_recovers_the_quench_temperature(tmp_path):
    """Appendix A.3 as a sweep over kmc.temperature scored by sweep.errors quench: the patch
    statistics of the quenched glass against a SYNTHETIC reference quenched at T = 0.3 (other
    seeds): the best temperature of the grid is the truth, and L_quench grows away from it."""
    (tmp_path / "truth.yaml").write_text(QUENCH_BASE)
    S.make_reference(load_case(tmp_path / "truth.yaml"), tmp_path / "ref")
    (tmp_path / "sweep.yaml").write_text(QUENCH_BASE.replace("seed: 999", "seed: 1") + """
sweep:
  enabled: true
  reference: ref
  errors: [quench]
  grid: {kmc.temperature: [0.1, 0.3, 1.0]}
""")
    from femplast.app.runner import run_case

    s = run_case(load_case(tmp_path / "sweep.yaml"), tmp_path / "out", MPI.COMM_SELF,
                 quiet=True)["sweep"]
    lines = [ln.split(",") for ln in (tmp_path / "out" / "sweep" / "table.csv").read_text()
             .splitlines() if not ln.startswith("#")]
    t = {c: np.array([float(r[j]) for r in lines[1:]]) for j, c in enumerate(lines[0])}
    print("L_quench(T):", t["kmc.temperature"], np.round(t["L_quench"], 3))
    assert s["best"]["kmc.temperature"] == 0.3
    assert t["L_quench"][1] < t["L_quench"][0] and t["L_quench"][1] < t["L_quench"][2]
    np.testing.assert_array_equal(t["L_stat"], t["L_quench"])
    with pytest.raises(FemplastInputError, match="'quench' needs kmc.enabled"):
        load_case(tmp_path / "sweep.yaml", ["kmc.enabled=false"])
