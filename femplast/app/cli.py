"""Command line: ``femplast run|check|reference|plot|examples`` (``python -m femplast`` too).

``femplast CASE.yaml [options]`` (no subcommand) is ``femplast run CASE.yaml [options]``, as
before the subcommands existed; so are the flags ``--check`` and ``--reference``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from femplast.errors import FemplastInputError, io_error_line
from femplast.protocols import checkpoint as ck
from femplast.protocols.checkpoint import Interrupted
from femplast.version import __version__

EXIT_BAD_INPUT = 2
EXIT_IO_ERROR = 1
COMMANDS = ("run", "check", "reference", "plot", "examples", "gallery")


def prog_name() -> str:
    """``femplast`` when called through the console script, else ``python -m femplast``."""
    return "femplast" if os.path.basename(sys.argv[0] or "") == "femplast" else \
        "python -m femplast"


def _case_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("case", nargs="?", help="YAML case file")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a case key, e.g. --set loading.gamma_max=0.5 (repeatable)")
    p.add_argument("--realizations", type=int, help="override run.realizations")
    p.add_argument("--seed", type=int, help="override run.seed")


def parser() -> argparse.ArgumentParser:
    prog = prog_name()
    p = argparse.ArgumentParser(
        prog=prog,
        description="femplast: mesoscale elasto-plastic models of glasses on periodic FE "
                    "meshes (FEniCSx). Under 'mpirun -n P', realizations are spread over the "
                    "ranks.",
        epilog=f"'{prog} CASE.yaml [options]' is short for '{prog} run CASE.yaml [options]'. "
               f"Help of a command: {prog} COMMAND --help. Case keys: docs/case-reference.md "
               f"({prog} reference).")
    p.add_argument("--version", action="version", version=f"femplast {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    r = sub.add_parser("run", help="run a case into an output directory",
                       description="Run a case; outputs: docs/architecture.md (Output "
                                   "directory).")
    _case_options(r)
    r.add_argument("--out", help="output directory (new or empty; default runs/<case name>[-N])")
    r.add_argument("--event-log", action="store_true", help="store every slip event")
    r.add_argument("--resume", action="store_true",
                   help="continue an interrupted run in the existing --out directory (sweeps: "
                        "points already finished are not recomputed)")
    r.add_argument("--keep-checkpoint", action="store_true",
                   help="keep OUTDIR/checkpoint/ after a successful run (default: removed)")
    r.add_argument("--quiet", action="store_true", help="no progress output")
    r.add_argument("--check", action="store_true", help="validate the case and exit ("
                                                       "same as the check command)")
    r.add_argument("--reference", action="store_true", help=argparse.SUPPRESS)
    c = sub.add_parser("check", help="validate a case and exit (nothing is written)")
    _case_options(c)
    sub.add_parser("reference", help="print the case-key reference (Markdown)")
    sub.add_parser("plot", add_help=False,  # parsed by femplast.postprocess.plot
                   help="figures, field renders and an index page of an output directory "
                        f"({prog} plot --help)")
    sub.add_parser("gallery", add_help=False,  # parsed by femplast.app.gallery
                   help="run, plot and tabulate every figure of the two papers into OUTDIR "
                        f"(docs/gallery; {prog} gallery --help)")
    e = sub.add_parser("examples", help="copy the shipped cases and reference data into DIR",
                       description="Copy the cases (cases/), the reference data (reference/) "
                                   "and the mesh scripts (meshes/) shipped with femplast into "
                                   "DIR, keeping their relative paths, so that "
                                   f"'{prog} run DIR/cases/quickstart.yaml' runs.")
    e.add_argument("dir", help="target directory (new or empty)")
    return p


def normalize(argv: list[str]) -> list[str]:
    """The subcommand form of a command line: ``CASE.yaml ...``, ``--check``,
    ``--reference`` (the forms before subcommands) become ``run ...``."""
    if argv and argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        return ["run", *argv]
    return argv


def main(argv: list[str] | None = None) -> int:
    argv = normalize(sys.argv[1:] if argv is None else list(argv))
    if argv[:1] == ["plot"]:  # the figure command has its own parser
        from femplast.postprocess.plot import main as plot_main

        return plot_main(argv[1:], prog_name())
    if argv[:1] == ["gallery"]:  # the paper gallery has its own parser
        from femplast.app.gallery import main as gallery_main

        return gallery_main(argv[1:], prog_name())
    p = parser()
    if not argv:
        p.print_help(sys.stderr)
        return EXIT_BAD_INPUT
    args = p.parse_args(argv)
    if args.command == "reference" or getattr(args, "reference", False):
        from femplast.config.case import reference_markdown

        print(reference_markdown(), end="")
        return 0
    if args.command == "examples":
        return _examples(args.dir)
    if not args.case:
        print(f"{prog_name()} {args.command}: error: a case file is required (e.g. "
              f"{prog_name()} {args.command} CASE.yaml; cases: {prog_name()} examples DIR)",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    logging.basicConfig(level=logging.WARNING if getattr(args, "quiet", False)
                        else logging.INFO, format="[femplast] %(message)s")
    return _run(args, check_only=args.command == "check" or args.check)


def _examples(target: str) -> int:
    from femplast.app.examples import copy_examples

    try:
        copied = copy_examples(target)
    except FemplastInputError as exc:
        print(f"femplast: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"{len(copied)} files -> {target} (try: {prog_name()} run "
          f"{os.path.join(target, 'cases', 'quickstart.yaml')})")
    return 0


def _run(args, check_only: bool) -> int:
    from mpi4py import MPI

    from femplast.app.cases import load_case

    comm = MPI.COMM_WORLD
    try:
        overrides = list(args.set)
        if args.realizations is not None:
            overrides.append(f"run.realizations={args.realizations}")
        if args.seed is not None:
            overrides.append(f"run.seed={args.seed}")
        case = load_case(args.case, overrides)
        if check_only:
            print(f"{args.case}: valid")
            return 0
        from femplast.app.compile import announce_if_cold
        from femplast.app.runner import run_case
        from femplast.io.claim import claim_outdir

        # claimed atomically on rank 0, refusals reach every rank (femplast.io.claim)
        with ck.early_interrupts(), \
                claim_outdir(comm, args.out, case.name, resume=args.resume) as claim:
            announce_if_cold(args.quiet or comm.rank != 0)
            try:
                run_case(case, claim.path, comm, quiet=args.quiet, event_log=args.event_log,
                         resume=args.resume, keep_checkpoint=args.keep_checkpoint)
            except FemplastInputError:
                # refused once the model is built (a check that needs the mesh): a fresh
                # run leaves no directory that looks like a run behind
                if comm.rank == 0 and not args.resume:
                    claim.discard()
                raise
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
