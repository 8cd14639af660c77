"""One specimen sample over the ranks (``run.parallel: sample``): KMC preparation and stages,
written to OUTDIR, for the 1-vs-2-rank comparison (test_specimen_protocols.py).

Usage: mpirun -n 2 python specimen_sample.py OUTDIR [REFERENCE_AREA]

REFERENCE_AREA: with ``slip: {N: 36, reference_area: REFERENCE_AREA}`` (systems per area,
test_systems_per_area.py).
"""

import sys
from pathlib import Path

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.app.api import load_case, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_specimen_protocols import SAMPLE, case_dict  # noqa: E402

if __name__ == "__main__":
    extra = {}
    if len(sys.argv) > 2:
        extra["slip"] = {"N": 36, "reference_area": float(sys.argv[2])}
    run(load_case(case_dict(backend="direct", **SAMPLE, **extra)), Path(sys.argv[1]))
