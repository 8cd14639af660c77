"""Athermal quasistatic (AQS) dynamics of the tensorial model (tensorial paper, sec. 3.3-3.4).

At fixed external strain every cell with an active system (distance to threshold
``dtau_c = tau_c - tau < 0``) slips at once on its lowest-``dtau_c`` system, stresses are
redistributed, and this is repeated until no system is active (one avalanche). Then the external
strain grows by ``d(gamma_ext)``; elastic stretches are crossed in one jump to the first increment
at which a system is active, evaluated with the same floating-point expression as the stepwise
protocol (``gamma_ext = k d(gamma_ext)``), so the sequence of states is exactly the stepwise one.

Stability checks do not rescan every slip system after each relaxation step: in the deviatoric
plane ``(d, s)`` the stable stresses of a cell form the convex polygon
``sin 2theta_n d + cos 2theta_n s < tau_c,n``, and since ``(sin 2theta_n, cos 2theta_n)`` is a
unit vector, a stress change shorter than the cell's margin ``min_n dtau_c,n`` cannot make it
unstable. A cell is rescanned only when its drift since its last scan reaches its margin. The
reference of a scan is the cell's *total* stress (internal + ``gamma_ext R``), so loading is just
another drift; the search for the next unstable increment only examines the cells whose margin
the load can use up before it (candidates), and a loading jump can only have unsettled those.

The whole loop is compiled with numba; it hands control back to Python for redistributions
done outside (FE solve, FFT convolution), full record buffers, event budgets (progress,
interruption) and requested stops (snapshots).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from femplast.tensorial.slip import V_CAP, draw_amplitude, renew_cell

# phases of the compiled loop
PH_LOAD, PH_STEP, PH_EXTERNAL, PH_AFTER, PH_AFTER_CHECKED = 0, 1, 2, 3, 4
# return codes
RC_END, RC_RECFULL, RC_EXTERNAL, RC_BUDGET, RC_STOP = 0, 1, 2, 3, 4
# slots of the integer state vector
(S_PHASE, S_K, S_NACT, S_NPEND, S_NREC, S_NEV, S_EVENTS, S_AVSIZE, S_NSTEPS, S_EVBASE, S_SCANNED,
 S_SPAN) = range(12)
NSTATE = 12
# float parameters
F_DGAM, F_CHI, F_ALPHAP, F_POFF, F_THR0, F_THR1, F_TOL, F_FIXEDDG = range(8)
# int parameters
I_THRKIND, I_KEND, I_KSTOP, I_MAXEV, I_FFT, I_EVLOG, I_NX, I_RENEW, I_NCOMP = range(9)
# record columns (float): k, size, steps, mean (d,s,p) before, mean (d,s,p) after, <eps_pl> xx,yy,xy
REC_COLS = 12


@njit(cache=True)
def _pressure_shift(c, gam, sig, R, alpha_p, p_off):
    if alpha_p == 0.0:
        return 0.0
    # pressure is minus the mean normal stress; thresholds tau_c + alpha_p p (model B)
    return alpha_p * (p_off - (sig[2, c] + gam * R[2, c]))


@njit(cache=True)
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


@njit(cache=True)
def full_check(c, gam, sig, R, sin2, cos2, tauc, ref, margin, mm, tol, alpha_p, p_off):
    """Scan all systems of cell ``c``; reset its reference stress and margin.

    Returns the argmin system (its dtau_c is ``margin[c]``).
    """
    best, arg = cell_scan(c, gam, sig, R, sin2, cos2, tauc, alpha_p, p_off)
    # the reference is the *total* stress of the scan, so a change of gamma_ext is a drift
    ref[0, c] = sig[0, c] + gam * R[0, c]
    ref[1, c] = sig[1, c] + gam * R[1, c]
    ref[2, c] = sig[2, c] + gam * R[2, c]
    margin[c] = best
    m = best - tol
    mm[c] = m * m if m > 0.0 else -1.0
    return arg


@njit(cache=True)
def _drifted(c, gam, sig, R, ref, margin, alpha_p, tol):
    # same arithmetic as the fused test in propagator_add, so both paths flag the same cells
    dd = sig[0, c] + gam * R[0, c] - ref[0, c]
    ds = sig[1, c] + gam * R[1, c] - ref[1, c]
    m = margin[c] - tol
    if alpha_p != 0.0:
        m -= alpha_p * abs(sig[2, c] + gam * R[2, c] - ref[2, c])
    return m <= 0.0 or dd * dd + ds * ds >= m * m


@njit(cache=True)
def drift_pass(gam, sig, R, ref, margin, mm, flag, alpha_p, tol):
    """Flag every cell whose total-stress drift since its last scan may have used up its margin."""
    if alpha_p == 0.0:
        # branch-free (vectorized) form of _drifted: mm = (margin - tol)^2, or -1
        for c in range(sig.shape[1]):
            dd = sig[0, c] + gam * R[0, c] - ref[0, c]
            ds = sig[1, c] + gam * R[1, c] - ref[1, c]
            flag[c] |= np.int8(dd * dd + ds * ds >= mm[c])
        return
    for c in range(sig.shape[1]):
        if _drifted(c, gam, sig, R, ref, margin, alpha_p, tol):
            flag[c] = 1


@njit(cache=True)
def _flag_candidates(gam, sig, R, ref, margin, mm, flag, cidx, ncand, alpha_p, tol):
    """:func:`drift_pass` restricted to the candidates ``cidx[:ncand]`` of
    :func:`next_instability`: a loading jump cannot use up the margin of any other cell."""
    for i in range(ncand):
        c = cidx[i]
        if _drifted(c, gam, sig, R, ref, margin, alpha_p, tol):
            flag[c] = 1


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


@njit(cache=True)
def check_pass(gam, sig, R, sin2, cos2, tauc, ref, margin, mm, tol, flag, act_cell, act_sys,
               alpha_p, p_off):
    """Rescan flagged cells (and clear their flags); collect the active ones in ascending cell
    order. The flags are sparse: they are read eight at a time."""
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
                arg = full_check(c, gam, sig, R, sin2, cos2, tauc, ref, margin, mm, tol,
                                 alpha_p, p_off)
                if margin[c] < 0.0:
                    act_cell[na] = c
                    act_sys[na] = arg
                    na += 1
    return na


@njit(cache=True)
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
def _candidates(span, gam0, dgam, sig, R, ref, margin, tol, rn, alpha_p, cand):
    """Flag the cells whose margin, minus their drift since their last scan, the load could use
    up within ``span + 2`` increments (branch-free, so that it vectorizes)."""
    reach = (span + 2) * dgam
    for c in range(sig.shape[1]):
        dd = sig[0, c] + gam0 * R[0, c] - ref[0, c]
        ds = sig[1, c] + gam0 * R[1, c] - ref[1, c]
        room = margin[c] - tol - reach * rn[c]
        if alpha_p != 0.0:
            room -= alpha_p * abs(sig[2, c] + gam0 * R[2, c] - ref[2, c])
        cand[c] = np.int8(room <= 0.0) | np.int8(room * room <= dd * dd + ds * ds)


@njit(cache=True)
def next_instability(k0, kend, dgam, sig, R, sin2, cos2, tauc, alpha_p, p_off, cell_k, ref,
                     margin, tol, rn, cand, cidx, span):
    """Smallest k in (k0, kend] with an active system at gamma_ext = k dgam, else kend + 1.

    Returns ``(k, ncand)``: the candidates are ``cidx[:ncand]`` (ascending cell order).

    Only *candidate* cells are examined: those whose margin (minus their drift since their last
    scan) the load could use up within ``span + 2`` increments — the load moves the stress by
    ``dgam |R|`` per increment in the deviatoric plane and ``(sin 2theta, cos 2theta)`` is a
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
        _candidates(span, k0 * dgam, dgam, sig, R, ref, margin, tol, rn, alpha_p, cand)
        ncand = flagged_cells(cand, cidx)
        kmin = kend + 2
        for i in range(ncand):
            c = cidx[i]
            d0 = sig[0, c]
            s0 = sig[1, c]
            sh0 = _pressure_shift(c, 0.0, sig, R, alpha_p, p_off)
            rp = alpha_p * R[2, c]
            kc = kend + 2
            for n in range(sin2.shape[1]):
                a = tauc[c, n] + sh0 - (sin2[c, n] * d0 + cos2[c, n] * s0)
                r = sin2[c, n] * R[0, c] + cos2[c, n] * R[1, c] + rp
                if r > 0.0:
                    g = a / r / dgam
                    if g < kc:
                        kn = int(math.floor(g)) + 1
                        if kn <= k0:
                            kn = k0 + 1
                        if kn < kc:
                            kc = kn
            cell_k[c] = kc
            if kc < kmin:
                kmin = kc
        # non-candidates cannot be active before k0 + span + 2: the answer is safe if the
        # candidates' minimum (or the end of the stage) lies within k0 + span + 1
        if min(kmin, kend + 1) - k0 <= span + 1:
            break
        span = min(kmin, kend + 1) - k0
    if kmin > kend + 1:
        kmin = kend + 1
    while True:
        if kmin > kend:
            # nothing expected before the end: confirm at kend with the candidates
            kmin = kend
            found = False
            for i in range(ncand):
                c = cidx[i]
                if cell_k[c] <= kend + 1 and _cell_active_at(
                        c, kend * dgam, sig, R, sin2, cos2, tauc, alpha_p, p_off):
                    found = True
                    break
            if not found:
                return kend + 1, ncand
        active = False
        earlier = False
        for i in range(ncand):
            c = cidx[i]
            if cell_k[c] <= kmin + 1:
                if not active and _cell_active_at(c, kmin * dgam, sig, R, sin2, cos2, tauc,
                                                  alpha_p, p_off):
                    active = True
                if kmin - 1 > k0 and _cell_active_at(c, (kmin - 1) * dgam, sig, R, sin2, cos2,
                                                     tauc, alpha_p, p_off):
                    earlier = True
                    break
        if earlier:
            kmin -= 1
        elif not active:
            kmin += 1
            if kmin > kend:
                return kend + 1, ncand
        else:
            return kmin, ncand


def load_speed(R, alpha_p: float) -> np.ndarray:
    """Per cell, the largest change of a resolved stress (or of a pressure-shifted distance to
    threshold) per unit external strain: ``|(R_d, R_s)| + alpha_p |R_p|``."""
    return np.ascontiguousarray(np.hypot(R[0], R[1]) + alpha_p * np.abs(R[2]))


@njit(cache=True)
def propagator_add(sig, F, c, nx, gs, gc, ncomp, check, ref, mm, flag, gR0=0.0, gR1=0.0):
    """``sig[:, i] += gs K[0, :, i - c] + gc K[1, :, i - c]`` on the periodic n x n grid.

    ``F`` is the folded kernel of :func:`femplast.redistribution.backends.fold_kernel`: row ``k_y``
    of the odd components is read from row ``n - k_y`` with the sign folded into the
    coefficients, which is exact (a sign change), so the result is bit for bit the shifted add
    of the full kernel. Only the first ``ncomp`` components are updated (2: d and s, when the
    pressure is not needed by the dynamics). With ``check``, the drift test of every cell is
    fused into the same pass (flag[i] = 1 when the cell must be rescanned), so one event
    touches the kernel, the stress and the cell margins once. ``mm`` is ``(margin - tol)^2``,
    or -1 where ``margin - tol <= 0`` (see :func:`full_check`), so the test is one comparison;
    the references are total stresses, and ``(gR0, gR1) = gamma_ext R`` is the (uniform) load.
    The rows are cut into two contiguous runs (before and after the source column) handed to
    loops over 1-D views, which LLVM vectorizes (indexing with a wrapped offset does not).
    """
    ny = sig.shape[1] // nx
    cy = c // nx
    cx = c - cy * nx
    m = nx - cx
    for iy in range(ny):
        ky = iy - cy
        if ky < 0:
            ky += ny
        sg = 1.0
        if 2 * ky > ny:
            ky = ny - ky
            sg = -1.0
        a = iy * nx  # the row's runs: [a, a + cx) reads kernel columns [m, nx), then [0, m)
        b = a + cx
        e = a + nx
        sgc = sg * gc
        sgs = sg * gs
        if check:
            _add_check(sig[0, a:b], sig[1, a:b], F[0, ky, m:], F[1, ky, m:], F[2, ky, m:],
                       ref[0, a:b], ref[1, a:b], mm[a:b], flag[a:b], gs, sgc, sgs, gc, gR0, gR1)
            _add_check(sig[0, b:e], sig[1, b:e], F[0, ky, :m], F[1, ky, :m], F[2, ky, :m],
                       ref[0, b:e], ref[1, b:e], mm[b:e], flag[b:e], gs, sgc, sgs, gc, gR0, gR1)
        else:
            _add2(sig[0, a:b], F[0, ky, m:], F[1, ky, m:], gs, sgc)
            _add2(sig[1, a:b], F[1, ky, m:], F[2, ky, m:], sgs, gc)
            _add2(sig[0, b:e], F[0, ky, :m], F[1, ky, :m], gs, sgc)
            _add2(sig[1, b:e], F[1, ky, :m], F[2, ky, :m], sgs, gc)
        if ncomp == 3:
            _add2(sig[2, a:b], F[3, ky, m:], F[4, ky, m:], gs, sgc)
            _add2(sig[2, b:e], F[3, ky, :m], F[4, ky, :m], gs, sgc)


@njit(cache=True, inline="always")
def _add2(x, k0, k1, g0, g1):
    for j in range(x.shape[0]):
        x[j] += g0 * k0[j] + g1 * k1[j]


@njit(cache=True, inline="always")
def _add_check(d, s, k0, k1, k2, r0, r1, mm, flag, g0, g1, h0, h1, gR0, gR1):
    # branch-free so that LLVM vectorizes it: flag |= drift^2 >= (margin - tol)^2
    for j in range(d.shape[0]):
        x = d[j] + (g0 * k0[j] + g1 * k1[j])
        y = s[j] + (h0 * k1[j] + h1 * k2[j])
        d[j] = x
        s[j] = y
        dd = x + gR0 - r0[j]
        ds = y + gR1 - r1[j]
        flag[j] |= np.int8(dd * dd + ds * ds >= mm[j])


@njit(cache=True)
def dense_add(sig, D, c, gs, gc):
    for comp in range(sig.shape[0]):
        for i in range(sig.shape[1]):
            sig[comp, i] += gs * D[c, 0, comp, i] + gc * D[c, 1, comp, i]


@njit(cache=True)
def slip_amplitude(rng, c, s2, c2, gam, sig, R, selfq, chi, fixed_dg, cap):
    """Resolved stress, self-response and amplitude of a slip of cell ``c`` (sec. 3.3).

    ``den = (C:(S-I):M):M`` from the cell's self-response coefficients; the amplitude is drawn
    from eq. 7 below ``gamma_max = -2 tau / den`` (eq. 6), or is the fixed ``fixed_dg`` (> 0),
    capped at ``gamma_max`` when ``cap`` (no negative dissipation).

    Returns:
        (tau, den, d_gamma)
    """
    tau = s2 * (sig[0, c] + gam * R[0, c]) + c2 * (sig[1, c] + gam * R[1, c])
    den = s2 * s2 * selfq[c, 0] + s2 * c2 * selfq[c, 1] + c2 * c2 * selfq[c, 2]
    if fixed_dg > 0.0:
        dg = fixed_dg
        if cap:
            gmax = -2.0 * tau / den
            dg = min(dg, gmax) if gmax > 0.0 else 0.0
    else:
        gmax = -2.0 * tau / den
        dg = draw_amplitude(rng, gmax, chi) if gmax > 0.0 else 0.0
    return tau, den, dg


@njit(cache=True)
def _start_avalanche(st, rec, fst, na, k, gam):
    """Open the record of an avalanche at increment k (its box-average stress before)."""
    st[S_NACT] = na
    r = st[S_NREC]
    rec[r, 0] = k
    for j in range(3):
        rec[r, 3 + j] = fst[j] + gam * fst[6 + j]
    st[S_AVSIZE] = 0
    st[S_NSTEPS] = 0
    st[S_PHASE] = PH_STEP


@njit(cache=True)
def aqs_advance(rng, mode, st, fpar, ipar, sig, R, eps_pl, w, theta, sin2, cos2, tauc, ref,
                margin, mm, flag, selfq, K, D, act_cell, act_sys, pend_dg, rec, ev_i, ev_f,
                cell_k, kmean, fst, rn, cand, cidx, vpar=None, eacc=None):
    """Advance the AQS state machine; see the module docstring for the return codes.

    ``vpar`` (optional, with ``eacc``): the model-variant vector of
    :func:`femplast.tensorial.slip.variant_vector` (renewal modes, capped fixed amplitudes);
    ``eacc`` (num_cells,): accumulated plastic strain per cell (sum of its d_gamma), updated.
    """
    dgam = fpar[F_DGAM]
    chi = fpar[F_CHI]
    alpha_p = fpar[F_ALPHAP]
    p_off = fpar[F_POFF]
    tol = fpar[F_TOL]
    kend = ipar[I_KEND]
    kstop = ipar[I_KSTOP]
    nx = ipar[I_NX]
    while True:
        ph = st[S_PHASE]
        k = st[S_K]
        gam = k * dgam
        if ph == PH_LOAD:
            if k >= kend:
                return RC_END
            if st[S_NREC] >= rec.shape[0]:
                return RC_RECFULL
            if st[S_SCANNED] == 0:
                # first scan of this driver: an initially unstable state relaxes at its own strain
                st[S_SCANNED] = 1
                na = check_pass(gam, sig, R, sin2, cos2, tauc, ref, margin, mm, tol, flag,
                                act_cell, act_sys, alpha_p, p_off)
                if na > 0:
                    _start_avalanche(st, rec, fst, na, k, gam)
                    continue
            kl = kend if kstop < 0 or kstop > kend else kstop
            if k >= kl:
                return RC_STOP
            kn, ncand = next_instability(k, kl, dgam, sig, R, sin2, cos2, tauc, alpha_p, p_off,
                                         cell_k, ref, margin, tol, rn, cand, cidx,
                                         2 * st[S_SPAN] + 4)
            st[S_SPAN] = min(kn, kl) - k
            if kn > kl:
                st[S_K] = kl
                continue
            st[S_K] = kn
            gam = kn * dgam
            _flag_candidates(gam, sig, R, ref, margin, mm, flag, cidx, ncand, alpha_p, tol)
            na = check_pass(gam, sig, R, sin2, cos2, tauc, ref, margin, mm, tol, flag, act_cell,
                            act_sys, alpha_p, p_off)
            _start_avalanche(st, rec, fst, na, kn, gam)
        elif ph == PH_STEP:
            na = st[S_NACT]
            if na == 0:
                r = st[S_NREC]
                rec[r, 1] = st[S_AVSIZE]
                rec[r, 2] = st[S_NSTEPS]
                for j in range(3):
                    rec[r, 6 + j] = fst[j] + gam * fst[6 + j]
                    rec[r, 9 + j] = fst[3 + j]
                st[S_NREC] = r + 1
                st[S_PHASE] = PH_LOAD
                if k == kstop:
                    return RC_STOP
                continue
            if st[S_EVENTS] - st[S_EVBASE] >= ipar[I_MAXEV]:
                return RC_BUDGET
            for i in range(na):
                c = act_cell[i]
                n = act_sys[i]
                s2 = sin2[c, n]
                c2 = cos2[c, n]
                cap = False
                if vpar is not None:
                    cap = vpar[V_CAP] != 0.0
                tau, den, dg = slip_amplitude(rng, c, s2, c2, gam, sig, R, selfq, chi,
                                              fpar[F_FIXEDDG], cap)
                pend_dg[i] = dg
                if eacc is not None:
                    eacc[c] += dg
                eps_pl[c, 0] -= 0.5 * s2 * dg
                eps_pl[c, 1] += 0.5 * s2 * dg
                eps_pl[c, 2] += 0.5 * c2 * dg
                fst[3] -= w[c] * 0.5 * s2 * dg
                fst[4] += w[c] * 0.5 * s2 * dg
                fst[5] += w[c] * 0.5 * c2 * dg
                if ipar[I_EVLOG] and st[S_NEV] < ev_i.shape[0]:
                    e = st[S_NEV]
                    ev_i[e, 0] = c
                    ev_i[e, 1] = k
                    ev_i[e, 2] = st[S_NSTEPS]
                    ev_f[e, 0] = theta[c, n]
                    ev_f[e, 1] = dg
                    ev_f[e, 2] = tau
                    ev_f[e, 3] = den
                    st[S_NEV] = e + 1
            st[S_NPEND] = na
            st[S_EVENTS] += na
            st[S_AVSIZE] += na
            st[S_NSTEPS] += 1
            if mode == 2 or (mode == 0 and na > ipar[I_FFT]):
                st[S_PHASE] = PH_EXTERNAL
                return RC_EXTERNAL
            for i in range(na):
                c = act_cell[i]
                n = act_sys[i]
                gs = pend_dg[i] * sin2[c, n]
                gc = pend_dg[i] * cos2[c, n]
                if mode == 0:
                    # the propagator's load response is uniform: R[:, 0] stands for every cell;
                    # the fused drift test has no pressure term: pressure-sensitive thresholds
                    # take the full drift pass below
                    propagator_add(sig, K, c, nx, gs, gc, ipar[I_NCOMP],
                                   i == na - 1 and alpha_p == 0.0, ref, mm, flag,
                                   gam * R[0, 0], gam * R[1, 0])
                else:
                    dense_add(sig, D, c, gs, gc)
                for j in range(3):  # running box average (the kernel's mean is exact)
                    fst[j] += gs * kmean[c, 0, j] + gc * kmean[c, 1, j]
            if mode != 0 or alpha_p != 0.0:
                drift_pass(gam, sig, R, ref, margin, mm, flag, alpha_p, tol)
            st[S_PHASE] = PH_AFTER_CHECKED
        elif ph == PH_EXTERNAL:
            return RC_EXTERNAL
        else:  # PH_AFTER*: renew the slipped cells, rescan what may have become unstable
            if ph == PH_AFTER:
                drift_pass(gam, sig, R, ref, margin, mm, flag, alpha_p, tol)
            na = st[S_NPEND]
            if ipar[I_RENEW]:
                for i in range(na):
                    if vpar is None:
                        renew_cell(rng, act_cell[i], theta, sin2, cos2, tauc, ipar[I_THRKIND],
                                   fpar[F_THR0], fpar[F_THR1])
                    else:
                        renew_cell(rng, act_cell[i], theta, sin2, cos2, tauc, ipar[I_THRKIND],
                                   fpar[F_THR0], fpar[F_THR1], vpar, pend_dg[i],
                                   eacc[act_cell[i]])
            for i in range(na):
                flag[act_cell[i]] = 1
            st[S_NPEND] = 0
            st[S_NACT] = check_pass(gam, sig, R, sin2, cos2, tauc, ref, margin, mm, tol, flag,
                                    act_cell, act_sys, alpha_p, p_off)
            st[S_PHASE] = PH_STEP


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
        nc = model.num_cells
        self.st = np.zeros(NSTATE, np.int64)
        p = model.params
        self.fpar = np.array([dgamma, p.chi, p.alpha_p, p.p_offset, p.thr_p0, p.thr_p1,
                              1e-12, p.fixed_dgamma])
        self.ipar = np.array([p.thr_kind, k_end, -1, max_events, model.redist.fft_threshold,
                              int(event_log), model.nx, int(p.renew), model.ncomp_dynamic],
                             np.int64)
        self.ref = np.zeros((3, nc))
        self.margin = np.full(nc, -np.inf)
        self.mm = np.full(nc, -1.0)
        self.cell_k = np.zeros(nc, np.int64)
        self.cand = np.zeros(nc, np.int8)
        self.cidx = np.zeros(nc, np.int64)
        self.rn = load_speed(self.R, p.alpha_p)
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
        self.ev_f = np.zeros((cap, 4))
        self.records: list[np.ndarray] = []
        self.events_i: list[np.ndarray] = []
        self.events_f: list[np.ndarray] = []

    @property
    def k(self) -> int:
        return int(self.st[S_K])

    @property
    def gamma_ext(self) -> float:
        return self.k * self.dgamma

    @property
    def num_events(self) -> int:
        return int(self.st[S_EVENTS])

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

    def log_event(self, cell: int, relaxation_step: int, theta: float, d_gamma: float,
                  tau: float, den: float) -> None:
        """Append a slip made outside the compiled loop (a KMC thermal slip) to the event log,
        at the current increment; no-op without ``event_log``."""
        if not self.ipar[I_EVLOG]:
            return
        if self.st[S_NEV] >= len(self.ev_i) - len(self.act_cell) - 1:
            self._flush()
        e = int(self.st[S_NEV])
        self.ev_i[e] = (cell, self.st[S_K], relaxation_step)
        self.ev_f[e] = (theta, d_gamma, tau, den)
        self.st[S_NEV] = e + 1

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
        self.st[S_PHASE] = PH_AFTER

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

    def advance(self, k_stop: int | None = None, max_events: int | None = None) -> int:
        """Run until ``k_stop`` (stable state there), the end of the stage, or an event budget.

        Returns a return code: RC_END, RC_STOP or RC_BUDGET.
        """
        s, m = self.state, self.model
        self.ipar[I_KSTOP] = -1 if k_stop is None else int(k_stop)
        if max_events is not None:
            self.ipar[I_MAXEV] = int(max_events)
        # the budget counts from here, across re-entries after external redistributions
        self.st[S_EVBASE] = self.st[S_EVENTS]
        while True:
            rc = aqs_advance(s.rng, m.redist.mode, self.st, self.fpar, self.ipar, s.sig, self.R,
                             s.eps_pl, m.weights, s.theta, s.sin2, s.cos2, s.tauc, self.ref,
                             self.margin, self.mm, self.flag, m.redist.selfq, m.redist.folded,
                             m.redist.dense, self.act_cell, self.act_sys, self.pend_dg, self.rec,
                             self.ev_i, self.ev_f, self.cell_k, m.redist.kmean, self.fst,
                             self.rn, self.cand, self.cidx, getattr(m.params, "vpar", None), s.eacc)
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

    # ------------------------------------------------------------------ results
    def avalanche_table(self) -> np.ndarray:
        """All avalanche records, shape (n, REC_COLS) (see REC_COLS)."""
        self._flush()
        return np.vstack(self.records) if self.records else np.zeros((0, REC_COLS))

    def event_table(self) -> tuple[np.ndarray, np.ndarray]:
        """Per event: ints (cell, increment k, relaxation step within the avalanche) and floats
        (theta, d_gamma, tau before the step, self-response (C:(S-I):M):M)."""
        self._flush()
        if not self.events_i:
            return np.zeros((0, 3), np.int64), np.zeros((0, 4))
        return np.vstack(self.events_i), np.vstack(self.events_f)


def apply_slips(model, state, cells, theta, dgamma) -> None:
    """Apply simultaneous slips ``dgamma M(theta)`` in ``cells`` with the model's backend.

    The same code path as the event loop (compiled shifted add, dense column add, or the
    external FE solve), for prescribed event sequences (tests, benchmarks, KMC).
    """
    cells = np.asarray(cells, np.int64)
    theta, dgamma = np.asarray(theta, float), np.asarray(dgamma, float)
    s2, c2 = np.sin(2 * theta), np.cos(2 * theta)
    np.add.at(state.eps_pl[:, 0], cells, -0.5 * s2 * dgamma)
    np.add.at(state.eps_pl[:, 1], cells, 0.5 * s2 * dgamma)
    np.add.at(state.eps_pl[:, 2], cells, 0.5 * c2 * dgamma)
    red = model.redist
    if red.mode == 2:
        kw = {"rng": state.rng} if getattr(red, "needs_rng", False) else {}
        red.apply(state.sig, cells, s2 * dgamma, c2 * dgamma, state.eps_pl, 3, **kw)
        return
    dummy = np.zeros((3, 1))
    for c, gs, gc in zip(cells, s2 * dgamma, c2 * dgamma, strict=True):
        if red.mode == 0:
            propagator_add(state.sig, red.folded, c, model.nx, gs, gc, 3, False, dummy,
                           dummy[0], np.zeros(1, np.int8))
        else:
            dense_add(state.sig, red.dense, c, gs, gc)
