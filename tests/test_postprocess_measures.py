"""The numbers the figures report (femplast.postprocess.measures): power-law exponents by
maximum likelihood, offset yield stress, peak and flow stress, the analytic Eshelby field."""

import math

import numpy as np
import pytest

from femplast.postprocess import measures as M


def test_hurwitz_zeta_against_direct_sums():
    s = np.array([1.3, 2.0, 3.5])
    direct = np.array([(np.arange(2, 2_000_001, dtype=float) ** -x).sum() for x in s])
    tail = np.array([2_000_000.5 ** (1 - x) / (x - 1) for x in s])  # midpoint tail integral
    np.testing.assert_allclose(M.hurwitz_zeta(s, 2.0), direct + tail, rtol=1e-9)
    assert M.hurwitz_zeta(2.0, 1.0) == pytest.approx(math.pi**2 / 6, rel=1e-12)


@pytest.mark.parametrize("alpha", [1.6, 2.2, 3.0])
def test_discrete_mle_recovers_zipf_exponent_within_its_interval(alpha):
    x = np.random.default_rng(11).zipf(alpha, 5000)
    fit = M.fit_power_law(x)
    assert fit.discrete
    assert fit.alpha_lo < alpha < fit.alpha_hi
    assert fit.alpha_hi - fit.alpha_lo < 8 * fit.alpha_err  # a ~4 sigma wide 95 % interval
    assert abs(fit.alpha - alpha) < 3 * fit.alpha_err
    again = M.fit_power_law(x)  # seeded bootstrap: same data, same interval
    assert (again.alpha_lo, again.alpha_hi) == (fit.alpha_lo, fit.alpha_hi)


def test_continuous_mle_and_x_min_above_a_non_power_law_bulk():
    rng = np.random.default_rng(5)
    tail = 10.0 * (1 + rng.pareto(1.5, 3000))  # alpha = 2.5 above x_min = 10
    bulk = rng.uniform(0.5, 10.0, 3000)  # flat below: not a power law
    fit = M.fit_power_law(np.concatenate([bulk, tail]), discrete=False)
    assert not fit.discrete
    assert 8.0 <= fit.x_min <= 14.0
    assert fit.alpha_lo < 2.5 < fit.alpha_hi
    # the closed form on the tail alone
    t = tail[tail >= fit.x_min]
    assert M.fit_power_law(tail, discrete=False, x_min=fit.x_min).alpha == pytest.approx(
        1 + len(t) / np.log(t / fit.x_min).sum(), rel=1e-12)
    assert M.fit_power_law(np.ones(10)) is None  # too few samples


def test_offset_yield_of_a_bilinear_branch():
    G, tau_y, h = 13.2, 0.3, 0.5
    g = np.linspace(0, 0.1, 1001)
    s = np.minimum(G * g, tau_y + h * g)
    gy, sy = M.offset_yield(g, s, G)
    # plastic strain g - s/G = offset on the hardening line s = tau_y + h g
    g_exact = (M.YIELD_OFFSET + tau_y / G) / (1 - h / G)
    assert gy == pytest.approx(g_exact, rel=1e-9)
    assert sy == pytest.approx(tau_y + h * g_exact, rel=1e-9)
    assert M.offset_yield(g, G * g, G) is None  # purely elastic: never yields


def test_peak_and_flow():
    g = np.linspace(0, 1, 1001)
    s = np.minimum(13.2 * g, 0.5 + 0.2 * np.exp(-((g - 0.08) / 0.02) ** 2))
    pf = M.peak_and_flow(g, s, 0.5)
    assert pf.peak == pytest.approx(s.max()) and pf.gamma_peak == pytest.approx(
        g[np.argmax(s)])
    assert pf.flow == pytest.approx(0.5, abs=1e-9) and pf.flow_std < 1e-9


def test_eshelby_field_tractions_equilibrium_and_decay():
    a, e, G, B = 2.0, 0.01, 13.2, 59.0
    tau0 = -G * e / (1 + G / B)
    phi = np.linspace(0, 2 * np.pi, 37)
    n = np.column_stack([np.cos(phi), np.sin(phi)])
    for r_in, r_out in ((a * (1 - 1e-9), a * (1 + 1e-9)),):
        si = M.eshelby_circular_stress(r_in * n[:, 0], r_in * n[:, 1], a, e, G, B)
        so = M.eshelby_circular_stress(r_out * n[:, 0], r_out * n[:, 1], a, e, G, B)
        ti = np.column_stack([si[:, 0] * n[:, 0] + si[:, 2] * n[:, 1],
                              si[:, 2] * n[:, 0] + si[:, 1] * n[:, 1]])
        to = np.column_stack([so[:, 0] * n[:, 0] + so[:, 2] * n[:, 1],
                              so[:, 2] * n[:, 0] + so[:, 1] * n[:, 1]])
        np.testing.assert_allclose(ti, to, atol=1e-8 * abs(tau0))  # traction continuity
    assert si[0, 2] == pytest.approx(tau0)
    # equilibrium outside: div Sigma = 0 by central differences
    x, y, d = 3.1, 1.7, 1e-4
    f = lambda X, Y: M.eshelby_circular_stress(np.array(X), np.array(Y), a, e, G, B)  # noqa
    div_x = (f(x + d, y)[0] - f(x - d, y)[0] + f(x, y + d)[2] - f(x, y - d)[2]) / (2 * d)
    div_y = (f(x + d, y)[2] - f(x - d, y)[2] + f(x, y + d)[1] - f(x, y - d)[1]) / (2 * d)
    assert abs(div_x) < 1e-7 and abs(div_y) < 1e-7
    # far field ~ r^-2 (a force dipole of strength ~ area)
    r1, r2 = 50.0, 100.0
    s1, s2 = f(r1, 0.0)[2], f(r2, 0.0)[2]
    assert s1 / s2 == pytest.approx(4.0, rel=1e-2)
