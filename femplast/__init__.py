"""femplast: finite-element mesoscale elasto-plastic models of amorphous solids.

The package imports ``dolfinx_solver`` here, once, so that MPI is loaded before the dolfinx
and petsc4py bindings whatever submodule a user imports first.
"""

import dolfinx_solver  # noqa: F401  (must precede dolfinx / petsc4py)

__version__ = "0.1.0"


class FemplastInputError(ValueError):
    """Invalid user input: the message names the key, the value and what is allowed.

    The command line turns it into exit code 2 before any computation starts.
    """

    def __init__(self, key: str, value, allowed: str):
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key} = {value!r} is invalid: {allowed}")
