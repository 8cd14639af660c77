"""Compile femplast's kernels ahead of the first run: ``python -m femplast.app.compile``.

The compiled loops (numba, ``cache=True``) and the finite-element forms (FFCx) are compiled on
first use and cached (numba: ``__pycache__`` next to the sources; FFCx: ``~/.cache/fenics``);
later processes load them in well under a second. ``./run.sh setup`` runs this once after
installing, so that the first real run does not spend a minute or two compiling in silence.
Each step runs a cut-down case through the same code paths as a real run, so exactly what
runs compile is compiled: the tensorial AQS event loop and slip rules with field output, KMC
preparation and quench, patch tests, the scalar model.
"""

from __future__ import annotations

import sys
import time

# (what is compiled, case overrides of a cut-down run through femplast.app.api.run)
STEPS = (
    ("the AQS event loop, slip rules and field output", "quickstart.yaml",
     {"mesh.n": 4, "mesh.L": 26.4, "run.realizations": 1, "loading.gamma_max": 0.05,
      "loading.stationary_from": 0.0, "output.snapshots": [0.05]}),
    ("KMC preparation and quench", "quench_kmc.yaml",
     {"mesh.n": 4, "mesh.L": 26.4, "run.realizations": 1, "kmc.max_events": 50,
      "kmc.stop": "max_events"}),
    ("patch tests", "patches_small.yaml",
     {"mesh.n": 4, "mesh.L": 26.4, "run.realizations": 1, "loading.gamma_max": 0.02,
      "loading.stationary_from": 0.0, "patches.n": [1, 2], "patches.gamma_ext": [0.02]}),
    ("the scalar model", "scalar_esl_soft.yaml",
     {"mesh.n": 4, "mesh.L": 35.44, "run.realizations": 2, "loading.gamma_max": 0.05,
      "loading.stationary_from": 0.0, "output.snapshots": [], "scalar.fit": None}),
)
ESTIMATE_S = 90
"""About how long the steps take with a cold cache on a development machine (one core)."""


def kernels_cached() -> bool:
    """Whether numba's cache holds the AQS event loop for the current source (its index file,
    next to the source or under ``NUMBA_CACHE_DIR``, newer than the source)."""
    import os
    from pathlib import Path

    src = Path(__file__).resolve().parents[1] / "tensorial" / "aqs.py"
    dirs = [src.parent / "__pycache__"]
    if os.environ.get("NUMBA_CACHE_DIR"):
        dirs.append(Path(os.environ["NUMBA_CACHE_DIR"]))
    stamp = src.stat().st_mtime
    return any(p.stat().st_mtime >= stamp for d in dirs if d.is_dir()
               for p in d.rglob("aqs.aqs_advance-*.nbi"))


def announce_if_cold(quiet: bool = False) -> None:
    """Say so before a run compiles the event loops (a first run without ``./run.sh setup``)."""
    if not quiet and not kernels_cached():
        print(f"[femplast] compiling the event loops once (about {ESTIMATE_S} s; cached for "
              "later runs; 'python -m femplast.app.compile' does it ahead)", file=sys.stderr,
              flush=True)


def cases_dir():
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "cases"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    quiet = "--quiet" in argv
    import tempfile
    from pathlib import Path

    from mpi4py import MPI

    from femplast.app.api import load_case
    from femplast.app.runner import run_case

    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    say(f"[femplast] compiling the event loops and FE forms once (about {ESTIMATE_S} s on a "
        "cold cache; later runs load them from the cache)")
    t_all = time.perf_counter()
    for what, case, overrides in STEPS:
        t = time.perf_counter()
        say(f"[femplast]   {what} ...")
        path = cases_dir() / case
        if not path.is_file():  # an installed wheel without the cases: nothing to warm up
            say(f"[femplast]   skipped ({path} not found)")
            continue
        with tempfile.TemporaryDirectory(prefix="femplast-compile-") as tmp:
            run_case(load_case(path, overrides), Path(tmp) / "out", MPI.COMM_SELF, quiet=True)
        say(f"[femplast]   {what}: {time.perf_counter() - t:.1f} s")
    say(f"[femplast] compiled in {time.perf_counter() - t_all:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
