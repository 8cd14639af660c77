"""Validation of a case beyond its schema: each feature's own consistency check, in order.

The schema (femplast.config.case) checks types, ranges and the keys every run shares; the
rules of a feature (patch tests, the scalar model, variants, stages and KMC) live in that
feature's module and are collected here, below the application layer that also checks
sweeps (femplast.app.cases).
"""

from __future__ import annotations

from femplast.analysis import localization_checks, patch_checks
from femplast.protocols import stage_checks
from femplast.tensorial import variants


def _scalar_check(case):
    # the scalar model's module holds its compiled kernels: imported only for scalar cases,
    # so that validating a case (--check) does not load numba (its check returns at once
    # for other models)
    if case.model == "scalar":
        from femplast.scalar.fit import check as fit_check
        from femplast.scalar.model import check

        check(case)
        fit_check(case)  # scalar.fit.curves


def _geometry_check(case):
    # specimens (femplast.fe.boundary): imported only for cases that use them, as above
    if case.mesh.kind == "geometry" or case.geometry.boundaries:
        from femplast.fe.boundary import check

        check(case)


FEATURE_CHECKS = (_geometry_check, patch_checks.check, localization_checks.check, _scalar_check,
                  variants.check, stage_checks.check)


def validate(case):
    """Run every feature's check on ``case``; raises FemplastInputError on the first problem."""
    for check in FEATURE_CHECKS:
        check(case)
    return case
