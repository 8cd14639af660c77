"""femplast: finite-element mesoscale elasto-plastic models of amorphous solids.

The package imports ``dolfinx_solver`` here, once, so that MPI is loaded before the dolfinx
and petsc4py bindings whatever submodule a user imports first.
"""

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)

from femplast.errors import FemplastInputError
from femplast.version import __version__

__all__ = ["FemplastInputError", "__version__"]
