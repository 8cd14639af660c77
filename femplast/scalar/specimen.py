"""The scalar EPM on a specimen (issue 19): the scalar paper's cells, thresholds, slips and
rejuvenation (:mod:`femplast.scalar.model`, the same compiled loop) on a meshed geometry with
boundary conditions (:mod:`femplast.fe.geometry`, :class:`femplast.fe.boundary.BoundedElasticity`)
instead of the bi-periodic lattice.

No translation invariance: the redistribution kernel is not one array shifted around but the
specimen's own FE response.

* Slip direction: one pure shear ``M(theta)`` for every cell, the direction of the loading
  (:func:`slip_angle`: of the grips' affine drive, else of the area-averaged FE load
  response, femplast's ``(d, s, p)`` convention): ``theta = 0`` (xy) between sheared walls,
  45 degrees in uniaxial tension (compression: -45 degrees: the slip opposes the load). A
  slip ``eps_p`` of cell ``j`` is the eigenstrain ``2 eps_p M(theta)`` (for ``theta = 0``:
  the tensorial ``eps_xy = eps_p`` of the lattice model) and the scalar
  stress is the resolved shear ``tau = M(theta) : sigma = sin 2theta d + cos 2theta s``.
* Kernel: ``K[j, i]``, the resolved stress change of cell ``i`` per unit slip of cell ``j``,
  from the specimen's factorized FE problem: ``dense`` keeps every column (``8 cells^2``
  bytes, within ``redistribution.dense_memory_mb``; blocked multi-right-hand-side solves, one
  per 256 cells) and a slip is one column add in the compiled loop; ``direct`` solves the whole
  slip field once per synchronous step (every step leaves the loop).
* Driving: ``sigma_i = sig_i + R_i gamma_ext`` with ``R_i`` the resolved FE stress per unit
  gamma_ext of the driven boundaries at zero plastic strain (the lattice's ``G``); extremal
  loading raises gamma_ext until the first cell with ``R_i > 0`` reaches its threshold.
* Macroscopic stress: the force conjugate to gamma_ext per unit area (``F_drive / A``,
  :meth:`BoundedElasticity.drive_force`), linear in the slips by reciprocity (Maxwell-Betti):
  ``Sigma = S_R gamma_ext - 2 sum_j w_j R_j (eps_p,j + eps0_j)``, ``w_j`` the area fractions,
  ``S_R`` the drive stress per unit gamma_ext. Between sheared walls it is ``<sigma_xy>``; in
  tension the nominal stress. On the lattice it reduces to ``G gamma - 2 G <eps_p>``.
* Frozen-in stress (``scalar.internal_stress_std`` = w_g): the FE stress of a white-noise slip
  field ``eps0`` rescaled to std w_g (area-weighted), kept as that slip field so that it is
  exactly compatible (the lattice also removes its mean; a specimen's constant stress is not
  compatible with free surfaces, so here it is not removed).
"""

from __future__ import annotations

import json
import math

import numpy as np

from femplast.errors import FemplastInputError
from femplast.fe.elasticity import M_vector, to_dsp
from femplast.scalar import model as S
from femplast.scalar.distributions import Distribution, ndtri

BACKENDS = ("auto", "dense", "direct")
BLOCK = 256  # columns per multi-right-hand-side solve of the dense operator


def dense_bytes(num_cells: int) -> int:
    """Memory of the scalar dense operator (one float64 column per cell): one resolved
    component of the tensorial operator's six (what case validation estimates)."""
    from femplast.redistribution.backends import DenseRedistribution

    return DenseRedistribution.memory_bytes(num_cells) // 6


def choose_backend(backend: str, num_cells: int, memory_mb: float | None) -> str:
    """``dense`` when asked or (``auto``) within the budget (``memory_mb``, None: from the
    available memory, :func:`femplast.redistribution.backends.dense_budget_mb`), else
    ``direct``."""
    from femplast.redistribution.backends import dense_budget_mb

    if backend not in BACKENDS:
        raise FemplastInputError("redistribution.backend", backend,
                                 f"one of {BACKENDS} with model: scalar on a specimen")
    need = dense_bytes(num_cells) / 2**20
    budget, why = dense_budget_mb(memory_mb)
    if backend == "auto":
        return "dense" if need <= budget else "direct"
    if backend == "dense" and need > budget:
        raise FemplastInputError("redistribution.dense_memory_mb",
                                 "null" if memory_mb is None else memory_mb,
                                 f">= {need:.0f} MiB for the scalar dense operator of "
                                 f"{num_cells} cells (budget: {why}; or backend: direct)")
    return backend


def slip_angle(el, load_dsp: np.ndarray, w: np.ndarray) -> float:
    """The loading direction theta (radians, module doc): of the deviatoric part of the grips'
    affine drive ``Gd`` when there is one (``2 theta = atan2((Gd_yy - Gd_xx) / 2,
    (Gd_xy + Gd_yx) / 2)``: 0 between sheared walls, 45 degrees in tension or compression
    exactly), else of the area-averaged load response ``(d, s)``."""
    Gd = el.drive_gradient
    if Gd is not None and (Gd[1, 1] != Gd[0, 0] or Gd[0, 1] + Gd[1, 0] != 0):
        return 0.5 * math.atan2(0.5 * (Gd[1, 1] - Gd[0, 0]), 0.5 * (Gd[0, 1] + Gd[1, 0]))
    return 0.5 * math.atan2(float(w @ load_dsp[0]), float(w @ load_dsp[1]))


class SpecimenScalarModel(S.ScalarModel):
    """The scalar model on a specimen (module doc); the interface of
    :class:`femplast.scalar.model.ScalarModel`, driven by the same :class:`ScalarDriver`.

    Args:
        el: the specimen's factorized FE problem (:class:`BoundedElasticity`, one rank).
        c0, c1, thresholds, renewal, w_g: as for :class:`ScalarModel`.
        backend: ``auto``, ``dense`` or ``direct`` (see :func:`choose_backend`).
        dense_memory_mb: budget of the dense operator.
    """

    def __init__(self, el, c0: float, c1: float, thresholds: Distribution,
                 renewal: Distribution | None = None, w_g: float = 0.0,
                 backend: str = "auto", dense_memory_mb: float | None = None):
        if not el.uniform:
            raise ValueError("the scalar model on a specimen has uniform moduli")
        self.el, self.box = el, el.box
        self.num_cells = nc = el.box.num_cells
        self.n = max(1, int(round(math.sqrt(nc))))  # the LOC normalization (eq. 13)
        self.G, self.B = float(np.ravel(el.G)[0]), float(np.ravel(el.B)[0])
        self._set_law(c0, c1, thresholds, renewal, w_g)
        self.sigma0_dist = None
        self.w = np.ascontiguousarray(el.gather(el.area) / el.box_area)
        Rd = to_dsp(el.gather(el.stress(np.zeros((el.num_local, 3)), el.external(1.0))))
        self.theta = slip_angle(el, Rd, self.w)
        self.unit = 2.0 * M_vector(self.theta)  # eigenstrain per unit slip eps_p
        self.R = np.ascontiguousarray(self.resolve(Rd))
        self.drive_per_gamma = el.drive_force(np.zeros((el.num_local, 3)), 1.0) / el.box_area
        self.backend = choose_backend(backend, nc, dense_memory_mb)
        self.kernel_kind = f"fe-specimen-{self.backend}"
        self.columns = self.backend == "dense"
        self.K = self._dense() if self.columns else np.zeros((1, 1))
        self.fft_threshold = max(8, int(2.5 * np.log2(nc))) if self.columns else -1
        self.rec_names = S.REC_NAMES + ("resolved_stress",)

    @property
    def weights(self) -> np.ndarray:
        """Area share of each cell (canonical order; the tensorial model's name)."""
        return self.w

    # ---------------------------------------------------------------- FE responses
    def resolve(self, dsp: np.ndarray) -> np.ndarray:
        """Resolved shear ``sin 2theta d + cos 2theta s`` of stresses ``(d, s, p)`` (3, ...)."""
        return math.sin(2 * self.theta) * dsp[0] + math.cos(2 * self.theta) * dsp[1]

    def column(self, cell: int) -> np.ndarray:
        """Resolved stress change of every cell per unit slip of ``cell`` (one FE solve)."""
        el = self.el
        eps = np.zeros((el.num_local, 3))
        k = el.local_position(cell)
        if k >= 0:
            eps[k] = self.unit
        return self.resolve(to_dsp(el.gather(el.stress(eps))))

    def _dense(self) -> np.ndarray:
        """Every column, ``K[j]`` the response to a unit slip of cell ``j`` (blocked solves)."""
        el, nc = self.el, self.num_cells
        K = np.empty((nc, nc))
        for a in range(0, nc, BLOCK):
            cells = np.arange(a, min(a + BLOCK, nc))
            # (m, 1, 3, nc): (d, s, p) rows, local positions == canonical on one rank
            dsp = el.unit_response_block(cells, self.unit)[:, 0]
            K[cells] = self.resolve(dsp.transpose(1, 0, 2))
        return K

    def convolve(self, amp: np.ndarray) -> np.ndarray:
        """Resolved stress of the slip field ``amp`` (per cell): a dense product or one FE
        solve."""
        amp = np.asarray(amp, float)
        if self.columns:
            return amp @ self.K
        el = self.el
        eps = amp[el.cells, None] * self.unit
        return self.resolve(to_dsp(el.gather(el.stress(eps))))

    # ---------------------------------------------------------------- parameters
    @property
    def self_drop(self) -> float:
        """Area-weighted mean stress drop of a slipping cell per unit slip."""
        if self.columns:
            return float(-self.w @ np.diagonal(self.K))
        return float(-self.column(int(np.argmax(self.w)))[int(np.argmax(self.w))])

    @property
    def stress_slope(self) -> float:
        return float(self.drive_per_gamma)

    def parameters(self) -> dict:
        out = super().parameters()
        out.update(kernel_sum=None, slip_angle_deg=math.degrees(self.theta),
                   backend=self.backend, load_response_mean=float(self.w @ self.R),
                   load_response_min=float(self.R.min()),
                   drive_stress_per_gamma=self.stress_slope)
        return out

    # ---------------------------------------------------------------- states
    def total_stress(self, s: S.ScalarState, gamma: float) -> np.ndarray:
        return s.sig + self.R * gamma

    def drive(self, s: S.ScalarState) -> np.ndarray:
        """``[S_R, offset of the frozen stress, -2 w_j R_j ...]`` (module doc)."""
        a = -2.0 * self.w * self.R
        off = float(a @ s.eps0) if s.eps0 is not None else 0.0
        return np.ascontiguousarray(np.concatenate([[self.stress_slope, off], a]))

    def redistribute(self, s: S.ScalarState, amp: np.ndarray) -> None:
        """Dense: add the columns; direct: the internal stress anew from one FE solve of the
        whole slip field (no accumulated round-off)."""
        if self.columns:
            s.sig += amp @ self.K
            return
        total = s.epl if s.eps0 is None else s.epl + s.eps0
        s.sig[:] = self.convolve(total)

    def new_state(self, rng: np.random.Generator) -> S.ScalarState:
        """Thresholds from p_i (cells draws), then, if w_g > 0, the frozen stress: the FE
        stress of standard normal slips (inverse CDF) scaled to area-weighted std w_g."""
        nc = self.num_cells
        thr = self.p_i.sample(rng, nc)
        eps0 = None
        sigma0 = np.zeros(nc)
        if self.w_g > 0:
            z = np.array([ndtri(u) for u in rng.random(nc)])
            s = self.convolve(z)
            sd = math.sqrt(float(self.w @ (s - self.w @ s) ** 2))
            f = self.w_g / sd if sd > 0 else 0.0
            eps0, sigma0 = f * z, f * s
        return S.ScalarState(sig=sigma0.copy(), sigma0=sigma0, epl=np.zeros(nc), thr=thr,
                             rng=rng, eps0=eps0)

    def eigenstrain(self, s: S.ScalarState) -> np.ndarray:
        """The whole eigenstrain ``[xx, yy, xy]`` per cell (slips and frozen field), canonical
        order: what the FE problem of the state solves (tests, energy)."""
        total = s.epl if s.eps0 is None else s.epl + s.eps0
        return total[:, None] * self.unit


# the case sections the specimen's FE kernel is built from (shape, cells, boundary conditions,
# moduli, backend and its memory budget); the others (scalar, loading, run, ...) are not
KERNEL_SECTIONS = ("mesh", "geometry", "elasticity", "redistribution")


def kernel_key(case) -> str:
    """Two cases with the same key have the same specimen kernel (:data:`KERNEL_SECTIONS`;
    file paths are resolved against the case's own file)."""
    d = case.to_dict()
    return json.dumps([case.source and str(case.source.parent)]
                      + [d.get(k) for k in KERNEL_SECTIONS], sort_keys=True, default=str)


def model_from_case(case, comm=None, kernel: SpecimenScalarModel | None = None
                    ) -> SpecimenScalarModel:
    """The specimen of a ``mesh.kind: geometry`` case meshed on ``comm`` (default: this rank
    alone, each rank runs its own realizations) and the scalar model on it. ``kernel``: a
    model of a case with the same :func:`kernel_key` whose specimen and kernel are reused
    (:meth:`SpecimenScalarModel.with_law`: sweeps), no meshing nor FE solve."""
    from mpi4py import MPI

    from femplast.fe.boundary import elasticity_of
    from femplast.fe.geometry import build_geometry, spec_from_case

    sc = case.scalar
    p_i, p_r = S.distributions_from_case(case)
    if kernel is not None:
        return kernel.with_law(sc.c0, sc.c1, p_i, p_r, sc.internal_stress_std)
    geo = build_geometry(spec_from_case(case), comm or MPI.COMM_SELF)
    geo.conditions = dict(case.geometry.boundaries)
    el = elasticity_of(geo, case.elasticity.G, case.elasticity.B)
    rd = case.redistribution
    return SpecimenScalarModel(el, sc.c0, sc.c1, p_i, p_r, sc.internal_stress_std,
                               rd.backend, rd.dense_memory_mb)


__all__ = ["SpecimenScalarModel", "model_from_case", "kernel_key", "KERNEL_SECTIONS",
           "choose_backend", "dense_bytes",
           "BACKENDS"]
