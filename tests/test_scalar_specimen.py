"""The scalar EPM on specimens (femplast.scalar.specimen, issue 19): the kernel is the
specimen's FE response, the driving its boundary displacement; same compiled loop and rules
as the periodic lattice."""

import numpy as np
import pytest

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.app.api import load_case
from femplast.fe.elasticity import resolved_shear
from femplast.scalar import model as S
from femplast.scalar.specimen import SpecimenScalarModel, model_from_case
from femplast.streams import realization_rng

WALLS = {"shape": "strip", "width": 60.0, "height": 60.0, "size": 6.0, "periodic": "x",
         "element": "quad",
         "boundaries": {"bottom": "clamped", "top": {"displacement": [1.0, 0.0]}}}
TENSION = {"shape": "notched_strip", "width": 40.0, "height": 80.0, "size": 6.0,
           "element": "quad",
           "notch_depth": 10.0, "notch_radius": 4.0,
           "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}


def _case(geometry=WALLS, backend="dense", w_g=0.175, seed=2):
    return load_case({
        "model": "scalar", "mesh": {"kind": "geometry"}, "geometry": geometry,
        "elasticity": {"G": 14.7, "B": 52.0}, "redistribution": {"backend": backend},
        "loading": {"gamma_max": 0.3, "stationary_from": 0.2},
        "scalar": {"c0": 0.05, "thresholds": {"kind": "weibull", "scale": 1.404, "shape": 3.0},
                   "renewal": {"kind": "weibull", "scale": 1.232, "shape": 3.0},
                   "internal_stress_std": w_g},
        "run": {"realizations": 2, "seed": seed}})


@pytest.fixture(scope="module")
def walls():
    return model_from_case(_case())


@pytest.fixture(scope="module")
def tension():
    return model_from_case(_case(TENSION))


def _fe_stress(m: SpecimenScalarModel, st, gamma):
    """The resolved FE stress of the state's whole eigenstrain at gamma_ext (direct solve)."""
    el = m.el
    sig = el.gather(el.stress(m.eigenstrain(st)[el.cells], el.external(gamma)))
    return resolved_shear(m.theta, sig)


def _run(m, seed=0, gamma=0.3):
    st = m.new_state(realization_rng(seed, 0))
    d = S.ScalarDriver(m, st)
    d.run(gamma)
    return st, d


def test_slip_direction_and_load_response(walls, tension):
    """Between walls the slip is xy (theta = 0) and every cell is loaded by G (a uniform
    simple shear); in tension theta = 45 degrees, the load concentrates at the notch root and
    the drive stress per unit gamma_ext is the plate's (not G)."""
    assert abs(walls.theta) < 1e-12
    assert np.allclose(walls.R, 14.7, rtol=1e-10)
    assert walls.stress_slope == pytest.approx(14.7, rel=1e-10)
    assert np.degrees(tension.theta) == pytest.approx(45.0, abs=1e-6)
    assert tension.R.max() > 2.0 * np.median(tension.R)
    assert 20.0 < tension.stress_slope < 45.0  # Young's modulus of the strip, reduced by the notch


@pytest.mark.parametrize("name", ["walls", "tension"])
def test_kernel_column_is_the_fe_solve(name, request):
    """A dense column (blocked multi-right-hand-side solves) equals one FE solve of the unit
    slip eigenstrain 2 M(theta) in that cell, resolved, to 1e-10; the operator is reciprocal
    (Maxwell-Betti: K[j, i] A_i = K[i, j] A_j) and its diagonal a stress drop."""
    m = request.getfixturevalue(name)
    el = m.el
    for j in (0, m.num_cells // 2, m.num_cells - 1):
        eps = np.zeros((m.num_cells, 3))
        eps[j] = 2.0 * np.array([-0.5, 0.5, 0.0]) * np.sin(2 * m.theta)
        eps[j, 2] = np.cos(2 * m.theta)
        ref = resolved_shear(m.theta, el.gather(el.stress(eps[el.cells])))
        assert np.abs(m.K[j] - ref).max() < 1e-10 * np.abs(ref).max()
    WK = m.K * m.w[None, :]  # K[j, i] w_i
    assert np.abs(WK - WK.T).max() < 1e-10 * np.abs(WK).max()
    assert np.all(np.diagonal(m.K) < 0)


def test_equilibrium_dense_equals_direct_and_determinism(walls):
    """After avalanches the stress of the dynamics (column adds) is the FE solution of the
    plastic strain at gamma_ext (to 1e-10, residual < 1e-10); the direct backend (one FE
    solve per step) runs the same trajectory; a rerun of the seed is bit-identical."""
    st, d = _run(walls)
    assert d.num_events > 200
    fe = _fe_stress(walls, st, st.gamma)
    assert np.abs(walls.total_stress(st, st.gamma) - fe).max() < 1e-10 * np.abs(fe).max()
    el = walls.el
    assert el.residual(walls.eigenstrain(st)[el.cells], st.gamma) < 1e-10
    st2, d2 = _run(walls)
    assert np.array_equal(d.table(), d2.table(), equal_nan=True)
    assert np.array_equal(st.sig, st2.sig)
    direct = model_from_case(_case(backend="direct"))
    st3, d3 = _run(direct)
    assert d3.num_events == d.num_events
    assert np.allclose(d3.table(), d.table(), rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("name", ["walls", "tension"])
def test_macroscopic_stress_is_the_drive_force(name, request):
    """The recorded macroscopic stress (reciprocity: S_R gamma - 2 sum w_j R_j eps_j) is the FE
    drive force per unit area at every stop; between walls it is also <sigma_xy>."""
    m = request.getfixturevalue(name)
    el = m.el
    st = m.new_state(realization_rng(5, 0))
    d = S.ScalarDriver(m, st)
    for g in (0.05, 0.15, 0.3):
        d.advance(g)
        rec = d.table()
        F = el.drive_force(m.eigenstrain(st)[el.cells], st.gamma) / el.box_area
        assert rec[-1, 2] + m.stress_slope * (st.gamma - rec[-1, 0]) == pytest.approx(F, 1e-9)
    if name == "walls":
        assert np.allclose(rec[:, 12], rec[:, 2], rtol=1e-9, atol=1e-12)


def _boundary_work(m, rec, gamma):
    """Work of the driven boundaries from gamma_ext = 0 to ``gamma``: elastic branches of
    slope S_R between avalanches (exact: the force is linear there), from the table."""
    A, S_R = m.el.box_area, m.stress_slope
    W, g0, s0 = 0.0, rec[0, 0], rec[0, 2]
    for g1, s1 in list(zip(rec[1:, 0], rec[1:, 2], strict=True)) + [(gamma, None)]:
        W += A * (s0 * (g1 - g0) + 0.5 * S_R * (g1 - g0) ** 2)
        g0, s0 = g1, s1
    return W


@pytest.mark.parametrize("name", ["walls", "tension"])
def test_energy_balance_and_dissipation(name, request):
    """Boundary work = stored elastic energy change (FE, of the whole eigenstrain) +
    dissipation, with the dissipation >= 0 and growing at every stop (0.05 apart); an
    elastic branch alone stores exactly its work (the macroscopic stress is the force
    conjugate to gamma_ext). Single slips of the scalar model are unbounded exponentials and
    may cost more than they release; the balance over many is positive."""
    m = request.getfixturevalue(name)
    el = m.el
    st = m.new_state(realization_rng(7, 0))
    d = S.ScalarDriver(m, st)

    def energy():
        return el.energy(m.eigenstrain(st)[el.cells], st.gamma)

    E0, diss = energy(), [0.0]
    for g in (0.05, 0.1, 0.15, 0.2, 0.25, 0.3):
        d.advance(g)
        diss.append(_boundary_work(m, d.table(), st.gamma) - (energy() - E0))
    assert d.num_events > 100
    assert np.all(np.diff(diss) > 0), diss
    F0, E1, dg = el.drive_force(m.eigenstrain(st)[el.cells], st.gamma), energy(), 1e-4
    st.gamma += dg
    assert energy() - E1 == pytest.approx(F0 * dg + 0.5 * el.box_area * m.stress_slope * dg**2,
                                          rel=1e-8)


def test_run_case_writes_the_force_displacement_curve(tmp_path):
    """Through the realization loop (femplast run): per realization the steps carry the
    macroscopic stress (drive force per area), force = area * stress, displacement and the
    mean resolved stress; fields on the specimen; a second run writes the same numbers."""
    import h5py
    from mpi4py import MPI

    from femplast.app.runner import run_case

    case = _case(TENSION)
    case.output.snapshots = [0.1]
    outs = []
    for name in ("a", "b"):
        run_case(case, tmp_path / name, MPI.COMM_SELF, quiet=True)
        with h5py.File(tmp_path / name / "realizations" / "r0001.h5") as f:
            outs.append({k: np.asarray(f["steps"][k]) for k in f["steps"]})
            state = {k: np.asarray(f["state"][k]) for k in f["state"]}
            gamma = f["state"].attrs["gamma_ext"]
    steps = outs[0]
    assert (tmp_path / "a" / "fields" / "r0001.xdmf").is_file()
    m = model_from_case(case)
    assert np.allclose(steps["force"], m.box.area * steps["stress"], rtol=1e-12)
    assert np.allclose(steps["displacement"], steps["gamma_ext"] * m.box.height, rtol=1e-12)
    assert len(steps["stress"]) > 50 and np.all(np.isfinite(steps["resolved_stress"]))
    el = m.el
    eps = (state["eps_pl"] + state["eps0"])[:, None] * m.unit
    F = el.drive_force(eps[el.cells], gamma) / el.box_area
    last = steps["stress"][-1] + m.stress_slope * (gamma - steps["gamma_ext"][-1])
    assert last == pytest.approx(F, rel=1e-9)
    for k, v in outs[0].items():
        assert np.array_equal(v, outs[1][k], equal_nan=True), k
    with open(tmp_path / "a" / "summary.json") as f:
        import json

        sc = json.load(f)["scalar"]
    assert sc["parameters"]["slip_angle_deg"] == pytest.approx(45.0, abs=1e-9)
    assert np.isfinite(sc["statistics"]["flow_stress"])



def test_run_on_a_specimen_summarizes_weighted_loc_and_bands(tmp_path):
    """The scalar model's localization on the notched strip in tension (windows of 0.05 to
    gamma_ext 0.3, 2 realizations), the tensorial model's definitions: the cumulative LOC at
    the end is the area-weighted eq. 13 of the realization's final eps_p with n = sqrt(area) /
    size cells across; post-yield the plastic rate (the slip amplitudes resolved on the
    grips' drive: eps_yy / 2 per unit eps_p in tension) is ~1, the imposed strain carried
    plastically (a factor 2 off would give ~2); a line-scan band per window, with its
    distance from the notch root. Observed rates 0.91-1.18."""
    import json

    import h5py
    from mpi4py import MPI

    from femplast.app.runner import run_case

    case = _case(TENSION)
    case.localization.window = 0.05
    run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)
    loc = json.loads((tmp_path / "out" / "summary.json").read_text())["localization"]
    m = model_from_case(case)
    n = np.sqrt(m.box.area) / TENSION["size"]
    for r in range(2):
        with h5py.File(tmp_path / "out" / "realizations" / f"r{r:04d}.h5") as f:
            epl = np.asarray(f["state"]["eps_pl"])
        assert loc["loc"]["cumulative_per_realization"][r][-1] == pytest.approx(
            S.loc_index(epl, m.weights, n), rel=1e-12)
        bands = loc["band"]["per_realization"][r]
        assert all(b is not None and -90 < b <= 90 for b in bands["orientation"])
        assert all(d is not None for d in bands["root_distance"])
    py = loc["post_yield"]
    k0 = round(max(py["gamma_yield_per_realization"]) / 0.05)
    rate = np.array(loc["plastic_rate"]["mean"][k0:])
    assert len(rate) >= 4 and 0.8 < rate.mean() < 1.25, rate
    assert py["loc_max"] is not None and len(loc["band"]["root_band"]["angle_per_realization"]) == 2


@pytest.mark.parametrize("backend", ["dense", "direct"])
def test_interrupt_and_resume_is_bit_identical(backend, tmp_path, monkeypatch):
    """Interrupted at a safe point mid-realization (SIGTERM), resumed: the same datasets bit
    for bit (the frozen slip field eps0 is redrawn from the realization's stream)."""
    import signal

    import h5py
    from mpi4py import MPI

    from femplast.app.runner import run_case
    from femplast.protocols import checkpoint as ck
    from femplast.scalar import realization as R

    monkeypatch.setattr(R, "SAFE_POINT_SLIPS", 100)
    run_case(_case(TENSION, backend), tmp_path / "ref", MPI.COMM_SELF, quiet=True)
    calls, tick = {"n": 0}, ck.Interrupter.tick

    def counting_tick(self, force=False):
        calls["n"] += 1
        if calls["n"] == 3:
            self.signum = signal.SIGTERM
        return tick(self, force)

    monkeypatch.setattr(ck.Interrupter, "tick", counting_tick)
    with pytest.raises(ck.Interrupted):
        run_case(_case(TENSION, backend), tmp_path / "out", MPI.COMM_SELF, quiet=True)
    monkeypatch.setattr(ck.Interrupter, "tick", tick)
    run_case(_case(TENSION, backend), tmp_path / "out", MPI.COMM_SELF, quiet=True, resume=True)
    for r in ("r0000.h5", "r0001.h5"):
        with h5py.File(tmp_path / "ref" / "realizations" / r) as a, \
                h5py.File(tmp_path / "out" / "realizations" / r) as b:
            for g in ("steps", "state"):
                for k in a[g]:
                    assert np.array_equal(a[g][k][()], b[g][k][()], equal_nan=True), (r, k)


@pytest.mark.mpi
def test_two_ranks_write_the_serial_realizations(tmp_path):
    """``mpirun -n 2``: realizations spread over the ranks (each meshes and factorizes the
    specimen on its own) write what the serial run writes, bit for bit."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import h5py
    import yaml

    case = {"model": "scalar", "mesh": {"kind": "geometry"}, "geometry": TENSION,
            "elasticity": {"G": 14.7, "B": 52.0},
            "loading": {"gamma_max": 0.2, "stationary_from": 0.1},
            "scalar": {"c0": 0.05, "internal_stress_std": 0.175,
                       "thresholds": {"kind": "weibull", "scale": 1.404, "shape": 3.0}},
            "run": {"realizations": 3, "seed": 4}}
    path = tmp_path / "case.yaml"
    path.write_text(yaml.safe_dump(case))
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    exe = Path(sys.executable)
    for name, pre in (("serial", []), ("mpi2", [str(exe.parent / "mpirun"), "-n", "2"])):
        r = subprocess.run(pre + [str(exe), "-m", "femplast", "run", str(path), "--out",
                                  str(tmp_path / name), "--quiet"],
                           capture_output=True, text=True, timeout=300, env=env)
        assert r.returncode == 0, r.stderr
    for i in range(3):
        with h5py.File(tmp_path / "serial" / "realizations" / f"r{i:04d}.h5") as a, \
                h5py.File(tmp_path / "mpi2" / "realizations" / f"r{i:04d}.h5") as b:
            for g in ("steps", "state"):
                for k in a[g]:
                    assert np.array_equal(a[g][k][()], b[g][k][()], equal_nan=True), (i, k)


# ----------------------------------------------------------------------------- sweeps
def _sweep_case(tmp_path):
    """A scalar sweep on the walls strip: 2 slip coefficients x 2 shear moduli (the second
    axis changes the FE kernel), 2 realizations per point, seeds per point."""
    import yaml

    d = {"model": "scalar", "mesh": {"kind": "geometry"}, "geometry": WALLS,
         "elasticity": {"G": 14.7, "B": 52.0}, "redistribution": {"backend": "dense"},
         "loading": {"gamma_max": 0.3, "stationary_from": 0.2},
         "scalar": {"c0": 0.05, "thresholds": {"kind": "weibull", "scale": 1.404, "shape": 3.0},
                    "renewal": {"kind": "weibull", "scale": 1.232, "shape": 3.0},
                    "internal_stress_std": 0.175},
         "run": {"realizations": 2, "seed": 2},
         "sweep": {"enabled": True, "errors": [], "seeds": "per_point",
                   "grid": {"scalar.c0": [0.04, 0.06], "elasticity.G": [14.7, 20.0]}}}
    path = tmp_path / "spec_sweep.yaml"
    path.write_text(yaml.safe_dump(d, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def spec_sweep(tmp_path_factory):
    from femplast.app.cli import main

    d = tmp_path_factory.mktemp("spec_sweep")
    path = _sweep_case(d)
    assert main([str(path), "--out", str(d / "serial"), "--quiet"]) == 0
    return path, d / "serial"


def _points(out) -> dict:
    import json

    return {p.name: json.loads(p.read_text()) for p in sorted((out / "sweep" / "points")
                                                              .iterdir())}


def test_sweep_point_equals_a_plain_run_of_its_case(spec_sweep, tmp_path):
    """Each point of a scalar sweep on a specimen is a plain run of the point's case (the key
    set by --set, the point's seed): the same statistics bit for bit, whether the point built
    the specimen's kernel or reused the one of an earlier point (same mesh and moduli: the
    columns are the same solves of the same factorization, shared, not recomputed)."""
    import json

    from femplast.app import sweep as SW
    from femplast.app.cli import main

    path, out = spec_sweep
    case = load_case(path)
    pts = _points(out)
    assert len(pts) == 4
    for pt in SW.plan(case):
        p = pts[f"p{pt['point']:05d}.json"]
        sets = [f"{k}={v}" for k, v in pt["params"].items()]
        sets += ["sweep.enabled=false", f"run.seed={SW.point_seed(case, pt['point'])}",
                 "output.fields=false"]
        plain = tmp_path / f"plain{pt['point']}"
        assert main([str(path), "--out", str(plain), "--quiet",
                     *(a for s in sets for a in ("--set", s))]) == 0
        want = json.loads((plain / "summary.json").read_text())["scalar"]
        assert p["seed"] == SW.point_seed(case, pt["point"])
        assert {k: p["statistics"][k] for k in want["statistics"]} == want["statistics"]
        assert p["statistics"]["disorder_strength"] == want["disorder_strength"]
        assert np.isfinite(p["statistics"]["flow_stress"]) and p["realizations"] == 2
        # the kernel of the point's own modulus, not a stale one: between the walls the
        # drive stress per unit gamma_ext is G (homogeneous simple shear)
        assert p["parameters"]["drive_stress_per_gamma"] == \
            pytest.approx(pt["params"]["elasticity.G"], rel=1e-12)


def test_sweep_table_names_the_grip_stress_and_plots(spec_sweep, tmp_path):
    import json
    import shutil

    from femplast.app.sweep import SCALAR_STAT_COLUMNS, SPECIMEN_STRESS
    from femplast.postprocess.data import load_run
    from femplast.postprocess.plot import plot_run

    _, out = spec_sweep
    text = (out / "sweep" / "table.csv").read_text()
    assert f"# stresses: {SPECIMEN_STRESS[1]}" in text
    rows = [ln.split(",") for ln in text.splitlines() if not ln.startswith("#")]
    assert rows[0] == ["point", "scalar.c0", "elasticity.G", *SCALAR_STAT_COLUMNS]
    assert not any("sigma_xy" in c for c in rows[0]) and len(rows) == 5
    sw = json.loads((out / "summary.json").read_text())["sweep"]
    assert sw["stress_measure"] == "drive" and sw["grid_points"] == 4
    assert sw["grid"] == {"scalar.c0": [0.04, 0.06], "elasticity.G": [14.7, 20.0]}
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    run = load_run(copy)
    assert run.families() == ["calibration"]
    entries, _, _ = plot_run(copy, quiet=True, strict=True)
    (e,) = entries
    assert e.path.name == "sweep_observables.png" and e.path.stat().st_size > 10000
    assert "(scalar.c0, elasticity.G)" in e.caption and "grip force / area" in e.caption


def test_sweep_kernel_is_shared_by_points_of_the_same_specimen(tmp_path):
    """ModelCache.scalar: points changing only the scalar section share the specimen's FE
    problem and dense columns (same objects); a modulus on the grid builds a new kernel,
    equal to the one a plain run of that case builds."""
    from femplast.app import sweep as SW

    case = load_case(_sweep_case(tmp_path))
    pts = SW.plan(case)
    cache = SW.ModelCache()
    m = [cache.scalar(SW.point_case(case, p)) for p in pts]
    assert m[2].el is m[0].el and m[2].K is m[0].K and m[3].K is m[1].K
    assert (m[0].c0, m[2].c0) == (0.04, 0.06) and m[1].el is not m[0].el
    fresh = model_from_case(SW.point_case(case, pts[3]))
    assert np.array_equal(fresh.K, m[3].K) and np.array_equal(fresh.R, m[3].R)
    assert m[1].G == 20.0 and m[3].c0 == 0.06 and m[3].w_g == 0.175


@pytest.mark.mpi
def test_sweep_two_ranks_write_the_serial_points(spec_sweep, tmp_path):
    """mpirun -n 2: the points (statistics, seeds) and the table are the serial ones, bit for
    bit (a point is one work unit, computed whole on one rank)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    path, out = spec_sweep
    env = dict(os.environ)
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    exe = Path(sys.executable)
    r = subprocess.run([str(exe.parent / "mpirun"), "-n", "2", str(exe), "-m", "femplast",
                        str(path), "--out", str(tmp_path / "mpi2"), "--quiet"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "mpi2" / "sweep" / "table.csv").read_bytes() == \
        (out / "sweep" / "table.csv").read_bytes()
    a, b = _points(out), _points(tmp_path / "mpi2")
    assert list(a) == list(b)
    import json

    ranks = json.loads((tmp_path / "mpi2" / "summary.json").read_text())["sweep"]["ranks"]
    assert sum(x["points_computed"] for x in ranks) == 4 and len(ranks) == 2
    for k in a:
        for f in ("params", "seed", "statistics", "parameters", "num_cells"):
            assert a[k][f] == b[k][f], (k, f)


def test_sweep_interrupt_and_resume_gives_the_same_table(spec_sweep, tmp_path, monkeypatch,
                                                         capfd):
    """SIGTERM at the second point: the first point's file is kept, exit 143; --resume runs
    the rest and writes the uninterrupted table, byte for byte."""
    import os
    import signal

    from femplast.app import sweep
    from femplast.app.cli import main

    path, out = spec_sweep
    orig, calls = sweep.compute_unit, [0]

    def hooked(*a, **k):
        calls[0] += 1
        if calls[0] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return orig(*a, **k)

    monkeypatch.setattr(sweep, "compute_unit", hooked)
    cut = tmp_path / "cut"
    assert main([str(path), "--out", str(cut), "--quiet"]) == 128 + signal.SIGTERM
    err = capfd.readouterr().err
    assert "Traceback" not in err
    assert sorted(p.name for p in (cut / "sweep" / "points").iterdir()) == ["p00000.json"]
    assert not (cut / "summary.json").exists()
    monkeypatch.undo()
    assert main([str(path), "--out", str(cut), "--quiet", "--resume"]) == 0
    assert (cut / "sweep" / "table.csv").read_bytes() == \
        (out / "sweep" / "table.csv").read_bytes()
    assert _points(cut)["p00003.json"]["statistics"] == _points(out)["p00003.json"]["statistics"]
