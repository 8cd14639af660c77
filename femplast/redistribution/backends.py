"""Stress redistribution after slip events: FE propagators, dense Green operator, direct solve.

All three backends represent the *same* discrete FE problem (femplast.fe.elasticity), so they give
the same stresses to round-off. A slip ``d_gamma M(theta)`` in cell ``j`` changes the stress of
every cell ``i`` by ``d_gamma (sin 2theta K0[i, j] + cos 2theta K1[i, j])`` with ``K0`` the response
to the unit eigenstrain ``(-1/2, 1/2, 0)`` and ``K1`` to ``(0, 0, 1/2)`` (``[xx, yy, xy]``), i.e.
``M(theta) = sin 2theta * (-1/2, 1/2, 0) + cos 2theta * (0, 0, 1/2)``.

Stresses of the dynamics are stored as components ``(d, s, p)``:
``d = (Sigma_yy - Sigma_xx)/2``, ``s = Sigma_xy``, ``p = (Sigma_xx + Sigma_yy)/2``, so that the
resolved shear stress of a system is ``tau = sin 2theta d + cos 2theta s`` (eq. 3-4).

Backends:
    propagator: structured quads with uniform moduli. The response is translation-invariant:
        two FE solves give the whole kernel and an event is an O(cells) shifted add (of the
        kernel folded by its exact mirror and reciprocity symmetries, :func:`fold_kernel`); a
        step with many simultaneous slips uses an FFT convolution.
    dense: the Green operator (cells x cells x 2 x 3) from 2 FE solves per cell (blocked
        multi-right-hand-side solves on one rank from ``Redistribution.BLOCKED_FROM`` cells);
        any mesh and moduli, within a memory budget (default: a share of the memory available,
        :func:`dense_budget_mb`).
    direct: one FE back-solve per relaxation step (all slips of the step in one right-hand side).
"""

from __future__ import annotations

import logging

import numpy as np
from mpi4py import MPI

from femplast.errors import FemplastInputError
from femplast.fe.elasticity import (
    UNIT_C,
    UNIT_S,
    M_vector,
    PeriodicElasticity,
    check_moduli,
    from_dsp,
    to_dsp,
)

log = logging.getLogger("femplast")

MODE_PROPAGATOR, MODE_DENSE, MODE_EXTERNAL = 0, 1, 2
BACKENDS = ("auto", "propagator", "dense", "direct")
DENSE_MEMORY_FRACTION = 0.7
"""Share of the memory available at start-up (``MemAvailable``) that the dense operator may take
when ``redistribution.dense_memory_mb`` is null: n = 128 quads (12 GiB) fit a 23 GB machine,
with room left for the FE factorization, the build's blocks (~0.8 GB) and the run's arrays."""


def available_memory_bytes() -> int | None:
    """Memory the kernel can give this process now (``MemAvailable`` of /proc/meminfo: free
    plus reclaimable caches), or None where that is not known (not Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def ranks_on_node() -> int:
    """MPI ranks of this job on this machine (from the launcher: MPICH/Hydra, Open MPI), else
    all ranks (not collective: callers build their models at their own pace)."""
    import os

    for var in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE"):
        if os.environ.get(var, "").isdigit():
            return max(1, int(os.environ[var]))
    return MPI.COMM_WORLD.size


def dense_budget_mb(memory_mb: float | None = None) -> tuple[float, str]:
    """The dense operator's memory budget (MiB) and where it comes from (for the log and for
    refusals): ``memory_mb`` when given (``redistribution.dense_memory_mb``), else
    :data:`DENSE_MEMORY_FRACTION` of the available memory shared by the ranks on this machine
    (each builds its own operator with ``run.parallel: realizations``), else 1024 MiB."""
    if memory_mb is not None:
        return float(memory_mb), f"redistribution.dense_memory_mb = {memory_mb:.0f} MiB"
    avail = available_memory_bytes()
    if avail is None:
        return 1024.0, ("1024 MiB (redistribution.dense_memory_mb: null and the available "
                        "memory is unknown)")
    ranks = ranks_on_node()
    mb = DENSE_MEMORY_FRACTION * avail / 2**20 / ranks
    per = f" / {ranks} ranks on this machine" if ranks > 1 else ""
    return mb, (f"{mb:.0f} MiB = {DENSE_MEMORY_FRACTION:.0%} of the {avail / 2**30:.1f} GiB "
                f"available now{per} (redistribution.dense_memory_mb: null; set it to fix "
                "the budget)")


def self_coefficients(k0_self: np.ndarray, k1_self: np.ndarray) -> np.ndarray:
    """Coefficients (q_ss, q_sc, q_cc) of the self-response of a slip on its own system.

    ``(C : (S - I) : M) : M = q_ss sin^2 2theta + q_sc sin 2theta cos 2theta + q_cc cos^2 2theta``
    (denominator of eq. 6), from the (d, s) self-responses of the two unit eigenstrains.
    """
    k0, k1 = np.asarray(k0_self), np.asarray(k1_self)
    return np.stack([k0[..., 0], k1[..., 0] + k0[..., 1], k1[..., 1]], axis=-1)


def fft_unit_responses(n: int, h: float, G: float, B: float, units) -> list[np.ndarray]:
    """Exact FE stress responses on the periodic n x n quad grid, solved in Fourier space.

    The stiffness of a structured periodic mesh with uniform moduli is block-circulant, so the
    FE equations ``K u = F C eps_pl`` decouple into one 2x2 system per wavevector. The stencils
    are assembled by dolfinx (:func:`femplast.fe.elasticity.quad_stencils`): this is the same
    discrete problem as the factorized solve, to round-off, in O(n^2 log n) time and O(n^2)
    memory (no factorization: n = 512 needs no more memory than its kernel).

    Args:
        units: eigenstrains ``[xx, yy, xy]`` placed in cell 0 (lower-left node at the origin).

    Returns:
        per unit, the stress change ``[xx, yy, xy]`` of every cell, shape (n * n, 3), canonical
        order ``iy * n + ix``.
    """
    from femplast.fe.elasticity import apply_stiffness, quad_stencils

    S, F, D = quad_stencils(h, G, B)
    k = 2 * np.pi * np.fft.fftfreq(n)
    kx, ky = np.meshgrid(k, k, indexing="ij")  # arrays indexed [ix, iy]
    Kh = np.zeros((n, n, 2, 2), complex)
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            Kh += S[a + 1, b + 1] * np.exp(1j * (kx * a + ky * b))[..., None, None]
    Dh = np.zeros((n, n, 3, 2), complex)
    Fh = np.zeros((n, n, 2, 3), complex)
    for a in (0, 1):
        for b in (0, 1):
            ph = np.exp(1j * (kx * a + ky * b))[..., None, None]
            Dh += D[a, b] * ph
            Fh += F[a, b] * np.conj(ph)
    Kh[0, 0] = np.eye(2)  # the mean displacement is free (rigid translation): set to zero
    out = []
    for e in units:
        sig_e = apply_stiffness(G, B, np.asarray(e, float))
        fh = Fh @ sig_e
        fh[0, 0] = 0.0
        uh = np.linalg.solve(Kh, fh[..., None])
        eps = np.fft.ifft2((Dh @ uh)[..., 0], axes=(0, 1)).real
        eps[0, 0] -= e
        out.append(apply_stiffness(G, B, eps).transpose(1, 0, 2).reshape(n * n, 3))
    return out


# y-parity of the kernel components K[unit, comp] (d and p are even under y -> -y, s is odd;
# the unit eigenstrains: sin-unit is even, cos-unit is odd)
_Y_PARITY = np.array([[1.0, -1.0, 1.0], [-1.0, 1.0, -1.0]])


def symmetrize_kernel(K: np.ndarray, tol: float = 1e-10) -> np.ndarray:
    """Impose the symmetries of the exact FE kernel bit for bit (removes FFT round-off).

    On a structured periodic box with uniform moduli the (2, 3, n, n) kernel is mirror
    symmetric in y (parities ``_Y_PARITY``) and reciprocal (Maxwell-Betti:
    ``K[0, 1] == K[1, 0]``). The FFT solution holds them to round-off; averaging makes them
    exact, so that the folded kernel of the shifted add and the full kernel of the FFT and
    numpy paths are the same numbers.

    Raises:
        RuntimeError: when a symmetry is broken by more than ``tol`` (relative): not a kernel
            of this kind.
    """
    n = K.shape[-1]
    neg = (-np.arange(n)) % n
    scale = np.abs(K).max()
    out = np.empty_like(K)
    for a in range(2):
        for b in range(3):
            k = K[a, b]
            m = _Y_PARITY[a, b] * k[neg, :]
            if np.abs(k - m).max() > tol * scale:
                raise RuntimeError(f"kernel component ({a}, {b}) is not y-mirror symmetric")
            out[a, b] = 0.5 * (k + m)
    if np.abs(out[0, 1] - out[1, 0]).max() > tol * scale:
        raise RuntimeError("kernel is not reciprocal: K[0, 1] != K[1, 0]")
    out[0, 1] = out[1, 0] = 0.5 * (out[0, 1] + out[1, 0])
    return out


def fold_kernel(K: np.ndarray) -> np.ndarray:
    """The rows ``0 <= k_y <= n // 2`` of the five distinct components of a symmetric kernel.

    Returns ``F`` (5, n // 2 + 1, n): ``K[0, 0], K[0, 1] (== K[1, 0]), K[1, 1], K[0, 2],
    K[1, 2]``; row ``k_y > n // 2`` is row ``n - k_y`` times the component's y-parity (+1 for
    0, 2, 3; -1 for 1, 4). Half the bytes and three of the four (d, s) reads of the full
    kernel: an event's kernel stays in cache (see :func:`femplast.tensorial.aqs.propagator_add`).
    """
    h = K.shape[-2] // 2 + 1
    return np.ascontiguousarray(np.stack([K[0, 0], K[0, 1], K[1, 1], K[0, 2], K[1, 2]])[:, :h])


class Redistribution:
    """Common interface; see the module docstring.

    Attributes:
        kind: backend name.
        mode: how the compiled AQS loop uses it (inline kernel, inline dense, or external).
        selfq: (num_cells, 3) self-response coefficients (see :func:`self_coefficients`).
        kernel: (2, 3, n, n) for the propagator; ``dense``: (cells, 2, 3, cells).
        folded: the propagator's kernel folded by its mirror symmetry (see
            :func:`fold_kernel`), what the compiled shifted add reads.
        weights: area fraction of each cell (canonical order).
    """

    kind = "base"
    mode = MODE_EXTERNAL

    def __init__(self, box, G, B, elasticity: PeriodicElasticity | None = None):
        self.box = box
        self._el = elasticity
        self.num_cells = box.num_cells
        self.G, self.B = G, B
        self.uniform = np.ndim(G) == 0 and np.ndim(B) == 0
        self.kernel = np.zeros((2, 3, 1, 1))
        self.folded = np.zeros((5, 1, 1))
        self.dense = np.zeros((1, 2, 3, 1))
        # box average of the response to each cell's two unit slips (inline backends)
        self.kmean = np.zeros((self.num_cells, 2, 3))
        self.fft_threshold = 1 << 62
        if box.structured:
            self.weights = np.full(self.num_cells, 1.0 / self.num_cells)
        else:
            el = self.el
            self.weights = np.ascontiguousarray(el.gather(el.area) / el.box_area)

    def cell_moduli(self) -> tuple[np.ndarray, np.ndarray]:
        """The current moduli ``G, B``, one value per cell (canonical order), the values the
        FE problem would gather, without building it (patch tests need the moduli only; the
        FE factorization cost every sweep process ~25 ms per mesh)."""
        return (check_moduli("elasticity.G", self.G, self.num_cells),
                check_moduli("elasticity.B", self.B, self.num_cells))

    @property
    def el(self) -> PeriodicElasticity:
        """The factorized FE problem (built on first use: the propagator never needs it)."""
        if self._el is None:
            from femplast.fe.boundary import elasticity_of

            self._el = elasticity_of(self.box, self.G, self.B)
        return self._el

    def load_response(self, alpha: float) -> np.ndarray:
        """Stress (d, s, p) per cell per unit gamma_ext of the pure shear M(alpha) (a bounded
        specimen: per unit gamma_ext of its driven boundaries, femplast.fe.boundary)."""
        if self.uniform and not getattr(self.box, "bounded", False):
            from femplast.fe.elasticity import apply_stiffness

            sig = np.broadcast_to(apply_stiffness(self.G, self.B, M_vector(alpha)),
                                  (self.num_cells, 3))
            return np.ascontiguousarray(to_dsp(sig))
        el = self.el
        sig = el.stress(np.zeros((el.num_local, 3)), el.external(1.0, alpha))
        return np.ascontiguousarray(to_dsp(el.gather(sig)))

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


    BLOCK = 256  # cells per multi-right-hand-side solve (unit_response_block)
    BLOCKED_FROM = 2048
    """Periodic boxes take blocked solves from this many cells: below, each column keeps its
    own solve, whose numbers the golden outputs pin (blocked solves agree to round-off, not
    bit for bit); above, the build matters (2x faster per column at n = 64)."""

    @property
    def blocked(self) -> bool:
        """Whether per-cell responses come from blocked solves (one rank only): specimens
        always, periodic boxes from :attr:`BLOCKED_FROM` cells."""
        return self.box.comm.size == 1 and (getattr(self.box, "bounded", False)
                                            or self.num_cells >= self.BLOCKED_FROM)

    def _response_blocks(self, out: np.ndarray | None = None):
        """Yield ``(cells, r)``: the (d, s, p) responses ``r`` (len(cells), 2, 3, num_cells) of
        every cell to the two unit shear eigenstrains (``r[:, 0]``: UNIT_S, ``r[:, 1]``:
        UNIT_C), in blocks of cells (blocked solves); written into the rows of ``out`` (the
        dense operator) when given."""
        el = self.el
        for a in range(0, self.num_cells, self.BLOCK):
            b = min(a + self.BLOCK, self.num_cells)
            r = el.unit_response_block(np.arange(a, b), (UNIT_S, UNIT_C),
                                       None if out is None else out[a:b])
            yield np.arange(a, b), r  # serial: local positions are canonical


class PropagatorRedistribution(Redistribution):
    """Translation-invariant FE propagator on a structured quad mesh with uniform moduli.

    The kernel is the exact FE response to the two unit shear eigenstrains in one cell, solved
    in Fourier space (:func:`fft_unit_responses`); an event is an O(cells) shifted add.
    """

    kind = "propagator"
    mode = MODE_PROPAGATOR

    def __init__(self, box, G: float, B: float, fft_threshold: int | None = None):
        if box.kind != "quad" or np.ndim(G) or np.ndim(B):
            raise FemplastInputError("redistribution.backend", "propagator",
                                     "a structured quad mesh with uniform moduli")
        super().__init__(box, float(G), float(B))
        n = box.n
        r0, r1 = (to_dsp(r) for r in fft_unit_responses(n, box.L / n, self.G, self.B,
                                                        (UNIT_S, UNIT_C)))
        self.kernel = symmetrize_kernel(np.stack([r0, r1]).reshape(2, 3, n, n))
        self.folded = fold_kernel(self.kernel)
        self.kernel_hat = np.fft.rfft2(self.kernel, axes=(-2, -1))
        self.selfq = np.tile(self_coefficients(r0[:, 0], r1[:, 0]), (n * n, 1))
        self.kmean[:] = self.kernel.reshape(2, 3, n * n) @ self.weights
        # an FFT step costs about as much as a few shifted adds (measured in benchmarks/)
        self.fft_threshold = (int(fft_threshold) if fft_threshold is not None
                              else max(8, int(2.5 * np.log2(n * n))))

    def _convolve(self, a: np.ndarray, comps: slice) -> np.ndarray:
        n = self.box.n
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
        n = self.box.n
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

    def __init__(self, box, G, B, memory_mb: float | None = None,
                 elasticity: PeriodicElasticity | None = None):
        super().__init__(box, G, B, elasticity)
        nc = self.num_cells
        need = self.memory_bytes(nc) / 2**20
        budget, why = dense_budget_mb(memory_mb)
        if need > budget:
            raise FemplastInputError("redistribution.dense_memory_mb",
                                     "null" if memory_mb is None else memory_mb,
                                     f">= {need:.0f} MiB for the dense operator of {nc} cells "
                                     f"(budget: {why}; or redistribution.backend: auto)")
        D = np.empty((nc, 2, 3, nc))
        if self.blocked:
            for _ in self._response_blocks(out=D):
                pass
        else:
            for c in range(nc):
                D[c, 0], D[c, 1] = self._responses(c)
        self.dense = D
        self.kmean = np.ascontiguousarray(D @ self.weights)
        idx = np.arange(nc)
        self.selfq = self_coefficients(D[idx, 0, :, idx], D[idx, 1, :, idx])

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz=None, ncomp: int = 3):
        for c, gs, gc in zip(cells, sin2dg, cos2dg, strict=True):
            sig += gs * self.dense[c, 0] + gc * self.dense[c, 1]


class DirectRedistribution(Redistribution):
    """Factorized FE solve of the whole eigenstrain field per relaxation step."""

    kind = "direct"
    mode = MODE_EXTERNAL

    def __init__(self, box, G, B, sigma0_dsp: np.ndarray | None = None,
                 elasticity: PeriodicElasticity | None = None):
        super().__init__(box, G, B, elasticity)
        self.sigma0 = (np.zeros((3, self.num_cells)) if sigma0_dsp is None
                       else np.asarray(sigma0_dsp, float))
        self.selfq = self._selfq_all()

    def _selfq_all(self) -> np.ndarray:
        """Self-response coefficients of every cell: per sublattice cell when translation
        invariance holds; otherwise from every cell's self strain tensor at once
        (:meth:`PeriodicElasticity.self_strain_tensors`, MUMPS' selected inversion), or 2 FE
        solves per cell (collective)."""
        if self.box.structured and self.uniform:
            per = 1 if self.box.kind == "quad" else 2
            q = [self_coefficients(*(r[:, c] for r in self._responses(c))) for c in range(per)]
            return np.tile(np.array(q), (self.num_cells // per, 1))
        S = self.el.self_strain_tensors()
        if S is not None:  # every cell at once (selected inversion)
            el = self.el
            resp = [to_dsp(el.C(S @ u - u)) for u in (UNIT_S, UNIT_C)]  # (3, local cells)
            return el.gather(self_coefficients(resp[0][0:2].T, resp[1][0:2].T))
        q = np.empty((self.num_cells, 3))
        if self.blocked:
            for cells, r in self._response_blocks():
                j = np.arange(len(cells))
                q[cells] = self_coefficients(r[j, 0, :, cells], r[j, 1, :, cells])
            return q
        for c in range(self.num_cells):
            r0, r1 = self._responses(c)
            q[c] = self_coefficients(r0[:, c], r1[:, c])
        return q

    def update_moduli(self, G, B) -> None:
        """New moduli (evolving moduli, TensorialModel.sync_moduli; collective).

        Refactorizes the FE problem (:meth:`PeriodicElasticity.update_moduli`) and recomputes
        ``selfq`` of *every* cell in place (:meth:`_selfq_all`: a modulus change in one cell
        changes the self-response of the others too, through the Green operator). Load
        responses are recomputed on request (:meth:`load_response`).
        """
        # uniform fields as numbers, as at construction: a model set back to its uniform quench
        # moduli computes exactly what a freshly built one does
        G, B = (float(np.ravel(x)[0]) if np.ptp(x) == 0 else np.asarray(x, float)
                for x in (G, B))
        self.el.update_moduli(G, B)
        self.G, self.B = G, B
        self.uniform = np.ndim(G) == 0 and np.ndim(B) == 0
        self.selfq[...] = self._selfq_all()

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz, ncomp: int = 3):
        sig[:] = self.stress_from_plastic(eps_pl_xyz) + self.sigma0


class KernelVariant(Redistribution):
    """An altered interaction kernel on top of an FE backend (model variants D, G, I of the
    tensorial paper's appendix A.8; femplast.tensorial.variants).

    The yielding cell's own stress change is the FE one (so ``selfq``, gamma_max and the
    dissipation bound are unchanged); only the changes in the *other* cells are altered.
    Applied per relaxation step from Python (MODE_EXTERNAL), vectorized over the step's
    slips. Everything else (moduli, load response, ``selfq``, weights, FE problem) is the base
    backend's, which must provide columns: ``propagator`` or ``dense``.
    """

    mode = MODE_EXTERNAL
    needs_rng = False

    def __init__(self, base: Redistribution):
        if base.mode not in (MODE_PROPAGATOR, MODE_DENSE):
            raise FemplastInputError("redistribution.backend", base.kind,
                                     f"propagator or dense with the {self.kind} kernel (it "
                                     "needs the per-cell response columns)")
        self.base = base
        self.box, self.num_cells = base.box, base.num_cells
        self.G, self.B, self.uniform = base.G, base.B, base.uniform
        self.weights, self.selfq, self.kmean = base.weights, base.selfq, base.kmean
        self.kernel = np.zeros((2, 3, 1, 1))
        self.folded = np.zeros((5, 1, 1))
        self.dense = np.zeros((1, 2, 3, 1))
        self.fft_threshold = 1 << 62
        self.kind = f"{self.kind}({base.kind})"

    @property
    def el(self) -> PeriodicElasticity:
        return self.base.el

    def cell_moduli(self) -> tuple[np.ndarray, np.ndarray]:
        return self.base.cell_moduli()

    def load_response(self, alpha: float) -> np.ndarray:
        return self.base.load_response(alpha)

    def stress_from_plastic(self, eps_pl_xyz: np.ndarray) -> np.ndarray:
        return self.base.stress_from_plastic(eps_pl_xyz)

    def columns(self, cells, sin2dg, cos2dg) -> np.ndarray:
        """FE stress change (d, s, p) of each slip in every cell: shape (slips, 3, cells)."""
        cells = np.asarray(cells, np.int64)
        gs, gc = np.asarray(sin2dg, float), np.asarray(cos2dg, float)
        b = self.base
        if b.mode == MODE_DENSE:
            D = b.dense[cells]  # (na, 2, 3, nc)
            return gs[:, None, None] * D[:, 0] + gc[:, None, None] * D[:, 1]
        n = b.box.n
        cy, cx = np.divmod(cells, n)
        rows = (np.arange(n)[None, :] - cy[:, None]) % n  # (na, n)
        cols = (np.arange(n)[None, :] - cx[:, None]) % n
        K = b.kernel[:, :, rows[:, :, None], cols[:, None, :]]  # (2, 3, na, n, n)
        out = gs[None, :, None, None] * K[0] + gc[None, :, None, None] * K[1]
        return np.ascontiguousarray(out.transpose(1, 0, 2, 3).reshape(len(cells), 3, n * n))


class ShuffledRedistribution(KernelVariant):
    """Randomly shuffled kernel (models D, G): each slip's FE stress changes in the other cells
    are permuted among those cells (whole (d, s, p) tensors move together); the yielding cell
    keeps its own change. One fresh permutation per slip, drawn from the realization's
    generator when the step is applied: ``rng.random((slips, cells - 1))`` argsorted per slip
    (slips in the step's ascending cell order), after the step's amplitudes and before its
    renewals. The multiset of stress changes of every slip, hence the box average, is the FE
    kernel's (exact on equal-area cells)."""

    kind = "shuffled"
    needs_rng = True

    def shuffled_columns(self, cells, sin2dg, cos2dg, rng) -> np.ndarray:
        col = self.columns(cells, sin2dg, cos2dg)
        na, nc = len(col), self.num_cells
        cells = np.asarray(cells, np.int64)
        perm = np.argsort(rng.random((na, nc - 1)), axis=1)
        idx = np.arange(nc - 1)[None, :]
        others = idx + (idx >= cells[:, None])  # every cell but the yielding one, ascending
        src = np.take_along_axis(others, perm, axis=1)
        ev = np.arange(na)[:, None]
        out = col.copy()
        out[ev, :, others] = col[ev, :, src]
        return out

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz=None, ncomp: int = 3, rng=None):
        if rng is None:
            raise ValueError("the shuffled kernel needs the realization's generator (rng=)")
        if len(cells):
            sig[:ncomp] += self.shuffled_columns(cells, sin2dg, cos2dg, rng)[:, :ncomp].sum(0)


class MeanFieldRedistribution(KernelVariant):
    """Mean-field kernel (model I): each slip changes the other cells uniformly by the
    area-weighted average of its FE stress change over them; the yielding cell keeps its own
    change. The box average of every slip's change is the FE kernel's."""

    kind = "mean_field"

    def __init__(self, base: Redistribution):
        super().__init__(base)
        b = self.base
        w = self.weights
        nc = self.num_cells
        if b.mode == MODE_DENSE:
            idx = np.arange(nc)
            self._own = np.ascontiguousarray(b.dense[idx, :, :, idx])  # (nc, 2, 3)
        else:
            self._own = np.broadcast_to(b.kernel[:, :, 0, 0], (nc, 2, 3))
        # average over the other cells: (sum_i w_i K_i - w_c K_c) / (1 - w_c)
        self._avg = (b.kmean - w[:, None, None] * self._own) / (1.0 - w)[:, None, None]

    def mean_field_columns(self, cells, sin2dg, cos2dg) -> np.ndarray:
        """(slips, 3, cells): the average outside, the FE self change in the yielding cell."""
        cells = np.asarray(cells, np.int64)
        gs, gc = np.asarray(sin2dg, float), np.asarray(cos2dg, float)
        avg = gs[:, None] * self._avg[cells, 0] + gc[:, None] * self._avg[cells, 1]
        own = gs[:, None] * self._own[cells, 0] + gc[:, None] * self._own[cells, 1]
        out = np.repeat(avg[:, :, None], self.num_cells, axis=2)
        out[np.arange(len(cells)), :, cells] = own
        return out

    def apply(self, sig, cells, sin2dg, cos2dg, eps_pl_xyz=None, ncomp: int = 3):
        cells = np.asarray(cells, np.int64)
        if not len(cells):
            return
        gs, gc = np.asarray(sin2dg, float), np.asarray(cos2dg, float)
        avg = gs[:, None] * self._avg[cells, 0] + gc[:, None] * self._avg[cells, 1]  # (na, 3)
        own = gs[:, None] * self._own[cells, 0] + gc[:, None] * self._own[cells, 1]
        sig[:ncomp] += avg.sum(axis=0)[:ncomp, None]
        np.add.at(sig[:ncomp].T, cells, (own - avg)[:, :ncomp])


def make_redistribution(box, G, B, backend: str = "auto", dense_memory_mb: float | None = None,
                        elasticity: PeriodicElasticity | None = None) -> Redistribution:
    """Choose and build a backend; ``auto`` picks the fastest valid one and logs why.

    Args:
        box: the mesh.
        G, B: moduli, scalars (uniform) or one value per cell in canonical order.
        dense_memory_mb: budget of the dense operator; None: from the available memory
            (:func:`dense_budget_mb`).
        elasticity: an already built FE problem to reuse (dense/direct), optional.
    """
    if backend not in BACKENDS:
        raise FemplastInputError("redistribution.backend", backend, f"one of {BACKENDS}")
    uniform = np.ndim(G) == 0 and np.ndim(B) == 0
    if backend == "auto":
        backend, why = _auto_backend(box, uniform, dense_memory_mb)
        if box.comm.rank == 0:
            log.info("redistribution backend: %s (auto: %s)", backend, why)
    if backend != "direct" and box.comm.size > 1:
        raise FemplastInputError("redistribution.backend", backend,
                                 "'direct' for a sample distributed over MPI ranks")
    if backend == "propagator":
        return PropagatorRedistribution(box, G, B)
    if backend == "dense":
        return DenseRedistribution(box, G, B, dense_memory_mb, elasticity)
    return DirectRedistribution(box, G, B, elasticity=elasticity)


def _auto_backend(box, uniform: bool, dense_memory_mb: float | None) -> tuple[str, str]:
    """The ``auto`` backend and why: the propagator where it is exact, else the dense operator
    within its budget (:func:`dense_budget_mb`), else the direct solve."""
    if box.comm.size > 1:
        return "direct", "a sample distributed over MPI ranks"
    if box.kind == "quad" and uniform:
        return "propagator", "structured quads with uniform moduli"
    need = DenseRedistribution.memory_bytes(box.num_cells) / 2**20
    budget, why = dense_budget_mb(dense_memory_mb)
    if need <= budget:
        return "dense", f"the {need:.0f} MiB operator of {box.num_cells} cells fits {why}"
    return "direct", (f"the dense operator of {box.num_cells} cells needs {need:.0f} MiB > "
                      f"{why}; with that budget it costs one O(cells) column add per event "
                      "instead of an FE solve per relaxation step (benchmarks/heterogeneous.py)")


__all__ = ["MPI", "make_redistribution", "to_dsp", "from_dsp"]
