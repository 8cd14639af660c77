"""Linear elasticity of a patch of cells with a Dirichlet (affine) boundary: the FE problem
of the local yield-stress tests (tensorial paper sec. 3.5; femplast.analysis.patches).

A patch is a submesh of the model's mesh (or, across the periodic seam, its cells moved to
their images nearest the patch centre and re-meshed as one body); per-cell arrays are in
*patch order*, the order of the given canonical cells.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

from femplast.errors import FemplastInputError
from femplast.fe.elasticity import UNIT_C, UNIT_S, VOIGT_METRIC, apply_stiffness, to_dsp


def box_periods(box) -> np.ndarray:
    """Periods ``(p_x, p_y)`` of a mesh, 0 along a direction that is not periodic: ``(L, L)``
    for the bi-periodic box, ``(W, 0)`` / ``(0, H)`` / ``(0, 0)`` for a specimen with
    ``periodic: x`` / ``y`` / ``none`` (femplast.fe.geometry)."""
    if not getattr(box, "bounded", False):
        return np.array([box.L, box.L], float)
    return np.array([box.width if box.periodic == "x" else 0.0,
                     box.height if box.periodic == "y" else 0.0])


def image_shifts(d, periods) -> np.ndarray:
    """Translations by whole periods that move offsets ``d`` (..., 2) to their nearest
    periodic images (``periods`` of :func:`box_periods`; 0 along a non-periodic direction)."""
    p = np.asarray(periods, float)
    return -np.where(p > 0, p * np.round(d / np.where(p > 0, p, 1.0)), 0.0)


def _image_shifts(msh, parent, periods, centre) -> np.ndarray:
    """Per patch cell (dolfinx indices ``parent``), the translation by whole periods that
    brings its barycentre nearest to ``centre``."""
    x = msh.geometry.x[:, :2]
    mid = x[msh.geometry.dofmaps[0][parent]].mean(axis=1)
    return image_shifts(mid - np.asarray(centre, float)[:2], periods)


def specimen_boundary(geo):
    """The boundary of a specimen that a patch must keep away from (femplast.fe.geometry).

    Every exterior facet of the mesh except those of its periodic sides (glued: not a
    boundary of the body). One rank (``MPI.COMM_SELF``), as the patch tests.

    Returns:
        (segments, touching): the facets as segments (S, 2, 2) (end points, x and y), and per
        canonical cell whether it has a vertex on one of them.
    """
    from dolfinx import mesh as dmesh

    msh = geo.mesh
    tdim = msh.topology.dim
    msh.topology.create_connectivity(tdim - 1, tdim)
    facets = dmesh.exterior_facet_indices(msh.topology)
    seg = msh.geometry.x[dmesh.entities_to_geometry(msh, tdim - 1, facets)][:, :, :2]
    axis = {"x": 0, "y": 1}.get(geo.periodic)
    if axis is not None:  # facets lying on the glued sides x = x_min / x_max (or y)
        x = msh.geometry.x[:, axis]
        tol = 1e-8 * max(geo.width, geo.height)
        on = [np.all(np.abs(seg[:, :, axis] - v) < tol, axis=1) for v in (x.min(), x.max())]
        keep = ~(on[0] | on[1])
        facets, seg = facets[keep], seg[keep]
    verts = dmesh.compute_incident_entities(msh.topology, facets, tdim - 1, 0)
    msh.topology.create_connectivity(0, tdim)
    cells = dmesh.compute_incident_entities(msh.topology, verts, 0, tdim)
    cells = cells[cells < geo.num_owned]
    touching = np.zeros(geo.num_cells, bool)
    touching[geo.canonical[cells]] = True
    return seg, touching


def points_in_body(msh, points) -> np.ndarray:
    """Per point (P, 2): whether it lies in a cell of the (one-rank) mesh ``msh``."""
    from dolfinx import geometry

    pts = np.zeros((len(points), 3))
    pts[:, :2] = points
    tree = geometry.bb_tree(msh, msh.topology.dim)
    cand = geometry.compute_collisions_points(tree, pts)
    hit = geometry.compute_colliding_cells(msh, cand, pts)
    return np.diff(hit.offsets) > 0


def segments_meet_disk(seg, centre, R: float) -> np.ndarray:
    """Per segment (S, 2, 2): whether it comes within ``R`` of ``centre`` (closed disk)."""
    a, b = seg[:, 0], seg[:, 1]
    ab = b - a
    t = np.clip(np.sum((centre - a) * ab, axis=1) / np.maximum(np.sum(ab * ab, axis=1),
                                                                 1e-300), 0.0, 1.0)
    p = a + t[:, None] * ab
    return np.hypot(*(p - centre).T) <= R


def segments_meet_square(seg, centre, half: float) -> np.ndarray:
    """Per segment (S, 2, 2): whether it meets the closed axis-aligned square of half-side
    ``half`` around ``centre`` (Liang-Barsky clipping)."""
    a = seg[:, 0] - centre
    d = seg[:, 1] - seg[:, 0]
    t0, t1 = np.zeros(len(seg)), np.ones(len(seg))
    ok = np.ones(len(seg), bool)
    for k in (0, 1):
        for p, q in ((-d[:, k], a[:, k] + half), (d[:, k], half - a[:, k])):
            par = p == 0
            ok &= ~(par & (q < 0))
            r = q / np.where(par, 1.0, p)
            t0 = np.where(~par & (p < 0), np.maximum(t0, r), t0)
            t1 = np.where(~par & (p > 0), np.minimum(t1, r), t1)
    return ok & (t0 <= t1)


def unwrapped_patch_mesh(msh, parent, shifts):
    """A ``MPI.COMM_SELF`` mesh of the cells ``parent`` of ``msh``, each translated by its row
    of ``shifts``; nodes that coincide after the translation (the two copies of a periodic
    seam node) are merged, so the patch is one connected body across the seam.

    Returns:
        (mesh, sub_of): ``sub_of[i]`` is the new mesh's index of cell ``parent[i]``.
    """
    import scipy.sparse as sp
    from dolfinx import mesh as dmesh
    from mpi4py import MPI
    from scipy.sparse.csgraph import connected_components
    from scipy.spatial import cKDTree

    conn = msh.geometry.dofmaps[0][parent]  # (cells, nodes per cell), dolfinx node order
    pts = (msh.geometry.x[conn][:, :, :2] + shifts[:, None, :]).reshape(-1, 2)
    scale = np.ptp(msh.geometry.x[:, :2], axis=0).max()
    pairs = cKDTree(pts).query_pairs(1e-9 * scale, output_type="ndarray")
    g = sp.coo_matrix((np.ones(len(pairs)), (pairs[:, 0], pairs[:, 1])),
                      shape=(len(pts), len(pts)))
    nnodes, node = connected_components(g, directed=False)
    x = np.zeros((nnodes, 2))
    x[node] = pts
    sub = dmesh.create_mesh(MPI.COMM_SELF, node.reshape(conn.shape).astype(np.int64),
                            msh.ufl_domain(), x)
    return sub, np.argsort(np.asarray(sub.topology.original_cell_index, np.int64))


def patch_mesh(box, cells, centre=None):
    """The ``MPI.COMM_SELF`` mesh of the patch ``cells`` (canonical) of ``box``: a submesh, or,
    when ``centre`` is given and the patch crosses the periodic seam, the cells moved to their
    images nearest the centre (:func:`unwrapped_patch_mesh`).

    Returns:
        (mesh, sub_of): ``sub_of[i]`` is the patch mesh's index of cell ``cells[i]``.
    """
    from dolfinx import mesh as dmesh

    msh = box.mesh
    tdim = msh.topology.dim
    inv = np.full(box.num_cells, -1, np.int64)
    inv[box.canonical] = np.arange(len(box.canonical))
    parent = inv[cells]
    if np.any(parent < 0) or len(np.unique(cells)) != len(cells):
        raise FemplastInputError("patches", "cell set", "distinct cells of the mesh")
    shifts = None if centre is None else _image_shifts(msh, parent, box_periods(box), centre)
    if shifts is not None and shifts.any():
        return unwrapped_patch_mesh(msh, parent, shifts)
    sub, emap, _, _ = dmesh.create_submesh(msh, tdim, parent.astype(np.int32))
    nsub = sub.topology.index_map(tdim).size_local
    par_of_sub = np.asarray(emap.sub_topology_to_topology(
        np.arange(nsub, dtype=np.int32), inverse=False), np.int64)
    order = np.argsort(par_of_sub)
    sub_of = order[np.searchsorted(par_of_sub[order], parent)]
    assert np.array_equal(par_of_sub[sub_of], parent)
    return sub, sub_of


def _eps(u):
    import ufl

    return ufl.sym(ufl.grad(u))


def _tens(q):
    import ufl

    return ufl.as_matrix([[q[0], q[2]], [q[2], q[1]]])


def _csr(M):
    import scipy.sparse as sp

    ip, ix, val = M.getValuesCSR()
    return sp.csr_matrix((val, ix, ip), shape=M.getSize())


def _lu_solver(A, prefix: str):
    """A KSP for repeated solves with A: preonly + LU (MUMPS), own options prefix."""
    from petsc4py import PETSc

    ksp = PETSc.KSP().create(MPI.COMM_SELF)
    ksp.setOptionsPrefix(prefix)
    ksp.setOperators(A)
    ksp.setType("preonly")
    ksp.getPC().setType("lu")
    ksp.getPC().setFactorSolverType("mumps")
    ksp.setFromOptions()
    ksp.setUp()
    return ksp


class PatchFE:
    """Linear elasticity of a patch (submesh of the model's mesh) with a Dirichlet boundary.

    Per-cell arrays are in *patch order*: the order of ``cells`` (canonical indices).

    Args:
        box: the model's mesh; must live on a single rank (``MPI.COMM_SELF``, as the ensemble
            runs realizations).
        cells: canonical indices of the patch cells (patch order).
        G, B: moduli of the patch cells (patch order), or scalars.
        petsc_prefix: options prefix of the KSP (preonly + LU with MUMPS).
        centre: a point of the patch; cells whose periodic image nearest to it is not
            themselves (the patch crosses the periodic seam) are moved there, and the patch
            mesh is built from the moved cells with coincident nodes merged
            (:func:`unwrapped_patch_mesh`). None: the patch is taken as it lies in the box.
    """

    def __init__(self, box, cells, G, B, petsc_prefix: str = "femplast_patch_",
                 centre=None):
        if box.comm.size != 1:
            raise FemplastInputError("patches", f"mesh on {box.comm.size} ranks",
                                     "a model mesh on MPI.COMM_SELF (one realization per rank)")
        cells = np.asarray(cells, np.int64)
        self.cells = cells
        self.num_cells = npc = len(cells)
        self.G = np.broadcast_to(np.asarray(G, float), (npc,)).copy()
        self.B = np.broadcast_to(np.asarray(B, float), (npc,)).copy()
        self.mesh, sub_of = patch_mesh(box, cells, centre)
        Kbc = self._assemble(sub_of)
        self.ksp, self.Kbc = _lu_solver(Kbc, petsc_prefix), Kbc
        self.num_solves = 0

    def _assemble(self, sub_of):
        """The patch's stiffness (and with the Dirichlet boundary), the eigenstress -> force
        and displacement -> cell strain maps, cell areas; returns the Dirichlet matrix."""
        import ufl
        from dolfinx import fem
        from dolfinx import mesh as dmesh
        from dolfinx.fem.petsc import assemble_matrix, assemble_vector

        sub = self.mesh
        tdim = sub.topology.dim
        V = fem.functionspace(sub, ("Lagrange", 1, (2,)))
        Q = fem.functionspace(sub, ("DG", 0, (3,)))
        W = fem.functionspace(sub, ("DG", 0))
        wblk = W.dofmap.list[sub_of, 0]
        qblk = Q.dofmap.list[sub_of, 0]
        Gf, Bf = fem.Function(W), fem.Function(W)
        Gf.x.array[wblk] = self.G
        Bf.x.array[wblk] = self.B
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        q, w = ufl.TrialFunction(Q), ufl.TestFunction(Q)
        dx = ufl.dx(metadata={"quadrature_degree": 2})
        jit = dict(jit_comm=MPI.COMM_SELF)
        a = fem.form(ufl.inner(Bf * ufl.tr(_eps(u)) * ufl.Identity(2)
                               + 2 * Gf * ufl.dev(_eps(u)), _eps(v)) * dx, **jit)
        sub.topology.create_connectivity(tdim - 1, tdim)
        facets = dmesh.exterior_facet_indices(sub.topology)
        bdofs = fem.locate_dofs_topological(V, tdim - 1, facets)
        bc = fem.dirichletbc(np.zeros(2), bdofs, V)
        self.bdofs = (2 * np.repeat(bdofs, 2) + np.tile([0, 1], len(bdofs))).astype(np.int64)
        Kbc = assemble_matrix(a, bcs=[bc])
        Kbc.assemble()
        K = assemble_matrix(a)
        K.assemble()
        Bs = assemble_matrix(fem.form(ufl.inner(_tens(q), _eps(v)) * dx, **jit))
        Bs.assemble()
        Dm = assemble_matrix(fem.form(ufl.inner(_eps(u), _tens(w)) * dx, **jit))
        Dm.assemble()
        area = assemble_vector(fem.form(ufl.TestFunction(W) * dx, **jit))
        self.area = area.array[wblk].copy()
        qidx = (3 * qblk[:, None] + np.arange(3)).ravel()
        self._K = _csr(K)
        self._Bq = _csr(Bs)[:, qidx].tocsr()  # patch-cell stresses (flattened) -> nodal forces
        scale = (1.0 / self.area[:, None] / VOIGT_METRIC).ravel()
        self._E = (_csr(Dm)[qidx].multiply(scale[:, None])).tocsr()  # dofs -> cell strains
        for M in (K, Bs, Dm, area):
            M.destroy()
        self.ndofs = self._K.shape[0]
        x = V.tabulate_dof_coordinates()[:, :2]
        self.xdof = x - x.mean(axis=0)  # node coordinates (rigid translations do not matter)
        return Kbc

    # ------------------------------------------------------------------ algebra
    def C(self, eps) -> np.ndarray:
        return apply_stiffness(self.G, self.B, eps)

    def _solve(self, F: np.ndarray) -> np.ndarray:
        """Solve ``K_bc X = F`` for the columns of F (ndofs, m) at once."""
        from mpi4py import MPI
        from petsc4py import PETSc

        F = np.atleast_2d(F.T).T
        m = F.shape[1]
        Bm = PETSc.Mat().createDense((self.ndofs, m), comm=MPI.COMM_SELF)
        Bm.setUp()
        Bm.getDenseArray()[:] = F
        Bm.assemble()
        Xm = PETSc.Mat().createDense((self.ndofs, m), comm=MPI.COMM_SELF)
        Xm.setUp()
        Xm.assemble()
        self.ksp.matSolve(Bm, Xm)
        X = Xm.getDenseArray().copy()
        Bm.destroy()
        Xm.destroy()
        self.num_solves += m
        return X

    def boundary_displacement(self, E) -> np.ndarray:
        """Nodal values (ndofs,) of the affine field ``u = E x`` (E as ``[xx, yy, xy]``)."""
        E = np.asarray(E, float)
        x, y = self.xdof[:, 0], self.xdof[:, 1]
        u = np.empty(self.ndofs)
        u[0::2] = E[0] * x + E[2] * y
        u[1::2] = E[2] * x + E[1] * y
        return u

    def stress(self, eps_pl, E=(0.0, 0.0, 0.0)) -> np.ndarray:
        """Cell stress ``C : (eps - eps_pl)`` (patch order, ``[xx, yy, xy]``) for an eigenstrain
        field and the boundary displacement ``u = E x``: one fresh FE solve."""
        eps_pl = np.asarray(eps_pl, float).reshape(self.num_cells, 3)
        ub = self.boundary_displacement(E)
        ub_only = np.zeros(self.ndofs)
        ub_only[self.bdofs] = ub[self.bdofs]
        f = self._Bq @ self.C(eps_pl).ravel() - self._K @ ub_only
        f[self.bdofs] = ub_only[self.bdofs]
        u = self._solve(f[:, None])[:, 0]
        strain = (self._E @ u).reshape(-1, 3)
        return self.C(strain - eps_pl)

    def boundary_responses(self) -> np.ndarray:
        """(2, 3, ncells) (d, s, p) stress per unit boundary strain UNIT_S and UNIT_C
        (so that ``U(alpha) = sin 2alpha U[0] + cos 2alpha U[1]``)."""
        z = np.zeros((self.num_cells, 3))
        return np.stack([to_dsp(self.stress(z, unit)) for unit in (UNIT_S, UNIT_C)])

    def green_operator(self) -> np.ndarray:
        """Dense Green operator ``D[j, u, :, i]`` (ncells, 2, 3, ncells): (d, s, p) stress change
        of cell i for the unit eigenstrain UNIT_S (u = 0) / UNIT_C (u = 1) in cell j, with a
        frozen boundary; the layout of
        :class:`femplast.redistribution.backends.DenseRedistribution`."""
        npc = self.num_cells
        units = np.stack([UNIT_S, UNIT_C])  # (2, 3)
        Cu = self.C(np.broadcast_to(units[None], (npc, 2, 3)).transpose(1, 0, 2))  # (2, npc, 3)
        Q = np.zeros((npc, 3, npc, 2))  # flattened cell stress (rows) per load case (j, u)
        j = np.arange(npc)
        for k in range(2):
            Q[j, :, j, k] = Cu[k]
        F = self._Bq @ Q.reshape(3 * npc, 2 * npc)
        F[self.bdofs] = 0.0
        X = self._solve(F)
        strain = (self._E @ X).reshape(npc, 3, npc, 2)  # (i, comp, j, u)
        sig = self.C(strain.transpose(2, 3, 0, 1))  # (j, u, i, comp)
        sig[j, :, j, :] -= Cu.transpose(1, 0, 2)
        return np.ascontiguousarray(np.moveaxis(to_dsp(sig), 0, 2))  # (j, u, comp, i)

    def destroy(self):
        self.ksp.destroy()
        self.Kbc.destroy()
