"""AQS dynamics of the tensorial model (femplast.tensorial): physics invariants and exactness."""

import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.fe.elasticity import apply_stiffness, gamma_max, macro_strain
from femplast.fe.mesh import structured_box
from femplast.redistribution.backends import (
    UNIT_C,
    UNIT_S,
    fft_unit_responses,
    symmetrize_kernel,
    to_dsp,
)
from femplast.redistribution.kernels import propagator_add, table_add, unfold_kernel
from femplast.streams import realization_rng
from femplast.tensorial.aqs import (
    AQSDriver,
    Lazy,
    apply_slips,
    drift_pass,
    flagged_cells,
)
from femplast.tensorial.model import TensorialModel

G0, B0 = 13.2, 59.0


def small_model(n=8, backend="propagator", kind="quad", N=8, **kw):
    box = structured_box(n, 6.6 * n, kind, MPI.COMM_SELF)
    return TensorialModel.build(box, G=G0, B=B0, N=N, backend=backend, **kw)


def run(model, seed=0, gamma=0.4, alpha=0.0, event_log=True, **kw):
    st = model.new_state(realization_rng(seed, 0))
    drv = AQSDriver(model, st, alpha, 1e-4, int(round(gamma / 1e-4)), event_log=event_log, **kw)
    drv.run()
    return st, drv


@pytest.fixture(scope="module")
def quad_model():
    return small_model()


def test_event_log_thresholds_and_round_stresses(quad_model):
    """The event log records each slip's threshold (an athermal slip: tau >= tau_c), its
    amplitude and relaxation round, and the box-average stress at the start of the round:
    the first round starts at the avalanche's stress_before, each later round at the stress
    the previous round left (its total equals the box average of the slips' stress changes,
    stepping down to stress_after)."""
    from femplast.protocols.records import relaxation_rounds
    from femplast.redistribution.backends import from_dsp

    _, drv = run(quad_model, gamma=0.3)
    ei, ef = drv.event_table()
    rec = drv.avalanche_table()
    assert ef.shape[1] == 8 and len(ei) > 100
    assert np.all(ef[:, 4] > 0) and np.all(ef[:, 2] >= ef[:, 4] - 1e-9)
    rounds = relaxation_rounds(ei[:, 1], ei[:, 2], from_dsp(ef[:, 5:8].T))
    assert len(rounds["step"]) == rec[:, 2].sum()  # every round of every avalanche
    first = rounds["relaxation_step"] == 0
    np.testing.assert_array_equal(rounds["step"][first], rec[:, 0])
    np.testing.assert_allclose(rounds["stress_before"][first], from_dsp(rec[:, 3:6].T),
                               atol=1e-12)
    # at fixed strain <Sigma_xy> = G (gamma_ext - 2 <eps_pl_xy>): a round changes it by
    # -G <cos 2theta d_gamma> over its slips; the last round ends at stress_after
    starts = np.flatnonzero(np.r_[True, (ei[1:, 1] != ei[:-1, 1]) | (ei[1:, 2] != ei[:-1, 2])])
    change = -G0 * np.add.reduceat(np.cos(2 * ef[:, 0]) * ef[:, 1], starts) / drv.model.num_cells
    sxy = rounds["stress_before"][:, 2]
    end = np.r_[sxy[1:], 0.0]
    last = np.r_[rounds["step"][1:] != rounds["step"][:-1], True]
    end[last] = from_dsp(rec[:, 6:9].T)[:, 2]
    np.testing.assert_allclose(end - sxy, change, atol=1e-12)


def test_slip_amplitudes_respect_dissipation_bound(quad_model):
    """Appendix A.7 eq. 13-15: R = (Sigma + dSigma)/2 has R:M >= 0, i.e. tau + dg den / 2 >= 0,
    with den = (C:(S-I):M):M < 0 computed from the numerical Eshelby tensor."""
    _, drv = run(quad_model, gamma=0.5)
    ei, ef = drv.event_table()
    theta, dg, tau, den = ef[:, :4].T
    assert len(ei) > 200
    assert np.all(den < 0)
    assert np.all(dg > 0)
    assert np.all(tau + 0.5 * dg * den >= 0)
    # den is the FE self-response: equal to the Eshelby-tensor form of eq. 6
    S = quad_model.el.eshelby_tensor(0)
    gm = gamma_max(tau, theta, G0, B0, S)
    np.testing.assert_allclose(gm, -2 * tau / den, rtol=1e-9)


def test_fe_energy_release_is_the_dissipation_and_never_negative():
    """Replay a run's events with FE solves on P1 triangles (cell-wise constant strain, so the
    elastic energy is exactly 1/2 sum A (eps - eps_pl):C:(eps - eps_pl)): each event releases
    A dg (tau' + dg den / 2), which is >= 0 for events alone in their relaxation step."""
    model = small_model(6, backend="dense", kind="tri", N=4)
    _, drv = run(model, gamma=0.3)
    ei, ef = drv.event_table()
    el = model.el
    area = el.gather(el.area)
    eps = np.zeros((model.num_cells, 3))

    def energy(eps_pl, E):
        e = el.gather(el.strain(eps_pl[el.cells], E)) - eps_pl
        return 0.5 * np.sum(area * np.sum(apply_stiffness(G0, B0, e) * e * [1, 1, 2], axis=1))

    key = ei[:, 1] * 10**6 + ei[:, 2]
    alone = np.bincount(np.unique(key, return_inverse=True)[1]) == 1
    alone = alone[np.unique(key, return_inverse=True)[1]]
    checked = 0
    for (c, k, _), (th, dg, _, den) in zip(ei[:60], ef[:60, :4], strict=True):
        E = macro_strain(k * 1e-4)
        sig = el.gather(el.stress(eps[el.cells], E))
        tau_now = np.sum(sig[c] * [1, 1, 2] * [-np.sin(2 * th) / 2, np.sin(2 * th) / 2,
                                               np.cos(2 * th) / 2])
        u0 = energy(eps, E)
        eps[c] += dg * np.array([-np.sin(2 * th) / 2, np.sin(2 * th) / 2, np.cos(2 * th) / 2])
        release = u0 - energy(eps, E)
        expected = area[c] * dg * (tau_now + 0.5 * dg * den)
        np.testing.assert_allclose(release, expected, rtol=1e-8, atol=1e-12)
        if alone[checked]:
            assert release >= 0
        checked += 1
    assert alone[:checked].sum() > 20


@pytest.mark.parametrize("backend", ["propagator", "dense", "direct"])
def test_equilibrium_and_mean_stress_after_avalanches(backend):
    """The tracked stress equals a fresh FE solve of the plastic strain (equilibrium: FE
    residual at round-off), and for uniform moduli <Sigma> = C:(E - <eps_pl>)."""
    model = small_model(8, backend=backend)
    st, drv = run(model, gamma=0.3, event_log=False)
    g = drv.gamma_ext
    tracked = model.total_stress(st, g, 0.0)
    fe = model.fe_stress(st, g, 0.0)
    assert np.abs(tracked - fe).max() <= 1e-10 * np.abs(fe).max()
    assert model.el.residual(st.eps_pl[model.el.cells], macro_strain(g)) < 1e-10
    mean = tracked.mean(axis=0)
    expected = apply_stiffness(G0, B0, macro_strain(g) - st.eps_pl.mean(axis=0))
    np.testing.assert_allclose(mean, expected, atol=1e-12)
    assert drv.num_events > 100
    # the avalanche records' running averages equal fresh averages of the fields
    rec = drv.avalanche_table()
    k_last = rec[-1, 0]
    fresh = st.sig.mean(axis=1) + k_last * 1e-4 * drv.R.mean(axis=1)
    np.testing.assert_allclose(rec[-1, 6:9], fresh, atol=1e-12)
    np.testing.assert_allclose(rec[-1, 9:12], st.eps_pl.mean(axis=0), atol=1e-14)


def test_same_seed_same_trajectory(quad_model):
    st1, d1 = run(quad_model, seed=3)
    st2, d2 = run(quad_model, seed=3)
    st3, d3 = run(quad_model, seed=4)
    assert np.array_equal(d1.event_table()[1], d2.event_table()[1])
    assert np.array_equal(st1.sig, st2.sig) and np.array_equal(st1.tauc, st2.tauc)
    assert np.array_equal(d1.avalanche_table(), d2.avalanche_table())
    assert not np.array_equal(st1.tauc, st3.tauc)


def test_jumps_equal_fixed_increments(quad_model):
    """Crossing elastic stretches in one jump gives exactly the states of fixed increments."""
    st1, d1 = run(quad_model, seed=5, gamma=0.2)
    st2 = quad_model.new_state(realization_rng(5, 0))
    d2 = AQSDriver(quad_model, st2, 0.0, 1e-4, 2000, event_log=True)
    for k in range(1, 2001):  # a stop at every increment forbids jumps
        d2.advance(k_stop=k)
    quad_model.refresh(st2)  # the pressure is brought up to date by run(), not advance()
    assert np.array_equal(d1.event_table()[1], d2.event_table()[1])
    assert np.array_equal(st1.sig, st2.sig)


def test_stops_do_not_change_the_trajectory(quad_model):
    st1, d1 = run(quad_model, seed=6)
    st2 = quad_model.new_state(realization_rng(6, 0))
    d2 = AQSDriver(quad_model, st2, 0.0, 1e-4, 4000, event_log=True)
    seen = []
    d2.run(stops=[500, 1234, 4000], on_stop=seen.append, budget=37)
    assert seen == [500, 1234, 4000]
    assert np.array_equal(d1.event_table()[1], d2.event_table()[1])
    # budgets interrupt avalanches: their records must still be whole
    assert np.array_equal(d1.avalanche_table(), d2.avalanche_table())
    assert np.array_equal(st1.sig, st2.sig)


def test_reverse_loading_orientation(quad_model):
    """alpha_ext = 90 deg loads in reverse: the mean shear stress becomes negative."""
    st, drv = run(quad_model, gamma=0.3, alpha=np.pi / 2, event_log=False)
    assert quad_model.total_stress(st, drv.gamma_ext, np.pi / 2)[:, 2].mean() < -0.2


def test_prescribed_events_same_stress_with_every_backend():
    """2000 prescribed slips (cells, angles, amplitudes): propagator (compiled shifted add and
    numpy shifted add), FFT convolution, dense operator and direct FE solve agree to 1e-9."""
    n = 12
    rng = np.random.default_rng(1)
    cells = rng.integers(0, n * n, 2000)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, 2000)
    dg = rng.uniform(0, 0.05, 2000)
    out = {}
    for be in ("propagator", "dense", "direct"):
        m = small_model(n, backend=be, N=4)
        st = m.new_state(realization_rng(0, 0))
        for i in range(0, 2000, 50):  # direct: one solve per batch of simultaneous slips
            apply_slips(m, st, cells[i:i + 50], theta[i:i + 50], dg[i:i + 50])
        out[be] = st.sig.copy()
        if be == "propagator":
            ref = np.zeros_like(st.sig)
            s2, c2 = np.sin(2 * theta), np.cos(2 * theta)
            m.redist.apply_shifted(ref, cells, dg * s2, dg * c2)
            out["numpy"] = ref
            fft = np.zeros_like(st.sig)
            m.redist.apply(fft, cells, dg * s2, dg * c2)
            out["fft"] = fft
    scale = np.abs(out["direct"]).max()
    for k in ("propagator", "dense", "numpy", "fft"):
        assert np.abs(out[k] - out["direct"]).max() <= 1e-9 * scale, k
    assert np.array_equal(out["propagator"], out["numpy"])  # compiled == numpy, bit for bit


@pytest.mark.parametrize("mesh,blocked", [("quad", False), ("gmsh", False), ("quad", True),
                                          ("gmsh", True)])
def test_prescribed_events_heterogeneous_moduli_dense_equals_direct(mesh, blocked, monkeypatch):
    """Variant A's per-cell Weibull shear moduli (issue 16): 2,000 prescribed slips, one per
    relaxation step, through the dense Green operator's compiled column add give the stresses
    of the direct FE solve of the accumulated eigenstrain to 1e-8 (structured quads and a
    periodic gmsh mesh); the moduli matter (the uniform-moduli stresses differ by > 10 %).
    ``blocked``: the operator built as large boxes build it (multi-right-hand-side solves,
    ``Redistribution.BLOCKED_FROM``; the n = 128 check is benchmarks/heterogeneous.py's)."""
    from femplast.fe.mesh import gmsh_box
    from femplast.redistribution.backends import Redistribution
    from femplast.tensorial.variants import weibull_moduli

    if blocked:
        monkeypatch.setattr(Redistribution, "BLOCKED_FROM", 0)
        monkeypatch.setattr(Redistribution, "BLOCK", 48)  # several blocks, a ragged last one
    box = (structured_box(16, 6.6 * 16, "quad", MPI.COMM_SELF) if mesh == "quad"
           else gmsh_box(None, 6.6 * 12, 9.0, comm=MPI.COMM_SELF))
    nc = box.num_cells
    G = weibull_moduli(nc, 18.4, 1.3, np.random.default_rng(7))
    rng = np.random.default_rng(2)
    cells = rng.integers(0, nc, 2000)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, 2000)
    dg = rng.uniform(0, 0.05, 2000)
    out = {}
    for be, g in (("dense", G), ("direct", G), ("uniform", float(G.mean()))):
        m = TensorialModel.build(box, G=g, B=B0, N=4, backend="direct" if be == "direct"
                                 else "dense")
        assert be == "direct" or m.redist.blocked == blocked
        st = m.new_state(realization_rng(0, 0))
        for i in range(2000):
            apply_slips(m, st, cells[i:i + 1], theta[i:i + 1], dg[i:i + 1])
        out[be] = st.sig.copy()
    scale = np.abs(out["direct"]).max()
    assert np.abs(out["dense"] - out["direct"]).max() <= 1e-8 * scale
    assert np.abs(out["uniform"] - out["direct"]).max() > 0.1 * scale


@pytest.mark.parametrize("n", [6, 15])
def test_folded_shifted_add_is_the_full_kernel_bit_for_bit(n):
    """The compiled add reads the y-folded kernel (odd and even n): every component equals the
    numpy shifted add of the full kernel exactly, and the fused drift test flags exactly the
    cells that the separate drift pass flags."""
    m = small_model(n, N=4)
    red = m.redist
    rng = np.random.default_rng(3)
    cells = rng.integers(0, n * n, 40)
    gs, gc = rng.normal(0, 0.01, 40), rng.normal(0, 0.01, 40)
    full = np.zeros((3, n * n))
    red.apply_shifted(full, cells, gs, gc)
    ref = rng.normal(0, 0.01, (3, n * n))
    drift = np.hypot(full[0] + 0.02 - ref[0], full[1] - 0.01 - ref[1])
    margin = drift * rng.uniform(0.5, 1.5, n * n)  # about half the cells drifted too far
    mm = (margin - 1e-12) ** 2
    sig = np.zeros((3, n * n))
    fused = np.zeros(n * n, np.int8)

    def lazy(flag):
        idle = np.zeros(n * n, np.int64)
        return Lazy(ref, margin, mm, flag, idle, flag.copy(), idle, margin)

    for i, (c, a, b) in enumerate(zip(cells, gs, gc, strict=True)):
        if i == 39:
            propagator_add(sig, red.folded, c, n, a, b, 3, lazy(fused), 0.02, -0.01)
        else:
            propagator_add(sig, red.folded, c, n, a, b, 3)
    assert np.array_equal(sig, full)
    R = np.zeros((3, n * n))
    R[0], R[1] = 0.02, -0.01
    sep = np.zeros(n * n, np.int8)
    drift_pass(1.0, sig, R, lazy(sep), 0.0, 1e-12)
    assert np.array_equal(fused, sep) and 0 < sep.sum() < n * n


@pytest.mark.parametrize("n, ncomp", [(6, 3), (15, 2), (15, 3), (7, 2)])
def test_unfolded_table_is_the_shifted_add_bit_for_bit(n, ncomp):
    """Small grids (the paper's 15 x 15) add the kernel from the unfolded table: the same
    stresses and the same fused drift flags as the folded shifted add, bit for bit."""
    m = small_model(n, N=4)
    red = m.redist
    T = unfold_kernel(red.folded, n, n, ncomp)
    assert T.shape == (n * n, 3 if ncomp == 2 else 5, n * n)
    rng = np.random.default_rng(4)
    cells = rng.integers(0, n * n, 30)
    gs, gc = rng.normal(0, 0.01, 30), rng.normal(0, 0.01, 30)
    ref = rng.normal(0, 0.01, (3, n * n))
    full = np.zeros((3, n * n))
    red.apply_shifted(full, cells, gs, gc)
    drift = np.hypot(full[0] + 0.02 - ref[0], full[1] - 0.01 - ref[1])
    mm = (drift * rng.uniform(0.5, 1.5, n * n)) ** 2  # about half the cells drifted too far
    out = []
    for table in (False, True):
        sig = np.zeros((3, n * n))
        flag = np.zeros(n * n, np.int8)
        idle = np.zeros(n * n, np.int64)
        lz = Lazy(ref, mm, mm, flag, idle, flag.copy(), idle, mm)
        for i, (c, a, b) in enumerate(zip(cells, gs, gc, strict=True)):
            if table:
                table_add(sig, T, c, a, b, ncomp, *((lz, 0.02, -0.01) if i == 29 else ()))
            else:
                propagator_add(sig, red.folded, c, n, a, b, ncomp,
                               *((lz, 0.02, -0.01) if i == 29 else ()))
        out.append((sig, flag))
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    assert 0 < out[0][1].sum() < n * n and np.abs(out[0][0][:ncomp]).min() > 0
    # beyond the budget (an L2 cache) the loop keeps the folded kernel
    assert unfold_kernel(np.zeros((5, 17, 32)), 32, 32, 2) is None


def test_kernel_symmetries_hold_to_round_off_and_are_then_exact():
    n = 16
    r = [to_dsp(x) for x in fft_unit_responses(n, 6.6, G0, B0, (UNIT_S, UNIT_C))]
    K = np.stack(r).reshape(2, 3, n, n)
    S = symmetrize_kernel(K)
    assert 0 < np.abs(S - K).max() <= 1e-13 * np.abs(K).max()
    neg = (-np.arange(n)) % n
    par = np.array([[1, -1, 1], [-1, 1, -1]])
    for a in range(2):
        for b in range(3):
            assert np.array_equal(S[a, b][neg], par[a, b] * S[a, b])
    assert np.array_equal(S[0, 1], S[1, 0])
    bad = K.copy()
    bad[0, 0, 1, 2] += 1e-6 * np.abs(K).max()
    with pytest.raises(RuntimeError, match="mirror"):
        symmetrize_kernel(bad)


@pytest.mark.parametrize("size", [1, 7, 8, 61])
def test_flagged_cells_lists_nonzero_flags_in_order(size):
    rng = np.random.default_rng(size)
    for p in (0.0, 0.05, 0.5, 1.0):
        flag = (rng.random(size) < p).astype(np.int8)
        idx = np.full(size, -1, np.int64)
        k = flagged_cells(flag, idx)
        assert k == int(flag.sum())
        assert np.array_equal(idx[:k], np.flatnonzero(flag))


def test_free_runs_follow_the_same_events_with_every_backend():
    res = {}
    for be in ("propagator", "dense", "direct"):
        st, drv = run(small_model(8, backend=be), seed=2, gamma=0.3)
        res[be] = drv.event_table()
    ref = res["propagator"]
    for be in ("dense", "direct"):
        ei, ef = res[be]
        n = min(len(ei), len(ref[0]))
        same = np.all(ei[:n] == ref[0][:n], axis=1)
        agree = n if same.all() else int(np.argmin(same))
        # no threshold tie within round-off occurs on this run: all events agree
        assert agree == n == len(ref[0]), (be, agree, n)
        np.testing.assert_allclose(ef[:n], ref[1][:n], rtol=1e-9, atol=1e-12)


def test_fft_path_for_large_steps_keeps_the_trajectory():
    """Forcing the FFT convolution for every step (threshold 0) follows the same events."""
    m1 = small_model(16, N=4)
    st1, d1 = run(m1, seed=1, gamma=0.3)
    m2 = small_model(16, N=4)
    m2.redist.fft_threshold = 0
    st2, d2 = run(m2, seed=1, gamma=0.3)
    e1, e2 = d1.event_table()[0], d2.event_table()[0]
    assert np.array_equal(e1, e2)
    assert np.abs(st1.sig[:2] - st2.sig[:2]).max() < 1e-11


def test_initially_unstable_state_relaxes_at_its_own_strain(quad_model):
    """A pre-stress beyond the thresholds avalanches at gamma_ext = 0 before any loading."""
    sigma0 = np.zeros((quad_model.num_cells, 3))
    sigma0[:, 2] = 3.0  # above most Weibull(2.05, 2.18) thresholds
    st = quad_model.new_state(realization_rng(0, 0), sigma0)
    drv = AQSDriver(quad_model, st, 0.0, 1e-4, 100)
    drv.advance(k_stop=0)
    assert drv.k == 0 and drv.num_events > 0
    assert quad_model.distance_to_threshold(st, 0.0, 0.0).min() >= 0
    assert drv.avalanche_table()[0, 0] == 0


@pytest.mark.parametrize(("backend", "kind", "params"), [
    ("propagator", "quad", {}),
    # model B at its optimum (appendix A.8.2): pressure-sensitive thresholds
    ("propagator", "quad", {"alpha_p": 0.2, "p_offset": 1.95, "weibull_lambda": 1.05,
                            "weibull_k": 1.88, "chi": 3.33}),
    ("dense", "quad", {"alpha_p": 0.2, "p_offset": 1.95, "weibull_lambda": 1.05,
                       "weibull_k": 1.88,
                       "chi": 3.33}),
    ("dense", "tri", {}),
    ("direct", "quad", {}),
])
def test_every_stop_is_a_stable_state(backend, kind, params):
    """After each avalanche no slip system is active (checked against a full rescan of every
    system at every 10th increment): the lazy stability check misses nothing."""
    model = small_model(8, backend=backend, kind=kind, N=8, **params)
    st = model.new_state(realization_rng(1, 0))
    drv = AQSDriver(model, st, 0.0, 1e-4, 4000)
    worst = np.inf
    for k in range(10, 4001, 10):
        drv.advance(k_stop=k)
        worst = min(worst, model.distance_to_threshold(st, drv.gamma_ext, 0.0).min())
    assert drv.num_events > 50
    assert worst >= -1e-12


def test_blocked_dense_operator_equals_single_solves_periodic(monkeypatch):
    """The Green operator of a periodic box with per-cell moduli from blocked
    multi-right-hand-side solves (both unit eigenstrains of a block of cells in one solve,
    MUMPS' sparse right-hand sides or, without them, a dense block; strains read in the
    solution's column order) == one FE solve per column, to round-off, with the same
    self-responses and box means."""
    from femplast.redistribution.backends import DenseRedistribution
    from femplast.tensorial.variants import weibull_moduli

    box = structured_box(10, 66.0, "quad", MPI.COMM_SELF)
    G = weibull_moduli(box.num_cells, 18.4, 1.3, np.random.default_rng(3))
    single = DenseRedistribution(box, G, B0)
    assert not single.blocked  # below BLOCKED_FROM: the golden outputs' path
    monkeypatch.setattr(DenseRedistribution, "BLOCKED_FROM", 0)
    monkeypatch.setattr(DenseRedistribution, "BLOCK", 37)
    from femplast.fe import elasticity

    solved = []
    sparse = elasticity._sparse_rhs_solve
    monkeypatch.setattr(elasticity, "_sparse_rhs_solve",
                        lambda ksp, rhs: solved.append("sparse") or sparse(ksp, rhs))
    blocked = DenseRedistribution(box, G, B0, elasticity=single.el)
    assert blocked.blocked and solved == ["sparse"] * 3  # 100 cells in blocks of 37
    monkeypatch.setattr(elasticity, "_sparse_rhs_solve", lambda ksp, rhs: None)
    dense_rhs = DenseRedistribution(box, G, B0, elasticity=single.el)  # the fallback solve
    scale = np.abs(single.dense).max()
    for other in (blocked, dense_rhs):
        assert np.abs(other.dense - single.dense).max() < 1e-13 * scale
        assert np.abs(other.selfq - single.selfq).max() < 1e-13 * np.abs(single.selfq).max()
        assert np.abs(other.kmean - single.kmean).max() < 1e-13 * scale


def test_dense_budget_from_available_memory(monkeypatch, caplog):
    """redistribution.dense_memory_mb: null takes DENSE_MEMORY_FRACTION of the available
    memory: auto takes the dense operator for per-cell moduli when it fits, the direct solve
    otherwise (and says why); an explicit dense backend beyond the budget is refused."""
    import logging

    from femplast.errors import FemplastInputError
    from femplast.redistribution import backends as be
    from femplast.tensorial.variants import weibull_moduli

    box = structured_box(6, 39.6, "quad", MPI.COMM_SELF)
    G = weibull_moduli(box.num_cells, 18.4, 1.3, np.random.default_rng(3))
    need = be.DenseRedistribution.memory_bytes(box.num_cells)  # 62 KiB
    monkeypatch.setattr(be, "available_memory_bytes", lambda: 10 * 2**30)
    mb, why = be.dense_budget_mb(None)
    assert mb == pytest.approx(be.DENSE_MEMORY_FRACTION * 10 * 1024) and "10.0 GiB" in why
    assert be.dense_budget_mb(5.0) == (5.0, "redistribution.dense_memory_mb = 5 MiB")
    with caplog.at_level(logging.INFO, logger="femplast"):
        assert be.make_redistribution(box, G, B0).kind == "dense"
    monkeypatch.setattr(be, "available_memory_bytes", lambda: int(need))  # 70 % < need
    with caplog.at_level(logging.INFO, logger="femplast"):
        assert be.make_redistribution(box, G, B0).kind == "direct"
    assert "available now" in caplog.text and "needs 0 MiB" in caplog.text
    with pytest.raises(FemplastInputError, match="dense_memory_mb"):
        be.make_redistribution(box, G, B0, backend="dense")
    monkeypatch.setattr(be, "available_memory_bytes", lambda: None)  # not Linux
    assert be.dense_budget_mb(None)[0] == 1024.0


def test_dense_budget_is_shared_by_the_ranks_on_a_machine(monkeypatch):
    """Each rank of run.parallel: realizations builds its own operator: the default budget
    is the available memory's share divided by the launcher's ranks on this machine."""
    from femplast.redistribution import backends as be

    monkeypatch.setattr(be, "available_memory_bytes", lambda: 10 * 2**30)
    monkeypatch.setenv("MPI_LOCALNRANKS", "4")
    mb, why = be.dense_budget_mb(None)
    assert mb == pytest.approx(be.DENSE_MEMORY_FRACTION * 10 * 1024 / 4)
    assert "/ 4 ranks on this machine" in why
    monkeypatch.delenv("MPI_LOCALNRANKS")
    monkeypatch.delenv("OMPI_COMM_WORLD_LOCAL_SIZE", raising=False)
    assert be.ranks_on_node() == MPI.COMM_WORLD.size

def _first_unstable_increment_reference(c, k0, kend, sig, R, sin2, cos2, tauc, dgam, alpha_p,
                                        p_off):
    """The load search's per-cell estimate as one plain pass with a branch per system."""
    sh0 = 0.0 if alpha_p == 0.0 else alpha_p * (p_off - sig[2, c])
    kc = kend + 2
    for n in range(sin2.shape[1]):
        a = tauc[c, n] + sh0 - (sin2[c, n] * sig[0, c] + cos2[c, n] * sig[1, c])
        r = sin2[c, n] * R[0, c] + cos2[c, n] * R[1, c] + alpha_p * R[2, c]
        if r > 0.0:
            g = a / r / dgam
            if g < kc:
                kc = min(kc, max(int(np.floor(g)) + 1, k0 + 1))
    return kc


@pytest.mark.parametrize("alpha_p", [0.0, 0.3])
def test_first_unstable_increment_equals_the_plain_pass(alpha_p):
    """The branch-free minimum of the quotients gives the plain pass's increment, cell for
    cell, with unused columns (tau_c = inf), cells never unstable and cells already past k0."""
    from femplast.tensorial.aqs import Control, Systems, _first_unstable_increment

    rng = np.random.default_rng(4)
    cells, N, dgam = 400, 38, 1e-4
    th = rng.uniform(-np.pi / 2, np.pi / 2, (cells, N))
    sin2, cos2 = np.sin(2 * th), np.cos(2 * th)
    tauc = rng.weibull(2.0, (cells, N)) * rng.choice([1e-3, 1.0], (cells, 1))
    tauc[::7, -3:] = np.inf
    sig, R = rng.normal(0, 0.5, (3, cells)), rng.normal(0, 10.0, (3, cells))
    sig[:, ::11] *= 100.0
    sy = Systems(th, sin2, cos2, tauc)
    for k0, kend in ((0, 20000), (30, 40), (500, 20000)):
        ctl = Control(dgam, kend, -1, 1, alpha_p, 0.1, 1e-12, False)
        got = [_first_unstable_increment(c, k0, kend, sig, R, sy, ctl) for c in range(cells)]
        want = [_first_unstable_increment_reference(c, k0, kend, sig, R, sin2, cos2, tauc,
                                                    dgam, alpha_p, 0.1) for c in range(cells)]
        assert got == want
        assert kend + 2 in want and k0 + 1 in want
        assert len(set(want)) > (20 if kend - k0 > 1000 else 1)
