"""``python -m femplast plot OUTDIR``: every figure, render and animation a run supports, plus
an index page; progress bar on stderr; exit code 2 for a directory that holds no run."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from femplast.postprocess import figures, renders
from femplast.postprocess.data import NoRunError, RunData, load_run
from femplast.postprocess.figures import Entry, Saver
from femplast.postprocess.index import write_index

EXIT_NO_RUN = 2
EXIT_SOME_FAILED = 1


class ProgressBar:
    """A one-line progress bar on stderr (one line per item when stderr is not a terminal)."""

    def __init__(self, total: int, quiet: bool = False, label: str = "plot"):
        self.total, self.quiet, self.label = total, quiet, label
        self.n = 0
        self.t0 = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def step(self, what: str):
        self.n += 1
        if self.quiet:
            return
        dt = time.perf_counter() - self.t0
        if self.tty:
            cols = shutil.get_terminal_size((100, 20)).columns
            w = 24
            fill = int(w * self.n / max(self.total, 1))
            line = (f"[{self.label}] [{'#' * fill}{'.' * (w - fill)}] {self.n}/{self.total} "
                    f"{dt:5.1f}s {what}")
            print("\r" + line[: cols - 1].ljust(cols - 1), end="", file=sys.stderr, flush=True)
            if self.n >= self.total:
                print(file=sys.stderr)
        else:
            print(f"[{self.label} {self.n}/{self.total} {dt:5.1f}s] {what}", file=sys.stderr,
                  flush=True)


def plot_jobs(run: RunData, saver: Saver, all_realizations: bool = False,
              renders_on: bool = True):
    """(name, callable returning [Entry]) for everything this run supports."""
    jobs = [(fn.__name__, lambda fn=fn: fn(run, saver))
            for fn in figures.FIGURES if figures.applies(fn, run)]
    if (run.summary or {}).get("inclusion") and run.xdmf:
        jobs.append(("inclusion_eshelby", lambda: [e for e in [
            renders.inclusion_job(run, saver.figdir)] if e]))
    first = [p for p in run.xdmf if p.stem == "r0000" and p.parent.name == "fields"]
    if first and (run.summary or {}).get("localization"):
        from femplast.postprocess.localization import band_field

        case = run.summary.get("case") or {}
        if (case.get("mesh") or {}).get("kind") == "geometry":
            jobs.append(("localization_band_field", lambda: renders.specimen_band_field(
                renders.read_series(first[0]), first[0].stem, saver, case["geometry"])))
        else:
            jobs.append(("localization_band_field", lambda: band_field(
                renders.read_series(first[0]), first[0].stem, saver)))
    if not renders_on:
        return jobs
    rdir = saver.figdir / "renders"
    xdmf = run.xdmf
    if not all_realizations:  # the first realization and any non-realization series
        reals = [p for p in xdmf if p.stem.startswith("r") and p.stem[1:].isdigit()]
        xdmf = [p for p in xdmf if p not in reals] + reals[:1]
    for p in xdmf:
        _, _, _, _, data = renders.read_series(p)
        names = sorted(data[0] if data else [],
                       key=lambda k: (not k.startswith("eps_pl"), k != "dtau_c_min", k))
        for k in names:
            jobs.append((f"render {p.stem} {k}", lambda p=p, k=k: [
                renders.render_field(p, k, rdir / f"{p.stem}_{k}.png")]))
    if any(r.events for r in run.realizations) or run.xdmf:
        jobs.append(("animation", lambda: [e for e in [renders.animation_job(run, rdir)] if e]))
    return jobs


def plot_run(outdir, figdir=None, quiet: bool = False, formats=("png",), renders_on=True,
             all_realizations: bool = False, strict: bool = False, reference=None):
    """Write every figure of ``outdir`` into ``figdir`` (default ``OUTDIR/figures``);
    ``reference``: a reference directory to overlay (default: the case's, when found).

    Returns (entries, failures, index.html path). A failing figure is reported and skipped
    (``strict``: raised)."""
    run = load_run(outdir, reference)
    figdir = Path(figdir) if figdir else run.outdir / "figures"
    saver = Saver(figdir, formats)
    jobs = plot_jobs(run, saver, all_realizations, renders_on)
    bar = ProgressBar(len(jobs), quiet)
    entries: list[Entry] = []
    failures: list[tuple[str, str]] = []
    for name, job in jobs:
        try:
            entries += job()
        except Exception as exc:  # one bad family must not cost the others
            if strict:
                raise
            failures.append((name, f"{type(exc).__name__}: {exc}"))
        bar.step(name)
    index = write_index(run, figdir, entries, failures)[0]
    return entries, failures, index


def parser(prog: str = "python -m femplast") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=f"{prog} plot",
        description="Figures, field renders, a plastic-strain animation and an index page for "
                    "a femplast output directory (whatever it holds: realizations, Bauschinger "
                    "stages, patches, calibration sweep, finite-size summary, fields).")
    p.add_argument("outdir", nargs="+",
                   help=f"output directory of a run ({prog} run CASE --out); several: "
                        "the runs are compared on common figures")
    p.add_argument("--out", help="figure directory (default OUTDIR/figures; several runs: "
                                 "OUTDIR1/figures/compare)")
    p.add_argument("--labels", help="comma-separated legend labels of the runs (default: the "
                                    "directory names)")
    p.add_argument("--reference", help="reference data directory (macro.csv, rms.csv, "
                                       "finite_size.csv) to overlay (default: the case's "
                                       "sweep.reference when found)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--formats", default="png",
                   help="comma-separated figure formats, e.g. png,pdf (default png)")
    p.add_argument("--no-renders", action="store_true", help="matplotlib figures only")
    p.add_argument("--all-realizations", action="store_true",
                   help="render the fields of every realization (default: the first)")
    return p


def compare(outdirs, labels=None, figdir=None, formats=("png",), reference=None):
    """Comparison figures of several runs (:mod:`femplast.postprocess.compare`) in ``figdir``
    (default ``OUTDIR1/figures/compare``); returns (entries, failures, index.html path)."""
    from femplast.postprocess.compare import compare_runs

    runs = [load_run(d, reference) for d in outdirs]
    labels = list(labels) if labels else [r.outdir.name for r in runs]
    if len(labels) != len(runs):
        raise NoRunError(f"--labels: {len(labels)} labels for {len(runs)} runs (one per run)")
    figdir = Path(figdir) if figdir else runs[0].outdir / "figures" / "compare"
    entries, failures = compare_runs(runs, labels, Saver(figdir, formats))
    index = write_index(runs[0], figdir, entries, failures)[0]
    return entries, failures, index


def main(argv: list[str] | None = None, prog: str = "python -m femplast") -> int:
    """``prog plot ...`` (``prog``: how the user called femplast, for the usage line)."""
    args = parser(prog).parse_args(argv)
    formats = tuple(f.strip().lstrip(".") for f in args.formats.split(",") if f.strip())
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    try:
        if len(args.outdir) > 1 or labels:
            entries, failures, index = compare(args.outdir, labels, args.out, formats,
                                               args.reference)
        else:
            entries, failures, index = plot_run(args.outdir[0], args.out, args.quiet, formats,
                                                not args.no_renders, args.all_realizations,
                                                reference=args.reference)
    except NoRunError as exc:
        print(f"femplast plot: error: {exc}", file=sys.stderr)
        return EXIT_NO_RUN
    for name, err in failures:
        print(f"femplast plot: {name} failed: {err}", file=sys.stderr)
    if not args.quiet:
        print(f"{len(entries)} files -> {index}", file=sys.stderr)
    return EXIT_SOME_FAILED if failures else 0
