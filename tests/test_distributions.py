"""Distributions sampled by inverse CDF (femplast.scalar.distributions)."""

import math

import numpy as np
import pytest
import scipy.special as sp
import scipy.stats as st
from numba import njit

import femplast  # noqa: F401
from femplast.errors import FemplastInputError
from femplast.scalar.distributions import (
    Distribution,
    draw,
    from_options,
    gammainc,
    gammaincinv,
    ndtri,
)

U = np.random.default_rng(0).random(4000)


def test_ndtri_matches_scipy():
    got = np.array([ndtri(u) for u in U])
    assert np.max(np.abs(got - sp.ndtri(U))) < 1e-10
    assert ndtri(1e-300) == pytest.approx(sp.ndtri(1e-300), rel=1e-9)


@pytest.mark.parametrize("a", [0.3, 1.0, 2.5, 20.0])
def test_gamma_functions_match_scipy(a):
    x = sp.gammaincinv(a, U)
    assert np.max(np.abs([gammainc(a, v) for v in x] - U)) < 1e-12
    got = np.array([gammaincinv(a, u) for u in U])
    assert np.max(np.abs(got / x - 1)) < 1e-10


@pytest.mark.parametrize("dist, ref", [
    (Distribution.weibull(2.05, 2.18), st.weibull_min(2.18, scale=2.05)),
    (Distribution.gauss(1.0, 0.5), st.truncnorm(-2.0, np.inf, loc=1.0, scale=0.5)),
    (Distribution.gauss(-0.2, 0.4), st.truncnorm(0.5, np.inf, loc=-0.2, scale=0.4)),
    (Distribution.gamma(3.0, 0.4), st.gamma(3.0, scale=0.4)),
    (Distribution.uniform(0.5, 2.0), st.uniform(0.5, 1.5)),
])
def test_parametric_ppf_and_moments(dist, ref):
    assert np.max(np.abs(dist.ppf(U) - ref.ppf(U))) < 1e-9
    m, v = ref.stats("mv")
    assert dist.mean == pytest.approx(float(m), rel=1e-10)
    assert dist.std == pytest.approx(math.sqrt(float(v)), rel=1e-9)


def test_samples_table_is_numpy_quantile():
    x = np.random.default_rng(3).normal(1.0, 0.3, 101)
    d = Distribution.from_samples(x)
    assert np.allclose(d.ppf(U), np.quantile(x, U), atol=1e-12)
    assert d.ppf(0.0)[0] == x.min() and d.ppf(1.0 - 1e-17)[0] == pytest.approx(x.max())
    # exact moments of the piecewise-linear inverse CDF vs a fine quadrature
    uu = (np.arange(200000) + 0.5) / 200000
    assert d.mean == pytest.approx(d.ppf(uu).mean(), rel=1e-8)
    assert d.std == pytest.approx(d.ppf(uu).std(), rel=1e-6)


def test_histogram_table_reproduces_bin_weights():
    edges = np.array([0.0, 0.5, 1.0, 1.5, 2.5])
    w = np.array([1.0, 3.0, 0.0, 4.0])
    d = Distribution.from_histogram(edges, w)
    x = d.sample(np.random.default_rng(5), 200000)
    frac = np.histogram(x, edges)[0] / x.size
    assert np.allclose(frac, w / w.sum(), atol=0.005)
    assert frac[2] == 0.0  # an empty bin is never drawn
    assert d.mean == pytest.approx(np.sum(w * 0.5 * (edges[1:] + edges[:-1])) / w.sum())


@njit
def _draw_n(rng, n, kind, par, tu, tx):
    out = np.empty(n)
    for i in range(n):
        out[i] = draw(rng, kind, par, tu, tx)
    return out


@pytest.mark.parametrize("dist", [Distribution.weibull(1.2, 3.0), Distribution.gauss(1.1, 0.4),
                                  Distribution.from_samples(np.linspace(0, 1, 7) ** 2)])
def test_compiled_draws_consume_the_stream_like_numpy(dist):
    a = _draw_n(np.random.default_rng(11), 500, *dist.args)
    b = dist.sample(np.random.default_rng(11), 500)
    assert np.array_equal(a, b)


def test_csv_samples_and_histograms(tmp_path):
    f = tmp_path / "s.csv"
    f.write_text("# thresholds\nid,tau_c\n0,1.5\n1,0.5\n2,1.0\n")
    d = Distribution.from_csv(f, "samples", column=1)
    assert d.ppf([0.0, 0.5])[:2].tolist() == [0.5, 1.0]
    h2 = tmp_path / "h2.csv"
    h2.write_text("centre,weight\n0.5,1\n1.5,1\n")
    d2 = Distribution.from_csv(h2, "histogram")
    assert d2.tx.tolist() == [0.0, 1.0, 2.0] and d2.mean == pytest.approx(1.0)
    h3 = tmp_path / "h3.csv"
    h3.write_text("0,1,1\n1,3,3\n")
    d3 = Distribution.from_csv(h3, "histogram")
    assert d3.tu.tolist() == [0.0, 0.25, 1.0]
    bad = tmp_path / "bad.csv"
    bad.write_text("0,1,1\n2,3,3\n")
    with pytest.raises(FemplastInputError, match="contiguous"):
        Distribution.from_csv(bad, "histogram", key="scalar.renewal")


def test_option_errors_name_the_key(tmp_path):
    with pytest.raises(FemplastInputError) as e:
        from_options("gauss", "scalar.thresholds", mean=1.0)
    assert e.value.key == "scalar.thresholds.std"
    with pytest.raises(FemplastInputError) as e:
        from_options("samples", "scalar.renewal", file="nope.csv", base=tmp_path)
    assert e.value.key == "scalar.renewal.file"
    with pytest.raises(FemplastInputError) as e:
        from_options("uniform", "x", low=2.0, high=1.0)
    assert e.value.key == "x.high"
    with pytest.raises(FemplastInputError):
        Distribution.weibull(-1.0, 2.0)
