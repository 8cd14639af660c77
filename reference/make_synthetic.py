"""Make a SYNTHETIC reference set with femplast (femplast.app.sweep.make_reference).

    python reference/make_synthetic.py CASE.yaml OUTDIR [--set KEY=VALUE ...]
        [--finite-size N [N ...]] [--note TEXT]

The case's slip section gives the "true" parameters (k, lambda, chi), run.realizations and
run.seed the ensemble (use a seed the sweeps do not use); patches: the local statistics. Every
file written starts with '# SYNTHETIC ...' header lines. The shipped set was made with

    python reference/make_synthetic.py reference/synthetic_l6.6/generate.yaml \
        reference/synthetic_l6.6 --finite-size 6 9 12 15
"""

import argparse
import sys
from pathlib import Path

import femplast  # noqa: F401  (MPI before dolfinx)
from femplast.app.cases import load_case
from femplast.app.sweep import make_reference
from femplast.errors import FemplastInputError


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("case")
    p.add_argument("outdir")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--finite-size", nargs="*", type=int, default=[], metavar="N",
                   help="also record std(Sigma_xy) at these mesh.n (finite_size.csv)")
    p.add_argument("--note", default="", help="an extra header line")
    a = p.parse_args(argv)
    try:
        case = load_case(a.case, a.set)
    except FemplastInputError as exc:
        print(f"make_synthetic: error: {exc}", file=sys.stderr)
        return 2
    path = make_reference(case, Path(a.outdir), a.finite_size, a.note)
    print(f"SYNTHETIC reference written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
