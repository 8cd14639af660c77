"""Validation of a case beyond its schema: each feature's own consistency check, in order.

The schema (femplast.config.case) checks types, ranges and the keys every run shares; the
rules of a feature (patch tests, the scalar model, variants, stages and KMC) live in that
feature's module and are collected here, below the application layer that also checks
sweeps (femplast.app.cases).
"""

from __future__ import annotations

from femplast.analysis import patches
from femplast.protocols import pipeline
from femplast.scalar import model as scalar
from femplast.tensorial import variants

FEATURE_CHECKS = (patches.check, scalar.check, variants.check, pipeline.check)


def validate(case):
    """Run every feature's check on ``case``; raises FemplastInputError on the first problem."""
    for check in FEATURE_CHECKS:
        check(case)
    return case
