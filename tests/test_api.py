"""The public Python API (femplast.app.api): cases, runs in memory and on disk, and the
Simulation stepped by hand (reproduction of run, branches, backward loading, event-driven
steps, explicit slips, saved states, KMC quench), plus the example script."""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

from femplast import FemplastInputError, Simulation, load_case, load_run, run

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"run.realizations": 2, "loading.gamma_max": 0.3, "loading.stationary_from": 0.1,
         "output.snapshots": []}


@pytest.fixture(scope="module")
def case():
    return load_case(ROOT / "cases/quickstart.yaml", SMALL)  # 8 x 8 cells, seed 1


@pytest.fixture(scope="module")
def run_dir(case, tmp_path_factory):
    """The case run by the runner the command line uses."""
    from femplast.app.runner import run_case

    out = tmp_path_factory.mktemp("api") / "run"
    run_case(case, out, MPI.COMM_SELF, quiet=True)
    return out


@pytest.fixture(scope="module")
def loaded(case):
    """Realization 0 loaded to gamma_ext = 0.2 (stable, flowing), never stepped by tests."""
    sim = Simulation(case)
    assert sim.advance_to(0.2) > 0
    return sim


# ---------------------------------------------------------------------------- cases
def test_load_case_from_path_dict_and_overrides(case):
    assert case.loading.gamma_max == 0.3 and case.run.realizations == 2
    c = load_case(case.to_dict(), ["loading.gamma_max=0.25"])
    assert c.loading.gamma_max == 0.25 and c.mesh.n == 8
    # dict overrides keep Python values exactly (1e-5 is not the string '1e-5' of YAML 1.1)
    c = load_case(case, {"loading.dgamma_ext": 1e-5, "kmc.enabled": True})
    assert c.loading.dgamma_ext == 1e-5 and c.kmc.enabled is True


@pytest.mark.parametrize("src, ov", [
    (42, ()),
    ("no/such/case.yaml", ()),
    ({"mesh": {"n": 8}, "nonsense": 1}, ()),
    ({}, {"loading.gamma_max": -1.0}),
    ({}, ["loading.gamma_max"]),
    ({}, {"slip.chi": "soft"}),
])
def test_bad_inputs_raise_femplast_input_error(src, ov):
    with pytest.raises(FemplastInputError):
        load_case(src, ov)


def test_bad_outdir_and_model_raise(case, run_dir, tmp_path):
    with pytest.raises(FemplastInputError, match="new or empty"):
        run(case, run_dir)  # never overwrites results
    with pytest.raises(FemplastInputError):
        load_run(tmp_path)  # nothing femplast wrote
    with pytest.raises(FemplastInputError, match="tensorial"):
        Simulation(load_case(ROOT / "cases/scalar_esl_soft.yaml"))


def test_import_is_lazy():
    code = ("import sys, femplast; assert 'femplast.app.api' not in sys.modules; "
            "from femplast import Simulation, run; assert 'femplast.app.api' in sys.modules; "
            "assert set(femplast.__all__) >= {'load_case', 'run', 'load_run', 'Simulation', "
            "'Results', 'FemplastInputError', '__version__'}")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert res.returncode == 0, res.stderr


# ---------------------------------------------------------------------------- runs
def test_run_in_memory_equals_run_case(case, run_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    res = run(case)
    assert res.outdir is None and not any(tmp_path.iterdir())  # temporary directory removed
    disk = load_run(run_dir)
    assert disk.outdir == run_dir and len(res.realizations) == len(disk.realizations) == 2
    for i in range(2):
        with h5py.File(run_dir / "realizations" / f"r{i:04d}.h5", "r") as f:
            for grp, table in (("steps", res.steps[i]), ("avalanches", res.avalanches[i])):
                for k in ("gamma_ext", "stress", "stress_before", "size"):
                    if k in f[grp]:
                        assert np.array_equal(table[k], f[grp][k][:]), (grp, k)
    assert len(res.steps[0]["gamma_ext"]) == 3001 and res.avalanches[0]["size"].sum() > 100
    summary = json.loads((run_dir / "summary.json").read_text())
    assert res.stationary == summary["stationary"] == disk.stationary
    assert res.stationary["avalanches"] > 10


def test_run_into_a_directory(case, tmp_path):
    out = tmp_path / "new"
    res = run(load_case(case, {"run.realizations": 1, "loading.gamma_max": 0.15}), out)
    assert res.outdir == out and (out / "summary.json").is_file()
    assert res.steps[0]["gamma_ext"][-1] == pytest.approx(0.15)


# ---------------------------------------------------------------------------- Simulation
def test_advance_to_reproduces_run_bit_for_bit(case, run_dir):
    for i in range(2):
        sim = Simulation(case, realization=i)
        for g in (0.05, 0.12, 0.3):  # stops at stable states do not change the trajectory
            sim.advance_to(g)
        with h5py.File(run_dir / "realizations" / f"r{i:04d}.h5", "r") as f:
            st = f["state"]
            assert sim.gamma_ext == st.attrs["gamma_ext"] == 0.3
            assert np.array_equal(sim.stress, st["stress"][:])
            assert np.array_equal(sim.eps_pl, st["eps_pl"][:])
            assert np.array_equal(sim.tau_c, st["tau_c"][:])
            assert sim.num_events == f.attrs["num_events"] > 100
            mean = f["steps/stress"][-1]
        assert np.allclose(sim.mean_stress, mean, rtol=0, atol=1e-12)


def test_copies_are_independent_and_deterministic(loaded):
    s0, tc0, g0 = loaded.stress.copy(), loaded.tau_c.copy(), loaded.gamma_ext
    rng0, n0 = json.dumps(loaded.state.rng.bit_generator.state), loaded.num_events
    a, b = loaded.copy(), loaded.copy()
    na, nb = a.advance_to(0.26), b.advance_to(0.26)
    assert na == nb > 20
    assert np.array_equal(a.stress, b.stress) and np.array_equal(a.eps_pl, b.eps_pl)
    assert np.array_equal(a.tau_c, b.tau_c)
    assert a.state.rng.random() == b.state.rng.random()
    assert not np.array_equal(a.tau_c, tc0)  # the branch moved on ...
    # ... the original did not
    assert loaded.gamma_ext == g0 and loaded.num_events == n0
    assert np.array_equal(loaded.stress, s0) and np.array_equal(loaded.tau_c, tc0)
    assert json.dumps(loaded.state.rng.bit_generator.state) == rng0
    with pytest.raises(ValueError):
        loaded.eps_pl[0, 0] = 1.0  # read-only views


def test_backward_loading_unloads_then_reverses(loaded, case):
    s0 = loaded.resolved_stress
    assert s0 > 0.4
    b = loaded.copy()
    dg = case.loading.dgamma_ext
    n = b.advance_to(0.2 - dg)
    slope = (s0 - b.resolved_stress) / dg
    assert n == 0 and slope == pytest.approx(case.elasticity.G, rel=1e-6)  # elastic unloading
    b.advance_to(0.1)
    assert b.gamma_ext == pytest.approx(0.1, abs=1e-12)
    assert b.resolved_stress < s0 - 0.5 and b.resolved_stress < 0  # reversed, Bauschinger
    f = loaded.copy()
    f.advance_to(0.1)
    f.advance_to(0.2)  # and forward again: hysteresis, same strain
    assert f.gamma_ext == pytest.approx(0.2, abs=1e-12) and f.resolved_stress > 0.2


@pytest.mark.parametrize("direction", [1, -1])
def test_event_driven_step_loads_exactly_to_the_next_instability(loaded, direction):
    c = loaded.copy()
    g0 = loaded.gamma_ext
    assert c.distance_to_threshold().min() >= 0
    size = c.event_driven_step(direction)
    dg = c.gamma_ext - g0
    assert size >= 1 and direction * dg > 0
    for frac, events in ((0.999, 0), (1.001, None)):
        d = loaded.copy()
        n = d.advance_to(g0 + frac * dg)
        assert (n == 0) if events == 0 else (n >= 1)
    assert c.distance_to_threshold().min() >= 0  # stable after its avalanche


def test_apply_slip_and_relax(loaded):
    from femplast.fe.elasticity import M_vector

    c = loaded.copy()
    dist = c.distance_to_threshold()
    cell = int(np.argmin(dist))
    tot = c.stress[cell]
    tau = np.sin(2 * c.theta[cell]) * 0.5 * (tot[1] - tot[0]) + np.cos(2 * c.theta[cell]) * tot[2]
    n = int(np.argmax(tau))
    theta = c.theta[cell, n]
    e0, tc0 = c.eps_pl.copy(), c.tau_c.copy()
    dgam = c.apply_slip(cell, n)
    assert dgam > 0
    de = c.eps_pl - e0
    assert np.allclose(de[cell], dgam * M_vector(theta), rtol=0, atol=1e-15)
    assert not np.delete(de, cell, axis=0).any()
    assert not np.array_equal(c.tau_c[cell], tc0[cell])  # systems of the cell renewed
    assert np.array_equal(np.delete(c.tau_c, cell, 0), np.delete(tc0, cell, 0))
    c.relax()
    assert c.distance_to_threshold().min() >= 0 and c.relax() == 0
    assert c.apply_slip(cell, 0, d_gamma=0.01) == 0.01
    with pytest.raises(IndexError):
        c.apply_slip(10**6, 0)


def test_save_state_is_a_valid_initial_state(loaded, case, tmp_path):
    path = loaded.save_state(tmp_path / "state.h5")
    case2 = load_case(case, {"initial.state": str(path), "run.realizations": 1,
                             "loading.gamma_max": 0.15})
    sim = Simulation(case2)
    assert sim.gamma_ext == 0.0 and not sim.eps_pl.any()
    assert np.array_equal(sim.tau_c, loaded.tau_c) and np.array_equal(sim.theta, loaded.theta)
    assert np.allclose(sim.stress, loaded.stress, rtol=0, atol=1e-13)
    assert sim.relax() == 0  # the saved state is stable
    res = run(case2)  # and a run starts from it
    assert np.allclose(res.steps[0]["stress"][0], loaded.mean_stress, rtol=0, atol=1e-12)
    with h5py.File(path, "r") as f:
        assert f["state"].attrs["gamma_ext"] == loaded.gamma_ext


def test_quench_reproduces_a_kmc_run(case):
    kcase = load_case(case, {"kmc.enabled": True, "kmc.max_events": 300, "kmc.save": False,
                             "run.realizations": 1, "loading.gamma_max": 0.15})
    res = run(kcase)
    sim = Simulation(kcase)
    q = sim.quench()
    assert q["events"] > 0 and q["stopped_by"] in ("stationary", "max_events")
    assert not sim.eps_pl.any() and sim.relax() == 0
    sim.advance_to(0.15)
    assert sim.num_events == res.avalanches[0]["size"].sum() > 10
    assert np.allclose(sim.mean_stress, res.steps[0]["stress"][-1], rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- example
def test_branching_example(tmp_path):
    png = tmp_path / "branching.png"
    res = subprocess.run([sys.executable, str(ROOT / "docs/examples/branching.py"), str(png),
                          "--events", "3000"], cwd=tmp_path, capture_output=True, text=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "", "MPLBACKEND": "Agg"},
                         timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert png.is_file() and png.stat().st_size > 20_000
    import matplotlib.image

    img = matplotlib.image.imread(png)
    assert img.shape[0] > 300 and img.shape[1] > 400 and img[..., :3].std() > 0.05
    stress = {k: float(v) for k, v in re.findall(r"(forward|backward) +to \S+: Sigma_xy = (\S+)",
                                                 res.stdout)}
    assert stress["backward"] < 0 < stress["forward"]
