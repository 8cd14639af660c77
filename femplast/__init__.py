"""femplast: finite-element mesoscale elasto-plastic models of amorphous solids.

The package imports ``dolfinx_solver`` here, once, so that MPI is loaded before the dolfinx
and petsc4py bindings whatever submodule a user imports first.

The public Python API (:mod:`femplast.app.api`) is imported on first use (PEP 562), so that
``import femplast`` stays cheap: :func:`load_case`, :func:`run`, :func:`load_run`,
:class:`Results`, :class:`Simulation`.
"""

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)

from femplast.errors import FemplastInputError
from femplast.version import __version__

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
