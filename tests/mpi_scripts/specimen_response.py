"""Specimen responses gathered in canonical order, for the 1-vs-2-rank comparison
(test_boundary.py).

Usage: mpirun -n 2 python specimen_response.py OUT.npz

``compute`` is also imported by the test and run on MPI.COMM_SELF for the serial reference.
"""

import sys

import numpy as np
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.fe.boundary import BoundedElasticity
from femplast.fe.geometry import ShapeSpec, build_geometry

CASES = {
    "notch": (dict(shape="notched_strip", width=8.0, height=6.0, size=0.5, notch_depth=2.0,
                   notch_radius=0.5),
              {"bottom": "clamped", "top": {"displacement": [0.0, 1.0]}}),
    "walls": (dict(shape="strip", width=6.0, height=3.0, size=0.4, periodic="x"),
              {"bottom": "clamped", "top": {"displacement": [1.0, 0.5]}}),
    "rollers": (dict(shape="hole", width=4.0, height=4.0, hole_radius=0.6, size=0.3),
                {"bottom": "roller", "left": "roller", "top": {"displacement": [None, 1.0]}}),
}


def compute(name, comm):
    geo_kw, bc = CASES[name]
    geo = build_geometry(ShapeSpec(**geo_kw), comm)
    el = BoundedElasticity(geo, bc)
    idx = np.arange(geo.num_cells)
    eps = 1e-2 * np.stack([np.sin(idx), np.cos(2 * idx), np.sin(3 * idx + 1)], axis=1)
    t = 0.02
    out = {"stress": el.gather(el.stress(eps[el.cells], t)),
           "area": el.gather(el.area),
           "residual": np.array(el.residual(eps[el.cells], t)),
           "drive_force": np.array(el.drive_force(eps[el.cells], t)),
           "energy": np.array(el.energy(eps[el.cells], t)),
           "owned": np.array(comm.allgather(geo.num_owned))}
    for k, v in el.reactions(eps[el.cells], t).items():
        out[f"reaction_{k}"] = v
    return out


if __name__ == "__main__":
    comm = MPI.COMM_WORLD
    res = {}
    for name in CASES:
        for k, v in compute(name, comm).items():
            res[f"{name}_{k}"] = v
    if comm.rank == 0:
        np.savez(sys.argv[1], nranks=comm.size, **res)
