"""Command line: ``python -m femplast CASE.yaml [options]``."""

from __future__ import annotations

import argparse
import logging
import sys

from femplast.errors import FemplastInputError, io_error_line
from femplast.protocols import checkpoint as ck
from femplast.protocols.checkpoint import Interrupted

EXIT_BAD_INPUT = 2
EXIT_IO_ERROR = 1


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m femplast",
        description="Run a femplast case (mesoscale elasto-plastic model on a periodic FE mesh). "
                    "Under 'mpirun -n P', realizations are spread over the ranks.",
        epilog="Case keys: docs/case-reference.md (or --reference). Figures of a run: "
               "python -m femplast plot OUTDIR [--out FIGDIR] [--quiet].")
    p.add_argument("case", nargs="?", help="YAML case file")
    p.add_argument("--out", help="output directory (new or empty; default runs/<case name>[-N])")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a case key, e.g. --set loading.gamma_max=0.5 (repeatable)")
    p.add_argument("--realizations", type=int, help="override run.realizations")
    p.add_argument("--seed", type=int, help="override run.seed")
    p.add_argument("--event-log", action="store_true", help="store every slip event")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in the existing --out directory (sweeps: "
                        "points already finished are not recomputed)")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--check", action="store_true", help="validate the case and exit")
    p.add_argument("--reference", action="store_true", help="print the case-key reference")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["plot"]:  # python -m femplast plot OUTDIR [--out FIGDIR] [--quiet]
        from femplast.postprocess.plot import main as plot_main

        return plot_main(argv[1:])
    args = parser().parse_args(argv)
    from mpi4py import MPI

    from femplast.app.cases import load_case
    from femplast.config.case import reference_markdown

    comm = MPI.COMM_WORLD
    if args.reference:
        print(reference_markdown(), end="")
        return 0
    if not args.case:
        parser().print_usage(sys.stderr)
        print("error: a case file is required", file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO,
                        format="[femplast] %(message)s")
    try:
        overrides = list(args.set)
        if args.realizations is not None:
            overrides.append(f"run.realizations={args.realizations}")
        if args.seed is not None:
            overrides.append(f"run.seed={args.seed}")
        case = load_case(args.case, overrides)
        if args.check:
            print(f"{args.case}: valid")
            return 0
        from femplast.app.compile import announce_if_cold
        from femplast.app.runner import run_case
        from femplast.io.claim import claim_outdir

        # claimed atomically on rank 0, refusals reach every rank (femplast.io.claim)
        with ck.early_interrupts(), \
                claim_outdir(comm, args.out, case.name, resume=args.resume) as claim:
            announce_if_cold(args.quiet or comm.rank != 0)
            run_case(case, claim.path, comm, quiet=args.quiet, event_log=args.event_log,
                     resume=args.resume)
    except FemplastInputError as exc:
        if comm.rank == 0:
            for line in str(exc).splitlines():  # every problem of the case, one line each
                print(f"femplast: error: {line}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Interrupted as exc:  # SIGINT/SIGTERM: checkpoint written (femplast.protocols.checkpoint)
        print(f"femplast: {exc}", file=sys.stderr)
        return exc.exit_code  # 130 (SIGINT) or 143 (SIGTERM)
    except OSError as exc:  # disk full, permissions, ...: files are atomic, --resume continues
        print(f"femplast: error: {io_error_line(exc)} (the run can continue with --resume once "
              "this is fixed)", file=sys.stderr)
        if comm.size > 1:  # the other ranks may wait for this one in a collective
            comm.Abort(EXIT_IO_ERROR)
        return EXIT_IO_ERROR
    return 0
