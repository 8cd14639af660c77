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
