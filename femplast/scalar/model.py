"""Scalar elasto-plastic model with landscape-informed thresholds and rejuvenation
(scalar paper, sec. III-VI).

Model (one scalar shear stress and one forward threshold per cell of an N x N bi-periodic
lattice, cell index ``iy * N + ix`` as femplast's structured quads):

* Stress: ``sigma_i = sig_i + G gamma_ext`` with ``sig`` the internal stress (redistribution
  plus the optional frozen-in field ``sigma0``) and ``gamma_ext`` the engineering simple shear
  (``sigma = 2 mu eps_el`` with the tensorial ``eps = gamma / 2``; ``G = mu``).
* Slip: a cell with ``sigma_i >= sigma_c,i`` slips by ``d(eps_p)`` drawn from the exponential
  law of mean ``eps0(sigma_c) = c0 + c1 sigma_c^2`` (eq. 11-12; ``c1 = 0`` uncorrelated), using
  the threshold it just exceeded. **``d(eps_p)`` is the tensorial xy plastic strain** (the
  eigenstrain ``(0, 0, d(eps_p))`` in femplast's ``[xx, yy, xy]``), so the macroscopic stress
  drops by ``2 mu d(eps_p) / N^2`` at fixed strain and the macroscopic stress is
  ``Sigma = G gamma_ext - 2 G <eps_p> + <sigma0>``.
* Renewal: after its slip the cell's threshold is redrawn from ``p_r``; initial thresholds come
  from ``p_i`` (``p_r = p_i``: disorder scenario; ``p_r != p_i``: rejuvenation).
* Redistribution: ``sig += d(eps_p) K(. - c)`` with the translation-invariant kernel ``K``
  (stress change per unit slip, grid ``[iy, ix]``, source in cell (0, 0)):

  - ``fourier``: the continuum periodic Eshelby kernel of a uniformly slipping square cell,
    averaged over the receiving cells (eq. 1-2 on the lattice):
    ``K^(k) = sum_m G^(k + 2 pi m) sinc^2(qx/2) sinc^2(qy/2)`` with
    ``G^(q) = -2 mu beta 4 qx^2 qy^2 / q^4``, ``beta = K_b / (K_b + mu)`` (= 1 / (1 + mu/K)),
    alias sum truncated at ``|m_x|, |m_y| <= 48``.
  - ``fe``: femplast's FE propagator
    (:class:`femplast.redistribution.backends.PropagatorRedistribution` on a structured quad
    box) projected on xy: ``2 kernel[1][1]`` per unit tensorial eps_xy,
    computed on a box of ``N * fe_refine`` elements per side and averaged over the
    ``fe_refine^2`` elements of each lattice cell. It converges to the ``fourier`` kernel as
    ``fe_refine`` grows (self term for mu = 14.7, K = 52: -14.43, -12.10, -10.82, -10.34 for
    refine 1, 2, 4, 8 vs -10.11).

  Both kernels have the same zero mode: ``sum_i K_i = -2 mu`` exactly (the mean stress drops by
  ``2 mu d(eps_p) / N^2`` at fixed external strain), and a negative self term.

On a specimen (:mod:`femplast.scalar.specimen`) the same compiled loop and rules run with the
specimen's FE kernel (dense columns ``K[j]``, or one FE solve per step from the caller), a
per-cell load response ``R_i`` in place of ``G``, area-weighted observables, and the force
conjugate to gamma_ext per unit area as the macroscopic stress (``Params.R, w, drive,
columns``; empty on the lattice, whose arithmetic is unchanged).

Dynamics (sec. III.A, synchronous extremal quasistatic): from a stable state, ``gamma_ext``
grows until the weakest cell (smallest ``x_i = sigma_c,i - sigma_i``) reaches its threshold;
then every unstable cell slips at once (ascending cell order; per cell one uniform for the slip
then one for the new threshold), stresses are redistributed, and this is repeated until no cell
is unstable (one avalanche); then the next loading. The loop is compiled with numba; steps with
many simultaneous slips use an FFT convolution in Python.

Observables after each avalanche (columns of :data:`REC_NAMES`): macroscopic stress before and
after, mean and variance of ``eps_p``, mean threshold, localization index LOC (eq. 13) of the
local total strain ``eps_i = sigma_i / (2 mu) + eps_p,i``, std of the internal stress field,
avalanche size and number of synchronous steps, variance of the total strain ``eps_i``, and LOC
of the plastic strain ``eps_p,i`` alone (``loc_plastic``: the frozen stress and the elastic
strain excluded; undefined, NaN, until the first slip). The localization observables
(:mod:`femplast.analysis.localization`) use the plastic-only definition on strain windows;
``loc`` (total strain from gamma_ext = 0) is kept for comparison with the paper's Fig. 6.

LOC (eq. 13) is ``1 / (N PR)`` with the participation ratio ``PR = (sum e^2)^2 / (N^2 sum e^4)``
over the N^2 cells, i.e. ``LOC = N sum e^4 / (sum e^2)^2``: 1 for a single band of uniform
strain one cell wide, 1/N for a uniform field.

Dimensionless parameters (summary.json): disorder strength ``s = std(p_r) / (mu* <eps0>_r)``
(eq. 3, ``mu* = mu / (1 + mu/K)``, ``<eps0>_r = c0 + c1 <sigma_c^2>_r``) and age
``r = (<sigma_c>_i - <sigma_c>_r) / <sigma_c>_r`` (eq. 6).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from numba import njit

from femplast.errors import FemplastInputError
from femplast.scalar.distributions import Distribution, draw, ndtri
from femplast.special import ndtr
from femplast.streams import realization_rng

KERNELS = ("fourier", "fe")

# phases / return codes of the compiled loop
PH_LOAD, PH_STEP, PH_EXTERNAL, PH_AFTER = 0, 1, 2, 3
RC_STOP, RC_RECFULL, RC_EXTERNAL, RC_BUDGET, RC_RUNAWAY, RC_OBSERVE = 0, 1, 2, 3, 4, 5
S_PHASE, S_NACT, S_NREC, S_EVENTS, S_AVSIZE, S_NSTEPS, S_EVBASE = range(7)
# S_EVBASE: slips at the start of ScalarDriver.advance, so that the event budget spans the
# re-entries after FFT steps, full record buffers and observations (it used to restart at each)
REC_NAMES = ("gamma_ext", "stress_before", "stress", "eps_pl_mean", "eps_pl_var", "tau_c_mean",
             "loc", "sigma_std", "size", "relaxation_steps", "eps_var", "loc_plastic")
REC_COLS = len(REC_NAMES)


# ----------------------------------------------------------------------------- kernels
def fourier_kernel(n: int, G: float, B: float, aliases: int = 48) -> np.ndarray:
    """Cell-averaged continuum periodic Eshelby kernel (n, n) per unit tensorial eps_xy slip."""
    k = np.fft.fftfreq(n) * 2 * np.pi
    beta = B / (B + G)
    a = np.arange(-aliases, aliases + 1) * 2 * np.pi
    qy = (k[:, None] + a[None, :]).T[:, :, None]  # (2M+1, n, 1): rows iy
    sy = np.sinc(qy / (2 * np.pi)) ** 2
    acc = np.zeros((n, n))
    for ax in a:
        qx = (k + ax)[None, None, :]
        q2 = qx * qx + qy * qy
        with np.errstate(invalid="ignore", divide="ignore"):
            g = -8.0 * G * beta * qx * qx * qy * qy / (q2 * q2)
        g[q2 == 0] = -2.0 * G  # zero mode: macroscopic drop at fixed strain
        acc += np.sum(g * sy * np.sinc(qx / (2 * np.pi)) ** 2, axis=0)
    return np.ascontiguousarray(np.fft.ifft2(acc).real)


def fe_kernel(n: int, G: float, B: float, refine: int = 1, L: float = 1.0) -> np.ndarray:
    """femplast's FE propagator projected on xy, (n, n) per unit tensorial eps_xy slip."""
    from mpi4py import MPI

    from femplast.fe.mesh import structured_box
    from femplast.redistribution.backends import PropagatorRedistribution

    m = int(refine)
    box = structured_box(n * m, L, "quad", MPI.COMM_SELF)
    Kf = 2.0 * PropagatorRedistribution(box, G, B).kernel[1][1]
    if m == 1:
        return np.ascontiguousarray(Kf)
    S = sum(np.roll(Kf, (a, b), axis=(0, 1)) for a in range(m) for b in range(m))
    T = sum(np.roll(S, (-a, -b), axis=(0, 1)) for a in range(m) for b in range(m)) / m**2
    return np.ascontiguousarray(T[::m, ::m])


def loc_index(field, weights=None, n: float | None = None) -> float:
    """Localization index LOC = N sum e^4 / (sum e^2)^2 of an N x N field (eq. 13).

    On cells of unequal area (a specimen's unstructured mesh) the sums become area averages:
    ``LOC = <e^4> / (<e^2>^2 n)`` with ``<f> = sum w f / sum w`` over the cells' areas
    ``weights`` and ``n`` cells across (default ``sqrt(cells)``). With equal weights and
    ``n = N`` this is eq. 13 exactly (``N^2 <e^4> / (N^4 <e^2>^2) * N``).
    """
    e = np.asarray(field, float)
    if weights is None:
        n = int(round(math.sqrt(e.size))) if n is None else n
        s2 = np.sum(e * e)
        return float(n * np.sum(e**4) / s2**2) if s2 > 0 else float("nan")
    w = np.asarray(weights, float) / np.sum(weights)
    n = math.sqrt(e.size) if n is None else n
    m2 = float(np.sum(w * e * e))
    return float(np.sum(w * e**4) / (m2 * m2 * n)) if m2 > 0 else float("nan")


def window_edges(gamma_max: float, window: float) -> np.ndarray:
    """Strains ``0, w, 2w, ...`` up to ``gamma_max`` (whole windows only) at which the plastic
    strain is snapshot for the windowed localization observables
    (:mod:`femplast.analysis.localization`; here, below it, because the scalar driver takes
    the snapshots)."""
    k = int(math.floor(gamma_max / window * (1 + 1e-12)))
    return np.minimum(np.arange(k + 1) * float(window), gamma_max)  # 6 * 0.05 > 0.3


# ----------------------------------------------------------------------------- compiled loop
class Fields(NamedTuple):
    """Per-cell arrays of one realization (cell ``iy * N + ix``), updated in place."""

    sig: np.ndarray  # internal stress (redistribution + sigma0); sigma_i = sig_i + G gamma_ext
    epl: np.ndarray  # plastic strain, tensorial eps_xy
    thr: np.ndarray  # forward thresholds sigma_c,i


class Params(NamedTuple):
    """Constants of one call of :func:`scalar_advance`."""

    K: np.ndarray  # redistribution kernel (n, n) per unit slip, source in cell (0, 0)
    G: float  # shear modulus: d(sigma_i) / d(gamma_ext)
    c0: float  # slip law eps0(sigma_c) = c0 + c1 sigma_c^2 (eq. 12)
    c1: float
    gamma_stop: float  # load no further than this strain
    n: int  # lattice side N
    fft_threshold: int  # steps with more slips are redistributed by the caller (FFT)
    budget: int  # return RC_BUDGET after this many slips (progress reports)
    max_avalanche: int  # RC_RUNAWAY beyond this avalanche size
    gamma_observe: float  # RC_OBSERVE before loading past this strain (state unchanged)
    # specimens (femplast.scalar.specimen; empty arrays on the periodic lattice):
    R: np.ndarray  # (cells,) d(sigma_i) / d(gamma_ext), the FE load response (replaces G)
    w: np.ndarray  # (cells,) area fractions (means over unequal cells)
    drive: np.ndarray  # (cells + 2,): Sigma = drive[0] gamma + drive[1] + drive[2:] . eps_p
    columns: bool  # K is (cells, cells): K[j] the stress of a unit slip in cell j (dense)


class Loop(NamedTuple):
    """Resumable state of the compiled loop, kept by the driver between calls."""

    st: np.ndarray  # int64 counters, indexed by S_PHASE .. S_NSTEPS
    gamma: np.ndarray  # (1,) gamma_ext
    act: np.ndarray  # unstable cells of the current synchronous step (ascending)
    pend: np.ndarray  # their slips d(eps_p), not yet redistributed when RC_EXTERNAL
    rec: np.ndarray  # one row per finished avalanche (REC_NAMES), st[S_NREC] rows used


@njit(cache=True)
def _shift_add(sig, K, c, n, amp):
    """``sig[i] += amp K[i - c]`` on the periodic n x n grid (eq. 3 of the scalar paper).

    Each row is two contiguous runs handed to a loop over 1-D views, which LLVM vectorizes
    (indexing with a wrapped offset does not).
    """
    cy = c // n
    cx = c - cy * n
    m = n - cx
    for iy in range(n):
        ky = iy - cy
        if ky < 0:
            ky += n
        a = iy * n
        _axpy(sig[a:a + cx], K[ky, m:], amp)
        _axpy(sig[a + cx:a + n], K[ky, :m], amp)


@njit(cache=True, inline="always")
def _axpy(x, k, amp):
    for j in range(x.shape[0]):
        x[j] += amp * k[j]


@njit(cache=True)
def _record(rec, r, gam, f, G, n):
    """Columns 2-7 and 10 of record ``r``: stress, eps_p mean and variance, mean threshold,
    LOC (eq. 13) of the local total strain, std of the internal stress; the variance of the
    local total strain (next to the plastic one: it includes the elastic strain of the
    internal stress); LOC of the plastic strain alone."""
    sig, epl, thr = f.sig, f.epl, f.thr
    nc = sig.shape[0]
    ms = 0.0
    me = 0.0
    mt = 0.0
    for c in range(nc):
        ms += sig[c]
        me += epl[c]
        mt += thr[c]
    ms /= nc
    me /= nc
    mt /= nc
    ve = 0.0
    vs = 0.0
    s2 = 0.0
    s4 = 0.0
    p2 = 0.0
    p4 = 0.0
    for c in range(nc):
        ve += (epl[c] - me) ** 2
        vs += (sig[c] - ms) ** 2
        e = (sig[c] + G * gam) / (2.0 * G) + epl[c]
        s2 += e * e
        s4 += e * e * e * e
        p2 += epl[c] * epl[c]
        p4 += epl[c] * epl[c] * epl[c] * epl[c]
    rec[r, 2] = ms + G * gam
    rec[r, 3] = me
    rec[r, 4] = ve / nc
    rec[r, 5] = mt
    rec[r, 6] = n * s4 / (s2 * s2) if s2 > 0.0 else np.nan
    rec[r, 7] = math.sqrt(vs / nc)
    mtot = (ms + G * gam) / (2.0 * G) + me
    rec[r, 10] = max(s2 / nc - mtot * mtot, 0.0)
    rec[r, 11] = n * p4 / (p2 * p2) if p2 > 0.0 else np.nan


@njit(cache=True)
def _record_specimen(rec, r, gam, f, p):
    """:func:`_record` on a specimen (femplast.scalar.specimen): local stresses
    ``sig_i + R_i gamma_ext``, area-weighted means (cells of unequal areas), LOC (eq. 13) as
    ``<e^4> / (n <e^2>^2)`` with ``n = sqrt(cells)`` (the lattice's for equal areas), column 2
    the macroscopic stress conjugate to gamma_ext (:func:`_macro`) and column 12 the mean
    resolved stress."""
    sig, epl, thr, R, w = f.sig, f.epl, f.thr, p.R, p.w
    nc = sig.shape[0]
    G = p.G
    ms = 0.0
    me = 0.0
    mt = 0.0
    for c in range(nc):
        ms += w[c] * (sig[c] + R[c] * gam)
        me += w[c] * epl[c]
        mt += w[c] * thr[c]
    ve = 0.0
    vs = 0.0
    s2 = 0.0
    s4 = 0.0
    p2 = 0.0
    p4 = 0.0
    for c in range(nc):
        sc = sig[c] + R[c] * gam
        ve += w[c] * (epl[c] - me) ** 2
        vs += w[c] * (sc - ms) ** 2
        e = sc / (2.0 * G) + epl[c]
        s2 += w[c] * e * e
        s4 += w[c] * e * e * e * e
        p2 += w[c] * epl[c] * epl[c]
        p4 += w[c] * epl[c] * epl[c] * epl[c] * epl[c]
    rec[r, 2] = _macro(f, p, gam)
    rec[r, 3] = me
    rec[r, 4] = ve
    rec[r, 5] = mt
    rec[r, 6] = s4 / (p.n * s2 * s2) if s2 > 0.0 else np.nan
    rec[r, 7] = math.sqrt(vs)
    mtot = ms / (2.0 * G) + me
    rec[r, 10] = max(s2 - mtot * mtot, 0.0)
    rec[r, 11] = p4 / (p.n * p2 * p2) if p2 > 0.0 else np.nan
    rec[r, 12] = ms


@njit(cache=True)
def _macro(f, p, gam):
    """Macroscopic stress of a specimen: the force conjugate to gamma_ext per unit area,
    linear in the slips (reciprocity: a slip eps_p in cell j lowers it by
    ``2 w_j R_j eps_p``; femplast.scalar.specimen)."""
    d = p.drive
    out = d[0] * gam + d[1]
    for c in range(f.epl.shape[0]):
        out += d[2 + c] * f.epl[c]
    return out


@njit(cache=True)
def _weakest_specimen(f, p, gam):
    """(dg, cell): the smallest increase of gamma_ext that brings a cell with a positive load
    response ``R_i`` to its threshold (inf: none can be loaded; first on ties)."""
    dmin = np.inf
    imin = 0
    for c in range(f.sig.shape[0]):
        r = p.R[c]
        if r > 0.0:
            dg = (f.thr[c] - (f.sig[c] + r * gam)) / r
            if dg < dmin:
                dmin = dg
                imin = c
    return dmin, imin


@njit(cache=True)
def _weakest(f, G, gam):
    """(x_min, cell) of the smallest margin ``x_i = sigma_c,i - sigma_i`` (first on ties)."""
    xmin = np.inf
    imin = 0
    for c in range(f.sig.shape[0]):
        x = f.thr[c] - (f.sig[c] + G * gam)
        if x < xmin:
            xmin = x
            imin = c
    return xmin, imin


@njit(cache=True)
def _collect_unstable(f, p, gam, act, forced):
    """Cells with ``sigma_i > sigma_c,i`` (plus the cell ``forced``, -1: none) into ``act`` in
    ascending order; returns their number. ``sigma_i = sig_i + G gamma_ext`` (on a specimen
    ``R_i`` instead of ``G``)."""
    spec = p.R.shape[0] > 0
    na = 0
    for c in range(f.sig.shape[0]):
        g = p.R[c] if spec else p.G
        if c == forced or f.thr[c] - (f.sig[c] + g * gam) < 0.0:
            act[na] = c
            na += 1
    return na


@njit(cache=True)
def _start_avalanche(f, p, lp):
    """Extremal loading: raise gamma_ext until the weakest cell reaches its threshold, then
    open an avalanche with the unstable cells (RC_BUDGET: opened). RC_STOP if that would pass
    ``gamma_stop`` (then gamma_ext = gamma_stop, stable); RC_OBSERVE if it would pass
    ``gamma_observe`` (nothing changed: calling again repeats the same computation, so an
    observation does not alter the trajectory, unlike a stop)."""
    gam = lp.gamma[0]
    spec = p.R.shape[0] > 0
    if spec:
        dg, imin = _weakest_specimen(f, p, gam)
        xmin = dg
    else:
        xmin, imin = _weakest(f, p.G, gam)
        dg = xmin / p.G
    if xmin > 0.0:
        gnew = gam + dg
        if gnew >= p.gamma_stop:
            lp.gamma[0] = p.gamma_stop
            return RC_STOP
        if gnew > p.gamma_observe:
            return RC_OBSERVE
        gam = gnew
        lp.gamma[0] = gam
    st = lp.st
    na = _collect_unstable(f, p, gam, lp.act, imin)
    r = st[S_NREC]
    lp.rec[r, 0] = gam
    if spec:
        lp.rec[r, 1] = _macro(f, p, gam)
    else:
        nc = f.sig.shape[0]
        ms = 0.0
        for c in range(nc):
            ms += f.sig[c]
        lp.rec[r, 1] = ms / nc + p.G * gam
    st[S_NACT] = na
    st[S_AVSIZE] = 0
    st[S_NSTEPS] = 0
    return RC_BUDGET


@njit(cache=True)
def _close_avalanche(f, p, lp):
    """Record the finished avalanche (observables, size, synchronous steps)."""
    st = lp.st
    r = st[S_NREC]
    if p.R.shape[0] > 0:
        _record_specimen(lp.rec, r, lp.gamma[0], f, p)
    else:
        _record(lp.rec, r, lp.gamma[0], f, p.G, p.n)
    lp.rec[r, 8] = st[S_AVSIZE]
    lp.rec[r, 9] = st[S_NSTEPS]
    st[S_NREC] = r + 1


@njit(cache=True)
def _slip_and_renew(rng, f, p, renewal, lp):
    """One synchronous step: each unstable cell, in ascending order, slips by an exponential
    ``d(eps_p)`` of mean ``eps0(sigma_c)`` of the threshold it exceeded (eq. 11-12; one
    uniform), then draws its new threshold from p_r (one uniform). The slips are kept in
    ``pend`` for the redistribution."""
    st = lp.st
    na = st[S_NACT]
    kind, par, tu, tx = renewal
    for i in range(na):
        c = lp.act[i]
        e0 = p.c0 + p.c1 * f.thr[c] * f.thr[c]
        de = -e0 * math.log1p(-rng.random())
        f.epl[c] += de
        lp.pend[i] = de
        f.thr[c] = draw(rng, kind, par, tu, tx)
    st[S_EVENTS] += na
    st[S_AVSIZE] += na
    st[S_NSTEPS] += 1


@njit(cache=True)
def scalar_advance(rng, f, p, renewal, lp):
    """Synchronous extremal dynamics (sec. III.A) up to ``p.gamma_stop``: fields ``f``
    (:class:`Fields`), constants ``p`` (:class:`Params`), renewal law p_r as
    ``Distribution.args``, resumable loop state ``lp`` (:class:`Loop`).

    Per avalanche:

    1. load: gamma_ext grows until the weakest cell reaches its threshold (extremal);
    2. step: all unstable cells slip at once and renew their thresholds (eq. 11-12);
    3. redistribute: ``sig += d(eps_p) K(. - c)`` per slip (shifted adds), or by the caller
       with an FFT when more than ``fft_threshold`` cells slipped (returns RC_EXTERNAL, the
       caller then sets PH_AFTER);
    4. collect the unstable cells; back to 2 while there are any, else record the avalanche.

    Returns RC_STOP at ``gamma_stop``, RC_OBSERVE before loading past ``gamma_observe``
    (stable, unchanged), RC_RECFULL when ``lp.rec`` is full, RC_BUDGET after
    ``budget`` slips, RC_RUNAWAY for an avalanche larger than ``max_avalanche``.
    """
    st = lp.st
    while True:
        ph = st[S_PHASE]
        if ph == PH_LOAD:
            if st[S_NREC] >= lp.rec.shape[0]:
                return RC_RECFULL
            rc = _start_avalanche(f, p, lp)
            if rc != RC_BUDGET:
                return rc
            st[S_PHASE] = PH_STEP
        elif ph == PH_STEP:
            if st[S_NACT] == 0:
                _close_avalanche(f, p, lp)
                st[S_PHASE] = PH_LOAD
                continue
            if st[S_EVENTS] - st[S_EVBASE] >= p.budget:
                return RC_BUDGET
            if st[S_AVSIZE] > p.max_avalanche:
                return RC_RUNAWAY
            _slip_and_renew(rng, f, p, renewal, lp)
            if st[S_NACT] > p.fft_threshold:
                st[S_PHASE] = PH_EXTERNAL
                return RC_EXTERNAL
            for i in range(st[S_NACT]):
                if p.columns:  # a specimen's dense operator: one column per slip
                    _axpy(f.sig, p.K[lp.act[i]], lp.pend[i])
                else:
                    _shift_add(f.sig, p.K, lp.act[i], p.n, lp.pend[i])
            st[S_PHASE] = PH_AFTER
        elif ph == PH_EXTERNAL:
            return RC_EXTERNAL
        else:  # PH_AFTER
            st[S_NACT] = _collect_unstable(f, p, lp.gamma[0], lp.act, -1)
            st[S_PHASE] = PH_STEP


# ----------------------------------------------------------------------------- model
@dataclass
class ScalarState:
    """One realization: internal stress (incl. sigma0), plastic strain, thresholds, strain."""

    sig: np.ndarray
    sigma0: np.ndarray
    epl: np.ndarray
    thr: np.ndarray
    rng: np.random.Generator
    gamma: float = 0.0
    eps0: np.ndarray | None = None  # a specimen's frozen stress is the stress of this slip field


class ScalarModel:
    """Lattice, kernel and parameters shared by realizations.

    Args:
        n: lattice side N.
        G, B: shear modulus mu and 2D bulk modulus K.
        c0, c1: slip law eps0(sigma_c) = c0 + c1 sigma_c^2 (tensorial eps_xy).
        thresholds: initial threshold distribution p_i.
        renewal: renewal distribution p_r (None: p_r = p_i).
        kernel: 'fourier' or 'fe' (or an (n, n) array).
        fe_refine: FE elements per lattice-cell side for the 'fe' kernel.
        w_g: std of the initial internal stress field (0: none).
        sigma0: a measured distribution of the initial internal stress (None: Gaussian of
            std w_g), see :meth:`internal_stress`.
    """

    def __init__(self, n: int, G: float, B: float, c0: float, c1: float,
                 thresholds: Distribution, renewal: Distribution | None = None,
                 kernel="fourier", fe_refine: int = 1, w_g: float = 0.0,
                 sigma0: Distribution | None = None):
        if isinstance(kernel, str):
            if kernel not in KERNELS:
                raise FemplastInputError("scalar.kernel", kernel, "one of " + ", ".join(KERNELS))
            self.kernel_kind = kernel
            K = fourier_kernel(n, G, B) if kernel == "fourier" else fe_kernel(n, G, B, fe_refine)
        else:
            self.kernel_kind = "array"
            K = np.asarray(kernel, float)
        self._set_law(c0, c1, thresholds, renewal, w_g)
        self.n, self.G, self.B = int(n), float(G), float(B)
        self.K = np.ascontiguousarray(K)
        self.K_hat = np.fft.rfft2(self.K)
        self.sigma0_dist = sigma0
        self.num_cells = self.n * self.n
        self.fft_threshold = max(8, int(2.5 * np.log2(self.num_cells)))
        self._lattice()

    def _lattice(self) -> None:
        """The periodic lattice's loop constants: uniform load response ``G``, equal cells,
        the translation-invariant kernel (a specimen sets its own,
        :class:`femplast.scalar.specimen.SpecimenScalarModel`)."""
        self.R = self.w = np.zeros(0)
        self.columns = False
        self.rec_names = REC_NAMES

    @property
    def stress_slope(self) -> float:
        """d(macroscopic stress) / d(gamma_ext) on an elastic branch."""
        return self.G

    def total_stress(self, s: ScalarState, gamma: float) -> np.ndarray:
        """Local stresses ``sigma_i`` of state ``s`` at ``gamma_ext``."""
        return s.sig + self.G * gamma

    def drive(self, s: ScalarState) -> np.ndarray:
        """Coefficients of the macroscopic stress of a specimen (none on the lattice)."""
        return np.zeros(0)

    def redistribute(self, s: ScalarState, amp: np.ndarray) -> None:
        """Add the stress of the slips ``amp`` (per cell) to ``s.sig`` (steps with many
        slips; one FFT convolution on the lattice)."""
        s.sig += self.convolve(amp)

    def _set_law(self, c0: float, c1: float, thresholds: Distribution,
                 renewal: Distribution | None, w_g: float) -> None:
        """The parameters that do not enter the kernel: slip law (c0, c1), threshold laws
        p_i and p_r (rejuvenation when p_r is given), frozen-in stress std w_g."""
        if c0 < 0 or c1 < 0 or c0 + c1 <= 0:
            raise FemplastInputError("scalar.c0", c0, "c0 >= 0, c1 >= 0 and c0 + c1 > 0")
        self.c0, self.c1 = float(c0), float(c1)
        self.p_i = thresholds
        self.p_r = renewal if renewal is not None else thresholds
        self.rejuvenation = renewal is not None
        self.w_g = float(w_g)

    def with_law(self, c0: float, c1: float, thresholds: Distribution,
                 renewal: Distribution | None = None, w_g: float = 0.0) -> ScalarModel:
        """The same model and kernel (shared, not copied: read-only during a run) with another
        slip law, threshold laws and frozen-in stress (sweep points that change only the
        ``scalar`` section)."""
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        new._set_law(c0, c1, thresholds, renewal, w_g)
        return new

    def with_slip(self, c0: float, c1: float) -> ScalarModel:
        """The same model (kernel reused) with other slip coefficients."""
        return self.with_law(c0, c1, self.p_i, self.p_r if self.rejuvenation else None,
                             self.w_g)

    # ---------------------------------------------------------------- parameters
    @property
    def self_drop(self) -> float:
        """Stress drop in the slipping cell per unit slip, -K[0, 0]."""
        return float(-self.K[0, 0])

    @property
    def mu_star(self) -> float:
        return self.G / (1.0 + self.G / self.B)

    def eps0_mean(self, dist: Distribution | None = None) -> float:
        m, m2 = (dist or self.p_r).moments()
        return self.c0 + self.c1 * m2

    def disorder_strength(self) -> float:
        """s = std(p_r) / (mu* <eps0>_r) (eq. 3)."""
        return self.p_r.std / (self.mu_star * self.eps0_mean())

    def age(self) -> float:
        """r = (<sigma_c>_i - <sigma_c>_r) / <sigma_c>_r (eq. 6)."""
        mr = self.p_r.mean
        return (self.p_i.mean - mr) / mr

    def parameters(self) -> dict:
        return dict(N=self.n, G=self.G, B=self.B, c0=self.c0, c1=self.c1, kernel=self.kernel_kind,
                    self_drop_per_unit_slip=self.self_drop,
                    kernel_sum=float(self.K.sum()), mu_star=self.mu_star,
                    eps0_mean_renewal=self.eps0_mean(), eps0_mean_initial=self.eps0_mean(self.p_i),
                    disorder_strength_s=self.disorder_strength(), age_r=self.age(),
                    rejuvenation=self.rejuvenation, internal_stress_std=self.w_g,
                    thresholds_initial=self.p_i.describe(),
                    thresholds_renewal=self.p_r.describe())

    # ---------------------------------------------------------------- states
    def convolve(self, amp: np.ndarray) -> np.ndarray:
        """Stress (N^2,) of the slip field ``amp`` (N^2,) through the kernel (FFT)."""
        n = self.n
        return np.fft.irfft2(np.fft.rfft2(amp.reshape(n, n)) * self.K_hat, s=(n, n)).ravel()

    def internal_stress(self, rng: np.random.Generator) -> np.ndarray:
        """A mechanically compatible Gaussian internal stress field of std w_g and zero mean:
        the kernel's stress of a white-noise eigenstrain field (standard normals drawn by
        inverse CDF), mean removed, rescaled."""
        z = np.array([ndtri(u) for u in rng.random(self.num_cells)])
        s = self.convolve(z)
        s -= s.mean()
        sd = s.std()
        if self.sigma0_dist is not None and sd > 0:
            # a measured marginal (scalar paper: frozen-in stresses of the atomistic glass)
            # on the same spatial correlations (Gaussian copula); mean removed so the field
            # adds no macroscopic stress. Compatible only approximately (a nonlinear map).
            v = self.sigma0_dist.ppf(np.array([ndtr(x) for x in s / sd]))
            return v - v.mean()
        return s * (self.w_g / sd) if sd > 0 else s

    def new_state(self, rng: np.random.Generator) -> ScalarState:
        """Thresholds from p_i (N^2 draws), then the internal stress field if w_g > 0 or a
        measured distribution is given."""
        thr = self.p_i.sample(rng, self.num_cells)
        sigma0 = (self.internal_stress(rng) if self.w_g > 0 or self.sigma0_dist is not None
                  else np.zeros(self.num_cells))
        return ScalarState(sig=sigma0.copy(), sigma0=sigma0, epl=np.zeros(self.num_cells),
                           thr=thr, rng=rng)

    def initial_record(self, s: ScalarState) -> np.ndarray:
        rec = np.zeros((1, len(self.rec_names)))
        f = Fields(s.sig, s.epl, s.thr)
        if len(self.R):
            _record_specimen(rec, 0, s.gamma, f, loop_params(self, self.drive(s), s.gamma))
        else:
            _record(rec, 0, s.gamma, f, self.G, self.n)
        rec[0, 0] = s.gamma
        rec[0, 1] = rec[0, 2]
        return rec[0]


class ScalarDriver:
    """Run one realization of a :class:`ScalarModel` state (synchronous extremal dynamics)."""

    def __init__(self, model: ScalarModel, state: ScalarState, rec_capacity: int = 4096,
                 budget: int = 200000):
        self.model, self.state = model, state
        nc = model.num_cells
        self.loop = Loop(st=np.zeros(7, np.int64), gamma=np.array([state.gamma]),
                         act=np.zeros(nc, np.int64), pend=np.zeros(nc),
                         rec=np.zeros((rec_capacity, len(model.rec_names))))
        self.drive = model.drive(state)
        self.budget = int(budget)
        self.max_avalanche = 1000 * nc
        self.records = [model.initial_record(state)[None, :]]
        self.observe_at = np.zeros(0)  # strains of plastic-strain snapshots (observe())
        self.observed: list[np.ndarray] = []  # eps_p at observe_at[:len(observed)]

    def observe(self, strains) -> None:
        """Snapshot ``eps_p`` at these strains (ascending; the stable state after every
        avalanche starting at or below each), without changing the trajectory: the compiled
        loop returns before loading past the next one (RC_OBSERVE), nothing is reset."""
        self.observe_at = np.asarray(strains, float)
        self.observed = []

    def _take_observations(self, upto: float) -> None:
        obs = self.observe_at
        while len(self.observed) < len(obs) and obs[len(self.observed)] <= upto:
            self.observed.append(self.state.epl.copy())

    @property
    def _next_observation(self) -> float:
        k = len(self.observed)
        return float(self.observe_at[k]) if k < len(self.observe_at) else math.inf

    @property
    def gamma_ext(self) -> float:
        return float(self.loop.gamma[0])

    @property
    def num_events(self) -> int:
        return int(self.loop.st[S_EVENTS])

    def _flush(self):
        st = self.loop.st
        k = int(st[S_NREC])
        if k:
            self.records.append(self.loop.rec[:k].copy())
            st[S_NREC] = 0

    def _params(self, gamma_stop: float, budget: int | None = None) -> Params:
        return loop_params(self.model, self.drive, gamma_stop,
                           self.budget if budget is None else int(budget), self.max_avalanche,
                           self._next_observation)

    def _redistribute_fft(self):
        """Step 3 of :func:`scalar_advance` for many simultaneous slips: one FFT convolution
        (a specimen: its dense operator or one FE solve, ``model.redistribute``)."""
        m, lp = self.model, self.loop
        na = int(lp.st[S_NACT])
        amp = np.zeros(m.num_cells)
        np.add.at(amp, lp.act[:na], lp.pend[:na])
        m.redistribute(self.state, amp)
        lp.st[S_PHASE] = PH_AFTER

    def advance(self, gamma_stop: float) -> int:
        s = self.state
        p = self._params(gamma_stop)
        self.loop.st[S_EVBASE] = self.loop.st[S_EVENTS]  # one budget per call
        while True:
            rc = scalar_advance(s.rng, Fields(s.sig, s.epl, s.thr), p, self.model.p_r.args,
                                self.loop)
            if rc == RC_OBSERVE:
                self._take_observations(self._next_observation)
                p = self._params(gamma_stop)  # the budget spans re-entries (S_EVBASE)
                continue
            if rc == RC_EXTERNAL:
                self._redistribute_fft()
                continue
            if rc == RC_RECFULL:
                self._flush()
                continue
            if rc == RC_RUNAWAY:
                raise RuntimeError(f"avalanche of more than {self.max_avalanche} slips at "
                                   f"gamma_ext = {self.gamma_ext:.6g}: no stable state")
            s.gamma = self.gamma_ext
            if rc == RC_STOP:
                self._take_observations(s.gamma)
            return rc

    def run(self, gamma_max: float, stops=(), on_stop=None, on_progress=None):
        """Run to ``gamma_max``, calling ``on_stop(g)`` at each stop (stable state there)."""
        for g in sorted(x for x in set(stops) if 0 <= x <= gamma_max) + [gamma_max]:
            while self.advance(g) == RC_BUDGET:
                if on_progress:
                    on_progress(self)
            if on_stop is not None and g in stops:
                on_stop(g)
        if on_progress:
            on_progress(self)
        self._flush()

    def table(self) -> np.ndarray:
        """Records: row 0 the initial state, then one row per avalanche (:data:`REC_NAMES`)."""
        self._flush()
        return np.vstack(self.records)


def loop_params(model: ScalarModel, drive: np.ndarray, gamma_stop: float, budget: int = 0,
                max_avalanche: int = 0, gamma_observe: float = math.inf) -> Params:
    """Constants of :func:`scalar_advance` for ``model`` (``drive``: :meth:`ScalarModel.drive`
    of the realization's state)."""
    m = model
    return Params(K=m.K, G=m.G, c0=m.c0, c1=m.c1, gamma_stop=float(gamma_stop), n=m.n,
                  fft_threshold=int(m.fft_threshold), budget=int(budget),
                  max_avalanche=int(max_avalanche), gamma_observe=float(gamma_observe),
                  R=m.R, w=m.w, drive=drive, columns=bool(m.columns))


def run_one(model: ScalarModel, rng: np.random.Generator, gamma_max: float) -> np.ndarray:
    st = model.new_state(rng)
    drv = ScalarDriver(model, st)
    drv.run(gamma_max)
    return drv.table()


# ----------------------------------------------------------------------------- from a case
def _dist(sec, key: str, base):
    from femplast.scalar.distributions import from_options

    return from_options(sec.kind, key, scale=sec.scale, shape=sec.shape, mean=sec.mean,
                        std=sec.std, low=sec.low, high=sec.high, file=sec.file,
                        column=sec.column, base=base)


_WIDTH = {"weibull": "shape", "gamma": "shape", "gauss": "std", "uniform": "high"}


def _with_width(sec, key: str, mean: float, w: float) -> None:
    """Set the width parameter ``w`` of a parametric law section at the given mean."""
    mean, w = float(mean), float(w)  # plain floats: the resolved case is written as YAML
    if sec.kind == "weibull":
        sec.shape, sec.scale = w, mean / math.gamma(1.0 + 1.0 / w)
    elif sec.kind == "gamma":
        sec.shape, sec.scale = w, mean / w
    elif sec.kind == "gauss":
        sec.mean, sec.std = mean, w  # (the mean before the truncation at 0)
    else:
        sec.low, sec.high = mean - w, mean + w


def derive_direct_inputs(case) -> None:
    """``scalar.disorder_strength`` (s) and ``scalar.age`` (r) given directly: derive the
    laws' parameters (eq. 3 and 6) into the case's sections (so the resolved case says what
    ran). s: the renewal law's width at fixed mean by a root search on the actual moments
    (c1 > 0 makes <eps0>_r depend on the width); r: the initial law rescaled by
    (1 + r) <sigma_c>_r / <sigma_c>_i."""
    from scipy.optimize import brentq

    sc = case.scalar
    if sc.disorder_strength is not None:
        sec = sc.thresholds if sc.renewal.kind == "same" else sc.renewal
        name = "scalar.thresholds" if sc.renewal.kind == "same" else "scalar.renewal"
        if sec.kind not in _WIDTH:
            raise FemplastInputError("scalar.disorder_strength", sc.disorder_strength,
                                     f"null with {name}.kind: {sec.kind} (a parametric law: "
                                     f"{', '.join(_WIDTH)})")
        mean = _dist(sec, name, None).mean
        mu = case.elasticity.G / (1.0 + case.elasticity.G / case.elasticity.B)

        def miss(logw):
            _with_width(sec, name, mean, math.exp(logw))
            d = _dist(sec, name, None)
            return d.std / (mu * (sc.c0 + sc.c1 * d.moments()[1])) - sc.disorder_strength

        lo, hi = {"weibull": (-0.5, 4.0), "gamma": (-2.0, 8.0)}.get(
            sec.kind, (math.log(mean) - 8.0, math.log(mean) + (0.0 if sec.kind == "uniform"
                                                                else 3.0)))
        try:
            _with_width(sec, name, mean, math.exp(brentq(miss, lo, hi, xtol=1e-12)))
        except ValueError:
            raise FemplastInputError("scalar.disorder_strength", sc.disorder_strength,
                                     f"a value a {sec.kind} law of mean {mean:.4g} can reach "
                                     f"with c0 = {sc.c0:g}, c1 = {sc.c1:g}") from None
    if sc.age is not None:
        if sc.renewal.kind == "same":
            raise FemplastInputError("scalar.age", sc.age, "null with scalar.renewal.kind: "
                                     "same (no rejuvenation: r = 0)")
        sec = sc.thresholds
        if sec.kind not in _WIDTH:
            raise FemplastInputError("scalar.age", sc.age, "null with scalar.thresholds.kind: "
                                     f"{sec.kind} (a parametric law: {', '.join(_WIDTH)})")
        f = (1.0 + sc.age) * _dist(sc.renewal, "scalar.renewal", None).mean \
            / _dist(sec, "scalar.thresholds", None).mean
        for k in {"weibull": ("scale",), "gamma": ("scale",), "gauss": ("mean", "std"),
                  "uniform": ("low", "high")}[sec.kind]:
            setattr(sec, k, float(getattr(sec, k) * f))


def distributions_from_case(case) -> tuple[Distribution, Distribution | None]:
    """(p_i, p_r or None for 'same') of a case's ``scalar`` section (validates them)."""
    base = case.source.parent if case.source is not None else None
    sc = case.scalar
    p_i = _dist(sc.thresholds, "scalar.thresholds", base)
    p_r = None if sc.renewal.kind == "same" else _dist(sc.renewal, "scalar.renewal", base)
    return p_i, p_r


def model_from_case(case) -> ScalarModel:
    sc = case.scalar
    p_i, p_r = distributions_from_case(case)
    return ScalarModel(case.mesh.n, case.elasticity.G, case.elasticity.B, sc.c0, sc.c1, p_i,
                       p_r, sc.kernel, sc.fe_refine, sc.internal_stress_std,
                       internal_stress_distribution(case))


def internal_stress_distribution(case) -> Distribution | None:
    """The measured frozen-in stress distribution of ``scalar.internal_stress_file``."""
    sc = case.scalar
    if sc.internal_stress_file is None:
        return None
    from femplast.scalar.distributions import from_options

    base = case.source.parent if case.source is not None else None
    return from_options(sc.internal_stress_kind, "scalar.internal_stress_file",
                        file=sc.internal_stress_file, column=sc.internal_stress_column,
                        base=base)


# ----------------------------------------------------------------------------- curves
CURVE_NAMES = ("stress", "eps_pl_var", "tau_c_mean", "loc", "sigma_std", "eps_var",
               "loc_plastic")


def curves_on_grid(rec: np.ndarray, grid: np.ndarray, G: float) -> dict[str, np.ndarray]:
    """Observables of one realization at the strains ``grid``: the stress exactly (elastic
    branches of slope G between avalanches), the others as after the last avalanche."""
    g = rec[:, 0]
    idx = np.searchsorted(g, grid, side="right") - 1
    idx = np.maximum(idx, 0)  # row 0 is the initial state at gamma = 0
    out = {"stress": rec[idx, 2] + G * (grid - g[idx])}
    for name, col in (("eps_pl_var", 4), ("tau_c_mean", 5), ("loc", 6), ("sigma_std", 7),
                      ("eps_var", 10), ("loc_plastic", 11)):
        out[name] = rec[idx, col]
    return out


def ensemble(model: ScalarModel, seed: int, indices, gamma_max: float, grid: np.ndarray,
             comm=None) -> dict[str, np.ndarray]:
    """Curves (realizations, grid) of the realizations ``indices``, spread over ``comm``."""
    indices = list(indices)
    mine = indices if comm is None else indices[comm.rank::comm.size]
    res = {i: curves_on_grid(run_one(model, realization_rng(seed, i), gamma_max), grid,
                             model.stress_slope)
           for i in mine}
    if comm is not None and comm.size > 1:
        allr = comm.allgather(res)
        res = {k: v for d in allr for k, v in d.items()}
    return {name: np.array([res[i][name] for i in indices]) for name in CURVE_NAMES}


def statistics(curves: dict, grid: np.ndarray, stationary_from: float) -> dict:
    """Flow stress, stress peak, LOC maximum with standard errors over realizations."""
    S = curves["stress"]
    nr = S.shape[0]
    se = 1.0 / math.sqrt(nr)
    flow_r = S[:, grid >= stationary_from].mean(axis=1)
    mean = S.mean(axis=0)
    ip = int(np.argmax(mean))
    peak_r = S[:, ip]
    with warnings.catch_warnings():  # LOC is undefined (nan) for an all-zero strain field
        warnings.simplefilter("ignore", RuntimeWarning)
        loc = np.nanmean(curves["loc"], axis=0) if np.isfinite(curves["loc"]).any() else None
    out = dict(realizations=nr, stationary_from=stationary_from,
               flow_stress=float(flow_r.mean()),
               flow_stress_err=float(flow_r.std(ddof=1) * se) if nr > 1 else float("nan"),
               peak_stress=float(mean[ip]),
               peak_stress_err=float(peak_r.std(ddof=1) * se) if nr > 1 else float("nan"),
               gamma_peak=float(grid[ip]),
               overshoot=float(mean[ip] - flow_r.mean()),
               flow_per_realization=flow_r, peak_per_realization=peak_r)
    if loc is not None:
        il = int(np.nanargmax(loc))
        out.update(loc_max=float(loc[il]), gamma_loc_max=float(grid[il]),
                   loc_final=float(loc[-1]))
    tc = curves["tau_c_mean"].mean(axis=0)
    out.update(tau_c_mean_initial=float(tc[0]), tau_c_mean_final=float(tc[-1]),
               tau_c_mean_max=float(tc.max()), gamma_tau_c_max=float(grid[int(np.argmax(tc))]),
               eps_pl_var_final=float(curves["eps_pl_var"].mean(axis=0)[-1]),
               eps_var_final=float(curves["eps_var"].mean(axis=0)[-1]),
               sigma_std_final=float(curves["sigma_std"].mean(axis=0)[-1]))
    return out


# ----------------------------------------------------------------------------- fit
@dataclass(frozen=True)
class FitRuns:
    """The ensemble run at every evaluation of a fit: the same ``realizations`` of ``seed``
    (common random numbers) to ``gamma_max``, curves on ``grid``, spread over ``comm``."""

    seed: int
    realizations: int
    gamma_max: float
    grid: np.ndarray
    stationary_from: float
    comm: object = None

    def statistics(self, model: ScalarModel) -> dict:
        curves = ensemble(model, self.seed, range(self.realizations), self.gamma_max, self.grid,
                          self.comm)
        return statistics(curves, self.grid, self.stationary_from)


@dataclass(frozen=True)
class FitTarget:
    """Target stresses with their 1-sigma errors; ``peak_stress`` None: fit c0 alone."""

    flow_stress: float
    flow_stress_err: float = 0.0
    peak_stress: float | None = None
    peak_stress_err: float = 0.0


class _Evaluations:
    """Ensemble statistics at (c0, c1), logged and kept in ``evals`` (the fit's history)."""

    def __init__(self, model: ScalarModel, runs: FitRuns, target: FitTarget, log=None):
        self.model, self.runs, self.target, self.log = model, runs, target, log
        self.evals: list[dict] = []

    def __call__(self, c0, c1) -> dict:
        st = self.runs.statistics(self.model.with_slip(c0, c1))
        self.evals.append(dict(c0=c0, c1=c1, flow_stress=st["flow_stress"],
                               peak_stress=st["peak_stress"]))
        if self.log:
            self.log(f"fit: c0 = {c0:.5g}, c1 = {c1:.5g} -> flow {st['flow_stress']:.4f} "
                     f"+- {st['flow_stress_err']:.4f}, peak {st['peak_stress']:.4f}")
        return st

    def __len__(self) -> int:
        return len(self.evals)

    def miss(self, st: dict) -> float:
        """Flow stress minus its target."""
        return st["flow_stress"] - self.target.flow_stress

    def fail(self, msg: str):
        raise FemplastInputError("scalar.fit.flow_stress", self.target.flow_stress, msg)


def _bracket_c0(ev: _Evaluations, c0: float, c1: float) -> tuple:
    """From ``c0``, halve or double c0 (the flow stress decreases with c0) until the target
    flow stress is bracketed: ``(a, F(a) - target, stats(a), b, F(b) - target, stats(b))``."""
    a = c0
    sa = ev(a, c1)
    fa = ev.miss(sa)
    b, fb, sb = a, fa, sa
    for _ in range(8):
        b = b * 2.0 if fb > 0 else b / 2.0
        sb = ev(b, c1)
        fb = ev.miss(sb)
        if fa * fb <= 0:
            return a, fa, sa, b, fb, sb
        a, fa, sa = b, fb, sb
    ev.fail(f"a flow stress reached for c0 in [{min(e['c0'] for e in ev.evals):.3g}, "
            f"{max(e['c0'] for e in ev.evals):.3g}] (got "
            f"{min(e['flow_stress'] for e in ev.evals):.4g} .. "
            f"{max(e['flow_stress'] for e in ev.evals):.4g})")


def _illinois_c0(ev: _Evaluations, bracket: tuple, c1: float, max_evaluations: int) -> tuple:
    """Bracketing secant (Illinois) on F(c0) = target until the miss is below half the
    run-to-run noise (the ensemble standard error and the target's error combined; closer
    says nothing more about c0) or out of evaluations (two kept for the slope): the best
    ``(c0, stats)``."""
    a, fa, sa, b, fb, sb = bracket
    noise = math.hypot(sa["flow_stress_err"], ev.target.flow_stress_err)
    side = 0
    best = (a, sa) if abs(fa) < abs(fb) else (b, sb)
    while len(ev) < max_evaluations - 2 and abs(ev.miss(best[1])) > 0.5 * noise:
        c = (a * fb - b * fa) / (fb - fa)
        sc = ev(c, c1)
        fc = ev.miss(sc)
        if abs(fc) < abs(ev.miss(best[1])):
            best = (c, sc)
        if fc * fb < 0:
            a, fa = b, fb
            b, fb = c, fc
            side = 0
        else:
            b, fb = c, fc
            if side == 1:
                fa *= 0.5
            side = 1
    return best


def _fit_c0(model: ScalarModel, ev: _Evaluations, max_evaluations: int) -> dict:
    """One parameter: c0 (c1 fixed) by bracketing + Illinois, then its 1-sigma error from the
    flow-stress errors over the central-difference slope dF/dc0 (+-10 %)."""
    t = ev.target
    c1 = model.c1
    bracket = _bracket_c0(ev, model.c0 if model.c0 > 0 else 0.05, c1)
    c0, best = _illinois_c0(ev, bracket, c1, max_evaluations)
    h = 0.1 * c0
    sp, sm = ev(c0 + h, c1), ev(c0 - h, c1)
    slope = (sp["flow_stress"] - sm["flow_stress"]) / (2 * h)
    sF = math.hypot(best["flow_stress_err"], t.flow_stress_err)
    sig = sF / abs(slope) if slope != 0 else float("inf")
    return dict(parameters=["c0"], c0=c0, c1=c1, c0_err=sig, c0_err95=1.96 * sig,
                flow_stress=best["flow_stress"], flow_stress_err=best["flow_stress_err"],
                target_flow_stress=t.flow_stress, target_flow_stress_err=t.flow_stress_err,
                dflow_dc0=slope, realizations=ev.runs.realizations, seed=ev.runs.seed,
                evaluations=ev.evals)


def _flow_peak(st: dict) -> np.ndarray:
    return np.array([st["flow_stress"], st["peak_stress"]])


def _jacobian(ev: _Evaluations, x: np.ndarray, y: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """d(flow, peak) / d(c0, c1) by forward differences of 0.1 ``scale``."""
    J = np.empty((2, 2))
    for j in range(2):
        xp = x.copy()
        xp[j] += 0.1 * scale[j]
        J[:, j] = (_flow_peak(ev(*xp)) - y) / (0.1 * scale[j])
    return J


def _fit_c0_c1(model: ScalarModel, ev: _Evaluations, max_evaluations: int) -> dict:
    """Two parameters: Newton on (c0, c1) -> (flow, peak), steps clipped to 2 ``scale``, until
    both within half their ensemble errors; covariance from the ensemble and target errors
    through the inverse Jacobian."""
    t = ev.target
    m2 = model.p_i.moments()[1]
    x = np.array([model.c0 if model.c0 > 0 else 0.03, model.c1])
    scale = np.array([max(x[0], 1e-3), max(x[0], 1e-3) / m2])
    target = np.array([t.flow_stress, t.peak_stress])
    st = ev(*x)
    J = None
    for _ in range(max(1, (max_evaluations - 1) // 3)):
        y = _flow_peak(st)
        J = _jacobian(ev, x, y, scale)
        r = y - target
        errs = np.array([st["flow_stress_err"], st["peak_stress_err"]])
        if np.all(np.abs(r) < 0.5 * errs):
            break
        try:
            dx = -np.linalg.solve(J, r)
        except np.linalg.LinAlgError:
            ev.fail("a Jacobian of full rank (flow and peak do not depend independently on c0, "
                    "c1)")
        lim = 2.0 * scale
        dx = np.clip(dx, -lim, lim)
        x = np.maximum(x + dx, [1e-6, 0.0])
        scale = np.array([max(x[0], 1e-3), max(x[0], 1e-3) / m2])
        st = ev(*x)
    F, P = st["flow_per_realization"], st["peak_per_realization"]
    C = np.cov(np.vstack([F, P])) / len(F) + np.diag([t.flow_stress_err**2,
                                                       t.peak_stress_err**2])
    Ji = np.linalg.inv(J)
    cov = Ji @ C @ Ji.T
    e = np.sqrt(np.diag(cov))
    return dict(parameters=["c0", "c1"], c0=float(x[0]), c1=float(x[1]), c0_err=float(e[0]),
                c1_err=float(e[1]), c0_err95=float(1.96 * e[0]), c1_err95=float(1.96 * e[1]),
                covariance=cov.tolist(), flow_stress=st["flow_stress"],
                flow_stress_err=st["flow_stress_err"], peak_stress=st["peak_stress"],
                peak_stress_err=st["peak_stress_err"], target_flow_stress=t.flow_stress,
                target_peak_stress=t.peak_stress, jacobian=J.tolist(),
                realizations=ev.runs.realizations, seed=ev.runs.seed, evaluations=ev.evals)


def fit_slip_law(model: ScalarModel, runs: FitRuns, target: FitTarget,
                 max_evaluations: int = 16, log=None) -> dict:
    """Fit c0 (c1 fixed) to a target flow stress, or (c0, c1) to flow and peak stresses.

    Every evaluation runs the same ``runs`` (common random numbers). One parameter:
    bracketing secant (Illinois) on ``F(c0) = flow_stress``, then the local slope ``dF/dc0`` by
    a central difference (+-10 %). Two parameters: Newton with a forward-difference Jacobian.
    Uncertainty (1 sigma): the ensemble standard errors of the flow (and peak) stress and the
    targets' stated errors propagated through the inverse Jacobian; ``*_err95`` = 1.96 sigma.
    """
    ev = _Evaluations(model, runs, target, log)
    if target.peak_stress is None:
        return _fit_c0(model, ev, max_evaluations)
    return _fit_c0_c1(model, ev, max_evaluations)


__all__ = ["ScalarModel", "ScalarState", "ScalarDriver", "fourier_kernel", "fe_kernel",
           "loc_index", "window_edges", "curves_on_grid", "ensemble", "statistics", "fit_slip_law",
           "FitRuns", "FitTarget", "REC_NAMES"]


# ----------------------------------------------------------------------------- validation
def check(case) -> None:
    """Consistency of the scalar section with the rest of the case (FemplastInputError)."""
    sc = case.scalar
    if case.model != "scalar":
        return
    if case.mesh.kind not in ("quad", "geometry"):
        raise FemplastInputError("mesh.kind", case.mesh.kind, "'quad' with model: scalar (an "
                                 "N x N lattice, N = mesh.n) or 'geometry' (a specimen)")
    if case.loading.alpha_ext != 0:
        raise FemplastInputError("loading.alpha_ext", case.loading.alpha_ext, "0 with model: "
                                 "scalar (thresholds are forward xy thresholds, theta = 0)")
    if case.mesh.kind == "geometry":
        _check_specimen(case)
    elif case.redistribution.backend not in ("auto", "propagator"):
        raise FemplastInputError("redistribution.backend", case.redistribution.backend,
                                 "auto with model: scalar (the kernel is scalar.kernel)")
    if case.initial.state is not None:
        raise FemplastInputError("initial.state", case.initial.state, "null with model: scalar")
    derive_direct_inputs(case)
    if sc.internal_stress_file is not None:
        if sc.internal_stress_std > 0:
            raise FemplastInputError("scalar.internal_stress_std", sc.internal_stress_std,
                                     "0 with scalar.internal_stress_file (one initial "
                                     "internal stress law)")
        internal_stress_distribution(case)  # a readable file
    if sc.c0 + sc.c1 <= 0:
        raise FemplastInputError("scalar.c0", sc.c0, "> 0 when scalar.c1 = 0 (mean slip > 0)")
    if sc.fit.peak_stress is not None and sc.fit.flow_stress is None:
        raise FemplastInputError("scalar.fit.peak_stress", sc.fit.peak_stress,
                                 "only with scalar.fit.flow_stress")
    if (sc.fit.flow_stress is not None or sc.fit.curves is not None) \
            and case.run.realizations < 2:
        raise FemplastInputError("run.realizations", case.run.realizations,
                                 ">= 2 with scalar.fit (the fit needs ensemble errors)")
    distributions_from_case(case)


def _check_specimen(case) -> None:
    """The scalar model on a specimen (femplast.scalar.specimen): its FE kernel is dense or
    direct, its frozen stress the FE stress of a slip field (FemplastInputError)."""
    if case.redistribution.backend not in ("auto", "dense", "direct"):
        raise FemplastInputError("redistribution.backend", case.redistribution.backend,
                                 "auto, dense or direct with model: scalar on a specimen (the "
                                 "kernel is the specimen's FE response)")
    if case.scalar.internal_stress_file is not None:
        raise FemplastInputError("scalar.internal_stress_file", case.scalar.internal_stress_file,
                                 "null with mesh.kind: geometry (the frozen stress of a "
                                 "specimen is the FE stress of a Gaussian slip field, "
                                 "scalar.internal_stress_std)")
