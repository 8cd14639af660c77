"""Localization observables (femplast.analysis.localization, issue 20): synthetic bands,
LOC scaling, the scalar plastic-only LOC, and hard vs soft glasses over seeds."""

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.analysis import localization as L
from femplast.app.cases import load_case
from femplast.app.runner import run_case
from femplast.scalar import model as S

ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- synthetic
def band_field(n, start, width, orientation, amp=1.0, background=0.0, noise=0.0, seed=0):
    """A band of ``width`` rows (0 deg) or columns (90 deg) from ``start`` (periodic)."""
    rng = np.random.default_rng(seed)
    f = np.full((n, n), background) + noise * rng.random((n, n))
    idx = [(start + j) % n for j in range(width)]
    if orientation == 0:
        f[idx, :] += amp
    else:
        f[:, idx] += amp
    return f, idx


@pytest.mark.parametrize("n, start, width, orientation", [
    (16, 3, 1, 0), (16, 7, 3, 90), (20, 18, 4, 0),  # the last crosses the periodic seam
    (20, 19, 2, 90), (32, 30, 5, 0), (12, 0, 2, 90)])
def test_prescribed_band_is_found(n, start, width, orientation):
    f, idx = band_field(n, start, width, orientation, background=0.05, noise=0.2, seed=start)
    b = L.detect_band(f)
    assert b["orientation"] == orientation
    assert abs(b["width"] - width) <= 1
    centre = (start + width / 2) % n  # cell i spans [i, i + 1)
    dist = abs((b["position"] - centre + n / 2) % n - n / 2)
    assert dist <= 1.0, (b["position"], centre)
    assert set(idx) <= set(b["cells"]) or abs(len(b["cells"]) - width) <= 1
    # exact on a clean band: width, position and cells
    g, idx = band_field(n, start, width, orientation)
    b = L.detect_band(g)
    assert (b["orientation"], b["width"], sorted(idx)) == (orientation, width, b["cells"])
    assert abs(((b["position"] - centre + n / 2) % n) - n / 2) < 1e-12
    assert b["share"] == pytest.approx(1.0)


def test_uniform_field_loc_is_one_over_n_and_has_no_band():
    for n in (8, 16, 33):
        assert S.loc_index(np.full(n * n, 0.3)) == pytest.approx(1.0 / n)
        assert L.detect_band(np.full((n, n), 0.3)) is None
        # one band one cell wide of uniform strain: 1; M isolated equal slips: N / M
        f, _ = band_field(n, 2, 1, 0)
        assert S.loc_index(f) == pytest.approx(1.0)
        g = np.zeros(n * n)
        g[:: n + 1][:5] = 2.0
        assert S.loc_index(g) == pytest.approx(n / 5)
    assert np.isnan(S.loc_index(np.zeros(16)))


def test_windows_persistence_and_yield():
    n, edges = 16, np.arange(6) * 0.1
    # windows 0-1: few scattered slips (pre-yield), then a band at rows 4-5 that stays, then
    # moves to columns 9-10
    inc = [np.zeros((n, n)) for _ in range(5)]
    inc[0][3, 7] = 0.001
    for k in (1, 2, 3):
        inc[k], _ = band_field(n, 4, 2, 0, amp=0.4, background=0.01)
    inc[4], _ = band_field(n, 9, 2, 90, amp=0.4, background=0.01)
    F = np.concatenate([np.zeros((1, n, n)), np.cumsum(inc, axis=0)]).reshape(6, -1)
    r = L.realization(edges, F, n, yield_rate=0.5, curve=(edges, np.sin(edges * 10)))
    assert r["yield_window"] == 1 and r["gamma_yield"] == pytest.approx(0.1)
    assert r["overlap"] == [1.0, 1.0, 0.0]
    assert r["persistence"] == pytest.approx(2 / 3)
    # the pre-yield window (one slip: LOC = N) is recorded but not the maximum
    assert r["loc"][0] == pytest.approx(n)
    assert r["loc_max"] < n and r["gamma_loc_max"] > 0.1
    assert r["gamma_peak"] == pytest.approx(0.2)


def test_mean_band_no_warnings_and_t_interval():
    c = np.array([[np.nan, 1.0, 2.0], [np.nan, 3.0, np.nan]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        b = L.mean_band(c)
    assert np.isnan(b["mean"][0]) and b["mean"][1] == 2.0 and b["mean"][2] == 2.0
    # t(0.975, 1) = 12.706, s = sqrt(2), m = 2
    assert b["high"][1] - 2.0 == pytest.approx(12.7062 * 1.0, rel=1e-4)
    assert np.isnan(b["high"][2]) and list(b["count"]) == [0, 2, 1]


def test_scalar_observations_do_not_change_the_trajectory():
    model = _gq_model(12)
    tabs = []
    for observe in (False, True):
        st = model.new_state(np.random.default_rng(7))
        d = S.ScalarDriver(model, st)
        if observe:
            d.observe(S.window_edges(0.3, 0.05))
        d.run(0.3)
        tabs.append(d.table())
    assert np.array_equal(tabs[0], tabs[1], equal_nan=True)
    assert len(d.observed) == 7
    epl = np.array(d.observed)
    assert np.all(np.diff(epl, axis=0) >= 0)  # scalar slips are forward
    assert np.array_equal(epl[-1], st.epl)
    # plastic-only LOC: NaN before the first slip, equal to loc_index of eps_p after
    rec = tabs[1]
    assert np.isnan(rec[0, 11])
    assert rec[-1, 11] == pytest.approx(S.loc_index(st.epl), rel=1e-12)


def _gq_model(n):
    from femplast.scalar.distributions import from_options

    p_i = from_options("weibull", "t", scale=2.0, shape=4.0)
    p_r = from_options("weibull", "r", scale=1.232, shape=3.0)
    return S.ScalarModel(n, 19.0, 55.0, 0.019555, 0.008652, p_i, p_r, w_g=0.175)


# ----------------------------------------------------------------------------- hard vs soft
SEEDS = (0, 1, 2, 3, 4)
REDUCED = ["mesh.n=32", "loading.gamma_max=0.6", "loading.stationary_from=0.4",
           "localization.window=0.1", "localization.stride=0.025", "run.realizations=4",
           "output.snapshots=[]", "scalar.fit.flow_stress=null", "scalar.fit.peak_stress=null",
           "scalar.curve_points=121"]
FITTED = {"scalar_gq_hard": ["scalar.c0=0.019555", "scalar.c1=0.008652"],
          "scalar_esl_soft": ["scalar.c0=0.03487"]}


def _run(name, seed, tmp):
    sets = REDUCED + FITTED[name] + [f"run.seed={seed}"]
    case = load_case(ROOT / "cases" / f"{name}.yaml", sets)
    out = tmp / f"{name}-{seed}"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no NaN warnings before yield
        run_case(case, out, MPI.COMM_SELF, quiet=True)
    return json.loads((out / "summary.json").read_text())["localization"]


@pytest.mark.heavy
def test_hard_glass_localizes_after_its_peak_soft_glass_does_not(tmp_path):
    """Scalar paper sec. VI.B: the GQ-like glass localizes into a persistent band, with the
    LOC maximum after the stress peak; the ESL-like one does not. Reduced: N = 32, gamma_max
    0.6, 4 realizations per seed, window 0.1 sliding by 0.025, slip laws as fitted by the
    shipped cases."""
    rows = []
    for seed in SEEDS:
        gq, esl = _run("scalar_gq_hard", seed, tmp_path), _run("scalar_esl_soft", seed, tmp_path)
        rows.append((seed, gq, esl))
        pg, pe = gq["post_yield"], esl["post_yield"]
        assert pg["loc_max"] > pe["loc_max"], seed
        assert gq["band"]["persistence"] > esl["band"]["persistence"], seed
        assert pg["gamma_mean_curve_max"] > pg["gamma_peak_mean_stress"], seed
        # the maxima come after yield, never from the pre-yield windows
        assert all(g is not None for g in pg["gamma_loc_max_per_realization"])
    # and the soft glass flows homogeneously: its mean windowed LOC stays low
    assert max(max(x for x in e["loc"]["mean"] if x is not None) for _, _, e in rows) < 0.6


def test_case_keys_checked():
    from femplast.errors import FemplastInputError

    with pytest.raises(FemplastInputError, match="localization.stride"):
        load_case(ROOT / "cases" / "scalar_esl_soft.yaml",
                  ["localization.window=0.1", "localization.stride=0.03"])


def test_tensorial_run_has_localization(tmp_path):
    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(dict(
        model="tensorial", mesh=dict(kind="tri", n=8),
        loading=dict(gamma_max=0.2, dgamma_ext=0.001, stationary_from=0.1),
        localization=dict(window=0.05), run=dict(realizations=2, seed=3))))
    run_case(load_case(p), tmp_path / "out", MPI.COMM_SELF, quiet=True)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())["localization"]
    assert s["gamma_snapshots"] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])
    assert len(s["loc"]["per_realization"]) == 2 and len(s["loc"]["mean"]) == 4
    tab = s["band"]["per_realization"][0]
    assert len(tab["profile_rows"]) == 4 and len(tab["profile_rows"][0]) == 8
    # the rate of the last window: plastic flow carries most of the imposed shear
    assert 0.3 < s["plastic_rate"]["mean"][-1] < 1.5


def test_figures_from_two_runs(tmp_path):
    """LOC overlay of two runs with their bands, the band profile image, and the band
    outlined on the plastic strain between field snapshots."""
    import h5py

    from femplast.postprocess.figures import Saver
    from femplast.postprocess.localization import (
        band_field,
        band_profile,
        field_grids,
        loc_overlay,
    )
    from femplast.postprocess.renders import read_series

    sums = []
    for name in ("scalar_gq_hard", "scalar_esl_soft"):
        sets = [x for x in REDUCED if not x.startswith(("mesh.n", "output.snapshots"))]
        case = load_case(ROOT / "cases" / f"{name}.yaml", sets + FITTED[name] + [
            "mesh.n=16", "run.realizations=2", "run.seed=0", "output.snapshots=[0.3, 0.6]"])
        run_case(case, tmp_path / name, MPI.COMM_SELF, quiet=True)
        sums.append((name, json.loads((tmp_path / name / "summary.json").read_text())))
    saver = Saver(tmp_path / "figs")
    xdmf = tmp_path / "scalar_gq_hard" / "fields" / "r0000.xdmf"
    series = read_series(xdmf)
    e = loc_overlay(sums, saver) + band_profile(sums[0][1], saver) + band_field(series, "r0000",
                                                                                saver)
    assert [x.path.name for x in e] == ["localization_loc.png", "localization_band_profile.png",
                                        "localization_band_field.png"]
    assert all(x.path.stat().st_size > 10000 for x in e)
    assert loc_overlay([("none", {})], saver) == []
    # the field series read back on the lattice is the run's final plastic strain
    times, grids = field_grids(series)
    with h5py.File(tmp_path / "scalar_gq_hard" / "realizations" / "r0000.h5") as f:
        epl = f["state/eps_pl"][:]
    assert times[-1] == pytest.approx(0.6)
    assert np.allclose(grids[-1].ravel(), epl)


def test_tensorial_interrupted_run_resumes_to_the_same_localization(tmp_path, monkeypatch):
    """The plastic-strain snapshots are part of the checkpoint: SIGTERM mid-load, --resume,
    the same summary section as an uninterrupted run."""
    import signal

    from femplast.protocols import checkpoint as ck

    p = tmp_path / "t.yaml"
    p.write_text(yaml.safe_dump(dict(
        model="tensorial", mesh=dict(kind="quad", n=8),
        loading=dict(gamma_max=0.2, dgamma_ext=1e-4, stationary_from=0.1),
        localization=dict(window=0.05, stride=0.025), run=dict(realizations=2, seed=4))))
    run_case(load_case(p), tmp_path / "ref", MPI.COMM_SELF, quiet=True)
    tick, calls = ck.Interrupter.tick, {"n": 0}

    def counting_tick(self, force=False):
        calls["n"] += 1
        if calls["n"] == 5:
            self.signum = signal.SIGTERM
        return tick(self, force)

    monkeypatch.setattr(ck.Interrupter, "tick", counting_tick)
    with pytest.raises(ck.Interrupted):
        run_case(load_case(p), tmp_path / "out", MPI.COMM_SELF, quiet=True)
    cp = ck.load(tmp_path / "out" / "checkpoint" / "rank000-of-001.npz")
    assert cp["current"] is not None and len(cp["current"]["stage"]["observed"]) > 0
    monkeypatch.setattr(ck.Interrupter, "tick", tick)
    run_case(load_case(p), tmp_path / "out", MPI.COMM_SELF, quiet=True, resume=True)
    a, b = (json.loads((tmp_path / d / "summary.json").read_text())["localization"]
            for d in ("ref", "out"))
    assert a == b and len(a["gamma_windows"]) == 7


def test_no_nan_warnings_before_the_first_avalanche(tmp_path):
    """Issue 15: without frozen stress every LOC is undefined before the first slip; the run
    and its summary raise no RuntimeWarning (here: turned into errors), the undefined values
    are NaN in the tables and null in summary.json."""
    case = load_case(ROOT / "cases" / "scalar_esl_soft.yaml", [
        "scalar.fit.flow_stress=null", "scalar.internal_stress_std=0", "run.realizations=2",
        "loading.gamma_max=0.3", "loading.stationary_from=0.2", "output.snapshots=[]"])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    import h5py

    with h5py.File(tmp_path / "out" / "realizations" / "r0000.h5") as f:
        lp = f["steps/LOC_plastic"][:]
    assert np.isnan(lp[0]) and np.isfinite(lp[1:]).all()
    assert s["localization"]["loc"]["cumulative_per_realization"][0][-1] == pytest.approx(lp[-1])


# ----------------------------------------------------------------------------- weighted (specimens)
def test_area_weighted_loc_is_eq13_on_equal_cells_and_refinement_invariant():
    """Equal weights and n = N give eq. 13; splitting every cell into unequal parts that
    carry the cell's value leaves the area-weighted LOC unchanged; a band b cells wide of
    uniform strain gives 1 / b whatever the cells' areas."""
    rng = np.random.default_rng(1)
    n = 12
    f = rng.exponential(size=(n, n)) * (rng.random((n, n)) < 0.3)
    assert S.loc_index(f.ravel(), np.full(n * n, 0.7), n) == pytest.approx(
        S.loc_index(f), rel=1e-13)
    share = rng.uniform(0.1, 0.9, n * n)  # each cell split into share and 1 - share
    split = np.concatenate([f.ravel(), f.ravel()])
    w = np.concatenate([share, 1 - share])
    assert S.loc_index(split, w, n) == pytest.approx(S.loc_index(f), rel=1e-12)
    band = np.zeros((n, n))
    band[3:6] = 2.0
    assert S.loc_index(np.concatenate([band.ravel()] * 2), w, n) == pytest.approx(1 / 3)


def test_weighted_windows_equal_the_lattice_windows():
    """realization() on a lattice's cells passed as a specimen (equal areas, n = N) gives the
    lattice's LOC, plastic rate and yield window."""
    rng = np.random.default_rng(2)
    n, edges = 8, np.arange(6) * 0.05
    fields = np.cumsum(rng.exponential(size=(6, n * n)) * 0.01, axis=0)
    box = L.realization(edges, fields, n, 0.5)
    spec = L.realization(edges, fields, float(n), 0.5, weights=np.full(n * n, 3.0))
    assert np.allclose(box["loc"], spec["loc"], rtol=1e-12)
    assert np.allclose(box["plastic_rate"], spec["plastic_rate"], rtol=1e-12)
    assert box["yield_window"] == spec["yield_window"] and spec["bands"] == [None] * 5


def test_drive_resolved_plastic_strain():
    """Walls shear (top moved along x): eps_xy, like the box; tension along y: eps_yy / 2."""
    e = np.array([[0.1, -0.3, 0.7]])
    assert L.resolved_plastic(e, 0.0, [[0, 1], [0, 0]])[0] == pytest.approx(0.7)
    assert L.resolved_plastic(e, 0.0, [[0, 0], [0, 1]])[0] == pytest.approx(-0.15)
