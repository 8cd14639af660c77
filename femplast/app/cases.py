"""Cases as the application sees them: parsed (femplast.config.case) and validated by every
feature (femplast.protocols.checks), sweeps included."""

from __future__ import annotations

from pathlib import Path

from femplast.app import sweep, validation
from femplast.config import case as schema
from femplast.config.case import Case
from femplast.protocols.checks import FEATURE_CHECKS


def validate(case: Case) -> Case:
    """Check ``case`` beyond its schema: every feature, the sweep, files, sanity, grids and
    resources (femplast.app.validation); all problems at once. ``--check`` runs exactly this,
    and every run runs it before writing anything."""
    return validation.validate(case, (*FEATURE_CHECKS, sweep.validate))


def case_from_dict(data: dict, overrides=(), source: Path | None = None) -> Case:
    """A validated case from a dictionary (plus ``dotted.key=value`` overrides)."""
    return validate(schema.case_from_dict(data, overrides, source))


def load_case(path: str | Path, overrides=()) -> Case:
    """A validated case from a YAML file (plus ``dotted.key=value`` overrides)."""
    return validate(schema.load_case(path, overrides))
