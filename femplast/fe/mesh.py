"""Square bi-periodic boxes cut into cells: structured quadrilaterals and triangles, gmsh meshes.

Every cell of the finite-element mesh is one mesoscale element of the elasto-plastic model
(tensorial paper, sec. 3). Cells carry a *canonical* global index that does not depend on the
number of MPI ranks: for structured meshes ``iy * n + ix`` (row-major, x fastest; triangles of a
square are ``2 * (iy * n + ix) + {0, 1}``), for gmsh meshes the element order of the gmsh model.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from mpi4py import MPI

from femplast.errors import FemplastInputError

L_DEFAULT = 98.8045
"""Side of the atomistic box of the tensorial paper (sec. 2.1), in LJ length units."""

MESH_KINDS = ("quad", "tri", "gmsh")


@dataclass
class BoxMesh:
    """A periodic square box of side ``L`` meshed into cells.

    Attributes:
        mesh: the dolfinx mesh (owned cells first on each rank).
        L: box side.
        kind: ``"quad"``, ``"tri"`` or ``"gmsh"``.
        n: cells per side for structured meshes, ``None`` for gmsh meshes.
        canonical: canonical global index of each owned local cell.
        num_cells: global number of cells.
    """

    mesh: object
    L: float
    kind: str
    n: int | None
    canonical: np.ndarray
    num_cells: int

    @property
    def comm(self) -> MPI.Comm:
        return self.mesh.comm

    @property
    def num_owned(self) -> int:
        return self.mesh.topology.index_map(self.mesh.topology.dim).size_local

    @property
    def structured(self) -> bool:
        return self.kind in ("quad", "tri")

    @property
    def cell_size(self) -> float:
        """Grid spacing l = L / n (for gmsh meshes: sqrt of the mean cell area)."""
        return self.L / self.n if self.n else self.L / np.sqrt(self.num_cells)

    @property
    def mean_cell_area(self) -> float:
        """L^2 / cells: the area of one mesoscale element (half a square for triangles)."""
        return self.L * self.L / self.num_cells

    def midpoints(self) -> np.ndarray:
        """Cell barycentres of the owned cells, shape (num_owned, 2)."""
        x = self.mesh.geometry.x
        dofs = self.mesh.geometry.dofmaps[0][: self.num_owned]
        return x[dofs].mean(axis=1)[:, :2]


def _check_box(n, L):
    if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 1:
        raise FemplastInputError("mesh.n", n, "an integer >= 1 (cells per box side)")
    if not np.isfinite(L) or L <= 0:
        raise FemplastInputError("mesh.L", L, "a finite box side > 0")


def structured_box(n: int, L: float = L_DEFAULT, kind: str = "quad",
                   comm: MPI.Comm = MPI.COMM_WORLD) -> BoxMesh:
    """Create an n x n structured periodic box of quadrilaterals or triangles.

    Triangles use the "right" diagonal, two triangles per square of side l = L / n.
    """
    from dolfinx import mesh

    _check_box(n, L)
    if kind not in ("quad", "tri"):
        raise FemplastInputError("mesh.kind", kind, f"one of {MESH_KINDS}")
    corners = [np.array([0.0, 0.0]), np.array([L, L])]
    if kind == "quad":
        msh = mesh.create_rectangle(comm, corners, (n, n), cell_type=mesh.CellType.quadrilateral)
    else:
        msh = mesh.create_rectangle(comm, corners, (n, n), cell_type=mesh.CellType.triangle,
                                    diagonal=mesh.DiagonalType.right)
    box = BoxMesh(msh, float(L), kind, int(n), np.empty(0, np.int64),
                  n * n * (1 if kind == "quad" else 2))
    mid = box.midpoints() / (L / n)
    ix = np.floor(mid[:, 0]).astype(np.int64)
    iy = np.floor(mid[:, 1]).astype(np.int64)
    sq = iy * n + ix
    if kind == "quad":
        box.canonical = sq
    else:
        # the "right" diagonal runs from (0,0) to (1,1): the lower-right triangle has
        # barycentre x-fraction 2/3, the upper-left 1/3
        upper = (mid[:, 0] - ix) < (mid[:, 1] - iy)
        box.canonical = 2 * sq + upper.astype(np.int64)
    return box


def _gmsh_periodic_square(L: float, size: float, seed_points: bool = True):
    """Build a periodic unstructured square in the current gmsh model (2D, triangles)."""
    import gmsh

    gmsh.model.add("femplast_box")
    occ = gmsh.model.occ
    occ.addRectangle(0, 0, 0, L, L)
    occ.synchronize()
    # curves of the rectangle: bottom, right, top, left (OCC ordering), found by position
    # (gmsh pads bounding boxes by an absolute 1e-7: classify by the bbox centre, loosely)
    curves = {}
    tol = 1e-3 * L
    for dim, tag in gmsh.model.getEntities(1):
        x0, y0, _, x1, y1, _ = gmsh.model.getBoundingBox(dim, tag)
        xc, yc = 0.5 * (x0 + x1), 0.5 * (y0 + y1)
        if abs(yc) < tol:
            curves["bottom"] = tag
        elif abs(yc - L) < tol:
            curves["top"] = tag
        elif abs(xc) < tol:
            curves["left"] = tag
        else:
            curves["right"] = tag
    tx = [1, 0, 0, L, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
    ty = [1, 0, 0, 0, 0, 1, 0, L, 0, 0, 1, 0, 0, 0, 0, 1]
    gmsh.model.mesh.setPeriodic(1, [curves["right"]], [curves["left"]], tx)
    gmsh.model.mesh.setPeriodic(1, [curves["top"]], [curves["bottom"]], ty)
    gmsh.model.addPhysicalGroup(2, [s[1] for s in gmsh.model.getEntities(2)], 1)
    gmsh.option.setNumber("Mesh.MeshSizeMin", size)
    gmsh.option.setNumber("Mesh.MeshSizeMax", size)
    gmsh.option.setNumber("Mesh.Algorithm", 6)
    gmsh.model.mesh.generate(2)


@contextmanager
def gmsh_session(comm: MPI.Comm = MPI.COMM_SELF):
    """Run the body inside a gmsh session (``with gmsh_session(comm) as gmsh:``).

    Initializes gmsh unless the caller already did (``interruptible=False``: otherwise gmsh
    resets SIGINT to the default handler, over the run's checkpointing one), silences its
    terminal output and yields the ``gmsh`` module. On exit, also when the body raises: removes
    the current model on rank 0 of ``comm`` (the rank that builds it; dolfinx reads it from
    there) and finalizes gmsh if this session initialized it, so that a caller's own gmsh
    session stays open, without the body's model.
    """
    import gmsh

    init = not gmsh.isInitialized()
    if init:
        gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        yield gmsh
    finally:
        if comm.rank == 0:
            gmsh.model.remove()
        if init:
            gmsh.finalize()


def write_gmsh_box(path: str | Path, L: float = L_DEFAULT, size: float = 6.6,
                   seed: int = 0) -> Path:
    """Write a periodic unstructured triangular mesh of the box to a ``.msh`` file."""
    if not np.isfinite(size) or size <= 0 or size > L:
        raise FemplastInputError("mesh.size", size, f"a target cell size in (0, L={L}]")
    path = Path(path)
    with gmsh_session() as gmsh:
        gmsh.option.setNumber("Mesh.RandomSeed", float(seed))
        gmsh.model.remove() if gmsh.model.list() else None
        _gmsh_periodic_square(L, size)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        tmp = path.with_suffix(".tmp.msh")
        gmsh.write(str(tmp))
        tmp.replace(path)
    return path


def gmsh_box(path: str | Path | None = None, L: float = L_DEFAULT, size: float = 6.6,
             comm: MPI.Comm = MPI.COMM_WORLD) -> BoxMesh:
    """Read (``path``) or generate (``size``) a periodic unstructured gmsh mesh of the box.

    Raises:
        FemplastInputError: missing file, or a mesh whose boundary nodes do not come in
            periodic pairs (the mesh must be made with gmsh ``setPeriodic``).
    """
    from dolfinx.io import gmsh as dgmsh

    if path is not None and not Path(path).is_file():
        raise FemplastInputError("mesh.file", str(path), "an existing gmsh .msh file")
    if path is None and (not np.isfinite(size) or size <= 0 or size > L):
        # checked on every rank (raising on rank 0 only would leave the others in model_to_mesh)
        raise FemplastInputError("mesh.size", size, f"a cell size in (0, L={L}]")
    with gmsh_session(comm) as gmsh:
        if comm.rank == 0:
            if path is not None:
                gmsh.open(str(path))
            else:
                _gmsh_periodic_square(L, size)
        data = dgmsh.model_to_mesh(gmsh.model, comm, rank=0, gdim=2)
    msh = data.mesh
    x = msh.geometry.x
    L_read = comm.allreduce(float(x[:, 0].max()), op=MPI.MAX)
    if path is not None:
        L = L_read
    tdim = msh.topology.dim
    nc = comm.allreduce(msh.topology.index_map(tdim).size_local, op=MPI.SUM)
    box = BoxMesh(msh, float(L), "gmsh", None,
                  np.asarray(msh.topology.original_cell_index[
                      : msh.topology.index_map(tdim).size_local], dtype=np.int64), nc)
    check_periodic_nodes(box, key="mesh.file" if path is not None else "mesh.size",
                         value=str(path) if path is not None else size)
    return box


def check_periodic_nodes(box: BoxMesh, key: str = "mesh", value=None) -> None:
    """Check that every node on the right/top side has a twin on the left/bottom side."""
    from scipy.spatial import cKDTree

    comm, L = box.comm, box.L
    x = box.mesh.geometry.x[:, :2]
    tol = 1e-8 * L
    left = comm.allgather(x[np.abs(x[:, 0]) < tol])
    bottom = comm.allgather(x[np.abs(x[:, 1]) < tol])
    left, bottom = np.vstack(left), np.vstack(bottom)
    bad = 0
    for side, twins, shift in ((0, left, (L, 0.0)), (1, bottom, (0.0, L))):
        pts = x[np.abs(x[:, side] - L) < tol] - np.array(shift)
        if len(pts) and len(twins):
            d, _ = cKDTree(twins).query(pts)
            bad += int(np.sum(d > 1e-6 * L))
        elif len(pts):
            bad += len(pts)
    bad = comm.allreduce(bad)
    nleft = comm.allreduce(len(left) if comm.rank == 0 else 0)
    if bad or nleft == 0:
        raise FemplastInputError(
            key, value, f"a periodic mesh of the square [0, L]^2: {bad} boundary nodes have no "
            "periodic twin (build the mesh with gmsh setPeriodic)")


def box_from_options(kind: str = "quad", n: int | None = None, L: float = L_DEFAULT,
                     file: str | None = None, size: float | None = None,
                     comm: MPI.Comm = MPI.COMM_WORLD) -> BoxMesh:
    """Dispatch on ``kind``; the case-file keys ``mesh.*`` map one to one on the arguments."""
    if kind in ("quad", "tri"):
        return structured_box(n, L, kind, comm)
    if kind == "gmsh":
        if file is None and size is None:
            size = L / n if n else 6.6
        return gmsh_box(file, L, size if size is not None else 6.6, comm)
    raise FemplastInputError("mesh.kind", kind, f"one of {MESH_KINDS}")
