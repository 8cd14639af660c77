"""Responses gathered in canonical order, for the 1-vs-2-rank comparison (test_elasticity.py).

Usage: mpirun -n 2 python elastic_response.py OUT.npz GMSH_FILE

``compute`` is also imported by the test and run on MPI.COMM_SELF for the serial reference.
"""

import sys

import numpy as np
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.fe.elasticity import PeriodicElasticity
from femplast.fe.mesh import gmsh_box, structured_box


def compute(kind, n, msh, comm):
    box = gmsh_box(msh, comm=comm) if kind == "gmsh" else structured_box(n, 1.0, kind, comm)
    N = box.num_cells
    idx = np.arange(N)
    # deterministic per-cell moduli and eigenstrain, defined on canonical indices
    G = 13.2 * (1 + 0.5 * np.sin(0.7 * idx))
    B = 59.0 * (1 + 0.3 * np.cos(1.3 * idx))
    el = PeriodicElasticity(box, G, B)
    eps_glob = 1e-2 * np.stack([np.sin(idx), np.cos(2 * idx), np.sin(3 * idx + 1)], axis=1)
    eps_pl = eps_glob[el.cells]
    E = np.array([1e-3, -2e-3, 5e-3])
    out = {
        # first: the solves below must work after MUMPS' selected inversion
        "self_strain": el.gather(el.self_strain_tensors()),
        "stress": el.gather(el.stress(eps_pl, E)),
        "strain": el.gather(el.strain(eps_pl, E)),
        "mean_stress": el.mean(el.stress(eps_pl, E)),
        "unit_xy": el.gather(el.unit_response(N // 3, 2)),
        "unit_xx": el.gather(el.unit_response(N - 1, 0)),
        "eshelby": el.eshelby_tensor(N // 2),
        "area": el.gather(el.area),
        "G": el.gather(el.G),
    }
    el.destroy()
    return out


def main():
    comm = MPI.COMM_WORLD
    out_path, msh = sys.argv[1], sys.argv[2]
    results = {"nranks": np.array(comm.size)}
    for kind, n in (("quad", 6), ("tri", 4), ("gmsh", None)):
        for key, val in compute(kind, n, msh, comm).items():
            results[f"{kind}_{key}"] = val
        box = gmsh_box(msh, comm=comm) if kind == "gmsh" else structured_box(n, 1.0, kind, comm)
        results[f"{kind}_owned"] = np.array(comm.allgather(box.num_owned))
    if comm.rank == 0:
        np.savez(out_path, **results)


if __name__ == "__main__":
    main()
