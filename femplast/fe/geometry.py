"""Real 2D specimens: parametric shapes and gmsh files with tagged boundaries (issue 19).

Every code of the field (the tensorial paper's, GooseEPM, the scalar papers') simulates a
bi-periodic box; here the same cells live in a specimen with free surfaces, notches, holes and
rigid grips. A :class:`GeometryMesh` is a :class:`~femplast.fe.mesh.BoxMesh` (same cell
ordering: the canonical index of a cell is its gmsh element order) plus named boundary tags and
the periodicity of the specimen.

Built-in shapes (all with the lower-left corner of the bounding box at the origin, width ``W``
along x, height ``H`` along y), boundary names in brackets:

* ``strip``: a ``W x H`` rectangle [bottom, top, left, right];
* ``notched_strip``: the strip with a notch cut into its left side at mid-height [+ notch]:
  ``V`` (flanks at ``notch_angle`` to the axis, tip rounded with ``notch_radius``) or ``U`` (a
  slot of width ``2 notch_radius`` with a semicircular end), ``notch_depth`` from the edge;
* ``hole``: the rectangle with a centred circular hole of radius ``hole_radius`` [+ hole];
* ``pillar``: a ``W x H`` column (H > W) [bottom, top, left, right] (the same rectangle as the
  strip; separate name so that cases read as what they model).

A ``.geo`` or ``.msh`` file brings its own physical curve groups as boundary names.

``periodic``: ``none``, ``x`` (left/right sides glued with gmsh ``setPeriodic``: a strip
sheared between rigid walls) or ``y``. Both directions at once is the periodic box of
:mod:`femplast.fe.mesh` (``mesh.kind: gmsh``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from mpi4py import MPI

from femplast.errors import FemplastInputError
from femplast.fe.mesh import BoxMesh, gmsh_session

SHAPES = ("strip", "notched_strip", "hole", "pillar", "file")
NOTCH_KINDS = ("V", "U")
PERIODIC = ("none", "x", "y")
ELEMENTS = ("tri", "quad")
SIDES = ("bottom", "top", "left", "right")


@dataclass
class ShapeSpec:
    """Parameters of a specimen (the case keys ``geometry.*`` map one to one on them)."""

    shape: str = "strip"
    width: float = 40.0
    height: float = 20.0
    size: float = 1.0  # target cell size
    size_min: float | None = None  # cell size at the notch root / hole edge (None: size)
    element: str = "tri"
    periodic: str = "none"
    notch_kind: str = "U"
    notch_depth: float = 4.0
    notch_radius: float = 1.0
    notch_angle: float = 30.0  # degrees between a V flank and the x axis
    hole_radius: float = 2.0
    file: str | None = None
    seed: int = 0  # gmsh Mesh.RandomSeed

    def check(self) -> None:
        """Raise FemplastInputError naming the first bad key (``geometry.<key>``)."""
        def bad(k, v, allowed):
            raise FemplastInputError(f"geometry.{k}", v, allowed)

        if self.shape not in SHAPES:
            bad("shape", self.shape, f"one of {SHAPES}")
        if self.element not in ELEMENTS:
            bad("element", self.element, f"one of {ELEMENTS}")
        if self.periodic not in PERIODIC:
            bad("periodic", self.periodic, f"one of {PERIODIC} (both: mesh.kind gmsh)")
        if self.shape == "file":
            if self.file is None or not Path(self.file).is_file():
                bad("file", self.file, "an existing gmsh .geo or .msh file")
            return
        for k in ("width", "height", "size"):
            v = getattr(self, k)
            if not (np.isfinite(v) and v > 0):
                bad(k, v, "a finite length > 0")
        if self.size > min(self.width, self.height):
            bad("size", self.size, f"<= min(width, height) = {min(self.width, self.height)}")
        if self.size_min is not None and not (0 < self.size_min <= self.size):
            bad("size_min", self.size_min, f"in (0, size = {self.size}]")
        if self.shape == "notched_strip":
            if self.notch_kind not in NOTCH_KINDS:
                bad("notch_kind", self.notch_kind, f"one of {NOTCH_KINDS}")
            if not 0 < self.notch_depth < self.width:
                bad("notch_depth", self.notch_depth, f"in (0, width = {self.width})")
            if not 0 < self.notch_radius <= self.notch_depth:
                bad("notch_radius", self.notch_radius,
                    f"in (0, notch_depth = {self.notch_depth}]")
            if not 5 <= self.notch_angle <= 80:
                bad("notch_angle", self.notch_angle, "in [5, 80] degrees")
            if 2 * self._notch_half_opening() >= self.height:
                bad("notch_depth", self.notch_depth, "a notch whose mouth fits in the height")
            if self.periodic == "x":
                bad("periodic", self.periodic, "none or y with a notch on the left side")
        if self.shape == "hole":
            a = self.hole_radius
            if not 0 < 2 * a < min(self.width, self.height):
                bad("hole_radius", a, "> 0 with the hole inside the plate")

    def _notch_half_opening(self) -> float:
        """Half-width of the notch mouth on the left edge."""
        r, d = self.notch_radius, self.notch_depth
        if self.notch_kind == "U":
            return r
        phi = math.radians(self.notch_angle)
        x_apex = d - r + r / math.sin(phi)
        return x_apex * math.tan(phi)


@dataclass
class GeometryMesh(BoxMesh):
    """A specimen meshed into cells, with named boundary tags (see the module docstring).

    Attributes (beyond :class:`~femplast.fe.mesh.BoxMesh`; ``L`` is the height):
        facet_tags: dolfinx MeshTags of the boundary facets (physical curve groups).
        boundaries: boundary name -> tag value.
        width, height: bounding box of the specimen.
        periodic: ``none``, ``x`` or ``y``.
        area: area of the specimen.
    """

    facet_tags: object = None
    boundaries: dict = field(default_factory=dict)
    width: float = 0.0
    height: float = 0.0
    periodic: str = "none"
    area: float = 0.0
    conditions: dict = field(default_factory=dict)  # geometry.boundaries of the case

    bounded = True

    @property
    def cell_size(self) -> float:
        return math.sqrt(self.mean_cell_area)

    @property
    def mean_cell_area(self) -> float:
        return self.area / self.num_cells


# ----------------------------------------------------------------------------- gmsh models
def _classify_curves(W: float, H: float) -> dict[str, list[int]]:
    """Boundary curves of the current model by position: the four sides, else 'inner'."""
    import gmsh

    out: dict[str, list[int]] = {k: [] for k in SIDES + ("inner",)}
    tol = 1e-6 * max(W, H)
    for dim, tag in gmsh.model.getBoundary(gmsh.model.getEntities(2), oriented=False):
        x0, y0, _, x1, y1, _ = gmsh.model.getBoundingBox(dim, abs(tag))
        if abs(y1 - y0) < 1e-3 * H and abs(0.5 * (y0 + y1)) < tol * 1e3:
            out["bottom"].append(abs(tag))
        elif abs(y1 - y0) < 1e-3 * H and abs(0.5 * (y0 + y1) - H) < tol * 1e3:
            out["top"].append(abs(tag))
        elif abs(x1 - x0) < 1e-3 * W and abs(0.5 * (x0 + x1)) < tol * 1e3:
            out["left"].append(abs(tag))
        elif abs(x1 - x0) < 1e-3 * W and abs(0.5 * (x0 + x1) - W) < tol * 1e3:
            out["right"].append(abs(tag))
        else:
            out["inner"].append(abs(tag))
    return out


def _notch_tool(spec: ShapeSpec):
    """OCC surfaces of the notch (to cut from the strip): a polygon plus the tip disk."""
    import gmsh

    occ = gmsh.model.occ
    H, r, d = spec.height, spec.notch_radius, spec.notch_depth
    yc, delta = 0.5 * H, 0.1 * spec.width
    if spec.notch_kind == "U":
        box = occ.addRectangle(-delta, yc - r, 0, d - r + delta, 2 * r)
        return [(2, box), (2, occ.addDisk(d - r, yc, 0, r, r))]
    phi = math.radians(spec.notch_angle)
    xa = d - r + r / math.sin(phi)  # the apex of the sharp V
    t = r / math.tan(phi)  # apex -> tangent point, along a flank
    tx, ty = xa - t * math.cos(phi), t * math.sin(phi)
    hw = (xa + delta) * math.tan(phi)
    pts = [occ.addPoint(*p, 0) for p in ((-delta, yc + hw), (tx, yc + ty), (tx, yc - ty),
                                         (-delta, yc - hw))]
    lines = [occ.addLine(pts[i], pts[(i + 1) % 4]) for i in range(4)]
    poly = occ.addPlaneSurface([occ.addCurveLoop(lines)])
    return [(2, poly), (2, occ.addDisk(xa - r / math.sin(phi), yc, 0, r, r))]


def _build_shape(spec: ShapeSpec) -> dict[str, list[int]]:
    """The specimen in the current gmsh model (OCC); returns boundary name -> curve tags."""
    import gmsh

    occ = gmsh.model.occ
    W, H = spec.width, spec.height
    rect = occ.addRectangle(0, 0, 0, W, H)
    if spec.shape == "notched_strip":
        occ.cut([(2, rect)], _notch_tool(spec))
    elif spec.shape == "hole":
        occ.cut([(2, rect)], [(2, occ.addDisk(0.5 * W, 0.5 * H, 0, spec.hole_radius,
                                               spec.hole_radius))])
    occ.synchronize()
    curves = _classify_curves(W, H)
    inner = curves.pop("inner")
    if spec.shape == "notched_strip":
        curves["notch"] = inner
    elif spec.shape == "hole":
        curves["hole"] = inner
    elif inner:
        raise RuntimeError(f"unexpected boundary curves {inner} of a {spec.shape}")
    return curves


def _set_periodic(spec: ShapeSpec, curves: dict[str, list[int]]) -> None:
    import gmsh

    if spec.periodic == "none":
        return
    a, b, shift = (("right", "left", (spec.width, 0.0)) if spec.periodic == "x"
                   else ("top", "bottom", (0.0, spec.height)))
    if len(curves[a]) != 1 or len(curves[b]) != 1:
        raise FemplastInputError("geometry.periodic", spec.periodic,
                                 f"straight {a}/{b} sides (one curve each)")
    T = [1, 0, 0, shift[0], 0, 1, 0, shift[1], 0, 0, 1, 0, 0, 0, 0, 1]
    gmsh.model.mesh.setPeriodic(1, curves[a], curves[b], T)


def _size_fields(spec: ShapeSpec, curves: dict[str, list[int]]) -> None:
    """Uniform ``size``, refined to ``size_min`` near the notch / hole (gmsh Threshold field)."""
    import gmsh

    feature = curves.get("notch", []) + curves.get("hole", [])
    if spec.size_min is None or spec.size_min >= spec.size or not feature:
        gmsh.option.setNumber("Mesh.MeshSizeMin", spec.size)
        gmsh.option.setNumber("Mesh.MeshSizeMax", spec.size)
        return
    fm = gmsh.model.mesh.field
    dist = fm.add("Distance")
    fm.setNumbers(dist, "CurvesList", feature)
    fm.setNumber(dist, "Sampling", 200)
    thr = fm.add("Threshold")
    fm.setNumber(thr, "InField", dist)
    fm.setNumber(thr, "SizeMin", spec.size_min)
    fm.setNumber(thr, "SizeMax", spec.size)
    r = spec.notch_radius if "notch" in curves else spec.hole_radius
    fm.setNumber(thr, "DistMin", 0.5 * r)
    fm.setNumber(thr, "DistMax", 0.5 * r + 4 * spec.size)
    fm.setAsBackgroundMesh(thr)
    for k in ("MeshSizeFromPoints", "MeshSizeFromCurvature", "MeshSizeExtendFromBoundary"):
        gmsh.option.setNumber(f"Mesh.{k}", 0)
    gmsh.option.setNumber("Mesh.MeshSizeMax", spec.size)


def _mesh_model(spec: ShapeSpec) -> None:
    """Build, tag and mesh the parametric specimen in the current gmsh model (rank 0)."""
    import gmsh

    gmsh.model.add("femplast_specimen")
    curves = _build_shape(spec)
    _set_periodic(spec, curves)
    gmsh.model.addPhysicalGroup(2, [s[1] for s in gmsh.model.getEntities(2)], 1, "body")
    for i, (name, tags) in enumerate(curves.items()):
        if tags:
            gmsh.model.addPhysicalGroup(1, tags, i + 1, name)
    _size_fields(spec, curves)
    gmsh.option.setNumber("Mesh.RandomSeed", float(spec.seed))
    if spec.element == "quad":
        # Blossom full-quad recombination: every cell a quadrilateral (dolfinx needs one type)
        gmsh.option.setNumber("Mesh.Algorithm", 8)
        gmsh.option.setNumber("Mesh.RecombineAll", 1)
        gmsh.option.setNumber("Mesh.RecombinationAlgorithm", 3)
    else:
        gmsh.option.setNumber("Mesh.Algorithm", 6)
    gmsh.model.mesh.generate(2)


def _load_file(spec: ShapeSpec) -> None:
    """Open a .msh, or open and mesh a .geo (with ``size`` as the default cell size)."""
    import gmsh

    gmsh.open(str(spec.file))
    if Path(spec.file).suffix == ".geo":
        if spec.size:
            gmsh.option.setNumber("Mesh.MeshSizeMax", spec.size)
        if spec.element == "quad":
            gmsh.option.setNumber("Mesh.RecombineAll", 1)
            gmsh.option.setNumber("Mesh.RecombinationAlgorithm", 3)
        gmsh.model.mesh.generate(2)
    if not gmsh.model.getPhysicalGroups(1):
        raise FemplastInputError("geometry.file", str(spec.file),
                                 "a gmsh model with physical curve groups (the boundaries)")


def _group_names() -> dict[str, int]:
    import gmsh

    out = {}
    for dim, tag in gmsh.model.getPhysicalGroups(1):
        name = gmsh.model.getPhysicalName(dim, tag) or f"tag{tag}"
        out[name] = int(tag)
    return out


def spec_from_case(case) -> ShapeSpec:
    """The ShapeSpec of a case's ``geometry`` section (file paths relative to the case)."""
    from femplast.config.case import resolve_path

    g = case.geometry
    kw = {k: getattr(g, k) for k in ShapeSpec.__dataclass_fields__ if hasattr(g, k)}
    if g.file is not None:
        kw["file"] = str(resolve_path(case, g.file))
    return ShapeSpec(**kw)


def boundary_names(spec: ShapeSpec) -> tuple[str, ...] | None:
    """Boundary names of a built-in shape (None for a file: known once it is read)."""
    extra = {"notched_strip": ("notch",), "hole": ("hole",)}.get(spec.shape, ())
    return None if spec.shape == "file" else SIDES + extra


def build_geometry(spec: ShapeSpec, comm: MPI.Comm = MPI.COMM_WORLD) -> GeometryMesh:
    """Mesh a specimen (parametric shape or gmsh file) and read it into dolfinx.

    Collective: gmsh runs on rank 0, dolfinx distributes the mesh over ``comm``.

    Raises:
        FemplastInputError: a bad parameter (``geometry.<key>``) or file.
    """
    from dolfinx.io import gmsh as dgmsh

    spec.check()
    names = None
    with gmsh_session(comm) as gmsh:
        if comm.rank == 0:
            _load_file(spec) if spec.shape == "file" else _mesh_model(spec)
            names = _group_names()
        names = comm.bcast(names, root=0)
        data = dgmsh.model_to_mesh(gmsh.model, comm, rank=0, gdim=2)
    return _wrap(data, names, spec, comm)


def _wrap(data, names: dict[str, int], spec: ShapeSpec, comm: MPI.Comm) -> GeometryMesh:
    msh = data.mesh
    tdim = msh.topology.dim
    nloc = msh.topology.index_map(tdim).size_local
    nc = comm.allreduce(nloc, op=MPI.SUM)
    x = msh.geometry.x[:, :2]
    lo = np.array([comm.allreduce(float(x[:, i].min()), op=MPI.MIN) for i in (0, 1)])
    hi = np.array([comm.allreduce(float(x[:, i].max()), op=MPI.MAX) for i in (0, 1)])
    W, H = hi - lo
    geo = GeometryMesh(msh, float(H), "geometry", None,
                       np.asarray(msh.topology.original_cell_index[:nloc], dtype=np.int64), nc,
                       facet_tags=data.facet_tags, boundaries=names, width=float(W),
                       height=float(H), periodic=spec.periodic)
    geo.area = comm.allreduce(float(_cell_areas(geo).sum()))
    return geo


def _cell_areas(geo: GeometryMesh) -> np.ndarray:
    """Areas of the owned cells (shoelace formula on the geometry nodes, linear cells)."""
    msh = geo.mesh
    dofs = msh.geometry.dofmaps[0][: geo.num_owned]
    p = msh.geometry.x[dofs][:, :, :2]
    if p.shape[1] == 4:  # dolfinx quads: tensor-product node order 0 1 3 2 around the cell
        p = p[:, [0, 1, 3, 2]]
    x, y = p[..., 0], p[..., 1]
    return 0.5 * np.abs(np.sum(x * np.roll(y, -1, axis=1) - np.roll(x, -1, axis=1) * y, axis=1))


__all__ = ["GeometryMesh", "ShapeSpec", "build_geometry", "SHAPES"]
