"""KMC preparation and quench (femplast.tensorial.kmc): rates, exact selection, stationarity,
quench."""

import numpy as np
import pytest
from mpi4py import MPI
from scipy import stats

import femplast  # noqa: F401
from femplast.fe.mesh import structured_box
from femplast.streams import realization_rng
from femplast.tensorial.aqs import AQSDriver, any_active_at
from femplast.tensorial.kmc import KMC, fen_build, fen_find, quench, write_quench
from femplast.tensorial.model import TensorialModel

L_CELL = 6.6


def small_model(n=8, N=16):
    box = structured_box(n, n * L_CELL, "quad", MPI.COMM_SELF)
    return TensorialModel.build(box, N=N, backend="propagator")


def test_fenwick_search_matches_cumulative_sums():
    rng = np.random.default_rng(0)
    for n in (1, 2, 5, 16, 37):
        U = rng.random(n)
        tree = np.zeros(n + 1)
        fen_build(U, tree)
        cs = np.cumsum(U)
        for x in rng.random(50) * cs[-1]:
            c, res = fen_find(tree, x)
            assert c == np.searchsorted(cs, x, side="right")
            assert res == pytest.approx(x - (cs[c - 1] if c else 0.0), abs=1e-12)


def test_rates_and_selection_frequencies_chi_square():
    m = small_model(4, 8)
    st = m.new_state(realization_rng(7, 0))
    drv = AQSDriver(m, st, 0.0, 1.0, 1)
    T = 0.5
    kmc = KMC(drv, T, Va=1.0)
    for _ in range(40):  # a stressed, non-trivial liquid state
        kmc.step()
    # rates are exp(-dtau_c Va / kB T) of every system (eq. 11)
    m.refresh(st)
    tot = st.sig
    dtau = st.tauc - (st.sin2 * tot[0][:, None] + st.cos2 * tot[1][:, None])
    rates = kmc.rates()
    np.testing.assert_allclose(rates, np.exp(-dtau / T), rtol=1e-12)
    assert (dtau > -1e-9).all()  # stable after each avalanche: rates <= 1
    # the bounds dominate the true rate sums (thinning is exact only then)
    assert (kmc.U >= rates.sum(axis=1) * (1 - 1e-12)).all()
    p = (rates / rates.sum()).ravel()
    n = 40000
    counts = np.zeros(p.size)
    tries = 0
    for _ in range(n):
        c, s, t = kmc.pick()
        counts[c * rates.shape[1] + s] += 1
        tries += t
    exp = n * p
    big = exp >= 5  # merge rare systems into one bin
    obs_b = np.append(counts[big], counts[~big].sum())
    exp_b = np.append(exp[big], exp[~big].sum())
    chi2, pval = stats.chisquare(obs_b, exp_b)
    print(f"\nKMC selection: chi2 = {chi2:.1f} over {len(obs_b)} bins, p = {pval:.3f}, "
          f"mean tries {tries / n:.3f}")
    assert pval > 1e-3
    assert 1.0 <= tries / n <= 4.0  # in [1, F^2], F = 2


def test_high_temperature_thresholds_become_stationary():
    m = small_model(8, 16)
    st = m.new_state(realization_rng(3, 0))
    drv = AQSDriver(m, st, 0.0, 1.0, 1)
    window = 2 * m.num_cells
    kmc = KMC(drv, 1.0, Va=1.0, window=window, tolerance=0.05)
    assert kmc.run(50 * window) == "stationary"
    at = kmc.stationary_at

    def block(start):  # thresholds of all systems pooled over 6 snapshots a window apart
        snaps = []
        for j in range(6):
            kmc.run(start + j * window, until_stationary=False)
            snaps.append(st.tauc.ravel().copy())
        return np.concatenate(snaps)

    tc_a = block(at)
    tc_b = block(at + 12 * window)
    w = np.array(kmc.windows)
    late = w[w[:, 0] > at]
    rel = np.ptp(late[:, 1]) / late[:, 1].mean()
    q = [0.1, 0.5, 0.9]
    qa, qb = np.quantile(tc_a, q), np.quantile(tc_b, q)
    init = stats.weibull_min(2.18, scale=2.05)
    print(f"\nT = 1: stationary at {at} thermal events ({at / m.num_cells:.0f} per cell); "
          f"later window means of <tau_c> within {rel:.2%}; pooled quantiles {qa.round(3)} -> "
          f"{qb.round(3)} (initial Weibull {init.ppf(q).round(3)}); stats {kmc.stats}")
    assert at < 40 * window
    assert rel < 0.04
    np.testing.assert_allclose(qa, qb, rtol=0.05)


def test_quench_temperature_controls_stress_and_stability():
    m = small_model(8, 16)
    out = {}
    for T in (0.1, 0.3, 1.0):
        res = []
        for r in range(3):
            st = m.new_state(realization_rng(11, r))
            drv = AQSDriver(m, st, 0.0, 1.0, 1)
            kmc = KMC(drv, T, 1.0, window=2 * m.num_cells, tolerance=0.05)
            kmc.run(60 * m.num_cells)
            res.append(quench(m, st, drv))
            assert (st.eps_pl == 0).all()
            np.testing.assert_array_equal(st.sig, st.sigma0)
            assert not any_active_at(0.0, st.sig, m.load_response(0.0), st.sin2, st.cos2,
                                     st.tauc, 0.0, 0.0)
        out[T] = {k: np.mean([x[k] for x in res]) for k in res[0]}
    print("\nquench T: mean |stress| / mean min dtau_c / mean tau_c: " + "; ".join(
        f"T={T}: {v['mean_abs_stress']:.4f} / {v['mean_dtau_c_min']:.4f} / "
        f"{v['mean_tau_c']:.4f}" for T, v in out.items()))
    d = [out[T]["mean_dtau_c_min"] for T in (0.1, 0.3, 1.0)]
    s = [out[T]["mean_abs_stress"] for T in (0.1, 0.3, 1.0)]
    assert d[0] > d[1] > d[2]  # lower T: further from threshold (more stable)
    assert s[0] < s[2]  # and less internal stress than the hot liquid


def test_quench_file_is_an_initial_state(tmp_path):
    from femplast.protocols.prepare import load_initial_state
    from femplast.redistribution.backends import from_dsp

    m = small_model(4, 8)
    st = m.new_state(realization_rng(1, 0))
    drv = AQSDriver(m, st, 0.0, 1.0, 1)
    kmc = KMC(drv, 0.3, 1.0, window=32, tolerance=0.05)
    kmc.run(400)
    quench(m, st, drv)
    write_quench(tmp_path / "q.h5", m, st, dict(temperature=0.3, windows=kmc.windows,
                                                samples=kmc.samples))
    sig, theta, tauc = load_initial_state(tmp_path / "q.h5", m)
    np.testing.assert_array_equal(sig, from_dsp(st.sigma0))
    np.testing.assert_array_equal(theta, st.theta)
    np.testing.assert_array_equal(tauc, st.tauc)


@pytest.mark.parametrize("backend", ["propagator", "direct"])
def test_compiled_events_equal_stepwise_events(backend):
    """KMC.steps (one compiled loop, Python only for what it hands back: external
    redistributions, full record buffers) gives the state of as many KMC.step calls, bit for
    bit."""
    box = structured_box(6, 6 * L_CELL, "quad", MPI.COMM_SELF)
    m = TensorialModel.build(box, N=8, backend=backend)
    out = []
    for compiled in (False, True):
        st = m.new_state(realization_rng(3, 1))
        drv = AQSDriver(m, st, 0.0, 1.0, 1, rec_capacity=16)  # small buffer: flushes
        kmc = KMC(drv, 0.3, Va=1.0)
        n = 60 if backend == "direct" else 400
        if compiled:
            kmc.steps(n)
        else:
            for _ in range(n):
                kmc.step()
        out.append((st.sig.copy(), st.tauc.copy(), st.eps_pl.copy(), drv.avalanche_table(),
                    kmc.events, kmc.tries, kmc.refreshed, drv.num_events))
    a, b = out
    assert a[4] == b[4] and a[7] == b[7] > a[4]  # events, slips (avalanches happened)
    assert a[5:7] == b[5:7]
    for x, y in zip(a[:4], b[:4], strict=True):
        assert np.array_equal(x, y)
