"""One slip rule for every driver (femplast.tensorial.rules): a rule defined here, in the test
file, runs in the AQS loop, in KMC and inside patch tests; the built-in rules follow eq. 6-7;
the compiled AQS loop matches a plain-numpy reference loop event for event."""

import math

import numpy as np
import pytest
from mpi4py import MPI
from numba import cfunc

import femplast  # noqa: F401
from femplast.analysis.patches import PatchAnalysis, PatchRules, patch_arrays, patch_test
from femplast.fe.mesh import structured_box
from femplast.special import exp_small, log_pos, sincos_small
from femplast.streams import realization_rng
from femplast.tensorial.aqs import AQSDriver
from femplast.tensorial.kmc import KMC
from femplast.tensorial.model import TensorialModel
from femplast.tensorial.rules import (
    AMPLITUDE,
    AMPLITUDE_RULES,
    AmplitudeRule,
    Fixed,
    FixedCapped,
    PowerLaw,
    SlipRule,
    register,
)
from femplast.tensorial.slip import renew_cell


@register
class HalfMax(AmplitudeRule):
    """A toy rule: half the largest dissipative slip, ``d_gamma = gamma_max / 2`` (eq. 6), so
    that the slipping system's resolved stress drops exactly to zero."""

    name = "test_half_max"
    draws = False

    @staticmethod
    @cfunc(AMPLITUDE)
    def amplitude(u, gamma_max, p0, p1, p2):
        return 0.5 * gamma_max if gamma_max > 0.0 else 0.0


def small_model(amplitude=None, n=6, backend="propagator", renew=True):
    box = structured_box(n, n * 6.6, "quad", MPI.COMM_SELF)
    return TensorialModel.build(box, N=8, backend=backend, amplitude=amplitude, renew=renew)


def test_registration_and_the_rule_of_model_parameters():
    assert AMPLITUDE_RULES["test_half_max"] is HalfMax
    m = small_model("test_half_max")
    assert isinstance(m.rule.amplitude, HalfMax)
    plain = small_model()
    assert plain.rule.amplitude == PowerLaw(plain.params.chi)
    plain.params.fixed_dgamma = 0.01
    assert plain.rule.amplitude == Fixed(0.01)
    with pytest.raises(TypeError):
        register(type("Nameless", (AmplitudeRule,), {}))


@pytest.mark.parametrize(("rule", "u", "gmax", "want"), [
    (PowerLaw(2.25), 0.3, 0.04, 0.04 * (1 - 0.7 ** (1 / 2.25))),  # eq. 7 inverse CDF
    (PowerLaw(2.25), 0.3, -0.04, 0.0),  # no slip against the stress
    (Fixed(0.01), 0.0, 0.004, 0.01),
    (Fixed(0.01), 0.0, -0.004, 0.01),
    (FixedCapped(0.01), 0.0, 0.004, 0.004),  # capped: no negative dissipation
    (FixedCapped(0.01), 0.0, 0.04, 0.01),
    (FixedCapped(0.01), 0.0, -0.004, 0.0),
])
def test_builtin_amplitudes(rule, u, gmax, want):
    assert rule.amplitude(u, gmax, *rule.params()) == pytest.approx(want, rel=1e-15, abs=0)


def test_toy_rule_in_aqs():
    """Every athermal slip has d_gamma = gamma_max / 2 = -tau / den (eq. 6)."""
    m = small_model("test_half_max")
    st = m.new_state(realization_rng(1, 0))
    drv = AQSDriver(m, st, 0.0, 1e-4, 5000, event_log=True)
    drv.run()
    ei, ef = drv.event_table()
    assert len(ei) > 100
    tau, den, dg = ef[:, 2], ef[:, 3], ef[:, 1]
    assert np.all(den < 0) and np.all(tau > 0)
    np.testing.assert_allclose(dg, -tau / den, rtol=1e-14)


def test_toy_rule_in_kmc():
    """Thermal slips use the rule with gamma_max at the threshold (tau_c >= tau: activated
    from a stable state); the athermal slips of their avalanches use it at tau."""
    m = small_model("test_half_max")
    st = m.new_state(realization_rng(2, 0))
    drv = AQSDriver(m, st, 0.0, 1.0, 1, event_log=True)
    kmc = KMC(drv, 0.4, 1.0, window=100)
    kmc.run(300, until_stationary=False)
    ei, ef = drv.event_table()
    thermal = ei[:, 2] == 0
    assert thermal.sum() == 300 and (~thermal).sum() > 0
    tau, den, dg = ef[:, 2], ef[:, 3], ef[:, 1]
    tc = -dg * den  # the driving stress the rule saw
    assert np.all(tc[thermal] > 0) and np.all(tc[thermal] >= tau[thermal] - 1e-12)
    np.testing.assert_allclose(dg[~thermal], -tau[~thermal] / den[~thermal], rtol=1e-14)


@pytest.mark.parametrize("thermal_rule", ["paper", "mepls"])
def test_thermal_amplitude_rules_paper_and_mepls(thermal_rule):
    """kmc.amplitude_rule. paper (A.3): thermal slips at gamma_max(tau_c), the avalanche
    slips they trigger at gamma_max(tau). mepls (MEPLS gallery/espci/espci.h): every slip
    while T > 0, the triggered avalanche slips included, at gamma_max(tau_c + T) (tau +
    barrier + T); after the KMC run, at T = 0, the athermal rule again. The toy rule
    d_gamma = gamma_max / 2 shows the driving stress exactly: -d_gamma den."""
    m = small_model("test_half_max")
    m.params.thermal_amplitude = thermal_rule
    st = m.new_state(realization_rng(2, 0))
    drv = AQSDriver(m, st, 0.0, 1.0, 1, event_log=True)
    T = 0.4
    kmc = KMC(drv, T, 1.0, window=100)
    kmc.run(300, until_stationary=False)
    ei, ef = drv.event_table()
    thermal = ei[:, 2] == 0
    assert thermal.sum() == 300 and (~thermal).sum() > 20
    tau, den, dg, tc = ef[:, 2], ef[:, 3], ef[:, 1], ef[:, 4]
    drive = -dg * den  # the driving stress the rule saw
    assert np.all(tc[~thermal] <= tau[~thermal] + 1e-12)  # athermal: active systems
    if thermal_rule == "mepls":
        np.testing.assert_allclose(drive, tc + T, rtol=1e-13)
    else:
        np.testing.assert_allclose(drive[thermal], tc[thermal], rtol=1e-13)
        np.testing.assert_allclose(drive[~thermal], tau[~thermal], rtol=1e-13)
    n0 = len(ei)
    st.sig[1] += 2.0 * st.tauc.max()  # push every cell over its threshold: T = 0 avalanche
    drv.relax()
    ei, ef = drv.event_table()
    assert len(ei) > n0
    np.testing.assert_allclose(-ef[n0:, 1] * ef[n0:, 3], ef[n0:, 2], rtol=1e-13)


def test_mepls_rule_in_the_compiled_kmc_loop_equals_the_stepwise_events():
    """KMC.steps (the compiled event loop) runs the mepls rule as KMC.step does: the same
    state after 300 events, and at T = 0 afterwards the athermal rule again."""
    out = []
    for log in (False, True):
        m = small_model()
        m.params.thermal_amplitude = "mepls"
        st = m.new_state(realization_rng(5, 0))
        drv = AQSDriver(m, st, 0.0, 1.0, 1, event_log=log)
        kmc = KMC(drv, 0.4, 1.0, window=100)
        kmc.steps(300)
        assert drv.rule.temperature == 0.0  # restored
        out.append((st.sig.copy(), st.tauc.copy(), st.eps_pl.copy()))
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(a, b)


def test_toy_rule_in_a_patch_test():
    """Without renewal, a one-cell patch slips once and its trigger system ends exactly at
    zero resolved stress (the toy rule's half gamma_max with the patch's own self-response)."""
    m = small_model("test_half_max", renew=False)
    st = m.new_state(realization_rng(3, 0))
    pa = PatchAnalysis(m, "square", [1], [0.0])
    ps = pa.sets[0]
    op = pa.operator(ps, ps.ref)
    cells = ps.cells[7]
    pt = patch_arrays(st, cells, st.sig[:, cells])
    r = patch_test(op, 0.0, pt, PatchRules.from_model(m), np.random.default_rng(0))
    assert r.n_events == 1 and r.complete
    R = op.response(0.0)
    n = int(np.argmin(pt.tauc[0] - (pt.sin2[0] * (pt.sig[0, 0] + r.gamma_c * R[0, 0])
                                    + pt.cos2[0] * (pt.sig[1, 0] + r.gamma_c * R[1, 0]))))
    tau = (pt.sin2[0, n] * (pt.sig[0, 0] + r.gamma_c * R[0, 0])
           + pt.cos2[0, n] * (pt.sig[1, 0] + r.gamma_c * R[1, 0]))
    assert abs(tau) < 1e-12 * pt.tauc[0, n]
    # the same test with eq. 7 drops differently
    pt2 = patch_arrays(st, cells, st.sig[:, cells])
    r2 = patch_test(op, 0.0, pt2, PatchRules.from_model(small_model(renew=False)),
                    np.random.default_rng(0))
    assert r2.gamma_c == r.gamma_c and not np.allclose(r2.sigma_f, r.sigma_f)


# ---------------------------------------------------------------------------- numpy reference
def _renew_numpy(rng, c, theta, sin2, cos2, tauc, lam, k):
    """The original renewal (sec. 3.2, eq. 5) in plain Python, same draws as the compiled one:
    the group bases first, one sin/cos each (the other three systems turned by quarter turns
    in the deviatoric plane), then one uniform per threshold through the Weibull inverse CDF
    ``lambda (-log(1 - u))^(1/k)`` (femplast.special's log / exp, plain Python)."""
    N = theta.shape[1]
    t0s = [0.5 * math.pi - math.pi * rng.random() for _ in range(N // 4)]
    for g, t0 in enumerate(t0s):
        s, co = sincos_small.py_func(2.0 * t0)
        for j in range(4):
            t = t0 + 0.25 * math.pi * j
            if t > 0.5 * math.pi:
                t -= math.pi
            theta[c, 4 * g + j], sin2[c, 4 * g + j], cos2[c, 4 * g + j] = t, s, co
            s, co = co, -s
    for n in range(N):
        e = -log_pos.py_func(1.0 - rng.random())
        tauc[c, n] = lam * exp_small.py_func(log_pos.py_func(e) * (1.0 / k)) if e > 0.0 else 0.0


def test_renewal_draws_the_paper_laws_ks():
    """Eq. 5 and sec. 3.2: thresholds Weibull(lambda, k), group bases uniform in (-pi/2, pi/2]
    (Kolmogorov-Smirnov), (sin, cos) 2theta of every system those of its (rounded) angle to
    1e-15, the four systems of a group two exactly orthogonal pairs; the thresholds are libm's
    ``lambda (-log1p(-u))^(1/k)`` of the same uniforms to 1e-14."""
    from scipy import stats

    from femplast.tensorial.slip import renew_all

    lam, k, cells, N = 2.05, 2.18, 3000, 36
    th, s2, c2, tc = (np.zeros((cells, N)) for _ in range(4))
    renew_all(np.random.default_rng(5), th, s2, c2, tc, 0, lam, k)
    assert stats.kstest(tc.ravel(), "weibull_min", args=(k, 0, lam)).pvalue > 0.01
    base = th[:, ::4].ravel()
    assert stats.kstest(base, "uniform", args=(-math.pi / 2, math.pi)).pvalue > 0.01
    assert base.min() > -math.pi / 2 and base.max() <= math.pi / 2
    assert np.abs(s2 - np.sin(2 * th)).max() < 1e-15 and np.abs(c2 - np.cos(2 * th)).max() < 1e-15
    g = (cells, N // 4, 4)
    sg, cg = s2.reshape(g), c2.reshape(g)
    assert np.array_equal(sg[..., 1], cg[..., 0]) and np.array_equal(cg[..., 1], -sg[..., 0])
    assert np.array_equal(sg[..., 2], -sg[..., 0]) and np.array_equal(sg[..., 3], -cg[..., 0])
    # the same stream: N / 4 angle draws then N threshold draws per cell
    u = np.random.default_rng(5).random(cells * (N // 4 + N)).reshape(cells, -1)[:, N // 4:]
    libm = lam * (-np.log1p(-u)) ** (1.0 / k)
    assert np.abs(tc / libm - 1.0).max() < 1e-14


def test_renewal_plain_python_reference_bit_for_bit():
    from femplast.tensorial.slip import renew_cell

    a = [np.zeros((4, 36)) for _ in range(4)]
    b = [np.zeros((4, 36)) for _ in range(4)]
    ra, rb = np.random.default_rng(8), np.random.default_rng(8)
    for c in (2, 0, 2):
        renew_cell(ra, c, *a, 0, 2.05, 2.18)
        _renew_numpy(rb, c, *b, 2.05, 2.18)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_renewal_inline_pcg64_equals_the_generator_bit_for_bit():
    """The renewal drawing from the view of the generator's PCG64 state (``renew_cell_pcg``)
    equals ``renew_cell`` drawing through numpy, Weibull and fixed thresholds, and leaves the
    generator where ``renew_cell`` leaves it (the next draws agree)."""
    from femplast.streams import pcg64_view
    from femplast.tensorial.slip import THRESHOLD_FIXED, THRESHOLD_WEIBULL, renew_cell_pcg

    for kind in (THRESHOLD_WEIBULL, THRESHOLD_FIXED):
        a = [np.zeros((5, 36)) for _ in range(4)]
        b = [np.zeros((5, 36)) for _ in range(4)]
        ra, rb = realization_rng(3, 1), realization_rng(3, 1)
        view = pcg64_view(rb)
        for c in (4, 0, 4, 2):
            renew_cell(ra, c, *a, kind, 2.05, 2.18)
            renew_cell_pcg(view, c, *b, kind, 2.05, 2.18)
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
        assert ra.bit_generator.state == rb.bit_generator.state
        assert np.array_equal(ra.random(5), rb.random(5))


def test_aqs_inline_renewal_draws_equal_the_generic_path():
    """The AQS loop with its renewals drawn inline (PCG64 view) and the same loop drawing
    through the generator (an empty view: what a non-PCG64 generator gets) give the same
    events, states and generator state, bit for bit."""
    m = small_model(n=6)
    a = m.new_state(realization_rng(11, 0))
    b = a.copy()
    out = []
    for st, generic in ((a, False), (b, True)):
        drv = AQSDriver(m, st, 0.0, 1e-4, 3000, event_log=True)
        if generic:
            drv._pcg_rng, drv._pcg = st.rng, np.empty(0, np.uint64)
        drv.run()
        out.append(drv.event_table())
    assert len(out[0][0]) > 100
    assert np.array_equal(out[0][0], out[1][0]) and np.array_equal(out[0][1], out[1][1])
    for x, y in ((a.sig, b.sig), (a.tauc, b.tauc), (a.sin2, b.sin2), (a.theta, b.theta)):
        assert np.array_equal(x, y)
    assert a.rng.bit_generator.state == b.rng.bit_generator.state


def reference_aqs(model, st, dgamma, k_end):
    """The paper's AQS algorithm, plainly: at every increment scan every system; while some
    are active, all active cells slip at once on their lowest-dtau_c system (eq. 6-7),
    redistribute (numpy shifted add of the FE kernel), renew. Returns the event log."""
    p = model.params
    R = model.load_response(0.0)
    selfq = model.redist.selfq
    log = []
    for k in range(k_end + 1):
        gam = k * dgamma
        step = 0
        while True:
            d = st.sig[0] + gam * R[0]
            s = st.sig[1] + gam * R[1]
            dtc = st.tauc - (st.sin2 * d[:, None] + st.cos2 * s[:, None])
            arg = np.argmin(dtc, axis=1)
            cells = np.flatnonzero(dtc[np.arange(len(arg)), arg] < 0.0)
            if len(cells) == 0:
                break
            dgs = []
            for c in cells:
                n = arg[c]
                s2, c2 = st.sin2[c, n], st.cos2[c, n]
                tau = s2 * (st.sig[0, c] + gam * R[0, c]) + c2 * (st.sig[1, c] + gam * R[1, c])
                den = s2 * s2 * selfq[c, 0] + s2 * c2 * selfq[c, 1] + c2 * c2 * selfq[c, 2]
                gmax = -2.0 * tau / den
                dg = gmax * (1.0 - (1.0 - st.rng.random()) ** (1.0 / p.chi)) if gmax > 0 else 0.0
                dgs.append(dg)
                log.append((c, k, step, st.theta[c, n], dg))
            dgs = np.array(dgs)
            th = st.theta[cells, arg[cells]]
            model.redist.apply_shifted(st.sig, cells, dgs * np.sin(2 * th), dgs * np.cos(2 * th))
            for c in cells:
                _renew_numpy(st.rng, c, st.theta, st.sin2, st.cos2, st.tauc, p.weibull_lambda,
                             p.weibull_k)
            step += 1
    return log


def test_compiled_aqs_loop_matches_the_numpy_reference_event_for_event():
    m = small_model(n=6)
    a = m.new_state(realization_rng(11, 0))
    b = a.copy()
    drv = AQSDriver(m, a, 0.0, 1e-4, 8000, event_log=True)
    drv.run()
    ei, ef = drv.event_table()
    m.refresh(b)
    ref = reference_aqs(m, b, 1e-4, 8000)
    assert len(ref) == len(ei) > 200
    ints = np.array([r[:3] for r in ref])
    np.testing.assert_array_equal(ei, ints)
    np.testing.assert_allclose(ef[:, 0], [r[3] for r in ref], rtol=0, atol=0)
    np.testing.assert_allclose(ef[:, 1], [r[4] for r in ref], rtol=1e-12)
    np.testing.assert_allclose(a.sig[:2], b.sig[:2], atol=1e-12)


def test_slip_rule_bundle():
    rule = SlipRule(FixedCapped(0.02), renew=False, weibull_lambda=1.5, weibull_k=3.0)
    args = rule.args()
    assert args.draws is False and args.renew is False
    assert args.par.tolist() == [0.02, 0.0, 0.0] and args.weibull_lambda == 1.5


def test_a_case_selects_a_registered_rule_by_name(tmp_path):
    """slip.amplitude names the rule in a case file (here the toy rule of this file)."""
    from femplast.app.cases import case_from_dict
    from femplast.app.runner import run_case
    from femplast.errors import FemplastInputError

    base = dict(model="tensorial", mesh=dict(kind="quad", n=6, L=39.6),
                loading=dict(gamma_max=0.3, stationary_from=0.1), output=dict(fields=False),
                run=dict(realizations=1, seed=4))
    case = case_from_dict(dict(base, slip=dict(N=8, amplitude="test_half_max")))
    run_case(case, tmp_path / "out", MPI.COMM_SELF, quiet=True, event_log=True)
    import h5py

    with h5py.File(tmp_path / "out" / "realizations" / "r0000.h5") as f:
        tau, den, dg = (f[f"events/{k}"][:] for k in ("tau", "self_response", "d_gamma"))
    assert len(dg) > 20
    np.testing.assert_allclose(dg, -tau / den, rtol=1e-14)
    for amp, allowed in (("nope", "registered"), ("fixed", "unless the variant")):
        with pytest.raises(FemplastInputError, match=allowed) as e:
            case_from_dict(dict(base, slip=dict(N=8, amplitude=amp)))
        assert e.value.key == "slip.amplitude"


def test_renewal_modes_compose_the_compiled_renewal_parameters():
    from femplast.tensorial.rules import (
        CorrelatedThresholds,
        EvolvingStructure,
        FluctuatingSystems,
        TwoFixedSystems,
        renewal_vector,
    )
    from femplast.tensorial.slip import SYSTEMS_TWO_FIXED, variant_vector

    assert renewal_vector([]) is None  # the original renewal (sec. 3.3)
    v = renewal_vector([CorrelatedThresholds(0.1), EvolvingStructure(1.2, 4.0, 0.05),
                        FluctuatingSystems(3.5)])
    np.testing.assert_array_equal(v, variant_vector(n_groups_mean=3.5, corr_strain=0.1,
                                                    lambda_ss=1.2, k_ss=4.0, struct_strain=0.05))
    np.testing.assert_array_equal(renewal_vector([TwoFixedSystems()], cap=True),
                                  variant_vector(SYSTEMS_TWO_FIXED, cap=True))
