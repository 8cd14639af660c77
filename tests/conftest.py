"""Shared fixtures: tiny periodic boxes (quads, triangles, gmsh) and their elasticity solvers.

``import femplast`` comes first: it loads MPI (dolfinx_solver) before dolfinx / petsc4py.
"""

import gc
import signal
from pathlib import Path

import h5py
import numpy as np
import pytest
from mpi4py import MPI

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.fe.elasticity import PeriodicElasticity
from femplast.fe.mesh import gmsh_box, structured_box

G0, B0 = 13.2, 59.0
"""Moduli of the tensorial paper (LJ units)."""

L_UNIT = 1.0


def datasets(out: Path) -> dict:
    """Every HDF5 dataset below the output directory ``out``, keyed ``"<file>:<dataset>"``
    (files relative to ``out``): the bit-for-bit comparison of two runs (resume, faults)."""
    res = {}
    for p in sorted(out.rglob("*.h5")):
        rel = p.relative_to(out)
        with h5py.File(p) as f:
            f.visititems(lambda n, o, rel=rel: res.__setitem__(f"{rel}:{n}", o[()])
                         if isinstance(o, h5py.Dataset) else None)
    return res


def interrupt_after(monkeypatch, n: int):
    """Make the ``n``-th safe point of the run (``Interrupter.tick``) see SIGTERM, as a signal
    arriving there would; returns the original ``tick`` (to restore before ``--resume``)."""
    from femplast.protocols import checkpoint as ck

    calls = {"n": 0}
    tick = ck.Interrupter.tick

    def counting_tick(self, force=False):
        calls["n"] += 1
        if calls["n"] == n:
            self.signum = signal.SIGTERM
        return tick(self, force)

    monkeypatch.setattr(ck.Interrupter, "tick", counting_tick)
    return tick


def pytest_configure(config):
    # also declared in pyproject.toml; registered here so the markers exist whatever the rootdir
    config.addinivalue_line("markers", "heavy: slower physics checks (run in CI, kept lean)")
    config.addinivalue_line("markers", "mpi: spawns mpirun -n 2 subprocesses")


@pytest.fixture(autouse=True)
def _collect_garbage():
    """PETSc objects are freed with their Python wrappers: collect between tests (as dolfinx)."""
    yield
    gc.collect()
    MPI.COMM_WORLD.Barrier()


@pytest.fixture(scope="session")
def quad_box():
    return structured_box(4, L_UNIT, "quad", MPI.COMM_SELF)


@pytest.fixture(scope="session")
def tri_box():
    return structured_box(4, L_UNIT, "tri", MPI.COMM_SELF)


@pytest.fixture(scope="session")
def gmsh_small(tmp_path_factory):
    """A small periodic unstructured triangular box (about 60 cells) read back from a .msh."""
    from femplast.fe.mesh import write_gmsh_box

    path = write_gmsh_box(tmp_path_factory.mktemp("msh") / "box.msh", L_UNIT, 0.2)
    return gmsh_box(path, comm=MPI.COMM_SELF)


@pytest.fixture(scope="session", params=["quad", "tri", "gmsh"])
def any_box(request, quad_box, tri_box, gmsh_small):
    return {"quad": quad_box, "tri": tri_box, "gmsh": gmsh_small}[request.param]


@pytest.fixture(scope="session")
def any_solver(any_box):
    return PeriodicElasticity(any_box, G0, B0)


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
