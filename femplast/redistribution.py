"""Stress redistribution after slip events: FE propagators, dense Green operator, direct solve.

All three backends represent the *same* discrete FE problem (femplast.elasticity), so they give
the same stresses to round-off. A slip ``d_gamma M(theta)`` in cell ``j`` changes the stress of
every cell ``i`` by ``d_gamma (sin 2theta K0[i, j] + cos 2theta K1[i, j])`` with ``K0`` the response
to the unit eigenstrain ``(-1/2, 1/2, 0)`` and ``K1`` to ``(0, 0, 1/2)`` (``[xx, yy, xy]``), i.e.
``M(theta) = sin 2theta * (-1/2, 1/2, 0) + cos 2theta * (0, 0, 1/2)``.

Stresses of the dynamics are stored as components ``(d, s, p)``:
``d = (Sigma_yy - Sigma_xx)/2``, ``s = Sigma_xy``, ``p = (Sigma_xx + Sigma_yy)/2``, so that the
resolved shear stress of a system is ``tau = sin 2theta d + cos 2theta s`` (eq. 3-4).

Backends:
    propagator: structured quads with uniform moduli. The response is translation-invariant:
        two FE solves give the whole kernel and an event is an O(cells) shifted add; a step
        with many simultaneous slips uses an FFT convolution.
    dense: the Green operator (cells x cells x 2 x 3) from 2 FE solves per cell; any mesh and
        moduli, within a memory budget.
    direct: one FE back-solve per relaxation step (all slips of the step in one right-hand side).
"""

from __future__ import annotations

import logging

import numpy as np
from mpi4py import MPI

from femplast import FemplastInputError
from femplast.elasticity import M_vector, PeriodicElasticity

log = logging.getLogger("femplast")

MODE_PROPAGATOR, MODE_DENSE, MODE_EXTERNAL = 0, 1, 2
BACKENDS = ("auto", "propagator", "dense", "direct")
UNIT_S = np.array([-0.5, 0.5, 0.0])
UNIT_C = np.array([0.0, 0.0, 0.5])


def to_dsp(sig_xyz: np.ndarray) -> np.ndarray:
    """``[xx, yy, xy]`` (..., 3) -> ``(d, s, p)`` stacked first: shape (3, ...)."""
    s = np.asarray(sig_xyz, float)
    return np.stack([0.5 * (s[..., 1] - s[..., 0]), s[..., 2], 0.5 * (s[..., 0] + s[..., 1])])


def from_dsp(dsp: np.ndarray) -> np.ndarray:
    """``(d, s, p)`` (3, ...) -> ``[xx, yy, xy]`` (..., 3)."""
    d, s, p = dsp[0], dsp[1], dsp[2]
    return np.stack([p - d, p + d, s], axis=-1)


def self_coefficients(k0_self: np.ndarray, k1_self: np.ndarray) -> np.ndarray:
    """Coefficients (q_ss, q_sc, q_cc) of the self-response of a slip on its own system.

    ``(C : (S - I) : M) : M = q_ss sin^2 2theta + q_sc sin 2theta cos 2theta + q_cc cos^2 2theta``
    (denominator of eq. 6), from the (d, s) self-responses of the two unit eigenstrains.
    """
    k0, k1 = np.asarray(k0_self), np.asarray(k1_self)
    return np.stack([k0[..., 0], k1[..., 0] + k0[..., 1], k1[..., 1]], axis=-1)


class Redistribution:
    """Common interface; see the module docstring.

    Attributes:
        kind: backend name.
        mode: how the compiled AQS loop uses it (inline kernel, inline dense, or external).
        selfq: (num_cells, 3) self-response coefficients (see :func:`self_coefficients`).
        kernel: (2, 3, n, n) for the propagator; ``dense``: (cells, 2, 3, cells).
    """

    kind = "base"
    mode = MODE_EXTERNAL

    def __init__(self, elasticity: PeriodicElasticity):
        self.el = elasticity
        self.num_cells = elasticity.box.num_cells
        self.kernel = np.zeros((2, 3, 1, 1))
        self.dense = np.zeros((1, 2, 3, 1))
        self.fft_threshold = 1 << 62
        w = elasticity.gather(elasticity.area) / elasticity.box_area
        self.weights = np.ascontiguousarray(w)

    def load_response(self, alpha: float) -> np.ndarray:
        """Stress (d, s, p) per cell per unit gamma_ext of the pure shear M(alpha)."""
        E = M_vector(alpha)
        if self.el.uniform:
            sig = self.el.C(np.broadcast_to(E, (self.el.num_local, 3)))
        else:
            sig = self.el.stress(np.zeros((self.el.num_local, 3)), E)
        return np.ascontiguousarray(to_dsp(self.el.gather(sig)))

    def stress_from_plastic(self, eps_pl_xyz: np.ndarray) -> np.ndarray:
        """FE stress (d, s, p) of a total eigenstrain field (num_cells, 3), zero E (collective)."""
        el = self.el
        sig = el.stress(eps_pl_xyz[el.cells])
        return np.ascontiguousarray(to_dsp(el.gather(sig)))

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz, ncomp: int = 3):
        """Add the stress change of simultaneous slips to ``sig`` (3, num_cells) in place."""
        raise NotImplementedError

    def _responses(self, cell: int) -> tuple[np.ndarray, np.ndarray]:
        """(d, s, p) responses of all cells to the two unit shear eigenstrains in ``cell``."""
        el = self.el
        out = []
        for unit in (UNIT_S, UNIT_C):
            eps = np.zeros((el.num_local, 3))
            k = el.local_position(cell)
            if k >= 0:
                eps[k] = unit
            out.append(to_dsp(el.gather(el.stress(eps))))
        return out[0], out[1]


class PropagatorRedistribution(Redistribution):
    """Translation-invariant FE propagator on a structured quad mesh with uniform moduli."""

    kind = "propagator"
    mode = MODE_PROPAGATOR

    def __init__(self, elasticity: PeriodicElasticity, fft_threshold: int | None = None):
        super().__init__(elasticity)
        box = elasticity.box
        if box.kind != "quad" or not elasticity.uniform:
            raise FemplastInputError("redistribution.backend", "propagator",
                                     "a structured quad mesh with uniform moduli")
        n = box.n
        r0, r1 = self._responses(0)
        self.kernel = np.ascontiguousarray(np.stack([r0, r1]).reshape(2, 3, n, n))
        self.kernel_hat = np.fft.rfft2(self.kernel, axes=(-2, -1))
        self.selfq = np.tile(self_coefficients(r0[:, 0], r1[:, 0]), (n * n, 1))
        # an FFT step costs ~ a few n^2 log n; a shifted add 6 n^2
        self.fft_threshold = (int(fft_threshold) if fft_threshold is not None
                              else max(8, int(2.5 * np.log2(n * n))))

    def _convolve(self, a: np.ndarray, comps: slice) -> np.ndarray:
        n = self.el.box.n
        ah = np.fft.rfft2(a.reshape(2, n, n), axes=(-2, -1))
        dh = np.einsum("kmij,kij->mij", self.kernel_hat[:, comps], ah)
        return np.fft.irfft2(dh, s=(n, n), axes=(-2, -1)).reshape(dh.shape[0], n * n)

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz=None, ncomp: int = 3):
        """FFT convolution of the step's slips with the kernel (many simultaneous slips)."""
        a = np.zeros((2, self.num_cells))
        np.add.at(a[0], cells, sin2dg)
        np.add.at(a[1], cells, cos2dg)
        sig[:ncomp] += self._convolve(a, slice(0, ncomp))

    def pressure_from_plastic(self, eps_pl_xyz: np.ndarray) -> np.ndarray:
        """p = (S_xx + S_yy)/2 of a traceless (pure shear) plastic strain field, by FFT."""
        e = np.asarray(eps_pl_xyz)
        a = np.stack([e[:, 1] - e[:, 0], 2.0 * e[:, 2]])
        return self._convolve(a, slice(2, 3))[0]

    def apply_shifted(self, sig, cells, sin2dg, cos2dg):
        """Pure-numpy shifted adds, the reference of the compiled kernel (identical results)."""
        n = self.el.box.n
        K = self.kernel
        s3 = sig.reshape(3, n, n)
        for c, gs, gc in zip(cells, sin2dg, cos2dg, strict=True):
            cy, cx = divmod(int(c), n)
            rows = (np.arange(n) - cy) % n
            cols = (np.arange(n) - cx) % n
            s3 += gs * K[0][:, rows][:, :, cols] + gc * K[1][:, rows][:, :, cols]


class DenseRedistribution(Redistribution):
    """Precomputed Green operator: 2 FE solves per cell, any mesh and moduli."""

    kind = "dense"
    mode = MODE_DENSE

    @staticmethod
    def memory_bytes(num_cells: int) -> int:
        return 8 * 6 * num_cells * num_cells

    def __init__(self, elasticity: PeriodicElasticity, memory_mb: float = 1024.0):
        super().__init__(elasticity)
        nc = self.num_cells
        need = self.memory_bytes(nc) / 2**20
        if need > memory_mb:
            raise FemplastInputError("redistribution.dense_memory_mb", memory_mb,
                                     f">= {need:.0f} MiB for the dense operator of {nc} cells")
        D = np.empty((nc, 2, 3, nc))
        for c in range(nc):
            D[c, 0], D[c, 1] = self._responses(c)
        self.dense = D
        idx = np.arange(nc)
        self.selfq = self_coefficients(D[idx, 0, :, idx], D[idx, 1, :, idx])

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz=None, ncomp: int = 3):
        for c, gs, gc in zip(cells, sin2dg, cos2dg, strict=True):
            sig += gs * self.dense[c, 0] + gc * self.dense[c, 1]


class DirectRedistribution(Redistribution):
    """Factorized FE solve of the whole eigenstrain field per relaxation step."""

    kind = "direct"
    mode = MODE_EXTERNAL

    def __init__(self, elasticity: PeriodicElasticity, sigma0_dsp: np.ndarray | None = None):
        super().__init__(elasticity)
        el, box = elasticity, elasticity.box
        self.sigma0 = (np.zeros((3, self.num_cells)) if sigma0_dsp is None
                       else np.asarray(sigma0_dsp, float))
        # self-responses: one cell per sublattice when translation invariance holds
        if box.structured and el.uniform:
            per = 1 if box.kind == "quad" else 2
            q = [self_coefficients(*(r[:, c] for r in self._responses(c))) for c in range(per)]
            self.selfq = np.tile(np.array(q), (self.num_cells // per, 1))
        else:
            q = np.empty((self.num_cells, 3))
            for c in range(self.num_cells):
                r0, r1 = self._responses(c)
                q[c] = self_coefficients(r0[:, c], r1[:, c])
            self.selfq = q

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz, ncomp: int = 3):
        sig[:] = self.stress_from_plastic(eps_pl_xyz) + self.sigma0


def make_redistribution(elasticity: PeriodicElasticity, backend: str = "auto",
                        dense_memory_mb: float = 1024.0, sigma0_dsp=None) -> Redistribution:
    """Choose and build a backend; ``auto`` picks the fastest valid one and logs why."""
    box = elasticity.box
    if backend not in BACKENDS:
        raise FemplastInputError("redistribution.backend", backend, f"one of {BACKENDS}")
    if backend == "auto":
        if box.kind == "quad" and elasticity.uniform and box.comm.size == 1:
            backend, why = "propagator", "structured quads with uniform moduli"
        elif (DenseRedistribution.memory_bytes(box.num_cells) / 2**20 <= dense_memory_mb
              and box.num_cells <= 4096 and box.comm.size == 1):
            backend, why = "dense", (f"{box.num_cells} cells fit the {dense_memory_mb:.0f} MiB "
                                     "dense budget")
        else:
            backend, why = "direct", "no faster backend is valid for this mesh/moduli/budget"
        if box.comm.rank == 0:
            log.info("redistribution backend: %s (auto: %s)", backend, why)
    if backend != "direct" and box.comm.size > 1:
        raise FemplastInputError("redistribution.backend", backend,
                                 "'direct' for a sample distributed over MPI ranks")
    if backend == "propagator":
        return PropagatorRedistribution(elasticity)
    if backend == "dense":
        return DenseRedistribution(elasticity, dense_memory_mb)
    return DirectRedistribution(elasticity, sigma0_dsp)


__all__ = ["MPI", "make_redistribution", "to_dsp", "from_dsp"]
