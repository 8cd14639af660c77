"""Specimens meshed by gmsh (femplast.fe.geometry): shapes, areas, boundary tags, periodic
sides, cell kinds, input validation."""

import math

import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.errors import FemplastInputError
from femplast.fe.geometry import ShapeSpec, build_geometry


def _geo(**kw):
    return build_geometry(ShapeSpec(**kw), MPI.COMM_SELF)


@pytest.mark.parametrize("element", ["tri", "quad"])
def test_strip_area_tags_and_cell_size(element):
    g = _geo(shape="strip", width=8.0, height=4.0, size=0.5, element=element)
    assert set(g.boundaries) == {"bottom", "top", "left", "right"}
    assert g.area == pytest.approx(32.0, rel=1e-12)
    assert (g.width, g.height) == pytest.approx((8.0, 4.0))
    nv = 3 if element == "tri" else 4
    assert g.mesh.geometry.dofmaps[0].shape[1] == nv
    # target size 0.5: the mean cell is of that order (quads: full-quad recombination)
    assert 0.2 < g.cell_size < 0.6
    assert sorted(g.canonical) == list(range(g.num_cells))


def test_hole_and_notch_areas():
    g = _geo(shape="hole", width=10.0, height=10.0, hole_radius=1.0, size=0.5, size_min=0.1)
    assert "hole" in g.boundaries
    assert g.area == pytest.approx(100 - math.pi, rel=2e-4)  # polygonal circle
    r, d = 0.5, 2.0
    g = _geo(shape="notched_strip", width=10.0, height=6.0, size=0.5, notch_kind="U",
             notch_depth=d, notch_radius=r, size_min=0.1)
    assert g.area == pytest.approx(60 - (d - r) * 2 * r - math.pi * r * r / 2, rel=2e-4)
    g = _geo(shape="notched_strip", width=10.0, height=6.0, size=0.5, notch_kind="V",
             notch_depth=d, notch_radius=r, notch_angle=30.0, size_min=0.1)
    # the notch root (deepest point) is at x = notch_depth on the mid-line
    x = g.mesh.geometry.x
    mid = np.abs(x[:, 1] - 3.0) < 1e-9
    assert x[mid & (x[:, 0] < 5), 0].max() == pytest.approx(d, abs=1e-9)
    assert g.area < 60 - (d - r) * 2 * r  # more than a U slot of the same tip


def test_periodic_x_nodes_match():
    g = _geo(shape="strip", width=6.0, height=3.0, size=0.4, periodic="x")
    x = g.mesh.geometry.x[:, :2]
    left = np.sort(x[np.abs(x[:, 0]) < 1e-9, 1])
    right = np.sort(x[np.abs(x[:, 0] - 6.0) < 1e-9, 1])
    assert len(left) > 5 and np.allclose(left, right, atol=1e-12)


@pytest.mark.parametrize("kw,key", [
    (dict(shape="disk"), "geometry.shape"),
    (dict(size=-1.0), "geometry.size"),
    (dict(size=50.0), "geometry.size"),
    (dict(shape="hole", hole_radius=30.0), "geometry.hole_radius"),
    (dict(shape="notched_strip", notch_depth=50.0), "geometry.notch_depth"),
    (dict(shape="notched_strip", notch_radius=8.0), "geometry.notch_radius"),
    (dict(shape="notched_strip", periodic="x"), "geometry.periodic"),
    (dict(periodic="both"), "geometry.periodic"),
    (dict(element="hex"), "geometry.element"),
    (dict(shape="file", file="/nonexistent.msh"), "geometry.file"),
])
def test_bad_geometry_names_the_key(kw, key):
    with pytest.raises(FemplastInputError) as exc:
        _geo(**kw)
    assert exc.value.key == key


def test_geo_file_with_physical_groups(tmp_path):
    geo = tmp_path / "sq.geo"
    geo.write_text("Point(1)={0,0,0,0.3}; Point(2)={2,0,0,0.3}; Point(3)={2,1,0,0.3};"
                   "Point(4)={0,1,0,0.3}; Line(1)={1,2}; Line(2)={2,3}; Line(3)={3,4};"
                   "Line(4)={4,1}; Curve Loop(1)={1,2,3,4}; Plane Surface(1)={1};"
                   "Physical Curve(\"base\")={1}; Physical Curve(\"lid\")={3};"
                   "Physical Surface(\"body\")={1};\n")
    g = _geo(shape="file", file=str(geo), size=0.3)
    assert set(g.boundaries) == {"base", "lid"}
    assert g.area == pytest.approx(2.0, rel=1e-12)
