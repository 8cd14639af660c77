"""Scalar runs through the one realization loop (femplast.scalar.realization,
femplast.protocols.pipeline.run_realizations): checkpoints, SIGTERM and --resume."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from conftest import interrupt_after
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.app.cases import load_case
from femplast.app.runner import run_case
from femplast.errors import FemplastInputError
from femplast.protocols import checkpoint as ck
from femplast.scalar import model as S
from femplast.scalar import realization as R

ROOT = Path(__file__).resolve().parents[1]

CASE = dict(model="scalar", mesh=dict(kind="quad", n=16, L=141.76),
            elasticity=dict(G=19.0, B=55.0),
            loading=dict(gamma_max=0.8, stationary_from=0.4),
            scalar=dict(c0=0.02, c1=0.01, thresholds=dict(kind="weibull", scale=2.0, shape=4.0),
                        renewal=dict(kind="weibull", scale=1.232, shape=3.0),
                        internal_stress_std=0.175, curve_points=41),
            output=dict(snapshots=[0.2, 0.8]),
            run=dict(realizations=4, seed=5, checkpoint_interval=0.0))


def _write(tmp: Path, case: dict, name: str = "case.yaml") -> Path:
    p = tmp / name
    p.write_text(yaml.safe_dump(case))
    return p


def outputs(out: Path) -> dict:
    """Every HDF5 dataset and attribute (wall times excepted) and every field file's bytes."""
    res = {}
    for p in sorted(out.rglob("*.h5")):
        rel = p.relative_to(out).as_posix()
        if rel.startswith("checkpoint/"):
            continue
        with h5py.File(p) as f:
            for k, v in f.attrs.items():
                if "wall" not in k:
                    res[f"{rel}@{k}"] = v
            f.visititems(lambda n, o, rel=rel: res.__setitem__(f"{rel}:{n}", o[()])
                         if isinstance(o, h5py.Dataset) else None)
    for p in sorted(out.glob("fields/*")):
        res[p.relative_to(out).as_posix()] = p.read_bytes()
    return res


def assert_same(a: Path, b: Path) -> int:
    oa, ob = outputs(a), outputs(b)
    assert sorted(oa) == sorted(ob)
    for k in oa:
        assert np.array_equal(oa[k], ob[k], equal_nan=oa[k].dtype.kind == "f") \
            if isinstance(oa[k], np.ndarray) \
            else oa[k] == ob[k], k
    sa = json.loads((a / "summary.json").read_text())
    sb = json.loads((b / "summary.json").read_text())
    for k in ("scalar", "total_slip_events", "seeds", "num_cells", "localization"):
        assert sa[k] == sb[k], k
    return len(oa)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    d = tmp_path_factory.mktemp("scalar_ref")
    case_file = _write(d, CASE)
    run_case(load_case(case_file), d / "out", MPI.COMM_SELF, quiet=True)
    return case_file, d / "out"


@pytest.mark.parametrize("after_ticks", [2, 9, 20, 33])
def test_interrupt_mid_realization_and_resume(reference, tmp_path, monkeypatch, after_ticks):
    """Safe points every 200 slips: interrupted mid-avalanche, mid-realization, between
    snapshots; the resumed run writes the same datasets and field files, bit for bit."""
    case_file, ref = reference
    monkeypatch.setattr(R, "SAFE_POINT_SLIPS", 200)
    tick = interrupt_after(monkeypatch, after_ticks)
    out = tmp_path / "out"
    with pytest.raises(ck.Interrupted) as e:
        run_case(load_case(case_file), out, MPI.COMM_SELF, quiet=True)
    assert e.value.exit_code == 143 and not (out / "summary.json").exists()
    cp = ck.load(out / "checkpoint" / "rank000-of-001.npz")
    monkeypatch.setattr(ck.Interrupter, "tick", tick)
    run_case(load_case(case_file), out, MPI.COMM_SELF, quiet=True, resume=True)
    n = assert_same(ref, out)
    cur = cp["current"]
    print(f"\ninterrupted after {after_ticks} safe points ({len(cp['done'])} done, current "
          f"{None if cur is None else (cur['index'], cur['stop_i'])}): {n} items identical")


def test_checkpoint_roundtrip_is_exact(reference, tmp_path):
    """checkpoint() -> save -> load -> restore on a fresh realization gives the same
    checkpoint, and both continue to the same result."""
    case_file, _ = reference
    case = load_case(case_file)
    runs = R.ScalarRuns.prepare(case, None, MPI.COMM_SELF, lambda *a, **k: None)
    a = runs.new_run(1)
    a.drv.budget = 150
    stop = {"n": 0}

    class Stop(Exception):
        pass

    def tick():
        stop["n"] += 1
        if stop["n"] == 7:
            raise Stop

    with pytest.raises(Stop):
        a.run(tick)
    d = a.checkpoint()
    assert 0 < d["loop"]["st"][S.S_EVENTS] and d["stop_i"] < len(a.stops)
    b = runs.new_run(1)
    ck.save(tmp_path / "c.npz", d)
    b.restore(ck.load(tmp_path / "c.npz"))
    db = b.checkpoint()
    for k in ("state", "loop"):
        for name, v in d[k].items():
            x, y = np.asarray(v), np.asarray(db[k][name])
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (k, name)
    ra, rb = a.run(lambda: None), b.run(lambda: None)
    assert np.array_equal(ra["table"], rb["table"], equal_nan=True)  # LOC_plastic: NaN first
    assert ra["events"] == rb["events"]
    full = runs.new_run(1).run(lambda: None)
    assert np.array_equal(full["table"], ra["table"], equal_nan=True)


def test_fit_is_kept_on_resume(tmp_path, monkeypatch):
    """With scalar.fit, the fit runs once before the realizations; --resume reads it back from
    OUTDIR/checkpoint/fit.json instead of refitting, and the outputs equal an uninterrupted run."""
    case = dict(CASE, mesh=dict(kind="quad", n=8, L=70.88),
                scalar=dict(CASE["scalar"], c1=0.0, c0=0.05,
                            fit=dict(flow_stress=1.0, flow_stress_err=0.01, max_evaluations=8)),
                run=dict(realizations=3, seed=2, checkpoint_interval=0.0))
    case_file = _write(tmp_path, case)
    full = tmp_path / "full"
    run_case(load_case(case_file), full, MPI.COMM_SELF, quiet=True)
    monkeypatch.setattr(R, "SAFE_POINT_SLIPS", 100)
    tick = interrupt_after(monkeypatch, 5)
    out = tmp_path / "out"
    with pytest.raises(ck.Interrupted):
        run_case(load_case(case_file), out, MPI.COMM_SELF, quiet=True)
    assert (out / "checkpoint" / "fit.json").is_file()
    monkeypatch.setattr(ck.Interrupter, "tick", tick)

    def no_refit(*a, **k):
        raise AssertionError("refitted on --resume")

    monkeypatch.setattr(S, "fit_slip_law", no_refit)
    run_case(load_case(case_file), out, MPI.COMM_SELF, quiet=True, resume=True)
    assert_same(full, out)
    fit = json.loads((out / "summary.json").read_text())["scalar"]["fit"]
    assert fit["parameters"] == ["c0"] and len(fit["evaluations"]) >= 3


def test_sigterm_subprocess_then_resume(tmp_path):
    """SIGTERM stops a scalar CLI run at a safe point (exit 143, no summary.json); --resume
    keeps the finished realizations and the outputs equal an uninterrupted run."""
    case = dict(CASE, mesh=dict(kind="quad", n=32, L=283.52),
                loading=dict(gamma_max=1.0, stationary_from=0.5),
                run=dict(realizations=16, seed=4, checkpoint_interval=0.05))
    case_file = _write(tmp_path, case)
    full, cut = tmp_path / "full", tmp_path / "cut"
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-m", "femplast", str(case_file), "--quiet", "--out"]
    subprocess.run(cmd + [str(full)], env=env, cwd=ROOT, check=True, timeout=300)
    p = subprocess.Popen(cmd + [str(cut)], env=env, cwd=ROOT, stderr=subprocess.PIPE,
                         text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and p.poll() is None \
            and not (cut / "realizations" / "r0002.h5").exists():
        time.sleep(0.01)
    assert p.poll() is None, "the run ended before it could be interrupted"
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "interrupted by SIGTERM" in err and "--resume" in err
    assert not (cut / "summary.json").exists()
    kept = len(list((cut / "realizations").glob("r*.h5")))
    assert 3 <= kept < 16
    r = subprocess.run(cmd + [str(cut), "--resume"], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    n = assert_same(full, cut)
    print(f"\nSIGTERM after {kept} of 16 realizations: resumed, {n} items identical")
    r = subprocess.run(cmd + [str(cut), "--resume"], env=env, cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 2 and "complete" in r.stderr


# ----------------------------------------------------------------------------- scalar sweeps
SWEEP_CASE = ROOT / "cases" / "sweep_scalar.yaml"


@pytest.fixture(scope="module")
def scalar_sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("scalar_sweep") / "serial"
    summary = run_case(load_case(SWEEP_CASE), out, MPI.COMM_SELF, quiet=True)
    return out, summary


def _table(out: Path) -> list[list[str]]:
    text = (out / "sweep" / "table.csv").read_text()
    return [ln.split(",") for ln in text.splitlines() if not ln.startswith("#")]


def test_scalar_sweep_table(scalar_sweep):
    """The shipped scalar sweep: one row per grid point with the scalar statistics and no
    error columns; larger slips lower the flow stress, an older glass overshoots more."""
    from femplast.app.sweep import SCALAR_STAT_COLUMNS

    out, summary = scalar_sweep
    rows = _table(out)
    assert rows[0] == ["point", "scalar.c0", "scalar.thresholds.scale",
                       *SCALAR_STAT_COLUMNS]
    assert len(rows) == 1 + 6 and not any(c.startswith("L_") for c in rows[0])
    t = {c: np.array([float(r[j]) for r in rows[1:]]) for j, c in enumerate(rows[0])}
    assert np.all(t["realizations"] == 16) and np.all(np.isfinite(t["flow_stress"]))
    flow = t["flow_stress"].reshape(3, 2)  # c0 rows, scale columns
    assert np.all(np.diff(flow, axis=0) < 0)
    over = t["overshoot"].reshape(3, 2)
    assert np.all(over[:, 1] > over[:, 0])
    sw = summary["sweep"]
    assert sw["grid_points"] == 6 and sw["errors"] == [] and "best" not in sw
    assert sw["grid"] == {"scalar.c0": [0.015, 0.025, 0.035],
                          "scalar.thresholds.scale": [1.4, 2.0]}


def test_scalar_sweep_point_equals_plain_run(scalar_sweep, tmp_path):
    """A point of the scalar sweep is a plain scalar run of the point's case: the same
    statistics, bit for bit."""
    from femplast.app import sweep as SW

    out, _ = scalar_sweep
    case = load_case(SWEEP_CASE)
    pt = SW.plan(case)[3]
    s = run_case(SW.point_case(case, pt), tmp_path / "plain3", MPI.COMM_SELF, quiet=True)
    p = json.loads(SW.point_path(out, 3).read_text())
    assert p["params"] == {"scalar.c0": 0.025, "scalar.thresholds.scale": 2.0}
    want = json.loads(json.dumps(s["scalar"]["statistics"]))
    assert {k: p["statistics"][k] for k in want} == want
    assert p["statistics"]["age"] == s["scalar"]["age"]


@pytest.mark.mpi
def test_scalar_sweep_two_ranks_same_table(scalar_sweep, tmp_path):
    out, _ = scalar_sweep
    mpirun = Path(sys.executable).parent / "mpirun"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    r = subprocess.run([str(mpirun), "-n", "2", sys.executable, "-m", "femplast",
                        str(SWEEP_CASE), "--out", str(tmp_path / "mpi2"), "--quiet"],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mpi2" / "sweep" / "table.csv").read_bytes() == \
        (out / "sweep" / "table.csv").read_bytes()
    ranks = json.loads((tmp_path / "mpi2" / "summary.json").read_text())["sweep"]["ranks"]
    assert sum(x["points_computed"] for x in ranks) == 6


@pytest.mark.parametrize("override, key", [
    ("sweep.errors=[macro]", "sweep.errors"),
    ("sweep.grid={k: [2.0]}", "sweep.grid.k"),
    ("sweep.grid={slip.chi: [2.0]}", "sweep.grid.slip.chi"),
    ("sweep.grid={scalar.fit.flow_stress: [1.0]}", "sweep.grid.scalar.fit.flow_stress"),
    ("sweep.grid={scalar.thresholds: [1.0]}", "sweep.grid.scalar.thresholds"),
    ("sweep.grid={scalar.nope: [1.0]}", "sweep.grid.scalar.nope"),
    ("sweep.grid={scalar.c0: [0.02, -1.0]}", "sweep.grid.scalar.c0"),
    ("sweep.finite_size=[8]", "sweep.finite_size"),
    ("sweep.reference=ref", "sweep.reference"),
    ("scalar.fit.flow_stress=1.0", "scalar.fit.flow_stress"),
])
def test_scalar_sweep_validation(override, key):
    from femplast.errors import FemplastInputError

    with pytest.raises(FemplastInputError) as e:
        load_case(SWEEP_CASE, [override])
    assert e.value.key == key, str(e.value)


# ----------------------------------------------------------------------------- s, r inputs
def test_disorder_strength_and_age_as_direct_inputs_and_a_sweep_over_them(tmp_path):
    """scalar.disorder_strength (s, eq. 3) and scalar.age (r, eq. 6) given directly: the laws'
    parameters are derived (renewal width at its mean, initial law rescaled), the model has
    exactly that s and r, the resolved case carries the derived parameters; a sweep over r
    and s reports each point's values; the total-strain variance (plastic + elastic) exceeds
    the plastic one."""
    from femplast.config.case import yaml
    from femplast.scalar.model import model_from_case

    base = load_case(SWEEP_CASE, ["sweep.enabled=false", "scalar.c1=0.01",
                                  "scalar.disorder_strength=0.8", "scalar.age=0.5"])
    m = model_from_case(base)
    assert m.disorder_strength() == pytest.approx(0.8, rel=1e-9)
    assert m.age() == pytest.approx(0.5, rel=1e-12)
    assert m.p_r.mean == pytest.approx(1.232 * math.gamma(1 + 1 / 3.0), rel=1e-9)  # mean kept
    d = base.to_dict()["scalar"]
    assert d["renewal"]["shape"] != 3.0 and d["thresholds"]["scale"] != 2.0
    # the resolved case reproduces the model without the direct inputs
    d2 = base.to_dict()
    d2["scalar"].update(disorder_strength=None, age=None)
    (tmp_path / "resolved.yaml").write_text(yaml.safe_dump(d2))
    m2 = model_from_case(load_case(tmp_path / "resolved.yaml"))
    assert m2.disorder_strength() == m.disorder_strength() and m2.age() == m.age()
    with pytest.raises(FemplastInputError, match="renewal.kind: same"):
        load_case(SWEEP_CASE, ["sweep.enabled=false", "scalar.renewal.kind=same",
                               "scalar.age=0.3"])
    # a sweep over r and s (8 x 8 cells, 2 realizations, common random numbers)
    s = run_case(load_case(SWEEP_CASE, [
        "mesh.n=8", "mesh.L=70.88", "run.realizations=2", "loading.gamma_max=0.3",
        "loading.stationary_from=0.2", "sweep.grid={scalar.age: [0.2, 0.6], "
        "scalar.disorder_strength: [0.6, 1.2]}"]), tmp_path / "sw", MPI.COMM_SELF, quiet=True)
    rows = _table(tmp_path / "sw")
    t = {c: np.array([float(r[j]) for r in rows[1:]]) for j, c in enumerate(rows[0])}
    np.testing.assert_allclose(t["age"], t["scalar.age"], rtol=1e-9)
    np.testing.assert_allclose(t["disorder_strength"], t["scalar.disorder_strength"], rtol=1e-9)
    assert len(rows) == 5 and s is not None
    # the total strain's variance next to the plastic one: the elastic strain of the internal
    # stress partly compensates the plastic strain (so it can be smaller)
    assert np.all(t["eps_var_final"] > 0) and np.all(t["eps_var_final"] != t["eps_pl_var_final"])
    from femplast.streams import realization_rng

    st = m.new_state(realization_rng(1, 0))
    drv = S.ScalarDriver(m, st)
    drv.run(0.3)
    rec = drv.table()
    e = (st.sig + m.G * st.gamma) / (2 * m.G) + st.epl
    assert rec[-1, 10] == pytest.approx(e.var(), rel=1e-9)
    assert rec[0, 10] > 0 and rec[0, 4] == 0  # the frozen-in stress: elastic strain only


def test_measured_frozen_stress_distribution_from_a_file(tmp_path):
    """scalar.internal_stress_file: the initial internal stress takes the measured marginal
    (here a bimodal sample, far from Gaussian) on the compatible Gaussian field's spatial
    correlations (same ranks), mean removed; a run starts from it."""
    from scipy import stats as st

    from femplast.scalar.model import model_from_case
    from femplast.streams import realization_rng

    rng = np.random.default_rng(0)
    v = np.concatenate([rng.normal(-0.3, 0.05, 3000), rng.normal(0.3, 0.05, 3000)])
    np.savetxt(tmp_path / "sigma0.csv", v, header="measured frozen-in stresses",
               comments="# ")
    (tmp_path / "c.yaml").write_text(SWEEP_CASE.read_text())
    case = load_case(tmp_path / "c.yaml", [
        "sweep.enabled=false", "mesh.n=32", "mesh.L=283.52", "scalar.internal_stress_std=0",
        "scalar.internal_stress_file=sigma0.csv"])
    m = model_from_case(case)
    s0 = m.new_state(realization_rng(3, 0)).sigma0
    g = model_from_case(load_case(SWEEP_CASE, ["sweep.enabled=false", "mesh.n=32",
                                               "mesh.L=283.52"]))
    sg = g.new_state(realization_rng(3, 0)).sigma0  # the Gaussian field of the same draws
    assert abs(s0.mean()) < 1e-12
    assert st.ks_2samp(s0, v - v.mean()).pvalue > 0.01  # the measured marginal
    assert st.spearmanr(s0, sg)[0] > 0.999  # the same field, ranks kept
    assert np.mean(np.abs(s0) > 0.15) > 0.9  # bimodal: almost nothing near 0
    with pytest.raises(FemplastInputError, match="internal_stress_file"):
        load_case(tmp_path / "c.yaml", ["sweep.enabled=false",
                                        "scalar.internal_stress_file=sigma0.csv"])


def test_case_fit_against_whole_curves(tmp_path):
    """scalar.fit.curves in a case: a curves file (mean stress and mean threshold with their
    standard errors, made at c0 = 0.03, c1 = 0) fitted for c0 before the run; the run uses the
    fitted c0, summary.json reports the interval and identifiability; bad input is one
    error naming the key."""
    from femplast.scalar.model import ensemble, model_from_case

    base = ["sweep.enabled=false", "mesh.n=8", "mesh.L=70.88", "loading.gamma_max=0.4",
            "loading.stationary_from=0.2", "run.realizations=12", "scalar.c1=0.0"]
    truth = load_case(SWEEP_CASE, base + ["scalar.c0=0.03"])
    grid = np.linspace(0, 0.4, 41)
    c = ensemble(model_from_case(truth), 4242, range(24), 0.4, grid)
    cols = [grid]
    for q in ("stress", "tau_c_mean"):
        cols += [c[q].mean(0), c[q].std(0, ddof=1) / np.sqrt(24)]
    np.savetxt(tmp_path / "target.csv", np.column_stack(cols), delimiter=",",
               header="gamma_ext,stress,stress_err,tau_c_mean,tau_c_mean_err", comments="")
    (tmp_path / "c.yaml").write_text(SWEEP_CASE.read_text())
    case = load_case(tmp_path / "c.yaml", base + [
        "scalar.c0=0.05", "scalar.fit.curves=target.csv", "scalar.fit.parameters=[c0]",
        "scalar.fit.max_evaluations=30"])
    s = run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)["scalar"]
    fit = s["fit"]
    lo, hi = fit["c0_interval95"]
    print(f"curve fit: c0 = {fit['c0']:.4f} in [{lo:.4f}, {hi:.4f}]")
    assert fit["method"] == "curves" and lo <= 0.03 <= hi and hi - lo < 0.015
    assert fit["identifiable"] == {"c0": True} and s["parameters"]["c0"] == fit["c0"]
    with pytest.raises(FemplastInputError, match="scalar.fit.curves"):
        load_case(tmp_path / "c.yaml", base + ["scalar.fit.curves=missing.csv"])
    with pytest.raises(FemplastInputError, match="scalar.fit.flow_stress"):
        load_case(tmp_path / "c.yaml", base + ["scalar.fit.curves=target.csv",
                                               "scalar.fit.flow_stress=1.0"])
