"""Calibration: error functions (eq. 8, 9, L_macro, L_meso, L_stat), reference data I/O, the
parabola optimum (sec. 4.2), emergent analyses (eq. 10, finite-size fit, Fig. 5c) and the
recovery of known parameters from a synthetic reference by a small sweep."""

import json
import math

import numpy as np
import pytest

import femplast  # noqa: F401
from femplast.analysis import calibration as C


# ----------------------------------------------------------------------------- L[P], L[F]
def test_overlap_identical_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=5000)
    assert C.overlap_error_samples(a, a.copy()) == pytest.approx(0.0, abs=1e-12)
    e = np.linspace(-5, 5, 31)
    p = C.density(a, e)
    assert C.overlap_error(p, p, np.diff(e)) == pytest.approx(0.0, abs=1e-12)


def test_overlap_disjoint_is_one():
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0, 1, 1000), rng.uniform(2, 3, 700)
    assert C.overlap_error_samples(a, b) == 1.0
    assert C.overlap_error_samples(b, a) == 1.0


def test_overlap_symmetric_and_half():
    rng = np.random.default_rng(2)
    a, b = rng.normal(0, 1, 3000), rng.normal(0.7, 1.3, 2000)
    e = np.linspace(-6, 6, 49)
    assert C.overlap_error_samples(a, b, e) == C.overlap_error_samples(b, a, e)
    assert 0 < C.overlap_error_samples(a, b, e) < 1
    # two unit boxes shifted by half their width overlap by one half
    e = np.linspace(0, 1.5, 7)
    p = np.array([2, 2, 0, 0, 0, 0]) / 1.0
    q = np.array([0, 2, 2, 0, 0, 0]) / 1.0
    w = np.diff(e)
    assert C.overlap_error(p * 1 / (p * w).sum(), q / (q * w).sum(), w) == pytest.approx(0.5)


def test_density_counts_mass_outside_bins():
    v = np.array([0.1, 0.2, 0.3, 5.0])  # one of four samples outside [0, 1]
    e = np.linspace(0, 1, 5)
    assert np.sum(C.density(v, e) * np.diff(e)) == pytest.approx(0.75)


def test_avalanche_samples_saw_tooth():
    """Rises are before[i] - after[i-1] between two stationary avalanches, drops before[i] -
    after[i]; a negative drop is kept in ``drops`` and flagged; over a closed saw-tooth the
    mean rise equals the mean drop."""
    before = np.array([1.0, 1.2, 1.1, 1.3, 1.25])
    after = np.array([0.9, 1.0, 1.15, 1.05, 1.05])
    gamma = np.array([0.1, 0.6, 0.7, 0.8, 0.9])
    a = C.avalanche_samples(before, after, gamma, 0.5)
    np.testing.assert_allclose(a["drops"], [0.2, -0.05, 0.25, 0.2])
    assert a["negative"].tolist() == [False, True, False, False]
    np.testing.assert_allclose(a["increments"], [0.1, 0.15, 0.2])  # not 1.2 - 0.9
    closed = C.avalanche_samples([1.0, 1.3, 1.2], [0.8, 0.9, 0.8], [1, 2, 3], 0)
    assert closed["increments"].sum() == pytest.approx(
        closed["drops"][1:].sum() + 0.8 - 0.8)
    empty = C.avalanche_samples([], [], [], 0.0)
    assert len(empty["drops"]) == 0 and len(empty["increments"]) == 0


def test_relative_and_stat_errors():
    assert C.relative_error(1.1, 1.0) == pytest.approx(0.1)
    assert C.relative_error(-0.9, -1.0) == pytest.approx(0.1)
    assert C.relative_error(0.0, 0.0) == 0.0
    assert C.relative_error(1.0, 0.0) == math.inf
    assert C.stat_error(0.2, 0.1, 0.3) == pytest.approx(0.2)
    assert C.stat_error(0.2, None, None) == 0.2
    assert C.stat_error(0.2, math.nan, 0.3) == 0.2


# ----------------------------------------------------------------------------- reference I/O
def _entries(scale=1.0):
    out = []
    for state in ("initial", "stationary"):
        for R in (7.4, 14.9):
            for a in (0.0, 90.0):
                e = dict(state=state, R=R, alpha=a, count=100)
                for i, q in enumerate(C.LOCAL_QUANTITIES):
                    base = (1 + i) * (1 if a == 0 else -0.5) + R / 100
                    e[q] = dict(mean=scale * base, std=scale * (0.1 + 0.01 * i))
                out.append(e)
    return out


def _reference(tmp_path, local=True):
    rng = np.random.default_rng(3)
    samples = dict(sigma_xy=rng.normal(0.5, 0.07, 4000), drop_xy=rng.exponential(0.03, 300),
                   increment_xy=rng.exponential(0.03, 300))
    macro = {}
    for q, v in samples.items():
        e = C.default_edges(q, v)
        macro[q] = C.Histogram(e, C.density(v, e))
    rows = [C._flat(e) for e in _entries()] if local else None
    path = C.write_reference(tmp_path / "ref", ["SYNTHETIC test reference", "second line"],
                             macro, rows, dict(dgamma=np.array([1e-4, 1e-3]),
                                               r=np.array([0.01, 0.05])),
                             dict(L=np.array([40.0, 80.0]), std_sigma_xy=np.array([0.1, 0.05])))
    return path, samples


def test_reference_roundtrip(tmp_path):
    path, samples = _reference(tmp_path)
    ref = C.read_reference(path)
    assert ref.synthetic and ref.header[0] == "SYNTHETIC test reference"
    for q, v in samples.items():
        e = C.default_edges(q, v)
        np.testing.assert_allclose(ref.macro[q].edges, e, rtol=1e-15)
        np.testing.assert_allclose(ref.macro[q].density, C.density(v, e), rtol=1e-15)
        assert ref.macro[q].mass == pytest.approx(1.0, abs=1e-12)
    assert len(ref.local) == 8
    r = ref.local_rows("stationary", 90.0, 14.0)
    assert r["R"] == 14.9 and r["tau_c_mean"] == pytest.approx(-1.0 + 0.149)
    assert ref.local_rows("stationary", 270.0)["alpha"] == 90.0  # alpha is mod 180
    np.testing.assert_array_equal(ref.rms["r"], [0.01, 0.05])
    np.testing.assert_array_equal(ref.finite_size["L"], [40.0, 80.0])
    # the same model counts give L_macro = 0; meso entries equal to the reference: L[F] = 0
    counts = {q: np.histogram(v, ref.macro[q].edges)[0] for q, v in samples.items()}
    totals = {q: len(v) for q, v in samples.items()}
    assert C.macro_errors(counts, totals, ref)["L_macro"] == pytest.approx(0.0, abs=1e-12)
    m = C.meso_errors(_entries(), ref)
    assert m["L_meso_plus"] == pytest.approx(0.0, abs=1e-12)
    assert m["L_meso_minus"] == pytest.approx(0.0, abs=1e-12)
    assert m["R_model_plus"] == 14.9
    m = C.meso_errors(_entries(1.1), ref)
    assert m["L_meso_plus"] == pytest.approx(0.1) and m["L_meso_minus"] == pytest.approx(0.1)


def test_reference_samples_format_and_errors(tmp_path):
    d = tmp_path / "s"
    d.mkdir()
    rng = np.random.default_rng(4)
    lines = ["# SYNTHETIC samples", "quantity,value"]
    for q in C.MACRO_QUANTITIES:
        lines += [f"{q},{float(v)!r}" for v in rng.exponential(0.1, 200)]
    (d / "macro.csv").write_text("\n".join(lines) + "\n")
    ref = C.read_reference(d)
    assert ref.macro["drop_xy"].edges[0] > 0 and ref.local is None
    assert ref.macro["sigma_xy"].mass == pytest.approx(1.0, abs=0.01)
    with pytest.raises(C.ReferenceError):
        C.read_reference(tmp_path / "none")
    (d / "macro.csv").write_text("quantity,value\nsigma_xy,1\n")
    with pytest.raises(C.ReferenceError, match="drop_xy"):
        C.read_reference(d)


# ----------------------------------------------------------------------------- optimum
def test_parabola_optimum_and_interpolation():
    k = np.round(np.arange(1.0, 3.0001, 0.05), 10)
    L = 0.1 + 0.5 * (k - 2.2) ** 2
    lam, chi = 1.5 + 0.25 * k, 3.0 - 0.5 * k
    o = C.parabola_optimum(k, L, dict(**{"lambda": lam, "chi": chi}))
    assert o["fit"] == "parabola" and not o["clipped"]
    assert o["k_hat"] == pytest.approx(2.2, abs=1e-9)
    assert o["L_hat"] == pytest.approx(0.1, abs=1e-12)
    assert o["lambda_hat"] == pytest.approx(1.5 + 0.25 * 2.2, abs=1e-9)
    assert o["chi_hat"] == pytest.approx(3.0 - 0.5 * 2.2, abs=1e-9)
    # no minimum (monotonic): the grid's best k
    o = C.parabola_optimum(k[:5], -k[:5] ** 2)
    assert o["fit"] == "grid" and o["k_hat"] == k[4]


def test_best_per_k():
    t = dict(k=np.array([1.0, 1.0, 2.0, 2.0]), L_stat=np.array([0.3, 0.2, np.nan, 0.4]),
             chi=np.array([1.0, 2.0, 3.0, 4.0]))
    b = C.best_per_k(t)
    np.testing.assert_array_equal(b["chi"], [2.0, 4.0])


# ----------------------------------------------------------------------------- emergent
def test_rms_deviation_exact_on_a_ramp():
    # a linear ramp c t: every window of w steps has std c sqrt((w^2 - 1) / 12)
    c, dg = 0.3, 1e-4
    s = c * np.arange(200.0)
    r = C.rms_deviation([s, s + 5.0], dg, widths=[2, 5, 50])
    np.testing.assert_allclose(r["r"], c * np.sqrt((np.array([2, 5, 50]) ** 2 - 1) / 12),
                               rtol=1e-9)
    np.testing.assert_allclose(r["dgamma"], [1e-4, 4e-4, 49e-4])


def test_rms_deviation_white_noise_saturates():
    rng = np.random.default_rng(5)
    s = [rng.normal(0, 2.0, 20000) for _ in range(3)]
    r = C.rms_deviation(s, 1e-4, widths=[2, 10, 1000])
    # E[sample std of w iid values] ~ sigma sqrt((w-1)/w) (up to the c4 bias, < 2% at w >= 10)
    assert r["r"][1] == pytest.approx(2.0 * np.sqrt(0.9), rel=0.04)
    assert r["r"][2] == pytest.approx(2.0, rel=0.01)
    assert r["std"] == pytest.approx(2.0, rel=0.01)


def test_pooled_std_and_jackknife():
    rng = np.random.default_rng(6)
    series = [rng.normal(0, 1.5, 1000) for _ in range(20)]
    sd, err = C.pooled_std(series)
    assert sd == pytest.approx(np.concatenate(series).std(), rel=1e-12)
    # the std of 20000 iid normal values has a standard error ~ sigma / sqrt(2 N)
    assert err == pytest.approx(1.5 / np.sqrt(2 * 20000), rel=0.5)


def test_finite_size_fit():
    L = np.array([20.0, 40.0, 80.0, 160.0])
    o = C.finite_size_fit(L, 3.0 * L**-0.94)
    assert o["exponent"] == pytest.approx(-0.94, abs=1e-12)
    assert o["amplitude"] == pytest.approx(3.0, rel=1e-12)
    assert o["exponent_err"] == pytest.approx(0.0, abs=1e-12)
    # with errors: the weighted estimate lies within 3 of its errors of the truth, and the
    # error equals the analytic one for equal relative errors (0.05 in log)
    rng = np.random.default_rng(7)
    hits = 0
    for _ in range(200):
        s = 3.0 * L**-0.94 * np.exp(rng.normal(0, 0.05, 4))
        o = C.finite_size_fit(L, s, 0.05 * s)
        x = np.log(L)
        assert o["exponent_err"] >= 0.05 / np.sqrt(np.sum((x - x.mean()) ** 2)) - 1e-12
        hits += abs(o["exponent"] + 0.94) < 2 * o["exponent_err"]
    assert hits > 170  # ~95% coverage of +-2 sigma (chi2 scaling only widens it)


def test_drop_vs_yield():
    rows = C.drop_vs_yield(_entries())
    assert [(r["state"], r["alpha"]) for r in rows] == [
        ("initial", 0.0), ("initial", 90.0), ("stationary", 0.0), ("stationary", 90.0)]
    assert all(r["R"] == 14.9 for r in rows)
    assert rows[2]["tau_c_mean"] == pytest.approx(2.149)
    assert rows[2]["delta_tau_c_mean"] == pytest.approx(4.149)


# ----------------------------------------------------------------------------- recovery
TRUTH = dict(k=2.0, lam=2.0, chi=2.25)
RECOVERY_CASE = """
model: tensorial
mesh: {{kind: quad, n: 8, L: 52.8}}
slip: {{N: 36, weibull_lambda: {lam}, weibull_k: {k}, chi: {chi}}}
loading: {{dgamma_ext: 1.0e-4, gamma_max: 0.8, stationary_from: 0.3}}
output: {{fields: false}}
run: {{realizations: {R}, seed: {seed}}}
patches: {{enabled: true, n: [4], spacing: 13.2, alpha: [0, 90], initial: false,
           gamma_ext: [0.5, 0.8]}}
"""


def test_parameter_recovery(tmp_path):
    """A synthetic reference made at known (k, lambda, chi) on an 8 x 8 system (seed 999) is
    recovered by a 3 x 3 x 3 sweep (other seeds): the best grid point is the truth and the
    parabola optimum lies within one grid step of it."""
    from mpi4py import MPI

    from femplast.app.cases import load_case
    from femplast.app.runner import run_case
    from femplast.app.sweep import make_reference

    (tmp_path / "truth.yaml").write_text(RECOVERY_CASE.format(R=24, seed=999, **TRUTH))
    make_reference(load_case(tmp_path / "truth.yaml"), tmp_path / "ref")
    assert C.read_reference(tmp_path / "ref").synthetic
    grid = dict(k=[1.5, 2.0, 2.5], lam=[1.8, 2.0, 2.2], chi=[1.75, 2.25, 2.75])
    text = RECOVERY_CASE.format(R=6, seed=1, k=2.18, lam=2.05, chi=2.25) + (
        "sweep:\n  enabled: true\n  reference: ref\n"
        f"  grid: {{k: {grid['k']}, lambda: {grid['lam']}, chi: {grid['chi']}}}\n")
    (tmp_path / "sweep.yaml").write_text(text)
    s = run_case(load_case(tmp_path / "sweep.yaml"), tmp_path / "out", MPI.COMM_SELF,
                 quiet=True)["sweep"]
    best, opt = s["best"], s["optimum"]
    assert (best["k"], best["lambda"], best["chi"]) == (TRUTH["k"], TRUTH["lam"], TRUTH["chi"])
    assert opt["fit"] == "parabola"
    assert abs(opt["k_hat"] - TRUTH["k"]) <= 0.5
    assert abs(opt["lambda_hat"] - TRUTH["lam"]) <= 0.2
    assert abs(opt["chi_hat"] - TRUTH["chi"]) <= 0.5
    assert best["L_stat"] < 0.1 and best["L_macro"] < 0.1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["sweep"]["emergent"]["drop_vs_yield"]
    assert summary["sweep"]["emergent"]["rms_relative_deviation"] < 0.2
