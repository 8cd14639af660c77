"""One specimen sample over the ranks (``run.parallel: sample``): KMC preparation and stages,
written to OUTDIR, for the 1-vs-2-rank comparison (test_specimen_protocols.py).

Usage: mpirun -n 2 python specimen_sample.py OUTDIR
"""

import sys
from pathlib import Path

import femplast  # noqa: F401  (must precede dolfinx / petsc4py)
from femplast.app.api import load_case, run

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_specimen_protocols import SAMPLE, case_dict  # noqa: E402

if __name__ == "__main__":
    run(load_case(case_dict(backend="direct", **SAMPLE)), Path(sys.argv[1]))
