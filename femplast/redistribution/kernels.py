"""Compiled per-event redistribution kernels: the shifted add of the folded propagator kernel
(with the lazy stability check's drift test fused in) and the dense Green-operator column add.

A slip ``d_gamma M(theta)`` in cell ``c`` adds ``gs K[0, :, i - c] + gc K[1, :, i - c]`` to the
(d, s, p) stress of every cell ``i`` with ``(gs, gc) = d_gamma (sin 2theta, cos 2theta)``
(:mod:`femplast.redistribution.backends`).

On small grids (the paper's 15 x 15) the shifted add is cheaper as a table: every source
cell's kernel column unfolded once (:func:`unfold_kernel`, at most :data:`TABLE_BYTES`), then
one contiguous pass over the cells per event (:func:`table_add`), bit for bit the shifted add
(the same products and sums; the folded signs are exact).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def propagator_add(sig, F, c, nx, gs, gc, ncomp, lazy=None, gR0=0.0, gR1=0.0):
    """``sig[:, i] += gs K[0, :, i - c] + gc K[1, :, i - c]`` on the periodic n x n grid.

    ``F`` is the folded kernel of :func:`femplast.redistribution.backends.fold_kernel`: row
    ``k_y`` of the odd components is read from row ``n - k_y`` with the sign folded into the
    coefficients, which is exact (a sign change), so the result is bit for bit the shifted add
    of the full kernel. Only the first ``ncomp`` components are updated (2: d and s, when the
    pressure is not needed by the dynamics). With ``lazy`` (the AQS loop's lazy-check arrays,
    :class:`femplast.tensorial.aqs.Lazy`) the drift test of every cell is fused into the same
    pass (``flag[i] = 1`` when the cell must be rescanned), so one event touches the kernel,
    the stress and the cell margins once: ``mm`` is ``(margin - tol)^2``, or -1 where
    ``margin - tol <= 0``, the references are total stresses and ``(gR0, gR1) = gamma_ext R``
    is the (uniform) load. The rows are cut into two contiguous runs (before and after the
    source column) handed to loops over 1-D views, which LLVM vectorizes (indexing with a
    wrapped offset does not).
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
        coef = (gs, sg * gc, sg * gs, gc)
        if lazy is not None:
            ref, mm, flag = lazy.ref, lazy.mm, lazy.flag
            _add_check((sig[0, a:b], sig[1, a:b]), (F[0, ky, m:], F[1, ky, m:], F[2, ky, m:]),
                       (ref[0, a:b], ref[1, a:b]), mm[a:b], flag[a:b], coef, (gR0, gR1))
            _add_check((sig[0, b:e], sig[1, b:e]), (F[0, ky, :m], F[1, ky, :m], F[2, ky, :m]),
                       (ref[0, b:e], ref[1, b:e]), mm[b:e], flag[b:e], coef, (gR0, gR1))
        else:
            _add2(sig[0, a:b], F[0, ky, m:], F[1, ky, m:], coef[0], coef[1])
            _add2(sig[1, a:b], F[1, ky, m:], F[2, ky, m:], coef[2], coef[3])
            _add2(sig[0, b:e], F[0, ky, :m], F[1, ky, :m], coef[0], coef[1])
            _add2(sig[1, b:e], F[1, ky, :m], F[2, ky, :m], coef[2], coef[3])
        if ncomp == 3:
            _add2(sig[2, a:b], F[3, ky, m:], F[4, ky, m:], coef[0], coef[1])
            _add2(sig[2, b:e], F[3, ky, :m], F[4, ky, :m], coef[0], coef[1])


@njit(cache=True, inline="always")
def _add2(x, k0, k1, g0, g1):
    for j in range(x.shape[0]):
        x[j] += g0 * k0[j] + g1 * k1[j]


@njit(cache=True, inline="always")
def _add_check(ds, k, r, mm, flag, coef, gR):
    # branch-free so that LLVM vectorizes it: flag |= drift^2 >= (margin - tol)^2
    d, s = ds
    k0, k1, k2 = k
    r0, r1 = r
    g0, g1, h0, h1 = coef
    gR0, gR1 = gR
    for j in range(d.shape[0]):
        x = d[j] + (g0 * k0[j] + g1 * k1[j])
        y = s[j] + (h0 * k1[j] + h1 * k2[j])
        d[j] = x
        s[j] = y
        dd = x + gR0 - r0[j]
        dy = y + gR1 - r1[j]
        flag[j] |= np.int8(dd * dd + dy * dy >= mm[j])


@njit(cache=True)
def dense_add(sig, D, c, gs, gc):
    """``sig[:, i] += gs D[c, 0, :, i] + gc D[c, 1, :, i]`` (dense Green operator)."""
    for comp in range(sig.shape[0]):
        for i in range(sig.shape[1]):
            sig[comp, i] += gs * D[c, 0, comp, i] + gc * D[c, 1, comp, i]


TABLE_BYTES = 2 << 20
"""Largest unfolded table (:func:`unfold_kernel`): it must stay in a core's L2 cache."""


def unfold_kernel(F: np.ndarray, nx: int, ny: int, ncomp: int) -> np.ndarray | None:
    """The shifted add of the folded kernel ``F`` (``backends.fold_kernel``) on the periodic
    ``nx x ny`` grid as a table ``T[c, k, i]``: the stress of
    cell ``i`` per unit ``gs`` / ``gc`` of a slip in cell ``c``; ``k`` = dd, ds (= sd), ss, and
    pd, ps when ``ncomp == 3``. None when it would exceed :data:`TABLE_BYTES`."""
    cells = nx * ny
    nk = 3 if ncomp == 2 else 5
    if cells * cells * nk * 8 > TABLE_BYTES or F.shape[1:] != (ny // 2 + 1, nx):
        return None
    cy, cx = np.divmod(np.arange(cells), nx)
    ky = (cy[None, :] - cy[:, None]) % ny
    kx = (cx[None, :] - cx[:, None]) % nx
    flip = 2 * ky > ny  # rows past the middle are mirrored rows: odd components change sign
    ky = np.where(flip, ny - ky, ky)
    sg = np.where(flip, -1.0, 1.0)
    T = np.empty((cells, nk, cells))
    for k, odd in enumerate((False, True, False, False, True)[:nk]):
        T[:, k] = F[k][ky, kx] * sg if odd else F[k][ky, kx]
    return T


@njit(cache=True, inline="always")
def table_add(sig, T, c, gs, gc, ncomp, lazy=None, gR0=0.0, gR1=0.0):
    """:func:`propagator_add` with the unfolded table ``T`` of :func:`unfold_kernel`: the same
    sums in one contiguous pass (and the same fused drift test with ``lazy``)."""
    d, s = sig[0], sig[1]
    k0, k1, k2 = T[c, 0], T[c, 1], T[c, 2]
    if lazy is not None:
        ref, mm, flag = lazy.ref, lazy.mm, lazy.flag
        _add_check((d, s), (k0, k1, k2), (ref[0], ref[1]), mm, flag, (gs, gc, gs, gc),
                   (gR0, gR1))
    else:
        _add2(d, k0, k1, gs, gc)
        _add2(s, k1, k2, gs, gc)
    if ncomp == 3:
        _add2(sig[2], T[c, 3], T[c, 4], gs, gc)
