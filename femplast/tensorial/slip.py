"""Slip systems of the tensorial model (tensorial paper, sec. 3.1-3.3, eq. 3, 5, 7).

Each cell holds ``N`` slip systems in groups of four angles ``theta, theta + pi/4, theta + pi/2,
theta + 3 pi/4`` (theta uniform in (-pi/2, pi/2]), one slip sense each, with Weibull thresholds
``tau_c`` (eq. 5). Only ``sin 2 theta`` and ``cos 2 theta`` enter the dynamics:
``tau = M(theta) : Sigma = sin(2 theta) (Sigma_yy - Sigma_xx)/2 + cos(2 theta) Sigma_xy``.

All random numbers are uniform doubles from the realization's numpy Generator, turned into the
distributions by explicit inverse CDFs, so compiled (numba) and pure-numpy code consume the
same stream in the same order and give identical trajectories.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from femplast.special import exp_small, log_pos, ndtr, ndtri, sincos_small
from femplast.streams import pcg64_double

THRESHOLD_WEIBULL = 0
THRESHOLD_FIXED = 1


def systems_per_cell(cell_length: float, rho_s: float = 0.8) -> int:
    """N = rho_s l^2 rounded to the nearest multiple of 4, at least 4 (appendix A.2)."""
    return max(4, 4 * int(round(rho_s * cell_length**2 / 4.0)))


def groups_per_area(areas, N: int, reference_area: float) -> np.ndarray:
    """Groups of four systems of cells of ``areas`` at ``N`` systems per ``reference_area``
    (case key ``slip.reference_area``): ``clip(round(N/4 A_c / reference_area), 1, N/4)``.

    Why: with the same N in every cell, a mesh refined at a notch root holds more systems per
    area there, and the weakest-link law of the first slip (``P(c) ~ N_c |R_c|^k``,
    femplast.analysis.specimen) follows the mesh. A fixed density of systems makes it follow
    the area. Cells larger than ``reference_area`` keep N (the arrays have N columns); a
    cell keeps at least one group.
    """
    m = N // 4
    ng = np.rint(m * np.asarray(areas, float) / float(reference_area))
    return np.clip(ng, 1, m).astype(np.int64)


@njit(cache=True, inline="always")
def weibull_threshold(v: float, weibull_lambda: float, inv_k: float) -> float:
    """The Weibull threshold of eq. 5 from ``v = 1 - u`` (u uniform): the inverse CDF
    ``lambda (-log v)^(1/k)``, ``inv_k = 1/k``, evaluated as ``lambda exp(log(-log v) / k)``
    with the branch-free :func:`femplast.special.log_pos` and :func:`femplast.special.exp_small`
    so that a loop over a cell's systems vectorizes (the libm ``log1p`` and ``pow`` per
    system were 40 ns, half of an AQS event). ``v = 1 - u`` is exact for numpy's doubles
    (multiples of 2^-53), so ``-log v`` is ``-log1p(-u)``; both functions are within ~1 ulp:
    the law is the same to double precision. ``v = 1`` (u = 0) gives 0."""
    e = -log_pos(v)
    t = weibull_lambda * exp_small(log_pos(e) * inv_k)
    return t if e > 0.0 else 0.0


@njit(cache=True)
def draw_threshold(rng, kind: int, weibull_lambda: float, weibull_k: float) -> float:
    """One slip threshold: Weibull(weibull_lambda, weibull_k) (eq. 5, :func:`weibull_threshold`
    of one uniform), or the fixed value weibull_lambda (THRESHOLD_FIXED, model E)."""
    if kind == THRESHOLD_FIXED:
        return weibull_lambda
    return weibull_threshold(1.0 - rng.random(), weibull_lambda, 1.0 / weibull_k)


@njit(cache=True, inline="always")
def draw_thresholds(rng, c, n_systems, tauc, kind, weibull_lambda, weibull_k):
    """The thresholds of the first ``n_systems`` systems of cell ``c``: the uniforms first
    (one per system, in order: the stream of ``n_systems`` :func:`draw_threshold` calls),
    then the inverse CDF in one loop that vectorizes."""
    if kind == THRESHOLD_FIXED:
        for n in range(n_systems):
            tauc[c, n] = weibull_lambda
        return
    for n in range(n_systems):
        tauc[c, n] = 1.0 - rng.random()
    _thresholds_from_v(c, n_systems, tauc, weibull_lambda, weibull_k)


@njit(cache=True, inline="always")
def _thresholds_from_v(c, n_systems, tauc, weibull_lambda, weibull_k):
    """``tauc[c, n] = weibull_threshold(tauc[c, n])`` for the first ``n_systems`` systems
    (holding ``v = 1 - u``), in one loop that vectorizes."""
    inv_k = 1.0 / weibull_k
    for n in range(n_systems):
        tauc[c, n] = weibull_threshold(tauc[c, n], weibull_lambda, inv_k)


@njit(cache=True)
def draw_amplitude(rng, gmax: float, chi: float) -> float:
    """Slip amplitude from the bounded power law of eq. 7: P = chi/gmax (1 - x/gmax)^(chi-1)."""
    u = rng.random()
    return gmax * (1.0 - (1.0 - u) ** (1.0 / chi))


# ---------------------------------------------------------------------------- model variants
# Renewal modes of the appendix A.8 / section 6 variants (femplast.tensorial.variants). Their
# parameters travel as one float vector ``vpar`` (layout V_*); ``vpar = None``: the original.
SYSTEMS_RANDOM, SYSTEMS_TWO_FIXED = 0, 1
(V_SYSTEMS, V_NGROUPS_MEAN, V_CORR_STRAIN, V_LAMBDA_SS, V_K_SS, V_STRUCT_STRAIN,
 V_CAP, V_BIAS, V_BIAS_2ALPHA, V_KEEP_GROUPS) = range(10)
NVPAR = 10


def variant_vector(systems: int = SYSTEMS_RANDOM, n_groups_mean: float = 0.0,
                   corr_strain: float = 0.0, lambda_ss: float = 0.0, k_ss: float = 0.0,
                   struct_strain: float = 0.0, cap: bool = False,
                   keep_groups: bool = False) -> np.ndarray:
    """The ``vpar`` vector of :func:`renew_cell` and :func:`femplast.tensorial.aqs.aqs_advance`.

    Args:
        systems: SYSTEMS_RANDOM (groups of four random angles) or SYSTEMS_TWO_FIXED (two systems
            at 0 and 90 deg sharing one threshold; the arrays then have two columns).
        n_groups_mean: > 0: fluctuating number of systems, ``4 (1 + Poisson(n_groups_mean -
            1))`` per cell and renewal, truncated at the number of columns (unused columns get
            ``tau_c = +inf``); 0: every column is a system.
        corr_strain: > 0: renewed thresholds correlate with the old ones, Gaussian copula
            coefficient ``rho = exp(-d_gamma / corr_strain)`` (d_gamma: the slip that triggered
            the renewal), marginal unchanged; 0: fresh draws.
        lambda_ss, k_ss, struct_strain: evolving structure (struct_strain > 0): the Weibull
            ``lambda(e) = lambda_ss + (lambda_q - lambda_ss) exp(-e / struct_strain)`` (same for
            k) with ``lambda_q, k_q`` the quench values (weibull_lambda, weibull_k) and ``e`` the
            cell's accumulated plastic strain (sum of its d_gamma).
        cap: fixed slip amplitudes are capped at gamma_max (eq. 6).
        keep_groups: a renewal keeps the cell's number of groups, read from its row (finite
            thresholds / 4) before the redraw (systems per area, ``slip.reference_area``; the
            initial counts come from :func:`renew_all`'s ``ngroups``).

    The stress-biased renewal (sec. 6 (iii), :class:`femplast.tensorial.rules.StressBiased`)
    sets ``V_BIAS`` and ``V_BIAS_2ALPHA`` directly.
    """
    v = np.zeros(NVPAR)
    v[V_SYSTEMS], v[V_NGROUPS_MEAN], v[V_CORR_STRAIN] = systems, n_groups_mean, corr_strain
    v[V_LAMBDA_SS], v[V_K_SS], v[V_STRUCT_STRAIN] = lambda_ss, k_ss, struct_strain
    v[V_CAP] = 1.0 if cap else 0.0
    v[V_KEEP_GROUPS] = 1.0 if keep_groups else 0.0
    return v


@njit(cache=True)
def _weibull_z(t: float, lam: float, k: float) -> float:
    """Normal score of threshold t under Weibull(lam, k): ndtri(F(t)), accurate in both tails."""
    x = (t / lam) ** k
    if x < math.log(2.0):
        return ndtri(-math.expm1(-x))
    return -ndtri(math.exp(-x))


@njit(cache=True)
def _weibull_from_z(z: float, lam: float, k: float) -> float:
    if z < 0.0:
        x = -math.log1p(-ndtr(z))
    else:
        x = -math.log(ndtr(-z))
    return lam * x ** (1.0 / k)


@njit(cache=True)
def draw_threshold_corr(rng, kind: int, weibull_lambda: float, weibull_k: float, rho: float,
                        old: float) -> float:
    """A renewed threshold correlated with ``old`` (Gaussian copula, coefficient rho).

    One uniform u as :func:`draw_threshold`; with ``rho = 0`` (or a non-finite old value) it is
    the same draw. Otherwise ``z = rho z_old + sqrt(1 - rho^2) ndtri(u)`` with ``z_old`` the
    normal score of ``old``, mapped back through the Weibull quantile: the Weibull marginal is
    kept, the normal scores of old and new thresholds have correlation rho.
    """
    if kind == THRESHOLD_FIXED:
        return weibull_lambda
    if rho <= 0.0 or not math.isfinite(old) or old <= 0.0:
        return draw_threshold(rng, kind, weibull_lambda, weibull_k)
    u = rng.random()
    z = rho * _weibull_z(old, weibull_lambda, weibull_k) + math.sqrt(1.0 - rho * rho) * ndtri(u)
    return _weibull_from_z(z, weibull_lambda, weibull_k)


@njit(cache=True)
def poisson_inv(u: float, mu: float, kmax: int) -> int:
    """Inverse CDF of Poisson(mu) at u, truncated at kmax."""
    p = math.exp(-mu)
    F = p
    k = 0
    while u > F and k < kmax:
        k += 1
        p *= mu / k
        F += p
    return k


@njit(cache=True)
def structure_params(weibull_lambda: float, weibull_k: float, vpar, e: float):
    """Weibull (lambda, k) of a cell with accumulated plastic strain e (evolving structure)."""
    e0 = vpar[V_STRUCT_STRAIN]
    if e0 <= 0.0:
        return weibull_lambda, weibull_k
    f = math.exp(-e / e0)
    return (vpar[V_LAMBDA_SS] + (weibull_lambda - vpar[V_LAMBDA_SS]) * f,
            vpar[V_K_SS] + (weibull_k - vpar[V_K_SS]) * f)


@njit(cache=True)
def _draw_angles(rng, c, ngroups, theta, sin2, cos2):
    """``ngroups`` groups of four angles theta, theta + pi/4, ... with theta uniform in
    (-pi/2, pi/2] (sec. 3.2), into the first 4 * ngroups columns of cell ``c``.

    One ``sin``/``cos`` per group (:func:`femplast.special.sincos_small`, in a loop that
    vectorizes): the group's systems are its base system turned by ``2 Delta theta = pi/2`` in
    the deviatoric plane, ``(sin 2theta, cos 2theta) -> (cos 2theta, -sin 2theta)``, exact
    sign swaps (the four are exactly two orthogonal pairs). The base angles are drawn first
    (one uniform each, in group order) into the first ``ngroups`` columns, then spread out
    from the last group down (a group's columns lie at or after its base's column)."""
    for g in range(ngroups):
        theta[c, g] = 0.5 * math.pi - math.pi * rng.random()  # uniform in (-pi/2, pi/2]
    _spread_angles(c, ngroups, theta, sin2, cos2)


@njit(cache=True)
def _spread_angles(c, ngroups, theta, sin2, cos2):
    """The groups of :func:`_draw_angles` from their base angles in ``theta[c, :ngroups]``."""
    for g in range(ngroups):
        sin2[c, g], cos2[c, g] = sincos_small(2.0 * theta[c, g])
    for g in range(ngroups - 1, -1, -1):
        t0, s, co = theta[c, g], sin2[c, g], cos2[c, g]
        for j in range(4):
            t = t0 + 0.25 * math.pi * j
            if t > 0.5 * math.pi:
                t -= math.pi
            theta[c, 4 * g + j] = t
            sin2[c, 4 * g + j] = s
            cos2[c, 4 * g + j] = co
            s, co = co, -s


@njit(cache=True, inline="always")
def renew_cell_pcg(pcg, c, theta, sin2, cos2, tauc, kind, weibull_lambda, weibull_k):
    """:func:`renew_cell`'s original renewal (``vpar`` None) drawing from a PCG64 state view
    (:func:`femplast.streams.pcg64_view` of the realization's generator): the same uniforms in
    the same order (the base angles, then one per threshold), stepped in registers and the
    state written back, so results and the generator's state are those of ``renew_cell``."""
    N = theta.shape[1]
    _renew_groups_pcg(pcg, c, N // 4, N, theta, sin2, cos2, tauc, kind, weibull_lambda,
                      weibull_k)


@njit(cache=True, inline="always")
def renew_cell_pcg_kept(pcg, c, theta, sin2, cos2, tauc, kind, weibull_lambda, weibull_k):
    """:func:`renew_cell` with a variant vector whose only mode keeps the cell's number of
    groups (``V_KEEP_GROUPS``, systems per area), drawing from a PCG64 state view as
    :func:`renew_cell_pcg`: the same uniforms in the same order as ``renew_cell``."""
    ng = kept_groups(c, tauc)
    _renew_groups_pcg(pcg, c, ng, 4 * ng, theta, sin2, cos2, tauc, kind, weibull_lambda,
                      weibull_k)
    _clear_unused(c, 4 * ng, theta, sin2, cos2, tauc)


@njit(cache=True)
def keeps_groups_only(vpar) -> bool:
    """Whether the variant vector's only renewal mode keeps the number of groups (the renewal
    :func:`renew_cell_pcg_kept` then draws what :func:`renew_cell` would)."""
    if vpar is None:  # pruned at compile time
        return False
    return (vpar[V_KEEP_GROUPS] > 0.0 and vpar[V_SYSTEMS] == SYSTEMS_RANDOM
            and vpar[V_NGROUPS_MEAN] == 0.0 and vpar[V_CORR_STRAIN] == 0.0
            and vpar[V_STRUCT_STRAIN] == 0.0 and vpar[V_BIAS] == 0.0)


@njit(cache=True, inline="always")
def kept_groups(c, tauc) -> int:
    """The number of groups of four of cell ``c`` now: its finite thresholds / 4 (at least
    one)."""
    used = 0
    for n in range(tauc.shape[1]):
        if tauc[c, n] < np.inf:
            used += 1
    return max(used // 4, 1)


@njit(cache=True, inline="always")
def _clear_unused(c, used, theta, sin2, cos2, tauc):
    """Columns ``used..N`` of cell ``c`` are no systems: ``tau_c = inf`` never activates."""
    for n in range(used, theta.shape[1]):
        theta[c, n] = 0.0
        sin2[c, n] = 0.0
        cos2[c, n] = 1.0
        tauc[c, n] = np.inf


@njit(cache=True, inline="always")
def _renew_groups_pcg(pcg, c, ngroups, nthr, theta, sin2, cos2, tauc, kind, weibull_lambda,
                      weibull_k):
    """``ngroups`` base angles, then ``nthr`` thresholds of cell ``c``, one PCG64 uniform
    each, stepped in registers (the state written back)."""
    lo, hi, inc_lo, inc_hi = pcg[0], pcg[1], pcg[2], pcg[3]
    for g in range(ngroups):
        lo, hi, u = pcg64_double(lo, hi, inc_lo, inc_hi)
        theta[c, g] = 0.5 * math.pi - math.pi * u
    if kind != THRESHOLD_FIXED:
        for n in range(nthr):
            lo, hi, u = pcg64_double(lo, hi, inc_lo, inc_hi)
            tauc[c, n] = 1.0 - u
    pcg[0], pcg[1] = lo, hi
    _spread_angles(c, ngroups, theta, sin2, cos2)
    if kind == THRESHOLD_FIXED:
        for n in range(nthr):
            tauc[c, n] = weibull_lambda
    else:
        _thresholds_from_v(c, nthr, tauc, weibull_lambda, weibull_k)


@njit(cache=True)
def renew_cell(rng, c, theta, sin2, cos2, tauc, kind, weibull_lambda, weibull_k, vpar=None,
               dg=0.0, e=0.0):
    """Renew the systems of cell ``c``.

    Original renewal (``vpar`` None): N/4 random base angles, then N thresholds (one uniform
    each). With a variant vector ``vpar`` (:func:`variant_vector`; ``dg``: the slip amplitude
    that triggered the renewal, ``e``: the cell's accumulated plastic strain), draws in order:
    [one uniform for the number of groups, if it fluctuates; with ``V_KEEP_GROUPS`` the
    number of groups is the cell's current one, no draw], the base angles of the used
    groups, one threshold per used system (SYSTEMS_TWO_FIXED: no angle draws, one threshold
    shared by both systems). Default vpar settings reproduce the original draws exactly.
    """
    if vpar is None:
        N = theta.shape[1]
        _draw_angles(rng, c, N // 4, theta, sin2, cos2)
        draw_thresholds(rng, c, N, tauc, kind, weibull_lambda, weibull_k)
        return
    lam, k = structure_params(weibull_lambda, weibull_k, vpar, e)
    rho = 0.0
    if vpar[V_CORR_STRAIN] > 0.0:
        rho = math.exp(-dg / vpar[V_CORR_STRAIN])
    if int(vpar[V_SYSTEMS]) == SYSTEMS_TWO_FIXED:
        theta[c, 0] = 0.0
        sin2[c, 0] = 0.0
        cos2[c, 0] = 1.0
        theta[c, 1] = 0.5 * math.pi
        sin2[c, 1] = 0.0  # exactly: the two systems resolve +Sigma_xy and -Sigma_xy
        cos2[c, 1] = -1.0
        t = draw_threshold_corr(rng, kind, lam, k, rho, tauc[c, 0])
        tauc[c, 0] = t
        tauc[c, 1] = t
        return
    N = theta.shape[1]
    ng = N // 4
    if vpar[V_KEEP_GROUPS] > 0.0:  # the cell's own count: its finite thresholds
        ng = kept_groups(c, tauc)
    elif vpar[V_NGROUPS_MEAN] > 0.0:
        ng = 1 + poisson_inv(rng.random(), vpar[V_NGROUPS_MEAN] - 1.0, N // 4 - 1)
    _draw_angles(rng, c, ng, theta, sin2, cos2)
    for n in range(4 * ng):
        tauc[c, n] = draw_threshold_corr(rng, kind, lam, k, rho, tauc[c, n])
    b = vpar[V_BIAS]
    if b != 0.0 and dg < np.inf:  # a renewal after a slip (not the initial draw)
        # sec. 6 (iii): the renewal biased by the external stress along alpha: systems
        # aligned with it come back weaker (b > 0), those against it stronger
        c2a, s2a = math.cos(vpar[V_BIAS_2ALPHA]), math.sin(vpar[V_BIAS_2ALPHA])
        for n in range(4 * ng):
            tauc[c, n] *= 1.0 - b * (cos2[c, n] * c2a + sin2[c, n] * s2a)
    _clear_unused(c, 4 * ng, theta, sin2, cos2, tauc)  # unused columns never activate


@njit(cache=True)
def renew_all(rng, theta, sin2, cos2, tauc, kind, weibull_lambda, weibull_k, vpar=None,
              ngroups=None):
    """Draw the systems of every cell (initial state; with vpar: fresh, uncorrelated draws).

    ``ngroups``: groups of four per cell (:func:`groups_per_area`), with a ``vpar`` that keeps
    them (``V_KEEP_GROUPS``): each row is marked with its count (finite placeholders in the
    used columns) before its draw, which reads it."""
    if vpar is None:
        for c in range(theta.shape[0]):
            renew_cell(rng, c, theta, sin2, cos2, tauc, kind, weibull_lambda, weibull_k)
    else:
        tauc[:, :] = np.inf
        if ngroups is not None:
            for c in range(theta.shape[0]):
                tauc[c, :4 * ngroups[c]] = 0.0  # no old threshold: the draws are fresh
        for c in range(theta.shape[0]):
            renew_cell(rng, c, theta, sin2, cos2, tauc, kind, weibull_lambda, weibull_k, vpar,
                       np.inf, 0.0)
