"""Bi-periodic linear elasticity with cell-wise constant eigenstrain (tensorial paper, sec. 3).

The displacement is ``u = E.x + u~`` with ``u~`` periodic and ``E`` the imposed macroscopic
strain. Stress per cell: ``Sigma = C : (eps - eps_pl) + Sigma0`` with ``eps`` the cell-averaged
total strain, ``eps_pl`` the cell eigenstrain and ``Sigma0`` a self-equilibrated pre-stress.

Periodicity is imposed by a sparse prolongation ``P`` from reduced (master) dofs to all dofs:
nodes on the right/top side are slaved to their left/bottom twins, the four corners to one node.
That master node is dropped from the reduced space, which removes the rigid translation; the
reduced operator ``K_p = P^T K P`` is factorized once (MUMPS) and reused for every right-hand
side. Symmetric 2x2 tensors are stored as 3-vectors ``[xx, yy, xy]`` with the *tensorial*
shear component (``eps_xy = gamma / 2`` for a simple shear ``gamma``).
"""

from __future__ import annotations

import math

import numpy as np
from mpi4py import MPI

from femplast.errors import FemplastInputError
from femplast.fe.mesh import BoxMesh

VOIGT_METRIC = np.array([1.0, 1.0, 2.0])
"""Weights such that ``A : B = sum(VOIGT_METRIC * a * b)`` for 3-vectors ``[xx, yy, xy]``."""


UNIT_S = np.array([-0.5, 0.5, 0.0])
"""Unit pure-shear eigenstrain ``[xx, yy, xy]`` of the ``sin 2theta`` part of ``M(theta) / 2``."""
UNIT_C = np.array([0.0, 0.0, 0.5])
"""Unit pure-shear eigenstrain of the ``cos 2theta`` part of ``M(theta) / 2``."""


def to_dsp(sig_xyz: np.ndarray) -> np.ndarray:
    """``[xx, yy, xy]`` (..., 3) -> ``(d, s, p)`` stacked first: shape (3, ...), with
    ``d = (S_yy - S_xx) / 2``, ``s = S_xy``, ``p = (S_xx + S_yy) / 2`` (so that a system's
    resolved shear stress is ``sin 2theta d + cos 2theta s``, eq. 3-4)."""
    s = np.asarray(sig_xyz, float)
    return np.stack([0.5 * (s[..., 1] - s[..., 0]), s[..., 2], 0.5 * (s[..., 0] + s[..., 1])])


def from_dsp(dsp: np.ndarray) -> np.ndarray:
    """``(d, s, p)`` (3, ...) -> ``[xx, yy, xy]`` (..., 3)."""
    d, s, p = dsp[0], dsp[1], dsp[2]
    return np.stack([p - d, p + d, s], axis=-1)


def M_vector(theta) -> np.ndarray:
    """Slip tensor M(theta) of eq. 3 as ``[xx, yy, xy]``; shape (..., 3)."""
    theta = np.asarray(theta, dtype=float)
    s, c = np.sin(2 * theta), np.cos(2 * theta)
    return np.stack([-0.5 * s, 0.5 * s, 0.5 * c], axis=-1)


def resolved_shear(theta: float, sigma_xyz) -> np.ndarray:
    """Resolved shear stress ``tau = M(theta) : Sigma`` (eq. 4) of stresses ``[xx, yy, xy]``
    (..., 3), ``theta`` in radians: ``sin 2theta (S_yy - S_xx) / 2 + cos 2theta S_xy``."""
    s = np.asarray(sigma_xyz)
    return math.sin(2 * theta) * 0.5 * (s[..., 1] - s[..., 0]) + math.cos(2 * theta) * s[..., 2]


def resolved_shear_dsp(dsp, theta_deg: float) -> float:
    """The same for a stress given as ``(d, s, ...)`` and an angle in degrees."""
    a = math.radians(2 * theta_deg)
    return math.sin(a) * dsp[0] + math.cos(a) * dsp[1]


def stiffness_matrix(G, B) -> np.ndarray:
    """2D isotropic stiffness in the ``[xx, yy, xy]`` basis; shape (..., 3, 3).

    ``Sigma = B tr(eps) I + 2 G dev(eps)``: ``B`` is the 2D bulk modulus, ``G`` the shear
    modulus (paper: G = 13.2, B = 59).
    """
    G, B = np.broadcast_arrays(np.asarray(G, float), np.asarray(B, float))
    C = np.zeros(G.shape + (3, 3))
    C[..., 0, 0] = C[..., 1, 1] = B + G
    C[..., 0, 1] = C[..., 1, 0] = B - G
    C[..., 2, 2] = 2 * G
    return C


def apply_stiffness(G, B, eps) -> np.ndarray:
    """``C : eps`` for per-cell (or scalar) moduli; eps shape (..., 3)."""
    eps = np.asarray(eps, float)
    tr = eps[..., 0] + eps[..., 1]
    out = np.empty(np.broadcast_shapes(eps.shape, np.shape(G) + (3,)))
    out[..., 0] = B * tr + G * (eps[..., 0] - eps[..., 1])
    out[..., 1] = B * tr - G * (eps[..., 0] - eps[..., 1])
    out[..., 2] = 2 * G * eps[..., 2]
    return out


def macro_strain(gamma: float, alpha: float = 0.0) -> np.ndarray:
    """Pure shear ``gamma M(alpha)`` (alpha in radians); alpha = 0 is simple shear on xy."""
    return gamma * M_vector(alpha)


def gamma_max(tau, theta, G, B, S) -> np.ndarray:
    """Largest slip amplitude without negative dissipation, eq. 6 / appendix A.7 eq. 15.

    ``gamma_max = -2 tau / ((C : (S - I) : M) : M)``.

    Args:
        tau: resolved shear stress on the slipping system.
        theta: slip angle(s) (radians).
        G, B: moduli of the cell (scalars or arrays broadcast with ``tau``).
        S: Eshelby tensor of the element, (3, 3) or (..., 3, 3), in the ``[xx, yy, xy]`` basis.
    """
    M = M_vector(theta)
    C = stiffness_matrix(G, B)
    A = C @ (np.asarray(S) - np.eye(3))
    den = np.einsum("...i,...i->...", VOIGT_METRIC * M, np.einsum("...ij,...j->...i", A, M))
    return -2.0 * np.asarray(tau) / den


def check_moduli(name, value, n_cells):
    """A modulus as one value per cell (``value``: a number or ``n_cells`` values, finite and
    > 0; FemplastInputError naming ``name`` otherwise)."""
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n_cells, float(arr))
    if arr.shape != (n_cells,):
        raise FemplastInputError(name, f"array of shape {arr.shape}",
                                 f"a number or one value per cell ({n_cells} values)")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))][0]
        raise FemplastInputError(name, float(bad), "finite moduli > 0 in every cell")
    return arr


def periodic_prolongation(V, L: float):
    """Prolongation P (all dofs <- reduced periodic dofs) for a vector P1 space on [0, L]^2.

    Right/top nodes are mapped to their left/bottom twins (corners to the origin node), found by
    coordinates among the boundary masters gathered from all ranks. The origin node is left out
    of the reduced space (P has zero rows there): this pins the rigid translation.

    Returns:
        (P, n_reduced_global)
    """
    from petsc4py import PETSc
    from scipy.spatial import cKDTree

    comm = V.mesh.comm
    imap = V.dofmap.index_map
    bs = V.dofmap.index_map_bs
    nloc = imap.size_local
    x = V.tabulate_dof_coordinates()[:nloc, :2]
    tol = 1e-8 * L
    right = np.abs(x[:, 0] - L) < tol
    top = np.abs(x[:, 1] - L) < tol
    master = ~(right | top)
    origin = master & (np.abs(x[:, 0]) < tol) & (np.abs(x[:, 1]) < tol)
    kept = master & ~origin
    m_loc = int(kept.sum())
    offset = comm.exscan(m_loc) or 0
    m_glob = comm.allreduce(m_loc)
    red = np.full(nloc, -1, dtype=np.int64)
    red[kept] = offset + np.arange(m_loc)
    # boundary masters (left or bottom side) are the only possible images of slaves
    on_edge = master & ((np.abs(x[:, 0]) < tol) | (np.abs(x[:, 1]) < tol))
    pts = np.vstack(comm.allgather(x[on_edge]))
    ids = np.concatenate(comm.allgather(red[on_edge]))
    slaves = np.flatnonzero(~master)
    if len(slaves):
        img = x[slaves].copy()
        img[right[slaves], 0] -= L
        img[top[slaves], 1] -= L
        d, j = cKDTree(pts).query(img)
        if np.any(d > 1e-6 * L):
            raise FemplastInputError("mesh", "non-matching boundary nodes",
                                     "a periodic mesh (every right/top node needs a twin)")
        red[slaves] = ids[j]
    rows = np.repeat(red, bs)
    has = rows >= 0
    cols = (bs * rows + np.tile(np.arange(bs), nloc))[has].astype(PETSc.IntType)
    indptr = np.concatenate([[0], np.cumsum(has)]).astype(PETSc.IntType)
    vals = np.ones(len(cols))
    P = PETSc.Mat().createAIJ(size=((bs * nloc, bs * imap.size_global), (bs * m_loc, bs * m_glob)),
                              csr=(indptr, cols, vals), comm=comm)
    P.assemble()
    return P, bs * m_glob


def elasticity_forms(V, Q, G, B):
    """The bilinear forms of the elastic problem (shared by every discretization in femplast).

    Returns:
        ``(a_K, a_Bs, a_Dm)``: stiffness ``int C:eps(u):eps(v)``; cell stress (DG0 3-vector
        ``q``) to nodal forces ``int T(q):eps(v)``; displacement to cell strain moments
        ``int eps(u):T(w)`` (``T`` maps ``[xx, yy, xy]`` to the symmetric tensor).
    """
    import ufl

    def eps(u):
        return ufl.sym(ufl.grad(u))

    def sigma(e):
        return B * ufl.tr(e) * ufl.Identity(2) + 2 * G * ufl.dev(e)

    def tens(q):
        return ufl.as_matrix([[q[0], q[2]], [q[2], q[1]]])

    u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
    q, w = ufl.TrialFunction(Q), ufl.TestFunction(Q)
    dx = ufl.dx(metadata={"quadrature_degree": 2})
    return (ufl.inner(sigma(eps(u)), eps(v)) * dx, ufl.inner(tens(q), eps(v)) * dx,
            ufl.inner(eps(u), tens(w)) * dx)


def quad_stencils(h: float, G: float, B: float):
    """Element stencils of the structured quad discretization with cell size ``h``.

    Assembled by dolfinx on a 4 x 4 patch with the forms of :func:`elasticity_forms`, read at an
    interior node / cell, so they are exactly the stencils of the periodic problem:

    Returns:
        ``S[a + 1, b + 1]`` (2x2): coupling of a node with its neighbour at offset (a, b);
        ``F[a, b]`` (2x3): force on node (a, b) of a cell per unit cell stress ``[xx, yy, xy]``;
        ``D[a, b]`` (3x2): cell-averaged strain per unit displacement of its node (a, b).
    """
    from dolfinx import fem, mesh
    from dolfinx.fem.petsc import assemble_matrix

    comm = MPI.COMM_SELF
    msh = mesh.create_rectangle(comm, [np.zeros(2), np.array([4 * h, 4 * h])], (4, 4),
                                cell_type=mesh.CellType.quadrilateral)
    V = fem.functionspace(msh, ("Lagrange", 1, (2,)))
    Q = fem.functionspace(msh, ("DG", 0, (3,)))
    mats = []
    for a in elasticity_forms(V, Q, fem.Constant(msh, float(G)), fem.Constant(msh, float(B))):
        A = assemble_matrix(fem.form(a, jit_comm=comm))
        A.assemble()
        mats.append(A.convert("dense").getDenseArray().copy())
        A.destroy()
    K, Bs, Dm = mats
    node = np.rint(V.tabulate_dof_coordinates()[:, :2] / h).astype(int)
    x = msh.geometry.x
    mid = x[msh.geometry.dofmaps[0]].mean(axis=1)[:, :2] / h
    cell = np.floor(mid).astype(int)
    node_of = {tuple(p): i for i, p in enumerate(node)}
    c11 = Q.dofmap.list[int(np.flatnonzero((cell[:, 0] == 1) & (cell[:, 1] == 1))[0]), 0]
    S = np.zeros((3, 3, 2, 2))
    F = np.zeros((2, 2, 2, 3))
    D = np.zeros((2, 2, 3, 2))
    r0 = node_of[(2, 2)]
    for a in (-1, 0, 1):
        for b in (-1, 0, 1):
            j = node_of[(2 + a, 2 + b)]
            S[a + 1, b + 1] = K[2 * r0:2 * r0 + 2, 2 * j:2 * j + 2]
    area = h * h
    for a in (0, 1):
        for b in (0, 1):
            j = node_of[(1 + a, 1 + b)]
            F[a, b] = Bs[2 * j:2 * j + 2, 3 * c11:3 * c11 + 3]
            D[a, b] = Dm[3 * c11:3 * c11 + 3, 2 * j:2 * j + 2] / area / VOIGT_METRIC[:, None]
    return S, F, D


def _scipy_csr(M):
    """A serial PETSc AIJ matrix as scipy CSR (same values)."""
    import scipy.sparse as sps

    ai, aj, av = M.getValuesCSR()
    return sps.csr_matrix((av, aj, ai), shape=M.getSize())


def _diag(v: np.ndarray):
    """Sparse diagonal matrix of ``v`` (scales the columns of a sparse product)."""
    import scipy.sparse as sps

    return sps.diags(v, format="csr")


def _hstack(blocks):
    import scipy.sparse as sps

    return sps.hstack(blocks, format="csc")


def _petsc_library():
    """The PETSc shared library this process loaded (ctypes), or None (found through
    /proc/self/maps: elsewhere than Linux the callers fall back to FE solves)."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "/libpetsc.so" in line}
        return ctypes.CDLL(sorted(paths)[0]) if paths else None
    except OSError:
        return None


def _sparse_rhs_solve(ksp, rhs):
    """``X = A^-1 B`` (a dense PETSc matrix) for a sparse serial ``B`` (scipy, columns = right-
    hand sides) from the MUMPS factor of ``ksp``, with MUMPS' sparse right-hand sides (ICNTL(20),
    through PETSc's ``MatMatTransposeSolve``, which takes ``B^T`` as AIJ): the forward
    elimination only visits the factor's columns the few nonzeros reach, half the solve time
    of a dense block for the unit responses (8 nonzeros each; 1.5 instead of 3.0 ms per cell
    at n = 128). None when not available (another solver, no such symbol)."""
    import ctypes

    from petsc4py import PETSc

    pc, lib = ksp.getPC(), _petsc_library()
    if (lib is None or pc.getType() != "lu" or pc.getFactorSolverType() != "mumps"
            or not hasattr(lib, "MatMatTransposeSolve")):
        return None
    bt = rhs.T.tocsr()  # one row per right-hand side
    bt.sort_indices()
    it = PETSc.IntType
    Bt = PETSc.Mat().createAIJ(size=bt.shape, csr=(bt.indptr.astype(it), bt.indices.astype(it),
                                                   bt.data), comm=MPI.COMM_SELF)
    Bt.assemble()
    X = PETSc.Mat().createDense(rhs.shape, comm=MPI.COMM_SELF)
    X.setUp()
    X.assemble()
    F = pc.getFactorMatrix()
    saved = {i: F.getMumpsIcntl(i) for i in (20, 21)}  # how solves pass rhs / solution
    try:
        err = lib.MatMatTransposeSolve(ctypes.c_void_p(F.handle), ctypes.c_void_p(Bt.handle),
                                       ctypes.c_void_p(X.handle))
    finally:
        for i, v in saved.items():  # back to plain solves
            F.setMumpsIcntl(i, v)
        Bt.destroy()
    if err:
        X.destroy()
        return None
    return X


def _inverse_on_pattern(ksp, A):
    """Entries of ``A^-1`` on ``A``'s sparsity pattern (global indices, scipy CSR, on every
    rank; collective) from the MUMPS factor of ``ksp``, or None when PETSc's
    ``MatMumpsGetInverse`` is not available. MUMPS wants the requested pattern centralized on
    rank 0 (an AIJ matrix whose rows all live there) and fills in its values."""
    import ctypes

    import scipy.sparse as sps
    from petsc4py import PETSc

    pc, comm = ksp.getPC(), A.getComm().tompi4py()
    lib = _petsc_library()
    ok = (lib is not None and pc.getType() == "lu" and pc.getFactorSolverType() == "mumps"
          and hasattr(lib, "MatMumpsGetInverse"))
    if not comm.allreduce(ok, op=MPI.LAND):
        return None
    N = A.getSize()[0]
    r0, _ = A.getOwnershipRange()
    ai, aj, _ = A.getValuesCSR()
    rows = comm.gather(r0 + np.repeat(np.arange(len(ai) - 1), np.diff(ai)), 0)
    cols = comm.gather(aj, 0)
    if comm.rank == 0:
        pat = sps.csr_matrix((np.ones(sum(map(len, rows))), (np.concatenate(rows),
                                                             np.concatenate(cols))), (N, N))
        pat.sort_indices()
        csr, m = (pat.indptr, pat.indices, np.zeros(pat.nnz)), N
    else:
        csr, m = (np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0)), 0
    it = PETSc.IntType
    S = PETSc.Mat().createAIJ(size=((m, N), (m, N)), csr=(csr[0].astype(it),
                                                          csr[1].astype(it), csr[2]),
                              comm=A.getComm())
    S.assemble()
    St = PETSc.Mat().createTranspose(S)  # the MATTRANSPOSEVIRTUAL format MUMPS fills in
    F = pc.getFactorMatrix()
    saved = {i: F.getMumpsIcntl(i) for i in (20, 21, 27, 30)}  # how solves pass rhs / solution
    # 512 right-hand sides per block: with MUMPS' default (-32) the entries take 5x longer
    # on 2 ranks (16.6 s instead of 3.2 s at n = 128); serially 10 % faster
    F.setMumpsIcntl(27, 512)
    try:
        err = lib.MatMumpsGetInverse(ctypes.c_void_p(F.handle), ctypes.c_void_p(St.handle))
    finally:
        for i, v in saved.items():  # back to plain solves
            F.setMumpsIcntl(i, v)
    out = None
    if comm.rank == 0 and err == 0:
        bi, bj, bv = S.getValuesCSR()
        out = (bi, bj, bv)
    St.destroy()
    S.destroy()
    out = comm.bcast(out, 0) if comm.allreduce(err, op=MPI.MAX) == 0 else None
    return None if out is None else sps.csr_matrix((out[2], out[1], out[0]), (N, N))


class PeriodicElasticity:
    """Bi-periodic linear elasticity of a :class:`~femplast.fe.mesh.BoxMesh`, factorized once.

    Per-cell arrays exchanged with this class are in *local canonical order*: the owned cells of
    this rank sorted by canonical index (in serial: the canonical order itself).

    Args:
        box: the mesh.
        G: shear modulus, a number or one value per cell in canonical order (all cells).
        B: 2D bulk modulus, likewise.
        petsc_options: extra PETSc options for the KSP, set under ``petsc_prefix``.
        petsc_prefix: options prefix of the KSP.
    """

    def __init__(self, box: BoxMesh, G=13.2, B=59.0, petsc_options: dict | None = None,
                 petsc_prefix: str = "femplast_elasticity_"):
        self.box = box
        self.comm = box.mesh.comm
        order = np.argsort(box.canonical, kind="stable")
        self.cells = box.canonical[order]  # canonical index of each local position
        self._dolfinx_cells = order.astype(np.int32)
        self._set_moduli(G, B)
        self._create_spaces()
        K, Bs, Dm = self._assemble_operators()
        self._reduce_periodic(K, Bs, Dm)
        self._factorize(petsc_options, petsc_prefix)
        self.num_solves = 0

    # ------------------------------------------------------------------ construction steps
    def _set_moduli(self, G, B) -> None:
        """Check the moduli (numbers or one per cell, canonical) and keep the local ones."""
        G_all = check_moduli("elasticity.G", G, self.box.num_cells)
        B_all = check_moduli("elasticity.B", B, self.box.num_cells)
        self.uniform = bool(np.ptp(G_all) == 0 and np.ptp(B_all) == 0)
        self.G = G_all[self.cells]
        self.B = B_all[self.cells]

    def _create_spaces(self) -> None:
        """P1 displacements ``V``, DG0 cell 3-vectors ``Q`` and scalars ``W`` (the moduli)."""
        from dolfinx import fem

        msh = self.box.mesh
        self.V = fem.functionspace(msh, ("Lagrange", 1, (2,)))
        self.Q = fem.functionspace(msh, ("DG", 0, (3,)))
        self.W = fem.functionspace(msh, ("DG", 0))
        self._qblk = self.Q.dofmap.list[self._dolfinx_cells, 0]
        self._wblk = self.W.dofmap.list[self._dolfinx_cells, 0]
        self._Gf, self._Bf = fem.Function(self.W), fem.Function(self.W)
        self._write_moduli_fields()

    def _write_moduli_fields(self) -> None:
        for f, v in ((self._Gf, self.G), (self._Bf, self.B)):
            f.x.array[self._wblk] = v
            f.x.scatter_forward()

    def _assemble_operators(self):
        """Full-space operators ``(K, Bs, Dm)`` of :func:`elasticity_forms`; sets the cell
        areas. ``Bs``: cell stress -> nodal forces (rhs of u~ is ``Bs @ C:(eps_pl - E)``);
        ``Dm``: displacement -> cell-averaged strain (rows scaled here)."""
        from dolfinx import fem
        from dolfinx.fem.petsc import assemble_matrix

        a_K, a_Bs, a_Dm = elasticity_forms(self.V, self.Q, self._Gf, self._Bf)
        self._aK = fem.form(a_K)  # kept: update_moduli reassembles the stiffness
        mats = []
        for form in (self._aK, fem.form(a_Bs), fem.form(a_Dm)):
            A = assemble_matrix(form)
            A.assemble()
            mats.append(A)
        K, Bs, Dm = mats
        self._cell_areas()
        self._average_strain_rows(Dm)
        return K, Bs, Dm

    def _cell_areas(self) -> None:
        import ufl
        from dolfinx import fem
        from dolfinx.fem.petsc import assemble_vector
        from petsc4py import PETSc

        dx = ufl.dx(metadata={"quadrature_degree": 2})
        area = assemble_vector(fem.form(ufl.TestFunction(self.W) * dx))
        area.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        self.area = area.array[self._wblk].copy()
        self.box_area = self.comm.allreduce(float(self.area.sum()))

    def _average_strain_rows(self, Dm) -> None:
        """Turn Dm's rows (strain moments weighted [1, 1, 2] by inner(eps, tens(w))) into cell
        averages: divide by the area and the weights. Rows are Q dofs; the areas are mapped
        through the cells rather than assuming that the scalar and blocked DG0 spaces number
        their dofs alike."""
        scale = Dm.createVecLeft()
        sc = np.ones((scale.getLocalSize() // 3, 3))
        sc[self._qblk] = 1.0 / self.area[:, None] / VOIGT_METRIC
        scale.array[:] = sc.ravel()
        Dm.diagonalScale(L=scale)

    def _reduce_periodic(self, K, Bs, Dm) -> None:
        """Reduced operators ``K_p = P^T K P``, ``P^T Bs``, ``Dm P`` on the periodic dofs. The
        full ones are freed before the factorization, which sets the peak memory."""
        self.P, self.n_reduced = periodic_prolongation(self.V, self.box.L)
        self.Kp = K.PtAP(self.P)
        self.PtBs = self.P.transposeMatMult(Bs)
        self.DmP = Dm.matMult(self.P)
        for mat in (K, Bs, Dm):
            mat.destroy()

    def _factorize(self, petsc_options: dict | None, petsc_prefix: str) -> None:
        """MUMPS LU of ``K_p`` (options under ``petsc_prefix``) and the work vectors."""
        from petsc4py import PETSc

        ksp = PETSc.KSP().create(self.comm)
        ksp.setOptionsPrefix(petsc_prefix)
        ksp.setOperators(self.Kp)
        ksp.setType("preonly")
        ksp.getPC().setType("lu")
        ksp.getPC().setFactorSolverType("mumps")
        if petsc_options:
            opts = PETSc.Options()
            for k, val in petsc_options.items():
                opts[f"{petsc_prefix}{k}"] = val
        ksp.setFromOptions()
        ksp.setUp()
        self.ksp = ksp
        self._q = self.PtBs.createVecRight()
        self._b, self._x = self.Kp.createVecLeft(), self.Kp.createVecRight()
        self._e = self.DmP.createVecLeft()

    def update_moduli(self, G, B) -> None:
        """Replace the per-cell moduli (collective; numbers or one value per cell, canonical).

        Sets the DG0 fields, reassembles ``K``, recomputes ``K_p = P^T K P`` in place (same
        sparsity) and refactorizes the KSP (MUMPS numeric factorization). The stress -> force
        and strain operators do not depend on ``C`` (the stiffness is applied per cell by
        :meth:`C`) and are kept.
        """
        from dolfinx.fem.petsc import assemble_matrix

        self._set_moduli(G, B)
        self._write_moduli_fields()
        K = assemble_matrix(self._aK)
        K.assemble()
        K.PtAP(self.P, result=self.Kp)
        self._stiffness_changed(K)
        self.ksp.setOperators(self.Kp)
        self.ksp.setUp()

    def _stiffness_changed(self, K) -> None:
        """Hook of :meth:`update_moduli` with the new full stiffness ``K`` (released here; a
        specimen keeps it for its lifting and reactions, femplast.fe.boundary)."""
        K.destroy()

    @staticmethod
    def external(gamma: float, alpha: float = 0.0) -> np.ndarray:
        """The solve argument ``E`` at external strain ``gamma`` along ``alpha`` (radians):
        the pure shear ``gamma M(alpha)``. A bounded specimen
        (:class:`femplast.fe.boundary.BoundedElasticity`) is driven by ``gamma`` itself."""
        return macro_strain(gamma, alpha)

    # ------------------------------------------------------------------ per-cell algebra
    @property
    def num_local(self) -> int:
        return len(self.cells)

    def C(self, eps) -> np.ndarray:
        """``C : eps`` with this mesh's per-cell moduli (local canonical order)."""
        return apply_stiffness(self.G, self.B, eps)

    def _scatter_q(self, values: np.ndarray):
        self._q.array.reshape(-1, 3)[self._qblk] = values

    # ------------------------------------------------------------------ solves
    def fluctuation_strain(self, eps_pl, E=(0.0, 0.0, 0.0)) -> np.ndarray:
        """Cell-averaged strain of the periodic fluctuation u~ (collective).

        Args:
            eps_pl: eigenstrain per local cell, shape (num_local, 3).
            E: macroscopic strain ``[Exx, Eyy, Exy]``.
        """
        E = np.asarray(E, float)
        self._scatter_q(self.C(np.asarray(eps_pl, float) - E))
        self.PtBs.mult(self._q, self._b)
        self.ksp.solve(self._b, self._x)
        self.DmP.mult(self._x, self._e)
        self.num_solves += 1
        return self._e.array.reshape(-1, 3)[self._qblk].copy()

    def strain(self, eps_pl, E=(0.0, 0.0, 0.0)) -> np.ndarray:
        """Total cell-averaged strain ``E + <eps(u~)>_cell`` (collective)."""
        return np.asarray(E, float) + self.fluctuation_strain(eps_pl, E)

    def stress(self, eps_pl, E=(0.0, 0.0, 0.0), sigma0=None) -> np.ndarray:
        """Cell stress ``C : (eps - eps_pl) + Sigma0`` (collective)."""
        eps_pl = np.asarray(eps_pl, float)
        sig = self.C(self.strain(eps_pl, E) - eps_pl)
        return sig if sigma0 is None else sig + sigma0

    def displacement(self, eps_pl, E=(0.0, 0.0, 0.0)):
        """The periodic fluctuation u~ as a dolfinx Function (for output)."""
        from dolfinx import fem

        self.fluctuation_strain(eps_pl, E)
        u = fem.Function(self.V, name="u_fluct")
        self.P.mult(self._x, u.x.petsc_vec)
        u.x.scatter_forward()
        return u

    def residual(self, eps_pl, E=(0.0, 0.0, 0.0)) -> float:
        """Relative FE residual ``|P^T (K u~ - f)| / |P^T f|`` of the equilibrium solve.

        Solves for ``u~`` and re-applies the *unfactorized* operator, so it checks the whole
        chain (assembly, periodic constraint, factorization) rather than trusting it.
        """
        self.fluctuation_strain(eps_pl, E)
        r = self._b.duplicate()
        self.Kp.mult(self._x, r)
        r.axpy(-1.0, self._b)
        return r.norm() / max(self._b.norm(), 1e-300)

    def mean(self, field) -> np.ndarray:
        """Area-weighted box average of a per-cell field (collective)."""
        f = np.asarray(field, float)
        loc = np.tensordot(self.area, f, axes=(0, 0))
        return self.comm.allreduce(loc) / self.box_area

    # ------------------------------------------------------------------ responses
    def local_position(self, cell: int) -> int:
        """Local position of canonical ``cell`` on this rank, or -1."""
        k = np.searchsorted(self.cells, cell)
        return int(k) if k < len(self.cells) and self.cells[k] == cell else -1

    def unit_response(self, cell: int, component: int) -> np.ndarray:
        """Stress change in every local cell for a unit eigenstrain component in ``cell``.

        ``component`` 0, 1, 2 = xx, yy, xy (tensorial: component 2 sets eps_xy = eps_yx = 1).
        """
        eps_pl = np.zeros((self.num_local, 3))
        k = self.local_position(cell)
        if k >= 0:
            eps_pl[k, component] = 1.0
        return self.stress(eps_pl)

    def unit_response_block(self, cells, units, out: np.ndarray | None = None) -> np.ndarray:
        """Stress change (d, s, p) (see :func:`to_dsp`) of every local cell per unit
        eigenstrain ``units[a]`` ([xx, yy, xy]) in each of ``cells`` (canonical): shape
        (len(cells), len(units), 3, num_local), the dense Green operator's row layout (written
        into ``out`` when given: the operator's own rows, no copy).

        Serial only: one multi-right-hand-side solve of the factorization for all cells and
        units (MUMPS solves the block with level-3 BLAS; the same numbers as one solve each
        to round-off). The right-hand sides are columns of ``P^T Bs`` (sparse, taken at once)
        and the strains rows of ``Dm P X`` read in the solution's own (column-major) order:
        with a Python loop per column and a transpose these cost as much as the solve.
        """
        from petsc4py import PETSc

        if self.comm.size > 1:
            raise RuntimeError("unit_response_block is serial (use unit_response per cell)")
        units = np.atleast_2d(np.asarray(units, float))
        pos = np.searchsorted(self.cells, np.asarray(cells, np.int64))
        m, nu = len(pos), len(units)
        if getattr(self, "_ptbs_csc", None) is None:  # P^T Bs does not depend on the moduli
            self._ptbs_csc = _scipy_csr(self.PtBs).tocsc()
        q = 3 * self._qblk[pos]
        rhs = []
        for u in units:  # column (a, j): the eigenstress C_j u_a of cell j as nodal forces
            Cu = apply_stiffness(self.G[pos], self.B[pos], u)
            rhs.append(sum(self._ptbs_csc[:, q + k] @ _diag(Cu[:, k]) for k in range(3)))
        rhs = _hstack(rhs)
        X = _sparse_rhs_solve(self.ksp, rhs)
        Bm = None
        if X is None:  # no MUMPS sparse right-hand sides: a dense block
            Bm = PETSc.Mat().createDense(rhs.shape, array=rhs.toarray(order="F"),
                                         comm=MPI.COMM_SELF)
            X = Bm.duplicate()
            self.ksp.matSolve(Bm, X)
        E = self._local_strain_rows().matMult(X)
        # column (a, j) of E (column-major) holds the local cells' strains: a view
        e = E.getDenseArray().T.reshape(nu, m, self.num_local, 3)
        if out is None:
            out = np.empty((m, nu, 3, self.num_local))
        for a in range(nu):
            e[a, np.arange(m), pos] -= units[a]  # minus the eigenstrain itself
            exx, eyy, exy = e[a, ..., 0], e[a, ..., 1], e[a, ..., 2]
            np.multiply(self.G, eyy - exx, out=out[:, a, 0])  # to_dsp(C : eps)
            np.multiply(2.0 * self.G, exy, out=out[:, a, 1])
            np.multiply(self.B, exx + eyy, out=out[:, a, 2])
        for mat in (Bm, X, E):
            if mat is not None:
                mat.destroy()
        self.num_solves += m * nu
        return out

    def _local_strain_rows(self):
        """``Dm P`` with its rows in local cell order (3 per cell; serial): the strains of a
        solve come out ordered like the per-cell arrays, without a gather (built once, the
        operator does not depend on the moduli)."""
        from petsc4py import PETSc

        if getattr(self, "_dmp_local", None) is None:
            rows = (3 * self._qblk[:, None] + np.arange(3)).ravel()
            D = _scipy_csr(self.DmP)[rows]
            it = PETSc.IntType
            self._dmp_local = PETSc.Mat().createAIJ(
                size=D.shape, csr=(D.indptr.astype(it), D.indices.astype(it), D.data),
                comm=MPI.COMM_SELF)
            self._dmp_local.assemble()
        return self._dmp_local

    def eshelby_tensor(self, cell: int = 0) -> np.ndarray:
        """Numerical Eshelby tensor S of one element (appendix A.7), shape (3, 3).

        ``S[:, j]`` is the strain of ``cell`` per unit eigenstrain component ``j`` in that cell
        alone, at zero macroscopic strain (so it includes the periodic-image correction).
        """
        S = np.zeros((3, 3))
        k = self.local_position(cell)
        for j in range(3):
            eps_pl = np.zeros((self.num_local, 3))
            if k >= 0:
                eps_pl[k, j] = 1.0
            e = self.strain(eps_pl)
            if k >= 0:
                S[:, j] = e[k]
        return self.comm.allreduce(S)

    def self_strain_tensors(self) -> np.ndarray | None:
        """Every local cell's strain per unit eigenstrain in that cell alone, ``(num_local,
        3, 3)``: the element Eshelby tensor of :meth:`eshelby_tensor` in the (heterogeneous)
        medium, for all cells at once (collective; None when MUMPS' selected inversion is
        unavailable, then use :meth:`eshelby_tensor` per cell).

        The strain of cell ``c`` only needs the entries of ``K_p^-1`` between the dofs of
        ``c``'s nodes, which lie on ``K_p``'s own sparsity pattern: MUMPS computes exactly
        those entries from the existing factorization (selected inversion, ICNTL(30), through
        PETSc's ``MatMumpsGetInverse``), in about the time of a few solves instead of 3 solves
        per cell. ``S_c = (Dm P)_c K_p^-1 (P^T Bs)_c C_c``.
        """
        import scipy.sparse as sps

        Kinv = _inverse_on_pattern(self.ksp, self.Kp)
        if Kinv is None:
            return None
        # P^T Bs = (Dm P)^T diag(area VOIGT_METRIC) (same form, Dm's rows scaled): the local
        # rows of Dm P hold everything this rank's cells need
        ai, aj, av = self.DmP.getValuesCSR()
        D = sps.csr_matrix((av, aj, ai), shape=(len(ai) - 1, self.DmP.getSize()[1]))
        T = (D @ Kinv @ D.T).tocsr()
        q = 3 * self._qblk[:, None] + np.arange(3)  # (cells, 3) local Q rows of each cell
        rows = np.broadcast_to(q[:, :, None], (len(q), 3, 3)).ravel()
        cols = np.broadcast_to(q[:, None, :], (len(q), 3, 3)).ravel()
        blocks = np.asarray(T[rows, cols]).reshape(len(q), 3, 3)
        blocks *= self.area[:, None, None] * VOIGT_METRIC
        return blocks @ stiffness_matrix(self.G, self.B)

    def gather(self, field) -> np.ndarray | None:
        """Per-cell field in global canonical order on every rank (collective).

        One ``Allgatherv`` of the raw values into the rank-ordered cell list (gathered once):
        the direct backend gathers the stress after every FE solve of a distributed sample,
        and pickled ``allgather`` of the values and the cell indices cost as much as the solve
        at n = 256 on 2 ranks (35 ms of CPU per step).
        """
        f = np.ascontiguousarray(field)
        out = np.empty((self.box.num_cells,) + f.shape[1:], dtype=f.dtype)
        if self.comm.size == 1:
            out[self.cells] = f
            return out
        if getattr(self, "_gather_order", None) is None:
            counts = np.array(self.comm.allgather(len(self.cells)))
            order = np.empty(self.box.num_cells, np.int64)
            self.comm.Allgatherv(np.ascontiguousarray(self.cells, np.int64), (order, counts))
            self._gather_order, self._gather_counts = order, counts
        inner = int(np.prod(f.shape[1:], dtype=np.int64))
        vals = np.empty_like(out)
        self.comm.Allgatherv(f, (vals, self._gather_counts * inner))
        out[self._gather_order] = vals
        return out

    def destroy(self):
        for obj in (self.ksp, self.Kp, self.PtBs, self.DmP, self.P,
                    getattr(self, "_dmp_local", None)):
            if obj is not None:
                obj.destroy()
