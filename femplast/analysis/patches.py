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
changed. Its random numbers come from its own generator,
``SeedSequence([seed, realization, state, size, position, alpha])``, so results do not depend
on which tests run or in which order.

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

from femplast.errors import FemplastInputError
from femplast.fe.elasticity import resolved_shear
from femplast.fe.patch_fe import PatchFE, unwrapped_patch_mesh  # noqa: F401 (re-exported)
from femplast.redistribution.backends import (
    from_dsp,
    self_coefficients,
    to_dsp,
)
from femplast.redistribution.kernels import dense_add
from femplast.tensorial.aqs import cell_scan
from femplast.tensorial.rules import SlipRule, add_slip, renew, self_response, slip_amplitude

SHAPES = ("square", "disk")
SELF_RESPONSES = ("patch", "model")
DEFAULT_ALPHAS = [float(a) for a in range(0, 180, 10)]
QUANTITIES = ("tau_i", "tau_c", "dtau_c", "delta_tau_c", "von_mises")
TIE_RTOL = 1e-12
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
        skipped: positions not tested (always 0 since seam-crossing disks are unwrapped; kept
            in the output tables for comparison with older runs).
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
@njit(cache=True)
def _slip_all(rng, pt, ld, rule, act_cell, act_sys, na, dg_out):
    """Step 2: the ``na`` active cells slip (amplitude, eigenstrain: the model's rule)."""
    for i in range(na):
        c = act_cell[i]
        n = act_sys[i]
        s2 = pt.sin2[c, n]
        c2 = pt.cos2[c, n]
        tau = s2 * (pt.sig[0, c] + ld.gam * ld.R[0, c]) + c2 * (pt.sig[1, c] + ld.gam * ld.R[1, c])
        dg = slip_amplitude(rng, rule, tau, self_response(c, s2, c2, ld.selfq))
        dg_out[i] = dg
        pt.eacc[c] += dg
        add_slip(pt.eps_pl, c, s2, c2, dg)


@njit(cache=True)
def _renew_scan(rng, pt, ld, rule, act_cell, act_sys, na, dg):
    """Step 4: renew the slipped cells, then rescan every cell; returns the new number of
    active cells."""
    for i in range(na):
        c = act_cell[i]
        renew(rng, rule, pt.theta, pt.sin2, pt.cos2, pt.tauc, c, dg[i], pt.eacc[c])
    nn = 0
    for c in range(pt.sig.shape[1]):
        best, arg = cell_scan(c, ld.gam, pt.sig, ld.R, pt.sin2, pt.cos2, pt.tauc, ld.alpha_p,
                              ld.p_off)
        if best < 0.0:
            act_cell[nn] = c
            act_sys[nn] = arg
            nn += 1
    return nn


@njit(cache=True)
def _avalanche_dense(rng, pt, ld, rule, D, act_cell, act_sys, na):
    """Relax at constant boundary strain with the dense Green operator; returns (events,
    steps, active)."""
    dg = np.empty(pt.sig.shape[1])
    events = 0
    steps = 0
    while na > 0 and events < ld.max_events:
        _slip_all(rng, pt, ld, rule, act_cell, act_sys, na, dg)
        events += na
        steps += 1
        for i in range(na):  # step 3: redistribute
            c = act_cell[i]
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
    scale = 1.0 + np.abs(pt.tauc).max() + np.abs(sig[:2]).max() + gam * np.abs(R[:2]).max()
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
        ev, steps, na = _avalanche_dense(rng, pt, ld, rule, op.D, act_cell, act_sys, na)
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


# ============================================================================ analysis
def patch_arrays(state, cells, sig) -> Patch:
    """Copies of a state's arrays on the patch ``cells`` (``sig``: their current stress)."""
    return Patch(sig.copy(), state.eps_pl[cells].copy(), state.eacc[cells].copy(),
                 state.theta[cells].copy(), state.sin2[cells].copy(), state.cos2[cells].copy(),
                 state.tauc[cells].copy())


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
        if shape == "square" and not box.structured:
            raise FemplastInputError("patches.shape", shape, "'disk' on gmsh meshes")
        if self_response not in SELF_RESPONSES:
            raise FemplastInputError("patches.self_response", self_response,
                                     f"one of {SELF_RESPONSES}")
        self.model, self.shape = model, shape
        self.alphas_deg = [float(a) for a in alphas_deg]
        self.alphas = np.deg2rad(self.alphas_deg)
        self.self_response = self_response
        self.rules = PatchRules.from_model(model)
        el = model.el
        self._G, self._B = el.gather(el.G), el.gather(el.B)
        shared = box.structured and el.uniform
        self.sets: list[PatchSet] = []
        for s in sizes:
            if shared:
                self.sets.append(structured_patches(box, shape, s, spacing))
            else:
                self.sets.append(disk_patches(box, float(s), spacing))
        self.operator_time = 0.0
        self.test_time = 0.0
        self.num_tests = 0

    def operator(self, ps: PatchSet, pos: int, keep_fe: bool = False) -> PatchOperator:
        import time

        key = ps.ref if ps.shared else pos
        if key not in ps.ops or (keep_fe and ps.ops[key].fe is None):
            t0 = time.perf_counter()
            cells = ps.cells[key]
            fe = PatchFE(self.model.box, cells, self._G[cells], self._B[cells],
                         centre=None if ps.shared else ps.centres[key])
            op = PatchOperator.build(fe, keep_fe)
            if not ps.shared and not keep_fe:
                ps.ops.clear()  # gmsh: one operator per position, not kept
            ps.ops[key] = op
            self.operator_time += time.perf_counter() - t0
        return ps.ops[key]

    def positions(self, ps: PatchSet) -> range:
        """Positions tested (the shared reference is an extra entry, not tested)."""
        return range(len(ps.cells) - (1 if ps.shared else 0))

    def analyse(self, state, gamma_ext: float, alpha_ext: float, key=(0, 0, 0)) -> list[dict]:
        """Test every patch and orientation on ``state`` at external strain ``gamma_ext``.

        ``key = (seed, realization, state_index)`` seeds the per-test generators with
        ``SeedSequence([*key, 1000 size, position id, 1000 alpha_deg mod 360000])``, so a test's
        result does not depend on which other sizes, positions or orientations are tested. The
        state is not modified. Returns one table (dict of arrays) per size.
        """
        import time

        m = self.model
        total = state.sig + gamma_ext * m.load_response(alpha_ext)  # (3, nc) current stress
        p = self.rules
        out = []
        for ps in self.sets:
            t0 = time.perf_counter()
            pos_ids = list(self.positions(ps))
            P, A = len(pos_ids), len(self.alphas)
            res = {k: np.full((P, A), np.nan) for k in ("gamma_c", "tau_i", "tau_c", "tau_f",
                                                         "dtau_c", "delta_tau_c")}
            res["sigma_c"] = np.full((P, A, 3), np.nan)
            res["sigma_f"] = np.full((P, A, 3), np.nan)
            res["n_events"] = np.zeros((P, A), np.int64)
            res["trigger_cell"] = np.full((P, A), -1, np.int64)
            res["complete"] = np.zeros((P, A), bool)
            res["sigma_i"] = np.zeros((P, 3))
            gstar_all = None
            size_key = int(round(ps.size * 1000))
            alpha_keys = [int(round(a * 1000)) % 360000 for a in self.alphas_deg]
            if ps.shared:
                op = self.operator(ps, ps.ref)
                cells = ps.cells[:P]
                sig_p = total[:, cells]  # (3, P, np)
                gstar_all = np.stack([instability(sig_p, op.response(a), state.sin2[cells],
                                                  state.cos2[cells], state.tauc[cells],
                                                  p.alpha_p, p.p_offset)[0]
                                      for a in self.alphas], axis=-1)  # (P, A)
            for ip, pos in enumerate(pos_ids):
                op = self.operator(ps, pos)
                cells = np.asarray(ps.cells[pos])
                w = op.weights
                sig0 = np.ascontiguousarray(total[:, cells])
                res["sigma_i"][ip] = from_dsp(sig0 @ w)
                selfq = (op.selfq if self.self_response == "patch"
                         else np.ascontiguousarray(m.redist.selfq[cells]))
                for ia, a in enumerate(self.alphas):
                    rng = np.random.default_rng(np.random.SeedSequence(
                        [int(k) for k in key] + [size_key, int(ps.ids[pos]), alpha_keys[ia]]))
                    r = patch_test(op, a, patch_arrays(state, cells, sig0), p, rng, selfq=selfq,
                                   gamma_star=None if gstar_all is None else gstar_all[ip, ia])
                    res["gamma_c"][ip, ia] = r.gamma_c
                    res["sigma_c"][ip, ia] = r.sigma_c
                    res["sigma_f"][ip, ia] = r.sigma_f
                    res["n_events"][ip, ia] = r.n_events
                    res["trigger_cell"][ip, ia] = cells[r.trigger] if r.trigger >= 0 else -1
                    res["complete"][ip, ia] = r.complete
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
            self.test_time += time.perf_counter() - t0
            self.num_tests += P * A
            out.append(res)
        return out


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

    def stops(self, dgamma: float) -> list[int]:
        """The increments ``k`` (``gamma_ext = k dgamma``) of the probed load stage."""
        return sorted({int(round(g / dgamma)) for g in self.case.patches.gamma_ext})

    def probes_stage(self, name: str, first_strain_stage: str) -> bool:
        """Whether ``patches.gamma_ext`` refers to the stage ``name``."""
        return name == (self.case.patches.stage or first_strain_stage)

    def _probe(self, state, g: float, alpha: float, label: str, sid: int):
        import time

        t0 = time.perf_counter()
        tables = self.analysis.analyse(state, g, alpha, (self.case.run.seed, self.index, sid))
        self._account(sid, label, g, tables)
        self.wall += time.perf_counter() - t0

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


def summary_section(case, all_sums, wall=0.0) -> dict:
    """The ``patches`` entry of summary.json: mean and std per (state, size, alpha)."""
    merged = merge_probe_sums(all_sums)
    pa = case.patches
    entries = []
    for label, s in merged.items():
        g = float(label.split("=", 1)[1]) if label.startswith("gamma_ext=") else None
        entries += summary_entries(label, g, s, pa.alpha)
    return dict(shape=pa.shape, sizes=pa.n if pa.shape == "square" else pa.radius,
                alpha=pa.alpha, self_response=pa.self_response, states=list(merged),
                wall_time=wall,
                doc="per (state, size, alpha): count of tests, mean and std of tau_i, tau_c, "
                    "dtau_c = tau_c - tau_i, delta_tau_c = tau_c - tau_f, von_mises(Sigma_i); "
                    "R = equivalent radius; 'stationary' pools the probed gamma_ext >= "
                    "loading.stationary_from",
                entries=entries)


# ----------------------------------------------------------------------------- validation
def check(case) -> None:
    """Consistency of the patches section with the rest of the case (FemplastInputError)."""
    pa, m = case.patches, case.mesh
    if not pa.enabled:
        return
    if case.model != "tensorial":
        raise FemplastInputError("patches.enabled", True, "only with model: tensorial")
    if pa.shape == "square":
        if m.kind == "gmsh":
            raise FemplastInputError("patches.shape", "square", "'disk' on gmsh meshes")
        if not pa.n:
            raise FemplastInputError("patches.n", pa.n, "at least one size")
        for i, n in enumerate(pa.n):
            if n > m.n:
                raise FemplastInputError(f"patches.n[{i}]", n, f"<= mesh.n = {m.n}")
    elif not pa.radius:
        raise FemplastInputError("patches.radius", pa.radius, "at least one radius (shape: "
                                 "disk)")
    else:
        for i, r in enumerate(pa.radius):
            if 2 * r >= m.L:
                raise FemplastInputError(f"patches.radius[{i}]", r, f"< mesh.L / 2 = {m.L / 2:g} "
                                         "(a disk must not overlap its own periodic image)")
    if not pa.alpha:
        raise FemplastInputError("patches.alpha", pa.alpha, "at least one orientation")
    if not pa.initial and not pa.gamma_ext and not pa.after:
        raise FemplastInputError("patches.gamma_ext", pa.gamma_ext, "at least one gamma_ext "
                                 "when patches.initial is false")
    for i, g in enumerate(pa.gamma_ext if not case.stages else ()):
        if g > case.loading.gamma_max:
            raise FemplastInputError(f"patches.gamma_ext[{i}]", g,
                                     f"in [0, loading.gamma_max = {case.loading.gamma_max}]")
