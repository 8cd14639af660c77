"""The tensorial model on specimens with boundaries (issue 19): the slip rule, AQS driver and
backends of the periodic box, with the load response of the driven boundaries."""

from pathlib import Path

import numpy as np
import pytest

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.app.api import Simulation, load_case
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import from_dsp

ROOT = Path(__file__).resolve().parents[1]
NOTCH = {"shape": "notched_strip", "width": 60.0, "height": 120.0, "size": 6.6,
         "size_min": 3.3, "notch_depth": 15.0, "notch_radius": 4.0,
         "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}


def _case(geometry=NOTCH, backend="dense", seed=3, **loading):
    lo = {"dgamma_ext": 5e-4, "gamma_max": 0.1, "stationary_from": 0.05}
    lo.update(loading)
    return load_case({"mesh": {"kind": "geometry"}, "geometry": geometry, "loading": lo,
                      "redistribution": {"backend": backend}, "run": {"seed": seed}})


def _root_distance(sim, root):
    el = sim._model.el
    mid = el.gather(sim._model.box.midpoints()[el._dolfinx_cells])
    return np.hypot(*(mid - root).T)


def test_early_slips_concentrate_at_the_notch_root():
    """Event-driven loading (exact next instability) to 40 events: the accumulated slip per
    unit area within 3 notch radii of the root (5 % of the area) is several times the
    specimen's. Observed ratios (seeds 0-3): 10.0, 2.8, 5.0, 7.9. The very first slip is
    not reliably there: the load concentration (3.8 x the median) competes with the weakest
    of ~10^4 Weibull thresholds (k = 2.18) elsewhere."""
    ratios = []
    for seed in range(4):
        sim = Simulation(_case(seed=seed))
        el = sim._model.el
        area = el.gather(el.area)
        near = _root_distance(sim, [15.0, 60.0]) < 3 * 4.0
        while sim.num_events < 40:
            sim.event_driven_step()
        e = sim._state.eacc
        ratios.append((e[near].sum() / area[near].sum()) / (e.sum() / area.sum()))
    assert min(ratios) > 2.0 and np.mean(ratios) > 4.0, ratios


@pytest.mark.parametrize("backend", ["dense", "direct"])
def test_equilibrium_energy_balance_and_fe_stress(backend):
    """AQS to gamma_ext = 0.06 with avalanches: the dynamics' stress is the FE solution of the
    plastic strain (equilibrium residual < 1e-10); the boundary work (trapezoids of the
    drive force over the elastic segments, exact: linear) equals the stored energy plus the
    dissipation, and every avalanche dissipates (energy drop at fixed gamma_ext >= 0)."""
    sim = Simulation(_case(backend=backend))
    m = sim._model
    el = m.el

    def drive(eps, g):
        return el.drive_force(eps[el.cells], g)

    def energy(eps, g):
        return el.energy(eps[el.cells], g)

    dg, work, drops = 5e-4, 0.0, []
    eps_prev, g_prev = sim.eps_pl.copy(), 0.0
    for k in range(1, 121):
        g = k * dg
        sim.advance_to(g)
        work += 0.5 * (drive(eps_prev, g_prev) + drive(eps_prev, g)) * dg
        drops.append(energy(eps_prev, g) - energy(sim.eps_pl, g))
        eps_prev, g_prev = sim.eps_pl.copy(), g
    assert sim.num_events > 20
    stored = energy(sim.eps_pl, g_prev)
    drops = np.array(drops)
    assert drops.min() > -1e-12 * work, drops.min()
    assert drops.sum() > 1e-3 * work  # something dissipated
    assert abs(work - stored - drops.sum()) < 1e-10 * work
    assert el.residual(sim.eps_pl[el.cells], g_prev) < 1e-10
    fe = m.fe_stress(sim._state, g_prev, 0.0)
    assert np.abs(fe - sim.stress).max() < 1e-10 * np.abs(fe).max()


def test_dense_and_direct_backends_agree():
    """Same realization, same events, same stresses with both backends."""
    res = []
    for backend in ("dense", "direct"):
        sim = Simulation(_case(backend=backend))
        sim.advance_to(0.04)
        res.append((sim.num_events, sim.stress.copy(), sim.eps_pl.copy()))
    assert res[0][0] == res[1][0] > 5
    assert np.abs(res[0][1] - res[1][1]).max() < 1e-9
    assert np.abs(res[0][2] - res[1][2]).max() < 1e-12


def test_load_response_is_the_unit_boundary_displacement():
    sim = Simulation(_case())
    m = sim._model
    el = m.el
    R = from_dsp(m.load_response(0.0))
    z = np.zeros((el.num_local, 3))
    assert np.abs(R - el.gather(el.stress(z, 1.0))).max() < 1e-12 * np.abs(R).max()
    # the self-response of every cell is its own (no translation invariance) and stable
    q = m.redist.selfq
    assert np.ptp(q[:, 0]) > 1e-3 * np.abs(q[:, 0]).max()
    assert np.all(q[:, 0] < 0) and np.all(q[:, 2] < 0)


@pytest.mark.parametrize("override,key", [
    ({"loading": {"alpha_ext": 45.0}}, "loading.alpha_ext"),
    ({"redistribution": {"backend": "propagator"}}, "redistribution.backend"),
    ({"geometry": dict(NOTCH, boundaries={"bottom": "clamped"})}, "geometry.boundaries"),
    ({"geometry": dict(NOTCH, boundaries={"bottom": "clamped", "rim": "clamped"})},
     "geometry.boundaries.rim"),
    ({"patches": {"enabled": True, "shape": "disk", "radius": [30.0]}}, "patches.radius[0]"),
])
def test_unsupported_combinations_name_the_key(override, key):
    data = {"mesh": {"kind": "geometry"}, "geometry": NOTCH}
    data.update(override)
    with pytest.raises(FemplastInputError) as exc:
        load_case(data)
    assert exc.value.key == key


def test_boundaries_only_with_geometry():
    with pytest.raises(FemplastInputError) as exc:
        load_case({"geometry": {"boundaries": {"top": "clamped"}}})
    assert exc.value.key == "geometry.boundaries"


@pytest.mark.heavy
def test_walls_sheared_strip_flows_like_the_periodic_box():
    """A 52.8 x 52.8 strip periodic along its walls (bottom clamped, top moved by gamma_ext H)
    against the periodic gmsh box of the same side and cell size, 4 realizations each to
    gamma_ext = 1: stationary <sigma_xy> (gamma_ext >= 0.3) agree within 3 combined standard
    errors and 3 %. Observed: walls 0.873 +- 0.005, periodic 0.884 +- 0.006."""
    def flow(data):
        out = []
        for seed in range(4):
            case = load_case(dict(data, run={"seed": seed}, loading={
                "dgamma_ext": 1e-3, "gamma_max": 1.0, "stationary_from": 0.3}))
            sim = Simulation(case)
            vals = []
            for k in range(300, 1001, 20):
                sim.advance_to(k * 1e-3)
                vals.append(sim.mean_stress[2])
            out.append(np.mean(vals))
        return np.mean(out), np.std(out, ddof=1) / 2

    L = 52.8
    walls = flow({"mesh": {"kind": "geometry"}, "redistribution": {"backend": "dense"},
                  "geometry": {"shape": "strip", "width": L, "height": L, "size": 6.6,
                               "periodic": "x", "boundaries": {
                                   "bottom": "clamped", "top": {"displacement": [1.0, 0.0]}}}})
    box = flow({"mesh": {"kind": "gmsh", "L": L, "size": 6.6},
                "redistribution": {"backend": "dense"}})
    diff = abs(walls[0] - box[0])
    assert diff < 3 * np.hypot(walls[1], box[1]) and diff < 0.03 * box[0], (walls, box)


def test_band_from_point_finds_a_synthetic_band():
    from femplast.analysis.specimen import band_from_point

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (20000, 2))
    area = np.full(len(pts), 0.5)
    d = pts - [0.0, 50.0]
    # a band from (0, 50) at +40 deg, width 6
    dist = np.abs(-np.sin(np.radians(40)) * d[:, 0] + np.cos(np.radians(40)) * d[:, 1])
    field = np.where((dist < 3) & (d[:, 0] > 0), 1.0, 0.0) + 0.05 * rng.random(len(pts))
    b = band_from_point(pts, area, field, [0.0, 50.0], 10.0, 60.0)
    assert abs(b["angle"] - 40) <= 5 and b["contrast"] > 3
    assert b["profile"].shape == (36,) and b["near"] > 1


@pytest.mark.heavy
def test_notch_emits_a_band():
    """Notched strip (100 x 150, U notch depth 20, radius 5) to gamma_ext = 0.05 (~770
    events): the slip per unit area within 10 of the root is > 2.5 x the specimen's, and the
    densest direction 10-50 from the root holds > 2 x the annulus mean, at 35-75 deg from the
    specimen axis x (observed, seeds 0, 1: near 4.5, 4.0; contrast 2.5, 3.1; angle 65, 55)."""
    from femplast.analysis.specimen import band_from_point

    geo = dict(NOTCH, width=100.0, height=150.0, notch_depth=20.0, notch_radius=5.0)
    for seed in (0, 1):
        sim = Simulation(_case(geometry=geo, seed=seed, dgamma_ext=2e-4))
        el = sim._model.el
        mid = el.gather(sim._model.box.midpoints()[el._dolfinx_cells])
        sim.advance_to(0.05)
        b = band_from_point(mid, el.gather(el.area), sim._state.eacc, [20.0, 75.0], 10.0,
                            50.0)
        assert b["near"] > 2.5 and b["contrast"] > 2.0, b
        assert 35 <= abs(b["angle"]) <= 75, b


def test_blocked_responses_equal_single_solves(monkeypatch):
    """The specimen's Green operator and self-responses from multi-right-hand-side solves
    (blocks of 64 cells here) == one solve per column, to round-off."""
    from mpi4py import MPI

    from femplast.fe.geometry import ShapeSpec, build_geometry
    from femplast.redistribution.backends import DenseRedistribution, DirectRedistribution

    geo_kw = {k: v for k, v in NOTCH.items() if k != "boundaries"}
    geo = build_geometry(ShapeSpec(**dict(geo_kw, size=10.0, size_min=None)), MPI.COMM_SELF)
    geo.conditions = NOTCH["boundaries"]
    monkeypatch.setattr(DenseRedistribution, "BLOCK", 64)
    blocked = DenseRedistribution(geo, 13.2, 59.0)
    assert blocked.blocked and geo.num_cells > 64
    direct = DirectRedistribution(geo, 13.2, 59.0, elasticity=blocked.el)
    monkeypatch.setattr(DenseRedistribution, "blocked", False)
    single = DenseRedistribution(geo, 13.2, 59.0, elasticity=blocked.el)
    scale = np.abs(single.dense).max()
    assert np.abs(blocked.dense - single.dense).max() < 1e-12 * scale
    assert np.abs(blocked.selfq - single.selfq).max() < 1e-12 * np.abs(single.selfq).max()
    assert np.abs(direct.selfq - single.selfq).max() < 1e-12 * np.abs(single.selfq).max()


# ----------------------------------------------------------------------------- bands, first slips
def _band_cells(angle, through, width=6.0, seed=0):
    """Random unstructured cells on 100 x 120 with a band of ``width`` at ``angle`` deg from x
    through ``through``; unequal areas."""
    rng = np.random.default_rng(seed)
    pts = rng.uniform([0, 0], [100, 120], (12000, 2))
    area = rng.uniform(0.5, 1.5, len(pts))
    t = np.radians(angle)
    dist = -np.sin(t) * (pts[:, 0] - through[0]) + np.cos(t) * (pts[:, 1] - through[1])
    field = np.where(np.abs(dist) < width / 2, 1.0, 0.0) + 0.1 * rng.random(len(pts))
    return pts, area, field


@pytest.mark.parametrize("angle", [-52.0, 0.0, 37.0, 90.0])
def test_line_band_finds_angle_width_and_root(angle):
    """A band 6 wide through the root: orientation within 2 deg, width within one strip
    (4), centre line within one strip of the root; the same band moved 30 away is not from
    the root."""
    from femplast.analysis.specimen import line_band

    root = np.array([20.0, 60.0])
    pts, area, field = _band_cells(angle, root)
    b = line_band(pts, area, field, 4.0, origin=root)
    diff = abs(b["orientation"] - angle) % 180
    assert min(diff, 180 - diff) <= 2.0, b["orientation"]
    assert abs(b["width"] - 6.0) <= 4.0 and b["root_distance"] < 4.0 and b["from_root"]
    assert b["share"] > 0.3 and b["contrast"] > 3
    t = np.radians(angle)
    off = root + 30.0 * np.array([-np.sin(t), np.cos(t)])
    if not (0 < off[0] < 100 and 0 < off[1] < 120):
        off = 2 * root - off
    pts, area, field = _band_cells(angle, off, seed=1)
    b = line_band(pts, area, field, 4.0, origin=root)
    assert not b["from_root"] and abs(b["root_distance"] - 30.0) < 4.0


def test_line_band_none_for_a_uniform_field():
    from femplast.analysis.specimen import line_band

    pts, area, _ = _band_cells(0.0, [0, 0])
    assert line_band(pts, area, np.ones(len(pts)), 4.0) is None


def test_first_slip_follows_the_weakest_link_law():
    """Why the very first slip is not always at the notch root (analysis/specimen.py):
    with Weibull thresholds it is cell c with probability |R_c|^k / sum |R|^k. Over 300
    realizations of the notched strip the first slip lies within 3 notch radii of the root
    as often as the law says (3 binomial standard deviations), which is > 3x the region's
    area share; the event-driven step slips the predicted cell first (5 realizations).
    Observed: law 0.219, measured 0.230, area 0.052."""
    from femplast.analysis.specimen import first_slip_law
    from femplast.streams import realization_rng

    sim = Simulation(_case(seed=0))
    m, el = sim._model, sim._model.el
    area = el.gather(el.area)
    near = _root_distance(sim, [15.0, 60.0]) < 3 * 4.0
    law = first_slip_law(m.load_response(0.0), m.params.weibull_k, near)
    firsts = []
    R = m.load_response(0.0)
    R = R if R.shape[0] == m.num_cells else R.T
    for i in range(300):
        st = m.new_state(realization_rng(0, i), None, None)
        r = st.sin2 * R[:, :1] + st.cos2 * R[:, 1:2]
        g = np.where(r > 0, st.tauc / np.where(r > 0, r, 1.0), np.inf)
        firsts.append(int(np.argmin(g.min(axis=1))))
        if i < 5:  # the driver's exact search slips that cell (and its avalanche)
            s2 = Simulation(_case(seed=0), realization=i)
            s2.event_driven_step()
            assert firsts[-1] in np.flatnonzero(s2._state.eacc)
    measured = np.mean(near[firsts])
    p, share = law["p_near"], area[near].sum() / area.sum()
    assert abs(measured - p) < 3 * np.sqrt(p * (1 - p) / 300), (measured, p)
    assert p > 3 * share, (p, share)


def test_nominal_stress_is_the_grip_reaction_per_grip_length():
    """Tension: the nominal stress (factor x drive stress) equals the y reaction of the top
    grip over its length (60) after avalanches, to 1e-10; compression: positive too."""
    for sign in (1.0, -1.0):
        geo = dict(NOTCH, boundaries={"bottom": "clamped",
                                      "top": {"displacement": [0.0, sign]}})
        sim = Simulation(_case(geometry=geo))
        el = sim._model.el
        sim.advance_to(0.03)
        assert sim.num_events > 5
        g = sim._drv.gamma_ext
        top = el.reactions(sim.eps_pl[el.cells], g)["top"]
        nominal = el.nominal_factor() * el.drive_stress(sim.mean_stress)
        assert abs(nominal - sign * top[1] / 60.0) < 1e-10 * abs(nominal)
        assert nominal > 0
        # one quantity: what a stress stage controls and a sweep reports is this nominal
        # stress (the notch makes it differ from F_drive / A by the factor A / (W H))
        from femplast.protocols.stages import resolved_stress

        assert el.nominal == el.nominal_factor() and abs(el.nominal - 1.0) > 1e-3
        assert resolved_stress(sim._model, sim.mean_stress, 0.0) == nominal


def test_notched_strip_run_summarizes_bands_loc_and_nominal_stress(tmp_path):
    """A run of the notched strip to gamma_ext 0.06 (windows of 0.01): area-weighted LOC per
    window, a band per window with its angle, most post-yield bands through the notch root,
    the stationary summary in nominal stress (the steps' nominal_stress after 0.03), the
    first slip's record (weakest-link law as in the test above, the distance of the cell the
    event-driven step slips first) and the band figure on the geometry."""
    import json

    import h5py

    from femplast.app.api import run
    from femplast.postprocess.figures import Saver
    from femplast.postprocess.renders import read_series, specimen_band_field

    case = load_case({"mesh": {"kind": "geometry"}, "geometry": NOTCH,
                      "loading": {"dgamma_ext": 5e-4, "gamma_max": 0.06,
                                  "stationary_from": 0.03},
                      "localization": {"window": 0.01}, "redistribution": {"backend": "dense"},
                      "output": {"snapshots": [0.03, 0.06]}, "run": {"seed": 0}})
    run(case, tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    loc = s["localization"]
    assert len(loc["loc"]["mean"]) == 6 and all(v > 0 for v in loc["loc"]["mean"])
    py = loc["post_yield"]
    assert py["loc_max"] is not None and py["gamma_yield_per_realization"][0] <= 0.05
    bands = loc["band"]["per_realization"][0]
    k0 = int(round(py["gamma_yield_per_realization"][0] / 0.01))
    post = [b for b in bands["from_root"][k0:] if b is not None]
    assert post and sum(post) >= 0.5 * len(post), bands
    assert all(-90 < a <= 90 for a in bands["orientation"] if a is not None)
    st = s["stationary"]
    assert "sigma_xy_mean" not in st
    with h5py.File(tmp_path / "out" / "realizations" / "r0000.h5") as f:
        g, nom = f["steps/gamma_ext"][:], f["steps/nominal_stress"][:]
        ga = f["avalanches/gamma_ext"][:]
        drops = f["avalanches/nominal_stress_before"][:] - f["avalanches/nominal_stress_after"][:]
    assert st["nominal_stress_mean"] == pytest.approx(nom[g > 0.03].mean(), rel=1e-12)
    assert st["stress_drop_mean"] == pytest.approx(drops[ga > 0.03].mean(), rel=1e-12)
    from femplast.postprocess.data import read_realization

    real = read_realization(tmp_path / "out" / "realizations" / "r0000.h5")
    assert np.allclose(real.drops(), drops, rtol=0, atol=1e-14)
    assert st["nominal_stress_mean"] > 0 and st["stress_drop_mean"] > 0
    fs = s["specimen"]["first_slip"]
    assert fs["radius"] == 12.0 and fs["law_probability_within"] == pytest.approx(0.219,
                                                                                 abs=0.001)
    sim = Simulation(case)
    sim.event_driven_step()
    first = np.flatnonzero(sim._state.eacc)
    d = _root_distance(sim, [15.0, 60.0])
    assert min(abs(d[first] - fs["distance_per_realization"][0])) < 1e-9
    (entry,) = specimen_band_field(read_series(tmp_path / "out" / "fields" / "r0000.xdmf"),
                                   "r0000", Saver(tmp_path / "figs"), s["case"]["geometry"])
    assert entry.path.stat().st_size > 10_000 and "band" in entry.caption


@pytest.mark.heavy
def test_notch_localizes_more_than_the_bulk_strip(tmp_path):
    """The shipped notched strip against the same strip without a notch (150 x 200, size
    6.6, tension to 0.06, windows of 0.01, 4 realizations each): the post-yield LOC maximum
    is higher with the notch by more than 2 combined standard errors, and at least half of
    the notched strip's post-yield bands pass through the notch root, at 25-50 deg from x.
    Observed: 0.698 +- 0.044 against 0.520 +- 0.010; 5 of 8 through the root at
    |angle| 37 +- 7 deg."""
    import json

    import yaml

    from femplast.app.api import run

    data = yaml.safe_load((ROOT / "cases" / "geometry_notch_tension.yaml").read_text())
    data["run"] = {"realizations": 4, "seed": 1}
    data.pop("output", None)
    bulk = json.loads(json.dumps(data))
    bulk["geometry"] = {k: bulk["geometry"][k] for k in ("width", "height", "size",
                                                         "boundaries")}
    out = {}
    for name, d in (("notch", data), ("bulk", bulk)):
        run(load_case(d), tmp_path / name)
        out[name] = json.loads((tmp_path / name / "summary.json").read_text())["localization"]
    a, b = (out[k]["post_yield"] for k in ("notch", "bulk"))
    assert a["loc_max"] - b["loc_max"] > 2 * np.hypot(a["loc_max_err"], b["loc_max_err"])
    band = out["notch"]["band"]
    assert band["from_root_fraction"] >= 0.5 and 25 <= band["root_angle_abs_mean"] <= 50


def test_stable_glass_yields_at_the_notch_root(tmp_path):
    """The shipped well-annealed notched strip (cases/geometry_notch_tension_stable.yaml,
    narrow high thresholds, 6 realizations to gamma_ext 0.08): the first slip lies within 3
    notch radii of the root in at least 5 of 6 realizations (the weakest-link law says 0.96:
    a stable glass has no weak spot to compete with the root; the paper's k = 2.18 gives 0.17
    on the same mesh), and the whole run's plastic strain leaves the root along a band at
    35-65 deg from x in every realization, several times denser than around it.
    Observed: 5 of 6 (distances 48.4, 4.1, 4.1, 1.5, 1.5, 1.5); root band angles 55, 45,
    -55, -55, 55, 55, contrast 6.5-21, root enrichment 3.0-4.6; the first post-yield
    window's line-scan band passes through the root in 5 of 6. Without the notch the same
    glass localizes less: post-yield LOC maximum 1.53 +- 0.24 against 0.65 +- 0.08."""
    import json

    import yaml

    from femplast.analysis.specimen import first_slip_law
    from femplast.app.api import run

    data = yaml.safe_load((ROOT / "cases" / "geometry_notch_tension_stable.yaml").read_text())
    data.pop("output")  # no field files: the summary holds what is tested
    case = load_case(data)
    run(case, tmp_path / "out")
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    fs = s["specimen"]["first_slip"]
    assert fs["realizations"] == 6 and fs["within_count"] >= 5, fs
    assert fs["law_probability_within"] > 0.9 and fs["enrichment"] > 20, fs
    rb = s["localization"]["band"]["root_band"]
    assert all(35 <= abs(a) <= 65 for a in rb["angle_per_realization"]), rb
    assert min(rb["contrast_per_realization"]) > 4 and min(rb["near_per_realization"]) > 2.5
    py = s["localization"]["post_yield"]
    per = s["localization"]["band"]["per_realization"]
    first_post = [b["from_root"][round(g / 0.01)]
                  for b, g in zip(per, py["gamma_yield_per_realization"], strict=True)]
    assert sum(first_post) >= 5, first_post
    # the same mesh with the paper's (poorly annealed) thresholds: the root rarely wins
    sim = Simulation(case)
    near = _root_distance(sim, [30.0, 100.0]) < fs["radius"]
    assert first_slip_law(sim._model.load_response(0.0), 2.18, near)["p_near"] < 0.3
    # the same glass without the notch (yielding at the clamped grips' corners) localizes
    # less: post-yield LOC maximum lower by more than 2 combined standard errors
    data["geometry"] = {k: data["geometry"][k] for k in ("width", "height", "size",
                                                         "boundaries")}
    run(load_case(data), tmp_path / "bulk")
    bulk = json.loads((tmp_path / "bulk" / "summary.json").read_text())
    b = bulk["localization"]["post_yield"]
    assert py["loc_max"] - b["loc_max"] > 2 * np.hypot(py["loc_max_err"], b["loc_max_err"]), \
        (py["loc_max"], b["loc_max"])
