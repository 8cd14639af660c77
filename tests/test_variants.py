"""Model variants of the tensorial paper (appendix A.8, sec. 6; femplast.tensorial.variants): each
variant's defining property, and every shipped variant case keeps the core invariants."""

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.special as sp
from mpi4py import MPI
from scipy import stats

import femplast  # noqa: F401
from femplast.app.cases import case_from_dict, load_case
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import gamma_max
from femplast.protocols.prepare import build_model
from femplast.streams import realization_rng
from femplast.tensorial.aqs import AQSDriver
from femplast.tensorial.slip import SYSTEMS_RANDOM, renew_all, renew_cell, variant_vector
from femplast.tensorial.variants import moduli_rng, n_columns, weibull_moduli

ROOT = Path(__file__).resolve().parents[1]
SMALL = {"mesh": {"n": 8, "L": 52.8}, "loading": {"gamma_max": 0.5, "dgamma_ext": 1e-3,
                                                  "stationary_from": 0.3}}


def small_case(variant, n=8, **sections):
    d = {k: dict(v) for k, v in SMALL.items()}
    d["mesh"] = {"n": n, "L": 6.6 * n}
    for k, v in sections.items():
        d.setdefault(k, {}).update(v)
    d["variant"] = variant
    return case_from_dict(d)


def run(model, seed=0, gamma=0.5, dgamma=1e-3, **kw):
    st = model.new_state(realization_rng(seed, 0))
    drv = AQSDriver(model, st, 0.0, dgamma, int(round(gamma / dgamma)), event_log=True)
    drv.run(**kw)
    return st, drv


def dissipation(drv):
    ei, ef = drv.event_table()
    theta, dg, tau, den = ef[:, :4].T
    return ei, theta, dg, tau, den, tau + 0.5 * dg * den


# ----------------------------------------------------------------------------- A: moduli
def test_weibull_moduli_have_the_requested_mean_and_shape():
    G = weibull_moduli(40000, 18.4, 1.3, np.random.default_rng(3))
    assert abs(G.mean() / 18.4 - 1) < 0.01
    k, _, scale = stats.weibull_min.fit(G, floc=0)
    assert abs(k - 1.3) < 0.02
    assert abs(scale - 18.4 / math.gamma(1 + 1 / 1.3)) < 0.2
    cv = math.sqrt(math.gamma(1 + 2 / 1.3) / math.gamma(1 + 1 / 1.3) ** 2 - 1)  # 0.78
    assert abs(G.std() / G.mean() - cv) < 0.02


def test_model_A_fields_satisfy_equilibrium_with_the_cell_moduli():
    case = small_case({"model": "A"}, n=6, redistribution={"backend": "dense"})
    model = build_model(case, MPI.COMM_SELF, 0)
    G = model.el.gather(model.el.G)
    np.testing.assert_array_equal(G, weibull_moduli(36, 18.4, 1.3, moduli_rng(case, 0)))
    assert G.max() / G.min() > 5  # really heterogeneous
    # realizations have their own field; G_seed: one shared field
    m1 = build_model(case, MPI.COMM_SELF, 1)
    assert not np.array_equal(G, m1.el.gather(m1.el.G))
    st, drv = run(model, gamma=0.3)
    g = drv.gamma_ext
    tracked, fe = model.total_stress(st, g, 0.0), model.fe_stress(st, g, 0.0)
    assert np.abs(tracked - fe).max() <= 1e-10 * np.abs(fe).max()
    from femplast.fe.elasticity import macro_strain

    assert model.el.residual(st.eps_pl[model.el.cells], macro_strain(g)) < 1e-10
    # gamma_max per cell (eq. 6) from that cell's moduli and numerical Eshelby tensor
    ei, theta, dg, tau, den, diss = dissipation(drv)
    assert len(ei) > 100 and diss.min() >= -1e-12
    cells = np.unique(ei[:, 0])[:3]
    for c in cells:
        j = np.flatnonzero(ei[:, 0] == c)[0]
        S = model.el.eshelby_tensor(int(c))
        gm = gamma_max(tau[j], theta[j], G[c], 59.0, S)
        np.testing.assert_allclose(gm, -2 * tau[j] / den[j], rtol=1e-9)
    q = model.redist.selfq
    assert np.ptp(q[:, 2]) / np.abs(q[:, 2]).mean() > 0.5  # per-cell self-responses differ


def test_model_A_direct_backend_same_self_responses_as_dense():
    case = small_case({"model": "A", "G_seed": 5}, n=4, redistribution={"backend": "dense"})
    dense = build_model(case, MPI.COMM_SELF, 0)
    direct = build_model(small_case({"model": "A", "G_seed": 5}, n=4,
                                    redistribution={"backend": "direct"}), MPI.COMM_SELF, 3)
    np.testing.assert_array_equal(dense.el.G, direct.el.G)  # shared field (G_seed)
    np.testing.assert_allclose(direct.redist.selfq, dense.redist.selfq, rtol=1e-9)


# ----------------------------------------------------------------------------- B: pressure
def test_model_B_thresholds_shift_with_the_cell_pressure():
    case = small_case({"model": "B"}, slip={"weibull_lambda": 1.05, "weibull_k": 1.88,
                                            "chi": 3.33})
    model = build_model(case, MPI.COMM_SELF)
    assert (model.params.alpha_p, model.params.p_offset) == (0.2, 1.95)
    st, drv = run(model)
    tot = st.sig + drv.gamma_ext * model.load_response(0.0)
    tau = st.sin2 * tot[0][:, None] + st.cos2 * tot[1][:, None]
    pressure = -tot[2]
    bare = st.tauc - tau
    shifted = bare + 0.2 * (pressure + 1.95)[:, None]
    assert shifted.min() >= 0  # stable with the pressure-sensitive thresholds
    assert bare.min() < -0.05  # ... but not with the bare ones: the shift matters
    np.testing.assert_allclose(model.distance_to_threshold(st, drv.gamma_ext, 0.0),
                               shifted.min(axis=1), atol=1e-12)
    assert np.ptp(pressure) > 0.05  # the shift varies from cell to cell


# ----------------------------------------------------------------------------- D, I: kernels
@pytest.mark.parametrize("backend", ["propagator", "dense"])
def test_shuffled_kernel_permutes_the_original_changes(backend):
    model = build_model(small_case({"model": "D"}, n=6,
                                   redistribution={"backend": backend}), MPI.COMM_SELF)
    red = model.redist
    assert red.kind == f"shuffled({backend})"
    cells = np.array([0, 7, 20, 35])
    gs, gc = np.array([0.01, -0.02, 0.0, 0.03]), np.array([0.02, 0.01, 0.04, -0.01])
    col = red.columns(cells, gs, gc)
    sh = red.shuffled_columns(cells, gs, gc, np.random.default_rng(1))
    for e, c in enumerate(cells):
        np.testing.assert_array_equal(sh[e, :, c], col[e, :, c])  # own change not shuffled
        a = np.delete(col[e], c, axis=1).T
        b = np.delete(sh[e], c, axis=1).T
        # the same multiset of (d, s, p) tensors outside the yielding cell ...
        np.testing.assert_array_equal(a[np.lexsort(a.T)], b[np.lexsort(b.T)])
        assert (a != b).any(axis=1).mean() > 0.8  # ... in other places
    # the FE column is the propagator / dense response
    st = model.new_state(realization_rng(0, 0))
    from femplast.tensorial.aqs import apply_slips

    ref = build_model(small_case({}, n=6, redistribution={"backend": backend}),
                      MPI.COMM_SELF)
    st_ref = ref.new_state(realization_rng(0, 0))
    theta = 0.5 * np.arctan2(0.01, 0.02)
    apply_slips(ref, st_ref, [7], [theta], [math.hypot(0.01, 0.02)])
    np.testing.assert_allclose(red.columns([7], [0.01], [0.02])[0],
                               st_ref.sig - st.sig, atol=1e-13)


def test_mean_field_kernel_is_uniform_outside_and_sums_like_the_original():
    model = build_model(small_case({"model": "I"}, n=6), MPI.COMM_SELF)
    red = model.redist
    cells = np.array([3, 14, 14, 30])
    gs, gc = np.array([0.01, -0.02, 0.005, 0.03]), np.array([0.02, 0.01, 0.04, -0.01])
    col = red.columns(cells, gs, gc)
    mf = red.mean_field_columns(cells, gs, gc)
    w = model.weights
    for e, c in enumerate(cells):
        out = np.delete(mf[e], c, axis=1)
        assert np.ptp(out, axis=1).max() == 0.0  # uniform outside the yielding cell
        np.testing.assert_array_equal(mf[e, :, c], col[e, :, c])
        np.testing.assert_allclose(mf[e] @ w, col[e] @ w, rtol=1e-12, atol=1e-15)
        assert np.abs(col[e, 1] - col[e, 1] @ w).max() > 0.1 * abs(col[e, 1, c])
    sig = np.zeros((3, model.num_cells))
    red.apply(sig, cells, gs, gc)  # the step's update = the sum of its slips' columns
    np.testing.assert_allclose(sig, mf.sum(axis=0), atol=1e-15)


def test_shuffled_runs_are_reproducible_and_stops_do_not_change_them():
    model = build_model(small_case({"model": "D"}), MPI.COMM_SELF)
    st1, d1 = run(model, seed=2, gamma=0.2)
    st2, d2 = run(model, seed=2, gamma=0.2, stops=[37, 120], on_stop=lambda k: None, budget=29)
    assert np.array_equal(d1.event_table()[1], d2.event_table()[1])
    assert np.array_equal(st1.sig, st2.sig) and np.array_equal(st1.tauc, st2.tauc)
    st3, _ = run(model, seed=3, gamma=0.2)
    assert not np.array_equal(st1.sig, st3.sig)


# ----------------------------------------------------------------------------- E, F, H: slip rules
@pytest.mark.parametrize("variant", [{"model": "E", "prestress_std": 0.3},
                                     {"model": "H", "prestress_std": 0.3}])
def test_fixed_thresholds_never_change(variant):
    model = build_model(small_case(variant), MPI.COMM_SELF)
    st = model.new_state(realization_rng(0, 0))
    theta0 = st.theta.copy()
    assert np.all(st.tauc == 0.925)
    drv = AQSDriver(model, st, 0.0, 1e-3, 500, event_log=True)
    drv.run()
    assert drv.num_events > 200
    assert np.all(st.tauc == 0.925)
    slipped = np.unique(drv.event_table()[0][:, 0])
    if variant["model"] == "E":  # angles are still renewed
        assert (st.theta[slipped] != theta0[slipped]).any(axis=1).all()


def test_model_F_two_systems_at_0_and_90_deg_with_one_shared_threshold():
    case = small_case({"model": "F"}, slip={"weibull_lambda": 0.38, "weibull_k": 1.17})
    model = build_model(case, MPI.COMM_SELF)
    st = model.new_state(realization_rng(0, 0))
    tauc0 = st.tauc.copy()
    drv = AQSDriver(model, st, 0.0, 1e-3, 500, event_log=True)
    drv.run()
    assert st.theta.shape == (64, 2)
    assert np.all(st.theta == [0.0, np.pi / 2])
    assert np.all(st.sin2 == 0.0) and np.all(st.cos2 == [1.0, -1.0])
    assert np.all(st.tauc[:, 0] == st.tauc[:, 1])
    ei, theta, dg, tau, den, diss = dissipation(drv)
    assert set(np.unique(theta)) <= {0.0, np.pi / 2}
    renewed = np.unique(ei[:, 0])
    assert (st.tauc[renewed, 0] != tauc0[renewed, 0]).mean() > 0.95  # renewed thresholds
    # fixed amplitude, capped at gamma_max (eq. 6): never a negative dissipation
    full = dg == 0.022
    np.testing.assert_allclose(dg[~full], -2 * tau[~full] / den[~full], rtol=1e-12)
    assert full.mean() > 0.5 and diss.min() >= -1e-12
    # stress-free start with an uncapped amplitude would dissipate negatively
    uncapped = small_case({"model": "F", "d_gamma_cap": False},
                          slip={"weibull_lambda": 0.38, "weibull_k": 1.17})
    _, d2 = run(build_model(uncapped, MPI.COMM_SELF))
    assert np.all(d2.event_table()[1][:, 1] == 0.022)
    assert dissipation(d2)[-1].min() < 0


# ----------------------------------------------------------------------------- section 6 extras
def test_default_variant_vector_reproduces_the_original_draws():
    nc, N = 50, 12
    a = [np.zeros((nc, N)) for _ in range(4)]
    b = [np.zeros((nc, N)) for _ in range(4)]
    renew_all(np.random.default_rng(4), *a, 0, 2.05, 2.18)
    renew_all(np.random.default_rng(4), *b, 0, 2.05, 2.18, variant_vector())
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    ra, rb = np.random.default_rng(5), np.random.default_rng(5)
    renew_cell(ra, 3, *a, 0, 2.05, 2.18)
    renew_cell(rb, 3, *b, 0, 2.05, 2.18, variant_vector(), 0.05, 0.3)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)


def test_fluctuating_number_of_systems():
    cols, m = n_columns(36)
    assert m == 9 and cols % 4 == 0 and cols > 36
    nc = 20000
    arr = [np.zeros((nc, cols)) for _ in range(3)] + [np.zeros((nc, cols))]
    renew_all(np.random.default_rng(0), *arr, 0, 2.05, 2.18, variant_vector(SYSTEMS_RANDOM, m))
    n = np.isfinite(arr[3]).sum(axis=1)
    assert np.all(n % 4 == 0) and n.min() == 4
    assert abs(n.mean() - 36) < 0.3  # mean N kept: 4 (1 + Poisson(8))
    assert abs(n.var() / (16 * 8) - 1) < 0.05
    # unused columns never activate: runs and keeps every cell's count a multiple of 4
    model = build_model(small_case({"N_fluctuation": True}), MPI.COMM_SELF)
    st, drv = run(model)
    assert model.params.N == cols and drv.num_events > 200
    assert np.all(np.isfinite(st.tauc).sum(axis=1) % 4 == 0)
    assert np.ptp(np.isfinite(st.tauc).sum(axis=1)) >= 8


def test_correlated_renewal_keeps_the_weibull_marginal():
    lam, k, nc, scale = 2.05, 2.18, 20000, 0.05
    arr = [np.zeros((nc, 4)) for _ in range(4)]
    rng = np.random.default_rng(1)
    renew_all(rng, *arr, 0, lam, k)
    old = arr[3][:, 0].copy()
    v = variant_vector(corr_strain=scale)
    dg = scale * -math.log(0.8)  # rho = exp(-dg / scale) = 0.8
    for c in range(nc):
        renew_cell(rng, c, *arr, 0, lam, k, v, dg, 0.0)
    new = arr[3][:, 0].copy()

    def score(t):
        return sp.ndtri(-np.expm1(-(t / lam) ** k))

    assert abs(np.corrcoef(score(old), score(new))[0, 1] - 0.8) < 0.01
    assert stats.kstest(new, "weibull_min", args=(k, 0, lam)).pvalue > 0.01
    for c in range(nc):  # a large slip decorrelates
        renew_cell(rng, c, *arr, 0, lam, k, v, 100 * scale, 0.0)
    assert abs(np.corrcoef(score(new), score(arr[3][:, 0]))[0, 1]) < 0.03


def test_evolving_structure_relaxes_to_the_steady_state_weibull():
    lam_q, k_q, lam_ss, k_ss, e0 = 2.05, 2.18, 1.2, 4.0, 0.1
    v = variant_vector(lambda_ss=lam_ss, k_ss=k_ss, struct_strain=e0)
    nc = 20000
    arr = [np.zeros((nc, 4)) for _ in range(4)]
    rng = np.random.default_rng(2)
    for e, lam, k in ((0.0, lam_q, k_q), (50 * e0, lam_ss, k_ss),
                      (e0, lam_ss + (lam_q - lam_ss) / math.e, k_ss + (k_q - k_ss) / math.e)):
        for c in range(nc):
            renew_cell(rng, c, *arr, 0, lam_q, k_q, v, 0.01, e)
        assert stats.kstest(arr[3].ravel(), "weibull_min", args=(k, 0, lam)).pvalue > 0.01
    # in a run, cells accumulate plastic strain (eacc = sum of their d_gamma)
    model = build_model(small_case({"structure_strain": 0.05, "lambda_ss": 1.2, "k_ss": 4.0}),
                        MPI.COMM_SELF)
    st, drv = run(model)
    ei, _, dg, *_ = dissipation(drv)
    np.testing.assert_allclose(st.eacc, np.bincount(ei[:, 0], dg, model.num_cells), rtol=1e-12)


def test_model_B_sample_to_sample_pressure_spread(tmp_path):
    """Model B (appendix A.8): each sample's <p> is p_mean + p_std z (std(<p>) = 0.22 in the
    atomistic samples); the realization's drivers shift thresholds with it; the summary lists
    each sample's value."""
    from femplast.app.runner import run_case
    from femplast.tensorial.variants import pressure_offset

    case = small_case({"model": "B", "p_std": 0.22}, run={"realizations": 3, "seed": 5},
                      loading={"gamma_max": 0.05, "stationary_from": 0.02},
                      output={"fields": False})
    p = np.array([pressure_offset(case, i) for i in range(400)])
    assert abs(p.mean() - 1.95) < 3 * 0.22 / 20 and abs(p.std() / 0.22 - 1) < 0.1
    s = run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)
    np.testing.assert_allclose(s["pressure_offset"], p[:3], rtol=0, atol=0)
    assert len(set(s["pressure_offset"])) == 3
    # the threshold shift alpha_p (p_off - p) of the driver follows the sample's <p>
    model = build_model(case, MPI.COMM_SELF)
    from femplast.protocols.pipeline import RealizationRun
    from femplast.protocols.stages import stages_from_case

    for i in (0, 2):
        RealizationRun(case, model, i, None, stages_from_case(case), None,
                       progress=lambda *a, **k: None)
        drv = AQSDriver(model, model.new_state(realization_rng(0, 0)), 0.0, 1e-3, 1)
        assert drv._bundles()[0].p_off == p[i] and model.params.alpha_p == 0.2


def test_stress_biased_renewal_sec6_iii():
    """Sec. 6 (iii): a threshold renewed after a slip is tau_c^W (1 - b cos 2(theta - alpha))
    (same draws as without bias: exactly that factor); the initial draw is unbiased; in a run
    the renewed systems aligned with the load are weaker than those against it."""
    from femplast.tensorial.rules import StressBiased, renewal_vector

    nc, N, b, alpha = 400, 8, 0.3, 30.0
    v0 = variant_vector()
    vb = renewal_vector([StressBiased(b, alpha)])
    a = [np.zeros((nc, N)) for _ in range(4)]
    c = [np.zeros((nc, N)) for _ in range(4)]
    renew_all(np.random.default_rng(3), *a, 0, 2.05, 2.18, v0)
    renew_all(np.random.default_rng(3), *c, 0, 2.05, 2.18, vb)
    np.testing.assert_array_equal(a[3], c[3])  # the initial state: no bias
    ra, rb = np.random.default_rng(4), np.random.default_rng(4)
    for cell in range(nc):
        renew_cell(ra, cell, *a, 0, 2.05, 2.18, v0, 0.01, 0.0)
        renew_cell(rb, cell, *c, 0, 2.05, 2.18, vb, 0.01, 0.0)
    np.testing.assert_array_equal(a[0], c[0])  # same angles
    factor = 1 - b * np.cos(2 * (a[0] - math.radians(alpha)))
    np.testing.assert_allclose(c[3], a[3] * factor, rtol=1e-14)
    # a run along alpha_ext = 0: renewed systems aligned with the load are weaker, so the
    # stationary stress is lower than without the bias (same seeds)
    flow = []
    for bias in (0.0, 0.3):
        model = build_model(small_case({"renewal_bias": bias} if bias else {}), MPI.COMM_SELF)
        _, drv = run(model)
        rec = drv.avalanche_table()
        flow.append(rec[rec[:, 0] * 1e-3 > 0.3, 7].mean())  # stress_after (d, s, p): s = xy
    print(f"stationary stress: unbiased {flow[0]:.3f}, bias 0.3 {flow[1]:.3f}")
    assert flow[1] < 0.85 * flow[0]


# ----------------------------------------------------------------------------- evolving moduli
def test_update_moduli_equals_a_fresh_build(any_box, rng):
    from femplast.fe.elasticity import PeriodicElasticity, macro_strain
    from femplast.redistribution.backends import DirectRedistribution

    nc = any_box.num_cells
    red = DirectRedistribution(any_box, 13.2, 59.0)
    G, B = rng.uniform(5.0, 20.0, nc), rng.uniform(40.0, 70.0, nc)
    red.el.update_moduli(G, 59.0)
    red.update_moduli(G, B)  # twice: B too, and a factorization that was already updated
    fresh = DirectRedistribution(any_box, G, B, elasticity=PeriodicElasticity(any_box, G, B))
    eps, E = rng.normal(size=(nc, 3)), macro_strain(0.03, 0.4)
    a, b = red.el.stress(eps, E), fresh.el.stress(eps, E)
    assert np.abs(a - b).max() <= 1e-12 * np.abs(b).max()
    np.testing.assert_allclose(red.selfq, fresh.selfq, rtol=1e-12, atol=0)
    np.testing.assert_allclose(red.load_response(0.4), fresh.load_response(0.4), rtol=0,
                               atol=1e-12 * 59.0)
    assert red.el.residual(eps, E) < 1e-12
    # the moduli without the FE problem (patch tests) are the factorized problem's, exactly,
    # after the update as at construction (uniform numbers broadcast per cell)
    for r in (red, fresh, DirectRedistribution(any_box, 13.2, 59.0)):
        G_el, B_el = r.el.gather(r.el.G), r.el.gather(r.el.B)
        G_c, B_c = r.cell_moduli()
        assert np.array_equal(G_c, G_el) and np.array_equal(B_c, B_el)
    assert np.array_equal(red.cell_moduli()[0], G)


EVOLVING = {"structure_strain": 0.2, "lambda_ss": 1.0, "k_ss": 2.18, "G_ss": 8.0}


def test_evolving_moduli_follow_the_accumulated_plastic_strain():
    from femplast.protocols.records import steps_table
    from femplast.redistribution.backends import DirectRedistribution
    from femplast.tensorial.aqs import load_speed

    case = small_case(EVOLVING, n=6, slip={"N": 4, "weibull_lambda": 1.0},
                      redistribution={"backend": "direct"})
    model = build_model(case, MPI.COMM_SELF)
    assert model.backend == "direct" and model.evolving_moduli
    st, drv = run(model, gamma=0.2)
    g = drv.gamma_ext
    assert g == 0.2 and drv.num_events > 50 and drv.moduli_updates > 20
    # moduli: exactly the law of the accumulated plastic strain, untouched cells keep G
    G = model.el.gather(model.el.G)
    e = st.eacc
    slipped = e > 0
    assert 10 < slipped.sum() < model.num_cells
    np.testing.assert_array_equal(G[slipped], 8.0 + (13.2 - 8.0) * np.exp(-e[slipped] / 0.2))
    assert np.all(G[~slipped] == 13.2) and np.all((G[slipped] > 8.0) & (G[slipped] < 13.2))
    # the tracked stress is the FE stress of the final moduli field (fresh solve)
    tracked, fe = model.total_stress(st, g, 0.0), model.fe_stress(st, g, 0.0)
    assert np.abs(tracked - fe).max() <= 1e-10 * np.abs(fe).max()
    assert model.distance_to_threshold(st, g, 0.0).min() >= 0  # stable
    # load response, load speeds and self-responses of a freshly built model with these moduli
    fresh = DirectRedistribution(model.box, G, 59.0)
    R = fresh.load_response(0.0)
    np.testing.assert_allclose(drv.R, R, rtol=0, atol=1e-12 * np.abs(R).max())
    np.testing.assert_allclose(drv.rn, load_speed(R, 0.0), rtol=1e-12)
    np.testing.assert_allclose(model.redist.selfq, fresh.selfq, rtol=1e-10)
    # no negative dissipation with the self-responses at the time of each slip (eq. 6)
    ei, theta, dg, tau, den, diss = dissipation(drv)
    assert np.all(den < 0) and diss.min() >= -1e-12
    np.testing.assert_allclose(e, np.bincount(ei[:, 0], dg, model.num_cells), rtol=1e-12)
    # per-increment means with the load response in effect at each increment: the mean just
    # before each avalanche is the last increment's plus one load increment
    rec = drv.avalanche_table()
    Rk = drv.load_mean_per_increment()
    _, stress, _, _ = steps_table(rec, drv.k_end, drv.dgamma, Rk, model.weights @ st.sigma0.T,
                                  np.zeros(3))
    from femplast.redistribution.backends import from_dsp, to_dsp

    k = rec[1:, 0].astype(int)
    prev = to_dsp(stress[k - 1]).T + drv.dgamma * Rk[k - 1]
    np.testing.assert_allclose(from_dsp(prev.T), from_dsp(rec[1:, 3:6].T), atol=1e-12)
    np.testing.assert_allclose(stress[-1], model.weights @ tracked, atol=1e-12)
    assert np.ptp(Rk[:, 1]) > 0.1  # the mean load response really changed
    # no instability missed by the lazy check after moduli changes: the same events as a run
    # that rescans every cell after every step (tolerance 1e300: no margin is ever trusted)
    st2 = model.new_state(realization_rng(0, 0))  # back to the quench moduli
    assert np.all(model.el.gather(model.el.G) == 13.2)
    ref = AQSDriver(model, st2, 0.0, 1e-3, 200, event_log=True)
    ref.tol = 1e300
    ref.run()
    ei2, ef2 = ref.event_table()
    np.testing.assert_array_equal(ei2, ei)
    np.testing.assert_array_equal(ef2, np.asarray(drv.event_table()[1]))
    np.testing.assert_array_equal(model.el.gather(model.el.G), G)  # the same trajectory


# ----------------------------------------------------------------------------- shipped cases
CASES = sorted((ROOT / "cases").glob("variant_*.yaml"))


def test_one_case_per_variant():
    assert [p.stem[-1] for p in CASES] == sorted("ABCDEFGHI")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_variant_case_runs_to_half_strain_with_the_core_invariants(path):
    case = load_case(path, ["mesh.n=8", "mesh.L=52.8", "loading.gamma_max=0.5",
                            "loading.dgamma_ext=1.0e-3", "loading.stationary_from=0.3",
                            "output.snapshots=[]"])
    model = build_model(case, MPI.COMM_SELF, 0)
    st, drv = run(model)
    g = drv.gamma_ext
    assert g == 0.5 and drv.num_events > 100
    ei, theta, dg, tau, den, diss = dissipation(drv)
    assert np.all(den < 0) and np.all(dg >= 0) and (dg > 0).mean() > 0.99
    assert diss.min() >= -1e-12  # no negative dissipation (appendix A.7)
    assert model.distance_to_threshold(st, g, 0.0).min() >= 0  # stable after the avalanche
    tracked, fe = model.total_stress(st, g, 0.0), model.fe_stress(st, g, 0.0)
    w = model.weights
    if "(" in model.backend:  # shuffled / mean-field: equilibrium of the box average only
        np.testing.assert_allclose(w @ tracked, w @ fe, atol=1e-10)
        assert np.abs(tracked - fe).max() > 0.1
    else:  # FE equilibrium of the tracked stress with the plastic strain (and pre-stress)
        assert np.abs(tracked - fe).max() <= 1e-10 * np.abs(fe).max()
    assert 0.1 < (w @ tracked)[2] < 3.0


def test_runner_builds_one_model_per_realization_for_moduli_fields(tmp_path):
    from femplast.app.runner import run_case

    case = small_case({"model": "A"}, n=4, loading={"gamma_max": 0.05,
                                                    "stationary_from": 0.01},
                      run={"realizations": 2}, output={"fields": False})
    s = run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True)
    assert s["backend"] == "dense" and s["total_slip_events"] > 0
    import h5py

    sig = [h5py.File(tmp_path / "out" / "realizations" / f"r000{i}.h5")["state/stress"][()]
           for i in range(2)]
    assert not np.allclose(sig[0], sig[1])


# ----------------------------------------------------------------------------- validation
BAD = [
    ({"model": "Z"}, {}, "variant.model", "'C', 'A'"),
    ({"kernel": "random"}, {}, "variant.kernel", "'shuffled'"),
    ({"model": "D"}, {"redistribution": {"backend": "direct"}}, "redistribution.backend",
     "propagator or dense"),
    ({"model": "A"}, {"redistribution": {"backend": "propagator"}}, "redistribution.backend",
     "dense or direct"),
    ({"model": "F"}, {"slip": {"N": 8}}, "slip.N", "two_fixed"),
    ({"model": "F", "N_fluctuation": True}, {}, "variant.N_fluctuation", "false"),
    ({"model": "E", "renewal_correlation_strain": 0.1}, {}, "variant.renewal_correlation_strain",
     "thresholds: fixed"),
    ({"structure_strain": 0.1, "k_ss": 3.0}, {}, "variant.lambda_ss", "steady-state"),
    ({"model": "B"}, {"model": "scalar"}, "variant.model", "C (no variant)"),
    ({"G_shape": 0}, {}, "variant.G_shape", "> 0"),
    ({"model": "F", "renewal_bias": 0.2}, {}, "variant.renewal_bias", "two_fixed"),
    ({"renewal_bias": 1.0}, {}, "variant.renewal_bias", "in (-1, 1)"),
    ({"p_std": 0.2}, {}, "variant.p_std", "alpha_p > 0"),
    ({"G_ss": 8.0}, {}, "variant.G_ss", "structure_strain > 0"),
    (EVOLVING, {"redistribution": {"backend": "dense"}}, "redistribution.backend",
     "direct (or auto)"),
    (EVOLVING, {"stages": [{"name": "a", "kind": "load", "gamma": 0.1}]}, "variant.G_ss",
     "plain runs"),
    ({**EVOLVING, "G_ss": 0}, {}, "variant.G_ss", "> 0"),
]


@pytest.mark.parametrize(("variant", "other", "key", "allowed"), BAD)
def test_bad_variant_is_rejected_with_key_value_and_allowed(variant, other, key, allowed):
    with pytest.raises(FemplastInputError) as exc:
        case_from_dict({"variant": variant, **other})
    assert exc.value.key == key
    assert allowed in str(exc.value)
