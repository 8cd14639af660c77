"""femplast: finite-element mesoscale elasto-plastic models of amorphous solids.

femplast runs on any dolfinx 0.11: conda-forge, Docker images or the ``dolfinx-solver-real``
pip wheel (``pip install femplast[wheel]``). The wheel's dolfinx links a ``libmpi.so.12``
that only ``mpi4py.MPI`` knows how to find (the PyPI mpich wheel's), so ``import dolfinx``
alone fails there ("libmpi.so.12: cannot open shared object file"): ``import dolfinx_solver``
must come first. The package does that here, once, whatever submodule a user imports first,
but only when that wheel is what provides dolfinx; a conda or Docker dolfinx needs nothing.

The public Python API (:mod:`femplast.app.api`) is imported on first use (PEP 562), so that
``import femplast`` stays cheap: :func:`load_case`, :func:`run`, :func:`load_run`,
:class:`Results`, :class:`Simulation`.
"""

from femplast.errors import FemplastInputError
from femplast.version import __version__


def _wheel_provides_dolfinx() -> bool:
    """Whether the ``dolfinx`` on ``sys.path`` is the one a ``dolfinx-solver-*`` wheel
    installed (found without importing it)."""
    from importlib import metadata, util
    from pathlib import Path

    spec = util.find_spec("dolfinx")
    if spec is None or spec.origin is None:
        return False
    for dist in ("dolfinx-solver-real", "dolfinx-solver-complex"):
        try:
            mine = metadata.distribution(dist).locate_file("dolfinx/__init__.py")
        except metadata.PackageNotFoundError:
            continue
        if Path(mine).resolve() == Path(spec.origin).resolve():
            return True
    return False


if _wheel_provides_dolfinx():
    import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)

_API = ("load_case", "run", "load_run", "Simulation", "Results")

__all__ = ["FemplastInputError", "__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        from femplast.app import api

        value = getattr(api, name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'femplast' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
