"""The case checks of the localization observables (femplast.analysis.localization), in a
module without compiled kernels: validating a case (``--check``) does not import numba."""

from __future__ import annotations

from femplast.errors import FemplastInputError


def check(case) -> None:
    """``localization.window`` is a whole number of strides (FemplastInputError)."""
    lo = case.localization
    if lo.enabled and lo.stride is not None:
        m = lo.window / lo.stride
        if lo.stride > lo.window or abs(m - round(m)) > 1e-9 * m:
            raise FemplastInputError("localization.stride", lo.stride, "a divisor of "
                                     f"localization.window = {lo.window} (window / stride "
                                     "a whole number)")
