"""Athermal quasistatic (AQS) dynamics of the tensorial model (tensorial paper, sec. 3.3-3.4).

The algorithm, as the compiled loop (:func:`aqs_advance`) runs it:

1. **load** to the next instability: the external strain grows by ``d(gamma_ext)`` until some
   system is active (distance to threshold ``dtau_c = tau_c - tau < 0``); elastic stretches are
   crossed in one jump, evaluated with the same floating-point expression as the stepwise
   protocol (``gamma_ext = k d(gamma_ext)``), so the states are exactly the stepwise ones;
2. **slip**: every cell with an active system slips at once on its lowest-``dtau_c`` system,
   with the model's slip rule (:mod:`femplast.tensorial.rules`: amplitude, eigenstrain);
3. **redistribute** the stresses (:mod:`femplast.redistribution`);
4. **renew** the slipped cells' systems and find the cells that are now active; while there
   are any, go to 2 (one avalanche), then to 1.

Stability checks do not rescan every slip system after each relaxation step: in the deviatoric
plane ``(d, s)`` the stable stresses of a cell form the convex polygon
``sin 2theta_n d + cos 2theta_n s < tau_c,n``, and since ``(sin 2theta_n, cos 2theta_n)`` is a
unit vector, a stress change shorter than the cell's margin ``min_n dtau_c,n`` cannot make it
unstable. A cell is rescanned only when its drift since its last scan reaches its margin. The
reference of a scan is the cell's *total* stress (internal + ``gamma_ext R``), so loading is just
another drift; the search for the next unstable increment only examines the cells whose margin
the load can use up before it (candidates), and a loading jump can only have unsettled those.

The loop hands control back to Python (:class:`AQSDriver`) for redistributions done outside
(FE solve, FFT convolution), full record buffers, event budgets (progress, interruption) and
requested stops (snapshots). Its arguments are bundles (namedtuples of arrays, below).
"""

from __future__ import annotations

import math
from collections import namedtuple

import numpy as np
from numba import njit

from femplast.redistribution.backends import MODE_DENSE, MODE_EXTERNAL, MODE_PROPAGATOR
from femplast.redistribution.kernels import dense_add, propagator_add, table_add, unfold_kernel
from femplast.special import _div
from femplast.streams import pcg64_view
from femplast.tensorial.rules import (
    SlipRule,
    add_slip,
    driving_stress,
    renew,
    self_response,
    slip_amplitude,
)

# phases of the loop: where a re-entry resumes
PH_LOAD, PH_SLIP, PH_EXTERNAL, PH_RENEW, PH_RENEW_CHECKED = 0, 1, 2, 3, 4
# return codes of aqs_advance / AQSDriver.advance
RC_END, RC_RECFULL, RC_EXTERNAL, RC_BUDGET, RC_STOP = 0, 1, 2, 3, 4
# registers of the loop (int64 vector, kept across re-entries)
(S_PHASE, S_K, S_NACT, S_NPEND, S_NREC, S_NEV, S_EVENTS, S_AVSIZE, S_NSTEPS, S_EVBASE, S_SCANNED,
 S_SPAN) = range(12)
NSTATE = 12
# avalanche record columns (float): k, size, steps, mean (d,s,p) before, mean (d,s,p) after,
# mean eps_pl xx, yy, xy
REC_COLS = 12
EV_COLS = 8
"""Float columns of the event log: theta, d_gamma, tau, self-response, tau_c, box-average
stress (d, s, p) at the start of the slip's relaxation round."""
TOL = 1e-12  # margin tolerance of the lazy stability check

Control = namedtuple("Control", "dgamma kend kstop max_events alpha_p p_off tol event_log")
"""Loading and stopping: ``gamma_ext = k dgamma`` for ``k <= kend``; stop at ``kstop`` (< 0:
none) or after ``max_events`` slips; pressure sensitivity ``alpha_p`` with offset ``p_off``
(thresholds ``tau_c + alpha_p (p_off - p)``, model B); ``event_log``: keep every slip."""
Field = namedtuple("Field", "sig R eps_pl eacc w fst")
"""Per cell: internal stress (d, s, p) ``sig`` (3, cells), load response ``R`` per unit strain,
plastic strain (cells, 3), accumulated slip ``eacc``, area weights ``w``; ``fst``: running box
averages (internal stress, plastic strain, load response)."""
Systems = namedtuple("Systems", "theta sin2 cos2 tauc")
"""Slip systems (cells, N): angles, sin 2theta, cos 2theta, thresholds."""
Lazy = namedtuple("Lazy", "ref margin mm flag cell_k cand cidx rn")
"""Lazy stability check: reference total stress and margin of the last scan per cell,
``mm = (margin - tol)^2`` (or -1), rescan flags, candidate lists of the load search, load
speed ``rn`` per cell."""
Backend = namedtuple("Backend", "mode selfq folded dense kmean nx ncomp fft_threshold table")
"""Redistribution: MODE_PROPAGATOR / MODE_DENSE / MODE_EXTERNAL, self-response coefficients,
folded propagator kernel, dense Green operator, box mean of each cell's unit responses, grid
width, stress components updated per event, slips per step beyond which the propagator hands
the step to the FFT; ``table``: the propagator unfolded on small grids
(:func:`femplast.redistribution.kernels.unfold_kernel`; one dummy row: none)."""
NO_TABLE = np.zeros((1, 1, 1))
Work = namedtuple("Work", "act_cell act_sys pend_dg rec ev_i ev_f pcg")
"""Active cells and systems of the relaxation step, their amplitudes, avalanche records,
event log (ints: cell, k, relaxation step; floats: theta, d_gamma, tau, self-response), the
view of the state generator's PCG64 state (:func:`femplast.streams.pcg64_view`: renewals draw
inline)."""


# ============================================================================ stability
@njit(cache=True, inline="always")
def _pressure_shift(c, gam, sig, R, alpha_p, p_off):
    if alpha_p == 0.0:
        return 0.0
    # pressure is minus the mean normal stress; thresholds tau_c + alpha_p p (model B)
    return alpha_p * (p_off - (sig[2, c] + gam * R[2, c]))


@njit(cache=True, inline="always")
def cell_scan(c, gam, sig, R, sin2, cos2, tauc, alpha_p, p_off):
    """Smallest distance to threshold of cell ``c`` at gamma_ext = gam, and its system."""
    d = sig[0, c] + gam * R[0, c]
    s = sig[1, c] + gam * R[1, c]
    shift = _pressure_shift(c, gam, sig, R, alpha_p, p_off)
    best = np.inf
    arg = 0
    for n in range(sin2.shape[1]):
        dtc = tauc[c, n] + shift - (sin2[c, n] * d + cos2[c, n] * s)
        if dtc < best:
            best = dtc
            arg = n
    return best, arg


@njit(cache=True, inline="always")
def full_check(c, gam, sig, R, sy, lz, ctl):
    """Scan all systems of cell ``c``; reset its reference stress and margin.

    Returns the argmin system (its dtau_c is ``margin[c]``).
    """
    best, arg = cell_scan(c, gam, sig, R, sy.sin2, sy.cos2, sy.tauc, ctl.alpha_p, ctl.p_off)
    # the reference is the *total* stress of the scan, so a change of gamma_ext is a drift
    for j in range(3):
        lz.ref[j, c] = sig[j, c] + gam * R[j, c]
    lz.margin[c] = best
    m = best - ctl.tol
    lz.mm[c] = m * m if m > 0.0 else -1.0
    return arg


@njit(cache=True, inline="always")
def _drifted(c, gam, sig, R, lz, alpha_p, tol):
    # same arithmetic as the fused test in propagator_add, so both paths flag the same cells
    dd = sig[0, c] + gam * R[0, c] - lz.ref[0, c]
    ds = sig[1, c] + gam * R[1, c] - lz.ref[1, c]
    m = lz.margin[c] - tol
    if alpha_p != 0.0:
        m -= alpha_p * abs(sig[2, c] + gam * R[2, c] - lz.ref[2, c])
    return m <= 0.0 or dd * dd + ds * ds >= m * m


@njit(cache=True)
def drift_pass(gam, sig, R, lz, alpha_p, tol):
    """Flag every cell whose total-stress drift since its last scan may have used up its margin."""
    if alpha_p == 0.0:
        # branch-free (vectorized) form of _drifted: mm = (margin - tol)^2, or -1
        ref, mm, flag = lz.ref, lz.mm, lz.flag
        for c in range(sig.shape[1]):
            dd = sig[0, c] + gam * R[0, c] - ref[0, c]
            ds = sig[1, c] + gam * R[1, c] - ref[1, c]
            flag[c] |= np.int8(dd * dd + ds * ds >= mm[c])
        return
    for c in range(sig.shape[1]):
        if _drifted(c, gam, sig, R, lz, alpha_p, tol):
            lz.flag[c] = 1


@njit(cache=True)
def flagged_cells(flag, idx):
    """Write the indices of the nonzero entries of the int8 array ``flag`` to ``idx`` in
    ascending order; return their number. Reads the flags eight at a time (they are sparse)."""
    n = flag.shape[0]
    nw = n // 8
    words = flag[:8 * nw].view(np.uint64)
    k = 0
    for i in range(nw):
        if words[i] != 0:
            for c in range(8 * i, 8 * i + 8):
                idx[k] = c
                k += flag[c] != 0
    for c in range(8 * nw, n):
        idx[k] = c
        k += flag[c] != 0
    return k


@njit(cache=True, inline="always")
def check_pass(gam, sig, R, sy, lz, ctl, act_cell, act_sys):
    """Rescan flagged cells (and clear their flags); collect the active ones in ascending cell
    order. The flags are sparse: they are read eight at a time."""
    flag = lz.flag
    n = flag.shape[0]
    nw = n // 8
    words = flag[:8 * nw].view(np.uint64)
    na = 0
    for i in range(nw + 1):
        if i < nw and words[i] == 0:
            continue
        for c in range(8 * i, min(8 * i + 8, n)):
            if flag[c]:
                flag[c] = 0
                arg = full_check(c, gam, sig, R, sy, lz, ctl)
                if lz.margin[c] < 0.0:
                    act_cell[na] = c
                    act_sys[na] = arg
                    na += 1
    return na


@njit(cache=True, inline="always")
def _cell_active_at(c, gam, sig, R, sin2, cos2, tauc, alpha_p, p_off):
    d = sig[0, c] + gam * R[0, c]
    s = sig[1, c] + gam * R[1, c]
    shift = _pressure_shift(c, gam, sig, R, alpha_p, p_off)
    for n in range(sin2.shape[1]):
        if tauc[c, n] + shift - (sin2[c, n] * d + cos2[c, n] * s) < 0.0:
            return True
    return False


@njit(cache=True)
def any_active_at(gam, sig, R, sin2, cos2, tauc, alpha_p, p_off):
    """Whether any system of any cell is active at gamma_ext = gam (exact test)."""
    for c in range(sig.shape[1]):
        if _cell_active_at(c, gam, sig, R, sin2, cos2, tauc, alpha_p, p_off):
            return True
    return False


@njit(cache=True)
def instability_estimate(sig, R, sin2, cos2, tauc, alpha_p, p_off):
    """``min a_n / r_n`` over the systems whose distance to threshold
    ``dtau_c,n(gamma) = a_n - r_n gamma`` decreases with the external strain (inf: none)."""
    best = np.inf
    for c in range(sig.shape[1]):
        sh0 = 0.0 if alpha_p == 0.0 else alpha_p * (p_off - sig[2, c])
        rp = alpha_p * R[2, c]
        for n in range(sin2.shape[1]):
            r = sin2[c, n] * R[0, c] + cos2[c, n] * R[1, c] + rp
            if r > 0.0:
                a = tauc[c, n] + sh0 - (sin2[c, n] * sig[0, c] + cos2[c, n] * sig[1, c])
                g = a / r
                if g < best:
                    best = g
    return best




# ============================================================================ 1. load
@njit(cache=True)
def _candidates(span, gam0, sig, R, lz, ctl):
    """Flag the cells whose margin, minus their drift since their last scan, the load could use
    up within ``span + 2`` increments (branch-free, so that it vectorizes)."""
    reach = (span + 2) * ctl.dgamma
    ref, margin, rn, cand = lz.ref, lz.margin, lz.rn, lz.cand
    alpha_p, tol = ctl.alpha_p, ctl.tol
    for c in range(sig.shape[1]):
        dd = sig[0, c] + gam0 * R[0, c] - ref[0, c]
        ds = sig[1, c] + gam0 * R[1, c] - ref[1, c]
        room = margin[c] - tol - reach * rn[c]
        if alpha_p != 0.0:
            room -= alpha_p * abs(sig[2, c] + gam0 * R[2, c] - ref[2, c])
        cand[c] = np.int8(room <= 0.0) | np.int8(room * room <= dd * dd + ds * ds)


@njit(cache=True, inline="always")
def _unstable_quotient(c, n, d0, s0, sh0, rp, R, sin2, cos2, tauc, qmin):
    """``min(qmin, a / r)`` over system ``n`` of cell ``c`` if its distance to threshold ``a``
    shrinks at rate ``r > 0`` (without a branch: the quotient of the others is computed and
    discarded)."""
    a = tauc[c, n] + sh0 - (sin2[c, n] * d0 + cos2[c, n] * s0)
    r = sin2[c, n] * R[0, c] + cos2[c, n] * R[1, c] + rp
    q = _div(a, r)
    return q if (r > 0.0) & (q < qmin) else qmin


@njit(cache=True, inline="always")
def _first_unstable_increment(c, k0, kend, sig, R, sy, ctl):
    """Estimate of the first increment after ``k0`` at which a system of cell ``c`` is active,
    from the linear growth of every system's resolved stress (kend + 2: none): the smallest
    ``g = a / r / dgam`` over the systems with ``r > 0`` gives ``max(floor(g) + 1, k0 + 1)``
    (monotone in g, so the minimum over systems of that is this of the minimum quotient). The
    quotients go through four running minima without branches (the sign of ``r`` is random:
    a branch on it was mispredicted half the time); the minimum alone is divided by ``dgam``:
    one division per system, not two, and the same ``g`` (a rounded division by a positive
    constant is monotone, so it commutes with the minimum)."""
    dgam, alpha_p = ctl.dgamma, ctl.alpha_p
    d0 = sig[0, c]
    s0 = sig[1, c]
    sh0 = _pressure_shift(c, 0.0, sig, R, alpha_p, ctl.p_off)
    rp = alpha_p * R[2, c]
    sin2, cos2, tauc = sy.sin2, sy.cos2, sy.tauc
    N = sin2.shape[1]
    g0 = g1 = g2 = g3 = np.inf
    n = 0
    while n + 4 <= N:
        g0 = _unstable_quotient(c, n, d0, s0, sh0, rp, R, sin2, cos2, tauc, g0)
        g1 = _unstable_quotient(c, n + 1, d0, s0, sh0, rp, R, sin2, cos2, tauc, g1)
        g2 = _unstable_quotient(c, n + 2, d0, s0, sh0, rp, R, sin2, cos2, tauc, g2)
        g3 = _unstable_quotient(c, n + 3, d0, s0, sh0, rp, R, sin2, cos2, tauc, g3)
        n += 4
    for m in range(n, N):
        g0 = _unstable_quotient(c, m, d0, s0, sh0, rp, R, sin2, cos2, tauc, g0)
    g0 = g1 if g1 < g0 else g0
    g2 = g3 if g3 < g2 else g2
    g = _div(g2 if g2 < g0 else g0, dgam)
    kc = kend + 2
    if g < kc:
        kc = int(math.floor(g)) + 1
        if kc <= k0:
            kc = k0 + 1
    return kc


@njit(cache=True, inline="always")
def _settle(k0, kend, kmin, ncand, sig, R, sy, lz, ctl):
    """Settle the estimate ``kmin`` with the exact activity test (the stepwise expression) on
    the candidates within one increment of it; returns the first unstable increment or
    kend + 1."""
    dgam = ctl.dgamma
    sin2, cos2, tauc, cidx, cell_k = sy.sin2, sy.cos2, sy.tauc, lz.cidx, lz.cell_k
    ap, po = ctl.alpha_p, ctl.p_off
    while True:
        if kmin > kend:
            # nothing expected before the end: confirm at kend with the candidates
            kmin = kend
            found = False
            for i in range(ncand):
                c = cidx[i]
                if cell_k[c] <= kend + 1 and _cell_active_at(c, kend * dgam, sig, R, sin2, cos2,
                                                             tauc, ap, po):
                    found = True
                    break
            if not found:
                return kend + 1
        active = False
        earlier = False
        for i in range(ncand):
            c = cidx[i]
            if cell_k[c] <= kmin + 1:
                if not active and _cell_active_at(c, kmin * dgam, sig, R, sin2, cos2, tauc,
                                                  ap, po):
                    active = True
                if kmin - 1 > k0 and _cell_active_at(c, (kmin - 1) * dgam, sig, R, sin2, cos2,
                                                     tauc, ap, po):
                    earlier = True
                    break
        if earlier:
            kmin -= 1
        elif not active:
            kmin += 1
            if kmin > kend:
                return kend + 1
        else:
            return kmin


@njit(cache=True, inline="always")
def next_instability(k0, kend, sig, R, sy, lz, ctl, span):
    """Smallest k in (k0, kend] with an active system at gamma_ext = k dgamma, else kend + 1.

    Returns ``(k, ncand)``: the candidates are ``lz.cidx[:ncand]`` (ascending cell order).

    Only *candidate* cells are examined: those whose margin (minus their drift since their last
    scan) the load could use up within ``span + 2`` increments — the load moves the stress by
    ``dgamma |R|`` per increment in the deviatoric plane and ``(sin 2theta, cos 2theta)`` is a
    unit vector, ``rn[c] = |(R_d, R_s)| + alpha_p |R_p|`` (:func:`load_speed`). If the answer
    lies beyond ``span`` the search is repeated with a longer span, so the result does not
    depend on the initial ``span`` (a guess: the previous jump). For each candidate, one pass
    estimates the first unstable increment from the linear growth of every system's resolved
    stress; the estimate can be off by one through round-off, so it is settled with the exact
    activity test (the expression the stepwise protocol evaluates) on the candidates within
    one increment of the minimum. (A system whose stress rate is below ~1e-12 could in
    principle tie within round-off without being a candidate.)
    """
    span = max(span, 1)
    while True:
        _candidates(span, k0 * ctl.dgamma, sig, R, lz, ctl)
        ncand = flagged_cells(lz.cand, lz.cidx)
        kmin = kend + 2
        for i in range(ncand):
            c = lz.cidx[i]
            kc = _first_unstable_increment(c, k0, kend, sig, R, sy, ctl)
            lz.cell_k[c] = kc
            if kc < kmin:
                kmin = kc
        # non-candidates cannot be active before k0 + span + 2: the answer is safe if the
        # candidates' minimum (or the end of the stage) lies within k0 + span + 1
        if min(kmin, kend + 1) - k0 <= span + 1:
            break
        span = min(kmin, kend + 1) - k0
    if kmin > kend + 1:
        kmin = kend + 1
    return _settle(k0, kend, kmin, ncand, sig, R, sy, lz, ctl), ncand


def load_speed(R, alpha_p: float) -> np.ndarray:
    """Per cell, the largest change of a resolved stress (or of a pressure-shifted distance to
    threshold) per unit external strain: ``|(R_d, R_s)| + alpha_p |R_p|``."""
    return np.ascontiguousarray(np.hypot(R[0], R[1]) + alpha_p * np.abs(R[2]))


def shift_table(model) -> np.ndarray:
    """The model's propagator unfolded into a table (small grids, :data:`NO_TABLE` otherwise),
    built once per model and component count (the folded kernel does not change)."""
    red = model.redist
    if red.mode != MODE_PROPAGATOR or not model.nx:
        return NO_TABLE
    ncomp = model.ncomp_dynamic
    cache = red.__dict__.setdefault("_shift_tables", {})
    if ncomp not in cache:
        T = unfold_kernel(red.folded, model.nx, model.num_cells // model.nx, ncomp)
        cache[ncomp] = NO_TABLE if T is None else T
    return cache[ncomp]


@njit(cache=True, inline="always")
def begin_record(st, f, wk, gam):
    """Open the record of an avalanche at the current increment ``st[S_K]`` (strain ``gam``):
    its box-average stress before, no slips yet."""
    r = st[S_NREC]
    wk.rec[r, 0] = st[S_K]
    for j in range(3):
        wk.rec[r, 3 + j] = f.fst[j] + gam * f.fst[6 + j]
    st[S_AVSIZE] = 0
    st[S_NSTEPS] = 0


@njit(cache=True, inline="always")
def _open_avalanche(st, f, wk, na, gam):
    """Open the avalanche of the ``na`` active cells at the current increment."""
    st[S_NACT] = na
    begin_record(st, f, wk, gam)
    st[S_PHASE] = PH_SLIP


@njit(cache=True, inline="always")
def _close_avalanche(st, f, wk, gam):
    r = st[S_NREC]
    wk.rec[r, 1] = st[S_AVSIZE]
    wk.rec[r, 2] = st[S_NSTEPS]
    for j in range(3):
        wk.rec[r, 6 + j] = f.fst[j] + gam * f.fst[6 + j]
        wk.rec[r, 9 + j] = f.fst[3 + j]
    st[S_NREC] = r + 1
    st[S_PHASE] = PH_LOAD


@njit(cache=True, inline="always")
def _load(st, f, sy, lz, wk, ctl):
    """Phase 1: load to the next unstable increment (or the stop / end) and open its
    avalanche. Returns a return code, or -1 to go on."""
    k = st[S_K]
    gam = k * ctl.dgamma
    if k >= ctl.kend:
        return RC_END
    if st[S_NREC] >= wk.rec.shape[0]:
        return RC_RECFULL
    if st[S_SCANNED] == 0:
        # first scan of this driver: an initially unstable state relaxes at its own strain
        st[S_SCANNED] = 1
        na = check_pass(gam, f.sig, f.R, sy, lz, ctl, wk.act_cell, wk.act_sys)
        if na > 0:
            _open_avalanche(st, f, wk, na, gam)
            return -1
    kl = ctl.kend if ctl.kstop < 0 or ctl.kstop > ctl.kend else ctl.kstop
    if k >= kl:
        return RC_STOP
    kn, ncand = next_instability(k, kl, f.sig, f.R, sy, lz, ctl, 2 * st[S_SPAN] + 4)
    st[S_SPAN] = min(kn, kl) - k
    if kn > kl:
        st[S_K] = kl
        return -1
    st[S_K] = kn
    gam = kn * ctl.dgamma
    for i in range(ncand):  # a loading jump can only have unsettled the candidates
        c = lz.cidx[i]
        if _drifted(c, gam, f.sig, f.R, lz, ctl.alpha_p, ctl.tol):
            lz.flag[c] = 1
    na = check_pass(gam, f.sig, f.R, sy, lz, ctl, wk.act_cell, wk.act_sys)
    _open_avalanche(st, f, wk, na, gam)
    return -1


# ============================================================================ 2. slip
@njit(cache=True, inline="always")
def _slip(rng, st, f, sy, kb, wk, rule, ctl, i, tau_drive):
    """Slip ``i`` of the step: system ``act_sys[i]`` of cell ``act_cell[i]``, driven by the
    resolved stress ``tau_drive`` (the cell's own ``tau`` in AQS): amplitude, eigenstrain,
    accumulated slip, box average, event log."""
    c = wk.act_cell[i]
    n = wk.act_sys[i]
    s2 = sy.sin2[c, n]
    c2 = sy.cos2[c, n]
    gam = st[S_K] * ctl.dgamma
    tau = s2 * (f.sig[0, c] + gam * f.R[0, c]) + c2 * (f.sig[1, c] + gam * f.R[1, c])
    den = self_response(c, s2, c2, kb.selfq)
    thermal = tau_drive == tau_drive  # NaN: an athermal slip
    tau_c = tau_drive
    if not thermal and (rule.temperature > 0.0 or ctl.event_log):  # its threshold is needed
        tau_c = sy.tauc[c, n] + _pressure_shift(c, gam, f.sig, f.R, ctl.alpha_p, ctl.p_off)
    dg = slip_amplitude(rng, rule, driving_stress(rule, tau, tau_c, thermal), den)
    wk.pend_dg[i] = dg
    f.eacc[c] += dg
    add_slip(f.eps_pl, c, s2, c2, dg)
    w = f.w[c]
    f.fst[3] -= w * 0.5 * s2 * dg
    f.fst[4] += w * 0.5 * s2 * dg
    f.fst[5] += w * 0.5 * c2 * dg
    if ctl.event_log and st[S_NEV] < wk.ev_i.shape[0]:
        e = st[S_NEV]
        wk.ev_i[e, 0] = c
        wk.ev_i[e, 1] = st[S_K]
        wk.ev_i[e, 2] = st[S_NSTEPS]
        wk.ev_f[e, 0] = sy.theta[c, n]
        wk.ev_f[e, 1] = dg
        wk.ev_f[e, 2] = tau
        wk.ev_f[e, 3] = den
        wk.ev_f[e, 4] = tau_c
        for j in range(3):  # box average after the previous round (redistribution: phase 3)
            wk.ev_f[e, 5 + j] = f.fst[j] + gam * f.fst[6 + j]
        st[S_NEV] = e + 1


@njit(cache=True, inline="always")
def _count_step(st, na):
    st[S_NPEND] = na
    st[S_EVENTS] += na
    st[S_AVSIZE] += na
    st[S_NSTEPS] += 1


# ============================================================================ 3. redistribute
@njit(cache=True, inline="always")
def _redistribute(st, f, sy, lz, kb, wk, ctl):
    """Phase 3 in the loop (propagator shifted add, dense columns); returns whether the step
    must be redistributed outside (FE solve, or an FFT convolution for many slips)."""
    na = st[S_NPEND]
    if kb.mode == MODE_EXTERNAL or (kb.mode == MODE_PROPAGATOR and na > kb.fft_threshold):
        st[S_PHASE] = PH_EXTERNAL
        return True
    gam = st[S_K] * ctl.dgamma
    for i in range(na):
        c = wk.act_cell[i]
        n = wk.act_sys[i]
        gs = wk.pend_dg[i] * sy.sin2[c, n]
        gc = wk.pend_dg[i] * sy.cos2[c, n]
        if kb.mode == MODE_PROPAGATOR:
            # the propagator's load response is uniform: R[:, 0] stands for every cell; the
            # fused drift test has no pressure term: pressure-sensitive thresholds take the
            # full drift pass below
            if kb.table.shape[0] > 1:  # small grid: the unfolded table, same sums
                if i == na - 1 and ctl.alpha_p == 0.0:
                    table_add(f.sig, kb.table, c, gs, gc, kb.ncomp, lz, gam * f.R[0, 0],
                              gam * f.R[1, 0])
                else:
                    table_add(f.sig, kb.table, c, gs, gc, kb.ncomp)
            elif i == na - 1 and ctl.alpha_p == 0.0:
                propagator_add(f.sig, kb.folded, c, kb.nx, gs, gc, kb.ncomp, lz,
                               gam * f.R[0, 0], gam * f.R[1, 0])
            else:
                propagator_add(f.sig, kb.folded, c, kb.nx, gs, gc, kb.ncomp)
        else:
            dense_add(f.sig, kb.dense, c, gs, gc)
        for j in range(3):  # running box average (the kernel's mean is exact)
            f.fst[j] += gs * kb.kmean[c, 0, j] + gc * kb.kmean[c, 1, j]
    if kb.mode != MODE_PROPAGATOR or ctl.alpha_p != 0.0:
        drift_pass(gam, f.sig, f.R, lz, ctl.alpha_p, ctl.tol)
    st[S_PHASE] = PH_RENEW_CHECKED
    return False


# ============================================================================ 4. renew
@njit(cache=True, inline="always")
def _renew_and_rescan(rng, st, f, sy, lz, wk, rule, ctl):
    """Phase 4: renew the slipped cells, rescan what may have become unstable."""
    gam = st[S_K] * ctl.dgamma
    if st[S_PHASE] == PH_RENEW:  # redistributed outside: drifts not tested yet
        drift_pass(gam, f.sig, f.R, lz, ctl.alpha_p, ctl.tol)
    na = st[S_NPEND]
    for i in range(na):
        c = wk.act_cell[i]
        renew(rng, rule, sy.theta, sy.sin2, sy.cos2, sy.tauc, c, wk.pend_dg[i], f.eacc[c],
              wk.pcg)
    for i in range(na):
        lz.flag[wk.act_cell[i]] = 1
    st[S_NPEND] = 0
    st[S_NACT] = check_pass(gam, f.sig, f.R, sy, lz, ctl, wk.act_cell, wk.act_sys)
    st[S_PHASE] = PH_SLIP


# ============================================================================ the loop
@njit(cache=True, _nrt=False)
def aqs_advance(rng, st, ctl, f, sy, lz, kb, wk, rule):
    """Run the AQS algorithm (module docstring) from the phase in ``st``; returns a return
    code (RC_*): end of the stage, stop increment, event budget, full record buffer, or a
    redistribution to be done outside (then re-enter)."""
    while True:
        ph = st[S_PHASE]
        if ph == PH_LOAD:  # 1. load to the next instability
            rc = _load(st, f, sy, lz, wk, ctl)
            if rc >= 0:
                return rc
        elif ph == PH_SLIP:  # 2. all active cells slip at once
            na = st[S_NACT]
            if na == 0:  # the avalanche is over
                _close_avalanche(st, f, wk, st[S_K] * ctl.dgamma)
                if st[S_K] == ctl.kstop:
                    return RC_STOP
                continue
            if st[S_EVENTS] - st[S_EVBASE] >= ctl.max_events:
                return RC_BUDGET
            for i in range(na):
                _slip(rng, st, f, sy, kb, wk, rule, ctl, i, np.nan)
            _count_step(st, na)
            if _redistribute(st, f, sy, lz, kb, wk, ctl):  # 3. redistribute
                return RC_EXTERNAL
        elif ph == PH_EXTERNAL:
            return RC_EXTERNAL
        else:  # 4. renew the slipped cells and find the next active ones
            _renew_and_rescan(rng, st, f, sy, lz, wk, rule, ctl)


@njit(cache=True)
def trigger_slip(rng, st, ctl, f, sy, kb, wk, rule, c, n, tau_drive):
    """Open an avalanche at the current strain with one slip of system ``n`` of cell ``c``
    driven by ``tau_drive`` (a thermally activated slip, tensorial paper A.3: its threshold;
    NaN: its resolved stress), logged as relaxation step 0; the avalanche it triggers runs on
    the next :func:`aqs_advance`. Returns its ``d_gamma``."""
    begin_record(st, f, wk, st[S_K] * ctl.dgamma)
    wk.act_cell[0] = c
    wk.act_sys[0] = n
    _slip(rng, st, f, sy, kb, wk, rule, ctl, 0, tau_drive)
    _count_step(st, 1)
    st[S_NACT] = 0
    return wk.pend_dg[0]


# ============================================================================ Python driver
class AQSDriver:
    """Drive one realization of a :class:`femplast.tensorial.model.TensorialModel` state under AQS.

    Args:
        model: the shared model (mesh, elasticity, redistribution, parameters).
        state: the realization's state (stresses, plastic strain, slip systems, rng).
        alpha_ext: loading orientation (radians) of the pure shear gamma_ext M(alpha_ext).
        dgamma: external strain increment.
        k_end: number of increments of the stage.
        event_log: keep a per-event log (cell, step, theta, d_gamma, tau, self-response).
    """

    def __init__(self, model, state, alpha_ext: float, dgamma: float, k_end: int,
                 event_log: bool = False, rec_capacity: int = 4096, max_events: int = 20000):
        self.model, self.state = model, state
        self.alpha_ext = float(alpha_ext)
        # evolving moduli: the model's moduli are those of this state's accumulated strain
        self.moduli_updates = 0
        self.load_changes: list[tuple[int, np.ndarray]] = []  # (k, <R>) after moduli changes
        if getattr(model, "evolving_moduli", False) and model.sync_moduli(state):
            state.sig[:] = model.redist.stress_from_plastic(state.eps_pl) + state.sigma0
        self.R = model.load_response(alpha_ext)
        self.dgamma, self.k_end = float(dgamma), int(k_end)
        self.event_log, self.max_events = bool(event_log), int(max_events)
        self.tol = TOL  # margin tolerance of the lazy stability check
        nc = model.num_cells
        self.st = np.zeros(NSTATE, np.int64)
        self.ref = np.zeros((3, nc))
        self.margin = np.full(nc, -np.inf)
        self.mm = np.full(nc, -1.0)
        self.cell_k = np.zeros(nc, np.int64)
        self.cand = np.zeros(nc, np.int8)
        self.cidx = np.zeros(nc, np.int64)
        self.rn = load_speed(self.R, model.params.alpha_p)
        # running box averages: internal stress (d, s, p), plastic strain, load response
        w = model.weights
        self.fst = np.concatenate([state.sig @ w, w @ state.eps_pl, self.R @ w])
        self._R0_mean = self.fst[6:9].copy()
        self.flag = np.ones(nc, np.int8)
        self.act_cell = np.zeros(nc, np.int64)
        self.act_sys = np.zeros(nc, np.int64)
        self.pend_dg = np.zeros(nc)
        self.rec = np.zeros((rec_capacity, REC_COLS))
        cap = 1 << 16 if event_log else 1
        self.ev_i = np.zeros((cap, 3), np.int64)
        self.ev_f = np.zeros((cap, EV_COLS))
        self.records: list[np.ndarray] = []
        self.events_i: list[np.ndarray] = []
        self.events_f: list[np.ndarray] = []
        self.rule = model.rule.args()  # the slip rule (femplast.tensorial.rules)
        self._pcg_rng, self._pcg = None, None

    # ------------------------------------------------------------------ bundles
    def _bundles(self, k_stop: int = -1):
        """The loop's arguments (namedtuples of this driver's and the state's arrays)."""
        s, m = self.state, self.model
        p, red = m.params, m.redist
        ctl = Control(self.dgamma, self.k_end, k_stop, self.max_events, p.alpha_p, p.p_offset,
                      self.tol, self.event_log)
        f = Field(s.sig, self.R, s.eps_pl, s.eacc, m.weights, self.fst)
        sy = Systems(s.theta, s.sin2, s.cos2, s.tauc)
        lz = Lazy(self.ref, self.margin, self.mm, self.flag, self.cell_k, self.cand, self.cidx,
                  self.rn)
        kb = Backend(red.mode, red.selfq, red.folded, red.dense, red.kmean, m.nx,
                     m.ncomp_dynamic, red.fft_threshold, shift_table(m))
        if self._pcg_rng is not s.rng:  # the view of the generator the loop is handed
            self._pcg_rng, self._pcg = s.rng, pcg64_view(s.rng)
        wk = Work(self.act_cell, self.act_sys, self.pend_dg, self.rec, self.ev_i, self.ev_f,
                  self._pcg)
        return ctl, f, sy, lz, kb, wk, self.rule

    @property
    def k(self) -> int:
        return int(self.st[S_K])

    @property
    def gamma_ext(self) -> float:
        return self.k * self.dgamma

    @property
    def num_events(self) -> int:
        return int(self.st[S_EVENTS])

    def set_strain(self, gamma: float) -> None:
        """Put the driver at the continuous strain ``gamma`` (stress control): one increment
        of size ``gamma``, so that ``gamma_ext = k dgamma`` is exactly ``gamma``."""
        self.dgamma = float(gamma)
        self.st[S_K] = 1

    def _flush(self):
        n = int(self.st[S_NREC])
        if n:
            self.records.append(self.rec[:n].copy())
            if self.st[S_PHASE] != PH_LOAD:
                # an avalanche interrupted by a budget keeps its partial row (start, before)
                self.rec[0] = self.rec[n]
            self.st[S_NREC] = 0
        e = int(self.st[S_NEV])
        if e:
            self.events_i.append(self.ev_i[:e].copy())
            self.events_f.append(self.ev_f[:e].copy())
            self.st[S_NEV] = 0

    def _external(self):
        s, m = self.state, self.model
        na = int(self.st[S_NPEND])
        cells = self.act_cell[:na].copy()
        sysn = self.act_sys[:na]
        gs = self.pend_dg[:na] * s.sin2[cells, sysn]
        gc = self.pend_dg[:na] * s.cos2[cells, sysn]
        # kernels that draw random numbers (shuffled) use the state's
        kw = {"rng": s.rng} if getattr(m.redist, "needs_rng", False) else {}
        if getattr(m, "evolving_moduli", False) and m.sync_moduli(s):
            self._moduli_changed()  # before the solve: the direct backend solves with new C
        m.redist.apply(s.sig, cells, gs, gc, s.eps_pl, m.ncomp_dynamic, **kw)
        self.fst[0:3] = s.sig @ m.weights
        self.st[S_PHASE] = PH_RENEW

    def _moduli_changed(self):
        """The slipped cells' moduli changed (evolving moduli, sec. 6; direct backend).

        The caller's direct solve then gives ``sig = C_new : (eps - eps_pl) + Sigma0`` at zero
        macroscopic strain (the internal stress; by linearity the total is ``sig + gamma R``
        with ``R`` the new load response). Load response, load speeds and box averages follow;
        every reference stress and margin of the lazy stability check is invalidated, so the
        next check rescans every cell.
        """
        m = self.model
        self.R = m.load_response(self.alpha_ext)
        self.rn = load_speed(self.R, m.params.alpha_p)
        self.fst[6:9] = self.R @ m.weights
        self.flag[:] = 1
        self.margin[:] = -np.inf
        self.mm[:] = -1.0
        self.moduli_updates += 1
        self.load_changes.append((self.k, self.fst[6:9].copy()))

    def load_mean_per_increment(self) -> np.ndarray:
        """Box-average load response (d, s, p) in effect after each increment's avalanche,
        shape (k_end + 1, 3): constant unless the moduli evolve (``load_changes``)."""
        out = np.empty((self.k_end + 1, 3))
        out[:] = self._R0_mean
        for k, Rm in self.load_changes:
            out[k:] = Rm
        return out

    # ------------------------------------------------------------------ stepping
    def advance(self, k_stop: int | None = None, max_events: int | None = None) -> int:
        """Run until ``k_stop`` (stable state there), the end of the stage, or an event budget.

        Returns a return code: RC_END, RC_STOP or RC_BUDGET.
        """
        if max_events is not None:
            self.max_events = int(max_events)
        # the budget counts from here, across re-entries after external redistributions
        self.st[S_EVBASE] = self.st[S_EVENTS]
        ks = -1 if k_stop is None else int(k_stop)
        while True:
            rc = aqs_advance(self.state.rng, self.st, *self._bundles(ks))
            if rc == RC_EXTERNAL:
                self._external()
                continue
            if rc == RC_RECFULL or self.st[S_NEV] >= len(self.ev_i) - len(self.act_cell):
                self._flush()
                if rc == RC_RECFULL:
                    continue
            if rc in (RC_END, RC_STOP, RC_BUDGET):
                self._flush()
                return rc

    def run(self, stops=(), on_stop=None, on_progress=None, budget: int = 20000):
        """Run the stage to its end, calling ``on_stop(k)`` at each stop step (stable state)."""
        for ks in sorted(set(int(k) for k in stops if 0 <= k <= self.k_end)) + [None]:
            while True:
                rc = self.advance(ks, budget)
                if rc == RC_BUDGET:
                    if on_progress:
                        on_progress(self)
                    continue
                break
            if ks is not None and on_stop is not None and rc in (RC_STOP, RC_END):
                self.model.refresh(self.state)
                on_stop(ks)
            if rc == RC_END:
                break
        self.model.refresh(self.state)
        if on_progress:
            on_progress(self)

    def next_unstable_strain(self, g0: float = 0.0) -> float:
        """The smallest continuous external strain ``>= g0`` (this driver's orientation) at
        which a system is active, from a stable state: the linear estimate
        (:func:`instability_estimate`) settled upward by a few ulps until the loop's exact
        activity test holds; inf when no system is loaded (stress control, event-driven
        stepping). With pressure-sensitive thresholds the pressure must be current
        (``model.refresh``; it is whenever the loop tracks it)."""
        s, p = self.state, self.model.params
        g = float(instability_estimate(s.sig, self.R, s.sin2, s.cos2, s.tauc, p.alpha_p,
                                       p.p_offset))
        if not math.isfinite(g):
            return math.inf
        g = max(g, g0)
        step = max(abs(np.spacing(g)), 1e-300)
        while not any_active_at(g, s.sig, self.R, s.sin2, s.cos2, s.tauc, p.alpha_p,
                                p.p_offset):
            g += step
            step *= 2.0
        return g

    def _finish_avalanche(self) -> None:
        k = self.k
        while self.advance(k, 1 << 40) == RC_BUDGET:
            pass

    def relax(self) -> int:
        """Athermal avalanche at the current strain, every cell rescanned; returns its size.
        Recorded in the avalanche table only when something slipped."""
        s, p = self.state, self.model.params
        if not any_active_at(self.gamma_ext, s.sig, self.R, s.sin2, s.cos2, s.tauc,
                             p.alpha_p, p.p_offset):
            return 0
        self._open_record()
        ctl, f, _, _, _, wk, _ = self._bundles(self.k)
        begin_record(self.st, f, wk, self.gamma_ext)
        self.flag[:] = 1
        self.st[S_NPEND] = 0
        self.st[S_PHASE] = PH_RENEW
        n0 = self.num_events
        self._finish_avalanche()
        return self.num_events - n0

    def _open_record(self) -> None:
        if self.st[S_NREC] >= self.rec.shape[0]:
            self._flush()

    def trigger(self, cell: int, system: int, tau_drive: float = math.nan,
                temperature: float = 0.0) -> int:
        """A slip of ``system`` of ``cell`` forced from outside the athermal loop (a thermal
        event), driven by ``tau_drive`` (its threshold; NaN: its resolved stress), then the
        avalanche it triggers at the current strain; returns the avalanche size (the slip
        included). ``temperature``: kB T of the event, for the slip rule's thermal amplitude
        rule (femplast.tensorial.rules.driving_stress) over the whole avalanche."""
        if temperature > 0.0 and self.model.params.thermal_amplitude != "paper":
            athermal, self.rule = self.rule, self._thermal_rule(temperature)
            try:
                return self._trigger(cell, system, tau_drive)
            finally:
                self.rule = athermal
        return self._trigger(cell, system, tau_drive)

    def _thermal_rule(self, temperature: float):
        """The slip rule's bundle at kB T = ``temperature`` (cached: one per temperature)."""
        cache = self.__dict__.setdefault("_thermal_rules", {})
        if temperature not in cache:
            cache[temperature] = self.model.rule.args(temperature)
        return cache[temperature]

    def _trigger(self, cell: int, system: int, tau_drive: float) -> int:
        self._open_record()
        if self.event_log and self.st[S_NEV] >= len(self.ev_i) - len(self.act_cell) - 1:
            self._flush()
        ctl, f, sy, lz, kb, wk, rule = self._bundles(self.k)
        trigger_slip(self.state.rng, self.st, ctl, f, sy, kb, wk, rule, int(cell), int(system),
                     float(tau_drive))
        size0 = self.num_events - 1
        if _redistribute(self.st, f, sy, lz, kb, wk, ctl):
            self._external()
        self._finish_avalanche()
        return self.num_events - size0

    # ------------------------------------------------------------------ results
    def avalanche_table(self) -> np.ndarray:
        """All avalanche records, shape (n, REC_COLS) (see REC_COLS)."""
        self._flush()
        return np.vstack(self.records) if self.records else np.zeros((0, REC_COLS))

    def event_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Per event: ints (cell, increment k, relaxation step within the avalanche) and floats
        (theta, d_gamma, tau before the step, self-response (C:(S-I):M):M, threshold tau_c
        (pressure-shifted), box-average stress (d, s, p) at the start of its relaxation
        round), see EV_COLS."""
        self._flush()
        if not self.events_i:
            return np.zeros((0, 3), np.int64), np.zeros((0, EV_COLS))
        return np.vstack(self.events_i), np.vstack(self.events_f)


def apply_slips(model, state, cells, theta, dgamma) -> None:
    """Apply simultaneous slips ``dgamma M(theta)`` in ``cells`` with the model's backend.

    The same code path as the event loop (compiled shifted add, dense column add, or the
    external FE solve), for prescribed event sequences (tests, benchmarks).
    """
    cells = np.asarray(cells, np.int64)
    theta, dgamma = np.asarray(theta, float), np.asarray(dgamma, float)
    s2, c2 = np.sin(2 * theta), np.cos(2 * theta)
    for c, a, b, dg in zip(cells, s2, c2, dgamma, strict=True):
        add_slip(state.eps_pl, c, a, b, dg)
    red = model.redist
    if red.mode == MODE_EXTERNAL:
        kw = {"rng": state.rng} if getattr(red, "needs_rng", False) else {}
        red.apply(state.sig, cells, s2 * dgamma, c2 * dgamma, state.eps_pl, 3, **kw)
        return
    for c, gs, gc in zip(cells, s2 * dgamma, c2 * dgamma, strict=True):
        if red.mode == MODE_PROPAGATOR:
            propagator_add(state.sig, red.folded, c, model.nx, gs, gc, 3)
        elif red.mode == MODE_DENSE:
            dense_add(state.sig, red.dense, c, gs, gc)


__all__ = ["AQSDriver", "SlipRule", "apply_slips", "aqs_advance", "load_speed"]
