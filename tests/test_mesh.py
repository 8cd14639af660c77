"""Periodic boxes: canonical cell numbering, periodic node pairing and input validation."""

import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.errors import FemplastInputError
from femplast.fe.mesh import (
    L_DEFAULT,
    box_from_options,
    check_periodic_nodes,
    gmsh_box,
    gmsh_session,
    structured_box,
    write_gmsh_box,
)


def _sorted_midpoints(box):
    return box.midpoints()[np.argsort(box.canonical)]


@pytest.mark.parametrize("n", [1, 3, 5])
def test_quad_canonical_index_is_row_major(n):
    box = structured_box(n, 2.0, "quad", MPI.COMM_SELF)
    assert box.num_cells == n * n == box.num_owned
    assert np.array_equal(np.sort(box.canonical), np.arange(n * n))
    mid = _sorted_midpoints(box)
    iy, ix = np.divmod(np.arange(n * n), n)
    h = 2.0 / n
    assert np.allclose(mid[:, 0], (ix + 0.5) * h, atol=1e-12)
    assert np.allclose(mid[:, 1], (iy + 0.5) * h, atol=1e-12)
    assert box.cell_size == pytest.approx(h)


@pytest.mark.parametrize("n", [1, 4])
def test_triangle_canonical_index(n):
    box = structured_box(n, 1.0, "tri", MPI.COMM_SELF)
    assert box.num_cells == 2 * n * n
    assert np.array_equal(np.sort(box.canonical), np.arange(2 * n * n))
    mid = _sorted_midpoints(box) * n  # in units of the square side
    sq, t = np.divmod(np.arange(2 * n * n), 2)
    iy, ix = np.divmod(sq, n)
    # 0: lower-right triangle (barycentre (2/3, 1/3)), 1: upper-left ((1/3, 2/3))
    fx = np.where(t == 0, 2 / 3, 1 / 3)
    assert np.allclose(mid[:, 0], ix + fx, atol=1e-12)
    assert np.allclose(mid[:, 1], iy + 1 - fx, atol=1e-12)


def test_gmsh_box_is_periodic_and_numbered(gmsh_small):
    box = gmsh_small
    assert box.kind == "gmsh" and box.n is None
    assert box.L == pytest.approx(1.0, abs=1e-12)
    assert np.array_equal(np.sort(box.canonical), np.arange(box.num_cells))
    check_periodic_nodes(box)  # raises if a boundary node has no twin
    x = box.mesh.geometry.x[:, :2]
    tol = 1e-10
    left = np.sort(x[np.abs(x[:, 0]) < tol, 1])
    right = np.sort(x[np.abs(x[:, 0] - 1.0) < tol, 1])
    assert len(left) > 2 and np.allclose(left, right, atol=1e-9)
    # total cell area is the box area
    import ufl
    from dolfinx import fem

    area = fem.assemble_scalar(fem.form(fem.Constant(box.mesh, 1.0) * ufl.dx(domain=box.mesh)))
    assert area == pytest.approx(1.0, rel=1e-12)


def test_gmsh_box_generated_in_memory_matches_default_box():
    box = gmsh_box(None, L_DEFAULT, 30.0, MPI.COMM_SELF)
    x = box.mesh.geometry.x
    assert x[:, 0].max() == pytest.approx(L_DEFAULT, rel=1e-12)
    assert x[:, 1].min() == pytest.approx(0.0, abs=1e-9)
    assert box.num_cells > 10


def _rectangle_model(gmsh, name):
    gmsh.model.add(name)
    gmsh.model.occ.addRectangle(0, 0, 0, 1, 1)
    gmsh.model.occ.synchronize()


@pytest.mark.parametrize("raises", [False, True])
def test_gmsh_session_finalizes_only_what_it_initialized(raises):
    """Not initialized before: not after either (also when the body raises). Initialized by
    the caller: still initialized after, the session's model removed, the caller's kept."""
    import gmsh

    assert not gmsh.isInitialized()

    def body(comm, name):
        with gmsh_session(comm) as g:
            assert g.isInitialized() and g.option.getNumber("General.Terminal") == 0
            _rectangle_model(g, name)
            if raises:
                raise RuntimeError("body failed")

    def run(comm, name):
        if raises:
            with pytest.raises(RuntimeError, match="body failed"):
                body(comm, name)
        else:
            body(comm, name)

    run(MPI.COMM_SELF, "inner")
    assert not gmsh.isInitialized()
    gmsh.initialize(interruptible=False)
    try:
        _rectangle_model(gmsh, "caller")
        run(MPI.COMM_SELF, "inner")
        assert gmsh.isInitialized()
        assert "inner" not in gmsh.model.list() and "caller" in gmsh.model.list()
        # only rank 0 of the communicator built (and removes) the model
        run(type("Rank1", (), {"rank": 1})(), "kept")
        assert gmsh.isInitialized() and "kept" in gmsh.model.list()
    finally:
        gmsh.finalize()


def test_box_from_options_dispatch():
    assert box_from_options("quad", 3, 1.0, comm=MPI.COMM_SELF).num_cells == 9
    assert box_from_options("tri", 3, 1.0, comm=MPI.COMM_SELF).num_cells == 18


# ---------------------------------------------------------------- invalid input
def _check_message(err, key, value_text, allowed_text):
    msg = str(err.value)
    assert err.value.key == key
    assert key in msg and value_text in msg and allowed_text in msg, msg


@pytest.mark.parametrize("n", [0, -3, 2.5, True, "4"])
@pytest.mark.parametrize("kind", ["quad", "tri"])
def test_bad_n(n, kind):
    with pytest.raises(FemplastInputError) as err:
        structured_box(n, 1.0, kind, MPI.COMM_SELF)
    _check_message(err, "mesh.n", repr(n), "integer >= 1")


@pytest.mark.parametrize("L", [0.0, -1.0, float("inf"), float("nan")])
def test_bad_L(L):
    with pytest.raises(FemplastInputError) as err:
        structured_box(4, L, "quad", MPI.COMM_SELF)
    _check_message(err, "mesh.L", repr(L), "> 0")


def test_bad_kind():
    with pytest.raises(FemplastInputError) as err:
        structured_box(4, 1.0, "hex", MPI.COMM_SELF)
    _check_message(err, "mesh.kind", "'hex'", "quad")
    with pytest.raises(FemplastInputError):
        box_from_options("hex", 4, 1.0, comm=MPI.COMM_SELF)


def test_missing_mesh_file(tmp_path):
    missing = tmp_path / "nope.msh"
    with pytest.raises(FemplastInputError) as err:
        gmsh_box(missing, comm=MPI.COMM_SELF)
    _check_message(err, "mesh.file", str(missing), "existing gmsh .msh file")


@pytest.mark.parametrize("size", [0.0, -1.0, float("nan"), 2.0])
def test_bad_gmsh_size(tmp_path, size):
    with pytest.raises(FemplastInputError) as err:
        write_gmsh_box(tmp_path / "b.msh", 1.0, size)
    _check_message(err, "mesh.size", repr(size), "(0, L=1.0]")
    with pytest.raises(FemplastInputError) as err:
        gmsh_box(None, 1.0, size, MPI.COMM_SELF)
    _check_message(err, "mesh.size", repr(size), "(0, L=1.0]")


def _write_nonperiodic_msh(path):
    """Unit square meshed without setPeriodic; graded sizes so left/right nodes differ."""
    import gmsh

    gmsh.initialize(interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("nonperiodic")
        geo = gmsh.model.geo
        p = [geo.addPoint(0, 0, 0, 0.1), geo.addPoint(1, 0, 0, 0.1),
             geo.addPoint(1, 1, 0, 0.3), geo.addPoint(0, 1, 0, 0.1)]
        lines = [geo.addLine(p[i], p[(i + 1) % 4]) for i in range(4)]
        geo.addPlaneSurface([geo.addCurveLoop(lines)])
        geo.synchronize()
        gmsh.model.addPhysicalGroup(2, [1], 1)
        gmsh.model.mesh.generate(2)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.write(str(path))
    finally:
        gmsh.finalize()
    return path


def test_nonperiodic_gmsh_mesh_is_rejected(tmp_path):
    path = _write_nonperiodic_msh(tmp_path / "nonperiodic.msh")
    with pytest.raises(FemplastInputError) as err:
        gmsh_box(path, comm=MPI.COMM_SELF)
    _check_message(err, "mesh.file", str(path), "periodic")
    assert "boundary nodes have no periodic twin" in str(err.value)
