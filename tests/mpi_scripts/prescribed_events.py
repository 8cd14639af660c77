"""Apply a prescribed sequence of slips with the direct backend on COMM_WORLD; save stresses.

    mpirun -n 2 python prescribed_events.py OUT.npz
"""

import sys

import numpy as np
from mpi4py import MPI

import femplast  # noqa: F401
from femplast.fe.mesh import structured_box
from femplast.streams import realization_rng
from femplast.tensorial.aqs import apply_slips
from femplast.tensorial.model import TensorialModel


def prescribed(comm, n=12, events=2000, batch=50):
    box = structured_box(n, 6.6 * n, "quad", comm)
    m = TensorialModel.build(box, N=4, backend="direct")
    st = m.new_state(realization_rng(0, 0))
    rng = np.random.default_rng(7)
    cells = rng.integers(0, n * n, events)
    theta = rng.uniform(-np.pi / 2, np.pi / 2, events)
    dg = rng.uniform(0, 0.05, events)
    for i in range(0, events, batch):
        apply_slips(m, st, cells[i:i + batch], theta[i:i + batch], dg[i:i + batch])
    return m.total_stress(st, 0.01, 0.0)


if __name__ == "__main__":
    sig = prescribed(MPI.COMM_WORLD)
    if MPI.COMM_WORLD.rank == 0:
        np.savez(sys.argv[1], sigma=sig, ranks=MPI.COMM_WORLD.size)
