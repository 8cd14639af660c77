"""Slip systems per area (``slip.reference_area``, a left-out of issue 19): each cell carries
``N_c = 4 clip(round(N/4 A_c / reference_area), 1, N/4)`` systems, kept by every renewal (AQS,
KMC, patch tests), so that the weakest-link law of the first slip, ``P(c) = N_c |R_c|^k /
sum N |R|^k``, follows the area and not the mesh of a specimen refined at a notch root."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.app.api import Simulation, load_case
from femplast.streams import realization_rng

ROOT = Path(__file__).resolve().parents[1]
NOTCH = {"shape": "notched_strip", "width": 60.0, "height": 120.0, "size": 6.6,
         "size_min": 3.3, "notch_depth": 15.0, "notch_radius": 4.0,
         "boundaries": {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}}
N, AREA = 36, 19.0  # 543 triangles of areas 2.4-23.7: counts 4 to 36


def _notch(reference_area=AREA, seed=0, **extra):
    d = {"mesh": {"kind": "geometry"}, "geometry": NOTCH,
         "loading": {"dgamma_ext": 5e-4, "gamma_max": 0.1, "stationary_from": 0.05},
         "redistribution": {"backend": "dense"}, "run": {"seed": seed},
         "slip": {"N": N, "reference_area": reference_area}}
    d.update(extra)
    return load_case(d)


def _expected(areas, n=N, ref=AREA):
    """The formula, written out: groups of four per reference area, 1 to N/4 groups."""
    return np.array([4 * min(max(round(n / 4 * a / ref), 1), n // 4) for a in areas])


def _used(tauc):
    return np.isfinite(tauc).sum(axis=1)


def test_counts_follow_the_area_and_every_renewal_keeps_them():
    """Notched strip (unequal triangles): each cell's finite thresholds equal the formula at
    the start (all nine counts 4..36 occur), after AQS to gamma_ext 0.1 (hundreds of
    renewals, some cells renewed many times), after 1500 KMC events at T = 0.3 and inside
    patch tests (local copies, renewed by their avalanches); unused columns are inert."""
    from femplast.analysis.patches import PatchAnalysis, PatchRules, patch_arrays, patch_test
    from femplast.fe.elasticity import to_dsp
    from femplast.tensorial.aqs import AQSDriver
    from femplast.tensorial.kmc import KMC

    sim = Simulation(_notch())
    m, st = sim._model, sim._state
    want = _expected(m.el.gather(m.el.area))
    assert np.array_equal(m.cell_systems(), want)
    assert set(want) == set(range(4, N + 1, 4))
    assert np.array_equal(_used(st.tauc), want)
    tauc0 = st.tauc.copy()
    sim.advance_to(0.1)
    renewed = (st.tauc != tauc0).any(axis=1) & (want < N)  # renewed cells with unused columns
    assert sim.num_events > 300 and renewed.sum() > 50, (sim.num_events, renewed.sum())
    assert np.array_equal(_used(st.tauc), want)
    cols = np.arange(N)[None, :] >= want[:, None]
    assert np.all(np.isinf(st.tauc[cols])) and np.all(np.isfinite(st.tauc[~cols]))
    # KMC: thermal events renew the slipped cells through the same rule
    kst = m.new_state(realization_rng(5, 0))
    k = KMC(AQSDriver(m, kst, 0.0, 1.0, 1), 0.3, 1.0, window=2 * m.num_cells, tolerance=0.05)
    k.run(1500, until_stationary=False)
    assert (kst.eacc > 0).sum() > 100
    assert np.array_equal(_used(kst.tauc), want)
    # patch tests: copies of the loaded state's rows, renewed inside the test
    g = sim.gamma_ext
    tot = to_dsp(m.fe_stress(st, g, 0.0))
    pa = PatchAnalysis(m, "disk", [9.0], [0.0, 90.0], spacing=8.0)
    ps, rules = pa.sets[0], PatchRules.from_model(m)
    tested = 0
    for ip in pa.positions(ps)[:6]:
        cells = ps.cells[ip]
        op = pa.operator(ps, ip)
        for alpha in (0.0, 0.5 * np.pi):
            pt = patch_arrays(st, cells, tot[:, cells])
            r = patch_test(op, alpha, pt, rules, np.random.default_rng(ip))
            assert r.n_events >= 1
            assert (pt.tauc != st.tauc[cells]).any()  # renewed inside the test
            assert np.array_equal(_used(pt.tauc), want[cells])
            tested += 1
    assert tested == 12 and len(set(want[np.concatenate(ps.cells[:6])])) > 2


def test_equal_cells_get_equal_counts_and_full_cells_are_the_default_run():
    """Structured box: every cell the same count (16 at twice l^2, round half to even: 4.5
    -> 4 groups); at reference_area = l^2 every cell keeps N and the run (keep-groups renewal
    path) is the default run bit for bit: same plastic strain, thresholds and angles."""
    base = {"mesh": {"kind": "quad", "n": 10, "L": 66.0}, "run": {"seed": 4},
            "loading": {"dgamma_ext": 1e-3, "gamma_max": 0.15, "stationary_from": 0.1}}
    half = Simulation(load_case(dict(base, slip={"N": 36, "reference_area": 2 * 43.56})))
    assert np.array_equal(half._model.cell_systems(), np.full(100, 16))
    assert np.array_equal(_used(half._state.tauc), np.full(100, 16))
    ref = Simulation(load_case(dict(base, slip={"N": 36})))
    full = Simulation(load_case(dict(base, slip={"N": 36, "reference_area": 43.56})))
    assert ref._model.params.vpar is None and full._model.params.vpar is not None
    assert np.array_equal(full._model.cell_systems(), np.full(100, 36))
    ref.advance_to(0.15)
    full.advance_to(0.15)
    assert ref.num_events > 200 and full.num_events == ref.num_events
    for a in ("eps_pl", "tauc", "theta", "sig"):
        assert np.array_equal(getattr(full._state, a), getattr(ref._state, a)), a


def test_first_slip_follows_the_weakest_link_law_with_the_cell_counts():
    """The first slip of continuous loading from an unstressed state, over 1000 realizations
    of the notched strip with unequal counts. Given the angles, the first slip is system n
    with probability ``r_n^k / sum r^k`` (r_n > 0 its resolved load per unit strain, Weibull
    thresholds); a group of four at (theta, ..., theta + 3pi/4) resolves |R| (cos, -sin, -cos,
    sin)(2 theta - phi), so its ``sum r_+^k = |R|^k (|cos|^k + |sin|^k)``, with the same angle
    average in every cell: the law is ``N_c |R_c|^k / sum N |R|^k`` (ratio of the angle
    averages). Checked: (i) the mean over the drawn angles of the exact conditional
    probability of the root's region equals the law to 5e-4 relative (1.3e-4); (ii) the observed
    frequency is within 3 binomial sigma of it and far (> 8 sigma) from the equal-N law.
    Observed: law 0.0915, angle average 0.0915, measured 0.096; equal N: 0.219."""
    from femplast.analysis.specimen import first_slip_law

    sim = Simulation(_notch())
    m, el = sim._model, sim._model.el
    mid = el.gather(m.box.midpoints()[el._dolfinx_cells])
    near = np.hypot(*(mid - [15.0, 60.0]).T) < 3 * 4.0
    k = m.params.weibull_k
    law = first_slip_law(m.load_response(0.0), k, near, m.cell_systems())["p_near"]
    equal_n = first_slip_law(m.load_response(0.0), k, near)["p_near"]
    R = m.load_response(0.0)
    R = R if R.shape[0] == m.num_cells else R.T
    firsts, exact, n = [], [], 1000
    for i in range(n):
        st = m.new_state(realization_rng(0, i), None, None)
        r = st.sin2 * R[:, :1] + st.cos2 * R[:, 1:2]
        pos = np.isfinite(st.tauc) & (r > 0)
        g = np.where(pos, st.tauc / np.where(pos, r, 1.0), np.inf)
        firsts.append(int(np.argmin(g.min(axis=1))))
        w = np.where(pos, r, 0.0) ** k
        exact.append(w[near].sum() / w.sum())
        if i < 3:  # the driver's exact search slips that cell first
            s2 = Simulation(_notch(), realization=i)
            s2.event_driven_step()
            assert firsts[-1] in np.flatnonzero(s2._state.eacc)
    assert abs(np.mean(exact) - law) < 5e-4 * law, (np.mean(exact), law)
    sigma = np.sqrt(law * (1 - law) / n)
    measured = np.mean(near[firsts])
    assert abs(measured - law) < 3 * sigma, (measured, law)
    assert abs(measured - equal_n) > 8 * sigma, (measured, equal_n)


def _root_probability(size_min, reference_area):
    """The weakest-link probability that the first slip of the shipped notched strip (paper
    glass, k = 2.18, N = 36) lies within 3 notch radii of the root."""
    from femplast.analysis.specimen import first_slip_law, stress_raiser

    d = yaml.safe_load((ROOT / "cases" / "geometry_notch_tension.yaml").read_text())
    d.pop("description")
    d["geometry"]["size_min"] = size_min
    d["redistribution"] = {"backend": "direct"}
    d["slip"] = {"N": 36, "reference_area": reference_area}
    case = load_case(d)
    m = Simulation(case)._model
    el = m.el
    mid = el.gather(m.box.midpoints()[el._dolfinx_cells])
    near = np.hypot(*(mid - stress_raiser(case.geometry)).T) < 3 * case.geometry.notch_radius
    systems = m.cell_systems() if reference_area else None
    return first_slip_law(m.load_response(0.0), m.params.weibull_k, near, systems)["p_near"]


def test_systems_per_area_make_the_first_slip_law_mesh_independent():
    """The point of the key: the shipped notched strip meshed without refinement (size_min
    6.6) and as shipped (3.3). Equal N: the root's probability follows the mesh (0.079 ->
    0.174, x2.2); with reference_area = l^2 = 43.56 it follows the area (0.059 -> 0.064,
    x1.08). Below the one-group floor (root cells smaller than ~reference_area / (N/2) =
    2.4) the small cells are over-weighted again (docs/specimens.md: 0.095 at size_min 2.2,
    0.14 at 1.65)."""
    p0 = {s: _root_probability(s, None) for s in (6.6, 3.3)}
    p1 = {s: _root_probability(s, 43.56) for s in (6.6, 3.3)}
    assert p0[3.3] / p0[6.6] > 2.0, p0
    assert abs(p1[3.3] / p1[6.6] - 1) < 0.15, p1
    assert 0.05 < p1[3.3] < 0.07, p1


def test_interrupted_run_with_systems_per_area_resumes_bit_identically(tmp_path, monkeypatch):
    """KMC preparation and stages on a specimen with unequal counts, stopped at a safe point
    (checkpoint written), then ``--resume``: the same datasets bit for bit, and the final
    state keeps every cell's count (the count lives in the saved thresholds)."""
    import h5py
    from conftest import interrupt_after
    from test_specimen_protocols import STAGES, case_dict, same_datasets

    from femplast.app.runner import run_case
    from femplast.protocols import checkpoint as ck

    data = case_dict(kmc={"enabled": True, "temperature": 0.3, "max_events": 600,
                          "stop": "max_events"}, stages=STAGES[:3],
                     slip={"N": 36, "reference_area": 10.0},
                     run={"seed": 3, "realizations": 1, "checkpoint_interval": 0.05})
    run_case(load_case(data), tmp_path / "ref", MPI.COMM_SELF, quiet=True, event_log=True)
    tick = interrupt_after(monkeypatch, 6)
    out = tmp_path / "out"
    with pytest.raises(ck.Interrupted):
        run_case(load_case(data), out, MPI.COMM_SELF, quiet=True, event_log=True)
    assert ck.load(out / "checkpoint" / "rank000-of-001.npz")["current"] is not None
    monkeypatch.setattr(ck.Interrupter, "tick", tick)
    run_case(load_case(data), out, MPI.COMM_SELF, quiet=True, resume=True, event_log=True)
    assert same_datasets(tmp_path / "ref", out, 0.0) > 20
    m = Simulation(load_case(data))._model
    want = m.cell_systems()
    assert len(set(want)) > 2
    for f in ("quench/r0000.h5", "stages/hold/realizations/r0000.h5"):
        with h5py.File(out / f, "r") as h:
            assert np.array_equal(_used(np.asarray(h["state"]["tau_c"])), want), f
    with h5py.File(out / "quench" / "r0000.h5", "r") as h:
        mean_tau_c = np.asarray(h["kmc"]["sample_mean_tau_c"])
    assert np.isfinite(mean_tau_c).all() and 1.0 < mean_tau_c.min()  # over used systems
    # the quenched sample is an initial state: accepted (inf columns), its counts kept
    from femplast.app.validation import check_files

    again = load_case(dict(case_dict(slip={"N": 36, "reference_area": 10.0}),
                           initial={"state": str(out / "quench" / "r0000.h5")}))
    assert check_files(again) == []
    sim = Simulation(again)
    assert np.array_equal(_used(sim._state.tauc), want)
    sim.advance_to(0.02)
    assert sim.num_events > 3 and np.array_equal(_used(sim._state.tauc), want)
    from femplast.io.output import snapshot_fields

    f = snapshot_fields(sim._model, sim._state, sim.gamma_ext, 0.0)
    assert np.isfinite(f["tau_c_mean"]).all()


def test_inline_pcg_renewal_draws_what_the_generic_renewal_draws():
    """The AQS loop renews with the inline PCG64 step (``renew_cell_pcg_kept``); patch tests
    and other generators take ``renew_cell`` with the variant vector. Every cell of the
    notched strip (counts 4..36), renewed 3 times each way from the same generator state:
    equal angles, thresholds and generator states, bit for bit."""
    from femplast.streams import pcg64_view
    from femplast.tensorial.slip import renew_cell, renew_cell_pcg_kept

    m = Simulation(_notch())._model
    p = m.params
    a = m.new_state(realization_rng(7, 0))
    b = a.copy()
    view = pcg64_view(b.rng)
    for _ in range(3):
        for c in range(m.num_cells):
            renew_cell(a.rng, c, a.theta, a.sin2, a.cos2, a.tauc, p.threshold_kind,
                       p.weibull_lambda, p.weibull_k, p.vpar, 0.01, 0.0)
            renew_cell_pcg_kept(view, c, b.theta, b.sin2, b.cos2, b.tauc, p.threshold_kind,
                                p.weibull_lambda, p.weibull_k)
    for name in ("theta", "sin2", "cos2", "tauc"):
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.rng.random() == b.rng.random()
    assert np.array_equal(_used(a.tauc), m.cell_systems())


@pytest.mark.mpi
def test_sample_over_two_ranks_with_systems_per_area_equals_serial(tmp_path):
    """``run.parallel: sample`` (KMC preparation, load, unload, hold; the mesh distributed,
    the cell areas gathered) with unequal counts: 2 ranks write the realization and quench
    files of 1 rank (floats to 1e-10, the unused columns' inf at the same places)."""
    import subprocess
    import sys

    from test_specimen_protocols import SAMPLE, case_dict, same_datasets

    from femplast.app.api import run

    script = ROOT / "tests" / "mpi_scripts" / "specimen_sample.py"
    mpirun = Path(sys.executable).parent / "mpirun"
    proc = subprocess.run([str(mpirun), "-n", "2", sys.executable, str(script),
                           str(tmp_path / "par"), "10.0"], capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    case = load_case(case_dict(backend="direct", slip={"N": 36, "reference_area": 10.0},
                               **SAMPLE))
    run(case, tmp_path / "ser", comm=MPI.COMM_SELF)
    assert same_datasets(tmp_path / "ser", tmp_path / "par", 1e-10) > 30
    import h5py

    with h5py.File(tmp_path / "par" / "stages" / "hold" / "realizations" / "r0000.h5") as h:
        counts = _used(np.asarray(h["state"]["tau_c"]))
    assert len(set(counts)) > 2


@pytest.mark.parametrize("variant", [{"model": "E"}, {"model": "B"}, {"model": "D"},
                                     {"renewal_correlation_strain": 0.05},
                                     {"structure_strain": 0.5, "lambda_ss": 1.5, "k_ss": 3.0},
                                     {"renewal_bias": 0.2}])
def test_counts_compose_with_the_renewal_variants_on_a_gmsh_box(variant):
    """Periodic gmsh box (248 unequal triangles, counts 12-28 at reference_area 30): fixed
    thresholds (E), pressure-sensitive ones (B), the shuffled kernel (D), correlated,
    evolving and stress-biased renewals keep every cell's count through ~500-1100 events
    (the generic variant renewal path: the count read from the row first)."""
    sim = Simulation(load_case({"mesh": {"kind": "gmsh", "n": 10, "L": 66.0},
                                "run": {"seed": 1}, "variant": variant,
                                "loading": {"dgamma_ext": 1e-3, "gamma_max": 0.2,
                                            "stationary_from": 0.1},
                                "slip": {"N": 36, "reference_area": 30.0}}))
    m = sim._model
    want = m.cell_systems()
    assert np.array_equal(want, _expected(m.el.gather(m.el.area), ref=30.0))
    assert len(set(want)) >= 4
    sim.advance_to(0.2)
    assert sim.num_events > 400
    assert np.array_equal(_used(sim._state.tauc), want)


def test_the_model_refuses_what_cannot_carry_a_count_per_area():
    """Through the Python API (no case check): a reference area <= 0, two fixed systems or a
    fluctuating number of groups, N not in groups of four: FemplastInputError naming the
    key."""
    from femplast.errors import FemplastInputError
    from femplast.fe.mesh import structured_box
    from femplast.tensorial.model import TensorialModel
    from femplast.tensorial.slip import SYSTEMS_TWO_FIXED, variant_vector

    box = structured_box(4, 26.4, "quad", MPI.COMM_SELF)
    bad = [(dict(N=36, reference_area=0.0), "slip.reference_area"),
           (dict(N=2, reference_area=40.0, vpar=variant_vector(SYSTEMS_TWO_FIXED)),
            "slip.reference_area"),
           (dict(N=36, reference_area=40.0, vpar=variant_vector(n_groups_mean=9.0)),
            "slip.reference_area"),
           (dict(N=6, reference_area=40.0), "slip.N")]
    for params, key in bad:
        with pytest.raises(FemplastInputError, match=key.replace(".", r"\.")):
            TensorialModel.build(box, **params)
    m = TensorialModel.build(box, N=36, reference_area=43.56 / 3)
    assert np.array_equal(m.cell_systems(), np.full(16, 36))  # larger cells keep N
