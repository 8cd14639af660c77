"""Linear elasticity of a specimen with boundary conditions per tagged boundary (issue 19).

The periodic box is driven by a macroscopic strain; a specimen is driven by its boundaries.
Each named boundary of a :class:`~femplast.fe.geometry.GeometryMesh` gets a condition:

* ``free``: traction-free (the default of every boundary not named);
* ``clamped``: ``u = 0``;
* ``roller``: the normal component is 0, the tangential one free (straight sides along x or y);
* ``{displacement: [ux, uy]}``: ``u = gamma_ext * H * (ux, uy)``, ``H`` the specimen height and
  ``gamma_ext`` the loading parameter of the AQS driving; a ``null`` component is free. Simple
  shear between walls: bottom clamped, top ``[1, 0]`` (``gamma_ext`` is the engineering shear
  strain); uniaxial tension: bottom clamped, top ``[0, 1]`` (the nominal strain); compression:
  ``[0, -1]``.

The displacement is ``u = P u_r + gamma_ext g``: ``P`` prolongs the reduced dofs (free dofs,
periodic slaves mapped to their masters, constrained dofs dropped) and ``g`` is the lifting of
the prescribed values per unit ``gamma_ext``. The reduced stiffness ``P^T K P`` is factorized
once (MUMPS) and reused for every right-hand side, exactly as in the periodic problem, whose
class this one extends (same per-cell algebra, areas, gathers and responses): the stress is
linear in ``(eps_pl, gamma_ext)``, so the AQS driving keeps its exact next-instability search
with the load response ``R`` = the stress per unit ``gamma_ext`` at zero plastic strain.

Reactions: the internal nodal forces ``f = K u - Bs C:eps_pl`` vanish on the reduced dofs
(equilibrium) and are the support forces on the constrained ones; ``F_drive = g . f`` is the
force conjugate to ``gamma_ext``, so the boundary work is ``int F_drive d gamma_ext``.

The realization pipeline runs on specimens unchanged (KMC preparation, stages, sweeps, one
sample over the ranks): a loading orientation keeps only its drive direction here
(:func:`drive_sign`: 0 forward, 90 deg backward), and the stress a stage controls is the drive
stress ``F_drive / A`` (femplast.protocols.stages.resolved_stress).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from femplast.angles import drive_direction_deg
from femplast.errors import FemplastInputError
from femplast.fe.elasticity import VOIGT_METRIC, PeriodicElasticity
from femplast.fe.geometry import GeometryMesh, boundary_names, spec_from_case

CONDITIONS = ("free", "clamped", "roller", "displacement")


@dataclass(frozen=True)
class Condition:
    """One boundary's condition: per component the prescribed displacement per unit
    gamma_ext, in units of the specimen height (``None``: that component is free)."""

    name: str
    kind: str
    ux: float | None = None
    uy: float | None = None


def check_conditions(spec: dict | None, names=None) -> dict[str, tuple]:
    """Syntax of case-file conditions ``{boundary name: condition}`` (and the names, when
    known): name -> ``(kind, ux, uy)`` with ``None`` for free components (roller: both
    ``None`` until the side's direction is known). Free boundaries are left out.

    Raises:
        FemplastInputError: an unknown boundary name or condition (``geometry.boundaries.X``).
    """
    out = {}
    for name, cond in (spec or {}).items():
        key = f"geometry.boundaries.{name}"
        if names is not None and name not in names:
            raise FemplastInputError(key, cond, f"a boundary of the geometry: {sorted(names)}")
        if cond == "free":
            continue
        if cond == "clamped":
            out[name] = ("clamped", 0.0, 0.0)
        elif cond == "roller":
            out[name] = ("roller", None, None)
        elif isinstance(cond, dict) and set(cond) == {"displacement"}:
            d = cond["displacement"]
            if (not isinstance(d, (list, tuple)) or len(d) != 2
                    or not all(v is None or (isinstance(v, (int, float))
                                             and not isinstance(v, bool)
                                             and np.isfinite(v)) for v in d)
                    or all(v is None for v in d)):
                raise FemplastInputError(key, d, "[ux, uy]: numbers per unit gamma_ext in "
                                         "units of the height, null for a free component")
            out[name] = ("displacement", *(None if v is None else float(v) for v in d))
        else:
            raise FemplastInputError(key, cond, "free, clamped, roller or {displacement: "
                                     "[ux, uy]}")
    return out


def check(case) -> None:
    """Consistency of a geometry case (mesh.kind: geometry): the shape, the conditions, and
    what runs on a specimen today: the tensorial model through the realization pipeline (KMC
    preparation, stages, sweeps, one sample over the ranks, patch tests, evolving moduli),
    driven along gamma_ext forward (orientation 0) or reversed (90), and the scalar model with
    the specimen's FE kernel (plain runs and sweeps)."""
    if case.mesh.kind != "geometry":
        if case.geometry.boundaries:
            raise FemplastInputError("geometry.boundaries", case.geometry.boundaries,
                                     "empty unless mesh.kind: geometry")
        return
    spec = spec_from_case(case)
    spec.check()
    conds = check_conditions(case.geometry.boundaries, boundary_names(spec))
    if not any(c[0] == "displacement" and any(c[1:]) for c in conds.values()):
        raise FemplastInputError("geometry.boundaries", case.geometry.boundaries,
                                 "at least one boundary with a nonzero {displacement: "
                                 "[ux, uy]} (the driving)")
    unsupported = [("model", case.model not in ("tensorial", "quench", "scalar"),
                    "tensorial, quench or scalar (femplast.scalar.specimen)"),
                   ("loading.alpha_ext", case.loading.alpha_ext != 0,
                    "0 (a specimen is driven by its boundaries)"),
                   ("redistribution.backend", case.redistribution.backend == "propagator",
                    "auto, dense or direct on a specimen")]
    for k, bad, allowed in unsupported:
        if bad:
            value = k.split(".")
            v = case
            for part in value:
                v = getattr(v, part)
            raise FemplastInputError(k, v, f"{allowed} with mesh.kind: geometry")
    for i, sg in enumerate(case.stages):
        if sg.kind == "load" and drive_direction_deg(sg.alpha_ext) is None:
            raise FemplastInputError(f"stages[{i}].alpha_ext", sg.alpha_ext,
                                     "0 (the drive of the boundaries) or 90 (the drive "
                                     "reversed) with mesh.kind: geometry")


def drive_sign(alpha: float) -> int:
    """The direction of a specimen's drive for a loading orientation ``alpha`` (radians): the
    box's ``M(alpha + pi/2) = -M(alpha)`` carried over, so that the protocols' orientations keep
    their meaning: ``alpha = 0`` drives the boundaries forward (``u = gamma_ext g``), ``pi/2``
    reverses them (``u = -gamma_ext g``: unloading, a reversed reload). Other orientations have
    no meaning on a specimen (refused by :func:`check`).

    Raises:
        ValueError: ``alpha`` is not a multiple of pi/2.
    """
    s = drive_direction_deg(math.degrees(alpha))
    if s is None:
        raise ValueError(f"a specimen is driven along 0 or 90 deg, not {math.degrees(alpha)}")
    return s


def parse_conditions(geo: GeometryMesh, spec: dict | None) -> list[Condition]:
    """Case-file conditions ``{boundary name: condition}`` -> Conditions (roller resolved to
    the normal component of its straight side; collective)."""
    out = []
    for name, (kind, ux, uy) in check_conditions(spec, geo.boundaries).items():
        if kind == "roller":
            horizontal = _is_horizontal(geo, name, f"geometry.boundaries.{name}")
            ux, uy = (None, 0.0) if horizontal else (0.0, None)
        out.append(Condition(name, kind, ux, uy))
    return out


def elasticity_of(box, G, B):
    """The factorized FE problem of a mesh: a specimen's (its ``conditions``) or the
    periodic box's."""
    if getattr(box, "bounded", False):
        return BoundedElasticity(box, box.conditions, G, B)
    return PeriodicElasticity(box, G, B)


def _boundary_nodes_x(geo: GeometryMesh, name: str) -> np.ndarray:
    """Coordinates of the local mesh nodes on the boundary ``name`` (may be empty)."""
    from dolfinx import mesh as dmesh

    msh = geo.mesh
    fdim = msh.topology.dim - 1
    facets = geo.facet_tags.find(geo.boundaries[name])
    verts = dmesh.compute_incident_entities(msh.topology, facets, fdim, 0)
    msh.topology.create_connectivity(0, msh.topology.dim)
    nodes = dmesh.entities_to_geometry(msh, 0, verts).ravel()
    return msh.geometry.x[nodes, :2]


def _is_horizontal(geo: GeometryMesh, name: str, key: str) -> bool:
    x = np.vstack(geo.comm.allgather(_boundary_nodes_x(geo, name)))
    tol = 1e-8 * max(geo.width, geo.height)
    if len(x) and np.ptp(x[:, 1]) < tol:
        return True
    if len(x) and np.ptp(x[:, 0]) < tol:
        return False
    raise FemplastInputError(key, "roller", "a straight side along x or y for a roller")


class BoundedElasticity(PeriodicElasticity):
    """Elasticity of a specimen with boundary conditions, factorized once.

    The methods of :class:`~femplast.fe.elasticity.PeriodicElasticity` keep their meaning with
    the macroscopic strain ``E`` replaced by the loading parameter ``gamma_ext`` (a number;
    ``external(gamma, alpha)`` gives the argument for either class).

    Args:
        geo: the specimen.
        conditions: from :func:`parse_conditions` (or the raw case-file dict).
        G, B: moduli (numbers or one value per cell, canonical order).
    """

    def __init__(self, geo: GeometryMesh, conditions, G=13.2, B=59.0,
                 petsc_options: dict | None = None,
                 petsc_prefix: str = "femplast_bounded_"):
        if isinstance(conditions, dict) or conditions is None:
            conditions = parse_conditions(geo, conditions)
        self.conditions = list(conditions)
        super().__init__(geo, G, B, petsc_options, petsc_prefix)
        self._check_rigid()
        self.drive_gradient = self._affine_drive()
        self.nominal = self.nominal_factor()  # collective: once, here

    # ------------------------------------------------------------------ construction
    def _reduce_periodic(self, K, Bs, Dm) -> None:
        """Reduced operators on the free dofs (periodic slaves folded onto their masters,
        constrained dofs dropped); keeps ``K`` and ``Bs`` for the lifting and reactions."""
        self.P, self.n_reduced, self.g, self._owner = constraint_prolongation(
            self.V, self.box, self.conditions)
        self.K, self.Bs = K, Bs
        self.Kp = K.PtAP(self.P)
        self.PtBs = self.P.transposeMatMult(Bs)
        self.DmP = Dm.matMult(self.P)
        self.Dm = Dm
        self.Kg = K.createVecLeft()
        K.mult(self.g, self.Kg)  # lifting: the force of the prescribed unit drive
        self.PtKg = self.P.createVecRight()
        self.P.multTranspose(self.Kg, self.PtKg)
        self._u = K.createVecRight()
        self._f = K.createVecLeft()

    def _stiffness_changed(self, K) -> None:
        """New moduli (evolving moduli, :meth:`update_moduli`): the full stiffness ``K`` of the
        reactions and the lifting force ``K g`` of the drive follow it (stale, the solution
        at gamma_ext != 0 would not be in equilibrium)."""
        self.K.destroy()
        self.K = K
        K.mult(self.g, self.Kg)
        self.P.multTranspose(self.Kg, self.PtKg)

    def _check_rigid(self) -> None:
        """Refuse conditions that leave a rigid-body motion free: MUMPS factorizes such a
        singular operator without complaint (the stresses even come out right, the
        displacement does not). A mode ``(t_x, t_y, omega)`` survives when it vanishes on every
        constrained dof; periodic sides already exclude the rotation."""
        x = self.V.tabulate_dof_coordinates()[: len(self._owner), :2]
        gram = np.zeros((3, 3))
        for comp in (0, 1):
            on = self._owner[:, comp] >= 0
            m = np.zeros((int(on.sum()), 3))
            m[:, comp] = 1.0
            m[:, 2] = -x[on, 1] if comp == 0 else x[on, 0]  # omega e_z x r
            gram += m.T @ m
        gram = self.comm.allreduce(gram)
        if self.box.periodic != "none":
            gram[2, 2] += 1.0
        scale = max(self.box.width, self.box.height)
        gram[:, 2] /= scale
        gram[2, :] /= scale
        if np.linalg.eigvalsh(gram)[0] < 1e-10 * max(np.trace(gram), 1.0):
            names = {c.name: c.kind for c in self.conditions}
            raise FemplastInputError("geometry.boundaries", names, "conditions that fix the "
                                     "rigid-body motions (translations and rotation)")

    def _affine_drive(self) -> np.ndarray | None:
        """``Gd`` (2x2) when the prescribed values per unit gamma_ext are those of an affine
        field ``g(x) = Gd x + c`` on every constrained dof (grips, walls), else None. Then the
        drive force is ``F = int sigma : Gd dA = A <sigma> : Gd`` (f vanishes on the free
        dofs): the force-displacement curve follows from the mean stress of every step."""
        x = self.V.tabulate_dof_coordinates()[: len(self._owner), :2]
        g = self.g.array.reshape(-1, 2)
        rows, rhs = [], []
        for comp in (0, 1):
            on = self._owner[:, comp] >= 0
            a = np.zeros((int(on.sum()), 6))
            a[:, 3 * comp:3 * comp + 2] = x[on]
            a[:, 3 * comp + 2] = 1.0
            rows.append(a)
            rhs.append(g[on, comp])
        A = self.comm.allreduce(sum(a.T @ a for a in rows))
        b = self.comm.allreduce(sum(a.T @ r for a, r in zip(rows, rhs, strict=True)))
        coef = np.linalg.lstsq(A, b, rcond=None)[0]
        misfit = self.comm.allreduce(sum(float(np.sum((a @ coef - r) ** 2))
                                         for a, r in zip(rows, rhs, strict=True)))
        scale = self.comm.allreduce(sum(float(np.sum(r ** 2)) for r in rhs))
        if misfit > 1e-20 * max(scale, 1e-300):
            return None
        return np.array([coef[0:2], coef[3:5]])

    def drive_stress(self, mean_xyz) -> np.ndarray | None:
        """Mean stress conjugate to gamma_ext, ``<sigma> : Gd`` (force per unit area of the
        specimen: ``F = A drive_stress``), for mean stresses ``[xx, yy, xy]`` (..., 3); None
        when the drive is not affine on the constrained dofs."""
        if self.drive_gradient is None:
            return None
        Gd = self.drive_gradient
        s = np.asarray(mean_xyz, float)
        return Gd[0, 0] * s[..., 0] + Gd[1, 1] * s[..., 1] + (Gd[0, 1] + Gd[1, 0]) * s[..., 2]

    def controlled_stress(self, mean_xyz) -> np.ndarray | None:
        """The specimen's external stress, one quantity for records, stage targets and sweeps:
        the nominal stress (:meth:`nominal_factor`) when one boundary is driven, else the
        drive stress ``F_drive / A``; None when the drive is not affine."""
        d = self.drive_stress(mean_xyz)
        return d if d is None or self.nominal is None else self.nominal * d

    def nominal_factor(self) -> float | None:
        """``F_nominal / drive_stress``: the nominal stress is the force on the driven boundary
        along its prescribed displacement per unit length of that boundary, ``F . u / (|u| L)``
        with ``F . u = g . f / H`` (``u = gamma_ext H (ux, uy)``) and ``g . f = A drive_stress``,
        so the factor is ``A / (H |u| L)`` (1 for a strip pulled by its top side: the nominal
        stress is then ``<sigma_yy>``; ``A / (W H)`` for a notched strip). Positive when the
        boundary resists the drive (tension and compression alike). None unless exactly one
        boundary has a nonzero prescribed displacement (collective)."""
        import ufl
        from dolfinx import fem

        driven = [c for c in self.conditions if c.kind == "displacement"
                  and any(v for v in (c.ux, c.uy) if v is not None)]
        if len(driven) != 1 or self.drive_gradient is None:
            return None
        c = driven[0]
        tag = self.box.boundaries[c.name]
        ds = ufl.Measure("ds", domain=self.box.mesh, subdomain_data=self.box.facet_tags)
        one = fem.Constant(self.box.mesh, 1.0)
        length = self.comm.allreduce(fem.assemble_scalar(fem.form(one * ds(tag))))
        u = float(np.hypot(c.ux or 0.0, c.uy or 0.0))
        return self.box_area / (self.box.height * u * length)

    # ------------------------------------------------------------------ drive
    @staticmethod
    def external(gamma: float, alpha: float = 0.0) -> float:
        """The solve argument at loading parameter ``gamma`` along ``alpha`` (radians): the
        drive forward (0) or reversed (pi/2), :func:`drive_sign`."""
        return drive_sign(alpha) * float(gamma)

    def _drive(self, E) -> float:
        E = np.asarray(E, float)
        if E.ndim == 0:
            return float(E)
        if np.any(E):
            raise ValueError("a bounded specimen is driven by gamma_ext (a number), not by a "
                             "macroscopic strain")
        return 0.0

    def _solve(self, eps_pl, E) -> None:
        """Solve for ``u`` (in ``self._u``) at eigenstrain ``eps_pl`` and drive ``E``."""
        t = self._drive(E)
        self._scatter_q(self.C(np.asarray(eps_pl, float)))
        self.PtBs.mult(self._q, self._b)
        if t:
            self._b.axpy(-t, self.PtKg)
        self.ksp.solve(self._b, self._x)
        self.P.mult(self._x, self._u)
        if t:
            self._u.axpy(t, self.g)
        self.num_solves += 1

    def fluctuation_strain(self, eps_pl, E=0.0) -> np.ndarray:
        """Cell-averaged strain of the displacement (the whole strain: no affine part)."""
        self._solve(eps_pl, E)
        self.Dm.mult(self._u, self._e)
        return self._e.array.reshape(-1, 3)[self._qblk].copy()

    def strain(self, eps_pl, E=0.0) -> np.ndarray:
        return self.fluctuation_strain(eps_pl, E)

    def displacement(self, eps_pl, E=0.0):
        """The displacement as a dolfinx Function (for output)."""
        from dolfinx import fem

        self._solve(eps_pl, E)
        u = fem.Function(self.V, name="u")
        self._u.copy(u.x.petsc_vec)
        u.x.scatter_forward()
        return u

    def residual(self, eps_pl, E=0.0) -> float:
        """Relative equilibrium residual ``|P^T (K u - f)| / |P^T f|`` on the free dofs, with
        the unfactorized operator (checks assembly, constraints and factorization)."""
        self._nodal_forces(eps_pl, E)
        r = self.P.createVecRight()
        self.P.multTranspose(self._f, r)
        ref = self._b.norm()
        return r.norm() / max(ref, 1e-300)

    def _nodal_forces(self, eps_pl, E) -> None:
        """Internal nodal forces ``K u - Bs C:eps_pl`` of the solution (in ``self._f``); the
        rhs ``P^T (Bs C:eps_pl - t K g)`` stays in ``self._b`` as the residual's scale."""
        self._solve(eps_pl, E)
        self.K.mult(self._u, self._f)
        fq = self._f.duplicate()
        self.Bs.mult(self._q, fq)
        self._f.axpy(-1.0, fq)
        fq.destroy()

    # ------------------------------------------------------------------ macroscopic response
    def reactions(self, eps_pl, E=0.0) -> dict[str, np.ndarray]:
        """Force (x, y) exerted on the body through each constrained boundary (collective).

        A dof constrained by several boundaries (a corner) counts for the first condition.
        """
        self._nodal_forces(eps_pl, E)
        f = self._f.array.reshape(-1, 2)
        out = {}
        for i, c in enumerate(self.conditions):
            mask = self._owner == i
            out[c.name] = self.comm.allreduce(
                np.array([f[:, 0][mask[:, 0]].sum(), f[:, 1][mask[:, 1]].sum()]))
        return out

    def drive_force(self, eps_pl, E=0.0) -> float:
        """Generalized force conjugate to gamma_ext: ``g . f`` (boundary work per unit
        gamma_ext; for a top grip moved by ``H gamma_ext (ux, uy)`` it is ``H (ux, uy) . F``)."""
        self._nodal_forces(eps_pl, E)
        return float(self._f.dot(self.g))

    def energy(self, eps_pl, E=0.0) -> float:
        """Stored elastic energy ``1/2 int (eps - eps_pl) : C : (eps - eps_pl)`` of the FE
        solution (exact for quads too: from the nodal forces, not from cell averages)."""
        eps_pl = np.asarray(eps_pl, float)
        self._nodal_forces(eps_pl, E)
        fq = self._f.duplicate()
        self.Bs.mult(self._q, fq)  # Bs C eps_pl (kept in _q by _solve)
        # 1/2 u.K.u - u.Bs C eps_pl + 1/2 sum_c A_c eps_pl:C:eps_pl, with K u = f + Bs C eps_pl
        uf = self._u.dot(self._f)
        uq = self._u.dot(fq)
        fq.destroy()
        loc = 0.5 * float(np.sum(self.area * np.sum(VOIGT_METRIC * eps_pl * self.C(eps_pl),
                                                    axis=1)))
        return 0.5 * (uf + uq) - uq + self.comm.allreduce(loc)

    def destroy(self):
        super().destroy()
        for obj in (self.K, self.Bs, self.Dm, self.g, self.Kg, self.PtKg, self._u, self._f):
            obj.destroy()


def _dof_status(V, geo: GeometryMesh, conditions: list[Condition]):
    """Per owned dof (nloc, 2): index of the constraining condition (-1: none) and the
    prescribed value per unit gamma_ext (already times the height)."""
    from dolfinx import fem, la

    msh = geo.mesh
    fdim = msh.topology.dim - 1
    nloc = V.dofmap.index_map.size_local
    owner = np.full((nloc, 2), -1, np.int64)
    value = np.zeros((nloc, 2))
    # first condition wins: mark in reverse order so earlier ones overwrite
    for i in reversed(range(len(conditions))):
        c = conditions[i]
        facets = geo.facet_tags.find(geo.boundaries[c.name])
        nodes = fem.locate_dofs_topological(V, fdim, facets)
        marker = fem.Function(V)
        marker.x.array.reshape(-1, 2)[nodes] = 1.0
        marker.x.scatter_reverse(la.InsertMode.add)  # nodes of facets local to other ranks
        hit = marker.x.array.reshape(-1, 2)[:nloc] > 0
        for comp, v in enumerate((c.ux, c.uy)):
            if v is not None:
                owner[hit[:, comp], comp] = i
                value[hit[:, comp], comp] = v * geo.height
    return owner, value


def constraint_prolongation(V, geo: GeometryMesh, conditions: list[Condition]):
    """Prolongation ``P`` (all dofs <- reduced dofs) and lifting ``g`` of a specimen.

    Constrained dofs have empty rows of ``P`` and their prescribed value per unit gamma_ext in
    ``g``; with ``periodic: x`` (or ``y``) the right (top) side's dofs are slaved to their twins
    on the left (bottom) side, found by coordinates among the masters gathered from all ranks
    (the pattern of :func:`femplast.fe.elasticity.periodic_prolongation`); a slave whose master
    is constrained is constrained alike.

    Returns:
        (P, n_reduced_global, g, owner) with ``owner`` (nloc, 2) the constraining condition.
    """
    from petsc4py import PETSc
    from scipy.spatial import cKDTree

    comm = V.mesh.comm
    imap = V.dofmap.index_map
    bs = V.dofmap.index_map_bs
    nloc = imap.size_local
    x = V.tabulate_dof_coordinates()[:nloc, :2]
    owner, value = _dof_status(V, geo, conditions)
    tol = 1e-8 * max(geo.width, geo.height)
    axis = {"x": 0, "y": 1}.get(geo.periodic)
    period = (geo.width, geo.height)[axis] if axis is not None else 0.0
    slave = (np.abs(x[:, axis] - period) < tol if axis is not None
             else np.zeros(nloc, bool))
    free = (owner < 0) & ~slave[:, None]
    m_loc = int(free.sum())
    offset = comm.exscan(m_loc) or 0
    red = np.full((nloc, bs), -1, np.int64)
    red[free] = offset + np.arange(m_loc)
    if axis is not None:
        on_edge = np.abs(x[:, axis]) < tol
        pts = np.vstack(comm.allgather(x[on_edge]))
        ids = np.vstack(comm.allgather(red[on_edge]))
        own = np.vstack(comm.allgather(owner[on_edge]))
        val = np.vstack(comm.allgather(value[on_edge]))
        s = np.flatnonzero(slave)
        if len(s):
            img = x[s].copy()
            img[:, axis] -= period
            d, j = cKDTree(pts).query(img)
            if np.any(d > 1e-6 * max(geo.width, geo.height)):
                raise FemplastInputError("geometry.periodic", geo.periodic, "a mesh whose "
                                         "periodic sides have matching nodes")
            mine = owner[s] >= 0  # a constrained slave keeps its own condition
            red[s] = np.where(mine, -1, ids[j])
            owner[s] = np.where(mine, owner[s], own[j])
            value[s] = np.where(mine, value[s], val[j])
    rows = red.ravel()
    has = rows >= 0
    cols = rows[has].astype(PETSc.IntType)
    indptr = np.concatenate([[0], np.cumsum(has)]).astype(PETSc.IntType)
    m_glob = comm.allreduce(m_loc)
    P = PETSc.Mat().createAIJ(size=((bs * nloc, bs * imap.size_global), (m_loc, m_glob)),
                              csr=(indptr, cols, np.ones(len(cols))), comm=comm)
    P.assemble()
    g = P.createVecLeft()
    g.array[:] = np.where(owner >= 0, value, 0.0).ravel()
    return P, m_glob, g, owner


__all__ = ["BoundedElasticity", "Condition", "check_conditions", "constraint_prolongation",
           "drive_sign", "elasticity_of", "parse_conditions"]
