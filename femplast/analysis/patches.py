"""Local yield-stress (patch) tests on submeshes (tensorial paper, sec. 2.2, 3.5, 4.2, A.4-A.6).

A *patch* is a set of contiguous cells: ``n x n`` squares of a structured mesh (equivalent
radius ``R = l n / sqrt(pi)``) or the cells whose barycentre lies in a disk of radius ``R``.
It is isolated from the rest of the sample: its boundary nodes are frozen in their current
configuration and follow an affine pure shear increment ``u = gamma~ M(alpha) x``. By
linearity the stress of patch cell ``i`` during a test is

    Sigma_i = Sigma_i(current) + gamma~ U_i(alpha) + sum_j G_ij : d_eps_pl_j

with ``U`` the response of the patch (Dirichlet boundary) to a unit affine boundary strain and
``G`` the patch's Green operator (homogeneous Dirichlet boundary). Both come from FE solves on
the submesh (``dolfinx.mesh.create_submesh``, P1 displacements, one MUMPS factorization under
the options prefix ``femplast_patch_``).

A test: ``gamma~`` grows from 0 until the first slip system of the patch reaches its threshold,
found exactly (``gamma~* = min (tau_c - tau) / rate`` over systems with a positive rate, no
stepping); then an avalanche runs at constant ``gamma~*`` with the model's rules (every active
cell slips at once on its lowest-``dtau_c`` system, amplitudes from eq. 7, renewal of slipped
cells) by the same compiled loop as the full sample (:func:`femplast.tensorial.aqs.aqs_advance`),
with the patch's operators. Every test runs on a copy of the patch state: the sample is never
changed. Its random numbers come from its own counter-based stream: Philox with the key of
``(seed, realization, state)`` and the counter ``(position, size, alpha)``
(:mod:`femplast.streams`), so results do not depend on which tests run, in which order or on
which rank. All tests of a patch size run in one compiled loop over positions and
orientations (:func:`run_batch`, a few microseconds per test); :func:`patch_test` is the
reference implementation of one test (one Python call, dense or direct FE redistribution),
equal to it test by test (tests/test_patches.py).

Slip amplitude bound (eq. 6/15): ``gamma_max = -2 tau / ((C : (S - I) : M) : M)`` uses, by
default, the self-response of the cell *inside the patch with its frozen boundary*
(``self_response = "patch"``): the non-negative dissipation argument of appendix A.7 holds for
the elastic environment the slip actually sees. It is stiffer than the periodic one, so
``gamma_max`` is smaller, most for small patches (one cell: the patch is rigid around it).
``self_response = "model"`` uses the sample's periodic self-response instead.

On a structured mesh with uniform moduli every patch of a given shape is a translate of one
reference patch: its Green operator and boundary responses are computed once per size and
reused for every position and orientation (positions wrap around the periodic box). On gmsh
meshes each disk is its own FE problem; a disk crossing the periodic seam is unwrapped (its
cells moved to their images nearest the centre, seam nodes merged) into one connected patch.

On a specimen (``mesh.kind: geometry``, :func:`specimen_patches`) the patches are disks or
squares of cells on a grid of centres inside the body, each its own FE problem built with the
specimen's moduli; a position whose patch would leave the body or touch its boundary is
skipped and counted, since its frozen rim would lie on a free surface or a grip. The tests
themselves (state, compiled batch, streams) are those of the box.

Recorded per test (stresses ``[xx, yy, xy]``, patch = area-weighted mean over its cells):
``Sigma~i`` (start), ``Sigma~c`` (at the instability), ``Sigma~f`` (after the avalanche),
``tau~ = M(alpha) : Sigma~``, ``dtau~c = tau~c - tau~i``, ``delta tau~c = tau~c - tau~f`` and the
von Mises stress ``(1/2 Sigma~' : Sigma~')^(1/2) = sqrt(d^2 + s^2)`` of ``Sigma~i``.
"""

from __future__ import annotations

import math
from collections import namedtuple
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from femplast.analysis.patch_checks import check  # noqa: F401 (re-exported: the feature's check)
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import resolved_shear
from femplast.fe.patch_fe import PatchFE, unwrapped_patch_mesh  # noqa: F401 (re-exported)
from femplast.redistribution.backends import (
    from_dsp,
    self_coefficients,
    to_dsp,
)
from femplast.redistribution.kernels import dense_add
from femplast.streams import CounterStream, probe_key
from femplast.tensorial.aqs import TOL, cell_scan, load_speed
from femplast.tensorial.rules import SlipRule, add_slip, renew, self_response, slip_amplitude

SHAPES = ("square", "disk")
SELF_RESPONSES = ("patch", "model")
DEFAULT_ALPHAS = [float(a) for a in range(0, 180, 10)]
QUANTITIES = ("tau_i", "tau_c", "dtau_c", "delta_tau_c", "von_mises")
TIE_RTOL = 1e-12
OPERATOR_CACHE_MB = 256.0
"""Memory kept for per-position patch operators (gmsh meshes, specimens) between states."""
"""Systems within this relative distance of their threshold at gamma~* slip with the trigger."""


def square_radius(n: int, h: float) -> float:
    """Equivalent radius of an n x n patch of cells of side h (sec. 3.5): ``h n / sqrt(pi)``."""
    return h * n / math.sqrt(math.pi)


# ============================================================================ patch operators
@dataclass
class PatchOperator:
    """What a test needs of a patch's elasticity (patch order).

    Attributes:
        D: Green operator (np, 2, 3, np), see :meth:`PatchFE.green_operator`.
        U: (2, 3, np) unit boundary-strain responses (UNIT_S, UNIT_C).
        selfq: (np, 3) self-response coefficients of the cells inside the patch.
        weights: (np,) area fractions.
        fe: the FE problem (kept for direct solves; ``None`` once released).
    """

    D: np.ndarray
    U: np.ndarray
    selfq: np.ndarray
    weights: np.ndarray
    fe: PatchFE | None = None

    @classmethod
    def build(cls, fe: PatchFE, keep_fe: bool = False) -> PatchOperator:
        D = fe.green_operator()
        idx = np.arange(fe.num_cells)
        selfq = self_coefficients(D[idx, 0, :, idx], D[idx, 1, :, idx])
        op = cls(D, fe.boundary_responses(), np.ascontiguousarray(selfq),
                 fe.area / fe.area.sum(), fe if keep_fe else None)
        if not keep_fe:
            fe.destroy()
        return op

    def response(self, alpha: float) -> np.ndarray:
        """(d, s, p) stress per unit gamma~ of the boundary shear M(alpha); shape (3, np)."""
        return np.ascontiguousarray(math.sin(2 * alpha) * self.U[0]
                                    + math.cos(2 * alpha) * self.U[1])


# ============================================================================ patch geometry
@dataclass
class PatchSet:
    """All positions of one patch size.

    Attributes:
        label: ``n{n}`` (squares) or ``R{R}`` (disks).
        size: n (squares) or the requested R (disks).
        radius: equivalent radius ``sqrt(area / pi)`` (squares: ``l n / sqrt(pi)``).
        centres: (P, 2) patch centres.
        cells: (P, np) canonical cells of each position (patch order); for gmsh disks a list.
        shared: True when every position is a translate of the reference (one operator).
        ref: index of the reference position (shared) or -1.
        skipped: positions not tested: on a specimen those whose patch would leave the body
            or touch its boundary (:func:`specimen_patches`); 0 on the periodic box (disks
            crossing the seam are unwrapped).
        ids: position identifiers used in the per-test seeds (structured: the anchor cell
            ``iy * n + ix``; gmsh: the index of the grid point), independent of which
            positions are tested.
    """

    label: str
    size: float
    radius: float
    centres: np.ndarray
    cells: object
    shared: bool
    ref: int = -1
    skipped: int = 0
    ids: np.ndarray | None = None
    ops: dict = field(default_factory=dict)


def _grid_points(L: float, spacing: float | None, default: float) -> np.ndarray:
    h = default if spacing is None else spacing
    m = max(1, int(round(L / h)))
    g = (np.arange(m) + 0.5) * (L / m)
    X, Y = np.meshgrid(g, g)
    return np.column_stack([X.ravel(), Y.ravel()])


def structured_patches(box, shape: str, size, spacing: float | None = None) -> PatchSet:
    """Patch positions on a structured mesh (quads or triangles, canonical order).

    Squares: ``n x n`` cells anchored at the lattice; disks: the cells whose barycentre lies
    within ``R`` of a cell centre. Every patch is a translate of the same offsets, wrapped
    around the periodic box. ``spacing = None``: every lattice position; else the lattice
    positions nearest to a regular grid of that spacing (duplicates removed).
    """
    nb, h, L = box.n, box.cell_size, box.L
    per = 1 if box.kind == "quad" else 2
    # barycentres of the cells of one square, relative to its lower-left corner (units of h)
    sub = np.array([[0.5, 0.5]]) if per == 1 else np.array([[2 / 3, 1 / 3], [1 / 3, 2 / 3]])
    if shape == "square":
        n = int(size)
        if not 1 <= n <= nb:
            raise FemplastInputError("patches.n", n, f"in [1, mesh.n = {nb}]")
        dj, di, t = np.meshgrid(np.arange(n), np.arange(n), np.arange(per), indexing="ij")
        offs = np.column_stack([di.ravel(), dj.ravel(), t.ravel()])
        centre_off = np.array([n / 2, n / 2])
        label, radius = f"n{n}", square_radius(n, h)
    else:
        R = float(size)
        m = int(math.ceil(R / h)) + 1
        rng_ = np.arange(-m, m + 1)
        dj, di, t = np.meshgrid(rng_, rng_, np.arange(per), indexing="ij")
        offs = np.column_stack([di.ravel(), dj.ravel(), t.ravel()])
        bary = offs[:, :2] + sub[offs[:, 2]]
        keep = np.hypot(bary[:, 0] - 0.5, bary[:, 1] - 0.5) * h <= R
        offs = offs[keep]
        if len(offs) == 0:
            raise FemplastInputError("patches.radius", R, f">= half a cell ({h / 2:.3g}): no "
                                     "cell barycentre lies inside")
        if np.ptp(offs[:, 0]) >= nb or np.ptp(offs[:, 1]) >= nb:
            raise FemplastInputError("patches.radius", R, f"a disk narrower than the box "
                                     f"(L = {L})")
        centre_off = np.array([0.5, 0.5])
        label = f"R{R:g}"
        radius = math.sqrt(len(offs) / per * h * h / math.pi)
    if spacing is None:
        ay, ax = np.divmod(np.arange(nb * nb), nb)
    else:
        pts = _grid_points(L, spacing, h)
        a = np.round(pts / h - centre_off).astype(np.int64) % nb
        anchors = np.unique(a[:, 1] * nb + a[:, 0])
        ay, ax = np.divmod(anchors, nb)
    X = (ax[:, None] + offs[None, :, 0]) % nb
    Y = (ay[:, None] + offs[None, :, 1]) % nb
    cells = (Y * nb + X) * per + offs[None, :, 2]
    centres = (np.column_stack([ax, ay]) + centre_off) * h % L
    # the reference: an anchor whose patch does not cross the periodic seam
    ref_anchor = (-offs[:, 0].min(), -offs[:, 1].min())
    ref_cells = ((ref_anchor[1] + offs[:, 1]) * nb + ref_anchor[0] + offs[:, 0]) * per + offs[:, 2]
    cells = np.vstack([cells, ref_cells[None]])
    centres = np.vstack([centres, (np.array(ref_anchor) + centre_off)[None] * h])
    return PatchSet(label, float(size), radius, centres, cells, True, ref=len(cells) - 1,
                    ids=ay * nb + ax)


def disk_patches(box, R: float, spacing: float | None = None) -> PatchSet:
    """Disk patches on any mesh, one FE problem each (periodic distances: disks crossing the
    seam are unwrapped, see :class:`PatchFE`)."""
    L = box.L
    if 2 * R >= L:
        raise FemplastInputError("patches.radius", R, f"< L / 2 = {L / 2:g} (a disk must not "
                                 "overlap its own periodic image)")
    mid = np.empty((box.num_cells, 2))
    mid[box.canonical] = box.midpoints()
    pts = _grid_points(L, spacing, box.cell_size)
    cells, centres, ids = [], [], []
    for k, c in enumerate(pts):
        d = mid - c
        d -= L * np.round(d / L)
        inside = np.hypot(d[:, 0], d[:, 1]) <= R
        if not inside.any():
            continue
        cells.append(np.flatnonzero(inside))
        centres.append(c)
        ids.append(k)
    if not cells:
        raise FemplastInputError("patches.radius", R, "a disk holding at least one cell")
    area = np.pi * R * R
    return PatchSet(f"R{R:g}", float(R), math.sqrt(area / math.pi), np.array(centres), cells,
                    False, ids=np.array(ids))


def specimen_patches(box, shape: str, size, spacing: float | None = None) -> PatchSet:
    """Patch positions inside a specimen (``mesh.kind: geometry``), one FE problem each.

    Centres on a regular grid of ``spacing`` (default: the cell size ``h = sqrt(mean cell
    area)``) over the specimen's bounding box; a disk of radius ``R`` or a square of side
    ``n h`` (about ``n x n`` cells, equivalent radius ``n h / sqrt(pi)``) takes the cells whose
    barycentre lies inside (distances through a periodic side go to the nearest image; such
    patches are unwrapped as in the box). A position is skipped, and counted in
    ``PatchSet.skipped``, when its patch would leave the body or touch its boundary: a
    boundary facet (periodic sides excepted) meets the disk or square, a patch cell has a
    vertex on the boundary (its frozen rim would be a free surface or a grip), or the disk or
    square lies wholly outside the body (in a hole). One wholly inside that holds no cell
    barycentre (a small square on triangles) is not tested and not counted, as on gmsh
    boxes. Position ids are the grid indices, so the tested positions draw the same streams
    whatever is skipped.
    """
    from femplast.fe.patch_fe import (
        box_periods,
        image_shifts,
        points_in_body,
        segments_meet_disk,
        segments_meet_square,
        specimen_boundary,
    )

    h = box.cell_size
    periods = box_periods(box)
    if shape == "square":
        n = int(size)
        half, label, radius = 0.5 * n * h, f"n{n}", square_radius(n, h)
        key = "patches.n"
    else:
        half, label, radius = float(size), f"R{float(size):g}", float(size)
        key = "patches.radius"
    if np.any((periods > 0) & (2 * half >= periods)):
        raise FemplastInputError(key, size, "a patch narrower than the periodic side "
                                 f"({periods.max():g})")
    mid = np.empty((box.num_cells, 2))
    mid[box.canonical] = box.midpoints()
    seg, touching = specimen_boundary(box)
    x = box.mesh.geometry.x[:, :2]
    lo, span = x.min(axis=0), np.ptp(x, axis=0)
    step = h if spacing is None else float(spacing)
    g = [lo[k] + (np.arange(m) + 0.5) * (span[k] / m)
         for k, m in enumerate(np.maximum(1, np.round(span / step).astype(int)))]
    X, Y = np.meshgrid(*g)
    cells, centres, ids, skipped, empty = [], [], [], 0, []
    smid = seg.mean(axis=1)
    for k, c in enumerate(np.column_stack([X.ravel(), Y.ravel()])):
        d = mid - c
        d += image_shifts(d, periods)
        inside = (np.hypot(d[:, 0], d[:, 1]) <= half if shape == "disk"
                  else np.abs(d).max(axis=1) <= half)
        # boundary facets moved to their images nearest the centre
        s = seg + image_shifts(smid - c, periods)[:, None, :]
        meets = (segments_meet_disk(s, c, half) if shape == "disk"
                 else segments_meet_square(s, c, half))
        if not meets.any() and not inside.any():
            empty.append(c)  # wholly inside the body (no cell barycentre) or outside it
            continue
        if meets.any() or touching[inside].any():
            skipped += 1
            continue
        cells.append(np.flatnonzero(inside))
        centres.append(c)
        ids.append(k)
    # an empty patch away from the boundary is not tested (as on gmsh boxes, not counted)
    # unless it lies outside the body (in a hole, a notch, beside a file's shape)
    skipped += int((~points_in_body(box.mesh, np.reshape(empty, (-1, 2)))).sum())
    if not cells:
        import logging

        logging.getLogger("femplast").warning(
            "patches %s: every one of the %d positions would leave the specimen or touch its "
            "boundary: none tested", label, skipped)
    return PatchSet(label, float(size), radius, np.array(centres).reshape(-1, 2), cells,
                    False, skipped=skipped, ids=np.array(ids, np.int64))


# ============================================================================ one test
Patch = namedtuple("Patch", "sig eps_pl eacc theta sin2 cos2 tauc")
"""The arrays of a patch's cells during a test (copies of the sample's): stress (d, s, p),
plastic strain, accumulated slip, slip systems."""
Loading = namedtuple("Loading", "gam R selfq alpha_p p_off max_events")
"""A test's boundary strain ``gam``, stress per unit boundary strain ``R``, self-response
coefficients, pressure sensitivity, event budget."""


@dataclass
class PatchRules:
    """The sample's slip rule (femplast.tensorial.rules), used unchanged inside the patch, and
    the threshold shift of pressure-sensitive models; ``max_events`` bounds an avalanche."""

    rule: SlipRule
    alpha_p: float = 0.0
    p_offset: float = 0.0
    max_events: int = 1_000_000

    @classmethod
    def from_model(cls, model) -> PatchRules:
        p = model.params
        return cls(model.rule, p.alpha_p, p.p_offset)


def instability(sig, R, sin2, cos2, tauc, alpha_p: float = 0.0, p_off: float = 0.0):
    """Exact critical boundary strain of patches (vectorized over leading axes).

    Args:
        sig: (3, ..., np) current (d, s, p) stress of the patch cells.
        R: (3, np) stress per unit gamma~.
        sin2, cos2, tauc: (..., np, N) slip systems.

    Returns:
        (gamma*, trigger cell, trigger system), each of shape ``...``; ``gamma* = inf`` when no
        system is loaded by the test. Systems already beyond threshold give ``gamma* = 0``.
    """
    d, s, p = sig[0][..., None], sig[1][..., None], sig[2][..., None]
    a = tauc - (sin2 * d + cos2 * s)
    if alpha_p:
        a = a + alpha_p * (p_off - p)
    r = sin2 * R[0][:, None] + cos2 * R[1][:, None] + alpha_p * R[2][:, None]
    pos = r > 0
    g = np.where(pos, a / np.where(pos, r, 1.0), np.inf)
    g = np.where(a < 0, 0.0, g)
    flat = g.reshape(g.shape[:-2] + (-1,))
    k = np.argmin(flat, axis=-1)
    gstar = np.take_along_axis(flat, k[..., None], axis=-1)[..., 0]
    N = sin2.shape[-1]
    return gstar, k // N, k % N


def _dtau(sig, R, gam, sin2, cos2, tauc, alpha_p, p_off):
    tot = sig + gam * R
    dt = tauc - (sin2 * tot[0][:, None] + cos2 * tot[1][:, None])
    if alpha_p:
        dt = dt + alpha_p * (p_off - tot[2])[:, None]
    return dt


# The avalanche inside a patch: the algorithm of femplast.tensorial.aqs (simultaneous slips of
# every active cell on its lowest-dtau_c system with the model's slip rule, renewal after the
# redistribution), written out here on a small dense problem (a full rescan per relaxation step
# is cheap) so that the patch code does not depend on the internals of the sample's event loop.
# Random numbers are consumed in the same order: amplitudes in ascending cell order, renewals.
@njit(cache=True, inline="always")
def _slip_all(rng, pt, ld, rule, act_cell, act_sys, na, dg_out):
    """Step 2: the ``na`` active cells slip (amplitude, eigenstrain: the model's rule)."""
    sin2, cos2, sig, eacc, eps_pl = pt.sin2, pt.cos2, pt.sig, pt.eacc, pt.eps_pl
    R, gam = ld.R, ld.gam
    for i in range(na):
        c = act_cell[i]
        n = act_sys[i]
        s2 = sin2[c, n]
        c2 = cos2[c, n]
        tau = s2 * (sig[0, c] + gam * R[0, c]) + c2 * (sig[1, c] + gam * R[1, c])
        dg = slip_amplitude(rng, rule, tau, self_response(c, s2, c2, ld.selfq))
        dg_out[i] = dg
        eacc[c] += dg
        add_slip(eps_pl, c, s2, c2, dg)


@njit(cache=True, inline="always")
def _scan_cell(pt, ld, c, act_cell, act_sys, nn):
    """Scan cell ``c`` (its lowest ``dtau_c`` over the systems, :func:`cell_scan`); an unstable
    cell (``dtau_c < 0``) joins the active list as its ``nn``-th entry, with that system.
    Returns (lowest ``dtau_c``, new number of active cells)."""
    best, arg = cell_scan(c, ld.gam, pt.sig, ld.R, pt.sin2, pt.cos2, pt.tauc, ld.alpha_p,
                          ld.p_off)
    if best < 0.0:
        act_cell[nn] = c
        act_sys[nn] = arg
        nn += 1
    return best, nn


@njit(cache=True, inline="always")
def _renew_scan(rng, pt, ld, rule, act_cell, act_sys, na, dg):
    """Step 4: renew the slipped cells, then rescan every cell; returns the new number of
    active cells."""
    for i in range(na):
        c = act_cell[i]
        renew(rng, rule, pt.theta, pt.sin2, pt.cos2, pt.tauc, c, dg[i], pt.eacc[c])
    nn = 0
    for c in range(pt.sig.shape[1]):
        _, nn = _scan_cell(pt, ld, c, act_cell, act_sys, nn)
    return nn


@njit(cache=True, inline="always")
def _avalanche_dense(rng, pt, ld, rule, D, act_cell, act_sys, na, dirty, dg):
    """Relax at constant boundary strain with the dense Green operator; returns (events,
    steps, active). ``dirty[c] = 1`` marks the cells that slipped (their arrays changed);
    ``dg``: work array of the amplitudes."""
    events = 0
    steps = 0
    while na > 0 and events < ld.max_events:
        _slip_all(rng, pt, ld, rule, act_cell, act_sys, na, dg)
        events += na
        steps += 1
        for i in range(na):  # step 3: redistribute
            c = act_cell[i]
            dirty[c] = 1
            n = act_sys[i]
            dense_add(pt.sig, D, c, dg[i] * pt.sin2[c, n], dg[i] * pt.cos2[c, n])
        na = _renew_scan(rng, pt, ld, rule, act_cell, act_sys, na, dg)
    return events, steps, na


@dataclass
class TestResult:
    gamma_c: float
    sigma_c: np.ndarray  # (3,) [xx, yy, xy]
    sigma_f: np.ndarray
    n_events: int
    n_steps: int
    trigger: int  # patch-local cell
    complete: bool


def patch_test(op: PatchOperator, alpha: float, pt: Patch, rules: PatchRules,
               rng: np.random.Generator, selfq=None, direct: bool = False,
               gamma_star=None) -> TestResult:
    """One shear test of orientation ``alpha`` (radians) on a patch; the arrays of ``pt`` are
    modified in place, so pass copies. ``pt.sig`` (3, np) is the current (d, s, p) stress of
    the patch cells.

    At ``gamma~*`` the trigger slips together with every cell whose lowest system is within
    ``TIE_RTOL`` (relative) of its threshold (exact ties, e.g. identical cells, slip at once).

    ``direct``: redistribute each relaxation step with a fresh FE solve on the submesh
    (``op.fe``) instead of the Green operator (reference path; identical to round-off).
    """
    R = op.response(alpha)
    ap, po = rules.alpha_p, rules.p_offset
    sig = pt.sig
    if gamma_star is None:
        gamma_star = float(instability(sig, R, pt.sin2, pt.cos2, pt.tauc, ap, po)[0])
    gam = float(gamma_star)
    w = op.weights
    if not np.isfinite(gam):
        nan = np.full(3, np.nan)
        return TestResult(gam, nan, nan, 0, 0, -1, False)
    sigma_c = from_dsp(sig @ w + gam * (R @ w))
    npc = sig.shape[1]
    dt = _dtau(sig, R, gam, pt.sin2, pt.cos2, pt.tauc, ap, po)
    arg = np.argmin(dt, axis=1)
    m = dt[np.arange(npc), arg]
    # the scale of round-off; unused systems of some variants have tau_c = inf
    tmax = np.abs(np.where(np.isfinite(pt.tauc), pt.tauc, 0.0)).max()
    scale = 1.0 + tmax + np.abs(sig[:2]).max() + gam * np.abs(R[:2]).max()
    trig = int(np.argmin(m))
    active = np.flatnonzero(m <= TIE_RTOL * scale)
    if trig not in active:
        active = np.sort(np.append(active, trig))
    na = len(active)
    act_cell = np.zeros(npc, np.int64)
    act_sys = np.zeros(npc, np.int64)
    act_cell[:na] = active
    act_sys[:na] = arg[active]
    sq = np.ascontiguousarray(op.selfq if selfq is None else selfq)
    ld = Loading(gam, np.ascontiguousarray(R), sq, ap, po, rules.max_events)
    rule = rules.rule.args()
    if not direct:
        ev, steps, na = _avalanche_dense(rng, pt, ld, rule, op.D, act_cell, act_sys, na,
                                           np.zeros(npc, np.int8), np.empty(npc))
    else:
        sig0, epl0 = sig.copy(), pt.eps_pl.copy()
        dg = np.empty(npc)
        ev = steps = 0
        while na > 0 and ev < rules.max_events:
            _slip_all(rng, pt, ld, rule, act_cell, act_sys, na, dg)
            ev += na
            steps += 1
            sig[:] = sig0 + to_dsp(op.fe.stress(pt.eps_pl - epl0))
            na = _renew_scan(rng, pt, ld, rule, act_cell, act_sys, na, dg)
    sigma_f = from_dsp(sig @ w + gam * (R @ w))
    return TestResult(gam, sigma_c, sigma_f, int(ev), int(steps), trig, na == 0)


# ============================================================================ compiled batch
Batch = namedtuple("Batch", "D Rs rn selfq w cells ids size_key alpha_keys sq_model alpha_p "
                            "p_off max_events")
"""One compiled batch of tests: the patch operator (Green operator ``D``, responses ``Rs``
(A, 3, np) to the boundary shear of each orientation (:meth:`PatchOperator.response`), their
load speeds ``rn`` (A, np) (:func:`femplast.tensorial.aqs.load_speed`), self-response
``selfq``, area weights ``w``), the positions (``cells`` (P, np) and their stream ids), the
stream keys of the size and of the orientations, the sample's per-cell self-response when
``self_response = "model"`` (else shape (0, 3)), the pressure sensitivity and the event budget
of an avalanche."""
Tables = namedtuple("Tables", "gamma_c sig_c sig_f n_events n_steps trigger complete sig_i")
"""What a batch writes: per (position, orientation) gamma~*, the (d, s, p) patch stress at the
instability and after the avalanche (3, P, A), events, relaxation steps, trigger (patch cell;
-1: none), completeness; per position the starting (d, s, p) patch stress (3, P)."""
Scratch = namedtuple("Scratch", "act_cell act_sys dirty dg sig0 dist amin lb ref margin")
"""Work arrays of a batch: active cells and systems, slipped cells (restored from the sample
after a test), amplitudes; the patch before a test: (d, s, p) stress, distances to threshold
(np, N) and their minimum per cell; per cell a lower bound of its critical strain, and the
total stress and margin (a lower bound of the distance to threshold) of its last scan."""
SAFETY = 1e-9
"""Relative round-off allowance of the bounds that let cells be skipped (the skipped cells
are those the bounds exclude by far more than round-off; results equal the full scans)."""


@njit(cache=True)
def _patch_buffers(npc, N):
    return Patch(np.empty((3, npc)), np.empty((npc, 3)), np.empty(npc), np.empty((npc, N)),
                 np.empty((npc, N)), np.empty((npc, N)), np.empty((npc, N)))


@njit(cache=True, inline="always")
def _copy_rows(src, dst, c, j):
    """Row ``c`` of the sample's slip arrays to row ``j`` of the patch's."""
    # arrays are bound to locals once: each attribute read of a bundle is a reference-count
    # increment and decrement (atomic), which would dominate the inner loops
    for k in range(3):
        dst.eps_pl[j, k] = src.eps_pl[c, k]
    dst.eacc[j] = src.eacc[c]
    st, ss, sc, su = src.theta, src.sin2, src.cos2, src.tauc
    dt, ds, dc, du = dst.theta, dst.sin2, dst.cos2, dst.tauc
    for n in range(ss.shape[1]):
        dt[j, n] = st[c, n]
        ds[j, n] = ss[c, n]
        dc[j, n] = sc[c, n]
        du[j, n] = su[c, n]


@njit(cache=True, inline="always")
def _patch_mean(sig, R, gam, w, out, ip, ia):
    """The patch's area-weighted (d, s, p) stress at boundary strain ``gam``."""
    for j in range(3):
        a = 0.0
        b = 0.0
        for i in range(w.shape[0]):
            a += sig[j, i] * w[i]
            b += R[j, i] * w[i]
        out[j, ip, ia] = a + gam * b


@njit(cache=True, inline="always")
def _cell_critical(dist, sin2, cos2, R, rp, c):
    """Smallest ``a / r`` of cell ``c`` over its loaded systems (the arithmetic of
    :func:`instability`; 0 for a system beyond threshold)."""
    best = np.inf
    r0 = R[0, c]
    r1 = R[1, c]
    for n in range(dist.shape[1]):
        a = dist[c, n]
        r = sin2[c, n] * r0 + cos2[c, n] * r1 + rp
        q = a / r if r != 0.0 else np.inf
        g = q if r > 0 else np.inf
        g = 0.0 if a < 0 else g
        best = min(best, g)
    return best


@njit(cache=True, inline="always")
def _critical_strain(pt, R, rn, alpha_p, scr):
    """gamma~* of one test. A cell's systems cannot reach threshold before
    ``max(min_n a_n, 0) / rn`` (``|r_n| <= rn``): the cell with the lowest bound is scanned
    first, then only the cells whose bound does not exceed the current minimum."""
    amin, lbs, dist, sin2, cos2 = scr.amin, scr.lb, scr.dist, pt.sin2, pt.cos2
    first, lbmin = 0, np.inf
    for c in range(amin.shape[0]):
        lb = 0.0 if amin[c] <= 0.0 else (amin[c] / rn[c] if rn[c] > 0.0 else np.inf)
        lbs[c] = lb
        if lb < lbmin:
            first, lbmin = c, lb
    best = _cell_critical(dist, sin2, cos2, R, alpha_p * R[2, first], first)
    for c in range(amin.shape[0]):
        if c != first and lbs[c] <= best * (1.0 + SAFETY):
            best = min(best, _cell_critical(dist, sin2, cos2, R, alpha_p * R[2, c], c))
    return best


@njit(cache=True, inline="always")
def _trigger_set(pt, R, rn, gam, b, tie, scr):
    """The cells that slip at gamma~* (as :func:`patch_test`): every cell whose lowest system
    is within ``tie`` of its threshold, at least the trigger; returns (number, trigger).

    A cell's lowest distance is at least ``min_n a_n - gam rn``; cells whose bound exceeds
    ``tie`` are not scanned (their bound is their margin for the lazy rescans)."""
    sig, tauc, sin2, cos2 = pt.sig, pt.tauc, pt.sin2, pt.cos2
    ref, margin, amin, act_cell, act_sys = scr.ref, scr.margin, scr.amin, scr.act_cell, scr.act_sys
    alpha_p, p_off = b.alpha_p, b.p_off
    trig, targ, mbest, na = 0, 0, np.inf, 0
    for c in range(sig.shape[1]):
        t0 = sig[0, c] + gam * R[0, c]
        t1 = sig[1, c] + gam * R[1, c]
        t2 = sig[2, c] + gam * R[2, c]
        ref[0, c], ref[1, c], ref[2, c] = t0, t1, t2
        bound = amin[c] - gam * rn[c]
        bound -= SAFETY * (abs(amin[c]) + gam * rn[c])
        if bound > tie:
            margin[c] = bound
            continue
        m, arg = np.inf, 0
        for n in range(sin2.shape[1]):
            dt = tauc[c, n] - (sin2[c, n] * t0 + cos2[c, n] * t1)
            if alpha_p:
                dt = dt + alpha_p * (p_off - t2)
            if dt < m:
                m, arg = dt, n
        margin[c] = m
        if m < mbest:
            mbest, trig, targ = m, c, arg
        if m <= tie:
            act_cell[na] = c
            act_sys[na] = arg
            na += 1
    if na == 0:  # the trigger has the lowest distance: it is active whenever any cell is
        act_cell[0] = trig
        act_sys[0] = targ
        na = 1
    return na, trig


@njit(cache=True, inline="always")
def _rescan_lazy(rng, pt, ld, rule, scr, na):
    """Step 4 of :func:`_avalanche_dense` with the lazy stability check of the sample's loop
    (femplast.tensorial.aqs): renew the slipped cells, rescan them and every cell whose
    stress moved by its margin since its last scan (the others cannot have become active:
    ``(sin 2theta, cos 2theta)`` is a unit vector); returns the new number of active cells."""
    sig, theta, sin2, cos2, tauc, eacc = pt.sig, pt.theta, pt.sin2, pt.cos2, pt.tauc, pt.eacc
    ref, margin, act_cell, act_sys, dg = scr.ref, scr.margin, scr.act_cell, scr.act_sys, scr.dg
    gam, R, alpha_p = ld.gam, ld.R, ld.alpha_p
    for i in range(na):
        c = act_cell[i]
        renew(rng, rule, theta, sin2, cos2, tauc, c, dg[i], eacc[c])
        margin[c] = -np.inf  # forces its rescan
    nn = 0
    for c in range(sig.shape[1]):
        t0 = sig[0, c] + gam * R[0, c]
        t1 = sig[1, c] + gam * R[1, c]
        t2 = sig[2, c] + gam * R[2, c]
        dd = t0 - ref[0, c]
        ds = t1 - ref[1, c]
        m = margin[c] - TOL
        if alpha_p != 0.0:
            m -= alpha_p * abs(t2 - ref[2, c])
        if m > 0.0 and dd * dd + ds * ds < m * m:
            continue
        best, nn = _scan_cell(pt, ld, c, act_cell, act_sys, nn)
        ref[0, c], ref[1, c], ref[2, c] = t0, t1, t2
        margin[c] = best
    return nn


@njit(cache=True, inline="always")
def _avalanche_lazy(rng, pt, ld, rule, D, scr, na):
    """:func:`_avalanche_dense` with the lazy rescan; returns (events, steps, active)."""
    act_cell, act_sys, dg, dirty = scr.act_cell, scr.act_sys, scr.dg, scr.dirty
    sig, sin2, cos2 = pt.sig, pt.sin2, pt.cos2
    events = 0
    steps = 0
    while na > 0 and events < ld.max_events:
        for i in range(na):
            dirty[act_cell[i]] = 1
        _slip_all(rng, pt, ld, rule, act_cell, act_sys, na, dg)
        events += na
        steps += 1
        for i in range(na):  # step 3: redistribute
            c = act_cell[i]
            n = act_sys[i]
            dense_add(sig, D, c, dg[i] * sin2[c, n], dg[i] * cos2[c, n])
        na = _rescan_lazy(rng, pt, ld, rule, scr, na)
    return events, steps, na


@njit(cache=True, _nrt=False)
def _one_test(gen, pt, sq, b, rule, scale0, scr, out, ip, ia):
    """The test of position ``ip``, orientation ``ia`` on the patch ``pt`` (modified)."""
    R = b.Rs[ia]
    rn = b.rn[ia]
    gam = _critical_strain(pt, R, rn, b.alpha_p, scr)
    out.gamma_c[ip, ia] = gam
    if not np.isfinite(gam):
        return
    _patch_mean(pt.sig, R, gam, b.w, out.sig_c, ip, ia)
    rmax = 0.0
    for j in range(2):
        for i in range(R.shape[1]):
            rmax = max(rmax, abs(R[j, i]))
    na, trig = _trigger_set(pt, R, rn, gam, b, TIE_RTOL * (scale0 + gam * rmax), scr)
    ld = Loading(gam, R, sq, b.alpha_p, b.p_off, b.max_events)
    ev, steps, na = _avalanche_lazy(gen, pt, ld, rule, b.D, scr, na)
    _patch_mean(pt.sig, R, gam, b.w, out.sig_f, ip, ia)
    out.n_events[ip, ia] = ev
    out.n_steps[ip, ia] = steps
    out.trigger[ip, ia] = trig
    out.complete[ip, ia] = na == 0


@njit(cache=True, _nrt=False)
def _prepare_position(smp, b, ip, pt, sq, scr, out):
    """Gather the sample's arrays of position ``ip`` into the patch, with its distances to
    threshold at gamma~ = 0; returns the angle-independent part of the tie scale of
    :func:`patch_test`."""
    cells, sq_model, w = b.cells[ip], b.sq_model, b.w
    sig0, psig, ssig, dist, amins = scr.sig0, pt.sig, smp.sig, scr.dist, scr.amin
    tauc, sin2, cos2 = pt.tauc, pt.sin2, pt.cos2
    alpha_p, p_off = b.alpha_p, b.p_off
    tmax = 0.0
    smax = 0.0
    for i in range(cells.shape[0]):
        c = cells[i]
        _copy_rows(smp, pt, c, i)
        for j in range(3):
            sig0[j, i] = ssig[j, c]
            psig[j, i] = ssig[j, c]
            if sq_model.shape[0]:
                sq[i, j] = sq_model[c, j]
        d, s, p = sig0[0, i], sig0[1, i], sig0[2, i]
        smax = max(smax, abs(d), abs(s))
        amin = np.inf
        for n in range(tauc.shape[1]):  # the arithmetic of instability()
            a = tauc[i, n] - (sin2[i, n] * d + cos2[i, n] * s)
            if alpha_p:
                a = a + alpha_p * (p_off - p)
            dist[i, n] = a
            amin = min(amin, a)
            if abs(tauc[i, n]) < np.inf:  # unused systems of some variants: tau_c = inf
                tmax = max(tmax, abs(tauc[i, n]))
        amins[i] = amin
    for j in range(3):
        a = 0.0
        for i in range(cells.shape[0]):
            a += sig0[j, i] * w[i]
        out.sig_i[j, ip] = a
    return 1.0 + tmax + smax


@njit(cache=True, _nrt=False)
def _restore(smp, cells, pt, scr):
    """Undo a test: the stresses, and the sample's arrays of the cells that slipped."""
    sig, sig0, dirty = pt.sig, scr.sig0, scr.dirty
    for i in range(cells.shape[0]):
        for j in range(3):
            sig[j, i] = sig0[j, i]
        if dirty[i]:
            dirty[i] = 0
            _copy_rows(smp, pt, cells[i], i)


@njit(cache=True)
def run_batch(gen, ctr, bits, smp, b, rule, out):
    """Every test of a batch: positions x orientations in one compiled loop.

    Before each test the counter-based stream is rewound to ``[0, position id, size key,
    orientation key]`` (:class:`femplast.streams.CounterStream`: ``ctr``, ``bits``), so each
    test draws the numbers of its own Philox stream whatever else runs. ``smp``: the sample's
    arrays (:class:`Patch`, ``sig`` the current total stress), never modified.
    """
    P, npc = b.cells.shape
    N = smp.sin2.shape[1]
    pt = _patch_buffers(npc, N)
    scr = Scratch(np.zeros(npc, np.int64), np.zeros(npc, np.int64), np.zeros(npc, np.int8),
                  np.zeros(npc), np.zeros((3, npc)), np.zeros((npc, N)), np.zeros(npc),
                  np.zeros(npc), np.zeros((3, npc)), np.zeros(npc))
    sq = b.selfq if b.sq_model.shape[0] == 0 else np.empty((npc, 3))
    ids, alpha_keys = b.ids, b.alpha_keys
    for ip in range(P):
        scale0 = _prepare_position(smp, b, ip, pt, sq, scr, out)
        for ia in range(b.Rs.shape[0]):
            ctr[0] = 0
            ctr[1] = ids[ip]
            ctr[2] = b.size_key
            ctr[3] = alpha_keys[ia]
            bits[4] = 4  # CounterStream.BUFFER_POS: the output buffer is empty
            bits[14] = 0  # CounterStream.HAS_UINT32
            _one_test(gen, pt, sq, b, rule, scale0, scr, out, ip, ia)
            _restore(smp, b.cells[ip], pt, scr)


# ============================================================================ analysis
def patch_arrays(state, cells, sig) -> Patch:
    """Copies of a state's arrays on the patch ``cells`` (``sig``: their current stress)."""
    return Patch(sig.copy(), state.eps_pl[cells].copy(), state.eacc[cells].copy(),
                 state.theta[cells].copy(), state.sin2[cells].copy(), state.cos2[cells].copy(),
                 state.tauc[cells].copy())


def _rows(tabs: Tables, ip: int) -> list[np.ndarray]:
    """Views of position ``ip`` of each :class:`Tables` array (stresses: (d, s, p) first)."""
    return [t[:, ip:ip + 1] if name.startswith("sig_") else t[ip:ip + 1]
            for name, t in zip(Tables._fields, tabs, strict=True)]


def von_mises(sig_xyz) -> np.ndarray:
    s = np.asarray(sig_xyz)
    return np.sqrt(0.25 * (s[..., 0] - s[..., 1]) ** 2 + s[..., 2] ** 2)


class PatchAnalysis:
    """Patch tests of a model's states: positions, operators (cached per size) and tables.

    Args:
        model: the :class:`femplast.tensorial.model.TensorialModel` (mesh on one rank).
        shape: ``"square"`` (structured meshes) or ``"disk"``.
        sizes: n per side (squares) or radii R (disks).
        alphas_deg: test orientations in degrees (0 forward, 90 backward).
        spacing: grid spacing of patch centres (None: every lattice position / cell size).
        self_response: ``"patch"`` or ``"model"`` (see the module docstring).
    """

    def __init__(self, model, shape: str = "square", sizes=(1,), alphas_deg=DEFAULT_ALPHAS,
                 spacing: float | None = None, self_response: str = "patch"):
        box = model.box
        if shape not in SHAPES:
            raise FemplastInputError("patches.shape", shape, f"one of {SHAPES}")
        bounded = getattr(box, "bounded", False)
        if shape == "square" and not (box.structured or bounded):
            raise FemplastInputError("patches.shape", shape, "'disk' on gmsh meshes")
        if self_response not in SELF_RESPONSES:
            raise FemplastInputError("patches.self_response", self_response,
                                     f"one of {SELF_RESPONSES}")
        self.model, self.shape = model, shape
        self.alphas_deg = [float(a) for a in alphas_deg]
        self.alphas = np.deg2rad(self.alphas_deg)
        self.self_response = self_response
        self.rules = PatchRules.from_model(model)
        self._G, self._B = model.redist.cell_moduli()
        shared = box.structured and np.ptp(self._G) == 0 and np.ptp(self._B) == 0
        self.sets: list[PatchSet] = []
        for s in sizes:
            if bounded:
                self.sets.append(specimen_patches(box, shape, s, spacing))
            elif shared:
                self.sets.append(structured_patches(box, shape, s, spacing))
            else:
                self.sets.append(disk_patches(box, float(s), spacing))
        self.operator_time = 0.0
        self.test_time = 0.0
        self.num_tests = 0
        self.cached_bytes = 0
        self._transient: dict[str, int] = {}

    def operator(self, ps: PatchSet, pos: int, keep_fe: bool = False) -> PatchOperator:
        """The operator of position ``pos`` (the shared reference's on structured meshes).

        Per-position operators (gmsh meshes, specimens) depend only on the mesh and the
        moduli, so they are kept for the next probed states while they fit in
        ``OPERATOR_CACHE_MB``; beyond it one is kept at a time (rebuilt per state)."""
        import time

        key = ps.ref if ps.shared else pos
        if key not in ps.ops or (keep_fe and ps.ops[key].fe is None):
            t0 = time.perf_counter()
            cells = ps.cells[key]
            fe = PatchFE(self.model.box, cells, self._G[cells], self._B[cells],
                         centre=None if ps.shared else ps.centres[key])
            op = PatchOperator.build(fe, keep_fe)
            size = sum(a.nbytes for a in (op.D, op.U, op.selfq, op.weights))
            if ps.shared or keep_fe or self.cached_bytes + size <= OPERATOR_CACHE_MB * 2**20:
                self.cached_bytes += 0 if key in ps.ops else size
            else:  # over the budget: a transient slot
                ps.ops.pop(self._transient.get(ps.label), None)
                self._transient[ps.label] = key
            ps.ops[key] = op
            self.operator_time += time.perf_counter() - t0
        return ps.ops[key]

    def positions(self, ps: PatchSet) -> range:
        """Positions tested (the shared reference is an extra entry, not tested)."""
        return range(len(ps.cells) - (1 if ps.shared else 0))

    def analyse(self, state, gamma_ext: float, alpha_ext: float, key=(0, 0, 0)) -> list[dict]:
        """Test every patch and orientation on ``state`` at external strain ``gamma_ext``.

        ``key = (seed, realization, state_index)`` gives the Philox key of the state's tests
        (:func:`femplast.streams.probe_key`); a test's counter is ``[0, position id, 1000 size,
        1000 alpha_deg mod 360000]`` (:func:`femplast.streams.counter_generator`), so its
        result does not depend on which other sizes, positions or orientations are tested, in
        which order or on which rank. The state is not modified. Returns one table (dict of
        arrays) per size.
        """
        import time

        m = self.model
        total = np.ascontiguousarray(state.sig + gamma_ext * m.load_response(alpha_ext))
        smp = Patch(total, state.eps_pl, state.eacc, state.theta, state.sin2, state.cos2,
                    state.tauc)
        stream = CounterStream(probe_key(*key))
        out = []
        for ps in self.sets:
            t0 = time.perf_counter()
            P, A = len(self.positions(ps)), len(self.alphas)
            tabs = Tables(np.full((P, A), np.nan), np.full((3, P, A), np.nan),
                          np.full((3, P, A), np.nan), np.zeros((P, A), np.int64),
                          np.zeros((P, A), np.int64), np.full((P, A), -1, np.int64),
                          np.zeros((P, A), bool), np.zeros((3, P)))
            if ps.shared:
                self._batch(stream, smp, ps, ps.ref, np.asarray(ps.cells[:P]), ps.ids[:P], tabs)
            else:  # one operator per position: one batch each, writing into its row
                for ip in self.positions(ps):
                    row = Tables(*(np.ascontiguousarray(v) for v in _rows(tabs, ip)))
                    self._batch(stream, smp, ps, ip, np.asarray(ps.cells[ip])[None],
                                ps.ids[ip:ip + 1], row)
                    for v, r in zip(_rows(tabs, ip), row, strict=True):
                        v[...] = r
            res = self._table(ps, tabs, P)
            self.test_time += time.perf_counter() - t0
            self.num_tests += P * A
            out.append(res)
        return out

    def _batch(self, stream, smp, ps: PatchSet, pos: int, cells, ids, tabs) -> None:
        """Run the compiled batch of ``cells`` (positions sharing the operator of ``pos``)."""
        op = self.operator(ps, pos)
        sq_model = (np.zeros((0, 3)) if self.self_response == "patch"
                    else np.ascontiguousarray(self.model.redist.selfq))
        p = self.rules
        Rs = np.stack([op.response(a) for a in self.alphas])
        b = Batch(op.D, Rs, np.stack([load_speed(R, p.alpha_p) for R in Rs]), op.selfq,
                  np.ascontiguousarray(op.weights), np.ascontiguousarray(cells, np.int64),
                  np.asarray(ids, np.int64), int(round(ps.size * 1000)),
                  np.array([int(round(a * 1000)) % 360000 for a in self.alphas_deg], np.int64),
                  sq_model, float(p.alpha_p), float(p.p_offset), int(p.max_events))
        run_batch(stream.gen, stream.ctr, stream.bits, smp, b, p.rule.args(), tabs)

    def _table(self, ps: PatchSet, tabs, P: int) -> dict:
        """The output table of one size (stresses [xx, yy, xy], resolved stresses)."""
        res = dict(gamma_c=tabs.gamma_c, sigma_c=from_dsp(tabs.sig_c),
                   sigma_f=from_dsp(tabs.sig_f), n_events=tabs.n_events,
                   complete=tabs.complete, sigma_i=from_dsp(tabs.sig_i))
        trig = tabs.trigger
        if ps.shared:
            cells = np.asarray(ps.cells[:P])
            glob = np.take_along_axis(cells, np.maximum(trig, 0), axis=1)
        else:
            glob = np.array([np.asarray(ps.cells[ip])[np.maximum(t, 0)]
                             for ip, t in enumerate(trig)], np.int64).reshape(trig.shape)
        res["trigger_cell"] = np.where(trig >= 0, glob, -1)
        for q in ("tau_i", "tau_c", "tau_f"):
            res[q] = np.full(tabs.gamma_c.shape, np.nan)
        for ia, a in enumerate(self.alphas):
            res["tau_i"][:, ia] = resolved_shear(a, res["sigma_i"])
            res["tau_c"][:, ia] = resolved_shear(a, res["sigma_c"][:, ia])
            res["tau_f"][:, ia] = resolved_shear(a, res["sigma_f"][:, ia])
        res["dtau_c"] = res["tau_c"] - res["tau_i"]
        res["delta_tau_c"] = res["tau_c"] - res["tau_f"]
        res["von_mises"] = von_mises(res["sigma_i"])
        res["centre"] = np.asarray(ps.centres[:P])
        res["cells"] = (np.asarray(ps.cells[:P]) if ps.shared
                        else np.array([len(c) for c in ps.cells]))
        res["label"], res["size"], res["radius"] = ps.label, ps.size, ps.radius
        res["skipped"] = ps.skipped
        return res


# ============================================================================ statistics
def table_sums(tables: list[dict]) -> dict:
    """Per (size label, alpha): count, sum and sum of squares of each quantity (finite only)."""
    out = {}
    for t in tables:
        vals = {q: (np.broadcast_to(t[q][:, None], t["tau_i"].shape) if q == "von_mises"
                    else t[q]) for q in QUANTITIES}
        ok = np.isfinite(t["tau_c"]) & t["complete"]
        ent = dict(size=t["size"], radius=t["radius"], n=ok.sum(axis=0).astype(float))
        for q, v in vals.items():
            vz = np.where(ok, v, 0.0)
            ent[q] = np.stack([vz.sum(axis=0), (vz * vz).sum(axis=0)])
        out[t["label"]] = ent
    return out


def merge_sums(a: dict | None, b: dict) -> dict:
    if a is None:
        return {k: {q: (np.array(v, float) if not isinstance(v, (str, float, int)) else v)
                    for q, v in e.items()} for k, e in b.items()}
    for k, e in b.items():
        if k not in a:
            a[k] = {q: v for q, v in e.items()}
            continue
        a[k]["n"] = a[k]["n"] + e["n"]
        for q in QUANTITIES:
            a[k][q] = a[k][q] + e[q]
    return a


def summary_entries(state: str, gamma_ext, sums: dict, alphas_deg) -> list[dict]:
    """summary.json entries: mean and std per (state, size, alpha)."""
    out = []
    for label, e in sums.items():
        for ia, a in enumerate(alphas_deg):
            n = float(e["n"][ia])
            ent = dict(state=state, gamma_ext=gamma_ext, size=label, R=float(e["radius"]),
                       alpha=float(a), count=int(n))
            for q in QUANTITIES:
                s1, s2 = e[q][0][ia], e[q][1][ia]
                mean = s1 / n if n else float("nan")
                var = max(s2 / n - mean * mean, 0.0) if n else float("nan")
                ent[q] = dict(mean=float(mean), std=float(math.sqrt(var)) if n else float("nan"))
            out.append(ent)
    return out


# ============================================================================ runner hook
def analysis_for(case, model) -> PatchAnalysis:
    """The :class:`PatchAnalysis` of a case, built once per model (operators are cached)."""
    pa = case.patches
    cached = getattr(model, "_femplast_patch_analysis", None)
    if cached is None:
        sizes = pa.n if pa.shape == "square" else pa.radius
        cached = PatchAnalysis(model, pa.shape, sizes, pa.alpha, pa.spacing, pa.self_response)
        model._femplast_patch_analysis = cached
    return cached


class PatchProbe:
    """Patch tests of one realization at the states chosen in the case's ``patches:`` section.

    The realization pipeline (femplast.protocols.pipeline) calls it at the probed states:
    state 0 is the prepared state before loading (``patches.initial``: fresh, initial.state or
    KMC-quenched), states ``1..`` the stable states after the avalanche at each
    ``patches.gamma_ext`` (ascending) of the probed load stage, then the final states of the
    stages named in ``patches.after``. Each state's tests draw from their own seeded streams
    ``(seed, realization, state id, ...)``, so adding probes changes no other result.
    """

    def __init__(self, case, model, index: int):
        self.case, self.model, self.index = case, model, int(index)
        self.analysis = analysis_for(case, model)
        self.records: list[tuple[int, str, float, list[dict]]] = []
        self.sums: dict[str, dict] = {}
        self.wall = 0.0
        self.on_probe = None  # on_probe(label, tests of the state): progress

    @property
    def positions(self) -> dict | None:
        """On a specimen: per size label the positions tested and skipped (the same for every
        realization and state); None on the periodic box."""
        if not getattr(self.model.box, "bounded", False):
            return None
        a = self.analysis
        return {ps.label: dict(tested=len(a.positions(ps)), skipped=int(ps.skipped))
                for ps in a.sets}

    def stops(self, dgamma: float) -> list[int]:
        """The increments ``k`` (``gamma_ext = k dgamma``) of the probed load stage."""
        return sorted({int(round(g / dgamma)) for g in self.case.patches.gamma_ext})

    def probes_stage(self, name: str, first_strain_stage: str) -> bool:
        """Whether ``patches.gamma_ext`` refers to the stage ``name``."""
        return name == (self.case.patches.stage or first_strain_stage)

    def _probe(self, state, g: float, alpha: float, label: str, sid: int):
        import time

        t0, n0 = time.perf_counter(), self.analysis.num_tests
        tables = self.analysis.analyse(state, g, alpha, (self.case.run.seed, self.index, sid))
        self._account(sid, label, g, tables)
        self.wall += time.perf_counter() - t0
        if self.on_probe is not None:
            self.on_probe(label, self.analysis.num_tests - n0)

    def _account(self, sid: int, label: str, g: float, tables: list[dict]):
        self.records.append((sid, label, g, tables))
        s = table_sums(tables)
        self.sums[label] = merge_sums(self.sums.get(label), s)
        if label.startswith("gamma_ext=") and g >= self.case.loading.stationary_from:
            self.sums["stationary"] = merge_sums(self.sums.get("stationary"), table_sums(tables))

    def initial(self, state, alpha: float):
        """The prepared state, before loading (``patches.initial``)."""
        if self.case.patches.initial:
            self._probe(state, 0.0, alpha, "initial", 0)

    def at_increment(self, state, k: int, dgamma: float, alpha: float):
        """The stable state at increment ``k`` of the probed load stage, if requested."""
        ks = self.stops(dgamma)
        if k in ks:
            self._probe(state, k * dgamma, alpha, f"gamma_ext={k * dgamma:g}", 1 + ks.index(k))

    def after_stage(self, state, name: str, gamma: float, alpha: float, dgamma: float):
        """The final state of stage ``name`` (at its ``gamma``), if in ``patches.after``."""
        after = list(self.case.patches.after)
        if name in after:
            sid = 1 + len(self.stops(dgamma)) + after.index(name)
            self._probe(state, gamma, alpha, f"after:{name}", sid)

    def checkpoint(self) -> dict:
        return dict(wall=self.wall, records=[dict(sid=a, label=b, g=c, tables=list(t))
                                             for a, b, c, t in self.records])

    def restore(self, d: dict) -> None:
        self.records, self.sums = [], {}
        for r in d["records"]:
            self._account(int(r["sid"]), str(r["label"]), float(r["g"]),
                          [dict(t) for t in r["tables"]])
        self.wall = float(d["wall"])

    def write(self, outdir):
        """``OUTDIR/patches/rNNNN.h5``: one group per probed state, one subgroup per size."""
        from pathlib import Path

        from femplast.io.output import H5Writer, write_group
        from femplast.version import __version__

        d = Path(outdir) / "patches"
        d.mkdir(parents=True, exist_ok=True)
        a = self.analysis
        with H5Writer(d / f"r{self.index:04d}.h5") as f:
            f.attrs.update(dict(realization=self.index, seed=self.case.run.seed,
                                femplast_version=__version__, shape=a.shape,
                                self_response=a.self_response, wall_time=self.wall,
                                doc="patch tests (femplast.patches): stresses [xx, yy, xy]; "
                                    "per position x alpha: gamma_c, sigma_c, sigma_f, tau_i, "
                                    "tau_c, tau_f, dtau_c = tau_c - tau_i, delta_tau_c = "
                                    "tau_c - tau_f; per position: sigma_i, von_mises, centre, "
                                    "cells"))
            for sid, label, g, tables in self.records:
                grp = f.require_group(f"s{sid}")
                grp.attrs.update(dict(label=label, gamma_ext=g))
                for t in tables:
                    data = {k: v for k, v in t.items()
                            if isinstance(v, np.ndarray)}
                    data["alpha"] = np.asarray(a.alphas_deg)
                    write_group(grp, t["label"], data,
                                dict(size=t["size"], R=t["radius"], skipped=t["skipped"]))


def merge_probe_sums(all_sums) -> dict:
    """Merge :attr:`PatchProbe.sums` of several realizations."""
    out: dict[str, dict] = {}
    for sums in all_sums:
        for label, s in sums.items():
            out[label] = merge_sums(out.get(label), s)
    return out


def summary_section(case, all_sums, wall=0.0, positions: dict | None = None) -> dict:
    """The ``patches`` entry of summary.json: mean and std per (state, size, alpha); on a
    specimen also ``positions`` (:attr:`PatchProbe.positions`: tested and skipped per size,
    per realization and state)."""
    merged = merge_probe_sums(all_sums)
    pa = case.patches
    entries = []
    for label, s in merged.items():
        g = float(label.split("=", 1)[1]) if label.startswith("gamma_ext=") else None
        entries += summary_entries(label, g, s, pa.alpha)
    out = dict(shape=pa.shape, sizes=pa.n if pa.shape == "square" else pa.radius,
               alpha=pa.alpha, self_response=pa.self_response, states=list(merged),
               wall_time=wall,
               doc="per (state, size, alpha): count of tests, mean and std of tau_i, tau_c, "
                   "dtau_c = tau_c - tau_i, delta_tau_c = tau_c - tau_f, von_mises(Sigma_i); "
                   "R = equivalent radius; 'stationary' pools the probed gamma_ext >= "
                   "loading.stationary_from",
               entries=entries)
    if positions is not None:  # specimens: positions skipped near the boundaries
        out["positions"] = positions
    return out
